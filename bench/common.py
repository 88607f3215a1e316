"""What every benchmark here needs: facts about the machine, a work folder off tmpfs, the
`modelstore` command, sizes on the command line, and tables in text or Markdown."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 512M, 4G or 4GiB") from None
    return int(value * UNITS[unit])


def fs_type(path: Path) -> str:
    target, best, kind = str(path.resolve()), "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            _, mount, fstype, *_ = line.split()
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, kind = mount, fstype
    return kind


def default_parent(*preferred: Path) -> Path:
    """The first writable folder that is not in memory (tmpfs would measure RAM, not the disk)."""
    for candidate in (*preferred, Path("/var/tmp"), Path(tempfile.gettempdir()), Path.cwd()):
        if candidate.is_dir() and os.access(candidate, os.W_OK) and fs_type(candidate) not in ("tmpfs", "ramfs"):
            return candidate
    return Path.cwd()


@contextmanager
def work_dir(workdir: Path | None, prefix: str, keep: bool, *preferred: Path) -> Iterator[Path]:
    """A fresh folder under `workdir` (else `default_parent`), removed at the end unless `keep`."""
    parent = workdir or default_parent(*preferred)
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            rmtree(work)


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _meminfo_kib(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def mem_total_gib() -> float:
    return _meminfo_kib("MemTotal") / (1 << 20)


def mem_available() -> int:
    return _meminfo_kib("MemAvailable") * 1024


def git_commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "?"


def modelstore_exe() -> str:
    beside = Path(sys.executable).with_name("modelstore")
    return str(beside) if beside.exists() else shutil.which("modelstore") or "modelstore"


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def format_table(table: list[dict[str, Any]], cols: list[tuple[str, str]], markdown: bool, text_cols: int = 2) -> str:
    """`cols`: (row key, heading); the first `text_cols` columns are left-aligned, the rest are numbers."""
    cells = [[h for _, h in cols]] + [["-" if row.get(k) is None else f"{row[k]}" for k, _ in cols] for row in table]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + " --- |" * text_cols + " ---: |" * (len(cols) - text_cols))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) if i < text_cols else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in cells)
