"""The store as a whole: a home folder holding objects/, the catalog and staging space."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from modelstore.store.catalog import Catalog
from modelstore.store.errors import ModelChanged, NotFound, StoreCorrupt, UsageError
from modelstore.store.ingest import ImportMode, Ingest, ProgressFactory
from modelstore.store.locks import store_lock
from modelstore.store.metadata import model_metadata
from modelstore.store.names import check_file_tree, check_model_name, check_relpath
from modelstore.store.objects import Objects, no_space
from modelstore.store.records import FileRecord, ModelRecord, Source

SMALL_FILE = 16 << 20  # text files read for metadata


class _Unchecked(Enum):
    ANY_MODEL = "any"  # commit_model: whatever the name holds now is replaced


ANY_MODEL = _Unchecked.ANY_MODEL


@dataclass
class AddResult:
    model: ModelRecord
    logical_bytes: int
    novel_bytes: int
    reused_files: int
    downloaded_bytes: int = 0
    replaced: ModelRecord | None = None
    unchanged: bool = False
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.model.name, "files": len(self.model.files), "logical_bytes": self.logical_bytes,
                "stored_bytes": self.novel_bytes, "reused_files": self.reused_files,
                "downloaded_bytes": self.downloaded_bytes, "replaced": self.replaced is not None,
                "unchanged": self.unchanged, "source": self.model.to_json()["source"],
                "metadata": self.model.metadata, "skipped": self.skipped}


class Store:
    def __init__(self, home: Path, *, create: bool = True) -> None:
        self.home = home
        if not create and not (home / "catalog").is_dir():
            raise NotFound(f"no store at {home} (run `modelstore add` first, or pass --home)")
        self.objects = Objects(home)
        if create:
            self.objects.create_dirs()
        self.catalog = Catalog(home / "catalog")
        self.lock_path = home / "store.lock"

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------

    def model(self, name: str) -> ModelRecord:
        check_model_name(name)  # a name no model can have: the rule's own message, not an LMDB error
        with self.catalog.read() as r:
            model = r.model(name)
        if model is None:
            raise NotFound(f"no model named {name!r}{self._did_you_mean(name)} (see `modelstore ls`)")
        return model

    def _did_you_mean(self, name: str) -> str:
        """`; did you mean 'tiny-ft'?` for a name close to one the store has (a typo), else ''."""
        import difflib

        with self.catalog.read() as r:
            close = difflib.get_close_matches(name, [m.name for m in r.models()], n=1, cutoff=0.75)
        return f"; did you mean {close[0]!r}?" if close else ""

    def models(self) -> list[ModelRecord]:
        with self.catalog.read() as r:
            return sorted(r.models(), key=lambda m: m.name)

    def file(self, b3: str) -> FileRecord:
        with self.catalog.read() as r:
            record = r.file(b3)
        if record is None:
            raise StoreCorrupt(f"file {b3} is named by a model but missing from the catalog; run `modelstore fsck`")
        return record

    def read_range(self, record: FileRecord, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of a stored file, assembled from its extents."""
        out = bytearray()
        pos = 0
        end = min(offset + length, record.size)
        for ext in record.recipe:
            lo, hi = max(offset, pos), min(end, pos + ext.length)
            if hi > lo:
                with open(self.objects.path(ext.blob), "rb") as f:
                    out += os.pread(f.fileno(), hi - lo, ext.offset + (lo - pos))
            pos += ext.length
            if pos >= end:
                break
        return bytes(out)

    def iter_file(self, record: FileRecord, chunk: int = 8 << 20) -> Iterator[memoryview]:
        for ext in record.recipe:
            with open(self.objects.path(ext.blob), "rb") as f:
                done = 0
                while done < ext.length:
                    data = os.pread(f.fileno(), min(chunk, ext.length - done), ext.offset + done)
                    if not data:
                        raise StoreCorrupt(f"blob {ext.blob} is shorter than the catalog says")
                    done += len(data)
                    yield memoryview(data)

    # -- adding -------------------------------------------------------------------------------------

    @contextmanager
    def adding(self, mode: ImportMode = ImportMode.COPY, progress: ProgressFactory | None = None,
               on_wait: Any = None) -> Iterator[Ingest]:
        with store_lock(self.lock_path, exclusive=False, on_wait=on_wait), self.objects.staging("add") as staging:
            ingest = Ingest(self.catalog, self.objects, staging, mode, progress, on_wait)
            try:
                yield ingest
            finally:
                ingest.close()

    def text_files_for_metadata(self, files: dict[str, str], readable: dict[str, Path],
                                staging: Path) -> dict[str, Path]:
        """Where the small metadata files can be read: their source, else a copy out of the store."""
        wanted = {"config.json", "model.safetensors.index.json", "tokenizer_config.json", "README.md",
                  "chat_template.jinja"}
        out: dict[str, Path] = {}
        for rel in wanted & files.keys():
            if rel in readable and readable[rel].exists():
                out[rel] = readable[rel]
                continue
            record = self.file(files[rel])
            if record.size <= SMALL_FILE:
                copy = staging / f"meta-{rel.replace('/', '_')}"
                try:
                    copy.write_bytes(self.read_range(record, 0, record.size))
                except OSError as exc:
                    raise no_space(exc, self.home, f"reading {rel} for metadata") from exc
                out[rel] = copy
        return out

    def commit_model(self, ingest: Ingest, name: str, source: Source, files: dict[str, str],
                     readable: dict[str, Path], extra_metadata: dict[str, Any] | None = None,
                     *, expect: ModelRecord | None | _Unchecked = ANY_MODEL,
                     ) -> tuple[ModelRecord, ModelRecord | None]:
        """Commit a model whose files are all in the catalog or staged in `ingest`. `extra_metadata`
        (what a source knows beyond the files, such as an imported snapshot's refs) is committed with it.
        With `expect` (a record, or None for a free name), ModelChanged if the name holds something
        else by the time of the commit: another command got there first."""
        check_model_name(name)
        if not files:
            raise UsageError(f"{name}: no files to commit")
        for rel in files:
            check_relpath(rel, where=name)
        check_file_tree(files, where=name)
        ingest.settle()
        records = {rel: ingest.new_files.get(b3) or self.file(b3) for rel, b3 in files.items()}
        weights = {rel: r.weights for rel, r in records.items() if r.weights}
        metadata = model_metadata(self.text_files_for_metadata(files, readable, ingest.staging), weights)
        metadata.update(extra_metadata or {})
        model = ModelRecord(name, source, dict(files), metadata, time.time())
        for record in records.values():
            for blob in record.blobs:
                if not self.objects.exists(blob):
                    raise StoreCorrupt(f"blob {blob} of {name} is missing on disk; nothing was committed")
        with self.catalog.write() as w:
            for blob, size in ingest.new_blobs.items():
                w.put_blob(blob, size)
            for record in ingest.new_files.values():
                w.put_file(record)
            for digest, ext in ingest.new_tensors.items():
                if w.tensor(digest) is None:
                    w.put_tensor(digest, ext)
            if expect is not ANY_MODEL and w.model(name) != expect:
                raise ModelChanged(f"{name} was committed or removed by another command meanwhile")
            replaced = w.put_model(model)
        for path in ingest.sources_to_remove:
            path.unlink(missing_ok=True)
        return model, replaced

    # -- removing -----------------------------------------------------------------------------------

    def remove(self, name: str) -> ModelRecord:
        return self.remove_models([name])[0]

    def remove_models(self, names: list[str]) -> list[ModelRecord]:
        """Remove the models `names` (a name given twice counts once) in one transaction: when one
        of them does not exist (NotFound) or is no model name (UnsafeName), nothing is removed."""
        unique = list(dict.fromkeys(names))
        for name in unique:
            check_model_name(name)
        with self.catalog.write() as w:
            missing = [name for name in unique if w.model(name) is None]
            if missing:  # raised inside the transaction: it is aborted, nothing was removed
                hint = self._did_you_mean(missing[0]) if len(missing) == 1 else ""
                raise NotFound(f"no model named {', '.join(repr(n) for n in missing)}{hint} (see `modelstore ls`); "
                               f"nothing was removed")
            return [old for name in unique if (old := w.remove_model(name)) is not None]
