"""`lmstudio/`: LM Studio's models folder, <publisher>/<model>/<file>.gguf, with each model's
mmproj beside it. Hub models keep org/repo; local models appear under local/<name>. A model
imported from LM Studio is put back where it was, every file at its place in
<publisher>/<model>/; those are placed first, so no other model takes their folder."""

from __future__ import annotations

from pathlib import PurePosixPath

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir
from modelstore.fusefs.views.common import (
    ViewOptions,
    gguf_units,
    plain_names_first,
    projector_name,
    safe_part,
    stored_files,
    stored_node,
    unique,
)
from modelstore.store.records import ModelRecord
from modelstore.store.sources.runtimes.identity import lmstudio_place


def _render_imported(model: ModelRecord, snapshot: Snapshot, options: ViewOptions, root: Dir, taken: set[str]) -> bool:
    place = lmstudio_place(model)
    if place is None:
        return False
    publisher, name = place
    folder_path = unique(f"{publisher}/{name}", taken)
    folder = root.dir(publisher).dir(folder_path.split("/", 1)[1])
    for path, b3 in stored_files(model, snapshot).items():  # "a" a file and "a/b" another: the first stays
        folder.add(path, stored_node(snapshot, b3, model, options))
    return True


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    taken: set[str] = set()
    generated = [m for m in snapshot.models if not _render_imported(m, snapshot, options, root, taken)]
    for model in plain_names_first(generated):
        units = gguf_units(model, snapshot)
        if not units:
            continue
        if model.source.kind == "huggingface" and "/" in model.source.location:
            publisher, name = model.source.location.split("/", 1)
        else:
            publisher, name = "local", model.name.replace("/", "--").replace(":", "-")
        folder_path = unique(f"{safe_part(publisher)}/{safe_part(name, limit=120)}", taken)
        folder = root.dir(folder_path.split("/")[0]).dir(folder_path.split("/", 1)[1])
        names: set[str] = set()
        placed: set[str] = set()  # a projector goes with every quant beside it, but is one file
        for unit in units:
            for path in unit.files + ([unit.mmproj] if unit.mmproj else []):
                if path in placed:
                    continue
                placed.add(path)
                base = unique(projector_name(path) if path == unit.mmproj else PurePosixPath(path).name, names)
                folder.children[base] = stored_node(snapshot, model.files[path], model, options)
    return root
