"""`store/`: the store as ordinary files for people and scripts, by-model/<name>/<its files>."""

from __future__ import annotations

from collections.abc import Collection

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir
from modelstore.fusefs.views.common import ViewOptions, mtime_ns, stored_files, stored_node


def folder_of(name: str, names: Collection[str], taken: set[str] | None = None) -> str:
    """Where model `name` is shown under by-model/. Models "x" and "x/b": one folder inside the
    other would mix their files (or hide x's file b), so the inner one is shown flat, as "x--b".
    `taken`: the flat folders given so far, which a later one must not land on either."""
    taken = set() if taken is None else taken
    if "/" in name and any(name.startswith(other + "/") for other in names if other != name):
        flat, n = name.replace("/", "--"), 2
        while flat in names or flat in taken:  # a model really named x--b keeps its folder
            flat = f"{name.replace('/', '--')}-{n}"
            n += 1
        taken.add(flat)
        return flat
    return name


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    by_model = root.dir("by-model")
    names = {model.name for model in snapshot.models}
    flat: set[str] = set()
    for model in sorted(snapshot.models, key=lambda m: m.name):
        folder = Dir(mtime_ns=mtime_ns(model))
        for path, b3 in stored_files(model, snapshot).items():
            folder.add(path, stored_node(snapshot, b3, model, options))
        by_model.add(folder_of(model.name, names, flat), folder)
    return root
