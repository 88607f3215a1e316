"""A GPT4All models folder: *.gguf files, found recursively (hidden files excluded), one model per
file named after it; `incomplete-*` are downloads in progress (see shared/provider-layouts.md §7)."""

from __future__ import annotations

import os

from modelstore.store.sources.runtimes.files import gguf_files, gguf_models
from modelstore.store.sources.runtimes.found import RuntimeFolder, Scan
from modelstore.store.sources.runtimes.identity import IMPORTED_FROM_KEY


class Gpt4AllFolder(RuntimeFolder):
    kind = "gpt4all"
    label = "GPT4All"

    def scan(self) -> Scan:
        scan = Scan()
        paths = gguf_files(self.root, self.ignore, scan, recursive=True)
        scan.models = gguf_models(paths, kind=self.kind, alternative="gpt4all",
                                  location=lambda p: os.path.abspath(p))
        for model in scan.models:
            model.metadata[IMPORTED_FROM_KEY] = str(self.root)
        return scan
