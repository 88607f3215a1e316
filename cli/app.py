"""What every command shares: the store home, progress bars, and output helpers."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click


@dataclass
class App:
    home: Path
    debug: bool = False
    _bars: list[Any] = field(default_factory=list)

    @contextmanager
    def store(self, *, create: bool = False) -> Iterator[Any]:
        from modelstore.store import Store
        from modelstore.store.errors import UsageError

        if self.home.exists() and not self.home.is_dir():
            raise UsageError(f"the store home {self.home} is a file, not a folder (give --home or MODELSTORE_HOME "
                             f"a folder)")
        try:
            opened = Store(self.home, create=create)
        except OSError as exc:  # a read-only disk, another user's folder, a file on the way
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):
                raise
            raise UsageError(f"cannot create the store at {self.home}: {exc.strerror} (give --home or "
                             f"MODELSTORE_HOME a folder you may write)") from None
        with opened as store:
            yield store

    def progress(self, total: int, desc: str) -> Callable[[int], None]:
        """A byte progress bar with speed on stderr, only when stderr is a terminal."""
        from tqdm import tqdm

        for bar in self._bars:
            bar.close()
        bar = tqdm(total=total, desc=f"hashing {desc}"[:60], unit="B", unit_scale=True, unit_divisor=1024,
                   disable=None, leave=False, file=sys.stderr)
        self._bars = [bar]
        return bar.update

    def close_bars(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []

    @staticmethod
    def waiting(what: str) -> None:
        """Said when a command waits for a lock another holds (`what`: who holds it)."""
        click.echo(f"waiting for {what} to finish...", err=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def human_count(n: int | None) -> str:
    """Parameter counts the way model cards say them: 135M, 8.0B."""
    if not n:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(n)


def printable(text: str) -> str:
    """`text` safe to show on a terminal: control characters, and the undecodable bytes of a file
    name that is not UTF-8, as escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif "\udc80" <= ch <= "\udcff":  # os.fsdecode's stand-in for a byte that is not UTF-8
            out.append(f"\\x{ord(ch) - 0xdc00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def print_table(columns: list[str], rows: list[list[str]], *, right: set[int] = frozenset(), title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*columns, title=title, box=None, pad_edge=False, header_style="bold")
    for column in table.columns:
        column.no_wrap = True
    for i in right:
        table.columns[i].justify = "right"
    for row in rows:
        table.add_row(*(Text(printable(cell)) for cell in row))  # Text: a name is never read as markup
    console = Console()
    if not console.is_terminal:  # piped: never cut names short to fit 80 columns
        console = Console(width=4096)
    console.print(table)


pass_app = click.make_pass_decorator(App)
