"""`modelstore add ./file.gguf` and `modelstore add ./hf-format-folder/`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelstore.store.errors import NotFound, UsageError
from modelstore.store.ingest import ImportMode, Ingest, ProgressFactory
from modelstore.store.metadata import Shard, shard_of
from modelstore.store.names import check_model_name, check_relpath
from modelstore.store.records import Source
from modelstore.store.sources.common import default_name, finish, is_partial, walk_tree
from modelstore.store.store import AddResult, Store


def list_folder(root: Path, leave_out: Iterable[Path] = ()) -> tuple[dict[str, Path], list[str]]:
    """Regular files under `root` (following symlinks to files), minus hidden entries, unfinished
    downloads and the folders `leave_out` (the store's home, its mounts); returns (relative path
    -> path, skipped names)."""
    files: dict[str, Path] = {}
    skipped: list[str] = []

    def note(path: Path, why: str) -> None:
        skipped.append(f"{path.relative_to(root).as_posix()} ({why})")

    for folder, _, filenames in walk_tree(root, leave_out, note, "the store itself: its home or a mount of it"):
        for fn in filenames:
            path = folder / fn
            rel = path.relative_to(root).as_posix()
            if is_partial(fn):
                skipped.append(f"{rel} (an unfinished download)")
                continue
            if not path.is_file():
                skipped.append(f"{rel} (not a regular file, or a dangling link)")
                continue
            files[check_relpath(rel, where=str(root))] = path
    return files, skipped


def ingest_all(ingest: Ingest, files: dict[str, Path]) -> tuple[dict[str, str], int, int, int]:
    """Ingest every file; returns (path -> file digest, logical bytes, novel bytes, files reused)."""
    stored: dict[str, str] = {}
    logical = novel = reused = 0
    for rel, path in files.items():
        result = ingest.ingest(path, rel)
        stored[rel] = result.record.b3
        logical += result.record.size
        novel += result.novel_bytes
        reused += result.reused_file
    return stored, logical, novel, reused


def _shards(path: Path, shard: Shard) -> dict[str, Path]:
    """A shard of a split GGUF stands for the model, as for llama.cpp's -m: all its shards."""
    count = shard.count
    names = shard.names()
    missing = [name for name in names if not (path.parent / name).is_file()]
    if missing:
        raise UsageError(f"{path} is one of the {count} shards of a split GGUF, and {len(missing)} of them are "
                         f"missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); add the model "
                         f"once every shard is downloaded")
    return {check_relpath(name, where=str(path.parent)): path.parent / name for name in names}


def _not_anothers(store: Store, name: str, source: Source) -> None:
    """A name made from a file name replaces only the model added from that same place: two
    files whose names clean up alike (non-ASCII names) must not replace each other unasked."""
    try:
        current = store.model(name)
    except NotFound:
        return
    if (current.source.kind, current.source.location) != (source.kind, source.location):
        raise UsageError(f"{source.location}: its default name {name} is taken by the model added from "
                         f"{current.source.location}; give it another with --name (or --name {name} to replace "
                         f"that one)")


def add_local(store: Store, path: Path, *, name: str | None = None, mode: ImportMode = ImportMode.COPY,
              progress: ProgressFactory | None = None, on_wait: Any = None) -> AddResult:
    if not path.exists():
        raise NotFound(f"{path}: no such file or folder")
    # A folder by where it leads; a file by where it is (a symlink into the store, as `mount
    # --links` shows files, is a file like any other)
    where = Path(os.path.realpath(path)) if path.is_dir() else Path(os.path.realpath(path.parent), path.name)
    if where.is_relative_to(os.path.realpath(store.home)):
        raise UsageError(f"{path} is inside the store ({store.home}): it holds nothing to add")
    shard = None
    if path.is_dir():
        files, skipped = list_folder(path, [store.home])
        if not files:
            raise UsageError(f"{path}: no files to add")
        default = path.resolve().name
    elif not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the add, a device never end
        raise UsageError(f"{path} is not a regular file")
    elif shard := shard_of(path.name):
        files, skipped = _shards(path, shard), []
        default = shard.prefix
    else:
        files, skipped = {check_relpath(path.name, where=str(path.parent)): path}, []
        default = path.stem if path.suffix in (".gguf", ".safetensors") else path.name
    if mode is ImportMode.MOVE:
        links = [rel for rel, p in files.items() if p.is_symlink()]
        if links:
            raise UsageError(f"{files[links[0]]} is a symlink: --move would leave the file it points to "
                             f"behind; use --copy or --link")
    # A split is where its first shard is, whichever shard was named
    source = Source("local", str((path.with_name(shard.name(1)) if shard else path).resolve()))
    if name is None:
        name = default_name(default)
        _not_anothers(store, name, source)
    check_model_name(name)  # before anything is stored
    with store.adding(mode, progress, on_wait) as ingest:
        stored, logical, novel, reused = ingest_all(ingest, files)
        return finish(store, ingest, name, source, stored, files, logical, novel, reused, skipped=skipped)
