"""`llamacpp/`: a `llama-server --models-dir` folder, also fine for KoboldCpp and plain -m paths.

<name>.gguf           a single-file model
<name>/               a split GGUF (shard names kept, llama.cpp finds siblings by name) or a
                      model with its mmproj
"""

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
        base = safe_part(model.name.replace("/", "--").replace(":", "-"), limit=120)
        mtime = mtime_ns(model)
        for unit in units:
            name = base if len(units) == 1 else f"{base}-{unit.quant or PurePosixPath(unit.files[0]).stem}"
            if not unit.split and not unit.mmproj:
                entry = unique(f"{name}.gguf", taken)
                root.children[entry] = stored_node(snapshot, model.files[unit.files[0]], mtime, options)
                continue
            folder = root.dir(unique(name, taken), mtime)
            for path in unit.files + ([unit.mmproj] if unit.mmproj else []):
                folder.children[PurePosixPath(path).name] = stored_node(snapshot, model.files[path], mtime, options)
    return root
