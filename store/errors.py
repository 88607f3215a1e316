"""Errors the store raises. Each carries a one-line message meant for a person and an exit code.

The CLI catches `ModelstoreError` in one place and prints `str(exc)`; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class ModelstoreError(Exception):
    exit_code = 1


class UsageError(ModelstoreError):
    exit_code = 2


class NotFound(ModelstoreError, FileNotFoundError):
    exit_code = 3


class BadModelFile(ModelstoreError, ValueError):
    """A GGUF or safetensors file whose header is truncated, inconsistent or hostile."""

    exit_code = 4

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class HeaderNeedsMore(BadModelFile):
    """The header goes on past the bytes read so far (but not past the end of the file)."""

    def __init__(self, path: str, needed: int) -> None:
        super().__init__(path, f"the header needs its first {needed} bytes")
        self.needed = needed


class UnsafeName(ModelstoreError, ValueError):
    """A repo, model or file name that could escape the folder it belongs in."""

    exit_code = 4


class SourceError(ModelstoreError):
    """The model source (the Hub, a folder) refused or failed."""

    exit_code = 5


class SourceChanged(SourceError):
    """A file changed while it was being read: what was hashed is not what would be stored."""


class ModelChanged(ModelstoreError):
    """Another command committed or removed the model under this name since it was looked at."""


class StoreCorrupt(ModelstoreError):
    exit_code = 6


class SchemaMismatch(ModelstoreError):
    exit_code = 6


class OutOfSpace(ModelstoreError, OSError):
    exit_code = 7


class Busy(ModelstoreError):
    exit_code = 8


class Interrupted(ModelstoreError):
    """Ctrl-C after part of the work was committed: the message says which part."""

    exit_code = 130
