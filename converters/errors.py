"""Why a model cannot be converted."""


class ConversionUnsupported(Exception):
    """A model this converter does not cover; the message says why, in one line."""
