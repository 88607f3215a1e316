"""Digest names and the checks that keep them safe to use as file names."""

from __future__ import annotations

import hashlib
import re
from typing import NewType

B3 = NewType("B3", str)  # BLAKE3 of content, 64 lowercase hex: blob and file identity
Sha256 = NewType("Sha256", str)

_HEX64 = re.compile(r"[0-9a-f]{64}")

GIT_SHA1_LIMIT = 10 * 1024 * 1024  # the Hub keeps files up to this size in git, not LFS


def check_b3(value: str) -> B3:
    """Refuse anything that is not 64 lowercase hex: these become paths under objects/."""
    if not _HEX64.fullmatch(value):
        raise ValueError(f"not a BLAKE3 digest: {value!r}")
    return B3(value)


def git_blob_header(size: int) -> bytes:
    return b"blob %d\0" % size


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(git_blob_header(len(data)) + data).hexdigest()
