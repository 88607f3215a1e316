"""`modelstore add`"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from modelstore.cli.app import App, emit_json, files, human_bytes, pass_app, printable
from modelstore.cli.convert import GGUF_TYPE_OPTION, plan_committed, report

if TYPE_CHECKING:  # the store's modules load lmdb and gguf: only inside the command
    from modelstore.converters.planner import ConversionResult
    from modelstore.store import AddResult

EPILOG = """\b
Examples:
  modelstore add ./Llama-3.2-1B-Instruct-Q4_K_M.gguf --name llama3.2:1b-q4
  modelstore add ./my-finetune/                     # a folder: config.json + *.safetensors
  modelstore add Qwen/Qwen2.5-0.5B-Instruct         # a Hugging Face repo, revision main
  modelstore add bartowski/Qwen2.5-0.5B-Instruct-GGUF --include '*Q8_0*' --revision v1.0

\b
Import modes for local files (the Hub always downloads into the store):
  --copy     copy the bytes in (default); the original stays yours to edit or delete
  --reflink  clone the file where the filesystem can (btrfs, XFS): no extra disk; else copy
  --link     hard-link the file into the store: no copy and no extra disk, but the store then
             shares the original's bytes: editing the original in place would change a blob
             the store believes immutable (fsck --deep would report it). Only when you will
             not touch the original; same filesystem only.
  --move     take the file: it is removed from its folder once the store holds it
             (renamed on the same filesystem, copied otherwise)

Conversions: a safetensors model also shows up as a GGUF (--gguf-type, default F16) in the
Ollama, LM Studio and llama.cpp views, a GGUF model as a safetensors repo in the Hugging Face
view, a split GGUF as one file for Ollama. `add` plans them from the headers and hashes each
converted file once; tensors are converted when first read. --no-convert skips this.

Only bytes the store does not hold yet are written: a file stored before costs nothing, and a
GGUF or safetensors file whose tensors are stored already costs its header and its new tensors.
"""


@click.command(epilog=EPILOG)
@click.argument("source")
@click.option("--name", help="Model name [default: the file or folder name, or the repo id].")
@click.option("--revision", help="Hub branch, tag or commit [default: main].")
@click.option("--include", multiple=True, metavar="GLOB", help="Hub: only files matching GLOB (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Hub: skip files matching GLOB (repeatable).")
@click.option("--copy", "mode", flag_value="copy", default=True, help="Copy local files in (default).")
@click.option("--reflink", "mode", flag_value="reflink", help="Clone local files where the filesystem can.")
@click.option("--link", "mode", flag_value="link", help="Hard-link local files in (see below).")
@click.option("--move", "mode", flag_value="move", help="Move local files in.")
@GGUF_TYPE_OPTION
@click.option("--no-convert", is_flag=True,
              help="Plan no conversions: the model then shows only in views that read its own format.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def add(app: App, source: str, name: str | None, revision: str | None, include: tuple[str, ...],
        exclude: tuple[str, ...], mode: str, gguf_type: str, no_convert: bool, as_json: bool) -> None:
    """Add a model from a local GGUF/safetensors file, an HF-format folder, or a Hub repo."""
    from modelstore.store.errors import NotFound, UsageError
    from modelstore.store.ingest import ImportMode
    from modelstore.store.names import looks_like_repo_id
    from modelstore.store.sources.huggingface import add_from_hub
    from modelstore.store.sources.local import add_local

    path = Path(source).expanduser()
    with app.store(create=True) as store:
        try:
            if path.exists():
                if revision or include or exclude:
                    raise UsageError("--revision, --include and --exclude are for Hub repos, not local paths")
                result = add_local(store, path, name=name, mode=ImportMode(mode), progress=app.progress,
                                   on_wait=app.waiting)
            elif looks_like_repo_id(source) and path.suffix.lower() not in (".gguf", ".safetensors"):
                if mode != "copy":
                    raise UsageError("--reflink, --link and --move are for local files; Hub files are "
                                     "downloaded straight into the store")
                if not app.debug:  # its retries are not errors, and an error is one line of ours
                    from huggingface_hub.utils import logging as hf_logging

                    hf_logging.set_verbosity_error()
                result = add_from_hub(store, source, name=name, revision=revision, include=include,
                                      exclude=exclude, progress=app.progress, on_wait=app.waiting)
            else:  # a repo id never ends in .gguf: a file name that does is a missing file
                raise NotFound(f"{source}: no such file or folder" + (
                    "" if looks_like_repo_id(source) else ", and not a Hugging Face repo id (org/name)"))
            planned, warnings, stopped = plan_committed(app, store, [result.model.name], gguf_type, no_convert)
            conversions = planned[0] if planned else None
        finally:
            app.close_bars()
    _print_added(result, conversions, as_json)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if stopped is not None:
        raise stopped


def _print_added(result: AddResult, conversions: ConversionResult | None, as_json: bool) -> None:
    if as_json:
        emit_json({**result.to_json(), "conversions": conversions.to_json() if conversions else None})
        return
    model = result.model
    if result.unchanged:
        fetched = (f"{human_bytes(result.downloaded_bytes)} downloaded to compare (a file the Hub names by a "
                   f"hash the store does not index), nothing written") if result.downloaded_bytes else \
            "nothing downloaded or written"
        click.echo(f"{model.name} is up to date ({files(len(model.files))}, {human_bytes(result.logical_bytes)}); "
                   f"{fetched}")
        if conversions is not None:
            report(conversions)
        return
    verb = "Replaced" if result.replaced else "Added"
    where = f" @ {model.source.revision[:12]}" if model.source.revision else ""
    click.echo(f"{verb} {model.name}{where}: {files(len(model.files))}, {human_bytes(result.logical_bytes)}")
    saved = result.logical_bytes - result.novel_bytes
    click.echo(f"  stored {human_bytes(result.novel_bytes)} new; {human_bytes(saved)} was already in the store"
               + (f"; downloaded {human_bytes(result.downloaded_bytes)}" if result.downloaded_bytes else ""))
    for note in result.skipped:
        click.echo(printable(f"  skipped {note}"), err=True)
    if conversions is not None:
        report(conversions)
