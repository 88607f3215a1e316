"""`du`: logical bytes (what the models would take as separate copies), stored bytes, the
saving, and per model the bytes only it holds (what `rm` + `gc` would give back).

The saving compares the models' files with the stored bytes of those files: a planned
conversion's own blobs (headers, small files) add stored bytes and no logical ones, so they are
counted apart (`conversion_bytes`) rather than taken off the saving."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from modelstore.store.derived import DerivedCache
from modelstore.store.errors import StoreCorrupt
from modelstore.store.gc import plan_from_snapshot
from modelstore.store.store import Store


@dataclass(frozen=True)
class ModelUsage:
    name: str
    files: int
    logical_bytes: int
    unique_bytes: int  # stored bytes no other model references


@dataclass(frozen=True)
class Usage:
    models: tuple[ModelUsage, ...]
    logical_bytes: int
    stored_bytes: int  # every catalogued blob
    unreferenced_bytes: int  # blob bytes no model references now
    conversion_bytes: int = 0  # planned conversions' own blobs (headers, config and tokenizer files)
    derived_cache_bytes: int = 0  # converted slices kept in <home>/derived (disposable)
    # What `gc` frees now, the figure `gc --dry-run` gives: catalogued blobs no record reads (part of
    # `unreferenced_bytes`; the rest of that lies inside blobs other models still read, and stays),
    # plus `outside_catalog_bytes`.
    reclaimable_bytes: int = 0
    # Of `reclaimable_bytes`, those not in `stored_bytes`: files in objects/ the catalog does not name
    # (left by an interrupted add) and staging folders of stopped processes.
    outside_catalog_bytes: int = 0
    add_running: bool = False  # objects/ files outside the catalog were not counted: maybe a running add's

    @property
    def model_stored_bytes(self) -> int:
        """Stored bytes but for the conversions' own blobs: what the models' files take."""
        return self.stored_bytes - self.conversion_bytes

    @property
    def saved_bytes(self) -> int:
        """Logical bytes minus what the models' files take stored: negative when blobs hold bytes
        no model reads (in blobs gc frees, or inside blobs another model still reads)."""
        return self.logical_bytes - self.model_stored_bytes

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.model_stored_bytes if self.model_stored_bytes > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"logical_bytes": self.logical_bytes, "stored_bytes": self.stored_bytes,
                "saved_bytes": self.saved_bytes, "dedup_ratio": round(self.ratio, 4),
                "unreferenced_bytes": self.unreferenced_bytes, "reclaimable_bytes": self.reclaimable_bytes,
                "outside_catalog_bytes": self.outside_catalog_bytes, "add_running": self.add_running,
                "conversion_bytes": self.conversion_bytes,
                "derived_cache_bytes": self.derived_cache_bytes,
                "models": [m.__dict__ for m in self.models]}


def compute_usage(store: Store) -> Usage:
    listed, add_running = store.objects.listing_and_writers()  # as gc plans: before the catalog
    with store.catalog.read() as r:
        models = sorted(r.models(), key=lambda m: m.name)
        files = {f.b3: f for f in r.files()}
        blob_sizes = dict(r.blobs())
        owned = {name: value.get("blobs", []) for name, value in r.all_conversions()}
        plan, live = plan_from_snapshot(store, r, listed, add_running)
    if live.missing_files:
        name, b3 = live.missing_files[0]
        raise StoreCorrupt(f"file {b3} is named by model {name} but missing from the catalog; run `modelstore fsck`")
    # For each blob, the byte ranges each model's recipes use; a sweep over the boundaries finds
    # the bytes used by exactly one model.
    ranges: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    per_model: list[tuple[str, int, int]] = []
    for m in models:
        logical = 0
        for b3 in set(m.files.values()):
            for ext in files[b3].recipe:
                ranges[ext.blob].append((ext.offset, ext.offset + ext.length, m.name))
        for b3 in m.files.values():
            logical += files[b3].size
        for blob in owned.get(m.name, []):
            ranges[blob].append((0, blob_sizes.get(blob, 0), m.name))
        per_model.append((m.name, len(m.files), logical))
    unique: dict[str, int] = defaultdict(int)
    referenced = 0
    for blob, spans in ranges.items():
        catalogued = blob in blob_sizes  # a blob the catalog lost is in no stored figure (fsck reports it)
        events = sorted([(s, 1, name) for s, _, name in spans] + [(e, -1, name) for _, e, name in spans])
        active: dict[str, int] = defaultdict(int)
        previous = 0
        for pos, delta, name in events:
            users = [n for n, c in active.items() if c > 0]
            if users and pos > previous:
                referenced += (pos - previous) if catalogued else 0
                if len(users) == 1:
                    unique[users[0]] += pos - previous
            active[name] += delta
            previous = pos
    stored = sum(blob_sizes.values())
    conversion = sum(blob_sizes.get(b, 0) for b in {b for blobs in owned.values() for b in blobs})
    return Usage(tuple(ModelUsage(n, c, lg, unique[n]) for n, c, lg in per_model),
                 sum(lg for _, _, lg in per_model), stored, stored - referenced, conversion,
                 DerivedCache(store.home / "derived", 0).used_bytes(), plan.bytes_freed, plan.outside_catalog_bytes,
                 add_running)
