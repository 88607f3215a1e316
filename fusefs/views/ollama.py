"""`ollama/`: OLLAMA_MODELS, with a manifest per GGUF model and `blobs/sha256-<hex>`.

manifests/<host>/<namespace>/<model>/<tag>  exactly four levels; registry.ollama.ai/library/... for
                                            local models, hf.co/<org>/<repo>/<quant> for Hub GGUF repos
blobs/sha256-<hex>                          the GGUF itself (its SHA-256 is its name), the config blob
                                            and the text layers, each named by the SHA-256 of its bytes

Manifest bytes are a pure function of the model, so the digest `ollama list` shows is stable.
A model imported from an Ollama folder is shown as it was there: its own manifest bytes at its
own path (so the same digest), naming its own blobs; those are placed first, so a generated
manifest never takes an imported one's place.
A split GGUF is shown through its merged rendition (one file mapped from the shards), and a
safetensors model through its GGUF rendition, when `add` planned them.
"""

from __future__ import annotations

import hashlib
import json

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir, File, Literal
from modelstore.fusefs.views.common import (
    GgufUnit,
    ViewOptions,
    gguf_units,
    mtime_ns,
    plain_names_first,
    safe_part,
    stored_files,
    stored_node,
    unique,
)
from modelstore.store.metadata import gguf_file_type_name
from modelstore.store.records import ModelRecord
from modelstore.store.sources.runtimes.identity import (
    OLLAMA_MANIFEST,
    OllamaManifestName,
    imported_ollama_name,
)

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.ollama.image."
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
NAME_CHARS = r"A-Za-z0-9_.-"
NAMESPACE_CHARS = r"A-Za-z0-9_-"  # no '.' in the namespace


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber: 135M, 1.24B, 8B."""
    for div, suffix, places in ((1_000_000_000, "B", 1), (1_000_000, "M", 2)):
        if n >= div:
            value = n / div
            return f"{value:.0f}{suffix}" if value == int(value) else f"{value:.{places}f}{suffix}"
    if n >= 1000:
        return f"{n / 1000:.0f}K"
    return str(n)


def _part(text: str, chars: str = NAME_CHARS) -> str:
    cleaned = safe_part(text, chars)
    return cleaned if cleaned[0].isalnum() or cleaned[0] == "_" else "m" + cleaned[:79]


def ollama_name(model: ModelRecord, unit: GgufUnit, several: bool) -> OllamaManifestName:
    quant = unit.quant or DEFAULT_TAG
    if model.source.kind == "huggingface":
        org, _, repo = model.source.location.rpartition("/")  # an old id ("gpt2") has no org
        return OllamaManifestName("hf.co", _part(org or DEFAULT_NAMESPACE, NAMESPACE_CHARS), _part(repo), _part(quant))
    name, _, tag = model.name.rpartition(":") if ":" in model.name else (model.name, "", "")
    namespace, _, base = name.rpartition("/")
    tag = tag or (quant if several else DEFAULT_TAG)
    if several and tag != quant:
        tag = f"{tag}-{quant}"
    return OllamaManifestName(DEFAULT_HOST, _part(namespace or DEFAULT_NAMESPACE, NAMESPACE_CHARS), _part(base), _part(tag))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(kind: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": LAYER + kind, "digest": digest, "size": size}


def _render_imported(model: ModelRecord, snapshot: Snapshot, options: ViewOptions, manifests: Dir, blobs: Dir,
                     tags: dict[str, set[str]]) -> bool:
    """Place an imported model's own manifest and blobs; False for a model that was not imported."""
    name = imported_ollama_name(model)
    if name is None:
        return False
    repo = f"{name.host}/{name.namespace}/{name.model}"
    tag = unique(name.tag, tags.setdefault(repo, set()))
    for path, b3 in stored_files(model, snapshot).items():
        if path != OLLAMA_MANIFEST:  # every other file is a blob the manifest names, by its SHA-256
            blobs.children[f"sha256-{snapshot.file(b3).sha256}"] = stored_node(snapshot, b3, model, options)
    manifests.add(f"{repo}/{tag}", stored_node(snapshot, model.files[OLLAMA_MANIFEST], model, options))
    return True


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    manifests, blobs = root.dir("manifests"), root.dir("blobs")
    tags: dict[str, set[str]] = {}  # host/namespace/model -> tags in use
    generated = [m for m in snapshot.models if not _render_imported(m, snapshot, options, manifests, blobs, tags)]
    for model in plain_names_first(generated):
        units = [u for u in gguf_units(model, snapshot, merged=True) if not u.split]
        for unit in units:
            record = snapshot.file(model.files[unit.files[0]])
            weights = record.weights or {}
            kv = weights.get("metadata", {})
            mtime = mtime_ns(model)
            layers: list[dict[str, object]] = [_layer("model", "sha256:" + record.sha256, record.size)]
            blobs.children[f"sha256-{record.sha256}"] = stored_node(snapshot, record.b3, model, options)
            if unit.mmproj:
                proj = snapshot.file(model.files[unit.mmproj])
                layers.append(_layer("projector", "sha256:" + proj.sha256, proj.size))
                blobs.children[f"sha256-{proj.sha256}"] = stored_node(snapshot, proj.b3, model, options)
            license_text = kv.get("general.license") or model.metadata.get("license")
            if isinstance(license_text, str) and license_text:
                data = license_text.encode()
                layers.append(_layer("license", _digest(data), len(data)))
                blobs.children[f"sha256-{_digest(data)[7:]}"] = File(Literal(data), mtime)
            # Ollama's ConfigV2 has strings here: a GGUF whose architecture is no string gets none
            arch = kv.get("general.architecture")
            arch = arch if isinstance(arch, str) else ""
            config = {
                "model_format": "gguf",
                "model_family": arch,
                "model_families": [arch] if arch else [],
                "model_type": human_number(int(weights.get("parameter_count", 0))),
                "file_type": gguf_file_type_name(kv.get("general.file_type")) or unit.quant or "",
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            }
            config_bytes = json.dumps(config, separators=(",", ":"), allow_nan=False).encode()
            blobs.children[f"sha256-{_digest(config_bytes)[7:]}"] = File(Literal(config_bytes), mtime)
            manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                        "config": {"mediaType": CONFIG_TYPE, "digest": _digest(config_bytes), "size": len(config_bytes)},
                        "layers": layers}
            name = ollama_name(model, unit, len(units) > 1)
            repo = f"{name.host}/{name.namespace}/{name.model}"
            tag = unique(name.tag, tags.setdefault(repo, set()))
            manifest_bytes = json.dumps(manifest, separators=(",", ":"), allow_nan=False).encode() + b"\n"
            manifests.add(f"{repo}/{tag}", File(Literal(manifest_bytes), mtime, model.name))
    return root
