"""A consistent, in-memory picture of the catalog that views render from."""

from __future__ import annotations

from dataclasses import dataclass

from modelstore.store.catalog import Catalog
from modelstore.store.records import FileRecord, ModelRecord


@dataclass(frozen=True)
class Snapshot:
    generation: int
    models: tuple[ModelRecord, ...]
    files: dict[str, FileRecord]
    objects_root: str  # where blobs live, for views that link to them

    def file(self, b3: str) -> FileRecord:
        return self.files[b3]


def take_snapshot(catalog: Catalog, objects_root: str) -> Snapshot:
    """One read transaction: the models and every file they name."""
    with catalog.read() as r:
        models = tuple(sorted(r.models(), key=lambda m: m.name))
        files: dict[str, FileRecord] = {}
        for model in models:
            for b3 in model.files.values():
                if b3 not in files:
                    record = r.file(b3)
                    if record is not None:
                        files[b3] = record
        return Snapshot(r.generation(), models, files, objects_root)
