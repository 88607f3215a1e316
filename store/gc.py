"""Garbage collection: plan what nothing references, then remove catalog records first and blob
files last, so an interruption at any point leaves only orphan files that the next gc removes.

What is live is decided from the committed records themselves: every model record's files, the
blobs those files' recipes read, and every blob a conversion record owns or reads. The reverse
reference tables (`file_models`, `blob_files`) are indexes kept beside the records; when they are
out of step (fsck reports it) they must not make gc remove what a record still names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelstore.store.catalog import Reader
from modelstore.store.errors import StoreCorrupt
from modelstore.store.locks import WaitNotice, store_lock
from modelstore.store.objects import tree_bytes
from modelstore.store.records import Extent, FileRecord
from modelstore.store.store import Store


@dataclass(frozen=True)
class LiveSet:
    """What committed records reference. `missing_files`: (model, file) pairs whose file record
    the catalog lacks, so the blobs that file reads are unknown."""

    files: frozenset[str]
    blobs: frozenset[str]
    users: dict[str, frozenset[str]]  # blob -> names of the models whose records read it
    missing_files: tuple[tuple[str, str], ...] = ()


def live_set(r: Reader) -> LiveSet:
    files: set[str] = set()
    users: dict[str, set[str]] = {}
    missing: list[tuple[str, str]] = []
    for model in r.models():
        for b3 in sorted(set(model.files.values())):
            files.add(b3)
            record = r.file(b3)
            if record is None:
                missing.append((model.name, b3))
                continue
            for blob in record.blobs:
                users.setdefault(blob, set()).add(model.name)
    for name, entry in r.all_conversions():  # kept whole, even one fsck finds stale: it names them
        blobs = set(entry.get("blobs", ()))
        for raw in entry.get("files", {}).values():
            for piece in FileRecord.from_json(raw["b3"], raw).recipe:
                blobs.update(ext.blob for ext in ([piece] if isinstance(piece, Extent) else piece.inputs))
        for blob in blobs:
            users.setdefault(blob, set()).add(name)
    return LiveSet(frozenset(files), frozenset(users), {b: frozenset(n) for b, n in users.items()}, tuple(missing))


@dataclass(frozen=True)
class GcPlan:
    files: tuple[str, ...]  # file records no model names
    blobs: tuple[tuple[str, int], ...]  # (blob, bytes on disk; 0 when already gone) catalogued, read by no record
    orphans: tuple[tuple[str, int], ...]  # (path, size) of files in objects/ that are no catalogued or live blob
    staging: tuple[tuple[str, int], ...] = ()  # (path, bytes) of staging folders whose owner is gone
    # An add, import or convert was running (its staging folder is locked): files in objects/ that
    # are not in the catalog may be its blobs, not committed yet, so they are not counted as orphans.
    add_running: bool = False

    @property
    def stale_staging(self) -> int:
        return len(self.staging)

    @property
    def outside_catalog_bytes(self) -> int:
        """Orphan objects and stale staging: what gc frees that no catalog figure counts."""
        return sum(s for _, s in self.orphans) + self.staging_bytes

    @property
    def staging_bytes(self) -> int:
        return sum(s for _, s in self.staging)

    @property
    def bytes_freed(self) -> int:
        return sum(s for _, s in self.blobs) + self.outside_catalog_bytes

    def to_json(self) -> dict[str, Any]:
        return {"files": len(self.files), "blobs": len(self.blobs), "orphan_objects": len(self.orphans),
                "stale_staging": self.stale_staging, "stale_staging_bytes": self.staging_bytes,
                "bytes_freed": self.bytes_freed}  # add_running: never, under gc's lock; rm and du say it


@dataclass
class GcResult:
    plan: GcPlan
    removed_blobs: list[str] = field(default_factory=list)
    bytes_freed: int = 0  # what was actually removed (a blob already gone frees nothing)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def plan_from_snapshot(store: Store, r: Reader, listed: list[Path], add_running: bool) -> tuple[GcPlan, LiveSet]:
    """The plan from catalog snapshot `r` and a listing of objects/ taken before `r` was opened."""
    live = live_set(r)
    catalogued = dict(r.blobs())
    dead_files = tuple(f.b3 for f in r.files() if f.b3 not in live.files)
    dead_blobs = tuple((b, _size(store.objects.path(b))) for b in sorted(catalogued) if b not in live.blobs)
    orphans: tuple[tuple[str, int], ...] = ()
    if not add_running:
        known = catalogued.keys() | live.blobs  # a blob a record reads stays, catalogued or not
        orphans = tuple((str(p), _size(p)) for p in store.objects.strays(known, listed))
    staging = tuple((str(p), tree_bytes(p)) for p in store.objects.stale_staging())
    return GcPlan(dead_files, dead_blobs, orphans, staging, add_running), live


def plan_gc(store: Store) -> GcPlan:
    """What gc would free now, without taking the store lock (for rm and du). While an add
    runs, objects/ files outside the catalog may be its uncommitted blobs: they are not counted,
    and `add_running` says so. The listing of objects/ is taken before the catalog is read and the
    running operations are looked for in between, so a blob an add commits meanwhile is never
    taken for an orphan."""
    listed, add_running = store.objects.listing_and_writers()
    with store.catalog.read() as r:
        plan, live = plan_from_snapshot(store, r, listed, add_running)
    refuse_unknown_files(live)  # as gc would: its figure would be one gc never frees
    return plan


def refuse_unknown_files(live: LiveSet) -> None:
    if live.missing_files:
        name, b3 = live.missing_files[0]
        raise StoreCorrupt(f"model {name} names file {b3}, which the catalog does not have ({len(live.missing_files)} "
                           f"such file(s)): gc cannot tell which blobs it reads, so it removes nothing; "
                           f"run `modelstore fsck`")


def run_gc(store: Store, *, dry_run: bool = False, on_wait: WaitNotice | None = None) -> GcResult:
    """Hold the store lock exclusively (waiting for running adds and fsck), plan, then execute.
    Refuses (StoreCorrupt, nothing removed) when a model names a file record the catalog lacks."""
    with store_lock(store.lock_path, exclusive=True, on_wait=on_wait):
        listed = store.objects.listing()  # no add runs now: none can place a blob meanwhile
        if dry_run:
            with store.catalog.read() as r:
                plan, live = plan_from_snapshot(store, r, listed, False)
            refuse_unknown_files(live)
            return GcResult(plan)
        with store.catalog.write() as w:  # planned in the transaction that removes: rm cannot slip between
            plan, live = plan_from_snapshot(store, w, listed, False)
            refuse_unknown_files(live)  # raised inside the transaction: nothing is removed
            dead_files, dead_blobs = set(plan.files), {b for b, _ in plan.blobs}
            for b3 in dead_files:
                record = w.file(b3)
                if record is not None:
                    w.remove_file(record)
            for blob in dead_blobs:
                w.remove_blob(blob)
            for digest, ext in list(w.tensors()):
                if ext.blob in dead_blobs:
                    w.remove_tensor(digest)
        result = GcResult(plan)
        sizes = {str(store.objects.path(b)): s for b, s in plan.blobs} | dict(plan.orphans)
        for path in sorted(sizes):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            result.removed_blobs.append(os.path.basename(path))
            result.bytes_freed += sizes[path]
        result.bytes_freed += sum(size for _, size in store.objects.remove_stale_staging())
        return result
