"""Why a model cannot be converted."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class ConversionUnsupported(Exception):
    """A model this converter does not cover; the message says why, in one line."""


_MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError)


def malformed_input(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """For a function that reads files a model brought: what a malformed one makes it raise (a
    missing key, a list where a map should be) is reported as that file being unusable, not as a
    converter bug."""
    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except ConversionUnsupported:
                raise
            except _MALFORMED as exc:
                raise ConversionUnsupported(f"{what} cannot be read ({type(exc).__name__}: {exc})") from None
        return checked
    return wrap
