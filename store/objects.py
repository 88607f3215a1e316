"""Blobs on disk: `<home>/objects/<2 hex>/<64 hex>`, immutable, named by the BLAKE3 of their bytes.

A blob is written under `<home>/tmp/`, fsynced, renamed into place and its folder fsynced; only then
may a catalog record name it. Each operation stages in a folder of its own, holding a lock on it, so a
later operation can tell a dead one's leftovers (lock free) from a live one's.

A blob file the catalog does not name (an orphan, left by an interrupted add) is never trusted to
hold the bytes its name says: with `--link`/`--move` it is a hard link to a file the user still owns
and may have edited since. Committing a blob therefore replaces any file of that name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from modelstore.store.digests import B3, check_b3
from modelstore.store.errors import OutOfSpace, UsageError
from modelstore.store.locks import dir_lock

FICLONE = 0x40049409  # linux/fs.h _IOW(0x94, 9, int)
STAGING_LOCK = ".lock"


class Objects:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "objects"
        self.tmp = home / "tmp"
        self._at_end: dict[Path, list[Callable[[], None]]] = {}

    def create_dirs(self) -> None:
        for d in (self.root, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, blob: str) -> Path:
        check_b3(blob)
        return self.root / blob[:2] / blob

    def exists(self, blob: str) -> bool:
        return self.path(blob).is_file()

    def strays(self, known: Collection[str], listed: Iterable[Path] | None = None) -> Iterator[Path]:
        """Files in objects/ that are not a blob of `known` at its own place: orphans an
        interrupted add left, and anything else put there (a misplaced or misnamed file).
        `listed`: a listing taken before `known` was read (see `listing`), instead of a fresh one."""
        for path in self.listing() if listed is None else listed:
            if not (path.name in known and self.path(path.name) == path):  # a known name is valid BLAKE3
                yield path  # a file, or a link (removing a link leaves its target alone)

    def listing_and_writers(self) -> tuple[list[Path], bool]:
        """(`listing()`, whether an add, import or convert is running), taken in that order and
        before the catalog is read: a file listed and not in the catalog is then an orphan unless
        an operation runs, whose blobs are not in the catalog until it commits."""
        listed = self.listing()
        return listed, bool(self.live_staging())

    def listing(self) -> list[Path]:
        """Every file (or link) in objects/<sub>/. Taken before the catalog is read, a file found
        here and not in the catalog is no blob committed meanwhile: the commit follows the file."""
        if not self.root.is_dir():
            return []
        out = []
        for sub in sorted(self.root.iterdir()):
            if sub.is_symlink() or not sub.is_dir():  # never follow a link out of the store
                continue
            for path in sorted(sub.iterdir()):
                if path.is_dir() and not path.is_symlink():
                    continue  # not ours to empty
                out.append(path)
        return out

    # -- committing -------------------------------------------------------------------------

    def commit_staged(self, staged: Path, blob: B3, *, read_only: bool = True) -> Path:
        """Durably move a fully written, fsynced staging file into place as `blob`.

        A file already there under that name is replaced (atomically): the caller skips the commit
        when the catalog names the blob, so one found here is an orphan whose bytes nobody vouches
        for. Replacing one a concurrent add has just placed is harmless: the bytes are the same."""
        target = self.path(blob)
        target.parent.mkdir(exist_ok=True)
        if read_only:
            os.chmod(staged, 0o444)
        os.rename(staged, target)  # a no-op when both already name the same inode
        _fsync_dir(target.parent)
        return target

    def link_in(self, source: Path, staged: Path, *, fallback: bool = False) -> bool:
        """Hard-link `source` as the staging file `staged` (then `commit_staged` it): no bytes
        copied, the store shares the user's inode. Across filesystems: False when `fallback` (the
        caller copies instead), else an error."""
        try:
            # The file a symlink names: Linux link(2), which os.link calls, would link the symlink.
            os.link(os.path.realpath(source), staged)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM) and fallback:
                return False
            if exc.errno == errno.EXDEV:
                raise UsageError(f"{source}: --link needs the store ({self.home}) on the same "
                                 f"filesystem as the file; use --copy or --reflink") from None
            raise
        return True

    @contextmanager
    def staging(self, purpose: str) -> Iterator[Path]:
        """A private staging folder for one operation, removed when it ends, however it ends.
        Callbacks registered with `at_staging_end` run just before it is removed."""
        self.create_dirs()
        self.clean_stale_staging()
        folder = self.tmp / f"{purpose}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Created and locked under the shared tmp/ lock: a stale-staging scan (exclusive) never
        # sees it between mkdir and flock, when it would look like a dead operation's.
        with dir_lock(self.tmp, exclusive=False):
            folder.mkdir()
            lock_fd = os.open(folder / STAGING_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        self._at_end[folder] = []
        try:
            yield folder
        finally:
            try:
                for callback in reversed(self._at_end.pop(folder, [])):
                    callback()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
                os.close(lock_fd)

    def at_staging_end(self, folder: Path, callback: Callable[[], None]) -> None:
        """Run `callback` when the operation staging in `folder` ends (after its commit)."""
        self._at_end[folder].append(callback)

    def stale_staging(self) -> list[Path]:
        """Staging folders whose owner is gone (its lock is free)."""
        return self._staging()[0]

    def live_staging(self) -> list[Path]:
        """Staging folders whose owner still runs (an add, import or convert): blobs such an
        operation has placed in objects/ are not in the catalog until it commits."""
        return self._staging()[1]

    def _staging(self) -> tuple[list[Path], list[Path]]:
        """(stale, live) staging folders, told apart by their lock under tmp/'s exclusive lock."""
        if not self.tmp.is_dir():
            return [], []
        stale, live = [], []
        with dir_lock(self.tmp, exclusive=True):
            for folder in self.tmp.iterdir():
                lock = folder / STAGING_LOCK
                try:
                    fd = os.open(lock, os.O_RDWR)
                except (FileNotFoundError, NotADirectoryError):
                    stale.append(folder)  # a crash between mkdir and lock, or a stray file
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    stale.append(folder)
                except BlockingIOError:
                    live.append(folder)
                finally:
                    os.close(fd)
        return stale, live

    def clean_stale_staging(self) -> int:
        """Remove the staging folders whose owner is gone; returns how many."""
        return len(self.remove_stale_staging())

    def remove_stale_staging(self) -> list[tuple[Path, int]]:
        """Remove the staging folders whose owner is gone; returns each with the bytes it held."""
        removed = []
        for folder in self.stale_staging():
            size = tree_bytes(folder)
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
            removed.append((folder, size))
        return removed


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path` (itself when it is a file), links not followed; 0 when gone."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):  # not Linux, or a libc without it
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Have the kernel start writing `length` bytes at `offset` to disk now, without waiting: the
    fsync that makes the file durable later then finds most of it written. Only a hint (Linux's
    sync_file_range): where it is missing or fails (False), the fsync does all the work."""
    if _SYNC_FILE_RANGE is None or length <= 0:
        return False
    return _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_into(src: Path, dst: Path, *, reflink: bool) -> bool:
    """Copy `src` to a new file `dst` and fsync it; True when it was cloned (no bytes copied)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if reflink:
            try:
                fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                os.fsync(fout.fileno())
                return True
            except OSError:
                pass  # this filesystem cannot clone: fall back to a copy
        size = os.fstat(fin.fileno()).st_size
        copied = 0
        while copied < size:  # in slices: one giant copy_file_range measured 3x slower on ext4
            n = copy_range(fin.fileno(), fout.fileno(), copied, min(BackgroundCopy.SLICE, size - copied))
            if n == 0:
                break
            copied += n
        os.fsync(fout.fileno())
    return False


class BackgroundCopy:
    """Copy byte ranges of `src`, one after another, into a new file `dst`, in a thread, as the
    caller hands them over (`take`); `finish` says no more will come, `stop` abandons the copy.
    `complete` says whether every range handed over arrived, and `finish` was called. Errors (a
    full disk) are raised by `join`.

    A caller that hashes the file hands over the bytes it has proven new, so the copy follows the
    pass: a file that turns out to be stored already costs no copy, and one that shares some of
    its tensors gets only its novel bytes copied."""

    SLICE = 64 << 20

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.complete = False
        self._ranges: list[tuple[int, int]] = []  # handed over, not copied yet
        self._finished = self._stop = False
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="copy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def take(self, start: int, end: int) -> None:
        """Append bytes `start`-`end` of `src` to the copy."""
        if end <= start:
            return
        with self._changed:
            if self._ranges and self._ranges[-1][1] == start:
                self._ranges[-1] = (self._ranges[-1][0], end)
            else:
                self._ranges.append((start, end))
            self._changed.notify()

    def finish(self) -> None:
        with self._changed:
            self._finished = True
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stop = True
            self._changed.notify()

    def join(self) -> None:
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _next_slice(self) -> tuple[int, int] | None:
        """(offset, length) to copy next, waiting until there is some; None at the end."""
        with self._changed:
            while not self._stop and not self._ranges and not self._finished:
                self._changed.wait()
            if self._stop or not self._ranges:
                return None
            start, end = self._ranges[0]
            count = min(self.SLICE, end - start)
            if start + count == end:
                del self._ranges[0]
            else:
                self._ranges[0] = (start + count, end)
            return start, count

    def _run(self) -> None:
        try:
            with open(self.src, "rb") as fin, open(self.dst, "wb") as fout:
                written = 0
                while (piece := self._next_slice()) is not None:
                    offset, count = piece
                    while count:
                        n = copy_range(fin.fileno(), fout.fileno(), offset, count)
                        if n == 0:
                            return  # the source shrank: the caller's hash pass says so
                        start_writeback(fout.fileno(), written, n)
                        offset, count, written = offset + n, count - n, written + n
                with self._changed:
                    self.complete = self._finished and not self._stop
        except BaseException as exc:  # handed to the caller by join()
            self._error = exc


# copy_file_range(2) refuses some pairs of files: across filesystems (EXDEV on Linux >= 5.19, and
# before 5.3), on filesystems without it (EOPNOTSUPP, ENOSYS, EINVAL). Then bytes are copied by hand.
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_COPY_CHUNK = 8 << 20


def copy_range(fd_in: int, fd_out: int, offset: int, count: int) -> int:
    """Copy up to `count` bytes at `offset` of `fd_in` to `fd_out`'s position (which advances);
    returns how many were copied, 0 at the end of `fd_in`."""
    try:
        return os.copy_file_range(fd_in, fd_out, count, offset)
    except OSError as exc:
        if exc.errno not in _NO_COPY_FILE_RANGE:
            raise
    data = os.pread(fd_in, min(count, _COPY_CHUNK), offset)
    view = memoryview(data)
    while view:
        view = view[os.write(fd_out, view):]
    return len(data)


def free_text(where: Path) -> str:
    """How much room the filesystem holding `where` has left, for an out-of-space message."""
    return f"{shutil.disk_usage(where).free / 2**20:.1f} MiB free"


def no_space(exc: OSError, where: Path, what: str) -> OutOfSpace | OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutOfSpace(f"no space left in {where} while {what} ({free_text(where)}); "
                          f"nothing was committed, free some space and run it again")
    return exc
