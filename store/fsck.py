"""`fsck`: check that the catalog and the objects agree, and with `deep` that every byte still
hashes to the digest it is stored under.

Problems are things that lose or corrupt data (a missing or short blob, a recipe that does not
add up, a reference table out of step). Notes are harmless leftovers that `gc` removes: orphan
objects from an interrupted add, staging left by a killed process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import blake3

from modelstore.store.digests import git_blob_header
from modelstore.store.gc import live_set
from modelstore.store.locks import WaitNotice, store_lock
from modelstore.store.records import Extent, FileRecord
from modelstore.store.store import Store

CHUNK = 8 << 20


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"clean": self.clean, "problems": self.problems, "notes": self.notes, "checked": self.checked}


def fsck(store: Store, *, deep: bool = False, progress: Callable[[int], None] | None = None,
         on_wait: WaitNotice | None = None, then: Callable[[], list[str]] | None = None) -> FsckReport:
    """Check the store, holding its lock shared (as an add does): a gc, which holds it exclusive,
    waits until fsck ends instead of removing blobs under it (they would be reported missing).
    `then`, run under the same lock when nothing is wrong, gives more problems (the converters'
    check of every conversion, which this layer cannot import)."""
    with store_lock(store.lock_path, exclusive=False, on_wait=on_wait):
        report = _fsck(store, deep, progress)
        if then is not None and report.clean:
            report.problems += then()
    report.problems = list(dict.fromkeys(report.problems))  # one line per problem, not per extent
    return report


def _fsck(store: Store, deep: bool, progress: Callable[[int], None] | None) -> FsckReport:
    report = FsckReport()
    problem = report.problems.append
    listed, adding = store.objects.listing_and_writers()  # before the catalog: a blob committed meanwhile is no orphan
    with store.catalog.read() as r:
        blobs = dict(r.blobs())
        files = {f.b3: f for f in r.files()}
        models = list(r.models())
        tensors = list(r.tensors())
        file_models, blob_files = r.reverse_references()
        by_sha = {f.sha256: r.file_by_sha256(f.sha256) for f in files.values()}
        conversions = dict(r.all_conversions())
        live = live_set(r)  # from the model and conversion records, as gc decides
    report.checked = {"models": len(models), "files": len(files), "blobs": len(blobs), "tensors": len(tensors),
                      "conversions": len(conversions)}

    def remedy(blob: str) -> str:
        users = sorted(live.users.get(blob, ()))
        if not users:
            return "no model uses it; `modelstore gc` removes it"
        return (f"models that read it: {', '.join(users)}; `modelstore rm` them, `modelstore gc`, then add them "
                f"again from their source")

    broken: set[str] = set()  # blobs the cheap checks found missing or cut: not re-hashed
    for blob, size in blobs.items():
        path = store.objects.path(blob)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            problem(f"blob {blob} is in the catalog but missing from {path.parent} ({remedy(blob)})")
            broken.add(blob)
            continue
        if actual != size:
            problem(f"blob {blob} is {actual} bytes on disk, the catalog says {size} ({remedy(blob)})")
            broken.add(blob)

    for f in files.values():
        total = 0
        for ext in f.recipe:
            if ext.blob not in blobs:
                problem(f"file {f.b3} uses blob {ext.blob}, which the catalog does not have")
            elif ext.offset < 0 or ext.length <= 0 or ext.offset + ext.length > blobs[ext.blob]:
                problem(f"file {f.b3} has an extent {ext.offset}+{ext.length} outside blob {ext.blob}")
            total += ext.length
        if total != f.size:
            problem(f"file {f.b3}: its extents add up to {total} bytes, its size is {f.size}")
        if by_sha.get(f.sha256) != f.b3:
            problem(f"file {f.b3}: the SHA-256 index does not point at it")

    expected_fm = {(b3, m.name) for m in models for b3 in m.files.values()}
    for b3, name in expected_fm:
        if b3 not in files:
            problem(f"model {name} names file {b3}, which the catalog does not have")
    if expected_fm != file_models:
        problem(f"file->model references are out of step ({len(expected_fm ^ file_models)} differ)")
    expected_bf = {(ext.blob, f.b3) for f in files.values() for ext in f.recipe}
    if expected_bf != blob_files:
        problem(f"blob->file references are out of step ({len(expected_bf ^ blob_files)} differ)")

    for digest, ext in tensors:
        if ext.blob not in blobs or ext.offset + ext.length > blobs[ext.blob]:
            problem(f"tensor {digest} points outside the stored blobs ({ext.blob})")

    _check_conversions(conversions, {m.name: m for m in models}, blobs, problem)

    orphans = list(store.objects.strays(blobs.keys() | live.blobs, listed))
    if orphans and adding:
        report.notes.append(f"{len(orphans)} object(s) not in the catalog: an add, import or convert is running, "
                            f"and they may be its blobs, not committed yet (run fsck again once it ends; "
                            f"`modelstore gc` waits for it and removes what is left)")
    elif orphans:
        report.notes.append(f"{len(orphans)} object(s) not in the catalog (left by an add that was interrupted or "
                            f"refused a file); `modelstore gc` removes them")
    unreferenced = [b3 for b3 in files if b3 not in live.files]
    if unreferenced:
        report.notes.append(f"{len(unreferenced)} file(s) no model names (after `rm`); `modelstore gc` removes them")
    stale = store.objects.stale_staging()
    if stale:
        report.notes.append(f"{len(stale)} staging folder(s) left by a stopped process; the next add or gc removes them")

    if deep:  # the other blobs are re-hashed too: one problem must not hide another
        _deep(store, {b: s for b, s in blobs.items() if b not in broken}, files, tensors, report, progress, remedy)
    return report


def _check_conversions(conversions: dict[str, Any], models: dict[str, Any], blobs: dict[str, int],
                       problem: Callable[[str], None]) -> None:
    """Planned conversions belong to a stored model with the same files, and every byte they
    name (their own headers, the source tensors) lies inside a stored blob."""
    for name, entry in conversions.items():
        model = models.get(name)
        if model is None:
            problem(f"conversions of {name}: no such model")
            continue
        if entry.get("model_files") != model.files:
            problem(f"conversions of {name} were planned for other files than the model has")
        for blob in entry.get("blobs", ()):
            if blob not in blobs:
                problem(f"conversions of {name} own blob {blob}, which the catalog does not have")
        for path, raw in entry.get("files", {}).items():
            record = FileRecord.from_json(raw["b3"], raw)
            total = 0
            for piece in record.recipe:
                total += piece.length
                for ext in [piece] if isinstance(piece, Extent) else piece.inputs:
                    if ext.blob not in blobs or ext.offset < 0 or ext.offset + ext.length > blobs[ext.blob]:
                        problem(f"converted file {path} of {name} reads outside blob {ext.blob}")
            if total != record.size:
                problem(f"converted file {path} of {name}: its pieces add up to {total} bytes, its size is {record.size}")


def _deep(store: Store, blobs: dict[str, int], files: dict[str, Any], tensors: list[Any],
          report: FsckReport, progress: Callable[[int], None] | None, remedy: Callable[[str], str]) -> None:
    """Re-hash `blobs` (the sound ones by the cheap checks), then what lies in them."""
    bad_blobs: set[str] = set()
    for blob in blobs:
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        try:
            with open(store.objects.path(blob), "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    if progress:
                        progress(len(chunk))
        except FileNotFoundError:  # the store lock keeps gc out: something else removed it
            report.problems.append(f"blob {blob} vanished from {store.objects.path(blob).parent} while fsck read "
                                   f"it ({remedy(blob)})")
            bad_blobs.add(blob)
            continue
        if h.hexdigest() != blob:
            report.problems.append(f"blob {blob} no longer hashes to its name (its bytes changed on disk; "
                                   f"{remedy(blob)})")
            bad_blobs.add(blob)

    def readable(ext: Any) -> bool:  # an extent the cheap checks found sound (those that are not are reported)
        return ext.blob in blobs and ext.blob not in bad_blobs and 0 <= ext.offset and ext.offset + ext.length <= blobs[ext.blob]

    for f in files.values():
        if not all(readable(ext) for ext in f.recipe):
            continue
        if len(f.recipe) == 1 and f.recipe[0].blob == f.b3:
            continue  # one whole blob, hashed above under the same name
        b3, sha = blake3.blake3(), hashlib.sha256()
        for chunk in store.iter_file(f):
            b3.update(chunk)
            sha.update(chunk)
        if b3.hexdigest() != f.b3 or sha.hexdigest() != f.sha256:
            report.problems.append(f"file {f.b3}: its extents no longer assemble to its content")
    for f in files.values():
        if f.git_sha1 and all(readable(ext) for ext in f.recipe):
            g = hashlib.sha1(git_blob_header(f.size))
            for chunk in store.iter_file(f):
                g.update(chunk)
            if g.hexdigest() != f.git_sha1:
                report.problems.append(f"file {f.b3}: git blob SHA-1 does not match")
    for digest, ext in tensors:
        if not readable(ext):
            continue
        with open(store.objects.path(ext.blob), "rb") as fh:
            h = blake3.blake3()
            done = 0
            while done < ext.length:
                data = os.pread(fh.fileno(), min(CHUNK, ext.length - done), ext.offset + done)
                if not data:
                    break
                h.update(data)
                done += len(data)
        if h.hexdigest() != digest:
            report.problems.append(f"tensor {digest} in blob {ext.blob} at {ext.offset} does not hash to its key")
    report.checked["rehashed_blobs"] = len(blobs)
