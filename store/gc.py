"""Garbage collection: plan what nothing references, then remove catalog records first and blob
files last, so an interruption at any point leaves only orphan files that the next gc removes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelstore.store.locks import store_lock
from modelstore.store.store import Store


@dataclass(frozen=True)
class GcPlan:
    files: tuple[str, ...]  # file records no model names
    blobs: tuple[tuple[str, int], ...]  # catalogued blobs no remaining file uses
    orphans: tuple[tuple[str, int], ...]  # (path, size) of files in objects/ that are no catalogued blob
    stale_staging: int = 0

    @property
    def bytes_freed(self) -> int:
        return sum(s for _, s in self.blobs) + sum(s for _, s in self.orphans)

    def to_json(self) -> dict[str, Any]:
        return {"files": len(self.files), "blobs": len(self.blobs), "orphan_objects": len(self.orphans),
                "stale_staging": self.stale_staging, "bytes_freed": self.bytes_freed}


@dataclass
class GcResult:
    plan: GcPlan
    removed_blobs: list[str] = field(default_factory=list)


def plan_gc(store: Store) -> GcPlan:
    with store.catalog.read() as r:
        dead_files = [f for f in r.files() if not r.models_of_file(f.b3)]
        dead_set = {f.b3 for f in dead_files}
        dead_blobs = []
        converted = r.conversion_blobs()
        for blob, size in r.blobs():
            users = set(r.files_of_blob(blob))
            if users <= dead_set and blob not in converted:
                dead_blobs.append((blob, size))
        known = {b for b, _ in r.blobs()}
    orphans = [(str(p), p.lstat().st_size) for p in store.objects.strays(known)]
    return GcPlan(tuple(f.b3 for f in dead_files), tuple(dead_blobs), tuple(orphans),
                  len(store.objects.stale_staging()))


def run_gc(store: Store, *, dry_run: bool = False, on_wait: Callable[[], None] | None = None) -> GcResult:
    """Hold the store lock exclusively (waiting for running adds), plan, then execute."""
    with store_lock(store.lock_path, exclusive=True, on_wait=on_wait):
        plan = plan_gc(store)
        result = GcResult(plan)
        if dry_run:
            return result
        dead_blobs = {b for b, _ in plan.blobs}
        with store.catalog.write() as w:
            for b3 in plan.files:
                record = w.file(b3)
                if record is not None and not w.models_of_file(b3):
                    w.remove_file(record)
            for blob in dead_blobs:
                w.remove_blob(blob)
            for digest, ext in list(w.tensors()):
                if ext.blob in dead_blobs:
                    w.remove_tensor(digest)
        for path in sorted([str(store.objects.path(b)) for b in dead_blobs] + [p for p, _ in plan.orphans]):
            try:
                os.unlink(path)
                result.removed_blobs.append(os.path.basename(path))
            except FileNotFoundError:
                pass
        store.objects.clean_stale_staging()
        return result
