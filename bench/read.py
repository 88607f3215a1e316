"""How fast a model reads through the mount, against the same blob read straight from the store, all
measured in the same run, and what the mount's serving process costs in CPU and memory.

    python bench/read.py                        # 4 GiB, 3 repeats, median
    python bench/read.py --size 1G --markdown   # the table as the README carries it

It writes a GGUF with `converters.synth.write_large_gguf` (norm tensors made distinct, so the file
is one whole blob), adds it with `add --link` (no copy), and serves the store twice at once:
`modelstore mount -f` and `modelstore mount -f --links`. For each workload

    seq     sequential reads of 1 MiB into one reused buffer
    mmap    mmap the file and touch one byte of every 4 KiB page
    random  20,000 preads of 4 KiB at page-aligned offsets from a fixed seed

it times the blob itself (always in the page cache: the "native" baseline), then the mount's
llamacpp/ file twice: the first pass with the mount's own page cache cold (its pages dropped with
posix_fadvise(DONTNEED), checked with mincore) and the second pass right after it (keep_cache lets
the kernel answer). The --links mount shows the file as a symlink to the blob, so it has no page
cache of its own: its two passes differ only in order. The serving process's CPU time, its read
requests (replies written to /dev/fuse, from /proc/PID/io) and its RSS are read from /proc.

Timings that can repeat without changing what they measure (the blob, every second pass, both
--links passes) run until they take at least 0.25 s and count as their median; each run through a
mount alternates with a run of the blob, and its ratio is against those paired runs (same load, same
moment). The mount's first pass runs once, against the blob's timing just before it. A ratio is the
median over rounds of the per-round ratios; the speeds shown are medians of their own.
An untimed round comes first (--warmup): a fresh VM pays for the first use of its memory.
Targets are reported as PASS/MISS, never asserted: timings on a busy machine are noise.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import mmap
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers in bench/common.py and bench/ingest.py
from common import (cpu_model, format_table, fs_type, git_commit,
                    mem_available, mem_total_gib, modelstore_exe, parse_size, work_dir)
from ingest import choose_embd, vary_norms
from modelstore.converters.synth import write_large_gguf
from modelstore.store.objects import Objects

PAGE = 4096
CHUNK = 1 << 20
RANDOM_READS = 20_000
RANDOM_SEED = 20240601
MIN_SECONDS = 0.25  # repeatable timings run back to back until they take this long: short ones are noise
MAX_RUNS = 20
TARGET_SECOND = 0.9
TARGET_FIRST_SEQ = 0.2
TARGET_LINKS = 1.0
LINKS_SLACK = 0.05  # a ratio within 5% of 1.0 is "native": run-to-run noise is larger than that here
TARGET_RSS = 150 * 10**6
MOUNT_FILE = "llamacpp/bench.gguf"
MODEL_NAME = "bench"
READY_TIMEOUT = 60.0
VERDICT = {True: "PASS", False: "MISS", None: "INFO"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# Page cache: what is resident, dropping it, filling it


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
MAP_FAILED = ctypes.c_void_p(-1).value


def resident_fraction(path: Path) -> float:
    """Share of the file's pages in the page cache (mincore on a mapping never touched)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 1.0
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr == MAP_FAILED:
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = bytearray(pages)
            if _libc.mincore(addr, size, (ctypes.c_ubyte * pages).from_buffer(vec)) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return int((np.frombuffer(vec, np.uint8) & 1).sum()) / pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def drop_cached(path: Path) -> float:
    """Drop the file's clean pages from the page cache; returns the share still resident."""
    for _ in range(3):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        left = resident_fraction(path)
        if left < 0.001:
            return left
    return left


def make_resident(path: Path) -> None:
    if resident_fraction(path) < 0.999:
        seq_read(path)
        if resident_fraction(path) < 0.999:
            print(f"warning: {path} does not stay in the page cache (memory?): native numbers are disk reads",
                  file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Workloads: each returns (seconds, checksum); checksums must agree between paths


def seq_read(path: Path) -> tuple[float, int]:
    buf = bytearray(CHUNK)
    total = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return time.perf_counter() - start, total


def mmap_touch(path: Path) -> tuple[float, int]:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        pages = np.frombuffer(mm, np.uint8)[::PAGE]
        checksum = int(pages.sum(dtype=np.uint64))
        del pages  # release the export before the map closes
    return time.perf_counter() - start, checksum


def random_offsets(size: int) -> list[int]:
    rng = np.random.default_rng(RANDOM_SEED)
    return (rng.integers(0, size // PAGE, RANDOM_READS) * PAGE).tolist()


def random_reads(path: Path, offsets: list[int]) -> tuple[float, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        checksum = 0
        pread = os.pread
        start = time.perf_counter()
        for off in offsets:
            checksum += pread(fd, PAGE, off)[0]
        return time.perf_counter() - start, checksum
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[Path], tuple[float, int]]
    unit: str  # "GB/s" or "op/s"
    amount: float  # GB or operations per run

    def rate(self, seconds: float) -> float:
        return self.amount / seconds


def workloads(size: int) -> list[Workload]:
    offsets = random_offsets(size)
    return [
        Workload("seq 1 MiB", seq_read, "GB/s", size / 1e9),
        Workload("mmap 4 KiB touch", mmap_touch, "GB/s", size / 1e9),
        Workload(f"random 4 KiB x{RANDOM_READS // 1000}k", lambda p: random_reads(p, offsets), "op/s", RANDOM_READS),
    ]


# ---------------------------------------------------------------------------------------------
# The serving process: start, stop, and what /proc says about it


@dataclass(frozen=True)
class ProcCounters:
    cpu: float  # seconds, user + system, all threads
    replies: int  # write syscalls: one per FUSE reply
    written: int  # bytes written: the replies' payload

    def __sub__(self, other: ProcCounters) -> ProcCounters:
        return ProcCounters(self.cpu - other.cpu, self.replies - other.replies, self.written - other.written)

    def per(self, runs: int) -> ProcCounters:
        return ProcCounters(self.cpu / runs, self.replies // runs, self.written // runs)


@dataclass
class Daemon:
    label: str
    mountpoint: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def counters(self) -> ProcCounters:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        io = dict(line.split(": ") for line in Path(f"/proc/{self.pid}/io").read_text().splitlines())
        return ProcCounters(cpu, int(io["syscw"]), int(io["wchar"]))

    def memory(self) -> dict[str, int]:
        """VmHWM (peak RSS) and VmRSS, bytes."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
        return out

    def read_ahead_kb(self) -> int | None:
        dev = os.stat(self.mountpoint).st_dev
        try:
            return int(Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").read_text())
        except OSError:
            return None

    def log_tail(self) -> str:
        return " / ".join(self.log.read_text(errors="replace").strip().splitlines()[-5:]) if self.log.exists() else ""


def wait_ready(daemon: Daemon, ready_fd: int) -> None:
    """Until the daemon writes "ready" (readahead tuned, requests answered) and the path is a mount."""
    deadline = time.monotonic() + READY_TIMEOUT
    said = b""
    while b"ready" not in said:
        if daemon.proc.poll() is not None:
            raise SystemExit(f"{daemon.label}: the mount exited with {daemon.proc.returncode}: {daemon.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{daemon.label}: not ready after {READY_TIMEOUT:.0f} s: {daemon.log_tail()}")
        if select.select([ready_fd], [], [], 0.2)[0]:
            chunk = os.read(ready_fd, 64)
            if not chunk:
                raise SystemExit(f"{daemon.label}: the mount closed its ready pipe: {daemon.log_tail()}")
            said += chunk
    while not os.path.ismount(daemon.mountpoint):
        if time.monotonic() > deadline:
            raise SystemExit(f"{daemon.label}: said ready but {daemon.mountpoint} is not a mount")
        time.sleep(0.02)


def stop(daemon: Daemon) -> None:
    """Lazy unmount, then SIGTERM, then SIGKILL: always leaves neither mount nor process."""
    if os.path.ismount(daemon.mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(daemon.mountpoint)], check=False, capture_output=True)
    deadline = time.monotonic() + 10
    while os.path.ismount(daemon.mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(10)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait(10)


@contextmanager
def mounted(home: Path, mountpoint: Path, label: str, *args: str, env: dict[str, str]) -> Iterator[Daemon]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = mountpoint.with_name(f"{mountpoint.name}.log")
    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-m", "modelstore.cli", "--home", str(home), "mount", "-f", str(mountpoint),
           "--ready-fd", str(write_end), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(write_end,),
                                env={**os.environ, **env})
    os.close(write_end)
    daemon = Daemon(label, mountpoint, proc, log)
    try:
        wait_ready(daemon, read_end)
        yield daemon
    finally:
        os.close(read_end)
        stop(daemon)


# ---------------------------------------------------------------------------------------------
# The store and the file


def generate(path: Path, size: int) -> None:
    start = time.perf_counter()
    write_large_gguf(path, size, n_embd=choose_embd(size))
    vary_norms(path)  # all-ones norms would be deduplicated within the file: no longer one blob
    print(f"generated {path.name}: {path.stat().st_size / (1 << 20):.0f} MiB in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)


def add_to_store(home: Path, path: Path) -> Path:
    """`add --link` the file; returns the one blob that holds it whole."""
    exe = modelstore_exe()
    subprocess.run([exe, "--home", str(home), "add", str(path), "--name", MODEL_NAME, "--link"], check=True,
                   stdout=subprocess.DEVNULL)
    shown = subprocess.run([exe, "--home", str(home), "show", MODEL_NAME, "--json"], check=True,
                           capture_output=True, text=True)
    (record,) = json.loads(shown.stdout)["files"].values()
    if record["extents"] != 1:
        raise SystemExit(f"the stored file has {record['extents']} extents, not one whole blob")
    blob = Objects(home).path(record["b3"])
    if not blob.is_file() or blob.stat().st_size != path.stat().st_size:
        raise SystemExit(f"{blob}: not the stored blob of {path}")
    return blob


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Series:
    """Samples of one (workload, path, pass), each with the native seconds it is compared with."""

    seconds: list[float] = field(default_factory=list)
    native: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    replies: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)

    def add(self, seconds: float, native: float, used: ProcCounters | None = None) -> None:
        self.seconds.append(seconds)
        self.native.append(native)
        if used is not None:
            self.cpu.append(used.cpu)
            self.replies.append(used.replies)
            self.written.append(used.written)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ratio(self) -> float:
        """Speed against native: the median of the paired ratios, so drift between rounds cancels."""
        return statistics.median(n / s for n, s in zip(self.native, self.seconds))


@dataclass(frozen=True)
class Target:
    """A path to time, and the daemon that serves it (None for the blob itself)."""

    label: str
    path: Path
    daemon: Daemon | None
    own_cache: bool  # a FUSE file with a page cache of its own, to drop before a first pass


PASSES = ("first", "second")


def timed(workload: Workload, target: Target, expected: int, runs: int = 1,
          paired: Target | None = None) -> tuple[float, float | None, ProcCounters | None]:
    """Median seconds of `runs` back-to-back runs, the median of `paired` runs alternated with them
    (the native reference, taken under the same load), and the daemon's use per run."""
    before = target.daemon.counters() if target.daemon else None
    times, references = [], []
    for _ in range(runs):
        if paired is not None:
            references.append(run_checked(workload, paired, expected))
        times.append(run_checked(workload, target, expected))
    used = (target.daemon.counters() - before).per(runs) if target.daemon and before else None
    return statistics.median(times), statistics.median(references) if references else None, used


def run_checked(workload: Workload, target: Target, expected: int) -> float:
    seconds, checksum = workload.run(target.path)
    if checksum != expected:
        raise SystemExit(f"{workload.name} through {target.label}: checksum {checksum}, native {expected}")
    return seconds


def calibrate(loads: list[Workload], native: Target) -> tuple[dict[str, int], dict[str, int]]:
    """Checksums of the blob (untimed; also fills its page cache), and how many back-to-back runs make
    a timing of at least MIN_SECONDS, for the timings that can repeat without changing what they
    measure (all but the mount's first pass)."""
    expected, runs = {}, {}
    for w in loads:
        w.run(native.path)
        seconds, expected[w.name] = w.run(native.path)
        runs[w.name] = min(MAX_RUNS, max(1, math.ceil(MIN_SECONDS / seconds)))
    return expected, runs


def measure(loads: list[Workload], native: Target, mounts: list[Target], repeat: int,
            warmup: int) -> dict[tuple[str, str, str], Series]:
    """`warmup` untimed rounds, then `repeat` timed ones; a round runs every workload on every path."""
    samples: dict[tuple[str, str, str], Series] = {}
    scratch: dict[tuple[str, str, str], Series] = {}
    expected, runs = calibrate(loads, native)
    for r in range(warmup + repeat):
        kept = samples if r >= warmup else scratch
        label = f"{r - warmup + 1}/{repeat}" if r >= warmup else f"warmup {r + 1}/{warmup}"
        for w in loads:
            make_resident(native.path)
            native_seconds, _, _ = timed(w, native, expected[w.name], runs[w.name])
            kept.setdefault((w.name, native.label, ""), Series()).add(native_seconds, native_seconds)
            line = [f"native {w.rate(native_seconds):,.2f}"]
            for target in mounts:
                if target.own_cache:
                    left = drop_cached(target.path)
                    if left > 0.001:
                        print(f"warning: {left:.1%} of {target.path} still cached before the first pass",
                              file=sys.stderr)
                make_resident(native.path)
                for pass_ in PASSES:
                    cold = pass_ == "first" and target.own_cache  # runs once, against this round's native
                    seconds, paired, used = timed(w, target, expected[w.name], 1 if cold else runs[w.name],
                                                  None if cold else native)
                    reference = native_seconds if paired is None else paired
                    kept.setdefault((w.name, target.label, pass_), Series()).add(seconds, reference, used)
                    line.append(f"{target.label} {pass_} {w.rate(seconds):,.2f}")
            print(f"  [{label}] {w.name} ({w.unit}): " + ", ".join(line), file=sys.stderr)
    return samples


# ---------------------------------------------------------------------------------------------
# Reporting


def rate_text(w: Workload, seconds: float) -> str:
    rate = w.rate(seconds)
    return f"{rate:.2f} GB/s" if w.unit == "GB/s" else f"{rate / 1000:.0f}k op/s"


def rows(loads: list[Workload], samples: dict[tuple[str, str, str], Series], links: bool) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for w in loads:
        native = samples[(w.name, "native", "")].median
        for pass_ in PASSES:
            m = samples[(w.name, "mount", pass_)]
            replies = statistics.median(m.replies)
            row: dict[str, object] = {
                "workload": w.name, "pass": pass_, "unit": w.unit,
                "native": round(w.rate(native), 3), "native_text": rate_text(w, native),
                "mount": round(w.rate(m.median), 3), "mount_text": rate_text(w, m.median),
                "ratio": round(m.ratio, 3),
                "daemon_cpu_s": round(statistics.median(m.cpu), 3),
                "requests": int(replies),
                "kib_per_request": round(statistics.median(m.written) / replies / 1024, 1) if replies else None,
                "native_seconds": samples[(w.name, "native", "")].seconds, "mount_seconds": m.seconds,
                "mount_native_seconds": m.native,
            }
            if links:
                k = samples[(w.name, "links", pass_)]
                row |= {"links": round(w.rate(k.median), 3), "links_text": rate_text(w, k.median),
                        "links_ratio": round(k.ratio, 3), "links_seconds": k.seconds,
                        "links_native_seconds": k.native, "links_daemon_cpu_s": round(statistics.median(k.cpu), 3)}
            out.append(row)
    return out


def targets(table: list[dict[str, object]], memory: dict[str, dict[str, int]],
            link_is_symlink: bool | None) -> list[dict[str, object]]:
    goals: list[dict[str, object]] = []
    for row in table:
        ratio = float(row["ratio"])  # type: ignore[arg-type]
        if row["pass"] == "second":
            goals.append({"target": f"{row['workload']}, second pass >= {TARGET_SECOND}x native",
                          "value": f"{ratio:.2f}x", "met": ratio >= TARGET_SECOND})
        elif row["workload"] == "seq 1 MiB":
            goals.append({"target": f"{row['workload']}, first pass >= {TARGET_FIRST_SEQ}x native page-cache speed",
                          "value": f"{ratio:.2f}x ({row['mount_text']})", "met": ratio >= TARGET_FIRST_SEQ})
        else:
            goals.append({"target": f"{row['workload']}, first pass (not a target)", "value": f"{ratio:.2f}x",
                          "met": None})
    peak = memory["mount"]["VmHWM"]
    goals.append({"target": f"mount peak RSS <= {TARGET_RSS // 10**6} MB",
                  "value": f"{peak / 1e6:.0f} MB (now {memory['mount']['VmRSS'] / 1e6:.0f} MB)",
                  "met": peak <= TARGET_RSS})
    if link_is_symlink is not None:
        goals.append({"target": f"--links: {MOUNT_FILE} is a symlink to the blob", "value": str(link_is_symlink),
                      "met": link_is_symlink})
        worst = min(table, key=lambda r: float(r["links_ratio"]))  # type: ignore[arg-type]
        ratio = float(worst["links_ratio"])  # type: ignore[arg-type]
        goals.append({"target": f"--links: every pass {TARGET_LINKS}x native (>= {TARGET_LINKS - LINKS_SLACK:.2f} "
                                f"within noise)",
                      "value": f"worst {ratio:.2f}x ({worst['workload']}, {worst['pass']} pass)",
                      "met": ratio >= TARGET_LINKS - LINKS_SLACK})
        peak = memory["links"]["VmHWM"]
        goals.append({"target": f"--links mount peak RSS <= {TARGET_RSS // 10**6} MB", "value": f"{peak / 1e6:.0f} MB",
                      "met": peak <= TARGET_RSS})
    return goals


def columns(links: bool) -> list[tuple[str, str]]:
    cols = [("workload", "workload"), ("pass", "pass"), ("native_text", "native"), ("mount_text", "mount"),
            ("ratio", "x native"), ("daemon_cpu_s", "daemon CPU s"), ("requests", "requests"),
            ("kib_per_request", "KiB/request")]
    if links:
        cols += [("links_text", "--links"), ("links_ratio", "--links x native")]
    return cols


def fuse_version() -> str:
    try:
        import pyfuse3
        py = pyfuse3.__version__
    except ImportError:
        py = "?"
    out = subprocess.run(["fusermount3", "--version"], check=False, capture_output=True, text=True)
    return f"pyfuse3 {py}, {(out.stdout or out.stderr).strip() or 'fusermount3 ?'}"


def machine_facts(work: Path, size: int, repeat: int) -> dict[str, object]:
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_gib": round(mem_total_gib(), 1), "kernel": platform.release(),
            "python": platform.python_version(), "fuse": fuse_version(), "filesystem": fs_type(work),
            "workdir": str(work), "modelstore": git_commit(), "file_bytes": size,
            "file_gib": round(size / (1 << 30), 2), "repeat": repeat,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def report(facts: dict[str, object], table: list[dict[str, object]], goals: list[dict[str, object]],
           links: bool, markdown: bool) -> str:
    read_ahead = cast(dict[str, int | None], facts["read_ahead_kb"])
    memory = cast(dict[str, dict[str, int]], facts["daemon_memory"])
    ra = ", ".join(f"{k} {v} KiB" for k, v in read_ahead.items())
    mem = ", ".join(f"{k} peak {v['VmHWM'] / (1 << 20):.0f} MiB, now {v['VmRSS'] / (1 << 20):.0f} MiB"
                    for k, v in memory.items())
    head = (f"file: {facts['file_gib']} GiB ({facts['file_bytes']} bytes) GGUF, one blob; native = the blob, "
            f"always in the page cache; mount = {MOUNT_FILE}; median of {facts['repeat']} after "
            f"{facts['warmup']} untimed round(s)\n"
            f"first pass: the mount's page cache dropped (posix_fadvise, checked with mincore); second pass: "
            f"read again at once\n"
            f"machine: {facts['cpu']}, {facts['nproc']} CPUs ({facts['usable_cpus']} usable), "
            f"{facts['memory_gib']} GiB RAM, Linux {facts['kernel']}, {facts['filesystem']} at {facts['workdir']}, "
            f"Python {facts['python']}, {facts['fuse']}, modelstore {facts['modelstore']}\n"
            f"mount read_ahead_kb: {ra}; daemon RSS: {mem}\n"
            f"load average: {facts['loadavg_start']} at start, {facts['loadavg_end']} at end\n")
    verdicts = "\n".join(f"{VERDICT[g['met']]}  {g['target']}: {g['value']}" for g in goals)  # type: ignore[index]
    return f"{head}\n{format_table(table, columns(links), markdown)}\n\n{verdicts}"


# ---------------------------------------------------------------------------------------------


def preflight(work: Path, size: int) -> None:
    if not Path("/dev/fuse").exists() or not shutil.which("fusermount3"):
        raise SystemExit("needs /dev/fuse and fusermount3 (apt-get install fuse3)")
    if fs_type(work) in ("tmpfs", "ramfs"):
        print(f"warning: {work} is on {fs_type(work)}: the blob is memory, not a file system's page cache",
              file=sys.stderr)
    if shutil.disk_usage(work).free < 1.2 * size:
        print(f"warning: {shutil.disk_usage(work).free >> 20} MiB free in {work}; this needs about "
              f"{int(1.2 * size) >> 20} MiB", file=sys.stderr)
    if mem_available() < 2.5 * size:  # the blob's pages and the mount's own copy must both stay cached
        print(f"warning: {mem_available() >> 20} MiB of memory available; the blob and the mount's copy of it "
              f"need {2 * size >> 20} MiB of page cache: first passes will read the disk", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=4 << 30, help="file size, e.g. 512M, 4G [default 4GiB]")
    p.add_argument("--workdir", type=Path, help="where to work (not tmpfs) [default: a temp dir under /work]")
    p.add_argument("--repeat", type=int, default=3, help="runs of each workload; the median is reported [3]")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds first (a fresh VM pays for first use of its memory) [1]")
    p.add_argument("--no-links", dest="links", action="store_false", help="skip the --links mount")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0:
        p.error("--repeat must be at least 1 and --warmup at least 0")
    if args.size < 64 << 20:
        p.error("--size must be at least 64M")
    return args


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, object], list[dict[str, object]],
                                                      list[dict[str, object]]]:
    src, home = work / "bench.gguf", work / "home"
    generate(src, args.size)
    blob = add_to_store(home, src)
    src.unlink()  # the blob is a hard link to it: one inode, one set of cached pages either way
    size = blob.stat().st_size
    facts = machine_facts(work, size, args.repeat)
    facts["warmup"] = args.warmup
    loads = workloads(size)
    env: dict[str, str] = {}  # the daemon tunes malloc itself (fusefs.mount.tune_malloc)
    with ExitStack() as stack:
        daemons = [stack.enter_context(mounted(home, work / "mnt", "mount", env=env))]
        if args.links:
            daemons.append(stack.enter_context(mounted(home, work / "mnt-links", "links", "--links", env=env)))
        mounts = [Target(d.label, d.mountpoint / MOUNT_FILE, d, own_cache=d.label == "mount") for d in daemons]
        is_symlink = None
        if args.links:
            link = mounts[-1].path
            is_symlink = link.is_symlink() and link.resolve() == blob.resolve()
        samples = measure(loads, Target("native", blob, None, own_cache=False), mounts, args.repeat, args.warmup)
        facts["read_ahead_kb"] = {d.label: d.read_ahead_kb() for d in daemons}
        memory = {d.label: d.memory() for d in daemons}
    facts["daemon_memory"] = memory
    facts["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    table = rows(loads, samples, args.links)
    return facts, table, targets(table, memory, is_symlink)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with work_dir(args.workdir, "modelstore-bench-read-", args.keep, Path("/work")) as work:
        preflight(work, args.size)
        facts, table, goals = run(args, work)
        print(report(facts, table, goals, args.links, args.markdown))
        if args.json:
            print(json.dumps({"machine": facts, "results": table, "targets": goals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
