"""`modelstore ls`, `show` and `du`: reading the catalog."""

from __future__ import annotations

import datetime as dt

import click

from modelstore.cli.app import App, emit_json, human_bytes, human_count, pass_app, print_table, printable


@click.command(epilog="\b\nExamples:\n  modelstore ls\n  modelstore ls --json | jq '.[].name'")
@click.option("--json", "as_json", is_flag=True, help="Print the models as a JSON list.")
@pass_app
def ls(app: App, as_json: bool) -> None:
    """List the models in the store."""
    with app.store() as store:
        models = store.models()
        sizes = {m.name: sum(store.file(b3).size for b3 in m.files.values()) for m in models}
    if as_json:
        emit_json([{**m.to_json(), "size": sizes[m.name]} for m in models])
        return
    if not models:
        click.echo("no models yet: `modelstore add PATH|ORG/NAME`")
        return
    rows = []
    for m in models:
        md = m.metadata
        rows.append([m.name, md.get("format", "-") or "-", str(md.get("architecture", "-")),
                     human_count(md.get("parameter_count")), str(md.get("quantization", "-")),
                     human_bytes(sizes[m.name]), _source(m)])
    print_table(["NAME", "FORMAT", "ARCH", "PARAMS", "QUANT", "SIZE", "SOURCE"], rows, right={3, 5})


def _source(model: object) -> str:
    src = model.source  # type: ignore[attr-defined]
    if src.kind == "huggingface":
        return f"hf:{src.location}@{(src.revision or '')[:8]}"
    return src.location


@click.command(epilog="\b\nExample:\n  modelstore show llama3.2:1b-q4 --json")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the model record and its files as JSON.")
@pass_app
def show(app: App, name: str, as_json: bool) -> None:
    """Show one model: where it came from, its metadata and its files."""
    from modelstore.fusefs.renditions import renditions
    from modelstore.fusefs.snapshot import take_snapshot

    with app.store() as store:
        model = store.model(name)
        files = {rel: store.file(b3) for rel, b3 in model.files.items()}
        views = renditions(take_snapshot(store.catalog, str(store.objects.root)), model)
    if as_json:
        emit_json({**model.to_json(), "files": {rel: {"b3": f.b3, "size": f.size, "sha256": f.sha256,
                                                      "git_sha1": f.git_sha1, "extents": len(f.recipe)}
                                                for rel, f in files.items()},
                   "views": [v.to_json() for v in views]})
        return
    src = model.source
    click.echo(f"{model.name}")  # metadata, sources and paths come from the files: shown escaped
    click.echo(printable(f"  {'source:':<20}{src.kind} {src.location}" + (f" @ {src.revision}" if src.revision else "")))
    click.echo(f"  {'added:':<20}{dt.datetime.fromtimestamp(model.added_at).isoformat(timespec='seconds')}")
    for key, value in model.metadata.items():
        if key == "parameter_count":
            value = f"{value} ({human_count(value)})"
        click.echo(f"  {printable(key) + ':':<20}{printable(str(value))}")
    rows = [[printable(rel), human_bytes(f.size), f.sha256[:16], str(len(f.recipe))] for rel, f in sorted(files.items())]
    print_table(["FILE", "SIZE", "SHA256", "EXTENTS"], rows, right={1, 3})
    click.echo("")
    click.echo("In the mount (paths under the mount point):")
    for v in views:
        shown = ", ".join(v.paths[:3]) + (f" (+{len(v.paths) - 3} more)" if len(v.paths) > 3 else "")
        click.echo(f"  {v.view + ':':<13}{printable(shown) if v.present else 'absent: ' + printable(str(v.reason))}")
        if v.converted:
            click.echo(f"  {'':<13}converted: {printable(v.converted)}")


@click.command(epilog="\b\nExamples:\n  modelstore du\n  modelstore du --json | jq .saved_bytes")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (bytes, not rounded).")
@pass_app
def du(app: App, as_json: bool) -> None:
    """Disk use: logical bytes, stored bytes, what dedup saves; per model the bytes only it holds.

    \b
    saved = logical - (stored - conversion): the conversions' own blobs (converted headers and
      small files) are stored but have no logical counterpart, so they are shown apart, not
      taken off the saving. saved is negative when stored blobs hold bytes no model reads: in
      blobs gc frees, or inside blobs another model still reads (a removed model's tensors).
    reclaimable = what `modelstore gc` frees now (`gc --dry-run` says the same): blobs no model
      or conversion reads, files in objects/ the catalog does not name, and staging left by
      stopped processes. While an add runs, files it has not committed yet are not counted
      (add_running in --json)."""
    from modelstore.store.usage import compute_usage

    with app.store() as store:
        usage = compute_usage(store)
    if as_json:
        emit_json(usage.to_json())
        return
    rows = [[m.name, str(m.files), human_bytes(m.logical_bytes), human_bytes(m.unique_bytes)] for m in usage.models]
    print_table(["MODEL", "FILES", "LOGICAL", "UNIQUE"], rows, right={1, 2, 3})
    click.echo("")
    click.echo(f"logical {human_bytes(usage.logical_bytes)}, stored {human_bytes(usage.stored_bytes)}, "
               f"saved {human_bytes(usage.saved_bytes)} ({usage.ratio:.2f}x)")
    if usage.conversion_bytes or usage.derived_cache_bytes:
        click.echo(f"conversions: {human_bytes(usage.conversion_bytes)} of planned headers and files (in stored, "
                   f"not in saved); {human_bytes(usage.derived_cache_bytes)} of converted tensors cached in "
                   f"<home>/derived (not in stored; safe to delete)")
    in_dead_blobs = usage.reclaimable_bytes - usage.outside_catalog_bytes
    kept = max(usage.unreferenced_bytes - in_dead_blobs, 0)
    if usage.unreferenced_bytes:
        click.echo(f"{human_bytes(usage.unreferenced_bytes)} is referenced by no model"
                   + (f"; {human_bytes(kept)} of it lies inside blobs other models still read, and stays" if kept else ""))
    if usage.reclaimable_bytes:
        click.echo(f"`modelstore gc` frees {human_bytes(usage.reclaimable_bytes)}"
                   + (f" (of which {human_bytes(usage.outside_catalog_bytes)} outside the catalog: orphan objects, "
                      f"stale staging)" if usage.outside_catalog_bytes else ""))
    if usage.add_running:
        click.echo("an add is running: objects it has not committed yet are not counted")
    click.echo("UNIQUE: stored bytes no other model shares (what `rm` then `gc` gives back, but for the parts of "
               "blobs another model still reads)")
