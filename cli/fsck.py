"""`modelstore fsck`"""

from __future__ import annotations

from typing import Any

import click

from modelstore.cli.app import App, emit_json, pass_app


@click.command(epilog="\b\nExamples:\n  modelstore fsck\n  modelstore fsck --deep --json\n"
                      "  modelstore fsck --conversions   # after upgrading numpy or gguf")
@click.option("--deep", is_flag=True, help="Also re-hash every blob, file and tensor extent (reads everything).")
@click.option("--conversions", is_flag=True,
              help="Also convert every planned file again and check it still gives the bytes planned "
                   "(implies --deep: the source bytes are checked first, so a damaged blob is not "
                   "taken for a changed converter).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def fsck(app: App, deep: bool, conversions: bool, as_json: bool) -> None:
    """Check that the catalog and the blobs agree. Exit status 1 when a problem is found.

    Holds the store lock shared, as an add does: a gc started meanwhile waits for fsck to end."""
    from modelstore.store.fsck import fsck as run_fsck

    deep = deep or conversions
    with app.store() as store:
        with store.catalog.read() as r:
            total = sum(size for _, size in r.blobs()) if deep else 0
        tick = app.progress(total, "store") if deep else None
        try:
            report = run_fsck(store, deep=deep, progress=tick, on_wait=app.waiting,
                              then=(lambda: _conversion_problems(store, app)) if conversions else None)
        finally:
            app.close_bars()
    if as_json:
        emit_json(report.to_json())
    else:
        checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.checked.items())
        for p in report.problems:
            click.echo(f"PROBLEM: {p}")
        for n in report.notes:
            click.echo(f"note: {n}")
        click.echo(("clean" if report.clean else f"{len(report.problems)} problem(s)") + f" ({checked})")
    if not report.clean:
        raise click.exceptions.Exit(1)


def _conversion_problems(store: Any, app: App) -> list[str]:
    from modelstore.converters.planner import verify_conversions

    return verify_conversions(store, app.progress)
