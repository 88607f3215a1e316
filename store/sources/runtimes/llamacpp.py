"""llama.cpp's download cache (LLAMA_CACHE): recent builds keep the Hugging Face cache layout
(models--<org>--<name>/...), older ones flat files named <org>_<repo>_<file>.gguf next to
.json/.etag bookkeeping (see shared/provider-layouts.md §3). Both are read: the first as a Hugging
Face cache (the repo keeps its id and commit), each flat GGUF as a model of its own."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from modelstore.store.sources.runtimes.files import gguf_files, gguf_models, is_gguf_name
from modelstore.store.sources.runtimes.found import (
    FoundModel,
    Held,
    Removal,
    RuntimeFolder,
    Scan,
)
from modelstore.store.sources.runtimes.hfcache import HfCacheFolder
from modelstore.store.sources.runtimes.identity import IMPORTED_FROM_KEY


class LlamaCppFolder(RuntimeFolder):
    kind = "llamacpp"
    label = "llama.cpp"

    def __init__(self, root: Path, ignore: Iterable[Path] = ()) -> None:
        super().__init__(root, ignore)
        self.hub = HfCacheFolder(self.root, self.ignore)

    def scan(self) -> Scan:
        scan = self.hub.scan()
        # Newer builds download into the Hugging Face cache, which transformers shares: what
        # llama.cpp can run is a repo with a GGUF; the rest is for `--from huggingface`.
        models, scan.models = scan.models, []
        for model in models:
            if any(is_gguf_name(Path(rel)) for rel in model.files):
                scan.models.append(model)
            else:
                scan.skip(model.where, "no GGUF file: not a llama.cpp model (import it with --from huggingface)")
        flat = Scan()
        paths = gguf_files(self.root, self.ignore, flat, recursive=False)
        flat.models = gguf_models(paths, kind=self.kind, alternative="llamacpp",
                                  location=lambda p: os.path.abspath(p))
        for model in flat.models:
            model.metadata[IMPORTED_FROM_KEY] = str(self.root)
        scan.extend(flat)
        return scan

    def release(self, model: FoundModel, removal: Removal) -> None:
        if model.source.kind == self.hub.kind:
            self.hub.release(model, removal)
        else:
            super().release(model, removal)

    def tidy(self, held: Held, removal: Removal) -> None:
        self.hub.tidy(held, removal)
