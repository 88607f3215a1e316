"""`du`: logical bytes (what the models would take as separate copies), stored bytes, the
saving, and per model the bytes only it holds (what `rm` + `gc` would give back)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from modelstore.store.derived import DerivedCache
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
    # Of `unreferenced_bytes`, those in blobs no model uses at all: what gc gives back. The rest
    # lies inside blobs other models still read from, and stays.
    reclaimable_bytes: int = 0

    @property
    def saved_bytes(self) -> int:
        return self.logical_bytes - self.stored_bytes

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"logical_bytes": self.logical_bytes, "stored_bytes": self.stored_bytes,
                "saved_bytes": self.saved_bytes, "dedup_ratio": round(self.ratio, 4),
                "unreferenced_bytes": self.unreferenced_bytes, "reclaimable_bytes": self.reclaimable_bytes,
                "conversion_bytes": self.conversion_bytes,
                "derived_cache_bytes": self.derived_cache_bytes,
                "models": [m.__dict__ for m in self.models]}


def compute_usage(store: Store) -> Usage:
    with store.catalog.read() as r:
        models = sorted(r.models(), key=lambda m: m.name)
        files = {f.b3: f for f in r.files()}
        blob_sizes = dict(r.blobs())
        owned = {name: value.get("blobs", []) for name, value in r.all_conversions()}
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
    for spans in ranges.values():
        events = sorted([(s, 1, name) for s, _, name in spans] + [(e, -1, name) for _, e, name in spans])
        active: dict[str, int] = defaultdict(int)
        previous = 0
        for pos, delta, name in events:
            users = [n for n, c in active.items() if c > 0]
            if users and pos > previous:
                referenced += pos - previous
                if len(users) == 1:
                    unique[users[0]] += pos - previous
            active[name] += delta
            previous = pos
    stored = sum(blob_sizes.values())
    conversion = sum(blob_sizes.get(b, 0) for b in {b for blobs in owned.values() for b in blobs})
    reclaimable = sum(size for blob, size in blob_sizes.items() if blob not in ranges)
    return Usage(tuple(ModelUsage(n, c, lg, unique[n]) for n, c, lg in per_model),
                 sum(lg for _, _, lg in per_model), stored, stored - referenced, conversion,
                 DerivedCache(store.home / "derived", 0).used_bytes(), reclaimable)
