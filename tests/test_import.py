"""`modelstore import`: each runtime's folder, written the way that runtime writes it
(tests/runtime_folders.py), imported with each mode.

What is checked, byte for byte or hash for hash: every model lands in the store with the bytes it
had; it keeps its identity (an Ollama model its manifest bytes, so the same digest, and its blobs;
a Hugging Face snapshot its repo id, commit and refs; an LM Studio model its publisher/model/file
place), and the views show it there; what several models share is stored once; --link and --move
take no copy; --move empties the folders and reports what was freed; odd input is skipped with a
warning and never half imported; a dry run writes nothing; and `import --move` killed at random
moments loses no model, and a re-run finishes the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
from modelstore.cli import run
from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf
from modelstore.fusefs.snapshot import take_snapshot
from modelstore.fusefs.tree import Dir, File, Link, Literal, StoredContent
from modelstore.fusefs.views import render_root
from modelstore.store import Store
from modelstore.store.fsck import fsck
from modelstore.store.ingest import ImportMode
from modelstore.store.records import ModelRecord, Source
from modelstore.store.sources.local import add_local
from modelstore.store.sources.runtimes import open_folder
from modelstore.store.sources.runtimes.importer import Importer, ImportReport

from .conftest import edit_beside_the_pass, read_model_file, stored_bytes
from .mounting import mounted, requires_fuse
from .runtime_folders import (
    OllamaModel,
    age,
    file_sha256,
    git_sha1,
    hf_folder_files,
    hf_snapshot_whole,
    ollama_model_whole,
    sha256,
    write_gpt4all_folder,
    write_hf_snapshot,
    write_jan_model,
    write_lmstudio_model,
    write_ollama_model,
)

MODES = [m.value for m in ImportMode]
COMMIT_A, COMMIT_B, COMMIT_C = "a" * 40, "b" * 40, "c1" * 20


# -- models to fill the folders with -----------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    llama: Path  # ~490 KB GGUF
    other: Path  # another, sharing no tensor with `llama`
    mmproj: Path
    hf: Path  # an HF-format folder: config.json, tokenizer_config.json, README.md, model.safetensors
    hf_tuned: Path  # the same with two tensors changed


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Weights:
    folder = tmp_path_factory.mktemp("weights")
    return Weights(
        write_tiny_llama_gguf(folder / "llama.gguf", seed=1, license="mit", chat_template="{{ x }}"),
        write_tiny_llama_gguf(folder / "other.gguf", seed=2),
        write_tiny_llama_gguf(folder / "mmproj.gguf", seed=3, n_embd=32, name="projector"),
        write_tiny_hf_folder(folder / "hf", hidden=128, vocab=512),
        write_tiny_hf_folder(folder / "hf-tuned", hidden=128, vocab=512,
                             changed={"model.layers.0.mlp.up_proj.weight": 7, "lm_head.weight": 8}),
    )


def build_ollama(root: Path, w: Weights) -> dict[str, OllamaModel]:
    """Three models as Ollama keeps them: two tags of one model sharing the GGUF blob (and the
    template), one with a projector, params, system prompt and two licenses; and a Hub pull."""
    return {
        "tiny:1b": write_ollama_model(root, "registry.ollama.ai/library/tiny/1b", w.llama,
                                      template="{{ .System }} {{ .Prompt }}", params={"stop": ["<|end|>"], "temperature": 0.2},
                                      system="You are tiny.", licenses=("MIT License", "Extra terms"), projector=w.mmproj),
        "tiny:latest": write_ollama_model(root, "registry.ollama.ai/library/tiny/latest", w.llama,
                                          template="{{ .System }} {{ .Prompt }}"),
        "hf.co/org/other-GGUF:Q8_0": write_ollama_model(root, "hf.co/org/other-GGUF/Q8_0", w.other),
    }


@dataclass(frozen=True)
class HfSnapshot:
    repo: str
    commit: str
    files: dict[str, bytes]
    refs: tuple[str, ...]


def build_hf_cache(cache: Path, w: Weights) -> dict[str, HfSnapshot]:
    """A safetensors repo with two snapshots (main and v1.0) that share their config and weights
    blob but not their README, plus a refs/pr/1; a fine-tune sharing most tensors; a GGUF repo."""
    base = hf_folder_files(w.hf)
    old = {**base, "README.md": b"---\nlicense: apache-2.0\n---\n# an older card\n"}
    snapshots = {
        "org/tiny": HfSnapshot("org/tiny", COMMIT_A, base, ("main", "refs/pr/1")),
        "org/tiny@bbbbbbbb": HfSnapshot("org/tiny", COMMIT_B, old, ("v1.0",)),
        "org/tiny-tuned": HfSnapshot("org/tiny-tuned", COMMIT_C, hf_folder_files(w.hf_tuned), ("main",)),
        "org/other-GGUF": HfSnapshot("org/other-GGUF", COMMIT_A, {"other-Q8_0.gguf": w.other.read_bytes()}, ("main",)),
    }
    for s in snapshots.values():
        write_hf_snapshot(cache, s.repo, s.commit, s.files, s.refs)
    return snapshots


def build_lmstudio(models: Path, w: Weights) -> dict[str, dict[str, Path]]:
    layout = {
        "lmstudio-community/tiny-GGUF": {"tiny-F32.gguf": w.llama, "mmproj-tiny-F32.gguf": w.mmproj},
        "someone/other-GGUF": {"other-Q8_0.gguf": w.other},
    }
    for place, files in layout.items():
        publisher, model = place.split("/")
        write_lmstudio_model(models, publisher, model, files)
    return layout


def importing(home: Path, kind: str, folder: Path, mode: str = "copy",
              progress: Callable[[int, str], Callable[[int], None]] | None = None) -> ImportReport:
    with Store(home) as store:
        importer = Importer(store, ImportMode(mode), progress)
        return importer.run(open_folder(kind, folder, [home]))


def model_files_sha(home: Path, name: str) -> dict[str, str]:
    with Store(home) as store:
        model = store.model(name)
        return {rel: store.file(b3).sha256 for rel, b3 in model.files.items()}


def store_bytes_of(home: Path, name: str, rel: str) -> bytes:
    with Store(home) as store:
        return read_model_file(store, name, rel)


def view(home: Path, name: str) -> dict[str, File | Link | Dir]:
    """Every node of one view, by path, rendered in this process."""
    with Store(home) as store:
        snap = take_snapshot(store.catalog, str(store.objects.root))
    out: dict[str, File | Link | Dir] = {}

    def visit(node: Dir, prefix: str) -> None:
        for child_name, child in node.children.items():
            out[prefix + child_name] = child
            if isinstance(child, Dir):
                visit(child, prefix + child_name + "/")

    visit(render_root(snap).children[name], "")  # type: ignore[arg-type]
    return out


def node_bytes(home: Path, node: File | Link | Dir) -> bytes:
    assert isinstance(node, File), node
    if isinstance(node.content, Literal):
        return node.content.data
    assert isinstance(node.content, StoredContent)
    with Store(home) as store:
        return store.read_range(store.file(node.content.b3), 0, node.content.size)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.exists() else []


def inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def object_inodes(home: Path) -> set[tuple[int, int]]:
    return {inode(p) for p in (home / "objects").rglob("*") if p.is_file()}


# -- Ollama ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_ollama_models_keep_name_manifest_and_blobs(home: Path, tmp_path: Path, weights: Weights, mode: str) -> None:
    """Each manifest becomes a model named as `ollama list` names it; the ollama/ view serves the
    very manifest bytes at the same path (so the same digest) and every blob it names, with bytes
    that hash to the name; the GGUF blob two tags share is stored once; --link and --move store the
    original inodes (no copy), --move empties the folder, --copy and --link leave it as it was."""
    root = tmp_path / "ollama"
    models = build_ollama(root, weights)
    before = {p: file_sha256(p) for p in files_under(root)}
    inodes = {inode(p) for p in files_under(root / "blobs")}

    report = importing(home, "ollama", root, mode)

    assert report.skipped == [] and report.removal.problems == []
    assert sorted(m.name for m in report.models) == sorted(models)
    assert {m.status for m in report.models} == {"imported"}
    tree = view(home, "ollama")
    for name, model in models.items():
        files = model_files_sha(home, name)
        assert files["ollama/manifest"] == model.digest
        assert sorted(d for rel, d in files.items() if rel != "ollama/manifest") == sorted(model.blobs)
        served = node_bytes(home, tree[f"manifests/{model.path.relative_to(root / 'manifests').as_posix()}"])
        assert served == model.manifest and sha256(served) == model.digest
        for digest in model.blobs:
            assert sha256(node_bytes(home, tree[f"blobs/sha256-{digest}"])) == digest
    layers = model_files_sha(home, "tiny:1b")
    assert {"model.gguf", "mmproj.gguf", "ollama/config", "ollama/manifest", "ollama/template", "ollama/params",
            "ollama/system", "ollama/license", "ollama/license-2"} == set(layers)
    assert store_bytes_of(home, "tiny:1b", "ollama/system") == b"You are tiny."
    with Store(home) as store:
        assert store.model("tiny:latest").source.location == "registry.ollama.ai/library/tiny:latest"
        assert store.model("tiny:latest").source.revision == "sha256:" + models["tiny:latest"].digest
        assert store.model("tiny:1b").metadata["architecture"] == "llama"
    distinct = {d: size for m in models.values() for d, size in m.blobs.items()}
    manifests = sum(len(m.manifest) for m in models.values())
    assert stored_bytes(home) == sum(distinct.values()) + manifests  # every shared blob once

    if mode in ("link", "move"):  # the store holds the user's inodes: nothing was copied
        assert inodes <= object_inodes(home)
    else:
        assert not inodes & object_inodes(home)
    if mode == "move":
        assert files_under(root) == []
        assert report.removal.files == len(distinct) + len(models)
        assert report.removal.freed == 0  # everything moved in: the store owns those bytes now
    else:
        assert {p: file_sha256(p) for p in files_under(root)} == before


def test_a_jan_split_model_is_imported_whole(home: Path, tmp_path: Path) -> None:
    """Jan's model_path names a split's first shard, and llama.cpp opens the others beside it:
    import takes every shard (--move removes them all), or, with one missing, none."""
    made = tmp_path / "made"
    made.mkdir()
    first = write_tiny_llama_gguf(made / "big.gguf", split_max_tensors=8)
    shards = sorted(made.glob("big-*-of-*.gguf"))
    assert len(shards) > 2 and shards[0] == first
    data = tmp_path / "jan"
    folder = write_jan_model(data, "big", first, with_sha256=False)
    (folder / "model.gguf").unlink()
    for shard in shards:
        shutil.copyfile(shard, folder / shard.name)
    yml = folder / "model.yml"
    yml.write_text(yml.read_text().replace("big/model.gguf", f"big/{first.name}"))
    (folder / shards[-1].name).rename(tmp_path / "aside.gguf")
    age(data)
    report = importing(home, "jan", data, "move")
    assert report.models == [] and "misses 1 of" in report.skipped[0].why
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.yml", *(s.name for s in shards[:-1])])
    (tmp_path / "aside.gguf").rename(folder / shards[-1].name)
    age(data)
    report = importing(home, "jan", data, "copy")
    assert [sorted(m.model.files) for m in report.models] == [[s.name for s in shards]]
    for shard in shards:
        assert store_bytes_of(home, "big", shard.name) == shard.read_bytes()
    # A --move killed after the first shard was removed: the next one removes the rest, not only
    # model.yml (the other shards would be left where Jan no longer sees them)
    (folder / first.name).unlink()
    report = importing(home, "jan", data, "move")
    assert not folder.exists(), sorted(p.name for p in folder.iterdir())


def test_an_ollama_layer_named_like_the_config_is_stored_too(home: Path, tmp_path: Path, weights: Weights) -> None:
    """A manifest with a layer whose media type says config (or manifest): its blob is stored as
    well, so the ollama/ view serves every blob the manifest names."""
    root = tmp_path / "ollama"
    extra = (("application/vnd.ollama.image.config", b'{"not":"the config"}'),
             ("application/vnd.ollama.image.manifest", b"not the manifest"))
    model = write_ollama_model(root, "registry.ollama.ai/library/odd/latest", weights.llama, extra_layers=extra)
    age(root)
    report = importing(home, "ollama", root)
    assert [m.name for m in report.models] == ["odd:latest"] and report.skipped == []
    tree = view(home, "ollama")
    assert node_bytes(home, tree["manifests/registry.ollama.ai/library/odd/latest"]) == model.manifest
    for digest in model.blobs:
        assert sha256(node_bytes(home, tree[f"blobs/sha256-{digest}"])) == digest


def test_ollama_hostile_input_is_skipped_with_warnings(home: Path, tmp_path: Path, weights: Weights) -> None:
    """A manifest naming a missing blob, a blob whose bytes do not match its name, a pull in
    progress (sha256-…-partial), a manifest that is not JSON, one at the wrong depth: each skipped
    with a warning; the good model imported; with --move the skipped ones stay whole."""
    root = tmp_path / "ollama"
    good = write_ollama_model(root, "registry.ollama.ai/library/good/latest", weights.llama)
    missing = write_ollama_model(root, "registry.ollama.ai/library/missing/latest", weights.other, system="gone")
    (root / "blobs" / f"sha256-{sha256(b'gone')}").unlink()
    damaged = write_ollama_model(root, "registry.ollama.ai/library/damaged/latest", weights.mmproj)
    blob = root / "blobs" / f"sha256-{file_sha256(weights.mmproj)}"
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.write_bytes(bytes(data))
    partial = root / "blobs" / f"sha256-{'e' * 64}-partial"
    partial.write_bytes(b"half a download")
    (root / "blobs" / f"sha256-{'e' * 64}-partial-0").write_bytes(b"chunk")
    (root / "manifests/registry.ollama.ai/library/broken").mkdir()
    (root / "manifests/registry.ollama.ai/library/broken/latest").write_text('{"layers": [')
    (root / "manifests/registry.ollama.ai/library/good/extra").mkdir()  # depth 5: Ollama does not list it
    (root / "manifests/registry.ollama.ai/library/good/extra/latest").write_bytes(good.manifest)
    age(root)

    report = importing(home, "ollama", root, "move")

    assert [m.name for m in report.models] == ["good:latest"]
    why = {s.what: s.why for s in report.skipped}
    assert "missing" in why["manifests/registry.ollama.ai/library/missing/latest"]
    assert "hash" in why["manifests/registry.ollama.ai/library/damaged/latest"]
    assert "not JSON" in why["manifests/registry.ollama.ai/library/broken/latest"]
    assert why[f"blobs/sha256-{'e' * 64}-partial"] == "an unfinished download"
    assert len(report.skipped) == 4
    with Store(home) as store:
        assert [m.name for m in store.models()] == ["good:latest"]
    assert not ollama_model_whole(root, good)  # moved
    assert missing.path.read_bytes() == missing.manifest
    assert damaged.path.read_bytes() == damaged.manifest and blob.read_bytes() == bytes(data)
    assert partial.exists()


def test_ollama_name_taken_by_another_model_and_reimport(home: Path, tmp_path: Path, weights: Weights, cli) -> None:
    """`tiny:1b` added from a file keeps its name and bytes: the import calls its model
    tiny:1b@ollama. Importing again changes nothing; a re-pulled manifest replaces its model."""
    root = tmp_path / "ollama"
    models = build_ollama(root, weights)
    with Store(home) as store:
        add_local(store, weights.other, name="tiny:1b")
    importing(home, "ollama", root)
    with Store(home) as store:
        names = sorted(m.name for m in store.models())
        assert store.model("tiny:1b").source.kind == "local"
    assert names == ["hf.co/org/other-GGUF:Q8_0", "tiny:1b", "tiny:1b@ollama", "tiny:latest"]
    assert model_files_sha(home, "tiny:1b@ollama")["ollama/manifest"] == models["tiny:1b"].digest
    held = stored_bytes(home)

    again = importing(home, "ollama", root)
    assert {m.status for m in again.models} == {"unchanged"} and stored_bytes(home) == held

    repulled = write_ollama_model(root, "registry.ollama.ai/library/tiny/latest", weights.other, system="new")
    third = importing(home, "ollama", root)
    assert {m.name: m.status for m in third.models}["tiny:latest"] == "replaced"
    assert model_files_sha(home, "tiny:latest")["ollama/manifest"] == repulled.digest


# -- Hugging Face cache ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_hf_cache_snapshots_keep_repo_commit_and_refs(home: Path, tmp_path: Path, weights: Weights, mode: str) -> None:
    """One model per snapshot, named by repo id (@<short commit> for the snapshot main does not
    name), Source = repo and commit, refs kept; the huggingface/ view gives back the snapshots,
    refs/main, refs/v1.0 and refs/refs/pr/1; the safetensors blob two snapshots share is stored
    once, and the fine-tune costs only its changed tensors."""
    cache = tmp_path / "hub"
    snapshots = build_hf_cache(cache, weights)
    distinct = sum(len(data) for data in {sha256(d): d for s in snapshots.values() for d in s.files.values()}.values())
    originals = {inode(p): p.stat().st_size for p in cache.rglob("*") if p.is_file() and not p.is_symlink()}

    report = importing(home, "huggingface", cache, mode)

    assert report.skipped == []
    assert sorted(m.name for m in report.models) == sorted(snapshots)
    with Store(home) as store:
        for name, s in snapshots.items():
            model = store.model(name)
            assert (model.source.kind, model.source.location, model.source.revision) == ("huggingface", s.repo, s.commit)
            assert model.metadata["refs"] == sorted(s.refs)
            for rel, data in s.files.items():
                assert read_model_file(store, name, rel) == data, f"{name}/{rel}"
    tree = view(home, "huggingface")
    for s in snapshots.values():
        repo = "models--" + s.repo.replace("/", "--")
        for ref in s.refs:
            assert node_bytes(home, tree[f"{repo}/refs/{ref}"]) == s.commit.encode()
        for rel, data in s.files.items():
            link = tree[f"{repo}/snapshots/{s.commit}/{rel}"]
            assert isinstance(link, Link)
            blob = tree[os.path.normpath(f"{repo}/snapshots/{s.commit}/{os.path.dirname(rel)}/{link.target}")]
            assert node_bytes(home, blob) == data
    tuned = snapshots["org/tiny-tuned"].files["model.safetensors"]
    assert stored_bytes(home) < distinct - len(tuned) * 0.7  # shared blobs once; the fine-tune mostly deduped
    if mode == "move":
        assert list(cache.iterdir()) == []
        # freed: every original the store did not take over as it was (the fine-tune, stored as its
        # changed tensors; refs); and what the store wrote anew is less than that: no extra disk
        stored_inodes = object_inodes(home)
        assert report.removal.freed == sum(size for ino, size in originals.items() if ino not in stored_inodes)
        written = sum(p.stat().st_size for p in (home / "objects").rglob("*") if p.is_file() and inode(p) not in originals)
        assert report.removal.freed > len(tuned) > written
    else:
        for s in snapshots.values():
            assert hf_snapshot_whole(cache, s.repo, s.commit, s.files)


def test_hf_cache_odd_entries(home: Path, tmp_path: Path, weights: Weights) -> None:
    """A dangling snapshot link, a download in progress (blobs/*.incomplete), a link leading out of
    blobs/, a corrupted blob, a ref that is not a commit and one that names no snapshot here:
    skipped with warnings. A snapshot with a corrupted blob, or with files whose blob is missing or
    elsewhere, is not imported at all (never half of it), and with --move keeps every file,
    including a blob it shares with a snapshot that was imported and moved."""
    cache = tmp_path / "hub"
    base = hf_folder_files(weights.hf)
    good = write_hf_snapshot(cache, "org/tiny", COMMIT_A, base, ("main",))
    bad_files = {**base, "README.md": b"a card that will be damaged"}
    bad = write_hf_snapshot(cache, "org/tiny", COMMIT_B, bad_files, ("v1.0",))
    holed = write_hf_snapshot(cache, "org/tiny", COMMIT_C, base, ("holed",))
    repo = cache / "models--org--tiny"
    readme_blob = repo / "blobs" / git_sha1(bad_files["README.md"])
    readme_blob.write_bytes(b"a card that was damaged!!!")
    (holed / "gone.safetensors").symlink_to("../../blobs/" + "f" * 64)
    (repo / "blobs" / ("9" * 64 + ".incomplete")).write_bytes(b"partial")
    outside = tmp_path / "outside.txt"
    outside.write_text("not in the cache")
    (holed / "outside.txt").symlink_to(outside)
    (repo / "refs" / "broken").write_text("not a commit")
    (repo / "refs" / "gone").write_text("d" * 40)
    age(cache)

    report = importing(home, "huggingface", cache, "move")

    assert [m.name for m in report.models] == ["org/tiny"]
    why = {s.what: s.why for s in report.skipped}
    assert "dangling" in why[f"models--org--tiny/snapshots/{COMMIT_C[:8]}/gone.safetensors"]
    assert "out of" in why[f"models--org--tiny/snapshots/{COMMIT_C[:8]}/outside.txt"]
    assert why[f"models--org--tiny/snapshots/{COMMIT_C[:8]}"].startswith(
        "not imported: 2 of its files have no blob here; download it again")
    assert why[f"models--org--tiny/blobs/{'9' * 64}.incomplete"] == "an unfinished download"
    assert "hash" in why[f"models--org--tiny/snapshots/{COMMIT_B[:8]}"]
    assert "not a ref" in why["models--org--tiny/refs/broken"]
    assert why["models--org--tiny/refs/gone"] == "names commit dddddddd, which has no snapshot here"
    assert len(report.skipped) == 7
    assert set(model_files_sha(home, "org/tiny")) == set(base)
    assert outside.read_text() == "not in the cache"
    # the damaged and the holed snapshots are still complete on disk, shared blobs included
    for snapshot in (bad, holed):
        for rel in base:
            assert (snapshot / rel).read_bytes() == (bad_files if snapshot == bad else base)[rel] \
                or (snapshot, rel) == (bad, "README.md"), rel
    assert (repo / "refs" / "v1.0").read_text() == COMMIT_B
    # what was imported of the good snapshot is gone, with its ref
    assert not good.exists() and not (repo / "refs" / "main").exists()


# -- LM Studio, GPT4All, Jan, llama.cpp, any folder -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_lmstudio_models_keep_publisher_model_file(home: Path, tmp_path: Path, weights: Weights, mode: str) -> None:
    """Each <publisher>/<model> folder is a model named publisher/model; the lmstudio/ view puts
    every file back at <publisher>/<model>/<file> with its bytes; a GGUF in the models root (LM
    Studio does not list it) and a partial download are skipped with warnings."""
    root = tmp_path / "lmstudio"
    layout = build_lmstudio(root, weights)
    shutil.copyfile(weights.other, root / "stray.gguf")
    (root / "someone" / "other-GGUF" / "other-Q4_0.gguf.part").write_bytes(b"partial")
    age(root)

    report = importing(home, "lmstudio", root, mode)

    assert sorted(m.name for m in report.models) == sorted(layout)
    assert {s.what: s.why for s in report.skipped} == {
        "stray.gguf": "not in a <publisher>/<model>/ folder, where LM Studio looks",
        "someone/other-GGUF/other-Q4_0.gguf.part": "an unfinished download"}
    tree = view(home, "lmstudio")
    for place, files in layout.items():
        with Store(home) as store:
            assert store.model(place).source.location == place
        for fn, src in files.items():
            assert sha256(node_bytes(home, tree[f"{place}/{fn}"])) == file_sha256(src)
    assert stored_bytes(home) == sum(p.stat().st_size for p in (weights.llama, weights.mmproj, weights.other))
    left = sorted(p.relative_to(root).as_posix() for p in files_under(root))
    if mode == "move":
        assert left == ["someone/other-GGUF/other-Q4_0.gguf.part", "stray.gguf"]
        assert not (root / "lmstudio-community").exists()
    else:
        assert len(left) == 5


def test_gpt4all_jan_llamacpp_and_any_folder(home: Path, tmp_path: Path, weights: Weights) -> None:
    """GPT4All: one model per *.gguf, incomplete-* skipped. Jan: model.yml's model_path (relative
    to the data folder) and mmproj_path, its model_sha256 checked. llama.cpp: flat GGUF files and
    the Hugging Face layout in one cache. --from path: GGUF files, split shards as one model, and
    HF-format folders. Every file's bytes are checked in the store."""
    gpt4all = write_gpt4all_folder(tmp_path / "gpt4all", {"tiny.Q4_0.gguf": weights.llama, "sub/other.gguf": weights.other,
                                                          "incomplete-big.gguf": weights.mmproj})
    data = tmp_path / "jan"
    write_jan_model(data, "tiny", weights.llama, mmproj=weights.mmproj)
    write_jan_model(data, "org/other", weights.other, with_sha256=False)
    write_jan_model(data, "lying", weights.mmproj)
    yml = data / "llamacpp/models/lying/model.yml"
    yml.write_text(yml.read_text().replace(file_sha256(weights.mmproj), "0" * 64))
    llamacpp = tmp_path / "llama.cpp"
    write_gpt4all_folder(llamacpp, {"org_repo_other-Q8_0.gguf": weights.other, "org_repo_other-Q8_0.gguf.etag": weights.mmproj})
    write_hf_snapshot(llamacpp, "org/tiny-GGUF", COMMIT_A, {"tiny-F32.gguf": weights.llama.read_bytes()}, ("main",))
    write_hf_snapshot(llamacpp, "org/text-model", COMMIT_B, hf_folder_files(weights.hf), ("main",))  # transformers'
    anywhere = tmp_path / "downloads"
    anywhere.mkdir()
    shutil.copytree(weights.hf, anywhere / "my-finetune")
    shutil.copyfile(weights.llama, anywhere / "split-00001-of-00002.gguf")
    shutil.copyfile(weights.other, anywhere / "split-00002-of-00002.gguf")
    shutil.copyfile(weights.mmproj, anywhere / "single.gguf")

    expect = {
        "tiny.Q4_0": {"tiny.Q4_0.gguf": weights.llama}, "other": {"other.gguf": weights.other},
        "tiny": {"model.gguf": weights.llama, "mmproj.gguf": weights.mmproj},
        "org/other": {"model.gguf": weights.other},
        "org_repo_other-Q8_0": {"org_repo_other-Q8_0.gguf": weights.other},
        "org/tiny-GGUF": {"tiny-F32.gguf": weights.llama},
        "my-finetune": {p.name: p for p in weights.hf.iterdir()},
        "split": {"split-00001-of-00002.gguf": weights.llama, "split-00002-of-00002.gguf": weights.other},
        "single": {"single.gguf": weights.mmproj},
    }
    reports = {kind: importing(home, kind, folder) for kind, folder in
               (("gpt4all", gpt4all), ("jan", data), ("llamacpp", llamacpp), ("path", anywhere))}

    assert [str(s) for s in reports["gpt4all"].skipped] == ["incomplete-big.gguf: an unfinished download"]
    assert [s.what for s in reports["jan"].skipped] == ["lying/model.yml"]
    assert "hash" in reports["jan"].skipped[0].why
    assert [str(s) for s in reports["llamacpp"].skipped] == [
        f"models--org--text-model/snapshots/{COMMIT_B[:8]}: no GGUF file: not a llama.cpp model (import it with "
        f"--from huggingface)"]
    assert reports["path"].skipped == []
    with Store(home) as store:
        assert sorted(m.name for m in store.models()) == sorted(expect)
        kinds = {m.name: m.source.kind for m in store.models()}
        for name, files in expect.items():
            assert sorted(store.model(name).files) == sorted(files), name
            for rel, src in files.items():
                assert read_model_file(store, name, rel) == src.read_bytes(), f"{name}/{rel}"
    assert kinds["tiny.Q4_0"] == "gpt4all" and kinds["tiny"] == "jan" and kinds["org/tiny-GGUF"] == "huggingface"
    assert kinds["org_repo_other-Q8_0"] == "llamacpp" and kinds["split"] == kinds["my-finetune"] == "local"
    llamacpp_view = view(home, "llamacpp")
    assert sha256(node_bytes(home, llamacpp_view["tiny/mmproj.gguf"])) == file_sha256(weights.mmproj)


def test_jan_move_and_finishing_an_interrupted_one(home: Path, tmp_path: Path, weights: Weights) -> None:
    """--move takes the weights, then model.yml, then the emptied folder. A model.yml left naming
    weights a killed --move already removed (the store holds the model): the next --move removes
    what is left of it (the mmproj, whose bytes the store holds, then model.yml); a model.yml whose
    weights are simply missing, of a model the store does not hold, stays, with a warning."""
    data = tmp_path / "jan"
    write_jan_model(data, "tiny", weights.llama, mmproj=weights.mmproj)
    write_jan_model(data, "org/other", weights.other)
    report = importing(home, "jan", data, "move")
    assert sorted(m.name for m in report.models) == ["org/other", "tiny"]
    assert files_under(data) == [] and list((data / "llamacpp/models").iterdir()) == []

    write_jan_model(data, "tiny", weights.llama, mmproj=weights.mmproj)
    write_jan_model(data, "never-stored", weights.other)
    (data / "llamacpp/models/tiny/model.gguf").unlink()  # as a --move killed after the weights went
    (data / "llamacpp/models/never-stored/model.gguf").unlink()
    report = importing(home, "jan", data, "move")
    assert report.models == [] and [s.what for s in report.skipped] == ["never-stored/model.yml"]
    assert not (data / "llamacpp/models/tiny").exists()
    assert [p.relative_to(data).as_posix() for p in files_under(data)] == ["llamacpp/models/never-stored/model.yml"]
    assert model_files_sha(home, "tiny") == {"model.gguf": file_sha256(weights.llama), "mmproj.gguf": file_sha256(weights.mmproj)}


def test_jan_models_keep_their_ids_in_the_jan_view(home: Path, tmp_path: Path, weights: Weights) -> None:
    """Imported from Jan, a model is back at its own id in jan/ (Jan's threads name models by id),
    with the model.yml fields Jan wrote; a model whose name wants a folder above such an id, or an
    id a model already holds, gets another."""
    import yaml

    from modelstore.fusefs.snapshot import take_snapshot
    from modelstore.fusefs.tree import Dir, File, Literal
    from modelstore.fusefs.views import ViewOptions
    from modelstore.fusefs.views.jan import render
    from modelstore.store.sources.local import add_local

    data = tmp_path / "jan"
    write_jan_model(data, "tiny", weights.llama, mmproj=weights.mmproj)
    write_jan_model(data, "org/other", weights.other)
    before = {i: yaml.safe_load((data / "llamacpp/models" / i / "model.yml").read_text()) for i in ("tiny", "org/other")}
    importing(home, "jan", data)
    with Store(home) as store:
        add_local(store, weights.other, name="org")  # llamacpp/ calls it org.gguf; jan/ cannot have org/
        jan = render(take_snapshot(store.catalog, str(store.objects.root)), ViewOptions())

    def files(node: Dir, prefix: str = "") -> dict[str, File]:
        out = {}
        for name, child in node.children.items():
            out.update(files(child, f"{prefix}{name}/") if isinstance(child, Dir) else {prefix + name: child})
        return out

    shown = files(jan)
    assert sorted(shown) == ["org-2/model.yml", "org-2/other.gguf", "org/other/model.gguf", "org/other/model.yml",
                             "tiny/mmproj.gguf", "tiny/model.gguf", "tiny/model.yml"]
    for model_id, old in before.items():
        node = shown[f"{model_id}/model.yml"]
        assert isinstance(node, File) and isinstance(node.content, Literal)
        new = yaml.safe_load(node.content.data)
        for key in ("model_path", "mmproj_path", "model_sha256", "size_bytes", "embedding"):
            assert new.get(key) == old.get(key), (model_id, key)
    assert yaml.safe_load(shown["org-2/model.yml"].content.data)["model_path"] == "llamacpp/models/org-2/other.gguf"


def test_jan_never_takes_files_outside_its_folder(home: Path, tmp_path: Path, weights: Weights) -> None:
    """A model.yml whose model_path names something that is not a GGUF (../victim/notes.txt) is
    skipped with a warning. One naming a GGUF outside the data folder (a Jan import that kept the
    file where it was) is imported, but --move leaves that file in place, with a warning, and also
    when finishing an interrupted --move."""
    data, victim = tmp_path / "jan", tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_bytes(b"precious")
    shutil.copyfile(weights.other, victim / "kept.gguf")
    for model_id, fields in (("evil", f"model_path: ../victim/notes.txt\nmmproj_path: {victim / 'kept.gguf'}"),
                             ("elsewhere", f"model_path: {victim / 'kept.gguf'}")):
        yml = write_jan_model(data, model_id, weights.llama) / "model.yml"
        (yml.parent / "model.gguf").unlink()
        yml.write_text(f"{fields}\nembedding: false\n")
    before = {p.name: file_sha256(p) for p in victim.iterdir()}

    report = importing(home, "jan", data, "move")

    assert [m.name for m in report.models] == ["elsewhere"]
    assert [s.what for s in report.skipped] == ["evil/model.yml"]
    assert report.skipped[0].why.endswith("../victim/notes.txt is not a .gguf file")
    assert {p.name: file_sha256(p) for p in victim.iterdir()} == before
    assert [s.what for s in report.removal.problems] == [str(victim / "kept.gguf")]
    assert (victim / "kept.gguf").stat().st_nlink == 1  # copied in: the file stays, so the store must not share it
    assert "outside Jan's data folder" in report.removal.problems[0].why
    assert not (data / "llamacpp/models/elsewhere").exists()  # its model.yml went: the model is in the store
    assert model_files_sha(home, "elsewhere") == {"kept.gguf": file_sha256(weights.other)}

    # An interrupted --move's leftovers: a model.yml of a held model naming a missing file and an
    # outside one whose bytes the store holds. The outside file is not the folder's to remove.
    yml = write_jan_model(data, "elsewhere", weights.llama) / "model.yml"
    (yml.parent / "model.gguf").unlink()
    yml.write_text(f"model_path: llamacpp/models/elsewhere/gone.gguf\nmmproj_path: {victim / 'kept.gguf'}\n")
    importing(home, "jan", data, "move")
    assert {p.name: file_sha256(p) for p in victim.iterdir()} == before


def test_move_through_a_symlink_copies_and_leaves_its_target_alone(home: Path, tmp_path: Path, weights: Weights) -> None:
    """An LM Studio model whose GGUF is a symlink to a file elsewhere: --move removes the link and
    copies the bytes in. The store must not share the target's inode (the link's target stays the
    user's, and may be rewritten in place), so an edit of the target leaves the store intact."""
    root, elsewhere = tmp_path / "lmstudio", tmp_path / "elsewhere"
    write_lmstudio_model(root, "pub", "tiny-GGUF", {"tiny.gguf": weights.llama})
    elsewhere.mkdir()
    target = elsewhere / "linked.gguf"
    shutil.copyfile(weights.other, target)
    (root / "pub/tiny-GGUF/linked.gguf").symlink_to(target)

    report = importing(home, "lmstudio", root, "move")

    assert [m.name for m in report.models] == ["pub/tiny-GGUF"] and report.skipped == []
    assert files_under(root) == [] and target.stat().st_nlink == 1
    assert inode(target) not in object_inodes(home)
    with open(target, "r+b") as f:  # the user rewrites their file in place
        f.seek(100)
        f.write(b"\xff" * 64)
    with Store(home) as store:
        assert fsck(store, deep=True).clean
        assert sha256(read_model_file(store, "pub/tiny-GGUF", "linked.gguf")) == file_sha256(weights.other)


def test_hostile_json_and_refused_blobs_leave_nothing_behind(home: Path, tmp_path: Path, weights: Weights, cli) -> None:
    """A manifest of deeply nested JSON is skipped with a warning (no traceback), a config.json
    nested as deeply only loses its metadata; a blob whose bytes do not match its name is refused
    before any of its bytes are stored."""
    root = tmp_path / "ollama"
    models = build_ollama(root, weights)
    deep = root / "manifests/registry.ollama.ai/library/deep/latest"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b'{"layers":' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    age(root)
    lying = next(d for d in models["hf.co/org/other-GGUF:Q8_0"].blobs if d != file_sha256(weights.llama))
    blob = root / "blobs" / f"sha256-{lying}"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))

    r = cli("import", "--from", "ollama", root, "--no-convert", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert sorted(m["name"] for m in out["models"]) == ["tiny:1b", "tiny:latest"]
    why = {s["what"]: s["why"] for s in out["skipped"]}
    assert "not JSON" in why["manifests/registry.ollama.ai/library/deep/latest"]
    assert "hash" in why[next(w for w in why if "other-GGUF" in w)]
    with Store(home) as store:
        assert fsck(store, deep=True).clean
        assert not store.objects.path(blake3.blake3(bytes(data)).hexdigest()).exists()

    folder = tmp_path / "nested"
    shutil.copytree(weights.hf, folder)
    (folder / "config.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)
    r = cli("import", "--from", "path", folder, "--no-convert", "--json")
    assert r.code == 0, r.err
    assert [m["name"] for m in r.json()["models"]] == ["nested"]


def test_reruns_dry_runs_and_the_summary_say_what_happens(home: Path, tmp_path: Path, weights: Weights, cli,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run over a folder already imported says "unchanged" as the import then does (the
    manifest known by its digest, so nothing is "unhashed"); a folder given by a relative path is
    recorded by its absolute one; --from naming the wrong runtime for the folder is a usage error;
    `show` lists the ollama/ rendition of an imported model."""
    root = tmp_path / "ollama"
    build_ollama(root, weights)
    monkeypatch.chdir(tmp_path)
    assert cli("import", "--from", "ollama", "ollama").code == 0
    with Store(home) as store:
        assert {m.metadata["imported_from"] for m in store.models()} == {str(root)}

    plan = cli("import", "--from", "ollama", root, "--dry-run", "--json").json()
    assert {m["status"] for m in plan["models"]} == {"unchanged"} and plan["unhashed_bytes"] == 0
    real = cli("import", "--from", "ollama", root, "--json").json()
    assert {m["status"] for m in real["models"]} == {"unchanged"}

    hub = tmp_path / "hub"
    build_hf_cache(hub, weights)
    r = cli("import", "--from", "ollama", hub)
    assert r.code == 2 and "--from huggingface" in r.err
    r = cli("import", "--from", "huggingface", root)
    assert r.code == 2 and "--from ollama" in r.err
    r = cli("import", "--from", "ollama", weights.hf)
    assert r.code == 2 and "not an Ollama models folder" in r.err
    lms = tmp_path / "lms"
    write_lmstudio_model(lms, "pub", "m-GGUF", {"m.gguf": weights.llama})
    for kind in ("ollama", "huggingface"):
        r = cli("import", "--from", kind, lms)
        assert r.code == 2 and "LM Studio models folder" in r.err and "--from lmstudio" in r.err, r.err
    fresh = tmp_path / "fresh"
    (fresh / "hub").mkdir(parents=True)
    (fresh / "hub" / "version.txt").write_text("1")
    (fresh / "ollama" / "blobs").mkdir(parents=True)
    assert cli("import", "--from", "huggingface", fresh / "hub").code == 0  # a cache with nothing in it yet
    assert cli("import", "--from", "ollama", fresh / "ollama").code == 0

    assert cli("import", "--from", "huggingface", hub, "--no-convert").code == 0
    (hub / "models--org--other-GGUF/refs/v2").write_text(COMMIT_A)  # a new ref: the model's refs change
    plan = {m["name"]: m for m in cli("import", "--from", "huggingface", hub, "--dry-run", "--json").json()["models"]}
    real = {m["name"]: m for m in cli("import", "--from", "huggingface", hub, "--json").json()["models"]}
    assert plan["org/other-GGUF"]["status"] == "stored" and real["org/other-GGUF"]["status"] == "updated"
    assert {n: m["status"] for n, m in plan.items() if n != "org/other-GGUF"} == {
        n: m["status"] for n, m in real.items() if n != "org/other-GGUF"} == {n: "unchanged" for n in plan if n != "org/other-GGUF"}

    shown = cli("show", "tiny:latest", "--json")
    assert shown.code == 0, shown.err
    ollama = next(v for v in shown.json()["views"] if v["view"] == "ollama")
    assert ollama["paths"] == ["ollama/manifests/registry.ollama.ai/library/tiny/latest"]


def test_a_rerun_finishes_a_killed_move_of_fresh_downloads(home: Path, tmp_path: Path, weights: Weights) -> None:
    """Blobs nothing names any more are normally left for an hour (they may be a download in
    progress). Those a killed --move had committed and was removing are written down first, so
    the re-run removes them at once, even when they are minutes old."""
    root = tmp_path / "ollama"
    build_ollama(root, weights)
    now = time.time_ns()
    for p in files_under(root):
        os.utime(p, ns=(now, now))
    proc = _spawn(["--home", str(home), "import", "--from", "ollama", str(root), "--move"],
                  {"KILL_AT": "unlink", "KILL_NTH": "1", "KILL_SRC": str(root) + os.sep})
    assert proc.wait(60) == -signal.SIGKILL
    assert any((root / "blobs").iterdir())
    assert run(["--home", str(home), "import", "--from", "ollama", str(root), "--move"]) == 0
    assert files_under(root) == []
    assert not (home / "moving").exists() or not any((home / "moving").iterdir())


# -- across runtimes -----------------------------------------------------------------------------------


def test_one_gguf_in_three_runtimes_moved_in_is_stored_once(home: Path, tmp_path: Path, weights: Weights, cli) -> None:
    """The same GGUF in Ollama, LM Studio and the Hugging Face cache, imported with --move: the
    store holds it once, the two copies it already held are reported freed (the first was moved
    in, not freed), every folder is emptied, and each view shows the model where its runtime had it."""
    gguf = weights.llama
    size = gguf.stat().st_size
    ollama, lmstudio, hub = tmp_path / "ollama", tmp_path / "lmstudio", tmp_path / "hub"
    tiny = write_ollama_model(ollama, "registry.ollama.ai/library/tiny/latest", gguf)
    write_lmstudio_model(lmstudio, "lmstudio-community", "tiny-GGUF", {"tiny-F32.gguf": gguf})
    write_hf_snapshot(hub, "org/tiny-GGUF", COMMIT_A, {"tiny-F32.gguf": gguf.read_bytes()}, ("main",))

    outs = []
    for kind, folder in (("ollama", ollama), ("lmstudio", lmstudio), ("huggingface", hub)):
        r = cli("import", "--from", kind, folder, "--move", "--no-convert", "--json")  # counts stored bytes exactly
        assert r.code == 0, r.err
        outs.append(r.json())
    assert [o["freed_bytes"] for o in outs] == [0, size, size + len(COMMIT_A)]  # the last: the blob and refs/main
    assert outs[0]["hint"].startswith("point Ollama at the mount: OLLAMA_MODELS=") and "OLLAMA_NOPRUNE=1" in outs[0]["hint"]
    assert "HF_HUB_CACHE=" in outs[2]["hint"]
    assert stored_bytes(home) == size + len(tiny.manifest) + sum(s for d, s in tiny.blobs.items() if s != size)
    assert files_under(ollama) == [] and files_under(lmstudio) == [] and files_under(hub) == []
    digest = file_sha256(gguf)
    assert sha256(node_bytes(home, view(home, "ollama")[f"blobs/sha256-{digest}"])) == digest
    assert sha256(node_bytes(home, view(home, "lmstudio")["lmstudio-community/tiny-GGUF/tiny-F32.gguf"])) == digest
    hf = view(home, "huggingface")
    assert sha256(node_bytes(home, hf[f"models--org--tiny-GGUF/blobs/{digest}"])) == digest
    assert node_bytes(home, hf["models--org--tiny-GGUF/refs/main"]) == COMMIT_A.encode()


def test_a_file_changing_while_read_is_skipped(home: Path, tmp_path: Path, weights: Weights) -> None:
    """A GGUF rewritten while the import hashes it: that model is skipped with a warning, nothing
    of it is committed, the file stays; the other models are imported."""
    root = tmp_path / "lmstudio"
    build_lmstudio(root, weights)
    victim = root / "someone/other-GGUF/other-Q8_0.gguf"
    editors: list[threading.Thread] = []

    def rewrite() -> None:
        with open(victim, "r+b") as f:
            f.seek(4096)
            f.write(os.urandom(64))

    def progress(total: int, desc: str) -> Callable[[int], None]:
        def tick(n: int) -> None:
            if desc.endswith("other-Q8_0.gguf") and not editors:
                editors.append(edit_beside_the_pass(victim, rewrite))
        return tick

    report = importing(home, "lmstudio", root, "move", progress)
    editors[0].join()

    assert [m.name for m in report.models] == ["lmstudio-community/tiny-GGUF"]
    assert [s.what for s in report.skipped] == ["someone/other-GGUF"] and "changed" in report.skipped[0].why
    assert victim.exists()
    with Store(home) as store:
        assert [m.name for m in store.models()] == ["lmstudio-community/tiny-GGUF"]


def test_dry_run_skips_what_the_import_refuses(tmp_path: Path, weights: Weights, cli) -> None:
    """A file named .gguf that is not one (a saved web page): the import refuses its model with a
    warning, and the dry run says so instead of promising it."""
    folder = tmp_path / "models"
    write_gpt4all_folder(folder, {"good.gguf": weights.llama})
    (folder / "page.gguf").write_bytes(b"<!DOCTYPE html><html>not a model</html>")
    age(folder)
    dry = cli("import", "--from", "path", folder, "--dry-run", "--json").json()
    real = cli("import", "--from", "path", folder, "--json").json()
    assert [m["name"] for m in dry["models"]] == [m["name"] for m in real["models"]] == ["good"]
    for report in (dry, real):
        assert [s["why"] for s in report["skipped"] if "page.gguf" in s["what"] + s["why"]] != []
        assert all("not a GGUF file" in s["why"] for s in report["skipped"]), report["skipped"]
        assert [s["why"].count("page.gguf") + s["what"].count("page.gguf") for s in report["skipped"]] == [1]


def test_dry_run_writes_nothing(tmp_path: Path, weights: Weights, cli, home: Path) -> None:
    """--dry-run lists the models and what the store would hold, without creating the store or
    touching the folder; after an import of the Ollama folder, the same GGUF in the HF cache shows
    as held already (known by its hash)."""
    ollama, hub = tmp_path / "ollama", tmp_path / "hub"
    build_ollama(ollama, weights)
    snapshots = build_hf_cache(hub, weights)
    listing = {p: (os.lstat(p).st_mtime_ns, os.lstat(p).st_ino) for p in [*ollama.rglob("*"), *hub.rglob("*")]}

    r = cli("import", "--from", "ollama", ollama, "--move", "--dry-run", "--json")
    assert r.code == 0, r.err
    plan = r.json()
    assert sorted(m["name"] for m in plan["models"]) == ["hf.co/org/other-GGUF:Q8_0", "tiny:1b", "tiny:latest"]
    assert plan["stored_bytes"] == 0 and plan["shared_bytes"] == weights.llama.stat().st_size + len("{{ .System }} {{ .Prompt }}")
    assert not home.exists()
    assert {p: (os.lstat(p).st_mtime_ns, os.lstat(p).st_ino) for p in [*ollama.rglob("*"), *hub.rglob("*")]} == listing

    assert cli("import", "--from", "ollama", ollama).code == 0
    r = cli("import", "--from", "huggingface", hub, "--dry-run", "--json")
    plan = r.json()
    gguf = {m["name"]: m for m in plan["models"]}["org/other-GGUF"]
    assert gguf["stored_bytes"] == weights.other.stat().st_size and gguf["new_bytes"] == 0
    assert sorted(m["name"] for m in plan["models"]) == sorted(snapshots)
    text = cli("import", "--from", "huggingface", hub, "--dry-run")
    assert "nothing was written" in text.out and "would import org/tiny-tuned" in text.out
    with Store(home) as store:
        assert len(store.models()) == 3


def test_cli_errors_and_output(cli, tmp_path: Path, weights: Weights, monkeypatch: pytest.MonkeyPatch) -> None:
    """Help with examples; --from path without a folder is a usage error (2); a missing folder is
    not found (3); with no PATH the runtime's default folder is used (OLLAMA_MODELS); the summary
    names each model, what was freed, the warnings (on stderr) and how to point the runtime at the mount."""
    help_text = cli("import", "--help").out
    assert "Example" in help_text and "modelstore import --from ollama" in help_text
    assert cli("import", "--from", "path").code == 2
    r = cli("import", "--from", "gpt4all", tmp_path / "nowhere")
    assert r.code == 3 and r.err.startswith("modelstore: error:")
    root = tmp_path / "ollama"
    build_ollama(root, weights)
    (root / "blobs" / f"sha256-{'e' * 64}-partial").write_bytes(b"x")
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    r = cli("import", "--from", "ollama", "--move")
    assert r.code == 0, r.err
    assert "imported  tiny:1b" in r.out and "tiny:latest" in r.out
    assert "Removed 14 files" in r.out and "0 B of disk freed" in r.out
    assert "OLLAMA_MODELS=" in r.out and "OLLAMA_NOPRUNE=1" in r.out
    assert r.err.strip() == f"warning: skipped blobs/sha256-{'e' * 64}-partial: an unfinished download"


# -- through the mount ---------------------------------------------------------------------------------


def hash_through(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@requires_fuse
@pytest.mark.fuse
@pytest.mark.parametrize("mode", MODES)
def test_imported_models_read_back_through_the_mount(home: Path, tmp_path: Path, weights: Weights, mode: str) -> None:
    """Ollama, LM Studio and Hugging Face folders imported with each mode, then mounted: every
    manifest at its old path hashes to its old digest, every blob it names to its name, every LM
    Studio file and every snapshot file to the original's SHA-256, and the refs name the same commits."""
    ollama, lmstudio, hub = tmp_path / "ollama", tmp_path / "lmstudio", tmp_path / "hub"
    ollama_models = build_ollama(ollama, weights)
    lmstudio_models = build_lmstudio(lmstudio, weights)
    snapshots = build_hf_cache(hub, weights)
    expected_lms = {f"{place}/{fn}": file_sha256(src) for place, files in lmstudio_models.items() for fn, src in files.items()}
    for kind, folder in (("ollama", ollama), ("lmstudio", lmstudio), ("huggingface", hub)):
        assert run(["--home", str(home), "import", "--from", kind, str(folder), f"--{mode}"]) == 0

    with mounted(home, tmp_path / "mnt") as m:
        for model in ollama_models.values():
            manifest = m.path / "ollama/manifests" / model.path.relative_to(ollama / "manifests")
            assert hash_through(manifest) == model.digest
            for digest in json.loads(manifest.read_bytes())["layers"] + [json.loads(manifest.read_bytes())["config"]]:
                hexdigest = digest["digest"].removeprefix("sha256:")
                assert hash_through(m.path / f"ollama/blobs/sha256-{hexdigest}") == hexdigest
        for rel, digest in expected_lms.items():
            assert hash_through(m.path / "lmstudio" / rel) == digest
        for s in snapshots.values():
            repo = m.path / "huggingface" / ("models--" + s.repo.replace("/", "--"))
            for ref in s.refs:
                assert (repo / "refs" / ref).read_bytes() == s.commit.encode()
            for rel, data in s.files.items():
                assert hash_through(repo / "snapshots" / s.commit / rel) == sha256(data)


# -- kill -9 during import --move ------------------------------------------------------------------

# `modelstore ...` that SIGKILLs itself at the KILL_NTH catalog commit (KILL_AT=commit) or right
# after the KILL_NTH removal of a file under KILL_SRC (KILL_AT=unlink).
DRIVER = r"""
import os, signal
from modelstore.store import catalog

AT, NTH, SRC = os.environ["KILL_AT"], int(os.environ["KILL_NTH"]), os.environ["KILL_SRC"]
seen = [0]

def hit():
    seen[0] += 1
    if seen[0] == NTH:
        os.kill(os.getpid(), signal.SIGKILL)

if AT == "commit":
    _write = catalog.Catalog.write
    def write(self):
        hit()
        return _write(self)
    catalog.Catalog.write = write
else:
    _unlink = os.unlink
    def unlink(path, *args, **kwargs):
        _unlink(path, *args, **kwargs)
        if str(path).startswith(SRC):
            hit()
    os.unlink = unlink

from modelstore.cli import main
main()
"""


@dataclass
class KillCase:
    """A runtime folder (kept pristine), the models in it, and how to tell one is whole there."""

    kind: str
    pristine: Path
    whole_in_folder: Callable[[Path, str], bool]  # (folder, store name) -> still whole there
    consistent: Callable[[Path], None]  # asserts the folder is usable by its runtime
    expected: dict[str, dict[str, str]] | None = None  # store name -> {path in model: sha256}
    reference_bytes: int = 0


def _ollama_case(tmp: Path, w: Weights) -> KillCase:
    pristine = tmp / "ollama-pristine"
    models = build_ollama(pristine, w)
    write_ollama_model(pristine, "registry.ollama.ai/library/again/latest", w.other, system="shares the other GGUF")

    def whole(folder: Path, name: str) -> bool:
        if name == "again:latest":
            manifest = folder / "manifests/registry.ollama.ai/library/again/latest"
            return manifest.exists() and all(
                (folder / "blobs" / f"sha256-{e['digest'][7:]}").exists()
                for e in json.loads(manifest.read_bytes())["layers"])
        model = models[name]
        return ollama_model_whole(folder, OllamaModel(folder / model.path.relative_to(pristine), model.manifest, model.blobs))

    def consistent(folder: Path) -> None:  # no manifest ever names a missing blob
        for manifest in (folder / "manifests").glob("*/*/*/*"):
            doc = json.loads(manifest.read_bytes())
            for entry in doc["layers"] + [doc["config"]]:
                assert (folder / "blobs" / f"sha256-{entry['digest'][7:]}").exists(), f"{manifest} lost a blob"

    return KillCase("ollama", pristine, whole, consistent)


def _hf_case(tmp: Path, w: Weights) -> KillCase:
    pristine = tmp / "hub-pristine"
    snapshots = build_hf_cache(pristine, w)

    def whole(folder: Path, name: str) -> bool:
        s = snapshots[name]
        return hf_snapshot_whole(folder, s.repo, s.commit, s.files)

    def consistent(folder: Path) -> None:  # every ref names a snapshot; no dangling link
        for ref in folder.glob("models--*/refs/**/*"):
            if ref.is_file():
                assert (ref.parents[len(ref.relative_to(ref.parents[0]).parts) - 1]).exists()
                repo = next(p for p in ref.parents if p.name.startswith("models--"))
                assert (repo / "snapshots" / ref.read_text()).is_dir(), f"{ref} names a missing snapshot"
        for link in folder.glob("models--*/snapshots/**/*"):
            assert not link.is_symlink() or link.exists(), f"{link} dangles"

    return KillCase("huggingface", pristine, whole, consistent)


def _lmstudio_case(tmp: Path, w: Weights) -> KillCase:
    pristine = tmp / "lmstudio-pristine"
    layout = build_lmstudio(pristine, w)

    def whole(folder: Path, name: str) -> bool:
        return all((folder / name / fn).is_file() and file_sha256(folder / name / fn) == file_sha256(src)
                   for fn, src in layout[name].items())

    return KillCase("lmstudio", pristine, whole, lambda folder: None)


def _copy_folder(case: KillCase, to: Path) -> Path:
    if to.exists():
        shutil.rmtree(to)
    shutil.copytree(case.pristine, to, symlinks=True)
    return to


def _import_args(case: KillCase, home: Path, folder: Path) -> list[str]:
    return ["--home", str(home), "import", "--from", case.kind, str(folder), "--move"]


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", DRIVER] if env else [sys.executable, "-m", "modelstore.cli"]
    return subprocess.Popen(cmd + args, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _models_in(home: Path) -> dict[str, dict[str, str]]:
    if not (home / "catalog").is_dir():
        return {}
    with Store(home) as store:
        return {m.name: {rel: store.file(b3).sha256 for rel, b3 in m.files.items()} for m in store.models()}


def _check_after_kill(case: KillCase, home: Path, folder: Path, what: str) -> None:
    """The store is consistent; each model is whole in the store (every byte re-read) or whole in
    the folder, or both; and the folder is still one its runtime can use."""
    assert case.expected is not None
    if (home / "catalog").is_dir():
        with Store(home) as store:
            report = fsck(store, deep=True)
            assert report.clean, f"{what}: {report.problems}"
            stored = {m.name for m in store.models()}
            for name in stored:
                assert name in case.expected, f"{what}: unexpected model {name}"
                for rel, digest in case.expected[name].items():
                    assert sha256(read_model_file(store, name, rel)) == digest, f"{what}: {name}/{rel} not byte-exact"
    else:
        stored = set()
    for name in case.expected:
        assert name in stored or case.whole_in_folder(folder, name), f"{what}: {name} is nowhere whole"
    case.consistent(folder)


def _finish(case: KillCase, home: Path, folder: Path, what: str) -> None:
    """A re-run completes: every model in the store, nothing left in the folder, and after gc the
    store holds exactly what an uninterrupted import leaves."""
    assert run(_import_args(case, home, folder)) == 0, f"{what}: the re-run failed"
    assert _models_in(home) == case.expected, what
    left = [p for p in files_under(folder)]
    assert left == [], f"{what}: left behind {left}"
    assert run(["--home", str(home), "gc"]) == 0
    with Store(home) as store:
        report = fsck(store, deep=False)
    assert report.clean and report.notes == [], f"{what}: {report.problems} {report.notes}"
    assert stored_bytes(home) == case.reference_bytes, f"{what}: the store holds other bytes than a clean import"


@pytest.mark.slow
def test_kill_9_during_import_move(tmp_path: Path, weights: Weights) -> None:
    """`import --move` of an Ollama folder (four models, blobs shared between them), a Hugging Face
    cache (snapshots sharing blobs, refs) and an LM Studio tree, SIGKILLed after random delays
    spread over a whole run, and at fixed points (the n-th catalog commit, the n-th file removed
    from the folder). After every kill: fsck --deep clean; every model whole in the store or in
    its folder, or both; no Ollama manifest naming a missing blob, no HF ref naming a missing
    snapshot. Then a re-run finishes: every model stored, the folder empty, and after gc the store
    holds exactly what an uninterrupted import leaves."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    cases = [_ollama_case(tmp_path, weights), _hf_case(tmp_path, weights), _lmstudio_case(tmp_path, weights)]
    runs = 0
    started = time.monotonic()
    try:
        for case in cases:
            home, folder = tmp_path / "ref-home", _copy_folder(case, tmp_path / "work")
            t0 = time.monotonic()
            proc = _spawn(_import_args(case, home, folder))
            assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
            took = time.monotonic() - t0
            case.expected = _models_in(home)
            case.reference_bytes = stored_bytes(home)
            assert len(case.expected) >= 2 and files_under(folder) == []
            shutil.rmtree(home)

            # Most of a run is Python starting: time an import of an empty folder, and spread most
            # random kills over what comes after (the stores, commits and removals).
            (tmp_path / "empty").mkdir(exist_ok=True)
            t0 = time.monotonic()
            assert _spawn(_import_args(case, home, tmp_path / "empty")).wait(60) == 0
            startup = min(time.monotonic() - t0, took * 0.9)
            shutil.rmtree(home)

            plans: list[tuple[str, dict[str, str] | None, float]] = []
            small = case.kind == "lmstudio"  # two models, three files
            n = 3 if small else 5
            plans += [("random", None, rng.uniform(0, startup))]
            plans += [("random", None, startup + (i + rng.random()) * (took * 1.05 - startup) / n) for i in range(n)]
            plans += [(f"commit #{k}", {"KILL_AT": "commit", "KILL_NTH": str(k)}, 0) for k in ((1, 2) if small else (1, 2, 3))]
            plans += [(f"unlink #{k}", {"KILL_AT": "unlink", "KILL_NTH": str(k)}, 0) for k in ((1, 2) if small else (1, 2, 4, 8))]
            for what, env, delay in plans:
                home = tmp_path / f"home-{runs}"
                folder = _copy_folder(case, tmp_path / "work")
                env = {**env, "KILL_SRC": str(folder) + os.sep} if env else None
                proc = _spawn(_import_args(case, home, folder), env)
                try:
                    proc.wait(delay if env is None else 60)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                code = proc.wait(60)
                assert code in (0, -signal.SIGKILL), f"{case.kind} {what}: exit {code}: {proc.stderr.read() if proc.stderr else ''}"
                if env is not None:
                    assert code == -signal.SIGKILL, f"{case.kind} {what}: never got there"
                label = f"{case.kind}, kill at {what}" + (f" after {delay:.3f}s of {took:.2f}s" if env is None else "")
                _check_after_kill(case, home, folder, label)
                _finish(case, home, folder, label)
                shutil.rmtree(home)
                runs += 1
    except AssertionError as exc:
        raise AssertionError(f"{exc} (random seed {seed})") from exc
    assert runs >= 20
    assert time.monotonic() - started < 90, "keep the kill runs short: smaller models, fewer runs"


@requires_fuse
@pytest.mark.fuse
def test_the_hint_names_the_mount_of_this_store(home: Path, tmp_path: Path, weights: Weights, cli) -> None:
    """With this store mounted (and another store mounted too), the summary's line points the
    runtime at this store's mount; a store nobody mounted gets the default and how to mount it."""
    root = tmp_path / "lmstudio"
    build_lmstudio(root, weights)
    other = tmp_path / "other-home"
    assert run(["--home", str(other), "import", "--from", "lmstudio", str(root), "--no-convert"]) == 0
    assert cli("import", "--from", "lmstudio", root, "--no-convert").code == 0
    with mounted(other, tmp_path / "other-mnt"), mounted(home, tmp_path / "mnt") as m:
        hint = cli("import", "--from", "lmstudio", root, "--json").json()["hint"]
        assert hint.endswith(f"models folder = {m.path}/lmstudio"), hint
    hint = cli("import", "--from", "lmstudio", root, "--json").json()["hint"]
    assert hint.endswith("= /mnt/models/lmstudio (after `modelstore mount /mnt/models`)"), hint


def test_move_copies_what_stays_behind(home: Path, tmp_path: Path, weights: Weights) -> None:
    """--move hard-links a file in only when it leaves the folder for good. A file with another
    hard link elsewhere is copied (the other name stays, and must not share the store's inode); a
    Jan models folder that is a link to another disk still counts as Jan's own."""
    root, elsewhere = tmp_path / "lmstudio", tmp_path / "elsewhere"
    folder = write_lmstudio_model(root, "pub", "tiny-GGUF", {"tiny.gguf": weights.llama})
    elsewhere.mkdir()
    os.link(folder / "tiny.gguf", elsewhere / "mine.gguf")
    report = importing(home, "lmstudio", root, "move")
    assert [m.name for m in report.models] == ["pub/tiny-GGUF"] and files_under(root) == []
    assert (elsewhere / "mine.gguf").stat().st_nlink == 1 and inode(elsewhere / "mine.gguf") not in object_inodes(home)

    data, disk = tmp_path / "jan", tmp_path / "other-disk"
    write_jan_model(disk / "models", "tiny", weights.other)
    (data / "llamacpp").mkdir(parents=True)
    (data / "llamacpp/models").symlink_to(disk / "models" / "llamacpp" / "models")
    weights_file = disk / "models/llamacpp/models/tiny/model.gguf"
    yml = weights_file.parent / "model.yml"
    yml.write_text(yml.read_text().replace("model_path: llamacpp/models/tiny/model.gguf", f"model_path: {weights_file}"))
    ino = inode(weights_file)
    report = importing(home, "jan", data, "move")
    assert [m.name for m in report.models] == ["tiny"] and report.removal.problems == []
    assert not weights_file.exists() and ino in object_inodes(home)  # moved in: no copy


# -- other commands while an import runs ------------------------------------------------------------------
# Each test puts the other command at the one moment that matters, through the importer's own steps.


def around_import_of(monkeypatch: pytest.MonkeyPatch, name: str, *, before: Callable[[Store], object] | None = None,
                     after: Callable[[Store], object] | None = None) -> None:
    """Run `before` (or `after`) the importer imports the model found as `name`."""
    real = Importer.import_model

    def wrapped(self: Importer, found, namer):  # type: ignore[no-untyped-def]
        if found.name == name and before is not None:
            before(self.store)
        imported = real(self, found, namer)
        if found.name == name and after is not None:
            after(self.store)
        return imported

    monkeypatch.setattr(Importer, "import_model", wrapped)


def interrupt(error: BaseException) -> Callable[[Store], object]:
    def raise_it(store: Store) -> None:
        raise error
    return raise_it


def test_a_model_removed_before_its_turn_is_stored_again_not_dropped(home: Path, tmp_path: Path,
                                                                     weights: Weights,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`rm` of a model the store already held, while `import --move` of its folder runs: the import
    must not take the catalog it read at the start for the truth ("unchanged") and delete the
    originals of a model the store no longer holds."""
    root = tmp_path / "lmstudio"
    layout = build_lmstudio(root, weights)
    age(root)
    importing(home, "lmstudio", root, "copy")
    around_import_of(monkeypatch, "someone/other-GGUF", before=lambda store: store.remove("someone/other-GGUF"))
    report = importing(home, "lmstudio", root, "move")
    assert {m.name: m.status for m in report.models} == {"lmstudio-community/tiny-GGUF": "unchanged",
                                                         "someone/other-GGUF": "imported"}
    assert store_bytes_of(home, "someone/other-GGUF", "other-Q8_0.gguf") == weights.other.read_bytes()
    assert not (root / "someone").exists() and sorted(layout) == [m.name for m in report.models]


def test_a_model_removed_after_its_commit_keeps_its_files(home: Path, tmp_path: Path, weights: Weights,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`rm` between the commit and the removal of the originals: they stay where they are."""
    root = tmp_path / "lmstudio"
    build_lmstudio(root, weights)
    age(root)
    around_import_of(monkeypatch, "someone/other-GGUF", after=lambda store: store.remove("someone/other-GGUF"))
    report = importing(home, "lmstudio", root, "move")
    assert [s.why for s in report.skipped] == [
        "someone/other-GGUF was removed from the store while it was imported: its files are left where they are"]
    assert file_sha256(root / "someone/other-GGUF/other-Q8_0.gguf") == file_sha256(weights.other)
    assert not (root / "lmstudio-community").exists()  # the other model was taken as usual
    assert not (home / "moving").exists() or not any((home / "moving").iterdir())


def test_a_name_another_command_takes_meanwhile_is_not_replaced(home: Path, tmp_path: Path, weights: Weights,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Another command commits a model under the name the import wants: before the import decides
    (an `add x --name ...` while earlier models were imported), or between its decision and its
    commit. Either way the import takes name@<alternative>, and the other model stays."""
    root = tmp_path / "lmstudio"
    build_lmstudio(root, weights)
    age(root)
    mine = write_tiny_llama_gguf(tmp_path / "mine.gguf", seed=11)
    real_commit = Store.commit_model
    around_import_of(monkeypatch, "someone/other-GGUF", before=lambda store: add_local(store, mine, name="someone/other-GGUF"))
    put: list[str] = []

    def put_first(self: Store, ingest, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "lmstudio-community/tiny-GGUF" and not put:
            put.append(name)
            with self.catalog.write() as w:  # as another process's commit would land (the files: see below)
                w.put_model(ModelRecord(name, Source("local", "/elsewhere"), {"w.gguf": min(ingest.new_files)}, {}, 1.0))
        return real_commit(self, ingest, name, *args, **kwargs)  # commits the files the model above names

    monkeypatch.setattr(Store, "commit_model", put_first)
    report = importing(home, "lmstudio", root, "move")
    assert sorted(m.name for m in report.models) == ["lmstudio-community/tiny-GGUF@lmstudio",
                                                     "someone/other-GGUF@lmstudio"]
    assert store_bytes_of(home, "someone/other-GGUF", "mine.gguf") == mine.read_bytes()
    assert store_bytes_of(home, "someone/other-GGUF@lmstudio", "other-Q8_0.gguf") == weights.other.read_bytes()
    with Store(home) as store:
        assert store.model("lmstudio-community/tiny-GGUF").source == Source("local", "/elsewhere")
        assert store.model("lmstudio-community/tiny-GGUF@lmstudio").source.kind == "lmstudio"


def test_a_move_stopped_by_an_error_leaves_no_journal_of_files_already_gone(home: Path, tmp_path: Path,
                                                                            weights: Weights,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from modelstore.store.errors import OutOfSpace

    root = tmp_path / "lmstudio"
    build_lmstudio(root, weights)
    age(root)
    around_import_of(monkeypatch, "someone/other-GGUF", before=interrupt(OutOfSpace("no space left")))
    with pytest.raises(OutOfSpace):
        importing(home, "lmstudio", root, "move")
    assert not (root / "lmstudio-community").exists() and (root / "someone/other-GGUF/other-Q8_0.gguf").exists()
    assert not (home / "moving").exists() or list((home / "moving").iterdir()) == []


# -- odd entries a runtime's folder may hold ----------------------------------------------------------------


def cli_in_a_process(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """For what could hang: a FIFO read by mistake waits for a writer forever."""
    return subprocess.run([sys.executable, "-m", "modelstore.cli", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=120)


def test_special_files_are_refused_or_skipped_never_read(home: Path, tmp_path: Path, weights: Weights) -> None:
    """A FIFO or a link to /dev/zero where a model, an Ollama manifest or a Jan model.yml should be:
    add refuses it at once, import skips it and imports the rest."""
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    for special in (fifo, Path("/dev/null")):
        r = cli_in_a_process(home, "add", str(special))
        assert r.returncode == 2 and f"{special} is not a regular file" in r.stderr, r.stderr

    ollama = tmp_path / "ollama"
    write_ollama_model(ollama, "registry.ollama.ai/library/tiny/latest", weights.llama)
    manifests = ollama / "manifests/registry.ollama.ai/library"
    (manifests / "zero").mkdir()
    (manifests / "zero/latest").symlink_to("/dev/zero")
    (manifests / "fifo").mkdir()
    os.mkfifo(manifests / "fifo/latest")
    jan = tmp_path / "jan"
    write_jan_model(jan, "pub/tiny", weights.other)
    (jan / "llamacpp/models/pub/fifo").mkdir(parents=True)
    os.mkfifo(jan / "llamacpp/models/pub/fifo/model.yml")
    age(ollama)
    age(jan)
    for kind, folder, name in (("ollama", ollama, "tiny:latest"), ("jan", jan, "pub/tiny")):
        r = cli_in_a_process(home, "import", "--from", kind, str(folder), "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert [m["name"] for m in report["models"]] == [name]
        if kind == "ollama":
            assert {s["what"]: s["why"] for s in report["skipped"]} == {
                "manifests/registry.ollama.ai/library/fifo/latest": "not a usable manifest: not a regular file",
                "manifests/registry.ollama.ai/library/zero/latest": "not a usable manifest: not a regular file"}
        else:
            assert [s["what"] for s in report["skipped"]] == ["pub/fifo/model.yml"]


def test_names_no_view_can_show_are_skipped_by_import(home: Path, tmp_path: Path, weights: Weights, cli) -> None:
    """add refuses a file name that is not UTF-8; import must too, or every later mount and
    `show` of any model fails on it."""
    folder = tmp_path / "gpt4all"
    write_gpt4all_folder(folder, {"good.gguf": weights.llama})
    bad = Path(os.fsdecode(os.fsencode(folder) + b"/bad\xff.gguf"))
    shutil.copyfile(weights.other, bad)
    age(folder)
    report = importing(home, "gpt4all", folder)
    assert [m.name for m in report.models] == ["good"]
    assert ["not valid UTF-8" in s.why for s in report.skipped] == [True]
    assert cli("show", "good", "--json").code == 0
    assert bad.exists()


def test_folder_links_are_named_and_empty_files_leave_no_stray_object(cli, tmp_path: Path,
                                                                             weights: Weights) -> None:
    folder = tmp_path / "model"
    write_tiny_hf_folder(folder)
    (folder / "elsewhere").symlink_to(tmp_path)
    empty = folder / "empty.txt"
    empty.write_bytes(b"")
    r = cli("add", folder, "--json")
    assert r.code == 0, r.err
    added = r.json()
    assert added["skipped"] == ["elsewhere (a link to a folder, not followed: add or import its target by its own path)"]
    assert "empty.txt" in cli("show", "model", "--json").json()["files"]
    fsck = cli("fsck", "--json").json()
    assert fsck["notes"] == []  # the empty file left no object outside the catalog


def test_add_of_a_folder_holding_the_store_leaves_the_store_out(cli, home: Path, tmp_path: Path,
                                                                weights: Weights) -> None:
    assert cli("add", weights.other, "--name", "other").code == 0
    assert home.parent == tmp_path
    shutil.copyfile(weights.llama, tmp_path / "a.gguf")
    r = cli("add", tmp_path, "--name", "here", "--json")
    assert r.code == 0, r.err
    assert r.json()["skipped"] == ["home (the store itself: its home or a mount of it)"]
    assert list(cli("show", "here", "--json").json()["files"]) == ["a.gguf"]


def test_snapshot_files_named_like_downloads_are_imported(tmp_path: Path, home: Path) -> None:
    """A snapshot names finished files only (a download in progress is blobs/*.incomplete):
    uv.lock and notes.tmp are repo files, as `add org/name` takes them."""
    cache = tmp_path / "hub"
    files = {"README.md": b"# r\n", "uv.lock": b"lock", "notes.tmp": b"tmp"}
    write_hf_snapshot(cache, "org/x", COMMIT_A, files, ("main",))
    age(cache)
    report = importing(home, "huggingface", cache)
    assert [sorted(m.model.files) for m in report.models] == [sorted(files)]
    assert report.skipped == []


def test_add_refuses_a_bad_name_before_storing(cli, home: Path, weights: Weights) -> None:
    r = cli("add", weights.hf, "--name", "bad name!")
    assert r.code == 4 and "bad name!" in r.err
    assert [p for p in (home / "objects").rglob("*") if p.is_file()] == []


def test_a_store_inside_an_imported_model_folder_is_left_out(tmp_path: Path, weights: Weights) -> None:
    """An HF-format folder (or LM Studio model folder) holding the store's home: its files are
    the model's, the store's catalog and blobs are not."""
    folder = tmp_path / "models"
    model = folder / "tiny-hf"
    shutil.copytree(weights.hf, model)
    lms = tmp_path / "lmstudio"
    write_lmstudio_model(lms, "pub", "m-GGUF", {"m.gguf": weights.llama})
    for kind, root, inner, home in (("path", folder, model, model / "store-home"),
                                    ("lmstudio", lms, lms / "pub" / "m-GGUF", lms / "pub" / "m-GGUF" / "store-home")):
        with Store(home) as store:
            add_local(store, weights.other, name="other")
        age(root)
        report = importing(home, kind, root)
        assert [sorted(m.model.files) for m in report.models] == [sorted(p.name for p in inner.iterdir()
                                                                         if p.name != "store-home")], kind


@requires_fuse
def test_import_leaves_the_stores_own_mount_out(cli, home: Path, tmp_path: Path, weights: Weights) -> None:
    """A running mount of the store inside the folder imported: its views are the store itself."""
    folder = tmp_path / "models"
    write_gpt4all_folder(folder, {"tiny.gguf": weights.llama})
    age(folder)
    assert cli("add", weights.other, "--name", "other").code == 0
    with mounted(home, folder / "mnt"):
        r = cli("import", "--from", "path", folder, "--json")
    assert r.code == 0, r.err
    assert [m["name"] for m in r.json()["models"]] == ["tiny"]
    assert sorted(m["name"] for m in cli("ls", "--json").json()) == ["other", "tiny"]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_a_subfolder_this_user_may_not_read_is_named(home: Path, tmp_path: Path, weights: Weights,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_locations import in_user_namespace

    folder = tmp_path / "models"
    write_gpt4all_folder(folder, {"a.gguf": weights.llama, "locked/b.gguf": weights.other})
    os.chown(folder / "locked", 4242, 4242)
    (folder / "locked").chmod(0o700)
    monkeypatch.setenv("MODELSTORE_HOME", str(home))
    for args in (("import", "--from", "path", str(folder), "--dry-run", "--json"), ("add", str(folder), "--json")):
        r = in_user_namespace(*args)
        assert r.returncode == 0, r.stderr
        skipped = json.loads(r.stdout)["skipped"]
        assert [s if isinstance(s, str) else f"{s['what']} ({s['why']})" for s in skipped] == [
            "locked (not readable: Permission denied)"], args


@pytest.mark.parametrize(("error", "code", "says", "stored_before"), [
    (KeyboardInterrupt(), 130, "interrupted: 1 model(s) imported (lmstudio-community/tiny-GGUF), the rest not; "
                               "run the same import again", False),
    ("full", 7, "1 model(s) imported (lmstudio-community/tiny-GGUF), the rest not; free some space and run "
                "the same import again", False),
    ("journal", 7, "2 model(s) imported (lmstudio-community/tiny-GGUF, someone/other-GGUF), the rest not; free "
                   "some space", False),  # the second is committed, its originals stay
    (KeyboardInterrupt(), 130, "interrupted: 1 model(s) imported (lmstudio-community/tiny-GGUF)", True),
])
def test_an_import_stopped_midway_says_what_was_committed(cli, tmp_path: Path, weights: Weights,
                                                          monkeypatch: pytest.MonkeyPatch, error: object, code: int,
                                                          says: str, stored_before: bool) -> None:
    """Ctrl-C or a full disk (in the store, or noting the files --move removes) after one model
    was imported (committed, or found in the store already with its originals then removed): the
    report is printed, and the error says what was imported (not "nothing was committed")."""
    import errno

    from modelstore.store.errors import OutOfSpace

    root = tmp_path / "lmstudio"
    build_lmstudio(root, weights)
    age(root)
    if stored_before:
        assert cli("import", "--from", "lmstudio", root).code == 0
        cli("rm", "someone/other-GGUF")
    if error == "journal":  # the disk fills as the second model's originals are noted
        real_fsync, noted = os.fsync, []

        def fsync(fd: int) -> None:
            if "/moving/" in os.readlink(f"/proc/self/fd/{fd}"):
                noted.append(fd)
                if len(noted) == 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        stop = OutOfSpace("no space left in x; nothing was committed") if error == "full" else error
        around_import_of(monkeypatch, "someone/other-GGUF", before=interrupt(stop))  # type: ignore[arg-type]
    r = cli("import", "--from", "lmstudio", root, "--json", "--move")
    assert r.code == code
    assert says in r.err and "nothing was committed" not in r.err
    imported = [m["name"] for m in r.json()["models"]]  # the report still
    assert imported[0] == "lmstudio-community/tiny-GGUF" and not (root / "lmstudio-community").exists()
    assert "lmstudio-community/tiny-GGUF" in [m["name"] for m in cli("ls", "--json").json()]
    assert (root / "someone/other-GGUF/other-Q8_0.gguf").exists()


def test_a_file_name_too_long_for_a_model_name_is_cut(cli, tmp_path: Path, weights: Weights) -> None:
    folder = tmp_path / "gpt4all"
    long = "L" * 240 + ".gguf"
    write_gpt4all_folder(folder, {long: weights.llama})
    r = cli("import", "--from", "gpt4all", folder, "--json")
    assert r.code == 0, r.err
    assert [m["name"] for m in r.json()["models"]] == ["L" * 160]


def test_shards_named_in_upper_case_stay_one_model(home: Path, tmp_path: Path, weights: Weights) -> None:
    folder = tmp_path / "llama.cpp"
    folder.mkdir()
    first = write_tiny_llama_gguf(folder / "tiny.gguf", split_max_tensors=8)
    for shard in sorted(folder.iterdir()):
        shard.rename(shard.with_suffix(".GGUF"))
    age(folder)
    report = importing(home, "llamacpp", folder)
    assert [(m.name, len(m.model.files)) for m in report.models] == [("tiny", 3)]
    assert first.with_suffix(".GGUF").name in report.models[0].model.files
