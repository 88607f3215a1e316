"""Decide which conversions a stored model gets, plan them, and record them in the catalog.

For every rendition a runtime needs and the model lacks (a GGUF of a safetensors model, a
safetensors repo of a GGUF model, one file of a split GGUF), the planner makes a plan from the
headers, stores its literal parts (headers, small files) as blobs, and streams the converted
file once through SHA-256 and BLAKE3 without keeping it: Ollama names blobs by SHA-256 and
the Hub by SHA-256 or git SHA-1, so views need those before anyone reads the file. What cannot
be converted is recorded with its reason, for `modelstore show`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from modelstore.converters import tensorops
from modelstore.converters.errors import ConversionUnsupported
from modelstore.converters.merge import plan_merge
from modelstore.converters.plans import Plan, PlannedFile, StoredModel
from modelstore.converters.to_gguf import GGUF_TYPES, plan_gguf
from modelstore.converters.to_safetensors import plan_safetensors
from modelstore.store.digests import GIT_SHA1_LIMIT, git_blob_header
from modelstore.store.errors import NotFound, UsageError
from modelstore.store.locks import WaitNotice, store_lock
from modelstore.store.metadata import is_projector, split_group, why_not_whole
from modelstore.store.objects import fsync_path, no_space
from modelstore.store.records import Derived, Extent, FileRecord
from modelstore.store.store import Store

log = logging.getLogger(__name__)
Progress = Callable[[int, str], Callable[[int], None]]
HASH_CHUNK = 8 << 20


@dataclass
class ConversionResult:
    model: str
    files: dict[str, FileRecord] = field(default_factory=dict)
    plans: list[dict[str, Any]] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "plans": self.plans, "unsupported": self.unsupported,
                "files": {p: {"size": r.size, "sha256": r.sha256} for p, r in sorted(self.files.items())}}


def _gguf_groups(stored: StoredModel) -> tuple[dict[tuple[str, int], list[str]], list[str]]:
    """(split GGUFs: their shards by (prefix, shard count), single GGUF files); projectors left out."""
    splits: dict[tuple[str, int], list[str]] = {}
    singles = []
    for path in stored.paths("gguf"):
        kv = (stored.record(path).weights or {}).get("metadata", {})
        if is_projector(path, kv):
            continue
        group = split_group(path, kv)
        if group[1] > 1:
            splits.setdefault(group, []).append(path)
        else:
            singles.append(path)
    return {group: sorted(shards) for group, shards in sorted(splits.items())}, singles


def why_not(exc: Exception, target: str, name: str) -> str:
    """The reason a conversion is not made, from what planning or recording it raised; a disk
    error or lack of memory is raised on, as it is not about the model."""
    if isinstance(exc, ConversionUnsupported):
        return str(exc)
    if isinstance(exc, (OSError, MemoryError)):
        raise exc
    # a converter bug must not fail the add that stored the model
    log.debug("the %s conversion of %s failed", target, name, exc_info=exc)  # the traceback with --debug
    return f"the converter failed ({type(exc).__name__}: {exc}); please report this"


def make_plans(stored: StoredModel, gguf_type: str = "F16") -> tuple[list[Plan], dict[str, str]]:
    """Every conversion the model should get, and the reason for each it cannot."""
    plans: list[Plan] = []
    unsupported: dict[str, str] = {}
    splits, singles = _gguf_groups(stored)

    def attempt(target: str, make: Callable[[], Plan]) -> None:
        try:
            plans.append(make())
        except Exception as exc:
            unsupported[target] = why_not(exc, target, stored.model.name)

    if not splits and not singles:
        if stored.paths("safetensors"):
            attempt("gguf", lambda: plan_gguf(stored, gguf_type))
        return plans, unsupported
    for (prefix, _), shards in splits.items():
        merged = prefix + ".gguf"
        if merged not in stored.model.files:
            attempt("merged-gguf", lambda shards=shards, merged=merged: plan_merge(stored, shards, merged))
    units = [s for (_, count), s in splits.items() if len(s) == count] + [[p] for p in singles]
    if not stored.paths("safetensors") and not units:
        unsupported["safetensors"] = why_not_whole((s, count) for (_, count), s in splits.items())
    elif not stored.paths("safetensors"):
        best = max(units, key=lambda unit: _bits_per_weight(stored, unit))  # a repo of quants: the finest
        attempt("safetensors", lambda: plan_safetensors(stored, best))
    return plans, unsupported


def _bits_per_weight(stored: StoredModel, unit: list[str]) -> float:
    records = [stored.record(p) for p in unit]
    params = sum(int((r.weights or {}).get("parameter_count") or 0) for r in records)
    return 8 * sum(r.size for r in records) / max(params, 1)


def iter_pieces(record: FileRecord, read: Callable[[Extent], bytes], chunk: int = HASH_CHUNK) -> Iterator[bytes]:
    """A converted file's bytes in order, one piece (or chunk of a piece) at a time."""
    for piece in record.recipe:
        if isinstance(piece, Extent):
            for start in range(0, piece.length, chunk):
                yield read(Extent(piece.blob, piece.offset + start, min(chunk, piece.length - start)))
        else:
            yield tensorops.run(piece.op, piece.length, read)


class BlobReader:
    """Reads stored extents, keeping the blobs it reads open until closed (it is a context manager)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fds: dict[str, int] = {}

    def __call__(self, ext: Extent) -> bytes:
        fd = self.fds.get(ext.blob)
        if fd is None:
            if len(self.fds) >= 64:
                self.close()
            fd = self.fds[ext.blob] = os.open(self.store.objects.path(ext.blob), os.O_RDONLY | os.O_CLOEXEC)
        data = os.pread(fd, ext.length, ext.offset)
        if len(data) != ext.length:
            raise ConversionUnsupported(f"blob {ext.blob} is shorter than its catalog entry")
        return data

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def __enter__(self) -> "BlobReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Committer:
    """Stores a plan's literal parts as blobs and hashes the converted files."""

    def __init__(self, store: Store, staging: Path, progress: Progress | None, read: BlobReader) -> None:
        self.store, self.staging, self.progress, self.read = store, staging, progress, read
        self.new_blobs: dict[str, int] = {}

    def literal(self, data: bytes) -> Extent:
        blob = blake3.blake3(data).hexdigest()
        if not self.store.objects.exists(blob):
            staged = self.staging / blob
            try:
                with open(staged, "wb") as f:
                    f.write(data)
                fsync_path(staged)
            except OSError as exc:
                raise no_space(exc, self.store.home, "storing a converted header") from exc
            self.store.objects.commit_staged(staged, blob)
        self.new_blobs[blob] = len(data)
        return Extent(blob, 0, len(data))

    def record(self, planned: PlannedFile) -> FileRecord:
        """Store the literal parts, run every derived piece once to hash the whole file, and
        note each piece's own BLAKE3 in its op, so a cached slice can be checked when read."""
        size = planned.size
        sha256, b3 = hashlib.sha256(), blake3.blake3()
        git = hashlib.sha1(git_blob_header(size)) if size <= GIT_SHA1_LIMIT else None
        tick = self.progress(size, f"{planned.path} (converted)") if self.progress and size > HASH_CHUNK else None
        recipe: list[Extent | Derived] = []

        def feed(data: bytes) -> None:
            sha256.update(data)
            b3.update(data)
            if git is not None:
                git.update(data)
            if tick:
                tick(len(data))

        for piece in planned.pieces:
            if isinstance(piece, bytes):
                piece = self.literal(piece)
            if isinstance(piece, Derived) and piece.op["kind"] != "zeros":
                data = tensorops.run(piece.op, piece.length, self.read)
                piece = Derived({**piece.op, "b3": blake3.blake3(data).hexdigest()}, piece.length)
                feed(data)
            else:
                for data in iter_pieces(FileRecord("", piece.length, "", None, (piece,)), self.read):
                    feed(data)
            recipe.append(piece)
        return FileRecord(b3.hexdigest(), size, sha256.hexdigest(), git.hexdigest() if git else None,
                          tuple(recipe), planned.weights)


def _recorded(value: dict[str, Any], name: str) -> ConversionResult:
    return ConversionResult(name, converted_files(value), list(value.get("plans", [])),
                            dict(value.get("unsupported", {})))


def plan_conversions(store: Store, name: str, gguf_type: str = "F16", progress: Progress | None = None,
                     *, force: bool = False, on_wait: WaitNotice | None = None) -> ConversionResult:
    """Plan, hash and record the conversions of model `name`. Conversions already recorded for
    the same files and GGUF type are kept as they are, unless `force`."""
    if gguf_type not in GGUF_TYPES:
        raise UsageError(f"--gguf-type {gguf_type}: choose one of {', '.join(GGUF_TYPES)}")
    result = ConversionResult(name)
    with store_lock(store.lock_path, exclusive=False, on_wait=on_wait), store.objects.staging("convert") as staging:
        model = store.model(name)
        with store.catalog.read() as r:
            existing = r.conversions(name)
        if (not force and existing is not None and existing.get("model_files") == model.files
                and existing.get("gguf_type") == gguf_type and not existing.get("skipped")):
            return _recorded(existing, name)
        stored = StoredModel(model, store.file, store.read_range)
        plans, result.unsupported = make_plans(stored, gguf_type)
        with BlobReader(store) as read:
            committer = _Committer(store, staging, progress, read)
            for plan in plans:
                blobs_before = dict(committer.new_blobs)
                try:  # each derived piece runs once here: a shape the plan did not foresee fails now
                    files = {planned.path: committer.record(planned) for planned in plan.files}
                except Exception as exc:
                    result.unsupported[plan.target] = why_not(exc, plan.target, name)
                    committer.new_blobs = blobs_before  # its headers are owned by no plan: gc takes them
                    continue
                result.files.update(files)
                result.plans.append({"target": plan.target, "how": plan.how, "from": plan.sources,
                                     "files": [f.path for f in plan.files]})
        value = {"model_files": model.files, "gguf_type": gguf_type, "plans": result.plans,
                 "unsupported": result.unsupported, "blobs": sorted(committer.new_blobs),
                 "files": {p: {"b3": r.b3, **r.to_json()} for p, r in result.files.items()}}
        with store.catalog.write() as w:
            current = w.model(name)
            if current is None:  # `rm` meanwhile: nothing to plan any more
                raise NotFound(f"{name} was removed while its conversions were planned")
            if current.files != model.files:
                raise NotFound(f"{name} changed while its conversions were planned; run `modelstore convert {name}`")
            for blob, size in committer.new_blobs.items():
                if w.blob_size(blob) is None:
                    w.put_blob(blob, size)
            w.put_conversions(name, value)
    return result


def verify_conversions(store: Store, progress: Progress | None = None) -> list[str]:
    """Convert every planned file again and compare with the SHA-256 recorded when it was
    planned: a numpy or gguf upgrade that changed the arithmetic shows up here, not as reads
    that fail in the mount. The remedy is `modelstore convert --all`."""
    problems = []
    with store.catalog.read() as r:
        entries = dict(r.all_conversions())
    with BlobReader(store) as read:
        for name, entry in sorted(entries.items()):
            problems += _verify(name, entry, read, progress)
    return problems


def _verify(name: str, entry: dict[str, Any], read: BlobReader, progress: Progress | None) -> list[str]:
    problems = []
    for path, record in sorted(converted_files(entry).items()):
        tick = progress(record.size, f"{name}/{path} (converted)") if progress else None
        digest = hashlib.sha256()
        try:
            for data in iter_pieces(record, read):
                digest.update(data)
                if tick:
                    tick(len(data))
        except (OSError, ValueError, ConversionUnsupported) as exc:
            problems.append(f"converted file {path} of {name} cannot be made: {exc}")
            continue
        if digest.hexdigest() != record.sha256:
            problems.append(f"converted file {path} of {name} now converts to other bytes than planned "
                            f"(run `modelstore convert {name}`)")
    return problems


def skip_conversions(store: Store, name: str) -> None:
    """Record that model `name` was stored with --no-convert: it is then not planned until asked
    (`modelstore convert`), while a model with no record at all is one whose planning was cut
    short, which the next import finishes."""
    with store.catalog.write() as w:
        model = w.model(name)
        if model is not None:
            w.put_conversions(name, {"model_files": model.files, "skipped": True, "plans": [], "files": {},
                                     "unsupported": {}, "blobs": []})


def converted_files(value: dict[str, Any]) -> dict[str, FileRecord]:
    """The converted files of a catalog `conversions` entry, as records views can serve."""
    return {path: FileRecord.from_json(raw["b3"], raw) for path, raw in value.get("files", {}).items()}

