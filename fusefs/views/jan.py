"""`jan/`: the contents of Jan's `<data>/llamacpp/models` folder (Jan 0.6+, its llama.cpp provider),
for the user to link in its place: `ln -s /mnt/models/jan <data>/llamacpp/models`.

<id>/model.yml                 what Jan lists and loads
<id>/<file>.gguf               the model: one file, or a split GGUF's shards under their own names
<id>/mmproj-<file>.gguf        its projector, if it has one

<id> is the name the llamacpp/ view gives the same GGUF (common.named_gguf_units): letters,
digits and ._- only, so it passes Jan's own id check (import() isValidModelId,
`^[a-zA-Z0-9/_\\-\\.]+$`, no "." or ".." part). A model imported from Jan keeps the id it had
there (its source location), '/' and all, so Jan's threads that name it still find it; those are
placed first. No id is the folder of another: list() stops at the first folder holding a
model.yml, so a model x/b inside model x would never be seen.

What Jan does with this folder (janhq/jan extensions/llamacpp-extension/src/index.ts; the Tauri
commands in src-tauri/src/core/filesystem/commands.rs; see shared/provider-layouts.md §6):
- list(): mkdir of models/ only if missing (the link exists); migrateLegacyModels() once, which
  writes model.yml only for Cortex models under <data>/models (each in a try/catch, skipped when
  that id already has a model.yml); then a DFS over models/ (readdir_sync + file_stat, which
  follows links), read_yaml of each model.yml, and resolveEmbeddingConfig(): when `embedding`
  is not a bool it reads the GGUF's general.architecture (bert or nomic-bert: true) and
  write_yaml()s model.yml back. Every model.yml here has `embedding`, so listing writes nothing.
- get(), isToolSupported(), checkMmprojExists(): read only.
- read_yaml/write_yaml join the path to the data folder and check it with jan_utils
  normalize_path, which is lexical (src-tauri/utils/src/path.rs): a models folder that is a link
  into the mount still counts as inside the data folder.
- load() -> performLoad(): model_path and mmproj_path are joinPath([data, path]) (Rust
  PathBuf::join: a relative path goes under the data folder, through the link; an absolute one
  is taken as is); loadLlamaModel runs llama-server -m <model> [--mmproj <mmproj>] after only an
  exists() check (tauri-plugin-llamacpp src/path.rs validate_model_path). No hash check at load.
  So model_path here is relative, `llamacpp/models/<id>/<file>`, valid wherever the mount is.
- Split GGUFs: Jan records one model_path. llama.cpp's loader, given the first shard
  (<prefix>-00001-of-0000N.gguf), opens the others by name in the same folder, so every shard is
  placed beside it under its own name, and model_path names the first.
- model.yml fields (ModelConfig, as import() writes them): model_path, mmproj_path, name,
  size_bytes (here every shard plus the projector), model_sha256 and model_size_bytes (the file
  model_path names: for a split, its first shard), mmproj_sha256, mmproj_size_bytes, embedding.
  Jan's import() only fills the sha256/size fields from a download's own; modelstore's importer
  (store/sources/runtimes/jan.py) checks the files against them.

Not possible on this read-only folder (each fails with EROFS, and Jan shows the error): import()
of a model (a download or a local file: it mkdirs models/<id>/ and writes model.yml there),
update() (a rename of the model's folder), delete() and abortImport() (rm of the folder), and
embed()'s own import of `sentence-transformer-mini` when no model of that id is listed. Keep
downloading into a models folder of Jan's own, then `modelstore import --from jan --move`.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import PurePosixPath
from typing import Any

import yaml

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir, File, Literal
from modelstore.fusefs.views.common import (
    GgufUnit,
    ViewOptions,
    mtime_ns,
    named_gguf_units,
    projector_name,
    stored_node,
    unique,
)
from modelstore.store.records import ModelRecord

MODELS_DIR = "llamacpp/models"  # relative to Jan's data folder: where model_path points
EMBEDDING_ARCHITECTURES = ("bert", "nomic-bert")  # resolveEmbeddingConfig() and import()
_JAN_ID = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")  # import() isValidModelId, no empty part


class _Quoted(str):
    """A string value, double-quoted in model.yml: Jan reads it with serde_yaml (YAML 1.2), which
    takes a plain 1e5 or 0o17 for a number where PyYAML (YAML 1.1) writes it unquoted."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value),
                                                                               style='"'))


def model_yml(fields: dict[str, Any]) -> bytes:
    """yaml.safe_dump of `fields`, its string values double-quoted, one line each."""
    quoted = {key: _Quoted(value) if isinstance(value, str) else value for key, value in fields.items()}
    return yaml.dump(quoted, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 30).encode()


def _gguf_name(name: str) -> str:
    """Jan's importers and file pickers look for .gguf."""
    return name if name.lower().endswith(".gguf") else f"{name}.gguf"


def _fields(snapshot: Snapshot, model: ModelRecord, model_id: str, unit: GgufUnit, label: str,
            names: dict[str, str]) -> dict[str, Any]:
    first = snapshot.file(model.files[unit.files[0]])
    arch = (first.weights or {}).get("metadata", {}).get("general.architecture")
    fields: dict[str, Any] = {"model_path": f"{MODELS_DIR}/{model_id}/{names[unit.files[0]]}"}
    if unit.mmproj:
        fields["mmproj_path"] = f"{MODELS_DIR}/{model_id}/{names[unit.mmproj]}"
    fields["name"] = label
    fields["size_bytes"] = sum(snapshot.file(model.files[p]).size for p in names)
    fields["model_sha256"] = first.sha256
    fields["model_size_bytes"] = first.size
    if unit.mmproj:
        projector = snapshot.file(model.files[unit.mmproj])
        fields["mmproj_sha256"] = projector.sha256
        fields["mmproj_size_bytes"] = projector.size
    fields["embedding"] = arch in EMBEDDING_ARCHITECTURES
    return fields


def jan_id(model: ModelRecord) -> str | None:
    """The id a model imported from Jan had there, when Jan's import() would take it."""
    if model.source.kind != "jan" or not _JAN_ID.fullmatch(model.source.location):
        return None
    return None if {".", ".."} & set(model.source.location.split("/")) else model.source.location


def _ids(named: list[tuple[ModelRecord, str, GgufUnit]]) -> list[str]:
    """Each unit's folder: a Jan model's own id when it is free, else the llamacpp/ name."""
    per_model = Counter(model.name for model, _, _ in named)
    kept: dict[int, str] = {}
    folders: set[str] = set()  # every kept id and each folder above one
    for i, (model, _, _) in enumerate(named):
        wanted = jan_id(model)
        if wanted is None or per_model[model.name] > 1:
            continue
        above = {"/".join(wanted.split("/")[:n]) for n in range(1, wanted.count("/") + 1)}
        if wanted in folders or above & set(kept.values()):
            continue
        kept[i] = wanted
        folders |= above | {wanted}
    taken = set(folders)
    return [kept[i] if i in kept else unique(name, taken) for i, (_, name, _) in enumerate(named)]


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    named = list(named_gguf_units(snapshot))
    units = [(model, model_id, unit) for (model, _, unit), model_id in zip(named, _ids(named))]
    per_model = Counter(model.name for model, _, _ in units)
    for model, model_id, unit in units:
        # A split keeps its shard names (llama.cpp finds the others by them); the projector gets
        # "mmproj" in its name, so it never takes the model's.
        names = {path: PurePosixPath(path).name if unit.split else _gguf_name(PurePosixPath(path).name)
                 for path in unit.files}
        if unit.mmproj:
            names[unit.mmproj] = _gguf_name(projector_name(unit.mmproj))
        label = model.name
        if per_model[model.name] > 1:
            label += f" ({unit.quant or PurePosixPath(unit.files[0]).stem})"
        folder = Dir(mtime_ns=mtime_ns(model))
        root.add(model_id, folder)
        for path, name in names.items():
            folder.children[name] = stored_node(snapshot, model.files[path], model, options)
        folder.children["model.yml"] = File(Literal(model_yml(_fields(snapshot, model, model_id, unit, label, names))),
                                            mtime_ns(model), model.name)
    return root
