"""Model folders written the way each runtime writes them (see shared/provider-layouts.md), for
the import tests: an Ollama models folder (manifests + sha256- blobs), a Hugging Face cache
(blobs, relative snapshot links, refs without a newline), an LM Studio tree, a GPT4All folder and
a Jan data folder. Every file gets an old mtime, as files downloaded long ago have."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

OLD = 1_600_000_000 * 10**9  # ns: September 2020
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def age(root: Path) -> None:
    """Give every file and link under `root` an old mtime."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            os.utime(Path(dirpath) / name, ns=(OLD, OLD), follow_symlinks=False)


# -- Ollama ----------------------------------------------------------------------------------------

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.ollama.image."


@dataclass
class OllamaModel:
    """What was written for one model: its manifest path, bytes, and each blob digest's bytes' sha."""

    path: Path
    manifest: bytes
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def ollama_blob(root: Path, data: bytes) -> str:
    digest = sha256(data)
    path = root / "blobs" / f"sha256-{digest}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
        os.utime(path, ns=(OLD, OLD))
    return digest


def write_ollama_model(root: Path, name: str, gguf: Path, *, template: str | None = None,
                       params: dict[str, object] | None = None, system: str | None = None,
                       licenses: tuple[str, ...] = (), projector: Path | None = None,
                       extra_layers: tuple[tuple[str, bytes], ...] = ()) -> OllamaModel:
    """`name` = host/namespace/model/tag. Layers and config as `ollama create` writes them; the
    manifest compact JSON with a trailing newline (Go's json.Encoder)."""
    layers = []

    def layer(kind: str, data: bytes) -> None:
        digest = ollama_blob(root, data)
        layers.append({"mediaType": LAYER + kind, "digest": f"sha256:{digest}", "size": len(data)})

    layer("model", gguf.read_bytes())
    if projector is not None:
        layer("projector", projector.read_bytes())
    if template is not None:
        layer("template", template.encode())
    for text in licenses:
        layer("license", text.encode())
    if params is not None:
        layer("params", json.dumps(params).encode())
    if system is not None:
        layer("system", system.encode())
    for media_type, data in extra_layers:  # (full media type, bytes): layers of kinds ollama create never writes
        layers.append({"mediaType": media_type, "digest": f"sha256:{ollama_blob(root, data)}", "size": len(data)})
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"], "model_type": "1M",
              "file_type": "F32", "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]}}
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = ollama_blob(root, config_bytes)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{config_digest}", "size": len(config_bytes)},
                "layers": layers}
    raw = json.dumps(manifest, separators=(",", ":")).encode() + b"\n"
    path = root / "manifests" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    age(root)
    blobs = {config_digest: len(config_bytes)} | {e["digest"][7:]: int(e["size"]) for e in layers}
    return OllamaModel(path, raw, blobs)


def ollama_model_whole(root: Path, model: OllamaModel) -> bool:
    """The model is still in the Ollama folder as it was: its manifest, and every blob it names
    with bytes that hash to the name."""
    if not model.path.is_file() or model.path.read_bytes() != model.manifest:
        return False
    return all((root / "blobs" / f"sha256-{d}").is_file() and file_sha256(root / "blobs" / f"sha256-{d}") == d
               for d in model.blobs)


# -- Hugging Face cache -------------------------------------------------------------------------------


def etag_of(path: str, data: bytes) -> str:
    return sha256(data) if path.endswith(LFS_SUFFIXES) else git_sha1(data)


def write_hf_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, bytes],
                      refs: tuple[str, ...] = ()) -> Path:
    """One snapshot of `repo_id` as huggingface_hub writes it: blobs/<etag>, relative links in
    snapshots/<commit>/, refs/<name> holding the commit with no newline."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for rel, data in files.items():
        blob = repo / "blobs" / etag_of(rel, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    age(cache)
    return snapshot


def hf_snapshot_whole(cache: Path, repo_id: str, commit: str, files: dict[str, bytes]) -> bool:
    snapshot = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    for rel, data in files.items():
        path = snapshot / rel
        if not path.exists() or file_sha256(path) != sha256(data):
            return False
    return True


def hf_folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- LM Studio, GPT4All, Jan --------------------------------------------------------------------------


def write_lmstudio_model(models: Path, publisher: str, model: str, files: dict[str, Path]) -> Path:
    folder = models / publisher / model
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, folder / name)
    age(models)
    return folder


def write_gpt4all_folder(folder: Path, files: dict[str, Path]) -> Path:
    for name, src in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / name)
    age(folder)
    return folder


def write_jan_model(data: Path, model_id: str, gguf: Path, *, mmproj: Path | None = None,
                    with_sha256: bool = True) -> Path:
    """<data>/llamacpp/models/<id>/model.yml + model.gguf (+ mmproj.gguf), paths relative to <data>."""
    folder = data / "llamacpp" / "models" / model_id
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(gguf, folder / "model.gguf")
    lines = [f"model_path: llamacpp/models/{model_id}/model.gguf", f"name: {model_id}",
             f"size_bytes: {gguf.stat().st_size + (mmproj.stat().st_size if mmproj else 0)}", "embedding: false"]
    if with_sha256:
        lines.append(f"model_sha256: {file_sha256(gguf)}")
    if mmproj is not None:
        shutil.copyfile(mmproj, folder / "mmproj.gguf")
        lines.append(f"mmproj_path: llamacpp/models/{model_id}/mmproj.gguf")
    (folder / "model.yml").write_text("\n".join(lines) + "\n")
    age(data)
    return folder


def add_split_and_vision_models(store, models: Path) -> tuple[Path, Path]:
    """Two models a Jan folder lays out with more than one file, added to `store`: org/big, a split
    GGUF of three shards, and see:q8 with a projector known by its header (named projector.gguf).
    Returns their folders."""
    from modelstore.converters.synth import write_tiny_llama_gguf, write_tiny_projector
    from modelstore.store.sources.local import add_local

    split, vision = models / "split", models / "vision"
    split.mkdir()
    write_tiny_llama_gguf(split / "big-Q8_0.gguf", quant="Q8_0", seed=6, split_max_tensors=8)
    add_local(store, split, name="org/big")
    vision.mkdir()
    write_tiny_llama_gguf(vision / "see-Q8_0.gguf", quant="Q8_0", seed=7)
    write_tiny_projector(vision / "projector.gguf")
    add_local(store, vision, name="see:q8")
    return split, vision
