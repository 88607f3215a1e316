"""Blobs on disk: `<home>/objects/<2 hex>/<64 hex>`, immutable, named by the BLAKE3 of their bytes.

A blob is written under `<home>/tmp/`, fsynced, renamed into place and its folder fsynced; only then
may a catalog record name it. Each operation stages in a folder of its own, holding a lock on it, so a
later operation can tell a dead one's leftovers (lock free) from a live one's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelstore.store.digests import B3, check_b3
from modelstore.store.errors import OutOfSpace, UsageError

FICLONE = 0x40049409  # linux/fs.h _IOW(0x94, 9, int)
STAGING_LOCK = ".lock"


class Objects:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "objects"
        self.tmp = home / "tmp"

    def create_dirs(self) -> None:
        for d in (self.root, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, blob: str) -> Path:
        check_b3(blob)
        return self.root / blob[:2] / blob

    def exists(self, blob: str) -> bool:
        return self.path(blob).is_file()

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir():
                continue
            for f in sorted(sub.iterdir()):
                yield f.name, f

    # -- committing -------------------------------------------------------------------------

    def commit_staged(self, staged: Path, blob: B3, *, read_only: bool = True) -> Path:
        """Durably move a fully written, fsynced staging file into place as `blob`."""
        target = self.path(blob)
        target.parent.mkdir(exist_ok=True)
        if target.exists():  # the same bytes are there already (an earlier, interrupted add)
            staged.unlink()
            return target
        if read_only:
            os.chmod(staged, 0o444)
        os.rename(staged, target)
        _fsync_dir(target.parent)
        return target

    def link_in(self, source: Path, blob: B3, *, fallback: bool = False) -> bool:
        """Hard-link `source` as `blob`: no bytes copied, the store shares the user's inode.
        Across filesystems: False when `fallback` (the caller copies instead), else an error."""
        target = self.path(blob)
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:
            return True
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM) and fallback:
                return False
            if exc.errno == errno.EXDEV:
                raise UsageError(f"{source}: --link needs the store ({self.home}) on the same "
                                 f"filesystem as the file; use --copy or --reflink") from None
            raise
        _fsync_dir(target.parent)
        return True

    @contextmanager
    def staging(self, purpose: str) -> Iterator[Path]:
        """A private staging folder for one operation, removed when it ends, however it ends."""
        self.create_dirs()
        self.clean_stale_staging()
        folder = self.tmp / f"{purpose}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        lock_fd = os.open(folder / STAGING_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            os.close(lock_fd)

    def stale_staging(self) -> list[Path]:
        """Staging folders whose owner is gone (its lock is free)."""
        stale = []
        if not self.tmp.is_dir():
            return stale
        for folder in self.tmp.iterdir():
            lock = folder / STAGING_LOCK
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                stale.append(folder)  # a crash between mkdir and lock, or a stray file
                continue
            except NotADirectoryError:
                stale.append(folder)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stale.append(folder)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        return stale

    def clean_stale_staging(self) -> int:
        removed = 0
        for folder in self.stale_staging():
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
            removed += 1
        return removed


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
        while copied < size:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), size - copied)
            if n == 0:
                break
            copied += n
        os.fsync(fout.fileno())
    return False


def no_space(exc: OSError, where: Path, what: str) -> OutOfSpace | OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(where).free
        return OutOfSpace(f"no space left in {where} while {what} ({free} bytes free); "
                          f"nothing was committed, free some space and run it again")
    return exc
