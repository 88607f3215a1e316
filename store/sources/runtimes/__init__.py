"""Importing the model folders runtimes already keep (`modelstore import`): one module per kind
of folder, each finding models the way that runtime lays them out, and the importer that stores
them (importer.py) and, for --move, lets the folder remove what the store now holds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from modelstore.store.sources.runtimes.found import RuntimeFolder

KINDS = ("ollama", "lmstudio", "huggingface", "llamacpp", "gpt4all", "jan", "path")


def open_folder(kind: str, root: Path, ignore: Iterable[Path] = ()) -> RuntimeFolder:
    """The folder `root` read as `kind` lays models out; `ignore`: folders never to walk into."""
    from modelstore.store.sources.runtimes import (
        folder,
        gpt4all,
        hfcache,
        jan,
        llamacpp,
        lmstudio,
        ollama,
    )

    classes: dict[str, type[RuntimeFolder]] = {
        "ollama": ollama.OllamaFolder,
        "lmstudio": lmstudio.LmStudioFolder,
        "huggingface": hfcache.HfCacheFolder,
        "llamacpp": llamacpp.LlamaCppFolder,
        "gpt4all": gpt4all.Gpt4AllFolder,
        "jan": jan.JanFolder,
        "path": folder.AnyFolder,
    }
    return classes[kind](root, ignore)


__all__ = ["KINDS", "RuntimeFolder", "open_folder"]
