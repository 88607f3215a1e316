"""`modelstore scan` (being built)"""

from __future__ import annotations

import click

from modelstore.cli.app import App, pass_app


@click.command(epilog="\b\nExample:\n  modelstore scan")
@pass_app
def scan(app: App) -> None:
    """How much the store would save on the model folders you already have."""
    raise click.UsageError("scan is not built yet")
