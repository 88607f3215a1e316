"""`import --dry-run`: what an import would store, from the names runtimes give their files,
without hashing or writing anything. Headers are read, as the import reads them: a file the
import would refuse (not the GGUF its name says, a hostile header) skips its model here too.

Ollama blobs and Hugging Face blobs are named by their SHA-256 (or git blob SHA-1): whether the
store holds them, or another model of this import brings them too, is known from the name alone.
Other files are hashed only when imported; their tensors may still be stored already.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from modelstore.store.errors import BadModelFile, UnsafeName
from modelstore.store.names import check_relpath
from modelstore.store.records import ModelRecord
from modelstore.store.sources.runtimes.found import (
    Digest,
    FoundModel,
    RuntimeFolder,
    Skipped,
    refusal,
)
from modelstore.store.sources.runtimes.importer import Namer, same_identity
from modelstore.store.store import Store
from modelstore.store.tensors import read_weights_header


@dataclass
class PlannedModel:
    name: str
    # "new"; "unchanged" (the store holds this source with these very files, known by their
    # names' hashes); or "stored" (it holds this source: files are added or replaced, or checked)
    status: str
    where: str
    files: int
    logical_bytes: int
    stored_bytes: int  # already in the store (known by hash)
    shared_bytes: int  # brought by an earlier model of this import (same hash or same file)
    new_bytes: int  # known by hash to be new
    unhashed_bytes: int  # decided while importing

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DryRun:
    folders: list[str] = field(default_factory=list)
    models: list[PlannedModel] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def total(self, attribute: str) -> int:
        return sum(getattr(m, attribute) for m in self.models)

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": True, "folders": self.folders, "models": [m.to_json() for m in self.models],
                "skipped": [{"what": s.what, "why": s.why} for s in self.skipped],
                **{k: self.total(k) for k in ("logical_bytes", "stored_bytes", "shared_bytes", "new_bytes",
                                              "unhashed_bytes")}}


class _Known:
    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.digests: set[Digest] = set()
        self.inodes: set[tuple[int, int]] = set()

    def names(self, b3: str, digest: Digest | None) -> bool:
        """Whether the stored file `b3` is the one `digest` names."""
        if self.store is None or digest is None:
            return False
        with self.store.catalog.read() as r:
            record = r.file(b3)
        if record is None:
            return False
        return (record.sha256 if digest.kind == "sha256" else record.git_sha1) == digest.value

    def in_store(self, digest: Digest | None) -> bool:
        if self.store is None or digest is None:
            return False
        with self.store.catalog.read() as r:
            b3 = r.file_by_sha256(digest.value) if digest.kind == "sha256" else r.file_by_git_sha1(digest.value)
            return b3 is not None and bool(r.models_of_file(b3))


def plan(store: Store | None, folder: RuntimeFolder, dry: DryRun) -> DryRun:
    dry.folders.append(str(folder.root))
    scan = folder.scan()
    dry.skipped += scan.skipped
    known = _Known(store)
    namer = Namer(store.models() if store is not None else [])
    for found in scan.models:
        refused = _refused(found)
        if refused is not None:
            dry.skipped.append(Skipped(found.where, refused))
            continue
        dry.models.append(_plan_model(found, known, namer))
    return dry


def _refused(found: FoundModel) -> str | None:
    """Why the import would refuse this model before storing it: a name no view can show, or a
    GGUF/safetensors header that does not parse."""
    try:
        for rel, path in found.files.items():
            check_relpath(rel, where=found.where)
            read_weights_header(path, PurePosixPath(rel).name)
    except (BadModelFile, UnsafeName, OSError) as exc:
        return refusal(found, exc)
    return None


def _plan_model(found: FoundModel, known: _Known, namer: Namer) -> PlannedModel:
    sizes = {"logical_bytes": 0, "stored_bytes": 0, "shared_bytes": 0, "new_bytes": 0, "unhashed_bytes": 0}
    for rel, path in found.files.items():
        try:
            st = os.stat(path)
        except OSError:
            continue
        digest = found.expected.get(rel)
        inode = (st.st_dev, st.st_ino)
        sizes["logical_bytes"] += st.st_size
        if known.in_store(digest):
            kind = "stored_bytes"
        elif (digest is not None and digest in known.digests) or inode in known.inodes:
            kind = "shared_bytes"
        else:
            kind = "new_bytes" if digest is not None else "unhashed_bytes"
        sizes[kind] += st.st_size
        known.inodes.add(inode)
        if digest is not None:
            known.digests.add(digest)
    current = namer.current(found)
    if current is not None:
        same = all(rel in current.files and known.names(current.files[rel], found.expected.get(rel))
                   for rel in found.files)
        if found.complete:
            same = same and set(found.files) == set(current.files)
        same = same and same_identity(found, current)
        name, status = current.name, "unchanged" if same else "stored"
    else:
        name, status = namer.fresh(found), "new"
        namer.claim(name, ModelRecord(name, found.source, {}))
    return PlannedModel(name, status, found.where, len(found.files), **sizes)
