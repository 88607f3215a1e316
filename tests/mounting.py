"""Real mounts for tests: `modelstore mount -f` in a subprocess, bounded waits, and a teardown
that always runs (lazy unmount, then terminate, then kill)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def fuse_unavailable() -> str | None:
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse on this machine"
    if not shutil.which("fusermount3"):
        return "fusermount3 is not installed (apt-get install fuse3)"
    return None


requires_fuse = pytest.mark.skipif(fuse_unavailable() is not None, reason=fuse_unavailable() or "")


@dataclass
class Mount:
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> float:
    """Seconds until `predicate()` held; fails the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


def unmount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)
    wait_until(lambda: not os.path.ismount(path), timeout=10)


@contextmanager
def mounted(home: Path, mountpoint: Path, *args: str, timeout: float = 30.0) -> Iterator[Mount]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = mountpoint.parent / f"{mountpoint.name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modelstore.cli", "--home", str(home), "mount", "-f",
                                 str(mountpoint), *args], stdout=out, stderr=out)
    mount = Mount(mountpoint, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None:
                raise AssertionError(f"mount exited with {proc.returncode}: {mount.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not mounted after {timeout} s: {mount.log_text()}")
            time.sleep(0.02)
        yield mount
    finally:
        try:
            unmount(mountpoint)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        assert "Traceback" not in mount.log_text(), mount.log_text()
