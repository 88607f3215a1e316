"""Importing the model folders runtimes already keep (`modelstore import`): one module per kind
of folder, each finding models the way that runtime lays them out, and the importer that stores
them (importer.py) and, for --move, lets the folder remove what the store now holds."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from modelstore.store.errors import UsageError
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


_LABELS = {"ollama": "an Ollama models folder", "huggingface": "a Hugging Face cache", "jan": "a Jan data folder"}
# What must be in a folder of that kind that is not empty (Jan's data folder holds much else).
_EXPECTED = {"ollama": "manifests/ or blobs/", "huggingface": "models--<org>--<name> folders"}
_HF_MARKERS = ("models--*", "datasets--*", "spaces--*")
_HF_FILES = ("CACHEDIR.TAG", "version.txt")  # what huggingface_hub writes into a cache it made


def layout_of(root: Path) -> str | None:
    """The kind of folder `root` plainly is by its layout, if any: what `--from` should say."""
    if (root / "manifests").is_dir() or (root / "blobs").is_dir():
        return "ollama"
    if any(any(root.glob(marker)) for marker in _HF_MARKERS):
        return "huggingface"
    if (root / "llamacpp" / "models").is_dir() or any(root.glob("*/model.yml")) or any(root.glob("*/*/model.yml")):
        return "jan"
    return None


def check_kind(kind: str, root: Path) -> None:
    """UsageError when `root` is plainly another runtime's folder, or is not laid out as `kind`
    needs (an empty folder is fine: that runtime has no models yet)."""
    if not root.is_dir() or kind == "path":
        return
    shown = layout_of(root)
    if shown is not None and shown != kind and not (kind == "llamacpp" and shown == "huggingface"):
        raise UsageError(f"{root} is laid out as {_LABELS[shown]}: import it with --from {shown}")
    if shown is None and kind == "huggingface" and any((root / name).is_file() for name in _HF_FILES):
        return
    if shown is None and kind in _EXPECTED and not any(root.glob("*.gguf")) and any(root.glob("*/*/*.gguf")):
        raise UsageError(f"{root} is laid out as an LM Studio models folder (<publisher>/<model>/*.gguf): import "
                         f"it with --from lmstudio")
    if shown is None and kind in _EXPECTED and any(not p.name.startswith(".") for p in root.iterdir()):
        raise UsageError(f"{root} is not {_LABELS[kind]} (no {_EXPECTED[kind]} in it); give that folder, "
                         f"or import any GGUF and Hugging Face folders in it with --from path")


__all__ = ["KINDS", "RuntimeFolder", "check_kind", "layout_of", "open_folder"]
