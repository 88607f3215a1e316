"""How fast `modelstore add` is, against `sha256sum`, `cp` and `cat` of the same file, all measured
in the same run from the page cache, and how much memory it takes.

    python bench/ingest.py                       # 4 GiB, 3 repeats, median
    python bench/ingest.py --size 1G --markdown  # the table as the README carries it

Every command runs as a subprocess (timed wall clock, peak RSS from wait4); each `add` gets a fresh
store home. Targets are reported as PASS/MISS, never asserted: timings on a busy machine are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# `common` is bench/common.py, beside this file
from common import (cpu_model, format_table, fs_type, git_commit, mem_total_gib, modelstore_exe, parse_size,
                    rmtree, work_dir)
from modelstore.converters.synth import write_large_gguf
from modelstore.store.tensors import TensorSpan, read_weights_header

TARGET_RATIO = 1.3
TARGET_RSS = 200 * 10**6
MODES = ("copy", "link", "reflink", "move")
SHA = "sha256sum"
CP_SYNC = "cp + sync"
VERDICT = {True: "PASS", False: "MISS", None: "INFO"}
BLAKE3_SNIPPET = """
import sys, blake3
h, buf = blake3.blake3(max_threads=1), bytearray(8 << 20)
with open(sys.argv[1], "rb", buffering=0) as f:
    while n := f.readinto(buf):
        h.update(memoryview(buf)[:n])
print(h.hexdigest())
"""

# Runs the timed command from a small process, so that its peak RSS is not the benchmark's own:
# a child spawned straight from this interpreter inherits our RSS high-water mark across exec.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""

IMPORTS_SNIPPET = "import modelstore.cli, modelstore.store.sources.local, modelstore.store.sources.huggingface"

HASH_FILE_SNIPPET = """
import sys
from pathlib import Path
from modelstore.store.hashing import hash_file
from modelstore.store.ingest import MIN_SHARED_TENSOR
from modelstore.store.tensors import read_weights_header
header = read_weights_header(Path(sys.argv[1]))
print(hash_file(sys.argv[1], [t for t in header.tensors if t.length >= MIN_SHARED_TENSOR]).b3)
"""


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss: int  # bytes


@dataclass
class Op:
    name: str
    command: Callable[[], list[str]]  # untimed setup, then the command to time
    cleanup: Callable[[], None] = lambda: None
    is_add: bool = False
    reads_file: bool = True
    samples: list[Sample] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def rss(self) -> int:
        return max(s.rss for s in self.samples)


def choose_embd(total: int) -> int:
    """The widest n_embd for which write_large_gguf makes at least 4 layers and comes within 10% of
    `total` bytes (real models have tensors of tens of MB), else the closest."""
    def layers_and_size(n_embd: int) -> tuple[int, int]:
        per_layer = 2 * (4 * n_embd * n_embd + 3 * n_embd * (n_embd * 11 // 4))
        fixed = 2 * 2 * 32000 * n_embd
        n_layer = max(1, (total - fixed) // per_layer)
        return n_layer, fixed + n_layer * per_layer
    widths = (4096, 3072, 2048, 1024, 512, 256)
    for n_embd in widths:
        n_layer, size = layers_and_size(n_embd)
        if n_layer >= 4 and abs(size - total) <= total // 10:
            return n_embd
    return min(widths, key=lambda e: abs(layers_and_size(e)[1] - total))


def generate(path: Path, size: int, identical_norms: bool) -> None:
    start = time.perf_counter()
    write_large_gguf(path, size, n_embd=choose_embd(size))
    if not identical_norms:
        vary_norms(path)
    print(f"generated {path.name}: {path.stat().st_size / (1 << 20):.0f} MiB "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def vary_norms(path: Path) -> None:
    """Give every norm tensor weights of its own, as in a trained model: synth writes them all ones,
    which makes them duplicates within the file, and that sends a fresh add down the dedup path."""
    header = read_weights_header(path)
    assert header is not None
    rng = np.random.default_rng(1)
    with open(path, "r+b") as f:
        for span in header.tensors:
            if span.name.endswith("norm.weight"):
                f.seek(span.offset)
                f.write((1 + 0.02 * rng.standard_normal(span.length // 4)).astype(np.float32).tobytes())


def middle_tensor(path: Path) -> TensorSpan:
    header = read_weights_header(path)
    assert header is not None
    big = [t for t in header.tensors if t.length >= 1 << 20]
    return big[len(big) // 2]


def make_changed_copy(src: Path, dst: Path) -> str:
    """A copy of `src` with bytes in the middle of one tensor overwritten; returns the tensor's name."""
    subprocess.run(["cp", str(src), str(dst)], check=True)
    span = middle_tensor(src)
    with open(dst, "r+b") as f:
        f.seek(span.offset + span.length // 2)
        f.write(os.urandom(4096))
    return span.name


def warm(*paths: Path) -> None:
    for p in paths:
        subprocess.run(["cat", str(p)], stdout=subprocess.DEVNULL, check=True)


def run(cmd: list[str]) -> Sample:
    """Time `cmd` from a synced start; peak RSS of it and its descendants, from wait4."""
    os.sync()
    with tempfile.TemporaryFile() as err:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, *cmd], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=err, text=True)
        if out.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{err.read().decode(errors='replace')}")
    seconds, maxrss_kib = out.stdout.split()
    return Sample(float(seconds), int(maxrss_kib) * 1024)


def build_ops(work: Path, src: Path, changed: Path, modes: list[str]) -> list[Op]:
    exe = modelstore_exe()
    dst = work / "cp-dst.gguf"
    dedup_home = work / "home-copy"

    def add(home: Path, path: Path, mode: str = "copy", name: str = "bench") -> list[str]:
        return [exe, "--home", str(home), "add", str(path), "--name", name, f"--{mode}"]

    def fresh(home: Path, cmd: list[str]) -> Callable[[], list[str]]:
        def setup() -> list[str]:
            rmtree(home)
            return cmd
        return setup

    def holding_original() -> None:
        if not dedup_home.exists():
            subprocess.run(add(dedup_home, src, "link"), check=True, stdout=subprocess.DEVNULL)

    def again() -> list[str]:
        holding_original()
        return add(dedup_home, src)

    def one_changed() -> list[str]:
        holding_original()
        return add(dedup_home, changed, name="bench-changed")

    def move_source() -> list[str]:
        home, moved = work / "home-move", work / "move-src.gguf"
        rmtree(home)
        subprocess.run(["cp", str(src), str(moved)], check=True)
        return add(home, moved, "move")

    def cp_dst(cmd: list[str]) -> Callable[[], list[str]]:
        def setup() -> list[str]:
            dst.unlink(missing_ok=True)
            return cmd
        return setup

    ops = [
        Op("cat > /dev/null", lambda: ["cat", str(src)]),
        Op(SHA, lambda: ["sha256sum", str(src)]),
    ]
    if shutil.which("openssl"):
        ops.append(Op("openssl sha256", lambda: ["openssl", "dgst", "-sha256", str(src)]))
    if shutil.which("b3sum"):
        ops.append(Op("b3sum (1 thread)", lambda: ["b3sum", "--num-threads", "1", str(src)]))
    ops += [
        Op("blake3 (python, 1 thread)", lambda: [sys.executable, "-c", BLAKE3_SNIPPET, str(src)]),
        Op("python + add's imports", lambda: [sys.executable, "-c", IMPORTS_SNIPPET], reads_file=False),
        Op("hash_file (add's hashing, no write)", lambda: [sys.executable, "-c", HASH_FILE_SNIPPET, str(src)]),
        Op("cp", cp_dst(["cp", str(src), str(dst)]), lambda: dst.unlink(missing_ok=True)),
        Op(CP_SYNC, cp_dst(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", str(src), str(dst)]),
           lambda: dst.unlink(missing_ok=True)),
    ]
    for mode in modes:
        if mode == "move":
            ops.append(Op("add --move", move_source, lambda: rmtree(work / "home-move"), is_add=True))
        elif mode == "copy":
            ops.append(Op("add --copy", fresh(dedup_home, add(dedup_home, src)), is_add=True))
        else:
            home = work / f"home-{mode}"
            ops.append(Op(f"add --{mode}", fresh(home, add(home, src, mode)), lambda h=home: rmtree(h), is_add=True))
    ops += [
        Op("add again (file stored already)", again, is_add=True),
        Op("add, one tensor changed", one_changed, lambda: rmtree(dedup_home), is_add=True),
    ]
    return ops


def measure(ops: list[Op], repeat: int, warmup: int, warm_paths: list[Path]) -> None:
    for r in range(warmup + repeat):
        warm(*warm_paths)
        label = f"warmup {r + 1}/{warmup}" if r < warmup else f"{r - warmup + 1}/{repeat}"
        for op in ops:
            sample = run(op.command())
            op.cleanup()
            if r >= warmup:
                op.samples.append(sample)
            print(f"  [{label}] {op.name}: {sample.seconds:.2f} s", file=sys.stderr)


def rows(ops: list[Op], size: int) -> list[dict[str, object]]:
    by_name = {op.name: op for op in ops}
    sha, cp_sync = by_name[SHA].seconds, by_name[CP_SYNC].seconds
    return [{"operation": op.name, "seconds": round(op.seconds, 3), "gb_per_s": round(size / 1e9 / op.seconds, 2) if op.reads_file else None,
             "x_sha256sum": round(op.seconds / sha, 2), "x_cp_sync": round(op.seconds / cp_sync, 2),
             "peak_rss_mib": round(op.rss / (1 << 20), 1), "all_seconds": [round(s.seconds, 3) for s in op.samples]}
            for op in ops]


def targets(ops: list[Op]) -> list[dict[str, object]]:
    by_name = {op.name: op for op in ops}
    out: list[dict[str, object]] = []
    if "add --copy" in by_name:
        ratio = by_name["add --copy"].seconds / by_name[SHA].seconds
        out.append({"target": f"add --copy <= {TARGET_RATIO}x sha256sum", "value": f"{ratio:.2f}x",
                    "met": ratio <= TARGET_RATIO})
        if "openssl sha256" in by_name:  # coreutils without OpenSSL hashes far slower than SHA-NI can
            ratio = by_name["add --copy"].seconds / by_name["openssl sha256"].seconds
            out.append({"target": "add --copy against openssl sha256 (not a target)", "value": f"{ratio:.2f}x",
                        "met": None})
    adds = [op for op in ops if op.is_add]
    worst = max(adds, key=lambda op: op.rss)
    out.append({"target": f"peak RSS of add <= {TARGET_RSS // 10**6} MB",
                "value": f"{worst.rss / 1e6:.0f} MB ({worst.name})", "met": worst.rss <= TARGET_RSS})
    return out


COLUMNS = [("operation", "operation"), ("seconds", "median s"), ("gb_per_s", "GB/s"),
           ("x_sha256sum", "x sha256sum"), ("x_cp_sync", "x cp+sync"), ("peak_rss_mib", "peak RSS MiB")]


def machine_facts(work: Path, size: int, repeat: int, changed_tensor: str, identical_norms: bool) -> dict[str, object]:
    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_gib": round(mem_total_gib(), 1), "kernel": platform.release(),
            "python": platform.python_version(), "filesystem": fs_type(work), "workdir": str(work),
            "modelstore": git_commit(), "file_bytes": size, "file_gib": round(size / (1 << 30), 2),
            "repeat": repeat, "changed_tensor": changed_tensor,
            "norm_tensors": "identical (all ones)" if identical_norms else "distinct",
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def report(facts: dict[str, object], table: list[dict[str, object]], goals: list[dict[str, object]],
           markdown: bool) -> str:
    head = (f"file: {facts['file_gib']} GiB ({facts['file_bytes']} bytes) GGUF, F16 random weights, "
            f"{facts['norm_tensors']} norm tensors, from the page cache; median of {facts['repeat']}; "
            f"'one tensor changed' changes {facts['changed_tensor']}\n"
            f"machine: {facts['cpu']}, {facts['nproc']} CPUs ({facts['usable_cpus']} usable), "
            f"{facts['memory_gib']} GiB RAM, Linux {facts['kernel']}, {facts['filesystem']} at {facts['workdir']}, "
            f"Python {facts['python']}, modelstore {facts['modelstore']}\n"
            f"load average: {facts['loadavg_start']} at start, {facts['loadavg_end']} at end\n")
    verdicts = "\n".join(f"{VERDICT[g['met']]}  {g['target']}: {g['value']}" for g in goals)
    return f"{head}\n{format_table(table, COLUMNS, markdown, 1)}\n\n{verdicts}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--size", type=parse_size, default=4 << 30, help="file size, e.g. 512M, 4G [default 4GiB]")
    p.add_argument("--workdir", type=Path, help="folder to make the temp work dir in (not tmpfs) [/var/tmp]")
    p.add_argument("--repeat", type=int, default=3, help="runs of each operation; the median is reported [3]")
    p.add_argument("--modes", default=",".join(MODES), help=f"add modes to time [{','.join(MODES)}]")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds first (a fresh VM pays for first use of its memory) [1]")
    p.add_argument("--identical-norms", action="store_true",
                   help="keep synth's all-ones norm tensors (duplicates within the file)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}; choose from {','.join(MODES)}")
    if args.repeat < 1 or args.warmup < 0:
        p.error("--repeat must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with work_dir(args.workdir, "modelstore-bench-", args.keep) as work:
        if fs_type(work) in ("tmpfs", "ramfs"):
            print(f"warning: {work} is on {fs_type(work)}: fsync and copies cost nothing there", file=sys.stderr)
        free = shutil.disk_usage(work).free
        if free < 5 * args.size:
            print(f"warning: {free >> 20} MiB free in {work}; this needs about {5 * args.size >> 20} MiB", file=sys.stderr)
        src, changed = work / "bench.gguf", work / "changed.gguf"
        generate(src, args.size, args.identical_norms)
        tensor = make_changed_copy(src, changed)
        os.sync()
        size = src.stat().st_size
        facts = machine_facts(work, size, args.repeat, tensor, args.identical_norms)
        ops = build_ops(work, src, changed, args.modes)
        measure(ops, args.repeat, args.warmup, [src, changed])
        facts["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        table, goals = rows(ops, size), targets(ops)
        print(report(facts, table, goals, args.markdown))
        if args.json:
            print(json.dumps({"machine": facts, "results": table, "targets": goals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
