"""Reading a file through mmap without the risk of SIGBUS.

Hashing mapped pages saves the copy that `readv` makes of every byte (about a seventh of `add`'s
CPU time). But a process that reads a mapped file another process has truncated dies of SIGBUS
at the first page past the new end, and Python cannot catch that. A read lease (fcntl
F_SETLEASE) rules it out: while it is held, the kernel makes whoever opens the file for writing,
or truncates it, wait until the holder lets go (at most /proc/sys/fs/lease-break-time, 45 s by
default), and F_GETLEASE tells the holder that a break is pending. The holder checks between
chunks, stops reading and lets go: the writer waits for a chunk or two, and the read reports the
file as changed.

The kernel announces a break with SIGIO, whose default action ends the process. The descriptor's
signal is set to SIGURG (ignored by default) before the lease is taken, and its owner is cleared
right after, so no signal is sent at all.

Each chunk is faulted in with MADV_POPULATE_READ before it is handed on, so that a disk read error
is an OSError here rather than a SIGBUS in a hashing thread.

A lease needs a filesystem that has them (not NFS or FUSE), the file's owner or CAP_LEASE, and no
process holding the file open for writing: without one, `take` returns None and the caller reads
with `readv`. The holder itself must not open the file for writing: it would wait for itself. One
case is left: a process stopped (Ctrl-Z) for longer than lease-break-time while another truncates
the file has its lease taken back by the kernel, and dies of SIGBUS when it resumes.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import signal

WINDOW = 16 << 20  # mapped at a time: a file-backed mapping counts in RSS while it is mapped
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14; Python names it from 3.13


class LeasedMap:
    """Windows of a file mapped for reading under a read lease. `release` gives the lease up; the
    caller must have stopped touching every view by then."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self._map: mmap.mmap | None = None
        self._window: memoryview | None = None
        self._window_start = -1

    @classmethod
    def take(cls, fd: int, size: int) -> LeasedMap | None:
        """A read lease on `fd` (open read-only), if the file is still `size` bytes; else None."""
        try:
            fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError:  # EAGAIN: open for writing somewhere; EACCES: not ours; EINVAL: no leases here
            return None
        leased = cls(fd, size)
        try:
            fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
            if os.fstat(fd).st_size != size:  # changed before the lease: the caller's checks say so
                leased.release()
                return None
            leased.read(0, min(size, mmap.PAGESIZE))  # a filesystem that cannot map, a kernel without
            # MADV_POPULATE_READ (EINVAL): read with readv
        except (OSError, ValueError):
            leased.release()
            return None
        return leased

    def broken(self) -> bool:
        """Someone is waiting to write or truncate the file (or the kernel took the lease back)."""
        return fcntl.fcntl(self.fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK

    def read(self, offset: int, length: int) -> memoryview:
        """Bytes `offset` to `offset + length` of the file (`offset` on a page, the range in one
        window), faulted in: a read error is raised here as OSError (EIO), where touching the page
        later would be a SIGBUS. A window is unmapped once no view of it is left."""
        start = offset - offset % WINDOW
        if start != self._window_start:
            length_here = min(WINDOW, self.size - start)
            self._map = mmap.mmap(self.fd, length_here, access=mmap.ACCESS_READ, offset=start)
            self._window, self._window_start = memoryview(self._map), start
            # a cold file: the disk reads this window and the next while this one is hashed
            os.posix_fadvise(self.fd, start, min(2 * WINDOW, self.size - start), os.POSIX_FADV_WILLNEED)
        assert self._map is not None and self._window is not None and offset + length <= start + len(self._window)
        if length:
            self._map.madvise(MADV_POPULATE_READ, offset - start, length)
        return self._window[offset - start : offset - start + length]

    def release(self) -> None:
        self._map = self._window = None
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        except OSError:  # the kernel took it back already (the break timed out)
            pass
