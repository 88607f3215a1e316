"""`llamacpp/`: a `llama-server --models-dir` folder, also fine for KoboldCpp and plain -m paths.

<name>.gguf           a single-file model
<name>/               a split GGUF (shard names kept, llama.cpp finds siblings by name) or a
                      model with its mmproj
"""

from __future__ import annotations

from pathlib import PurePosixPath

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir
from modelstore.fusefs.views.common import ViewOptions, mtime_ns, named_gguf_units, projector_name, stored_node


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    for model, name, unit in named_gguf_units(snapshot):
        if not unit.split and not unit.mmproj:
            root.children[f"{name}.gguf"] = stored_node(snapshot, model.files[unit.files[0]], model, options)
            continue
        folder = root.dir(name, mtime_ns(model))
        for path in unit.files:
            folder.children[PurePosixPath(path).name] = stored_node(snapshot, model.files[path], model, options)
        if unit.mmproj:
            folder.children[projector_name(unit.mmproj)] = stored_node(snapshot, model.files[unit.mmproj], model,
                                                                       options)
    return root
