"""Importing a runtime's folder: every model found is stored (dedup included) and committed on
its own, so an interrupted import keeps what finished; with --move its originals are removed only
after that commit, by the folder that knows which of them other models still need.

A model the store already holds from the same source takes the same name again: an Ollama
manifest replaces it (the manifest is the whole model), anything else adds its files to it, never
takes any away. A name another source holds makes the import use name@<alternative>.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelstore.store.digests import git_blob_header
from modelstore.store.errors import (
    BadModelFile,
    ModelChanged,
    OutOfSpace,
    SourceError,
    StoreCorrupt,
    UnsafeName,
)
from modelstore.store.hashing import CHUNK
from modelstore.store.ingest import ImportMode, Ingest, ProgressFactory
from modelstore.store.names import check_model_name, check_relpath
from modelstore.store.objects import no_space
from modelstore.store.records import FileRecord, ModelRecord
from modelstore.store.sources.runtimes.found import (
    FoundModel,
    Held,
    Removal,
    RuntimeFolder,
    Skipped,
    refusal,
    source_identity,
)
from modelstore.store.sources.runtimes.identity import IMPORTED_FROM_KEY, REFS_KEY
from modelstore.store.store import Store

IDENTITY_KEYS = (REFS_KEY, IMPORTED_FROM_KEY)
StatKey = tuple[int, int, int, int]


class DigestMismatch(SourceError):
    """A file whose bytes do not hash to the name its runtime keeps it under."""


@dataclass
class Imported:
    name: str
    status: str  # "imported", "replaced", "updated" (files added) or "unchanged"
    model: ModelRecord
    logical_bytes: int
    stored_bytes: int  # what this model added to the store
    where: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "source": self.model.to_json()["source"],
                "files": len(self.model.files), "logical_bytes": self.logical_bytes,
                "stored_bytes": self.stored_bytes, "from": self.where}


@dataclass
class ImportReport:
    folders: list[Path] = field(default_factory=list)
    models: list[Imported] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    removal: Removal = field(default_factory=Removal)

    def to_json(self) -> dict[str, Any]:
        return {"folders": [str(f) for f in self.folders], "models": [m.to_json() for m in self.models],
                "skipped": [{"what": s.what, "why": s.why} for s in self.skipped + self.removal.problems],
                "logical_bytes": sum(m.logical_bytes for m in self.models),
                "stored_bytes": sum(m.stored_bytes for m in self.models),
                "removed_files": self.removal.files, "removed_bytes": self.removal.bytes,
                "freed_bytes": self.removal.freed}


class Namer:
    """Store names: a source the store holds keeps its model's name; a new one gets the name it
    asks for, or name@<alternative>(-n) when another model has that."""

    def __init__(self, models: list[ModelRecord]) -> None:
        self.refresh(models)

    def refresh(self, models: list[ModelRecord]) -> None:
        """Start again from the models the catalog holds now."""
        self.by_name: dict[str, ModelRecord] = {}
        self.by_identity: dict[tuple[str, ...], ModelRecord] = {}
        for model in models:
            self._know(model)

    def _know(self, model: ModelRecord) -> None:
        self.by_name[model.name] = model
        identity = source_identity(model.source)
        held = self.by_identity.get(identity)
        if held is None or held.name == model.name:  # two models of one source: the first keeps it
            self.by_identity[identity] = model

    def current(self, found: FoundModel) -> ModelRecord | None:
        return self.by_identity.get(found.identity)

    def fresh(self, found: FoundModel) -> str:
        candidates = [found.name, f"{found.name}@{found.alternative}"]
        n = 2
        while True:
            for name in candidates:
                if name not in self.by_name:
                    return name
            candidates = [f"{found.name}@{found.alternative}-{n}"]
            n += 1

    def claim(self, name: str, model: ModelRecord) -> None:
        """A dry run's stand-in for a commit: the name is taken from now on."""
        self.by_name[name] = model


def same_identity(found: FoundModel, current: ModelRecord, extra: dict[str, Any] | None = None) -> bool:
    """Whether importing `found` would leave the stored model's source and metadata (`extra`,
    else what `found` brings) as they are; where it was imported from does not count."""
    extra = found.metadata if extra is None else extra
    return found.source == current.source and all(current.metadata.get(k) == v for k, v in extra.items()
                                                  if v and k != IMPORTED_FROM_KEY)


def stat_key(path: Path) -> StatKey:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def git_sha1_of(path: Path) -> str:
    h = hashlib.sha1(git_blob_header(os.path.getsize(path)))
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_digest(found: FoundModel, rel: str, sha256: str | None, git_sha1: str | None, path: Path) -> None:
    """DigestMismatch unless the file hashes to the name its runtime keeps it under."""
    expected = found.expected.get(rel)
    if expected is None:
        return
    if expected.kind == "sha256":
        actual = sha256 or ""
    else:
        actual = git_sha1 or git_sha1_of(path)
    if actual != expected.value:
        raise DigestMismatch(f"{rel}: its bytes hash to {actual[:12]}…, not to {expected.value[:12]}…, the name "
                             f"its runtime keeps it under (a damaged or altered file)")


class MoveJournal:
    """The files --move is about to remove from one folder, written down (and fsynced) after the
    model's commit and before the first removal: a run stopped in between leaves them named, and
    the next run's tidy removes them at once instead of waiting to be sure they are not a download
    in progress. Kept in the store home, one file per folder; removed when a run ends well."""

    def __init__(self, home: Path, folder: Path) -> None:
        key = hashlib.sha256(os.fsencode(os.path.realpath(folder))).hexdigest()[:16]
        self.path = home / "moving" / key

    def pending(self) -> list[str]:
        try:
            return [os.fsdecode(line) for line in self.path.read_bytes().split(b"\0") if line]
        except OSError:
            return []

    def add(self, paths: list[Path]) -> None:
        try:
            self.path.parent.mkdir(exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(b"".join(os.fsencode(os.path.realpath(p)) + b"\0" for p in paths))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise no_space(exc, self.path.parent, "noting the files --move is about to remove") from exc

    def done(self) -> None:
        self.path.unlink(missing_ok=True)

    def forget_removed(self) -> None:
        """After a run that stopped on an error: keep only the files still there to remove. Best
        effort (the error that stopped the run is the one to report): a stale entry is harmless."""
        left = [p for p in self.pending() if os.path.lexists(p)]
        staged = self.path.with_name(self.path.name + ".new")
        try:
            if not left:
                self.done()
                return
            staged.write_bytes(b"".join(os.fsencode(p) + b"\0" for p in left))
            os.replace(staged, self.path)
        except OSError:
            staged.unlink(missing_ok=True)


def held_by(store: Store, pending: Iterable[str] = ()) -> Held:
    """Bytes and sources the store's models hold (a file record no model uses any more does not
    count: gc may delete it)."""
    def lookup(index: str) -> Callable[[str], bool]:
        def has(digest: str) -> bool:
            with store.catalog.read() as r:
                b3 = r.file_by_sha256(digest) if index == "sha256" else r.file_by_git_sha1(digest)
                return b3 is not None and bool(r.models_of_file(b3))
        return has

    return Held(lookup("sha256"), lookup("git"), [source_identity(m.source) for m in store.models()], pending)


@dataclass
class Importer:
    store: Store
    mode: ImportMode = ImportMode.COPY
    progress: ProgressFactory | None = None
    on_wait: Any = None
    report: ImportReport = field(default_factory=ImportReport)
    # Files this run has committed, by (device, inode, size, mtime): a blob several Ollama models
    # or several snapshots share is hashed once, not once per model.
    _seen: dict[StatKey, str] = field(default_factory=dict)

    def run(self, folder: RuntimeFolder) -> ImportReport:
        self.report.folders.append(folder.root)
        journal = MoveJournal(self.store.home, folder.root)
        if self.mode is ImportMode.MOVE:
            folder.tidy(held_by(self.store, journal.pending()), self.report.removal)
        scan = folder.scan()
        self.report.skipped += scan.skipped
        namer = Namer(self.store.models())
        try:
            for found in scan.models:
                self._import_one(folder, found, namer, journal)
        except BaseException:
            if self.mode is ImportMode.MOVE:
                journal.forget_removed()
            raise
        if self.mode is ImportMode.MOVE:
            journal.done()
        return self.report

    def _import_one(self, folder: RuntimeFolder, found: FoundModel, namer: Namer, journal: MoveJournal) -> None:
        try:
            imported = self.import_model(found, namer)
        except (OutOfSpace, StoreCorrupt):
            raise
        except (SourceError, BadModelFile, UnsafeName, ModelChanged) as exc:
            self.report.skipped.append(Skipped(found.where, refusal(found, exc)))
            return
        except OSError as exc:
            if exc.filename and str(exc.filename).startswith(str(self.store.home)):
                raise
            self.report.skipped.append(Skipped(found.where, refusal(found, exc)))
            return
        self.report.models.append(imported)
        if self.mode is not ImportMode.MOVE:
            return
        if not self._held(imported.model):
            self.report.skipped.append(Skipped(found.where, f"{imported.name} was removed from the store while it "
                                                            f"was imported: its files are left where they are"))
            return
        journal.add([*found.originals, *found.files.values()])
        folder.release(found, self.report.removal)

    def _held(self, model: ModelRecord) -> bool:
        """Whether the catalog, as it is now, holds every file of `model` for a model: another
        command may have removed it since it was committed or found unchanged."""
        with self.store.catalog.read() as r:
            return all(r.models_of_file(b3) for b3 in set(model.files.values()))

    def _ingest(self, ingest: Ingest, found: FoundModel, rel: str, path: Path,
                hashed: dict[StatKey, str]) -> tuple[FileRecord, int]:
        """(the stored file, bytes it added to the store)."""
        key = stat_key(path)
        b3 = hashed.get(key) or self._seen.get(key)
        record = ingest.known_file(b3) if b3 else None
        if record is not None:
            return record, 0
        # Checked before anything is stored: a refused file leaves no blob behind.
        result = ingest.ingest(path, f"{found.name}/{rel}",
                               check=lambda hashes: check_digest(found, rel, hashes.sha256, hashes.git_sha1, path),
                               move_by_link=found.move_by_link(path))
        if stat_key(path) == key:
            hashed[key] = result.record.b3
        return result.record, result.novel_bytes

    def import_model(self, found: FoundModel, namer: Namer) -> Imported:
        for rel in found.files:  # a name no view could show is refused before anything is stored
            check_relpath(rel, where=found.where)
        hashed: dict[StatKey, str] = {}
        with self.store.adding(self.mode, self.progress, self.on_wait) as ingest:
            stored: dict[str, str] = {}
            logical = novel = 0
            for rel, path in found.files.items():
                record, added = self._ingest(ingest, found, rel, path, hashed)
                check_digest(found, rel, record.sha256, record.git_sha1, path)  # also bytes the store held already
                stored[rel] = record.b3
                logical += record.size
                novel += added
            ingest.sources_to_remove.clear()  # --move: the folder removes originals, knowing what else needs them
            model, status = self._commit(ingest, found, stored, namer)
        self._seen.update(hashed)
        return Imported(model.name, status, model, logical, novel, found.where)

    def _commit(self, ingest: Ingest, found: FoundModel, stored: dict[str, str], namer: Namer,
                attempts: int = 3) -> tuple[ModelRecord, str]:
        """Decide from the catalog as it is now (an add, rm or other import may have run since
        the import began) and commit, deciding again if another command commits first."""
        for attempt in range(attempts):
            namer.refresh(self.store.models())
            current = namer.current(found)
            name, files, extra, status = self._decide(found, current, stored, namer)
            if status == "unchanged":
                assert current is not None
                return current, status
            try:
                model, _ = self.store.commit_model(ingest, name, found.source, files, dict(found.files), extra,
                                                   expect=namer.by_name.get(name))
                return model, status
            except ModelChanged:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _decide(found: FoundModel, current: ModelRecord | None, stored: dict[str, str],
                namer: Namer) -> tuple[str, dict[str, str], dict[str, Any], str]:
        """(name, files, metadata to add, status) for what was stored."""
        found_extra = {k: v for k, v in found.metadata.items() if v}
        if current is None:
            return check_model_name(namer.fresh(found)), stored, found.metadata, "imported"
        kept = {k: current.metadata[k] for k in IDENTITY_KEYS if k in current.metadata}
        if found.complete:
            files, extra = stored, found.metadata
        elif any(rel in current.files and current.files[rel] != b3 for rel, b3 in stored.items()):
            # The same place now holds other bytes: keep both rather than drop what is stored.
            return check_model_name(namer.fresh(found)), stored, found.metadata, "imported"
        else:
            files, extra = {**current.files, **stored}, {**kept, **found_extra}
        # The same model found in another folder (a second cache) is not a change worth a commit.
        same = files == current.files and same_identity(found, current, extra)
        if same:
            return current.name, files, extra, "unchanged"
        return current.name, files, extra, "replaced" if found.complete else "updated"
