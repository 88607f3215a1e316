"""`modelstore scan`"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
from modelstore.cli.app import App, emit_json, human_bytes, pass_app, print_table, printable
from modelstore.cli.where import where_table

if TYPE_CHECKING:  # the store's modules load lmdb and gguf: only inside the command
    from modelstore.store.scan import Duplicate, Figures, ScanReport
    from modelstore.store.scancache import ScanCache

EPILOG = """\b
Examples:
  modelstore scan                          # the usual folders of Ollama, LM Studio, the HF cache, ...
  modelstore scan ~/models /data/hf-cache  # or the folders you name
  modelstore scan --json | jq .total       # exact bytes, for scripts

\b
Per folder and over all of them, scan reports:
  LOGICAL      what the files take now (a file reached through several links counts once)
  WHOLE-FILE   each distinct file once: what Ollama's blobs and the HF cache already achieve
  TENSOR       what the store would hold: each distinct tensor once, plus every distinct file's
               header and small tensors (the same rule `modelstore add` applies)
and the largest duplications: the same file in several places, files that share tensors (a
fine-tune and its base, the same weights sharded another way, a GGUF export of safetensors).

{where}A FOLDER may also be a single file.

\b
Scan only reads the folders: it never writes into them. It keeps the hashes it computed in the
store home (scan-cache.sqlite), keyed by path, inode, size, mtime and ctime, so a second scan reads only
the files that changed. Unfinished downloads and dangling links are listed, not counted.
""".format(where=where_table("Without FOLDERS, scan looks where each runtime keeps its models:"))

SHOWN_SKIPPED = 10
SHOWN_NAMES = 3


@click.command(epilog=EPILOG)
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path))
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=0),
              help="How many of the largest duplications to list.")
@click.option("--no-cache", is_flag=True, help="Hash every file again, and keep no hashes for next time.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (bytes, not rounded).")
@pass_app
def scan(app: App, folders: tuple[Path, ...], top: int, no_cache: bool, as_json: bool) -> None:
    """How much the store would save on the model folders you already have."""
    from modelstore.store.errors import NotFound

    targets = _named_folders(folders) if folders else _runtime_folders()
    if not targets:
        from modelstore.store.sources.locations import RUNTIMES, default_folders

        looked = ", ".join(dict.fromkeys(str(f) for runtime in RUNTIMES for f in default_folders(runtime)))
        raise NotFound(f"no model folder of any runtime here (looked in {looked}); "
                       f"name the folders to scan: modelstore scan DIR...")
    cache, cache_note = _open_cache(app, [root for root, _ in targets], no_cache)
    try:
        report = _run(app, targets, cache, top)
    finally:
        cache.close()
        app.close_bars()
    if cache.damaged and cache.removed:
        cache_note = f"the hash cache was damaged and set aside ({cache.damaged}); the next scan starts a new one"
    elif cache.damaged:
        cache_note = f"the hash cache could not be used ({cache.damaged}): hashes kept for this run only"
    if as_json:
        emit_json({**report.to_json(), "cache": None if cache.path is None else str(cache.path),
                   "cache_problem": cache.damaged})
        return
    _print_report(report, cache_note)


def _named_folders(folders: tuple[Path, ...]) -> list[tuple[Path, str | None]]:
    from modelstore.store.errors import NotFound

    out: list[tuple[Path, str | None]] = []
    seen: set[Path] = set()
    for folder in (f.expanduser() for f in folders):
        try:
            exists = folder.exists()
        except PermissionError:  # another user's: the scan lists it as not readable
            exists = True
        if not exists:
            if folder.is_symlink():
                raise NotFound(f"{folder}: a symlink to nothing (dangling, or a loop)")
            raise NotFound(f"{folder}: no such file or folder")
        if folder.resolve() not in seen:  # the same folder named twice is one row
            seen.add(folder.resolve())
            out.append((folder, None))
    return out


def _runtime_folders() -> list[tuple[Path, str | None]]:
    """Each runtime's folders that exist; those we may not read too, so the report says so."""
    from modelstore.store.sources.locations import RUNTIMES, folders_here

    seen: set[Path] = set()
    out: list[tuple[Path, str | None]] = []
    for runtime in RUNTIMES:
        readable, locked = folders_here(runtime)
        for folder in readable + locked:
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                out.append((folder, runtime))
    return out


def _open_cache(app: App, roots: list[Path], no_cache: bool) -> tuple[ScanCache, str]:
    """The hash cache in the store home; in memory (kept for this run only) when asked, when the
    home lies inside a scanned folder (writing it would change that folder), or when it cannot be
    written."""
    import sqlite3

    from modelstore.store.ingest import MIN_SHARED_TENSOR
    from modelstore.store.scancache import CACHE_NAME, ScanCache

    home = app.home.expanduser().resolve()
    inside = [r for r in roots if os.path.isdir(r) and home.is_relative_to(r.resolve())]
    if no_cache:
        return ScanCache(None, MIN_SHARED_TENSOR), "no hash cache (--no-cache)"
    if inside:
        return ScanCache(None, MIN_SHARED_TENSOR), f"no hash cache: the store home {home} is inside {inside[0]}"
    try:
        home.mkdir(parents=True, exist_ok=True)
        return ScanCache(home / CACHE_NAME, MIN_SHARED_TENSOR), f"hash cache {home / CACHE_NAME}"
    except (OSError, sqlite3.Error) as exc:  # the scan still works, only slower next time
        return ScanCache(None, MIN_SHARED_TENSOR), f"no hash cache ({home / CACHE_NAME}: {exc})"


def _run(app: App, targets: list[tuple[Path, str | None]], cache: ScanCache, top: int) -> ScanReport:
    from modelstore.store.scan import scan as scan_folders

    from modelstore.fusefs.mount import running_mounts

    # A store inside a scanned folder, or a mount of one: what they show are not more copies.
    exclude = [app.home, *(where for _, where in running_mounts())]
    if not (app.home / "catalog").is_dir():
        return scan_folders(targets, cache, progress=app.progress, top=top, exclude=exclude)
    with app.store() as store:  # only read: to say how much of what was found the store holds already
        return scan_folders(targets, cache, progress=app.progress, catalog=store.catalog, home=app.home, top=top,
                            exclude=exclude)


def _ratio(logical: int, stored: int) -> str:
    return f"{logical / stored:.2f}x" if stored else "-"


def _print_report(report: ScanReport, cache_note: str) -> None:
    rows = []
    for f in report.folders:
        rows.append([f.path, f.runtime or "-", *_figure_cells(f.figures)])
    if len(report.folders) > 1:
        rows.append(["all folders", "", *_figure_cells(report.total)])
    print_table(["FOLDER", "RUNTIME", "FILES", "LOGICAL", "WHOLE-FILE", "TENSOR", "SAVED", "RATIO"], rows,
                right={2, 3, 4, 5, 6, 7})
    if report.duplicates:
        click.echo("")
        print_table(["SAVED", "SIZE", "KIND", "WHAT", "WHERE"],
                    [[human_bytes(d.saved_bytes), human_bytes(d.bytes), _copies(d), _names(d), _folders(d)]
                     for d in report.duplicates], right={0, 1}, title="largest duplications")
    click.echo("")
    t = report.total
    click.echo(f"{human_bytes(t.logical_bytes)} in {t.files} files; whole-file dedup: "
               f"{human_bytes(t.whole_file_bytes)}; the store: {human_bytes(t.tensor_dedup_bytes)} "
               f"({_ratio(t.logical_bytes, t.tensor_dedup_bytes)}, saves "
               f"{human_bytes(t.logical_bytes - t.tensor_dedup_bytes)})")
    if report.in_store is not None:
        s = report.in_store
        click.echo(f"the store at {s.home} holds {human_bytes(s.stored_bytes)} of that already; "
                   f"adding everything would store {human_bytes(s.new_bytes)} more")
    click.echo(f"hashed {report.hashed_files} files ({human_bytes(report.hashed_bytes)}), "
               f"{report.cached_files} from the cache; {cache_note}", err=True)
    for title, entries in (("not counted", report.skipped), ("counted as plain bytes", report.problems)):
        if entries:
            click.echo(f"{title}: {len(entries)}", err=True)
            for s in entries[:SHOWN_SKIPPED]:
                click.echo(printable(f"  {s.path}: {s.reason}"), err=True)
            if len(entries) > SHOWN_SKIPPED:
                click.echo(f"  ... and {len(entries) - SHOWN_SKIPPED} more (--json lists them all)", err=True)


def _figure_cells(f: Figures) -> list[str]:
    return [str(f.files), human_bytes(f.logical_bytes), human_bytes(f.whole_file_bytes),
            human_bytes(f.tensor_dedup_bytes), human_bytes(f.logical_bytes - f.tensor_dedup_bytes),
            _ratio(f.logical_bytes, f.tensor_dedup_bytes)]


def _copies(d: Duplicate) -> str:
    if d.kind == "same file":
        return f"{len(d.places)} copies"
    if d.kind == "repeated tensors":
        return "repeats in 1 file"
    return f"shared by {len(d.places)} files"


def _names(d: Duplicate) -> str:
    names = list(dict.fromkeys(p.name for p in d.places))
    more = f" +{len(names) - SHOWN_NAMES}" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def _folders(d: Duplicate) -> str:
    return ", ".join(dict.fromkeys(p.folder for p in d.places))
