"""The content-addressed store: blobs, the LMDB catalog, ingest, sources, gc and fsck."""

from modelstore.store.errors import ModelstoreError
from modelstore.store.ingest import ImportMode
from modelstore.store.store import AddResult, Store, default_home

__all__ = ["AddResult", "ImportMode", "ModelstoreError", "Store", "default_home"]
