"""The content-addressed store: blobs, the LMDB catalog, ingest, sources, gc and fsck.

Names are loaded on first use, so `modelstore --help` does not import lmdb, gguf or numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AddResult": "modelstore.store.store",
    "Store": "modelstore.store.store",
    "default_home": "modelstore.store.home",
    "ImportMode": "modelstore.store.ingest",
    "ModelstoreError": "modelstore.store.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modelstore.store' has no attribute {name!r}")
