"""What lazy conversion costs: a safetensors model read through the mount as a GGUF, against the
source blob read straight from the store and the same safetensors file read through the mount's
store/ view, all measured in the same run, and what the mount's serving process takes in memory.

    python bench/convert.py                       # 1B shapes (F16 and Q8_0), a 4 GiB BF16 model, median of 3
    python bench/convert.py --quick               # small shapes: a smoke run of every step, about a minute
    python bench/convert.py --size 2G --markdown  # the tables as the README carries them

Models are generated with `converters.synth.write_hf_model` (real shapes, random weights) and added
with `add --link --no-convert`, then planned with `modelstore convert NAME --gguf-type T`, timed on
their own (against SHA-256 + BLAKE3 of the source bytes in one process, the least planning can
cost: it streams the converted file once through both):

    1b     Llama-3.2-1B shapes (hidden 2048, 16 layers, 32/8 heads, ff 8192, vocab 128256), F16:
           147 tensors, about 3 GB (the lm_head is separate); planned as GGUF F16 (only Q/K rows
           permuted and norms widened to F32: derived), then as GGUF Q8_0 (every matrix derived)
    big    the same layers in BF16, vocab 32000, as many layers as make --size (33 layers and 300
           tensors at 4 GiB): every tensor is derived (BF16 -> F16)

For each planned GGUF, round after round (--repeat), with `modelstore mount -f` in a subprocess:

    fresh mount, derived cache emptied (<home>/derived removed):
      latency   first stat of llamacpp/NAME.gguf, open + first 4 KiB (the magic and header start),
                the whole header (1 MiB reads up to the tensor data), and gguf.GGUFReader(path)
                (memory-maps the file and parses the header), the mount's page cache dropped
                (posix_fadvise DONTNEED, checked with mincore) between them; native: the same on a
                local sparse file holding the same header, in the page cache
      cold      sequential 1 MiB reads of the whole GGUF: every derived slice is converted now
      store/    the model's safetensors file through the mount's store/ view: FUSE, no conversion
    a second fresh mount (the derived cache now on disk):
      warm      the GGUF again, its page cache in the new mount empty (dropped and checked)

Each mount read is paired with a read of the source blob just before it (always in the page cache:
the native baseline; cold-disk numbers are not measured), and ratios are the medians of the
per-round ratios. The serving process's CPU time comes from /proc/PID/stat, its peak RSS from
VmHWM in /proc/PID/status. Targets are reported as PASS/MISS, never asserted: timings on a busy
machine are noise.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers in bench/common.py, ingest.py and read.py
from common import (cpu_model, format_table, fs_type, git_commit,
                    mem_available, mem_total_gib, modelstore_exe, parse_size, work_dir)
from ingest import Sample
from ingest import run as run_timed
from read import Daemon, drop_cached, fuse_version, make_resident, mounted, seq_read

import gguf
import numpy as np

from modelstore.converters.synth import write_hf_model
from modelstore.fusefs.snapshot import take_snapshot
from modelstore.store.config import derived_cache_bytes
from modelstore.store.records import Derived, Extent, FileRecord
from modelstore.store.store import Store

FIRST_BYTES = 4096
CHUNK = 1 << 20
NATIVE_RUNS = 5  # the native latency operations take microseconds: median of a few
TARGET_LATENCY = 0.050  # seconds: stat and first bytes of a converted GGUF
TARGET_SEQ = 0.5  # converted F16 -> F16 (Q/K permuted) against the source blob read directly
TARGET_RSS = 400 * 10**6
VERDICT = {True: "PASS", False: "MISS", None: "INFO"}
WIDTH = {"F32": 4, "F16": 2, "BF16": 2}

HASH_SNIPPET = """
import sys, hashlib, blake3
s, b, buf = hashlib.sha256(), blake3.blake3(max_threads=1), bytearray(8 << 20)
with open(sys.argv[1], "rb", buffering=0) as f:
    while n := f.readinto(buf):
        m = memoryview(buf)[:n]
        s.update(m)
        b.update(m)
print(s.hexdigest(), b.hexdigest())
"""


# ---------------------------------------------------------------------------------------------
# Model shapes


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ff: int
    vocab: int
    dtype: str

    @property
    def tensors(self) -> int:
        return 9 * self.layers + 3  # write_hf_model: 2 norms + q k v o + gate up down per layer; embd, norm, head

    def per_layer(self) -> int:
        kv = self.kv_heads * (self.hidden // self.heads)
        return 2 * self.hidden + 2 * self.hidden * self.hidden + 2 * kv * self.hidden + 3 * self.ff * self.hidden

    def params(self) -> int:
        return 2 * self.vocab * self.hidden + self.hidden + self.layers * self.per_layer()

    def nbytes(self) -> int:
        return self.params() * WIDTH[self.dtype]

    def describe(self) -> str:
        return (f"hidden {self.hidden}, {self.layers} layers, {self.heads}/{self.kv_heads} heads, ff {self.ff}, "
                f"vocab {self.vocab}, {self.dtype}, {self.tensors} tensors")


LLAMA_1B = Shape(2048, 16, 32, 8, 8192, 128256, "F16")
BIG = Shape(2048, 1, 32, 8, 8192, 32000, "BF16")  # layers fitted to --size
QUICK_1B = Shape(512, 4, 8, 2, 1536, 32000, "F16")
QUICK_BIG = Shape(512, 1, 8, 2, 1536, 32000, "BF16")


def fit_layers(base: Shape, size: int) -> Shape:
    fixed = (2 * base.vocab * base.hidden + base.hidden) * WIDTH[base.dtype]
    layers = max(1, round((size - fixed) / (base.per_layer() * WIDTH[base.dtype])))
    return Shape(base.hidden, layers, base.heads, base.kv_heads, base.ff, base.vocab, base.dtype)


# ---------------------------------------------------------------------------------------------
# A model in its own store home


@dataclass
class Case:
    key: str  # "1b" or "big"
    shape: Shape
    work: Path
    name: str = ""
    source_blob: Path = Path()
    source_bytes: int = 0
    steps: dict[str, list[Sample]] = field(default_factory=dict)  # planning steps, timed
    generated_s: float = 0.0

    @property
    def folder(self) -> Path:
        return self.work / f"{self.key}-hf"

    @property
    def home(self) -> Path:
        return self.work / f"home-{self.key}"

    @property
    def mountpoint(self) -> Path:
        return self.work / f"mnt-{self.key}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([modelstore_exe(), "--home", str(self.home), *args], check=True, capture_output=True,
                              text=True)

    def timed(self, step: str, *args: str) -> Sample:
        sample = run_timed([modelstore_exe(), "--home", str(self.home), *args])
        self.steps.setdefault(step, []).append(sample)
        return sample


def generate(case: Case) -> None:
    s = case.shape
    start = time.perf_counter()
    write_hf_model(case.folder, model_type="llama", hidden=s.hidden, layers=s.layers, heads=s.heads,
                   kv_heads=s.kv_heads, ff=s.ff, vocab=s.vocab, dtype=s.dtype, seed=1)
    case.generated_s = time.perf_counter() - start
    size = (case.folder / "model.safetensors").stat().st_size
    log(f"generated {case.key}: {s.describe()}, {size / (1 << 20):.0f} MiB in {case.generated_s:.1f} s")


def add(case: Case) -> None:
    """`add --link --no-convert` (hashing only), timed; finds the blob that holds the safetensors."""
    case.name = f"bench-{case.key}"
    sample = case.timed("add --link --no-convert", "add", str(case.folder), "--name", case.name, "--link",
                        "--no-convert")
    log(f"  add --link --no-convert: {sample.seconds:.2f} s")
    with Store(case.home, create=False) as store:
        record = store.file(store.model(case.name).files["model.safetensors"])
        if len(record.recipe) != 1 or not isinstance(record.recipe[0], Extent):
            raise SystemExit(f"model.safetensors is stored as {len(record.recipe)} pieces, not one blob")
        case.source_blob = store.objects.path(record.recipe[0].blob)
        case.source_bytes = record.size


@dataclass(frozen=True)
class Converted:
    """The planned GGUF as the catalog has it."""

    gguf_type: str
    rel: str  # path in the mount
    size: int
    header_len: int  # data_start: the header, padded
    header_blob: Path
    derived_bytes: int  # converted on first read (padding not counted)
    derived_slices: int
    how: str


def converted(case: Case, gguf_type: str) -> Converted:
    with Store(case.home, create=False) as store:
        snapshot = take_snapshot(store.catalog, str(store.objects.root))
        model = next(m for m in snapshot.models if m.name == case.name)
        records = [snapshot.file(b3) for path, b3 in model.files.items()
                   if (snapshot.conversion(model, path) or {}).get("kind") == "gguf"]
        if len(records) != 1:
            raise SystemExit(f"{case.name}: {len(records)} converted GGUF files planned, expected one")
        record: FileRecord = records[0]
        header = record.recipe[0]
        assert isinstance(header, Extent)
        header_blob = store.objects.path(header.blob)
    weights = record.weights or {}
    derived = [p for p in record.recipe if isinstance(p, Derived) and p.op.get("kind") != "zeros"]
    views = json.loads(case.cli("show", case.name, "--json").stdout)["views"]
    rel = next(v["paths"][0] for v in views if v["view"] == "llamacpp" and v["paths"])
    if header.offset != 0 or header.length != int(weights["data_start"]):
        raise SystemExit(f"the GGUF's first piece is not its whole header: {header} vs {weights.get('data_start')}")
    return Converted(gguf_type, rel, record.size, int(weights["data_start"]), header_blob,
                     sum(p.length for p in derived), len(derived), str(weights["conversion"]["how"]))


def native_twin(case: Case, conv: Converted) -> Path:
    """A local sparse file of the converted file's size holding its header: the native side of the
    latency figures (same bytes for the header parsers, page cache instead of FUSE)."""
    path = case.work / f"{case.key}-{conv.gguf_type}-header.gguf"
    with open(path, "wb") as f:
        f.write(conv.header_blob.read_bytes())
        f.truncate(conv.size)
    return path


def plan(case: Case, gguf_type: str, repeat: int) -> Converted:
    for _ in range(repeat):
        sample = case.timed(f"convert --gguf-type {gguf_type}", "convert", case.name, "--gguf-type", gguf_type)
        log(f"  convert --gguf-type {gguf_type}: {sample.seconds:.2f} s, peak RSS {sample.rss / 1e6:.0f} MB")
    return converted(case, gguf_type)


def hash_floor(case: Case, repeat: int) -> None:
    make_resident(case.source_blob)
    for _ in range(repeat):
        sample = run_timed([sys.executable, "-c", HASH_SNIPPET, str(case.source_blob)])
        case.steps.setdefault("SHA-256 + BLAKE3 of the source", []).append(sample)
    log(f"  SHA-256 + BLAKE3 of the source: {statistics.median(s.seconds for s in case.steps['SHA-256 + BLAKE3 of the source']):.2f} s")


def ensure_derived_room(case: Case, conv: Converted) -> str:
    """The mount's derived cache must hold a whole converted file, or the warm pass is partly cold."""
    limit = derived_cache_bytes(case.home)
    need = int(conv.derived_bytes * 1.25) + (64 << 20)
    if limit >= need:
        return f"{limit / (1 << 30):.1f} GiB (the store's default)"
    (case.home / "config.toml").write_text(f'derived_cache = "{need}"\n')
    return f"{need / (1 << 30):.1f} GiB (raised in config.toml: the default {limit / (1 << 30):.1f} GiB is too small)"


# ---------------------------------------------------------------------------------------------
# Measuring


LATENCY_OPS = ("first stat", "open + first 4 KiB", "whole header", "gguf.GGUFReader open")


def read_prefix(path: Path, length: int) -> int:
    """Read the first `length` bytes in 1 MiB reads, as a header parser reading up to the data does."""
    buf = bytearray(CHUNK)
    done = 0
    with open(path, "rb", buffering=0) as f:
        while done < length:
            n = f.readinto(memoryview(buf)[: min(CHUNK, length - done)])
            if not n:
                break
            done += n
    return done


def latency(path: Path, conv: Converted, drop: bool, reader: bool = True) -> dict[str, float]:
    """Seconds of each latency operation; `drop`: the file's page cache dropped before each read
    (a FUSE file that has just been mounted has none); `reader`: also time gguf.GGUFReader."""
    def dropped() -> None:
        if drop and (left := drop_cached(path)) > 0.001:
            log(f"warning: {left:.1%} of {path} still cached")

    out: dict[str, float] = {}
    start = time.perf_counter()
    st = os.stat(path)
    out["first stat"] = time.perf_counter() - start
    if st.st_size != conv.size:
        raise SystemExit(f"{path}: {st.st_size} bytes, the catalog says {conv.size}")
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        first = os.pread(fd, FIRST_BYTES, 0)
    finally:
        os.close(fd)
    out["open + first 4 KiB"] = time.perf_counter() - start
    if first[:4] != b"GGUF":
        raise SystemExit(f"{path} does not start with the GGUF magic")
    dropped()
    start = time.perf_counter()
    got = read_prefix(path, conv.header_len)
    out["whole header"] = time.perf_counter() - start
    if got != conv.header_len:
        raise SystemExit(f"{path}: read {got} header bytes of {conv.header_len}")
    if not reader:
        return out
    dropped()
    start = time.perf_counter()
    reader = gguf.GGUFReader(path)
    out["gguf.GGUFReader open"] = time.perf_counter() - start
    tensors = len(reader.tensors)
    del reader
    gc.collect()  # its memmap must be gone before the next drop
    if tensors != conv_tensors(conv):
        raise SystemExit(f"{path}: GGUFReader sees {tensors} tensors")
    return out


_tensor_counts: dict[str, int] = {}


def conv_tensors(conv: Converted) -> int:
    return _tensor_counts[conv.rel]


def native_latency(twin: Path, conv: Converted) -> dict[str, float]:
    """Median of a few runs of the quick operations; GGUFReader (seconds of Python on a large
    vocabulary, the same on any file) once."""
    runs = [latency(twin, conv, drop=False, reader=False) for _ in range(NATIVE_RUNS - 1)]
    runs.append(latency(twin, conv, drop=False))
    return {op: statistics.median(r[op] for r in runs if op in r) for op in LATENCY_OPS}


@dataclass
class Read:
    """One timed sequential read through a mount, with the source blob's read just before it."""

    seconds: float
    native: float
    cpu: float
    requests: int


PREFAULT = {"on": True, "seconds": 0.0, "bytes": 0}


def prefault(nbytes: int) -> None:
    """Touch `nbytes` of fresh anonymous memory and free it. This VM hands free pages back to its
    host, and the first touch of such a page costs about 3 ms per MB (measured: a FUSE first pass
    right after a conversion ran at 0.25x its speed in the same mount a moment later); whatever
    fills the page cache next (the mount's replies, derived-cache writes) would pay it inside the
    timing. Touched and freed just before, the pages are on the kernel's free lists at once."""
    if not PREFAULT["on"]:
        return
    nbytes = min(nbytes, mem_available() // 2)
    start = time.perf_counter()
    maps = []
    for done in range(0, nbytes, 256 << 20):
        mm = mmap.mmap(-1, min(256 << 20, nbytes - done))
        view = np.frombuffer(mm, np.uint8)
        view[::4096] = 1
        del view
        maps.append(mm)
    for mm in maps:
        mm.close()
    PREFAULT["seconds"] += time.perf_counter() - start
    PREFAULT["bytes"] += nbytes


def paired_read(case: Case, path: Path, daemon: Daemon, size: int, fills: int) -> Read:
    """`fills`: bytes of page cache the read will fill (the file, and derived-cache entries written)."""
    left = drop_cached(path)
    if left > 0.001:
        log(f"warning: {left:.1%} of {path} still cached before a first pass")
    prefault(int(fills * 1.1))
    make_resident(case.source_blob)
    os.sync()  # no writeback of derived-cache entries (or anything else) left running into the timings
    native, n = seq_read(case.source_blob)
    assert n == case.source_bytes
    before = daemon.counters()
    seconds, n = seq_read(path)
    used = daemon.counters() - before
    if n != size:
        raise SystemExit(f"{path}: read {n} bytes, expected {size}")
    return Read(seconds, native, used.cpu, used.replies)


@dataclass
class Round:
    ready: float  # seconds from starting `mount -f` to ready
    lat: dict[str, float]
    native_lat: dict[str, float]
    cold: Read
    store_view: Read
    warm: Read
    rss_cold: int  # VmHWM after the cold pass and the store/ read
    rss_warm: int
    derived_on_disk: int  # bytes in <home>/derived after the cold pass


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def measure(case: Case, conv: Converted, repeat: int) -> list[Round]:
    twin = native_twin(case, conv)
    _tensor_counts[conv.rel] = len(gguf.GGUFReader(twin).tensors)
    gc.collect()
    rounds = []
    for r in range(repeat):
        shutil.rmtree(case.home / "derived", ignore_errors=True)
        make_resident(case.source_blob)
        make_resident(conv.header_blob)
        native_lat = native_latency(twin, conv)
        with ExitStack() as stack:
            start = time.perf_counter()
            daemon = stack.enter_context(mounted(case.home, case.mountpoint, "cold", env={}))
            ready = time.perf_counter() - start
            path = daemon.mountpoint / conv.rel
            lat = latency(path, conv, drop=True)
            cold = paired_read(case, path, daemon, conv.size, conv.size + conv.derived_bytes)
            view = paired_read(case, daemon.mountpoint / "store/by-model" / case.name / "model.safetensors", daemon,
                               case.source_bytes, case.source_bytes)
            rss_cold = daemon.memory()["VmHWM"]
        derived_on_disk = du(case.home / "derived")
        with ExitStack() as stack:
            daemon = stack.enter_context(mounted(case.home, case.mountpoint, "warm", env={}))
            warm = paired_read(case, daemon.mountpoint / conv.rel, daemon, conv.size, conv.size)
            rss_warm = daemon.memory()["VmHWM"]
        rnd = Round(ready, lat, native_lat, cold, view, warm, rss_cold, rss_warm, derived_on_disk)
        rounds.append(rnd)
        def mbs(rd: Read) -> float:
            return conv.size / 1e6 / rd.seconds

        log(f"  [{case.key} {conv.gguf_type} {r + 1}/{repeat}] ready {ready:.2f} s; "
            + ", ".join(f"{op} {lat[op] * 1e3:.1f} ms (native {native_lat[op] * 1e3:.2f})" for op in LATENCY_OPS)
            + f"; cold {mbs(cold):.0f} MB/s, store/ {case.source_bytes / 1e6 / view.seconds:.0f} MB/s, "
              f"warm {mbs(warm):.0f} MB/s, blob {case.source_bytes / 1e6 / cold.native:.0f} MB/s; "
              f"peak RSS {rss_cold / 1e6:.0f}/{rss_warm / 1e6:.0f} MB; derived {derived_on_disk >> 20} MiB")
    twin.unlink()
    return rounds


# ---------------------------------------------------------------------------------------------
# Reporting


def med(values: list[float]) -> float:
    return statistics.median(values)


def label(case: Case, conv: Converted) -> str:
    return f"{case.key} {case.shape.dtype}->{conv.gguf_type}"


def planning_rows(case: Case) -> list[dict[str, Any]]:
    floor = med([s.seconds for s in case.steps["SHA-256 + BLAKE3 of the source"]])
    out = []
    for step, samples in case.steps.items():
        seconds = med([s.seconds for s in samples])
        out.append({"model": case.key, "step": step, "seconds": round(seconds, 3),
                    "source_mb_s": round(case.source_bytes / 1e6 / seconds),
                    "x_hash": round(seconds / floor, 2), "peak_rss_mib": round(max(s.rss for s in samples) / (1 << 20), 1),
                    "all_seconds": [round(s.seconds, 3) for s in samples]})
    return out


def latency_rows(case: Case, conv: Converted, rounds: list[Round]) -> list[dict[str, Any]]:
    base = {"model": label(case, conv), "tensors": conv_tensors(conv), "header_kib": round(conv.header_len / 1024)}
    out = [{**base, "operation": "mount -f until ready", "native_ms": None,
            "mount_ms": round(med([r.ready for r in rounds]) * 1e3, 1), "over_native_ms": None, "x_native": None,
            "all_mount_ms": [round(r.ready * 1e3, 1) for r in rounds]}]
    for op in LATENCY_OPS:
        mount = med([r.lat[op] for r in rounds])
        native = med([r.native_lat[op] for r in rounds])
        out.append({**base, "operation": op, "native_ms": round(native * 1e3, 3), "mount_ms": round(mount * 1e3, 2),
                    "over_native_ms": round((mount - native) * 1e3, 2),
                    "x_native": round(med([r.lat[op] / r.native_lat[op] for r in rounds]), 1),
                    "all_mount_ms": [round(r.lat[op] * 1e3, 2) for r in rounds]})
    return out


def seq_rows(case: Case, conv: Converted, rounds: list[Round]) -> list[dict[str, Any]]:
    name = label(case, conv)
    src = case.source_bytes
    native = med([r.cold.native for r in rounds] + [r.store_view.native for r in rounds] + [r.warm.native for r in rounds])
    out = [{"model": name, "file": "source blob, read directly", "pass": "page cache", "mb_s": round(src / 1e6 / native),
            "input_mb_s": round(src / 1e6 / native), "seconds": round(native, 3), "x_blob": 1.0, "x_store_view": None,
            "daemon_cpu_s": None, "requests": None, "peak_rss_mib": None, "derived_mib": None}]
    view = [r.store_view for r in rounds]
    out.append({"model": name, "file": "store/ safetensors (FUSE, no conversion)", "pass": "first",
                "mb_s": round(src / 1e6 / med([v.seconds for v in view])),
                "input_mb_s": round(src / 1e6 / med([v.seconds for v in view])),
                "seconds": round(med([v.seconds for v in view]), 3),
                "x_blob": round(med([v.native / v.seconds for v in view]), 3), "x_store_view": 1.0,
                "daemon_cpu_s": round(med([v.cpu for v in view]), 2), "requests": int(med([v.requests for v in view])),
                "peak_rss_mib": None, "derived_mib": None})
    for pass_, reads, rss in (("cold (derived cache empty)", [r.cold for r in rounds], [r.rss_cold for r in rounds]),
                              ("warm (remount, derived cache on disk)", [r.warm for r in rounds],
                               [r.rss_warm for r in rounds])):
        seconds = med([x.seconds for x in reads])
        out.append({"model": name, "file": f"llamacpp GGUF {conv.gguf_type}", "pass": pass_,
                    "mb_s": round(conv.size / 1e6 / seconds), "input_mb_s": round(src / 1e6 / seconds),
                    "seconds": round(seconds, 3),
                    "x_blob": round(med([x.native / x.seconds for x in reads]), 3),
                    "x_store_view": round(med([r.store_view.seconds / x.seconds for r, x in zip(rounds, reads)]), 3),
                    "daemon_cpu_s": round(med([x.cpu for x in reads]), 2),
                    "requests": int(med([x.requests for x in reads])), "peak_rss_mib": round(max(rss) / (1 << 20)),
                    "derived_mib": round(max(r.derived_on_disk for r in rounds) / (1 << 20))
                    if pass_.startswith("cold") else None})
    return out


PLAN_COLS = [("model", "model"), ("step", "step"), ("seconds", "median s"), ("source_mb_s", "source MB/s"),
             ("x_hash", "x SHA-256+BLAKE3 of source"), ("peak_rss_mib", "peak RSS MiB")]
LAT_COLS = [("model", "model"), ("tensors", "tensors"), ("header_kib", "header KiB"), ("operation", "operation"),
            ("native_ms", "native ms"), ("mount_ms", "mount ms"), ("over_native_ms", "mount - native ms"),
            ("x_native", "x native")]
SEQ_COLS = [("model", "model"), ("file", "read"), ("pass", "pass"), ("mb_s", "MB/s"), ("input_mb_s", "MB/s of input"),
            ("seconds", "median s"), ("x_blob", "x source blob"), ("x_store_view", "x store/ view"),
            ("daemon_cpu_s", "daemon CPU s"), ("requests", "requests"), ("peak_rss_mib", "mount peak RSS MiB"),
            ("derived_mib", "derived cache MiB")]


def targets(lat: list[dict[str, Any]], seq: list[dict[str, Any]], results: dict[str, Any]) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    for row in lat:
        if row["operation"] in ("first stat", "open + first 4 KiB"):
            ms = row["mount_ms"]
            goals.append({"target": f"{row['model']} ({row['tensors']} tensors): {row['operation']} in a fresh mount "
                                    f"<= {TARGET_LATENCY * 1e3:.0f} ms",
                          "value": f"{ms} ms", "met": ms <= TARGET_LATENCY * 1e3})
        elif row["operation"] in ("whole header", "gguf.GGUFReader open"):
            goals.append({"target": f"{row['model']}: {row['operation']} ({row['header_kib']} KiB) (not a target)",
                          "value": f"{row['mount_ms']} ms, {row['x_native']}x native ({row['native_ms']} ms)",
                          "met": None})
    for row in seq:
        if not row["file"].startswith("llamacpp"):
            continue
        first = row["pass"].split()[0]
        if row["model"] == "1b F16->F16":
            goals.append({"target": f"1b F16->F16 (Q/K permuted), {first} pass >= {TARGET_SEQ}x the source blob read "
                                    f"directly", "value": f"{row['x_blob']}x ({row['mb_s']} MB/s)",
                          "met": row["x_blob"] >= TARGET_SEQ})
            goals.append({"target": f"1b F16->F16, {first} pass against store/ (FUSE, no conversion) (not a target)",
                          "value": f"{row['x_store_view']}x", "met": None})
        elif "Q8_0" in row["model"]:
            goals.append({"target": f"{row['model']}: quantization throughput, {first} pass (not a target)",
                          "value": f"{row['input_mb_s']} MB/s of input ({row['mb_s']} MB/s of output)", "met": None})
        elif first == "cold":
            goals.append({"target": f"{row['model']}, {first} pass (not a target)",
                          "value": f"{row['x_blob']}x the source blob, {row['x_store_view']}x store/ "
                                   f"({row['mb_s']} MB/s)", "met": None})
    big = results.get("big F16")
    if big is not None:
        peak = max(max(r.rss_cold, r.rss_warm) for r in big["rounds"])
        goals.append({"target": f"mount peak RSS while streaming the converted {big['source_gib']} GiB BF16 model "
                                f"<= {TARGET_RSS // 10**6} MB", "value": f"{peak / 1e6:.0f} MB", "met": peak <= TARGET_RSS})
    return goals


# ---------------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine_facts(work: Path, repeat: int) -> dict[str, Any]:
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_gib": round(mem_total_gib(), 1), "kernel": platform.release(),
            "python": platform.python_version(), "fuse": fuse_version(), "filesystem": fs_type(work),
            "workdir": str(work), "modelstore": git_commit(), "numpy": __import__("numpy").__version__,
            "gguf": getattr(gguf, "__version__", "?"), "repeat": repeat,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def report(facts: dict[str, Any], plan_t: list[dict[str, Any]], lat_t: list[dict[str, Any]],
           seq_t: list[dict[str, Any]], goals: list[dict[str, Any]], markdown: bool) -> str:
    models = "\n".join(f"  {line}" for line in facts["models"])
    head = (f"machine: {facts['cpu']}, {facts['nproc']} CPUs ({facts['usable_cpus']} usable), {facts['memory_gib']} GiB "
            f"RAM, Linux {facts['kernel']}, {facts['filesystem']} at {facts['workdir']}, Python {facts['python']}, "
            f"numpy {facts['numpy']}, {facts['fuse']}, modelstore {facts['modelstore']}\n"
            f"load average: {facts['loadavg_start']} at start, {facts['loadavg_end']} at end; median of "
            f"{facts['repeat']} rounds; {facts['elapsed_s']:.0f} s in all\n"
            f"models (generated with write_hf_model, random weights; added with --link --no-convert):\n{models}\n"
            f"native: the source blob in the page cache (latency: a local sparse file with the same header); "
            f"cold-disk reads are not measured\n"
            f"{prefault_text(facts['prefault'])}\n")
    parts = [head,
             "Planning (`modelstore convert`: headers, then the converted file streamed once through SHA-256 + BLAKE3):",
             format_table(plan_t, PLAN_COLS, markdown, 2), "",
             "Latency in a fresh mount, derived cache empty (mount page cache dropped between reads):",
             format_table(lat_t, LAT_COLS, markdown, 4), "",
             ("Sequential 1 MiB reads (MB/s of input = source safetensors bytes / s; ratios are of MB/s of input: "
              "seconds to read the source blob just before / seconds to read the file, median of per-round ratios):"),
             format_table(seq_t, SEQ_COLS, markdown, 3), "",
             "\n".join(f"{VERDICT[g['met']]}  {g['target']}: {g['value']}" for g in goals)]
    return "\n".join(parts)


def prefault_text(p: dict[str, Any]) -> str:
    if not p["on"]:
        return "prefault: off (fresh pages are paid for inside the timed reads)"
    return (f"prefault: before each timed mount read, as much fresh memory as it fills touched and freed, untimed: "
            f"{p['bytes'] / 1e9:.1f} GB in {p['seconds']:.1f} s ({p['seconds'] / max(p['bytes'] / 1e9, 1e-9):.2f} s/GB)")


def preflight(work: Path, cases: list[Case]) -> None:
    if not Path("/dev/fuse").exists() or not shutil.which("fusermount3"):
        raise SystemExit("needs /dev/fuse and fusermount3 (apt-get install fuse3)")
    if fs_type(work) in ("tmpfs", "ramfs"):
        log(f"warning: {work} is on {fs_type(work)}: the blobs are memory, not a file system's page cache")
    need = sum(c.shape.nbytes() * 2 for c in cases)  # the source, and at most as much again of derived slices
    if shutil.disk_usage(work).free < need:
        log(f"warning: {shutil.disk_usage(work).free >> 20} MiB free in {work}; this needs about {need >> 20} MiB")
    biggest = max(c.shape.nbytes() for c in cases)
    if mem_available() < 3 * biggest:  # source blob + the mount's copy + the derived cache files
        log(f"warning: {mem_available() >> 20} MiB of memory available; the largest model needs about "
            f"{3 * biggest >> 20} MiB of page cache: native numbers may include disk reads")


CASES = ("f16", "q8_0", "big")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, help="source size of the all-derived BF16 model, e.g. 1G, 4G "
                                                   "[4GiB; 256MiB with --quick]")
    p.add_argument("--quick", action="store_true", help="small shapes (hidden 512, 4 layers): a smoke run")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"what to run [{','.join(CASES)}]: the 1B model as F16, then as Q8_0; the BF16 model")
    p.add_argument("--workdir", type=Path, help="folder to make the temp work dir in (not tmpfs) [/var/tmp]")
    p.add_argument("--repeat", type=int, help="rounds; medians are reported [3; 1 with --quick]")
    p.add_argument("--no-prefault", dest="prefault", action="store_false",
                   help="do not touch fresh memory before each timed read (see prefault())")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args(argv)
    args.size = args.size or ((256 << 20) if args.quick else (4 << 30))
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.cases = [c.strip().lower() for c in args.cases.split(",") if c.strip()]
    if set(args.cases) - set(CASES) or not args.cases:
        p.error(f"--cases: choose from {','.join(CASES)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    PREFAULT["on"] = args.prefault
    small = QUICK_1B if args.quick else LLAMA_1B
    cases = []
    if {"f16", "q8_0"} & set(args.cases):
        cases.append(Case("1b", small, work))
    if "big" in args.cases:
        cases.append(Case("big", fit_layers(QUICK_BIG if args.quick else BIG, args.size), work))
    preflight(work, cases)
    facts = machine_facts(work, args.repeat)
    if facts["loadavg_start"][0] > 1.0:
        log(f"warning: load average {facts['loadavg_start']} at start: something else is running, timings are noise")
    facts["models"] = []
    results: dict[str, Any] = {}
    plan_t: list[dict[str, Any]] = []
    lat_t: list[dict[str, Any]] = []
    seq_t: list[dict[str, Any]] = []
    for case in cases:
        generate(case)
        add(case)
        hash_floor(case, args.repeat)
        types = ["F16"] if case.key == "big" else [t.upper() for t in args.cases if t in ("f16", "q8_0")]
        for gguf_type in types:
            conv = plan(case, gguf_type, args.repeat)
            room = ensure_derived_room(case, conv)
            facts["models"].append(
                f"{label(case, conv)}: {case.shape.describe()}; source {case.source_bytes / (1 << 20):.0f} MiB; "
                f"{conv.rel} {conv.size / (1 << 20):.0f} MiB, header {conv.header_len / 1024:.0f} KiB, "
                f"{conv.derived_bytes / (1 << 20):.0f} MiB ({conv.derived_bytes / conv.size:.0%}) in "
                f"{conv.derived_slices} derived slices ({conv.how}); derived cache limit {room}")
            log(facts["models"][-1])
            rounds = measure(case, conv, args.repeat)
            results[f"{case.key} {gguf_type}"] = {"converted": conv.__dict__ | {"header_blob": str(conv.header_blob)},
                                                  "rounds": rounds, "source_gib": round(case.source_bytes / (1 << 30), 2)}
            lat_t += latency_rows(case, conv, rounds)
            seq_t += seq_rows(case, conv, rounds)
        plan_t += planning_rows(case)
        if not args.keep:  # free the disk and the page cache for the next model
            shutil.rmtree(case.folder, ignore_errors=True)
            shutil.rmtree(case.home, ignore_errors=True)
    facts["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    facts["prefault"] = dict(PREFAULT)
    return {"facts": facts, "plan": plan_t, "latency": lat_t, "seq": seq_t,
            "targets": targets(lat_t, seq_t, results), "results": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with work_dir(args.workdir, "modelstore-bench-convert-", args.keep) as work:
        start = time.perf_counter()
        out = run(args, work)
        out["facts"]["elapsed_s"] = time.perf_counter() - start
        print(report(out["facts"], out["plan"], out["latency"], out["seq"], out["targets"], args.markdown))
        if args.json:
            raw = {k: {**v, "rounds": [r.__dict__ | {x: getattr(r, x).__dict__ for x in ("cold", "store_view", "warm")}
                                       for r in v["rounds"]]} for k, v in out["results"].items()}
            print(json.dumps({"machine": out["facts"], "planning": out["plan"], "latency": out["latency"],
                              "sequential": out["seq"], "targets": out["targets"], "raw": raw}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
