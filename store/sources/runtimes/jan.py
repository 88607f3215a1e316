"""Jan's llama.cpp models: <data>/llamacpp/models/<id>/model.yml naming the weights by model_path
(relative to the data folder, or absolute) and an optional mmproj_path (see
shared/provider-layouts.md §6). A folder holding model.yml is a model; the id may contain '/'.

--move removes the weights, then model.yml: a model.yml left naming missing weights is what a
killed --move leaves, and a later --move removes it once the store holds that model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modelstore.store.metadata import shard_of
from modelstore.store.records import Source
from modelstore.store.sources.common import default_name, read_small
from modelstore.store.sources.runtimes.files import inside, is_gguf_name, usable, walk
from modelstore.store.sources.runtimes.found import (
    Digest,
    FoundModel,
    Held,
    Removal,
    RuntimeFolder,
    Scan,
    Skipped,
    sha256_of,
)
from modelstore.store.sources.runtimes.identity import IMPORTED_FROM_KEY

MODEL_YML = "model.yml"
_MAX_YML = 1 << 20


def _read_yml(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        # Every value a string: a safe_load would read an all-digit model_sha256 as a number.
        doc = yaml.load(read_small(path, _MAX_YML).decode("utf-8", errors="replace"), Loader=yaml.BaseLoader)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def _weights(model_path: Path | None) -> list[Path]:
    """The files model_path stands for: itself, or every shard of the split whose first it names
    (llama.cpp opens the others by name beside it)."""
    if model_path is None:
        return []
    shard = shard_of(model_path.name)
    return [model_path.with_name(name) for name in shard.names()] if shard else [model_path]


class JanFolder(RuntimeFolder):
    kind = "jan"
    label = "Jan"

    def __init__(self, root: Path, ignore: Iterable[Path] = ()) -> None:
        super().__init__(root, ignore)
        # Accept the data folder or its llamacpp/models folder.
        root = self.root
        if (root / "llamacpp" / "models").is_dir():
            self.data, self.models = root, root / "llamacpp" / "models"
        else:
            self.data, self.models = root.parent.parent, root

    def _entries(self) -> list[tuple[str, Path, dict[str, Any] | None]]:
        """(id, model.yml, its fields) for each model folder (not descended further)."""
        out = []
        if not self.models.is_dir():
            return out
        for folder, dirnames, filenames in walk(self.models, self.ignore):
            if MODEL_YML in filenames:
                dirnames[:] = []
                out.append((folder.relative_to(self.models).as_posix(), folder / MODEL_YML, _read_yml(folder / MODEL_YML)))
        return out

    def _owns(self, path: Path) -> bool:
        """In Jan's folder: under the data folder, or under its models folder (which may be a
        link to another disk)."""
        return inside(path, self.data) or inside(path, self.models)

    def _path(self, value: object) -> Path | None:
        if not isinstance(value, str) or not value:
            return None
        return Path(value) if os.path.isabs(value) else self.data / value

    def _named(self, doc: dict[str, Any]) -> list[Path]:
        """The files a model.yml names: model_path (with a split's other shards, which llama.cpp
        opens beside it) and mmproj_path."""
        weights, mmproj = self._path(doc.get("model_path")), self._path(doc.get("mmproj_path"))
        return [p for p in [*_weights(weights), mmproj] if p is not None]

    def scan(self) -> Scan:
        scan = Scan()
        for model_id, yml, doc in self._entries():
            what = f"{model_id}/{MODEL_YML}"
            if doc is None:
                scan.skip(what, "not a readable model.yml")
                continue
            weights = self._path(doc.get("model_path"))
            if weights is None:
                scan.skip(what, "it has no model_path")
                continue
            files: dict[str, Path] = {}
            expected: dict[str, Digest] = {}
            parts = [("model_path", weights, "model_sha256")]
            if (mmproj := self._path(doc.get("mmproj_path"))) is not None:
                parts.append(("mmproj_path", mmproj, "mmproj_sha256"))
            ok = True
            for key, path, sha_key in parts:
                if not path.exists() and not path.is_symlink():
                    scan.skip(what, f"its {key} {path} is missing")
                    ok = False
                    break
                if not is_gguf_name(path):
                    scan.skip(what, f"its {key} {path} is not a .gguf file")
                    ok = False
                    break
                if not usable(path, scan, f"{model_id}: {path}"):
                    ok = False
                    break
                rel = path.name
                if key == "mmproj_path" and "mmproj" not in rel.lower():
                    rel = "mmproj.gguf"  # so the views pair it with the model
                files[rel] = path
                sha = doc.get(sha_key)
                if isinstance(sha, str) and len(sha) == 64:
                    expected[rel] = Digest("sha256", sha.lower())
            if not ok:
                continue
            if len(files) < len(parts):
                scan.skip(what, "its model_path and mmproj_path are the same file")
                continue
            # model_path names a split's first shard; llama.cpp opens the others by name beside it
            shards = _weights(weights)
            missing = [p.name for p in shards if not p.is_file()]
            if missing:
                scan.skip(what, f"its split GGUF misses {len(missing)} of {len(shards)} shards ({missing[0]}...)")
                continue
            files.update({p.name: p for p in shards})
            # Weights Jan was pointed at elsewhere (an import that kept them in place) are the user's
            # own files: --move takes only what is in Jan's folder.
            owned = [p for p in files.values() if self._owns(p)]
            scan.models.append(FoundModel(default_name(model_id), "jan", Source(self.kind, model_id), files, what,
                                          expected, {IMPORTED_FROM_KEY: str(self.data)},
                                          originals=(*owned, yml)))
        return scan

    def release(self, model: FoundModel, removal: Removal) -> None:
        for path in model.files.values():
            if path not in model.originals:
                removal.problems.append(Skipped(str(path), f"outside Jan's data folder ({self.data}): --move "
                                                           f"leaves it where it is"))
        for path in model.originals:  # the weights first, model.yml last
            removal.unlink(path)
        removal.prune(model.originals[-1].parent, self.models)

    def tidy(self, held: Held, removal: Removal) -> None:
        """A model.yml naming weights that are gone, of a model the store holds: a killed --move.
        Whatever it still names is removed if the store holds those very bytes, then model.yml."""
        for model_id, yml, doc in self._entries():
            if doc is None or not held.has_source(Source(self.kind, model_id)):
                continue
            named = self._named(doc)
            if all(p.exists() for p in named):
                continue
            for path in named:
                if self._owns(path) and path.is_file() and held.has_sha256(sha256_of(path)):
                    removal.unlink(path)
            if not any(p.exists() for p in named):
                removal.unlink(yml)
                removal.prune(yml.parent, self.models)
