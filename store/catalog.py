"""The catalog: LMDB named databases describing blobs, files, tensors and models.

LMDB gives any number of readers (a mount, `ls`) beside one writer at a time, across processes,
and crash-safe commits. Values are JSON; keys are hex digests or model names. Every write
transaction bumps `meta/generation`, which a running mount watches.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from modelstore.store.errors import ModelstoreError, OutOfSpace, SchemaMismatch, StoreCorrupt
from modelstore.store.records import Extent, FileRecord, ModelRecord

SCHEMA_VERSION = 1
MAP_SIZE = 1 << 40  # address space only: the file grows as records are written
LOW_SPACE = 64 << 20  # a failed commit with less free than this is taken for a full disk

DATABASES = (
    "meta",
    "blobs",  # blob -> {"size"}
    "files",  # file b3 -> FileRecord
    "tensors",  # tensor b3 -> extent
    "models",  # name -> ModelRecord
    "by_sha256",  # sha256 -> file b3
    "by_git_sha1",  # git blob sha1 -> file b3
    "file_models",  # file b3 -> model names (dupsort): reverse references
    "blob_files",  # blob -> file b3s (dupsort): reverse references
    "conversions",  # model name -> its planned conversions (see modelstore.converters.planner)
)
_DUPSORT = {"file_models", "blob_files"}


def _enc(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _dec(raw: bytes) -> Any:
    return json.loads(bytes(raw))


class _SharedEnv:
    """LMDB allows one environment per file per process: every Catalog of a path shares it."""

    def __init__(self, env: Any, dbs: dict[str, Any]) -> None:
        self.env, self.dbs, self.users = env, dbs, 0


_OPEN: dict[str, _SharedEnv] = {}
_OPEN_LOCK = threading.Lock()


def _open_env(path: Path, create: bool) -> _SharedEnv:
    key = str(path.resolve())
    with _OPEN_LOCK:
        shared = _OPEN.get(key)
        if shared is None:
            if create:
                path.mkdir(parents=True, exist_ok=True)
            try:
                env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=len(DATABASES) + 1,
                                create=create, max_readers=256)
            except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError, lmdb.PageNotFoundError) as exc:
                raise StoreCorrupt(f"the catalog at {path} is damaged or not an LMDB file ({exc}); "
                                   f"restore it from a backup (the blobs in objects/ are intact)") from None
            except lmdb.Error as exc:
                raise ModelstoreError(f"cannot open the catalog at {path}: {exc}") from None
            dbs: dict[str, Any] = {}
            with env.begin(write=True) as txn:
                for name in DATABASES:
                    dbs[name] = env.open_db(name.encode(), txn=txn, dupsort=name in _DUPSORT)
                meta = dbs["meta"]
                if txn.get(b"schema", db=meta) is None:
                    txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=meta)
                    txn.put(b"generation", b"0", db=meta)
            shared = _OPEN[key] = _SharedEnv(env, dbs)
        shared.users += 1
        return shared


class Catalog:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._key = str(path.resolve())
        shared = _open_env(path, create)
        self.env, self.dbs = shared.env, shared.dbs
        try:
            self._check_schema()
        except SchemaMismatch:
            self.close()
            raise

    def _check_schema(self) -> None:
        with self.env.begin() as txn:
            raw = txn.get(b"schema", db=self.dbs["meta"])
        found = int(raw) if raw is not None else None
        if found != SCHEMA_VERSION:
            raise SchemaMismatch(f"the catalog at {self.path} has schema version {found}; this "
                                 f"modelstore reads version {SCHEMA_VERSION}")

    def close(self) -> None:
        with _OPEN_LOCK:
            shared = _OPEN.get(self._key)
            if shared is None or shared.env is not self.env:
                return
            shared.users -= 1
            if shared.users == 0:
                del _OPEN[self._key]
                self.env.close()

    @contextmanager
    def read(self) -> Iterator["Reader"]:
        with self.env.begin(buffers=False) as txn:
            yield Reader(self, txn)

    @contextmanager
    def write(self) -> Iterator["Writer"]:
        try:
            with self.env.begin(write=True) as txn:
                writer = Writer(self, txn)
                yield writer
                writer._bump_generation()
        except lmdb.MapFullError:
            raise OutOfSpace(f"the catalog at {self.path} is full (map size {MAP_SIZE})") from None
        except lmdb.DiskError as exc:
            raise OutOfSpace(f"no space left for the catalog at {self.path}: {exc}") from None
        except lmdb.Error as exc:  # a failed commit writes nothing: the catalog is as it was
            if shutil.disk_usage(self.path).free < LOW_SPACE:  # LMDB may report a full disk as an I/O error
                raise OutOfSpace(f"no space left for the catalog at {self.path} ({exc}); nothing was committed, "
                                 f"free some space and run it again") from None
            raise ModelstoreError(f"the catalog at {self.path} could not be written ({exc}); "
                                  f"nothing was committed") from None

    def generation(self) -> int:
        with self.read() as r:
            return r.generation()


class Reader:
    def __init__(self, catalog: Catalog, txn: Any) -> None:
        self.catalog, self.txn, self.dbs = catalog, txn, catalog.dbs

    def _get(self, db: str, key: str) -> Any:
        try:
            encoded = key.encode()
        except UnicodeEncodeError:  # not UTF-8 (a surrogate from a command line): nothing is stored under it
            return None
        if not 0 < len(encoded) <= self.catalog.env.max_key_size():  # LMDB cannot hold such a key at all
            return None
        raw = self.txn.get(encoded, db=self.dbs[db])
        return None if raw is None else _dec(raw)

    def _items(self, db: str) -> Iterator[tuple[str, Any]]:
        with self.txn.cursor(db=self.dbs[db]) as cur:
            for k, v in cur:
                yield bytes(k).decode(), _dec(v)

    def _dups(self, db: str, key: str) -> list[str]:
        with self.txn.cursor(db=self.dbs[db]) as cur:
            if not cur.set_key(key.encode()):
                return []
            return [bytes(v).decode() for v in cur.iternext_dup()]

    def generation(self) -> int:
        return int(self.txn.get(b"generation", db=self.dbs["meta"]) or 0)

    def file(self, b3: str) -> FileRecord | None:
        raw = self._get("files", b3)
        return None if raw is None else FileRecord.from_json(b3, raw)

    def files(self) -> Iterator[FileRecord]:
        for b3, raw in self._items("files"):
            yield FileRecord.from_json(b3, raw)

    def file_by_sha256(self, sha256: str) -> str | None:
        return self._get("by_sha256", sha256)

    def file_by_git_sha1(self, sha1: str) -> str | None:
        return self._get("by_git_sha1", sha1)

    def blob_size(self, blob: str) -> int | None:
        raw = self._get("blobs", blob)
        return None if raw is None else int(raw["size"])

    def blobs(self) -> Iterator[tuple[str, int]]:
        for blob, raw in self._items("blobs"):
            yield blob, int(raw["size"])

    def tensor(self, b3: str) -> Extent | None:
        raw = self._get("tensors", b3)
        return None if raw is None else Extent.from_json(raw)

    def tensors(self) -> Iterator[tuple[str, Extent]]:
        for b3, raw in self._items("tensors"):
            yield b3, Extent.from_json(raw)

    def model(self, name: str) -> ModelRecord | None:
        raw = self._get("models", name)
        return None if raw is None else ModelRecord.from_json(raw)

    def models(self) -> Iterator[ModelRecord]:
        for _, raw in self._items("models"):
            yield ModelRecord.from_json(raw)

    def conversions(self, name: str) -> dict[str, Any] | None:
        """What was planned for model `name`: {"model_files", "files", "blobs", "plans", "unsupported"}."""
        return self._get("conversions", name)

    def all_conversions(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return self._items("conversions")

    def conversion_blobs(self) -> set[str]:
        """Blobs that planned conversions own (their headers and small files)."""
        return {blob for _, value in self._items("conversions") for blob in value.get("blobs", ())}

    def models_of_file(self, b3: str) -> list[str]:
        return self._dups("file_models", b3)

    def files_of_blob(self, blob: str) -> list[str]:
        return self._dups("blob_files", blob)

    def reverse_references(self) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """(file, model) and (blob, file) pairs as stored, for fsck."""
        pairs: list[set[tuple[str, str]]] = []
        for db in ("file_models", "blob_files"):
            out: set[tuple[str, str]] = set()
            with self.txn.cursor(db=self.dbs[db]) as cur:
                for k, v in cur.iternext(keys=True, values=True):
                    out.add((bytes(k).decode(), bytes(v).decode()))
            pairs.append(out)
        return pairs[0], pairs[1]


class Writer(Reader):
    def _put(self, db: str, key: str, value: Any) -> None:
        self.txn.put(key.encode(), _enc(value), db=self.dbs[db])

    def _bump_generation(self) -> None:
        self.txn.put(b"generation", str(self.generation() + 1).encode(), db=self.dbs["meta"])

    def put_blob(self, blob: str, size: int) -> None:
        self._put("blobs", blob, {"size": size})

    def put_tensor(self, b3: str, extent: Extent) -> None:
        self._put("tensors", b3, extent.to_json())

    def put_file(self, record: FileRecord) -> None:
        if self.txn.get(record.b3.encode(), db=self.dbs["files"]) is not None:
            return
        self._put("files", record.b3, record.to_json())
        self._put("by_sha256", record.sha256, record.b3)
        if record.git_sha1:
            self._put("by_git_sha1", record.git_sha1, record.b3)
        for blob in record.blobs:
            self.txn.put(blob.encode(), record.b3.encode(), db=self.dbs["blob_files"], dupdata=True)

    def put_model(self, model: ModelRecord) -> ModelRecord | None:
        """Add or replace `model`; returns the record it replaced. Its conversions stay only
        when its files are the same."""
        conversions = self.conversions(model.name)
        old = self.remove_model(model.name)
        if conversions is not None and conversions.get("model_files") == model.files:
            self.put_conversions(model.name, conversions)
        self._put("models", model.name, model.to_json())
        for b3 in set(model.files.values()):
            self.txn.put(b3.encode(), model.name.encode(), db=self.dbs["file_models"], dupdata=True)
        return old

    def remove_model(self, name: str) -> ModelRecord | None:
        old = self.model(name)
        if old is None:
            return None
        self.txn.delete(name.encode(), db=self.dbs["models"])
        self.txn.delete(name.encode(), db=self.dbs["conversions"])
        for b3 in set(old.files.values()):
            self.txn.delete(b3.encode(), name.encode(), db=self.dbs["file_models"])
        return old

    def put_conversions(self, name: str, value: dict[str, Any]) -> None:
        self._put("conversions", name, value)

    def remove_file(self, record: FileRecord) -> None:
        self.txn.delete(record.b3.encode(), db=self.dbs["files"])
        if self._get("by_sha256", record.sha256) == record.b3:
            self.txn.delete(record.sha256.encode(), db=self.dbs["by_sha256"])
        if record.git_sha1 and self._get("by_git_sha1", record.git_sha1) == record.b3:
            self.txn.delete(record.git_sha1.encode(), db=self.dbs["by_git_sha1"])
        for blob in record.blobs:
            self.txn.delete(blob.encode(), record.b3.encode(), db=self.dbs["blob_files"])

    def remove_blob(self, blob: str) -> None:
        self.txn.delete(blob.encode(), db=self.dbs["blobs"])

    def remove_tensor(self, b3: str) -> None:
        self.txn.delete(b3.encode(), db=self.dbs["tensors"])
