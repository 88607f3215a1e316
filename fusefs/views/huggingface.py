"""`huggingface/`: the Hugging Face hub cache layout (HF_HUB_CACHE), for transformers, vLLM,
llama.cpp -hf and everything else built on huggingface_hub.

models--<org>--<name>/blobs/<etag>          etag = SHA-256 for LFS-type files, git blob SHA-1 otherwise
models--<org>--<name>/refs/main             the commit, no trailing newline
models--<org>--<name>/snapshots/<commit>/…  relative symlinks to ../../blobs/<etag>

Hub models keep their repo id and commit; local models appear as local/<name> at a commit
derived from their content. A Hub snapshot (added, or imported from a Hugging Face cache) gets the
refs it had (the branch or tag it was added at, the refs that pointed at it), and no others; in a
local model's repo, refs/main names the newest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import PurePosixPath

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir, File, Link, Literal
from modelstore.fusefs.views.common import (
    ViewOptions,
    mtime_ns,
    plain_names_first,
    safe_part,
    stored_files,
    stored_node,
    unique,
)
from modelstore.store.records import FileRecord, ModelRecord
from modelstore.store.sources.runtimes.identity import hf_refs

# Extensions the Hub's default .gitattributes stores in LFS (so huggingface_hub names them by SHA-256)
LFS_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".model",
                ".tflite", ".ot", ".npz", ".npy", ".pkl", ".pickle", ".zip", ".gz", ".tar", ".zst", ".arrow",
                ".parquet", ".joblib", ".7z", ".bz2", ".xz", ".rar", ".wasm"}
_COMMIT = re.compile(r"[0-9a-f]{40}")


def etag(path: str, record: FileRecord) -> str:
    if record.git_sha1 is None or PurePosixPath(path).suffix.lower() in LFS_SUFFIXES:
        return record.sha256
    return record.git_sha1


def local_name(model: ModelRecord) -> str:
    """What a local model's name becomes in local/<name>, made valid for huggingface_hub (letters,
    digits, '-', '_', '.'; no '--' or '..'; the cache folder name joins parts with '--')."""
    name = safe_part(model.name.replace("/", "_").replace(":", "-"), limit=96)
    return re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", name)).strip("-.") or "model"


def shown_unchanged(model: ModelRecord) -> bool:
    """A Hub model keeps its id; a local model keeps its name when the rules above leave it as is."""
    return model.source.kind == "huggingface" or local_name(model) == model.name


def repo_id(model: ModelRecord, taken: set[str]) -> str:
    """Hub models keep their id; a local model gets local/<name>, or local/<name>-2... when that
    id is taken (`taken` holds the Hub ids too: a local model never joins a Hub repo's folder)."""
    if model.source.kind == "huggingface":
        return model.source.location
    return unique(f"local/{local_name(model)}", taken)


def commit_of(model: ModelRecord) -> str:
    if model.source.kind == "huggingface" and model.source.revision and _COMMIT.fullmatch(model.source.revision):
        return model.source.revision
    listing = "\n".join(f"{p}\0{b3}" for p, b3 in sorted(model.files.items()))
    return hashlib.sha1(f"modelstore {model.name}\n{listing}".encode()).hexdigest()


def render(snapshot: Snapshot, options: ViewOptions) -> Dir:
    root = Dir()
    # Hub ids first, as they are: several snapshots of one repo share its folder, and a local
    # model whose local/<name> is a Hub repo's id gets a suffix instead of joining that folder.
    taken = {m.source.location for m in snapshot.models if m.source.kind == "huggingface"}
    by_repo: dict[str, list[ModelRecord]] = {}
    for model in plain_names_first(snapshot.models, shown_unchanged):
        by_repo.setdefault(repo_id(model, taken), []).append(model)
    for rid, models in sorted(by_repo.items()):
        repo = root.dir("models--" + rid.replace("/", "--"))
        newest = max(models, key=lambda m: m.added_at)
        # Stored files first: where two models of one commit have a file at the same path (one
        # stored, one converted, or converted from another quantization), the stored one is shown.
        placed: set[tuple[str, str]] = set()
        for stored_pass in (True, False):
            for model in models:
                commit = commit_of(replace(model, files=stored_files(model, snapshot)))
                mtime = mtime_ns(model)
                for path, b3 in model.files.items():
                    conversion = snapshot.conversion(model, path)
                    if (conversion is None) != stored_pass or (commit, path) in placed:
                        continue
                    if (conversion or {}).get("kind", "safetensors") != "safetensors":
                        continue  # a GGUF made for the GGUF views: the repo shows what the model is
                    placed.add((commit, path))
                    tag = etag(path, snapshot.file(b3))
                    repo.dir("blobs").children[tag] = stored_node(snapshot, b3, model, options)
                    depth = path.count("/")
                    repo.dir("snapshots").dir(commit).add(path, Link("../" * (depth + 2) + f"blobs/{tag}", mtime, model.name))
        # A Hub snapshot keeps the refs it was added or imported at, no more: one added at a
        # commit or a PR ref has no refs/main, as in huggingface_hub's own cache, so loading the
        # repo by id does not silently take it. A local model's repo is its own: main is the newest.
        refs = {} if newest.source.kind == "huggingface" else {"main": newest}
        for model in sorted(models, key=lambda m: m.added_at):  # a ref two snapshots claim: the newer one
            refs.update(dict.fromkeys(hf_refs(model), model))
        for ref, model in sorted(refs.items()):  # "a" and "a/b" both claimed: the first one placed stays
            commit = commit_of(replace(model, files=stored_files(model, snapshot)))
            repo.dir("refs").add(ref, File(Literal(commit.encode()), mtime_ns(model), model.name))
    return root
