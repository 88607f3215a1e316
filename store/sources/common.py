"""What every source shares: skipping partial downloads, naming, and committing a model."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from modelstore.store.ingest import Ingest
from modelstore.store.records import Source
from modelstore.store.store import AddResult, Store

# Names runtimes and downloaders give files that are not finished yet.
PARTIAL_PATTERNS = ("*.incomplete", "*.part", "*.partial", "*-partial", "*.tmp", "*.downloadInProgress",
                    "*.etag", "incomplete-*", "*.lock")


def is_partial(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in PARTIAL_PATTERNS)


def default_name(text: str) -> str:
    """A valid model name from a file or folder name: other characters become '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._:@+/-]+", "-", text).strip("-./") or "model"
    return cleaned if re.match(r"[A-Za-z0-9_]", cleaned) else "m" + cleaned


def finish(store: Store, ingest: Ingest, name: str, source: Source, files: dict[str, str],
           readable: dict[str, Path], logical: int, novel: int, reused: int,
           downloaded: int = 0, skipped: list[str] | None = None) -> AddResult:
    try:
        current = store.model(name)
    except Exception:
        current = None
    if current is not None and current.files == files and current.source == source:
        for path in ingest.sources_to_remove:  # --move of what the store already holds
            path.unlink(missing_ok=True)
        return AddResult(current, logical, 0, reused, downloaded, None, True, skipped or [])
    model, replaced = store.commit_model(ingest, name, source, files, readable)
    return AddResult(model, logical, novel, reused, downloaded, replaced, False, skipped or [])
