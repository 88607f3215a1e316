"""Finding model files in plain folders: walking without hidden entries or the store itself,
telling unfinished downloads and dangling links apart, and grouping split GGUF shards."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from modelstore.store.metadata import shard_of
from modelstore.store.records import Source
from modelstore.store.sources.common import default_name, is_partial, walk_tree
from modelstore.store.sources.runtimes.found import FoundModel, Scan

LocationFn = Callable[[Path], str]  # the Source location of a model, from its (first) file
_NOT_DOWNLOADS = (".lock", ".etag", ".json")  # downloaders' bookkeeping next to a file, not a partial file


def walk(root: Path, ignore: set[Path], scan: Scan | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """`walk_tree` of a runtime's folder, noting what it leaves out in `scan` by relative path."""
    def note(path: Path, why: str) -> None:
        if scan is not None:
            scan.skip(os.path.relpath(path, root), why)

    return walk_tree(root, ignore, note)


def unfinished(name: str) -> bool:
    return is_partial(name) and not name.endswith(_NOT_DOWNLOADS)


def usable(path: Path, scan: Scan, what: str) -> bool:
    """A regular file (or a link to one); otherwise noted in `scan`."""
    if path.is_symlink() and not path.exists():
        scan.skip(what, "a dangling symlink")
        return False
    if not path.is_file():
        scan.skip(what, "not a regular file")
        return False
    return True


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` (the entry itself, a symlink not followed) is in `folder` or below it."""
    return Path(os.path.realpath(path.parent)).is_relative_to(os.path.realpath(folder))


def is_gguf_name(path: Path) -> bool:
    return path.name.lower().endswith(".gguf")


def gguf_files(root: Path, ignore: set[Path], scan: Scan, *, recursive: bool) -> list[Path]:
    """Every finished *.gguf under `root`; unfinished downloads and broken links are noted."""
    found: list[Path] = []
    for folder, dirnames, filenames in walk(root, ignore, scan):
        if not recursive:
            dirnames[:] = []
        for fn in filenames:
            path = folder / fn
            rel = path.relative_to(root).as_posix()
            if unfinished(fn):
                scan.skip(rel, "an unfinished download")
            elif is_gguf_name(path) and usable(path, scan, rel):
                found.append(path)
    return found


def gguf_models(paths: list[Path], *, kind: str, alternative: str, location: LocationFn) -> list[FoundModel]:
    """One model per GGUF file, except that the shards of a split GGUF (<prefix>-0000N-of-0000M.gguf
    in one folder) make one model together."""
    groups: dict[tuple[Path, str], list[Path]] = {}
    for path in sorted(paths):
        shard = shard_of(path.name, any_case=True)
        key = (path.parent, f"{shard.prefix}-of-{shard.count}") if shard else (path.parent, path.name)
        groups.setdefault(key, []).append(path)
    models = []
    for (folder, _), members in groups.items():
        shard = shard_of(members[0].name, any_case=True)
        if shard:
            first, stem = members[0], shard.prefix
        else:
            first, stem = members[0], members[0].name[: -len(".gguf")]
        source = Source(kind, location(first))
        models.append(FoundModel(default_name(stem), alternative, source, {p.name: p for p in members},
                                 str(first), originals=tuple(members)))
    return models

