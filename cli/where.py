"""The "where each runtime keeps its models" table of the scan and import --help texts."""

from __future__ import annotations

import textwrap

from modelstore.store.sources.locations import RUNTIMES, WHERE


def where_table(title: str) -> str:
    """A click paragraph (\\b: kept as written) naming each runtime's folders, in lookup order."""
    lines = ["\b", title]
    for runtime in RUNTIMES:
        lines += textwrap.wrap(WHERE[runtime], width=98, initial_indent=f"  {runtime:<13}",
                               subsequent_indent=" " * 15, break_on_hyphens=False)
    return "\n".join(lines) + "\n"
