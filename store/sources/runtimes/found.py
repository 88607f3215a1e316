"""What scanning a runtime's folder finds, and what every kind of folder can do with it.

A `RuntimeFolder` only reads and, for `--move`, removes: it never writes the store. The importer
(importer.py) stores what `scan` found, then asks the folder to `release` each committed model.
"""

from __future__ import annotations

import os
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelstore.store.errors import BadModelFile
from modelstore.store.records import Source

# A blob nobody references any more is removed by a later run only once it is this old: a
# download in progress writes its blobs before the manifest or link that names them (Ollama's
# own prune waits an hour for the same reason).
SETTLED_SECONDS = 3600


@dataclass(frozen=True)
class Digest:
    """The hash a runtime names a file by: checked against the bytes actually stored."""

    kind: str  # "sha256" or "git" (git blob SHA-1)
    value: str


@dataclass
class FoundModel:
    """One model in a runtime's folder, as it would be stored."""

    name: str  # the store name it asks for
    alternative: str  # when `name` belongs to another source: name@alternative
    source: Source
    files: dict[str, Path]  # path in the model -> where to read it (a symlink is followed)
    where: str  # for messages: the manifest, snapshot or folder
    expected: dict[str, Digest] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # True when `files` is the whole model (an Ollama manifest): a stored model of the same source
    # is replaced. Otherwise files found are added to it, never taken away: a folder half moved
    # in by an interrupted --move, or a cache holding some files of a commit, must not shrink it.
    complete: bool = False
    originals: tuple[Path, ...] = ()  # what --move removes once the model is committed
    # Its files are blobs named by their hash that the runtime never rewrites in place (Ollama's
    # blobs/; the HF cache's blobs/, reached through snapshot links checked to lead there): --move
    # may hard-link them in even while another model of the folder still uses them. Other files
    # are hard-linked only when --move removes them with this model: among `originals`, and not a
    # symlink to a file that stays where it is.
    content_addressed: bool = False
    links_into_blobs: bool = False  # its symlinks lead into the runtime's own blobs/ (the HF cache)

    def move_by_link(self, path: Path) -> bool:
        if path.is_symlink():
            return self.links_into_blobs
        return self.content_addressed or path in self.originals

    @property
    def identity(self) -> tuple[str, ...]:
        return source_identity(self.source)


def source_identity(source: Source) -> tuple[str, ...]:
    """What makes two sources the same model: a Hub repo at one commit; otherwise the place (an
    Ollama name, a folder, a file), whatever its current version."""
    if source.kind == "huggingface":
        return (source.kind, source.location, source.revision or "")
    return (source.kind, source.location)


@dataclass(frozen=True)
class Skipped:
    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.what}: {self.why}"


@dataclass
class Scan:
    models: list[FoundModel] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, what: object, why: str) -> None:
        self.skipped.append(Skipped(str(what), why))

    def extend(self, other: Scan) -> None:
        self.models += other.models
        self.skipped += other.skipped


@dataclass
class Removal:
    """Files --move took out of a runtime's folder, and the disk that gave back."""

    files: int = 0
    bytes: int = 0  # their sizes
    freed: int = 0  # of which no other link (the store's, for a file moved in) keeps on disk
    problems: list[Skipped] = field(default_factory=list)

    def unlink(self, path: Path) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        try:
            os.unlink(path)
        except OSError as exc:
            self.problems.append(Skipped(str(path), f"could not be removed: {exc.strerror or exc}"))
            return False
        if not stat.S_ISLNK(st.st_mode):  # a link gives back nothing; its target is not ours to count
            self.files += 1
            self.bytes += st.st_size
            if st.st_nlink == 1:
                self.freed += st.st_size
        return True

    def prune(self, folder: Path, stop: Path) -> None:
        """Remove `folder` and its parents while they are empty, up to (not including) `stop`."""
        folder, stop = Path(os.path.abspath(folder)), Path(os.path.abspath(stop))
        while folder != stop and stop in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


class Held:
    """What the store holds, asked by a folder finishing an earlier, interrupted --move; and the
    files that --move had committed and was about to remove when it stopped (`pending`)."""

    def __init__(self, sha256: Callable[[str], bool], git_sha1: Callable[[str], bool],
                 sources: Iterable[tuple[str, ...]], pending: Iterable[str] = ()) -> None:
        self.has_sha256, self.has_git_sha1 = sha256, git_sha1
        self.sources = set(sources)
        self.pending = set(pending)

    def has_source(self, source: Source) -> bool:
        return source_identity(source) in self.sources

    def may_remove(self, path: Path) -> bool:
        """A file nothing names any more (whose bytes the store holds) may go: one the stopped
        --move was removing at once, any other only once it is old enough not to be a download
        in progress."""
        return os.path.realpath(path) in self.pending or settled(path)


def refusal(found: FoundModel, exc: Exception) -> str:
    """Why `found` is skipped, without naming its file twice where the model is that one file."""
    if isinstance(exc, BadModelFile) and exc.path == found.where:
        return exc.problem
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or ''}"
    return str(exc)


def sha256_of(path: Path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def settled(path: Path) -> bool:
    try:
        return time.time() - os.lstat(path).st_mtime > SETTLED_SECONDS
    except FileNotFoundError:
        return False


class RuntimeFolder(ABC):
    """One runtime's models folder."""

    kind: str = ""
    label: str = ""  # the runtime's name, for people

    def __init__(self, root: Path, ignore: Iterable[Path] = ()) -> None:
        self.root = Path(os.path.abspath(root))  # recorded as where models came from: never relative
        self.ignore = {Path(os.path.abspath(p)) for p in ignore}  # e.g. the store itself

    @abstractmethod
    def scan(self) -> Scan:
        """Every model in the folder, and what was left out and why. Reads only."""

    def release(self, model: FoundModel, removal: Removal) -> None:
        """--move: remove the originals of `model`, which the store has committed."""
        for path in model.originals:
            removal.unlink(path)
        for folder in sorted({p.parent for p in model.originals}, key=lambda p: -len(p.parts)):
            removal.prune(folder, self.root)

    def tidy(self, held: Held, removal: Removal) -> None:
        """--move: finish what an interrupted earlier --move left (files the store already holds
        that nothing in the folder uses any more). Nothing to do for most folders."""
