"""`modelstore rm`"""

from __future__ import annotations

import click

from modelstore.cli.app import App, emit_json, human_bytes, pass_app


@click.command(epilog="\b\nExamples:\n  modelstore rm llama3.2:1b-q4\n  modelstore rm a b c && modelstore gc")
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@pass_app
def rm(app: App, names: tuple[str, ...], as_json: bool) -> None:
    """Remove models by name. Every name must exist, else nothing is removed; a name given twice
    counts once. Their bytes stay until `modelstore gc`; bytes another model also reads stay until
    that one is removed too.

    The figure `gc` would free is what `gc --dry-run` says now. While an add runs (add_running in
    --json), files in objects/ it has not committed yet are not counted, and the add may still reuse
    some of the bytes counted."""
    from modelstore.store.errors import StoreCorrupt
    from modelstore.store.gc import plan_gc

    with app.store() as store:
        removed = [m.name for m in store.remove_models(list(names))]  # all or nothing, in one transaction
        try:
            plan = plan_gc(store)
        except StoreCorrupt as exc:  # the models are removed all the same; gc will refuse until fsck
            plan, damage = None, str(exc)
    if as_json:
        emit_json({"removed": removed, "gc_would_free_bytes": plan.bytes_freed if plan else None,
                   "add_running": plan.add_running if plan else None})
        return
    for name in removed:
        click.echo(f"removed {name}")
    if plan is None:
        click.echo(f"warning: what `modelstore gc` would free is unknown: {damage}", err=True)
        return
    click.echo(f"`modelstore gc` would free {human_bytes(plan.bytes_freed)}"
               + (" (an add is running: its objects, not committed yet, are not counted, and it may still reuse "
                  "some of these bytes)" if plan.add_running else ""))
