"""`modelstore import`"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from modelstore.cli.app import App, emit_json, files, human_bytes, pass_app, printable
from modelstore.cli.convert import GGUF_TYPE_OPTION, plan_committed, report as report_conversions
from modelstore.cli.where import where_table

KINDS = ("ollama", "lmstudio", "huggingface", "llamacpp", "gpt4all", "jan", "path")

EPILOG = """\b
Examples:
  modelstore import --from ollama                  # ~/.ollama/models, or $OLLAMA_MODELS
  modelstore import --from lmstudio --move         # take the files: the folder gives its space back
  modelstore import --from huggingface --dry-run   # what would be stored, writing nothing
  modelstore import --from gpt4all ~/models/gpt4all
  modelstore import --from path ~/Downloads/models # any GGUF files and HF-format folders

{where}
\b
Each model keeps its identity: an Ollama model its name:tag and manifest (the ollama/ view shows
the same manifest digest), a Hugging Face snapshot its repo id, commit and refs, an LM Studio
model its publisher/model/file place. Each model is committed as soon as it is stored; what the
store holds already (a blob several models share, the same GGUF in two runtimes, tensors of a
fine-tune) is not stored again.

\b
Modes (as for `add`):
  --copy     copy the bytes in (default)
  --reflink  clone them where the filesystem can (btrfs, XFS): no extra disk; else copy
  --link     hard-link them in: no extra disk; the runtime keeps using its files, which you must
             then not edit in place
  --move     take the files: each model's originals are removed once the store has committed it
             and checked its hashes; a file another model of the folder still uses stays until that
             one is imported too. Interrupted, nothing is lost and a re-run finishes the job.

\b
Skipped, with a warning: unfinished downloads, dangling links, manifests naming missing blobs,
files whose bytes do not match the hash they are named by, files that change while being read.
""".format(
    where=where_table("Where each runtime keeps its models, unless PATH says otherwise:"))


@click.command("import", epilog=EPILOG)
@click.option("--from", "kind", type=click.Choice(KINDS), required=True, help="The runtime whose models to import.")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--copy", "mode", flag_value="copy", default=True, help="Copy the files in (default).")
@click.option("--reflink", "mode", flag_value="reflink", help="Clone the files where the filesystem can.")
@click.option("--link", "mode", flag_value="link", help="Hard-link the files in.")
@click.option("--move", "mode", flag_value="move", help="Move the files in (see below).")
@click.option("--dry-run", is_flag=True, help="Say what would be imported; write nothing.")
@GGUF_TYPE_OPTION
@click.option("--no-convert", is_flag=True, help="Plan no conversions (see `modelstore add --help`).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def import_(app: App, kind: str, path: Path | None, mode: str, dry_run: bool, gguf_type: str, no_convert: bool,
            as_json: bool) -> None:
    """Bring the models of a runtime's folder (or of PATH) into the store."""
    from modelstore.store.errors import Interrupted, NotFound, OutOfSpace
    from modelstore.store.ingest import ImportMode
    from modelstore.store.objects import free_text
    from modelstore.store.sources.runtimes import open_folder

    from modelstore.fusefs.mount import running_mounts

    folders = _folders(kind, path)
    ignore = [app.home, *(where for _, where in running_mounts())]  # a mount shows the store: not more models
    if dry_run:
        from modelstore.store.sources.runtimes.dryrun import DryRun, plan

        dry = DryRun()
        try:
            with app.store() as store:
                for root in folders:
                    plan(store, open_folder(kind, root, ignore), dry)
        except NotFound:  # no store yet: nothing is stored, and a dry run creates none
            for root in folders:
                plan(None, open_folder(kind, root, ignore), dry)
        _print_dry_run(dry, kind, mode, as_json)
        return

    from modelstore.store.sources.runtimes.importer import Importer

    with app.store(create=True) as store:
        importer = Importer(store, ImportMode(mode), app.progress, app.waiting)
        conversions, warnings, stopped = [], [], None
        try:
            try:
                for root in folders:
                    importer.run(open_folder(kind, root, ignore))
            except (KeyboardInterrupt, OutOfSpace) as exc:  # what was committed stays: say so
                done = [m.name for m in importer.report.models]  # committed, or in the store already
                if not done and not importer.report.removal.files:
                    raise
                committed = (f"{len(done)} model(s) imported ({', '.join(done[:3])}{', ...' if len(done) > 3 else ''})"
                             f", the rest not")
                stopped = (Interrupted(f"interrupted: {committed}; run the same import again to finish it")
                           if isinstance(exc, KeyboardInterrupt) else
                           OutOfSpace(f"no space left in the store ({free_text(store.home)}): "
                                      f"{committed}; free some space and run the same import again"))
            if stopped is None:
                names = _to_convert(store, importer.report, importer_kind(kind))
                conversions, warnings, stopped = plan_committed(app, store, names, gguf_type, no_convert)
        finally:
            app.close_bars()
    _print_report(importer.report, kind, mode, as_json, conversions, store.home)
    for warning in warnings:
        click.echo(printable(f"warning: {warning}"), err=True)
    if stopped is not None:
        raise stopped


def importer_kind(kind: str) -> str:
    """The source kind the importer records for models from a `--from` folder."""
    return {"path": "local", "llamacpp": "llamacpp"}.get(kind, kind)


def _to_convert(store: Any, report: Any, kind: str) -> list[str]:
    """Models this import stored or changed, and models imported from this kind of folder whose
    conversions were never planned (an earlier import stopped after committing them, and with
    --move their files are no longer in the folder to be found again): a re-run finishes them."""
    names = [m.name for m in report.models if m.status != "unchanged"]
    with store.catalog.read() as r:
        for model in r.models():
            if model.name not in names and model.source.kind == kind and r.conversions(model.name) is None:
                names.append(model.name)
    return names


def _folders(kind: str, path: Path | None) -> list[Path]:
    from modelstore.store.errors import NotFound, UsageError
    from modelstore.store.sources.locations import default_folders, folders_here

    if path is not None:
        path = path.expanduser()
        if not path.exists():
            raise NotFound(f"{path}: no such file or folder")
        if kind == "huggingface" and (path / "hub").is_dir() and not any(path.glob("models--*")):
            path = path / "hub"  # HF_HOME given for the cache inside it
        if kind != "path" and not path.is_dir():
            raise UsageError(f"{path} is not a folder")
        from modelstore.store.sources.runtimes import check_kind

        check_kind(kind, path)
        return [path]
    if kind == "path":
        raise UsageError("--from path needs the FOLDER to import: modelstore import --from path FOLDER")
    found, locked = folders_here(kind)
    if kind == "jan":  # the data folder holds llamacpp/models/
        found = [f.parent.parent if f.name == "models" and f.parent.name == "llamacpp" else f for f in found]
    if locked and found:
        for folder in locked:
            click.echo(printable(f"warning: skipped {folder}: this user may not read it"), err=True)
    if not found:
        looked = ", ".join(str(f) for f in default_folders(kind))
        if locked:
            raise NotFound(f"{kind}'s models folder {locked[0]} cannot be read by this user; import as a user "
                           f"who can, or give a folder: modelstore import --from {kind} PATH")
        raise NotFound(f"no {kind} models folder here (looked in {looked}); give its path: "
                       f"modelstore import --from {kind} PATH")
    return found


def mountpoint(home: Path) -> tuple[str, bool]:
    """Where the store at `home` is mounted (the first of its running mounts), else the default."""
    from modelstore.fusefs.mount import mounts_of

    mounts = mounts_of(home)
    return (str(mounts[0]), True) if mounts else ("/mnt/models", False)


def hint(kind: str, mnt: str) -> str:
    return {
        "ollama": f"point Ollama at the mount: OLLAMA_MODELS={mnt}/ollama OLLAMA_NOPRUNE=1",
        "lmstudio": f"point LM Studio at the mount: My Models → models folder = {mnt}/lmstudio",
        "huggingface": f"point Hugging Face clients at the mount: HF_HUB_CACHE={mnt}/huggingface HF_HUB_OFFLINE=1",
        "llamacpp": f"point llama.cpp at the mount: LLAMA_CACHE={mnt}/huggingface (-hf with --offline), "
                    f"or llama-server --models-dir {mnt}/llamacpp",
        "gpt4all": f"point GPT4All at the mount: Settings → Download path = {mnt}/llamacpp",
        "jan": f"point Jan at the mount: move <Jan data folder>/llamacpp/models aside, then "
               f"ln -s {mnt}/jan <Jan data folder>/llamacpp/models",
        "path": f"the models are under {mnt}/store/by-model (GGUF also under {mnt}/llamacpp)",
    }[kind]


def _hint_line(kind: str, home: Path) -> str:
    mnt, mounted = mountpoint(home)
    return hint(kind, mnt) + ("" if mounted else f" (after `modelstore mount {mnt}`)")


def _print_report(report: Any, kind: str, mode: str, as_json: bool, conversions: list[Any], home: Path) -> None:
    if as_json:
        emit_json({"from": kind, "mode": mode, "dry_run": False, **report.to_json(), "hint": _hint_line(kind, home),
                   "conversions": [c.to_json() for c in conversions]})
        return
    where = ", ".join(str(f) for f in report.folders)
    if not report.models:
        click.echo(f"no models imported from {where}")
    planned = {c.model: c for c in conversions}
    for m in report.models:
        note = "" if m.status == "unchanged" else f"  {human_bytes(m.stored_bytes)} new in the store"
        click.echo(f"  {m.status:<9} {m.name}  ({files(len(m.model.files))}, {human_bytes(m.logical_bytes)}){note}")
        if m.name in planned:
            report_conversions(planned[m.name])
    changed = [m for m in report.models if m.status != "unchanged"]
    if report.models and not changed:
        click.echo(f"All {len(report.models)} model(s) from {where} were in the store already: nothing written.")
    elif changed:
        logical = sum(m.logical_bytes for m in changed)
        stored = sum(m.stored_bytes for m in changed)
        already = len(report.models) - len(changed)
        click.echo(f"Imported {len(changed)} model(s) from {where} ({human_bytes(logical)})"
                   + (f", {already} were there already" if already else "")
                   + f": the store grew by {human_bytes(stored)}; it held the rest.")
    removal = report.removal
    if mode == "move" and removal.files:
        kept = removal.bytes - removal.freed
        click.echo(f"Removed {files(removal.files)}, {human_bytes(removal.bytes)}, from the folder: "
                   f"{human_bytes(removal.freed)} of disk freed"
                   + (" (the rest now lives in the store)." if kept else "."))
    elif mode == "move":
        click.echo("Nothing was removed from the folder.")
    for skipped in report.skipped + removal.problems:
        click.echo(printable(f"warning: skipped {skipped}"), err=True)
    if report.models:
        line = _hint_line(kind, home)
        click.echo(line[:1].upper() + line[1:])


def _print_dry_run(dry: Any, kind: str, mode: str, as_json: bool) -> None:
    if as_json:
        emit_json({"from": kind, "mode": mode, **dry.to_json()})
        return
    where = ", ".join(dry.folders)
    if not dry.models:
        click.echo(f"no models to import in {where}")
    for m in dry.models:
        state = {"new": "new", "unchanged": "in the store already, unchanged"}.get(
            m.status, "in the store already: its files are checked, new ones added")
        click.echo(f"  would import {m.name}  ({files(m.files)}, {human_bytes(m.logical_bytes)}; {state})")
    if dry.models:
        click.echo(f"{len(dry.models)} model(s), {human_bytes(dry.total('logical_bytes'))} from {where}:")
        click.echo(f"  {human_bytes(dry.total('stored_bytes'))} the store holds already, "
                   f"{human_bytes(dry.total('shared_bytes'))} shared between these models (stored once), "
                   f"{human_bytes(dry.total('new_bytes'))} in files new to the store")
        click.echo("  (whole files, known by the hashes runtimes name them by: tensors they share with each other "
                   "or with stored models are stored once; `modelstore scan PATH` measures that)")
        if dry.total("unhashed_bytes"):
            click.echo(f"  {human_bytes(dry.total('unhashed_bytes'))} in files no runtime names by hash: hashed while "
                       f"importing, and only what the store does not hold (down to single tensors) is stored")
        if mode == "move":
            click.echo("  --move would then remove the originals of each model once it is stored")
    for skipped in dry.skipped:
        click.echo(printable(f"warning: would skip {skipped}"), err=True)
    click.echo("dry run: nothing was written")
