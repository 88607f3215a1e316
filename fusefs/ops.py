"""The pyfuse3 adapter: translates FUSE requests into lookups in the current tree. The only
place FUSEError is raised."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections.abc import Callable

import pyfuse3
import trio

from modelstore.fusefs.reader import DerivedReader, OpenFile
from modelstore.store.derived import DerivedCache
from modelstore.fusefs.tree import Attrs, Dir, File, Indexed, Link, Literal, StoredContent

log = logging.getLogger(__name__)
TIMEOUT = 3600.0  # contents are immutable; catalog changes invalidate what they touch


class Operations(pyfuse3.Operations):
    def __init__(self, tree: Indexed, blob_path: Callable[[str], str], derived_cache: DerivedCache | None = None) -> None:
        super().__init__()
        self.tree = tree
        self.blob_path = blob_path
        self.derived = DerivedReader(derived_cache, self._in_thread) if derived_cache is not None else None
        self.handles: dict[int, OpenFile | bytes] = {}
        self.listings: dict[int, tuple[int, list[str]]] = {}  # directory handle -> (inode, names at offset 0)
        self._next_fh = itertools.count(1)
        self.uid, self.gid = os.getuid(), os.getgid()
        self.limiter = trio.CapacityLimiter(8)

    def replace_tree(self, tree: Indexed) -> None:
        self.tree = tree

    def _entry(self, a: Attrs) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino
        e.generation = 0
        e.entry_timeout = TIMEOUT
        e.attr_timeout = TIMEOUT
        e.st_mode = a.mode
        e.st_nlink = a.nlink
        e.st_uid = self.uid
        e.st_gid = self.gid
        e.st_size = a.size
        e.st_blksize = 1 << 20
        e.st_blocks = (a.size + 511) // 512
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = a.mtime_ns
        return e

    def _attrs(self, inode: int) -> Attrs:
        try:
            return self.tree.attrs[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        children = self.tree.children.get(parent_inode)
        if children is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        text = os.fsdecode(name)
        if text == ".":
            return self._entry(self._attrs(parent_inode))
        if text == "..":
            return self._entry(self._attrs(self.tree.parents.get(parent_inode, parent_inode)))
        ino = children.get(text)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._entry(self._attrs(ino))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        return self._entry(self._attrs(inode))

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.tree.nodes.get(inode)
        if not isinstance(node, Link):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if not isinstance(self.tree.nodes.get(inode), Dir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._next_fh)
        self.listings[fh] = (inode, sorted(self.tree.children.get(inode, {})))  # for a first read past 0 (seekdir)
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """A listing spans several requests, and the tree may be replaced between them: the offset
        is a position in the names the folder had when the listing began (at opendir, and again at
        offset 0, so a rewinddir sees the folder anew), not in its current names. An entry there all along is
        listed exactly once; one removed meanwhile is skipped (never offered to the kernel's cache
        after its invalidation); one added meanwhile waits for the next listing."""
        listing = self.listings.get(fh)
        if listing is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        inode, names = listing
        children = self.tree.children.get(inode, {})
        if start_id == 0:
            names = sorted(children)
            self.listings[fh] = (inode, names)
        for index in range(start_id, len(names)):
            ino = children.get(names[index])
            attrs = self.tree.attrs.get(ino) if ino is not None else None
            if attrs is None:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(names[index]), self._entry(attrs), index + 1):
                return

    async def releasedir(self, fh: int) -> None:
        self.listings.pop(fh, None)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.tree.nodes.get(inode)
        if not isinstance(node, File):
            raise pyfuse3.FUSEError(errno.EISDIR if isinstance(node, Dir) else errno.ENOENT)
        content = node.content
        if isinstance(content, Literal):
            handle: OpenFile | bytes = content.data
        else:
            assert isinstance(content, StoredContent)
            try:
                handle = OpenFile.open(content, self.blob_path, self.derived)
            except FileNotFoundError:  # the file is listed: its blob missing is damage, not absence
                log.error("inode %d: a blob of the file is missing (removed by a gc just now, or damage: "
                          "run `modelstore fsck`)", inode)
                raise pyfuse3.FUSEError(errno.EIO) from None
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        fh = next(self._next_fh)
        self.handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview | bytearray:
        handle = self.handles.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if isinstance(handle, bytes):
            return handle[off : off + size]
        try:
            return await handle.read(off, size, self._in_thread)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:  # a conversion that fails must fail the read, not the mount
            log.exception("reading inode of handle %d at %d+%d failed", fh, off, size)
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def _in_thread(self, fn: Callable[..., bytearray | bytes], *args: object) -> bytearray | bytes:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if isinstance(handle, OpenFile):
            handle.close()

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        total = sum(a.size for a in self.tree.attrs.values() if stat.S_ISREG(a.mode))
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = total // 4096 + 1
        s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.tree.nodes)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s
