"""`llamacpp/`: a `llama-server --models-dir` folder, also fine for KoboldCpp and plain -m paths.

<name>.gguf           a single-file model
<name>/               a split GGUF (shard names kept, llama.cpp finds siblings by name) or a
                      model with its mmproj
"""

from __future__ import annotations

from pathlib import PurePosixPath

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir
from modelstore.fusefs.views.common import (
    ViewOptions,
    gguf_units,
    mtime_ns,
    plain_names_first,
    projector_name,
    safe_part,
    stored_node,
    unique,
)


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    taken: set[str] = set()
    for model in plain_names_first(snapshot.models):
        units = gguf_units(model, snapshot)
        base = safe_part(model.name.replace("/", "--").replace(":", "-"), limit=120)
        mtime = mtime_ns(model)
        for unit in units:
            name = base if len(units) == 1 else f"{base}-{unit.quant or PurePosixPath(unit.files[0]).stem}"
            name = unique(name, taken)  # llama-server names a file by its stem and a folder by its name: one namespace
            if not unit.split and not unit.mmproj:
                root.children[f"{name}.gguf"] = stored_node(snapshot, model.files[unit.files[0]], model, options)
                continue
            folder = root.dir(name, mtime)
            for path in unit.files:
                folder.children[PurePosixPath(path).name] = stored_node(snapshot, model.files[path], model, options)
            if unit.mmproj:
                folder.children[projector_name(unit.mmproj)] = stored_node(snapshot, model.files[unit.mmproj], model,
                                                                           options)
    return root
