"""An LM Studio models folder: <models>/<publisher>/<model>/<file>.gguf, or an MLX model folder
(config.json + safetensors) at the same depth (see shared/provider-layouts.md §4).

Each <publisher>/<model> folder becomes one store model named publisher/model, with
Source("lmstudio", "publisher/model"): the lmstudio/ view puts its files back at that place.
"""

from __future__ import annotations

from pathlib import Path

from modelstore.store.errors import UnsafeName
from modelstore.store.records import Source
from modelstore.store.sources.common import default_name
from modelstore.store.sources.local import list_folder
from modelstore.store.sources.runtimes.files import walk
from modelstore.store.sources.runtimes.found import (
    FoundModel,
    Held,
    Removal,
    RuntimeFolder,
    Scan,
)
from modelstore.store.sources.runtimes.identity import (
    IMPORTED_FROM_KEY,
    valid_folder_part,
)


class LmStudioFolder(RuntimeFolder):
    kind = "lmstudio"
    label = "LM Studio"

    def _folders(self, scan: Scan) -> list[tuple[str, str, Path]]:
        out = []
        for publisher in sorted(self.root.iterdir()):
            if publisher.name.startswith(".") or publisher.is_symlink() or not publisher.is_dir():
                if publisher.name.lower().endswith(".gguf"):
                    scan.skip(publisher.name, "not in a <publisher>/<model>/ folder, where LM Studio looks")
                continue
            for model in sorted(publisher.iterdir()):
                if model.name.startswith(".") or model.is_symlink() or not model.is_dir():
                    if model.name.lower().endswith(".gguf"):
                        scan.skip(f"{publisher.name}/{model.name}",
                                  "not in a <publisher>/<model>/ folder, where LM Studio looks")
                    continue
                if valid_folder_part(publisher.name) and valid_folder_part(model.name):
                    out.append((publisher.name, model.name, model))
        return out

    def scan(self) -> Scan:
        scan = Scan()
        for publisher, name, folder in self._folders(scan):
            try:
                files, skipped = list_folder(folder, self.ignore)
            except UnsafeName as exc:
                scan.skip(f"{publisher}/{name}", str(exc))
                continue
            for note in skipped:
                rel, _, why = note.rpartition(" (")
                scan.skip(f"{publisher}/{name}/{rel}", why.rstrip(")"))
            is_model = any(rel.lower().endswith(".gguf") for rel in files) or "config.json" in files
            if not is_model:
                if files:
                    scan.skip(f"{publisher}/{name}", "no GGUF file and no config.json: not a model")
                continue
            location = f"{publisher}/{name}"
            scan.models.append(FoundModel(default_name(location), "lmstudio", Source(self.kind, location), files,
                                          location, metadata={IMPORTED_FROM_KEY: str(self.root)},
                                          originals=tuple(files.values())))
        return scan

    def tidy(self, held: Held, removal: Removal) -> None:
        """Model folders a killed --move emptied but had not removed yet."""
        for folder, dirnames, filenames in reversed(list(walk(self.root, self.ignore))):
            if folder != self.root and not dirnames and not filenames and len(folder.relative_to(self.root).parts) <= 2:
                removal.prune(folder, self.root)
