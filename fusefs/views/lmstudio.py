"""`lmstudio/`: LM Studio's models folder, <publisher>/<model>/<file>.gguf, with each model's
mmproj beside it. Hub models keep org/repo; local models appear under local/<name>."""

from __future__ import annotations

from pathlib import PurePosixPath

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir
from modelstore.fusefs.views.common import ViewOptions, gguf_units, mtime_ns, safe_part, stored_node, unique


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    taken: set[str] = set()
    for model in snapshot.models:
        units = gguf_units(model, snapshot)
        if not units:
            continue
        if model.source.kind == "huggingface":
            publisher, name = model.source.location.split("/", 1)
        else:
            publisher, name = "local", model.name.replace("/", "--").replace(":", "-")
        folder_path = unique(f"{safe_part(publisher)}/{safe_part(name, limit=120)}", taken)
        folder = root.dir(folder_path.split("/")[0]).dir(folder_path.split("/", 1)[1])
        mtime = mtime_ns(model)
        names: set[str] = set()
        for unit in units:
            for path in unit.files + ([unit.mmproj] if unit.mmproj else []):
                base = unique(PurePosixPath(path).name, names)
                folder.children[base] = stored_node(snapshot, model.files[path], mtime, options)
    return root
