"""What every source shares: walking a user's folder, skipping partial downloads, naming, and
committing a model."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from modelstore.store.ingest import ImportMode, Ingest
from modelstore.store.errors import NotFound
from modelstore.store.records import ModelRecord, Source
from modelstore.store.store import AddResult, Store

# Names runtimes and downloaders give files that are not finished yet.
PARTIAL_PATTERNS = ("*.incomplete", "*.part", "*.partial", "*-partial", "*sha256:*", "*.tmp",
                    "*.downloadInProgress", "*.etag", "incomplete-*", "*.lock")
_OLLAMA_PART = re.compile(r".*-partial-\d+")  # sha256-<hex>-partial-<n>: one of Ollama's download parts


LINK_TO_FOLDER = "a link to a folder, not followed: add or import its target by its own path"


def walk_tree(root: Path, leave_out: Iterable[Path], note: Callable[[Path, str], None],
                left_out_because: str | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk of a user's folder as `add`, `import` and `scan` all read one, in name order:
    hidden entries and the folders in `leave_out` (the store's home, its mounts) left out, links
    to folders not followed. Those links and folders it may not read go to `note` with the reason,
    and so do the left-out folders if `left_out_because` says why. Callers may prune `dirnames`."""
    left_out = {os.path.realpath(p) for p in leave_out}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False,
                                                onerror=lambda e: note(Path(e.filename), f"not readable: {e.strerror}")):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if os.path.realpath(here / d) in left_out:
                if left_out_because:
                    note(here / d, left_out_because)
            elif (here / d).is_symlink():
                note(here / d, LINK_TO_FOLDER)
            else:
                kept.append(d)
        dirnames[:] = kept
        yield here, dirnames, sorted(f for f in filenames if not f.startswith("."))


def is_partial(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in PARTIAL_PATTERNS) or _OLLAMA_PART.fullmatch(name) is not None


def default_name(text: str) -> str:
    """A valid model name from a file or folder name: other characters become '-', and a name
    longer than a model name may be is cut (a suffix such as @lmstudio-2 must still fit)."""
    cleaned = re.sub(r"[^A-Za-z0-9._:@+/-]+", "-", text).strip("-./")
    if not cleaned:  # nothing ASCII in it (a Japanese file name): a name of its own all the same
        cleaned = "model-" + hashlib.sha1(text.encode(errors="surrogateescape")).hexdigest()[:8]
    cleaned = cleaned if re.match(r"[A-Za-z0-9_]", cleaned) else "m" + cleaned
    return cleaned[:160].rstrip("-./")


def read_small(path: Path, limit: int) -> bytes:
    """A runtime's small metadata file (a manifest, a model.yml), whole: ValueError if it is not a
    regular file (a FIFO would block, /dev/zero never end) or is over `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = os.read(fd, limit + 1)
        while len(data) <= limit and (more := os.read(fd, limit + 1 - len(data))):
            data += more
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def finish(store: Store, ingest: Ingest, name: str, source: Source, files: dict[str, str],
           readable: dict[str, Path], logical: int, novel: int, reused: int,
           downloaded: int = 0, skipped: list[str] | None = None,
           extra_metadata: dict[str, Any] | None = None) -> AddResult:
    try:
        current: ModelRecord | None = store.model(name)
    except NotFound:
        current = None
    extra = extra_metadata or {}
    finishing_a_move = (ingest.mode is ImportMode.MOVE and source.kind == "local" and current is not None
                        and current.source == source and files.items() <= current.files.items())
    if finishing_a_move or (current is not None and current.files == files and current.source == source
                            and all(current.metadata.get(k) == v for k, v in extra.items())):
        # An unchanged model; or a --move that was interrupted after its commit, while it was
        # removing the originals: the files still there are the rest of the stored model, and
        # replacing the model with them alone would let gc delete the ones already moved.
        assert current is not None
        for path in ingest.sources_to_remove:  # --move of what the store already holds
            path.unlink(missing_ok=True)
        return AddResult(current, logical, 0, reused, downloaded, None, True, skipped or [])
    model, replaced = store.commit_model(ingest, name, source, files, readable, extra)
    return AddResult(model, logical, novel, reused, downloaded, replaced, False, skipped or [])
