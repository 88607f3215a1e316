"""Running a mount: build the tree, serve it with pyfuse3 under trio, follow catalog changes, and
unmount cleanly on SIGTERM/SIGINT. Building and running are separate steps."""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelstore.fusefs.snapshot import take_snapshot
from modelstore.fusefs.tree import Indexed, index_tree
from modelstore.fusefs.views import ViewOptions, render_root
from modelstore.store.config import derived_cache_bytes
from modelstore.store.derived import DerivedCache
from modelstore.store.errors import Busy, ModelstoreError, UsageError
from modelstore.store.store import Store

log = logging.getLogger("modelstore.mount")

POLL_SECONDS = 0.2
READ_AHEAD_KB = 1024


@dataclass(frozen=True)
class MountOptions:
    allow_other: bool = False
    links: bool = False
    read_ahead_kb: int = READ_AHEAD_KB
    derived_cache: int | None = None  # bytes for converted slices; None: the store's config


FSNAME = "modelstore"
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # how mountinfo writes a space, tab, newline or backslash


def fsname(home: Path) -> str:
    """The mount's source as /proc/self/mountinfo and `df` show it: the store's home, so a tool can
    tell which store a mount serves. Plain "modelstore" for a home that libfuse's option syntax
    (',' and '\\' are special) or pyfuse3 (ASCII only) cannot carry."""
    home_text = str(Path(home).resolve())
    if home_text.isascii() and home_text.isprintable() and not any(c in home_text for c in ",\\ "):
        return f"{FSNAME}:{home_text}"
    return FSNAME


def running_mounts() -> list[tuple[str, Path]]:
    """(source, mount point) of every modelstore mount this process can see."""
    out = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                before, _, after = line.partition(" - ")
                fields, tail = before.split(), after.split()
                if len(fields) >= 5 and len(tail) >= 2 and tail[0] == f"fuse.{FSNAME}":
                    out.append((tail[1], Path(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))))
    except OSError:
        return []
    return out


def pid_file(home: Path, mountpoint: Path) -> Path:
    """Where the process serving `mountpoint` from the store at `home` writes its pid: `umount`
    waits for that process, the one that holds the store open (a server an earlier lazy unmount
    detached may still run, for the files open on it)."""
    key = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:16]
    return Path(home).resolve() / "mounts" / f"{key}.pid"


def serving_pid(mountpoint: Path) -> int | None:
    """The pid of the process serving the modelstore mount at `mountpoint`, if it can be told."""
    for source, where in running_mounts():
        if source.startswith(f"{FSNAME}:") and os.path.realpath(where) == os.path.realpath(mountpoint):
            try:
                return int(pid_file(Path(source.split(":", 1)[1]), mountpoint).read_text())
            except (OSError, ValueError):
                return None
    return None


def mounts_of(home: Path) -> list[Path]:
    """Where running mounts serve the store at `home`. A store whose home cannot be named in its
    mount's source is recognized only when its mount is the only one of that kind."""
    wanted = fsname(home)
    found = [where for source, where in running_mounts() if source == wanted]
    return found if wanted != FSNAME or len(found) == 1 else []


def check_mountpoint(mountpoint: Path, allow_other: bool) -> None:
    """Refuse, in plain words, what would make the mount fail or hide files."""
    if not Path("/dev/fuse").exists():
        raise ModelstoreError("FUSE is not available: /dev/fuse is missing (load the fuse module; in a "
                              "container pass --device /dev/fuse)")
    if os.getuid() != 0 and not shutil.which("fusermount3"):
        raise ModelstoreError("fusermount3 is missing: install fuse3 (apt-get install fuse3)")
    if os.path.ismount(mountpoint):
        raise Busy(f"{mountpoint} is already a mount point (unmount it first: modelstore umount "
                   f"{shlex.quote(str(mountpoint))})")
    if not mountpoint.exists():
        if not mountpoint.parent.is_dir():
            raise UsageError(f"{mountpoint}: no such folder")
        mountpoint.mkdir()
    if not mountpoint.is_dir():
        raise UsageError(f"{mountpoint} is not a folder")
    if any(mountpoint.iterdir()):
        raise UsageError(f"{mountpoint} is not empty: mounting over it would hide its files")
    if allow_other and os.getuid() != 0:
        conf = Path("/etc/fuse.conf")
        text = conf.read_text() if conf.exists() else ""
        if not any(line.strip() == "user_allow_other" for line in text.splitlines()):
            raise UsageError("--allow-other needs the line 'user_allow_other' in /etc/fuse.conf "
                             "(as root: echo user_allow_other >> /etc/fuse.conf)")


def build_tree(store: Store, options: MountOptions, started_ns: int = 0) -> tuple[int, Indexed]:
    """The catalog's generation and the tree every view renders from it; a folder holding
    nothing is dated `started_ns` (when the mount started)."""
    snapshot = take_snapshot(store.catalog, os.path.abspath(store.objects.root))  # --links: absolute targets
    return snapshot.generation, index_tree(render_root(snapshot, ViewOptions(links=options.links)), started_ns)


def changed_entries(old: Indexed, new: Indexed) -> tuple[list[tuple[int, str]], list[int]]:
    """(parent, name) entries whose inode vanished or changed, and inodes whose listing or
    attributes changed (a folder's mtime; a file's link count or mtime, once another model
    sharing it went): what the kernel must forget after a catalog change."""
    entries: list[tuple[int, str]] = []
    changed: dict[int, None] = {}
    for parent, children in old.children.items():
        new_children = new.children.get(parent)
        for name, ino in children.items():
            if new_children is None or new_children.get(name) != ino:
                entries.append((parent, name))
        if new_children != children:
            changed[parent] = None
    for ino, attrs in old.attrs.items():
        now = new.attrs.get(ino)
        if now is not None and now != attrs:
            changed[ino] = None
    return entries, list(changed)


def set_read_ahead(mountpoint: Path, kb: int) -> int | None:
    """Raise the mount's bdi read_ahead_kb so reads arrive as 1 MiB requests, not 128 KiB."""
    dev = os.stat(mountpoint).st_dev
    path = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    try:
        path.write_text(str(kb))
        return int(path.read_text())
    except OSError:
        return None  # not root, or no sysfs: reads still work, in smaller requests


async def _watch(store: Store, ops: object, options: MountOptions, generation: int, started_ns: int = 0) -> None:
    import pyfuse3
    import trio

    while True:
        await trio.sleep(POLL_SECONDS)
        try:
            current = store.catalog.generation()
        except Exception:  # a catalog briefly unreadable must not end the mount
            log.exception("reading the catalog generation failed")
            continue
        if current == generation:
            continue
        try:
            new_generation, tree = build_tree(store, options, started_ns)
        except Exception:  # a model no view can show must not end the mount: keep showing the last tree
            log.exception("catalog generation %d: the views could not be rebuilt; still showing generation %d",
                          current, generation)
            generation = current
            continue
        old = ops.tree  # type: ignore[attr-defined]
        ops.replace_tree(tree)  # type: ignore[attr-defined]
        entries, inodes = changed_entries(old, tree)
        for parent, name in entries:
            try:
                pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
            except OSError:
                pass
        for ino in inodes:  # attributes only: a file's cached pages stay (its bytes never change)
            try:
                pyfuse3.invalidate_inode(ino, attr_only=True)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTCONN):
                    log.warning("invalidating inode %d: %s", ino, exc)
        generation = new_generation
        log.info("catalog generation %d: tree rebuilt, %d entries invalidated", generation, len(entries))


def tune_malloc() -> None:
    """Replies are assembled in fresh buffers of up to 1 MiB, and a conversion makes a few arrays
    of up to 16 MiB per slice; glibc's default mmap threshold makes each one an mmap/munmap pair,
    and each new mapping is fresh memory to fault in (measured: 3x the daemon's CPU for replies;
    on this VM fresh memory costs about 2.4 s per GB). Keep them all on the heap, reused."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's largest)
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def run_mount(store: Store, mountpoint: Path, options: MountOptions,
              on_ready: Callable[[], None] | None = None, debug: bool = False) -> None:
    """Mount, serve until unmounted or signalled, and always unmount on the way out."""
    import pyfuse3
    import trio

    from modelstore.fusefs.ops import Operations

    check_mountpoint(mountpoint, options.allow_other)
    tune_malloc()
    started_ns = time.time_ns()
    generation, tree = build_tree(store, options, started_ns)
    limit = options.derived_cache if options.derived_cache is not None else derived_cache_bytes(store.home)
    ops = Operations(tree, lambda blob: str(store.objects.path(blob)), DerivedCache(store.home / "derived", limit))
    fuse_options = set(pyfuse3.default_options)
    fuse_options |= {f"fsname={fsname(store.home)}", f"subtype={FSNAME}", "ro"}
    if options.allow_other:
        fuse_options.add("allow_other")
    if debug:
        fuse_options.add("debug")
    faulthandler.register(signal.SIGUSR1)

    async def serve() -> None:
        pyfuse3.init(ops, str(mountpoint), fuse_options)
        clean = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch, store, ops, options, generation, started_ns)
                nursery.start_soon(_terminate_on_signal)
                nursery.start_soon(_announce, mountpoint, options, on_ready)
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
            clean = True
        finally:
            pyfuse3.close(unmount=True)
            if not clean:
                log.warning("unmounted after an error")

    trio.run(serve)


async def _announce(mountpoint: Path, options: MountOptions, on_ready: Callable[[], None] | None) -> None:
    """Once the loop answers requests (stat of the mount point goes through it), tune readahead
    and say the mount is ready."""
    import trio

    await trio.to_thread.run_sync(set_read_ahead, mountpoint, options.read_ahead_kb)
    if on_ready:
        on_ready()


async def _terminate_on_signal() -> None:
    import pyfuse3
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return
