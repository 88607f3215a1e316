"""`store/`: the store as ordinary files for people and scripts, by-model/<name>/<its files>."""

from __future__ import annotations

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir
from modelstore.fusefs.views.common import ViewOptions, mtime_ns, stored_files, stored_node


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    by_model = root.dir("by-model")
    for model in snapshot.models:
        folder = Dir(mtime_ns=mtime_ns(model))
        for path, b3 in stored_files(model, snapshot).items():
            folder.add(path, stored_node(snapshot, b3, mtime_ns(model), options))
        try:
            by_model.add(model.name, folder)
        except ValueError:  # "a" is a file of one model and a folder of another ("a/b")
            by_model.children[model.name.replace("/", "--")] = folder
    return root
