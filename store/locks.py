"""The store lock: every `add` holds it shared, `gc` holds it exclusive.

So gc never removes a blob an add is about to commit, or one whose tensors an add is reusing,
and the kernel drops the lock of a killed process by itself.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from modelstore.store.errors import Busy


@contextmanager
def store_lock(path: Path, *, exclusive: bool, wait: bool = True,
               on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise Busy("the store is busy: an add or gc is running (try again, or wait)") from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, kind)
        yield
    finally:
        os.close(fd)
