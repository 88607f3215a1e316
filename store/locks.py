"""The store lock: every `add` (and `convert`, and `fsck`) holds it shared, `gc` holds it exclusive.

So gc never removes a blob an add is about to commit, or one whose tensors an add is reusing,
and the kernel drops the lock of a killed process by itself.

Two more locks are taken on folders themselves (flock works on a directory's fd):
- `<home>/objects`, exclusive, from an add's first GGUF/safetensors file until that add ends: adds
  run side by side, but only one at a time looks up and writes tensors, so two adds of models that
  share tensors store them once (the second sees the first's committed tensors);
- `<home>/tmp`: shared while an operation creates and locks its staging folder, exclusive while
  stale staging is looked for, so a folder being created is never taken for a dead one's.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from modelstore.store.errors import Busy

WaitNotice = Callable[[str], None]  # told what the lock is waiting for, before it waits


@contextmanager
def store_lock(path: Path, *, exclusive: bool, wait: bool = True,
               on_wait: WaitNotice | None = None) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        fd = os.open(path, os.O_RDONLY)  # a store this user may only read (fsck): flock needs no write access
    try:
        kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise Busy("the store is busy: an add or gc is running (try again, or wait)") from None
            if on_wait is not None:
                on_wait("running adds, imports, conversions or fsck" if exclusive else "a running gc")
            fcntl.flock(fd, kind)
        yield
    finally:
        os.close(fd)


@contextmanager
def dir_lock(path: Path, *, exclusive: bool) -> Iterator[None]:
    """flock a folder itself (no lock file left behind); the kernel drops it with the process."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def hold_dir_lock(path: Path, on_wait: WaitNotice | None = None, holder: str = "another command") -> int:
    """Take `path`'s exclusive folder lock, waiting for its holder; returns the fd to close to release it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd
