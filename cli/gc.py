"""`modelstore gc`"""

from __future__ import annotations

import click

from modelstore.cli.app import App, emit_json, human_bytes, pass_app


@click.command(epilog="\b\nExamples:\n  modelstore gc --dry-run\n  modelstore gc\n  modelstore gc --derived   "
                      "# also empty the cache of converted tensors")
@click.option("--dry-run", is_flag=True, help="Only say what would be freed.")
@click.option("--derived", is_flag=True,
              help="Also empty the derived cache (converted tensors; remade on the next read).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and result as JSON.")
@pass_app
def gc(app: App, dry_run: bool, derived: bool, as_json: bool) -> None:
    """Delete blobs no model references any more (after `rm`, or left by an add that was interrupted or refused a file).

    Waits for running adds (and fsck) to finish first, so nothing an add is about to commit is removed.
    What is live is read from the model and conversion records themselves; when a model names a file
    record the catalog lacks, gc removes nothing and says to run `modelstore fsck`. `bytes_freed` counts
    removed blobs, orphan objects and the staging folders of stopped processes: with --dry-run what
    would be removed, else what was (a file already gone frees nothing)."""
    from modelstore.store.gc import run_gc

    from modelstore.store.derived import DerivedCache

    with app.store() as store:
        result = run_gc(store, dry_run=dry_run, on_wait=app.waiting)
        cache = DerivedCache(store.home / "derived", 0)
        derived_bytes = cache.used_bytes() if derived else 0
        if derived and not dry_run:
            cache.clear()
    plan = result.plan
    freed = plan.bytes_freed if dry_run else result.bytes_freed
    if as_json:
        emit_json({**plan.to_json(), "bytes_freed": freed, "dry_run": dry_run, "removed_blobs": len(result.removed_blobs),
                   "derived_cache_bytes_freed": derived_bytes})
        return
    if derived:
        click.echo(f"{'would free' if dry_run else 'freed'} {human_bytes(derived_bytes)} of converted tensors "
                   f"from the derived cache")
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {human_bytes(freed)}: {len(plan.blobs)} blob(s), "
               f"{len(plan.orphans)} orphan object(s), {len(plan.files)} unreferenced file record(s)"
               + (f", {plan.stale_staging} stale staging folder(s)" if plan.stale_staging else ""))
