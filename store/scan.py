"""`scan`: what the store would save on the model folders already on this disk.

For every regular file under the folders (file symlinks followed, as the Hugging Face cache is
made of them; folder symlinks not; a file reached through several links or hard links counted
once), scan reads the GGUF/safetensors header and hashes the file in one pass: BLAKE3 and SHA-256
of the whole, BLAKE3 of every tensor `add` would share. From that it computes, per folder and in
total:

- logical bytes: every distinct file (inode) once, which is what the folders take now;
- whole-file dedup: every distinct content once (what Ollama's blobs and the HF cache achieve);
- tensor-level dedup: what `add` would store, by its own rules, the files added in the order scan
  found them: every distinct content's non-tensor bytes (headers, padding, tensors under
  `MIN_SHARED_TENSOR`) plus every distinct tensor once; except that a file whose tensors stored
  before make up less than `MIN_REUSE_SHARE` of it is stored whole. It can be a header too high
  where two different files have byte-identical non-tensor parts (add stores that blob once).

Scan only reads the folders. Its one write is the hash cache in the store home (scancache.py),
and only when that home is not inside a scanned folder.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelstore.store import jsontext
from modelstore.store.catalog import Catalog
from modelstore.store.errors import BadModelFile, SourceChanged
from modelstore.store.hashing import hash_file
from modelstore.store.ingest import MIN_REUSE_SHARE, MIN_SHARED_TENSOR, ProgressFactory
from modelstore.store.scancache import FileDigest, FileKey, ScanCache
from modelstore.store.sources.common import is_partial, walk_tree
from modelstore.store.tensors import read_weights_header

MAX_MANIFEST_BYTES = 1 << 20
OLLAMA_REGISTRY = "registry.ollama.ai"


# -- finding files ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


Inode = tuple[int, int]  # (st_dev, st_ino)


@dataclass
class FoundFile:
    """One regular file (one inode) and every path under one folder that reaches it."""

    key: FileKey
    paths: list[Path] = field(default_factory=list)

    @property
    def inode(self) -> Inode:
        return (self.key.dev, self.key.ino)


def walk_folder(root: Path, exclude: Iterable[Path] = ()) -> tuple[list[FoundFile], list[Skipped]]:
    """The regular files under `root` (or `root` itself if it is a file), one per inode, and what
    was left out and why. Hidden entries below `root` (.locks, .cache, .no_exist) are ignored, and
    so are the folders in `exclude` (the store's home: its blobs are not models to scan)."""
    found: dict[Inode, FoundFile] = {}
    skipped: list[Skipped] = []
    for path in _candidate_paths(root, skipped, exclude):
        key = _file_key(path, skipped)
        if key is not None:
            found.setdefault((key.dev, key.ino), FoundFile(key)).paths.append(path)
    return list(found.values()), skipped


def _candidate_paths(root: Path, skipped: list[Skipped], exclude: Iterable[Path]) -> Iterator[Path]:
    try:
        is_folder = root.is_dir()
    except PermissionError as exc:  # a folder on the way is another user's
        skipped.append(Skipped(str(root), f"not readable: {exc.strerror}"))
        return
    if not is_folder:
        if is_partial(root.name):
            skipped.append(Skipped(str(root), "an unfinished download"))
        else:
            yield root
        return

    def note(path: Path, why: str) -> None:
        skipped.append(Skipped(str(path), why))

    for folder, _, filenames in walk_tree(root, exclude, note):
        for name in filenames:
            if is_partial(name):
                skipped.append(Skipped(str(folder / name), "an unfinished download"))
                continue
            yield folder / name


def _file_key(path: Path, skipped: list[Skipped]) -> FileKey | None:
    try:
        st = os.stat(path)  # follows file symlinks
    except FileNotFoundError:
        if path.is_symlink():
            skipped.append(Skipped(str(path), f"a dangling link (to {os.readlink(path)})"))
        return None  # else it vanished while we walked
    except OSError as exc:
        skipped.append(Skipped(str(path), f"not readable: {exc.strerror}"))
        return None
    if not stat.S_ISREG(st.st_mode):
        skipped.append(Skipped(str(path), "not a regular file"))
        return None
    return FileKey(os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# -- hashing ---------------------------------------------------------------------------------------

def digest_file(key: FileKey, progress: Callable[[int], None] | None = None, name: str | None = None) -> FileDigest:
    """Header and one hashing pass, as `add` does them. Raises SourceChanged if the file is not
    the one `key` describes any more, OSError if it cannot be read."""
    path = Path(key.realpath)
    try:
        header = read_weights_header(path, name)
        problem = None
    except BadModelFile as exc:  # counted as plain bytes and listed: add would refuse this file
        header, problem = None, exc.problem
    spans = [t for t in header.tensors if t.length >= MIN_SHARED_TENSOR] if header else []
    hashes = hash_file(str(path), spans, progress=progress)
    st = os.stat(path)
    if (hashes.size, hashes.mtime_ns) != (key.size, key.mtime_ns) or (
            st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != key.stamp:
        raise SourceChanged(f"{path}: changed while it was being scanned")
    tensors = tuple((hashes.tensor_b3[s.name], s.length) for s in sorted(spans, key=lambda s: s.offset))
    return FileDigest(hashes.size, hashes.b3, hashes.sha256, header.format if header else None, tensors, problem)


# -- figures ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scanned:
    """A distinct file of the scan and what its bytes hold."""

    found: FoundFile
    digest: FileDigest


@dataclass(frozen=True)
class Figures:
    files: int
    logical_bytes: int
    whole_file_bytes: int  # each distinct content once
    tensor_dedup_bytes: int  # what the store would hold (stored_by_add)

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.tensor_dedup_bytes if self.tensor_dedup_bytes else 1.0

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "logical_bytes": self.logical_bytes,
                "whole_file_dedup_bytes": self.whole_file_bytes, "tensor_dedup_bytes": self.tensor_dedup_bytes,
                "saved_bytes": self.logical_bytes - self.tensor_dedup_bytes, "ratio": round(self.ratio, 4)}


def distinct_contents(items: Iterable[Scanned]) -> dict[str, FileDigest]:
    return {s.digest.b3: s.digest for s in items}


def stored_by_add(contents: Iterable[FileDigest], stored: Callable[[str], bool] = lambda tensor: False) -> int:
    """The bytes `add` writes for these distinct contents, added in this order to a store whose
    tensors are `stored`: each file costs what is not a tensor stored before it or earlier in
    itself, unless that reuse is under MIN_REUSE_SHARE of the file, which is then stored whole."""
    known: set[str] = set()
    total = 0
    for digest in contents:
        reused = 0
        mine: set[str] = set()
        for tensor, length in digest.tensors:
            if tensor in mine or tensor in known or stored(tensor):
                reused += length
            mine.add(tensor)
        total += digest.size - reused if reused >= MIN_REUSE_SHARE * digest.size else digest.size
        known |= mine
    return total


def figures(items: list[Scanned]) -> Figures:
    contents = distinct_contents(items)
    return Figures(len(items), sum(s.digest.size for s in items), sum(d.size for d in contents.values()),
                   stored_by_add(contents.values()))


# -- what is duplicated ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Place:
    path: str
    name: str  # the model name a person knows it by, where the folder says (Ollama manifests, HF repo)
    folder: str


@dataclass(frozen=True)
class Duplicate:
    # "same file": one content in several places; "shared tensors": files with tensors in common;
    # "repeated tensors": one file holding the same tensor bytes more than once
    kind: str
    places: tuple[Place, ...]  # one per copy ("same file") or per distinct file ("shared tensors")
    bytes: int  # the duplicated bytes, counted once
    saved_bytes: int  # what dedup saves on them

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "bytes": self.bytes, "saved_bytes": self.saved_bytes,
                "places": [p.__dict__ for p in self.places]}


def duplicates(items: list[Scanned], places: dict[Inode, Place]) -> list[Duplicate]:
    """Every duplication, largest saving first. Summed, the savings of "same file" entries are
    logical - whole-file bytes, and those of the tensor entries whole-file - tensor bytes (less
    what files sharing under MIN_REUSE_SHARE of themselves keep, as add stores those whole)."""
    copies: dict[str, list[Scanned]] = defaultdict(list)
    for s in items:
        copies[s.digest.b3].append(s)

    def place(s: Scanned) -> Place:
        return places[s.found.inode]

    out = [Duplicate("same file", tuple(place(s) for s in group), group[0].digest.size,
                     (len(group) - 1) * group[0].digest.size)
           for group in copies.values() if len(group) > 1 and group[0].digest.size]

    holders: dict[str, list[str]] = defaultdict(list)  # tensor digest -> content per occurrence
    length: dict[str, int] = {}
    for b3, group in copies.items():
        for tensor, n in group[0].digest.tensors:
            holders[tensor].append(b3)
            length[tensor] = n
    by_holders: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])  # -> [bytes once, saved]
    for tensor, owners in holders.items():
        if len(owners) > 1:
            entry = by_holders[tuple(sorted(set(owners)))]
            entry[0] += length[tensor]
            entry[1] += length[tensor] * (len(owners) - 1)
    out += [Duplicate("shared tensors" if len(owners) > 1 else "repeated tensors",
                      tuple(place(copies[b3][0]) for b3 in owners), once, saved)
            for owners, (once, saved) in by_holders.items()]
    return sorted(out, key=lambda d: (-d.saved_bytes, d.places[0].path))


def ollama_names(root: Path) -> dict[str, str]:
    """sha256 hex -> model:tag, from the manifests of an Ollama models folder."""
    names: dict[str, str] = {}
    for manifest in sorted(root.glob("manifests/*/*/*/*")):
        try:
            if not manifest.is_file() or manifest.stat().st_size > MAX_MANIFEST_BYTES:
                continue
            layers = jsontext.loads(manifest.read_bytes()).get("layers") or []
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(layers, list):
            continue
        host, namespace, model, tag = manifest.relative_to(root / "manifests").parts
        name = f"{model}:{tag}" if (host, namespace) == (OLLAMA_REGISTRY, "library") else (
            f"{namespace}/{model}:{tag}" if host == OLLAMA_REGISTRY else f"{host}/{namespace}/{model}:{tag}")
        for layer in layers:
            digest = layer.get("digest", "") if isinstance(layer, dict) else ""
            if isinstance(digest, str) and digest.startswith("sha256:"):
                names.setdefault(digest[7:], name)
    return names


def place_of(found: FoundFile, root: Path, ollama: dict[str, str]) -> Place:
    """The friendliest of the paths that reach a file: a snapshot link over an HF blob, an Ollama
    blob by its model name."""
    path = min(found.paths, key=lambda p: ("blobs" in p.parts, len(p.parts), str(p)))
    rel = path.relative_to(root).parts if path != root else (path.name,)
    if path.name.startswith("sha256-") and path.name[7:] in ollama:
        name = ollama[path.name[7:]]
    elif len(rel) > 3 and rel[0].startswith("models--") and rel[1] == "snapshots":
        name = rel[0].removeprefix("models--").replace("--", "/") + "/" + "/".join(rel[3:])
    else:
        name = "/".join(rel)
    return Place(str(path), name, str(root))


# -- what the store holds already ------------------------------------------------------------------

@dataclass(frozen=True)
class InStore:
    home: str
    stored_bytes: int  # of the tensor-dedup bytes, what the store holds already
    new_bytes: int  # what adding every scanned file would write

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def in_store(contents: dict[str, FileDigest], catalog: Catalog, home: Path) -> InStore:
    """How much of what the scan found the store holds already, and what adding it all would write."""
    with catalog.read() as r:
        missing = [d for b3, d in contents.items() if r.file(b3) is None]
        new = stored_by_add(missing, lambda tensor: r.tensor(tensor) is not None)
    return InStore(str(home), stored_by_add(contents.values()) - new, new)


# -- the whole scan --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FolderReport:
    path: str
    runtime: str | None
    figures: Figures


@dataclass(frozen=True)
class ScanReport:
    folders: tuple[FolderReport, ...]
    total: Figures
    duplicates: tuple[Duplicate, ...]  # the largest savings, at most `top`
    skipped: tuple[Skipped, ...]
    problems: tuple[Skipped, ...]  # files counted as plain bytes (bad headers)
    hashed_files: int
    hashed_bytes: int
    cached_files: int
    in_store: InStore | None

    def to_json(self) -> dict[str, Any]:
        return {"folders": [{"path": f.path, "runtime": f.runtime, **f.figures.to_json()} for f in self.folders],
                "total": self.total.to_json(),
                "duplicates": [d.to_json() for d in self.duplicates],
                "skipped": [s.__dict__ for s in self.skipped],
                "problems": [p.__dict__ for p in self.problems],
                "hashing": {"hashed_files": self.hashed_files, "hashed_bytes": self.hashed_bytes,
                            "cached_files": self.cached_files},
                "in_store": self.in_store.to_json() if self.in_store else None}


Walked = list[tuple[Path, str | None, list[FoundFile]]]  # (folder, runtime, its files)


def scan(folders: list[tuple[Path, str | None]], cache: ScanCache, *, progress: ProgressFactory | None = None,
         catalog: Catalog | None = None, home: Path | None = None, top: int = 10,
         exclude: Iterable[Path] = ()) -> ScanReport:
    """Scan (folder, runtime name or None) pairs, leaving out the folders in `exclude`. Each inode
    is hashed at most once, and not at all when `cache` knows it; figures are per folder and over
    all of them."""
    walked: Walked = []
    skipped: list[Skipped] = []
    for root, runtime in folders:
        found, left_out = walk_folder(root, exclude)
        walked.append((root, runtime, found))
        skipped += left_out

    digests, to_hash = _look_up(walked, cache)
    cached_files = len(digests)
    hashed_files, hashed_bytes = _hash_all(to_hash, digests, cache, skipped, progress)
    for root, _, found in walked:
        if os.path.isdir(root):
            cache.forget_missing(os.path.realpath(root), {f.key.realpath for f in found})

    reports, items, places = _per_folder(walked, digests)
    problems = tuple(Skipped(places[i].path, d.problem) for i, d in digests.items() if d.problem and i in places)
    stored = in_store(distinct_contents(items), catalog, home or Path()) if catalog is not None else None
    return ScanReport(tuple(reports), figures(items), tuple(duplicates(items, places)[:top]),
                      tuple(skipped), problems, hashed_files, hashed_bytes, cached_files, stored)


def _weights_name(found: FoundFile) -> str | None:
    """A name among the file's paths that says its format (a GGUF says it by its magic as well,
    so a .safetensors name is taken first)."""
    names = sorted((p.name for p in found.paths if p.suffix in (".safetensors", ".gguf")),
                   key=lambda n: not n.endswith(".safetensors"))
    return names[0] if names else None


def _look_up(walked: Walked, cache: ScanCache) -> tuple[dict[Inode, FileDigest], dict[Inode, FoundFile]]:
    """The digests the cache has, and the files (one per inode) it does not."""
    digests: dict[Inode, FileDigest] = {}
    to_hash: dict[Inode, FoundFile] = {}
    for _, _, found in walked:
        for f in found:
            if f.inode in digests or f.inode in to_hash:
                continue
            cached = cache.get(f.key)
            if cached is not None and cached.format is None and _weights_name(f) is not None:
                cached = None  # hashed before, by a path that did not say it holds weights
            if cached is None:
                to_hash[f.inode] = f
            else:
                digests[f.inode] = cached
    return digests, to_hash


def _per_folder(walked: Walked, digests: dict[Inode, FileDigest]
                ) -> tuple[list[FolderReport], list[Scanned], dict[Inode, Place]]:
    """Figures per folder; every distinct file of the scan; where each is best shown."""
    places: dict[Inode, Place] = {}
    reports: list[FolderReport] = []
    everything: dict[Inode, Scanned] = {}
    for root, runtime, found in walked:
        names = ollama_names(root) if os.path.isdir(root) else {}
        items = [Scanned(f, digests[f.inode]) for f in found if f.inode in digests]
        for s in items:
            places.setdefault(s.found.inode, place_of(s.found, root, names))
            everything.setdefault(s.found.inode, s)
        reports.append(FolderReport(str(root), runtime, figures(items)))
    return reports, list(everything.values()), places


def _hash_all(to_hash: dict[Inode, FoundFile], digests: dict[Inode, FileDigest],
              cache: ScanCache, skipped: list[Skipped], progress: ProgressFactory | None) -> tuple[int, int]:
    """Hash what the cache did not know, into `digests` and the cache; returns (files, bytes) hashed."""
    total = sum(f.key.size for f in to_hash.values())
    tick = progress(total, f"{len(to_hash)} files") if progress and to_hash else None
    files = done = 0
    for inode, found in to_hash.items():
        key, shown = found.key, str(found.paths[0])  # the path scanned, not where a link leads
        # a link's name says the format of a blob named by hash (the HF cache's snapshots)
        name = _weights_name(found)
        try:
            digest = digest_file(key, tick, name)
        except SourceChanged:
            skipped.append(Skipped(shown, "changed while it was being scanned: not counted"))
            continue
        except OSError as exc:
            skipped.append(Skipped(shown, f"not readable: {exc.strerror or exc}"))
            continue
        digests[inode] = digest
        cache.put(key, digest)
        files += 1
        done += key.size
    return files, done
