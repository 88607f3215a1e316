"""`modelstore import` (being built)"""

from __future__ import annotations

import click

from modelstore.cli.app import App, pass_app


@click.command("import", epilog="\b\nExample:\n  modelstore import --from ollama")
@pass_app
def import_(app: App) -> None:
    """Bring the models of a runtime's folder into the store."""
    raise click.UsageError("import is not built yet")
