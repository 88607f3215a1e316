"""`--from path FOLDER`: any folder of models. A folder holding config.json is one HF-format model
(all its files, like `modelstore add FOLDER`); elsewhere each GGUF file is a model (the shards of
a split GGUF together). The sources are recorded as `add` records them, so importing a folder and
adding the same file or folder agree on what is the same model."""

from __future__ import annotations

from pathlib import Path

from modelstore.store.errors import UnsafeName
from modelstore.store.records import Source
from modelstore.store.sources.common import default_name
from modelstore.store.sources.local import list_folder
from modelstore.store.sources.runtimes.files import (
    gguf_models,
    unfinished,
    usable,
    walk,
)
from modelstore.store.sources.runtimes.found import FoundModel, RuntimeFolder, Scan


class AnyFolder(RuntimeFolder):
    kind = "local"
    label = "the folder"

    def scan(self) -> Scan:
        scan = Scan()
        if self.root.is_file():
            if usable(self.root, scan, str(self.root)):
                scan.models = gguf_models([self.root], kind=self.kind, alternative="local",
                                          location=lambda p: str(p.resolve()))
            return scan
        ggufs: list[Path] = []
        for folder, dirnames, filenames in walk(self.root, self.ignore, scan):
            if "config.json" in filenames:
                dirnames[:] = []
                self._hf_folder(folder, scan)
                continue
            for fn in filenames:
                path = folder / fn
                rel = path.relative_to(self.root).as_posix()
                if unfinished(fn):
                    scan.skip(rel, "an unfinished download")
                elif fn.lower().endswith(".gguf") and usable(path, scan, rel):
                    ggufs.append(path)
        scan.models += gguf_models(ggufs, kind=self.kind, alternative="local", location=lambda p: str(p.resolve()))
        return scan

    def _hf_folder(self, folder: Path, scan: Scan) -> None:
        where = folder.relative_to(self.root).as_posix() if folder != self.root else folder.name
        try:
            files, skipped = list_folder(folder, self.ignore)
        except UnsafeName as exc:
            scan.skip(where, str(exc))
            return
        for note in skipped:
            rel, _, why = note.rpartition(" (")
            scan.skip(f"{where}/{rel}", why.rstrip(")"))
        scan.models.append(FoundModel(default_name(folder.resolve().name), "local", Source(self.kind, str(folder.resolve())),
                                      files, where, originals=tuple(files.values())))
