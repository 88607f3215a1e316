"""The tree a mount serves: directories, files and symlinks, with stable inode numbers.

Views build plain `Dir`/`File`/`Link` values; `index_tree` gives every node its inode and
attributes. Nothing here touches FUSE, the catalog's storage or the disk.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field

from modelstore.store.records import Extent, Piece

ROOT_INODE = 1


@dataclass(frozen=True)
class StoredContent:
    """The bytes of a stored file or a converted one: its recipe, with where each piece starts in
    the file and the blobs it reads, worked out once per tree rather than at every open."""

    b3: str
    size: int
    recipe: tuple[Piece, ...]
    starts: tuple[int, ...] = field(default=(), compare=False)
    blobs: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.starts and self.recipe:
            starts, pos = [], 0
            blobs: dict[str, None] = {}  # in first-use order, once each
            for piece in self.recipe:
                starts.append(pos)
                pos += piece.length
                for ext in [piece] if isinstance(piece, Extent) else piece.inputs:
                    blobs[ext.blob] = None
            object.__setattr__(self, "starts", tuple(starts))
            object.__setattr__(self, "blobs", tuple(blobs))


@dataclass(frozen=True)
class Literal:
    """Bytes a view generates (a manifest, a ref, a config blob)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


Content = StoredContent | Literal


@dataclass
class File:
    content: Content
    mtime_ns: int = 0
    owner: str = field(default="", compare=False)  # the model a view placed it for, if one


@dataclass
class Link:
    target: str
    mtime_ns: int = 0
    owner: str = field(default="", compare=False)


@dataclass
class Dir:
    children: dict[str, "Node"] = field(default_factory=dict)
    mtime_ns: int = 0

    def dir(self, name: str, mtime_ns: int = 0) -> "Dir":
        """The child folder `name`, created if missing. Where a file holds that name, a folder
        that is in no tree: what is placed in it is not shown (the first placed stays, and
        `show` says the model is not shown there), rather than one model ending every view."""
        child = self.children.get(name)
        if child is None:
            child = self.children[name] = Dir(mtime_ns=mtime_ns)
        if not isinstance(child, Dir):
            return Dir()
        child.mtime_ns = max(child.mtime_ns, mtime_ns)
        return child

    def add(self, path: str, node: "Node") -> bool:
        """Place `node` at the relative `path`, creating folders on the way; False, and nothing
        replaced, when that path is taken: one model never hides another."""
        parts = path.split("/")
        folder = self
        for part in parts[:-1]:
            folder = folder.dir(part, getattr(node, "mtime_ns", 0))
        if parts[-1] in folder.children:
            return False
        folder.children[parts[-1]] = node
        return True


Node = File | Link | Dir


@dataclass(frozen=True)
class Attrs:
    ino: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int = 1


@dataclass
class Indexed:
    """A tree with inode numbers: what the FUSE adapter looks things up in."""

    nodes: dict[int, Node]
    attrs: dict[int, Attrs]
    children: dict[int, dict[str, int]]  # directory inode -> name -> inode
    parents: dict[int, int]


def _ino(key: bytes) -> int:
    # 63 bits, never 0 or the root inode
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & ((1 << 63) - 1)
    return value if value > ROOT_INODE else value + 2


def content_inode(content: Content) -> int:
    """Same content, same inode, in every view and across remounts: the kernel then keeps one
    page cache for a file however many paths show it."""
    if isinstance(content, StoredContent):
        return _ino(b"f:" + content.b3.encode())
    return _ino(b"l:" + hashlib.sha256(content.data).digest())


def index_tree(root: Dir, empty_mtime_ns: int = 0) -> Indexed:
    """Inodes and attributes for every node. A folder's mtime is the newest of what it holds
    (its own, if a view gave it a later one); a folder holding nothing dated shows `empty_mtime_ns`
    (the mount passes the time it started), so no folder claims 1970."""
    nodes: dict[int, Node] = {}
    attrs: dict[int, Attrs] = {}
    children: dict[int, dict[str, int]] = {}
    parents: dict[int, int] = {}
    links: dict[int, int] = {}

    def visit(node: Node, path: str, ino: int, parent: int) -> int:
        """Index `node`; returns its own mtime (for a folder, the newest of what it holds)."""
        nodes[ino] = node
        parents.setdefault(ino, parent)
        if isinstance(node, Dir):
            children[ino] = {}
            subdirs = 0
            newest = node.mtime_ns
            for name, child in node.children.items():
                child_path = f"{path}/{name}"
                if isinstance(child, File):
                    child_ino = content_inode(child.content)
                elif isinstance(child, Link):
                    child_ino = _ino(b"s:" + child_path.encode() + b"\0" + child.target.encode())
                else:
                    child_ino = _ino(b"d:" + child_path.encode())
                    subdirs += 1
                children[ino][name] = child_ino
                newest = max(newest, visit(child, child_path, child_ino, ino))
            mtime = newest or empty_mtime_ns
            attrs[ino] = Attrs(ino, stat.S_IFDIR | 0o555, 0, mtime, 2 + subdirs)
            return mtime
        if isinstance(node, File):
            links[ino] = links.get(ino, 0) + 1
            previous = attrs.get(ino)
            mtime = node.mtime_ns if previous is None else min(previous.mtime_ns, node.mtime_ns)
            attrs[ino] = Attrs(ino, stat.S_IFREG | 0o444, node.content.size, mtime, links[ino])
        else:
            attrs[ino] = Attrs(ino, stat.S_IFLNK | 0o777, len(node.target.encode()), node.mtime_ns)
        return node.mtime_ns

    visit(root, "", ROOT_INODE, ROOT_INODE)
    return Indexed(nodes, attrs, children, parents)
