"""An Ollama models folder (OLLAMA_MODELS): manifests/<host>/<namespace>/<model>/<tag> naming
blobs/sha256-<hex> (see shared/provider-layouts.md §2).

Each manifest becomes one store model holding the manifest's own bytes, its config blob and every
layer, so the ollama/ view can serve the same manifest (same digest, the ID `ollama list` shows)
and the same blobs. A blob's name is checked against the SHA-256 of the bytes stored.

--move removes a manifest only once its model is committed, and a blob only once no manifest
left in the folder names it: the folder never holds a manifest whose blobs are missing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from modelstore.store import jsontext
from modelstore.store.records import Source
from modelstore.store.sources.common import is_partial, read_small
from modelstore.store.sources.runtimes.found import (
    Digest,
    FoundModel,
    Held,
    Removal,
    RuntimeFolder,
    Scan,
)
from modelstore.store.sources.runtimes.identity import (
    IMPORTED_FROM_KEY,
    OLLAMA_CONFIG,
    OLLAMA_MANIFEST,
    ollama_name_from_parts,
)

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_BLOB = re.compile(r"sha256[-:]([0-9a-fA-F]{64})")
_LAYER_PREFIX = "application/vnd.ollama.image."
# Layers holding GGUF weights, and the file name they get in the model (so the other views,
# which look for *.gguf and "mmproj", find them).
_GGUF_LAYERS = {"model": "model", "projector": "mmproj", "adapter": "adapter", "draft": "draft"}
_MAX_MANIFEST = 4 << 20
GGUF_MAGIC = b"GGUF"


class ManifestError(ValueError):
    pass


def _digest(entry: Any, what: str) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
        raise ManifestError(f"its {what} has no digest")
    m = _DIGEST.fullmatch(entry["digest"])
    if not m:
        raise ManifestError(f"its {what} digest {entry['digest']!r} is not sha256:<64 hex>")
    return m.group(1)


def parse_manifest(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    """(config digest, [(layer kind, digest)]) of a manifest, or ManifestError."""
    try:
        doc = jsontext.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError("it is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise ManifestError("it is not a manifest (no layers)")
    config = _digest(doc.get("config"), "config")
    layers = []
    for i, layer in enumerate(doc["layers"]):
        digest = _digest(layer, f"layer {i}")
        media = layer.get("mediaType") if isinstance(layer.get("mediaType"), str) else ""
        layers.append((media.removeprefix(_LAYER_PREFIX) or "layer", digest))
    return config, layers


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _layer_kind(kind: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", kind).strip("-.") or "layer"


def _free_path(rel_path: str, files: dict[str, Path]) -> str:
    """`rel_path`, or with -2, -3... before its .gguf when another layer (or the config, or the
    manifest) has it: every blob the manifest names must be stored, or the view's manifest names a
    blob it does not serve."""
    stem, dot, ext = rel_path.rpartition(".") if rel_path.endswith(".gguf") else (rel_path, "", "")
    n = 2
    while rel_path in files:
        rel_path = f"{stem}-{n}{dot}{ext}"
        n += 1
    return rel_path


class OllamaFolder(RuntimeFolder):
    kind = "ollama"
    label = "Ollama"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    def manifest_files(self) -> list[Path]:
        """What Ollama lists: non-directories exactly four levels under manifests/ (dotfiles too)."""
        return sorted(p for p in self.manifests.glob("*/*/*/*") if not p.is_dir())

    def blob_path(self, digest: str) -> Path | None:
        for name in (f"sha256-{digest}", f"sha256:{digest}"):  # Ollama renames ':' at start-up
            path = self.blobs / name
            if path.is_file():
                return path
        return None

    def scan(self) -> Scan:
        scan = Scan()
        if not self.manifests.is_dir():
            scan.skip(self.root, "no manifests/ folder: not an Ollama models folder")
            return scan
        for manifest in self.manifest_files():
            found = self._model(manifest, scan)
            if found is not None:
                scan.models.append(found)
        if self.blobs.is_dir():  # a pull in progress: sha256-<hex>-partial and its -partial-<n> chunks
            unfinished = sorted({blob.name.split("-partial")[0] for blob in self.blobs.iterdir()
                                 if not _BLOB.fullmatch(blob.name) and ("-partial" in blob.name or is_partial(blob.name))})
            for name in unfinished:
                scan.skip(f"blobs/{name}-partial", "an unfinished download")
        return scan

    def _model(self, manifest: Path, scan: Scan) -> FoundModel | None:
        rel = manifest.relative_to(self.manifests)
        name = ollama_name_from_parts(*rel.parts)
        what = f"manifests/{rel.as_posix()}"
        if name is None:
            scan.skip(what, "not a valid Ollama model name")
            return None
        try:
            raw = read_small(manifest, _MAX_MANIFEST)
            config, layers = parse_manifest(raw)
        except (ManifestError, ValueError) as exc:
            scan.skip(what, f"not a usable manifest: {exc}")
            return None
        except OSError as exc:
            scan.skip(what, f"cannot be read: {exc.strerror or exc}")
            return None

        files: dict[str, Path] = {OLLAMA_MANIFEST: manifest}
        expected: dict[str, Digest] = {}
        named: dict[str, str] = {}  # digest -> path in the model (a blob named twice is one file)
        counts: dict[str, int] = {}
        for kind, digest in [("config", config)] + layers:
            if digest in named:
                continue
            blob = self.blob_path(digest)
            if blob is None:
                scan.skip(what, f"it names blob sha256-{digest[:12]}…, which is missing")
                return None
            if kind == "config":
                rel_path = OLLAMA_CONFIG
            else:
                counts[kind] = counts.get(kind, 0) + 1
                suffix = "" if counts[kind] == 1 else f"-{counts[kind]}"
                if kind in _GGUF_LAYERS and _is_gguf(blob):
                    rel_path = f"{_GGUF_LAYERS[kind]}{suffix}.gguf"
                else:
                    rel_path = f"ollama/{_layer_kind(kind)}{suffix}"
            rel_path = _free_path(rel_path, files)  # a layer of kind "config" or "manifest" keeps its own
            named[digest] = rel_path
            files[rel_path] = blob
            expected[rel_path] = Digest("sha256", digest)
        manifest_sha256 = hashlib.sha256(raw).hexdigest()
        expected[OLLAMA_MANIFEST] = Digest("sha256", manifest_sha256)  # the bytes read here, and no others
        manifest_digest = "sha256:" + manifest_sha256
        source = Source(self.kind, name.full, manifest_digest)
        return FoundModel(name.short, "ollama", source, files, what, expected, {IMPORTED_FROM_KEY: str(self.root)},
                          complete=True, content_addressed=True,
                          originals=(manifest, *[p for rel_path, p in files.items() if rel_path != OLLAMA_MANIFEST]))

    # -- --move -------------------------------------------------------------------------------

    def _named_by_manifests(self) -> bytes:
        """Every manifest's bytes, joined: a blob is still needed when its hex digest is in here.
        Searching the raw bytes also keeps what a manifest we could not parse may name."""
        chunks = []
        for manifest in self.manifest_files():
            try:
                chunks.append(read_small(manifest, _MAX_MANIFEST))
            except (OSError, ValueError):
                continue
        return b"\n".join(chunks)

    def release(self, model: FoundModel, removal: Removal) -> None:
        manifest, blobs = model.originals[0], model.originals[1:]
        if removal.unlink(manifest):
            removal.prune(manifest.parent, self.manifests)
        named = self._named_by_manifests()
        for blob in blobs:
            m = _BLOB.fullmatch(blob.name)
            if m and m.group(1).lower().encode() not in named.lower():
                removal.unlink(blob)

    def tidy(self, held: Held, removal: Removal) -> None:
        """Blobs no manifest names any more whose bytes the store holds: what a --move killed
        between removing a manifest and its blobs left behind."""
        if not self.blobs.is_dir() or not self.manifests.is_dir():
            return
        named = self._named_by_manifests().lower()
        for blob in sorted(self.blobs.iterdir()):
            m = _BLOB.fullmatch(blob.name)
            if not m or m.group(1).lower().encode() in named or not blob.is_file():
                continue
            if held.has_sha256(m.group(1).lower()) and held.may_remove(blob):
                removal.unlink(blob)


