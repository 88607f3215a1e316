"""Views as pure functions of a catalog snapshot: the layout rules of each runtime, checked
without FUSE. Ollama's rules come from its manifest/ and types/model/ packages (a test per rule)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf, write_tiny_projector
from modelstore.fusefs.snapshot import Snapshot, take_snapshot
from modelstore.fusefs.tree import Dir, File, Link, Literal, StoredContent, index_tree
from modelstore.fusefs.views import ViewOptions, render_root
from modelstore.fusefs.views.ollama import human_number
from modelstore.store import Store
from modelstore.store.records import ModelRecord, Source
from modelstore.store.sources.local import add_local
from modelstore.store.sources.runtimes.identity import REFS_KEY

OLLAMA_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
OLLAMA_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
OLLAMA_BLOB = re.compile(r"sha256[:-][0-9a-fA-F]{64}")


def walk(node: Dir, prefix: str = "") -> dict[str, File | Link | Dir]:
    out: dict[str, File | Link | Dir] = {}
    for name, child in node.children.items():
        path = f"{prefix}{name}"
        out[path] = child
        if isinstance(child, Dir):
            out.update(walk(child, path + "/"))
    return out


def content_bytes(store: Store, node: File) -> bytes:
    if isinstance(node.content, Literal):
        return node.content.data
    assert isinstance(node.content, StoredContent)
    return store.read_range(store.file(node.content.b3), 0, node.content.size)


@pytest.fixture
def populated(store: Store, models: Path) -> tuple[Store, Snapshot]:
    add_local(store, write_tiny_llama_gguf(models / "tiny.gguf", license="mit"), name="tiny:q8")
    add_local(store, write_tiny_llama_gguf(models / "other.gguf", seed=3), name="team/other")
    add_local(store, write_tiny_hf_folder(models / "hf"), name="my:hf-model")
    quants = models / "quants"
    quants.mkdir()
    write_tiny_llama_gguf(quants / "m-Q8_0.gguf", seed=4)
    write_tiny_llama_gguf(quants / "m-F16.gguf", seed=4, f16=True)
    add_local(store, quants, name="quants")
    with store.catalog.write() as w:  # a Hub GGUF repo, as `add org/name` records it
        model = w.model("quants")
        assert model is not None
        w.put_model(ModelRecord("org/m-GGUF", Source("huggingface", "org/m-GGUF", "a" * 40), model.files,
                                {**model.metadata, REFS_KEY: ["main"]}, 5.0))
    return store, take_snapshot(store.catalog, str(store.objects.root))


def test_views_are_deterministic(populated: tuple[Store, Snapshot]) -> None:
    _, snap = populated
    a, b = walk(render_root(snap)), walk(render_root(snap))
    assert a.keys() == b.keys()
    for path, node in a.items():
        if isinstance(node, File) and isinstance(node.content, Literal):
            assert node.content == b[path].content  # type: ignore[union-attr]


# -- huggingface/ ----------------------------------------------------------------------------


def test_hf_layout(populated: tuple[Store, Snapshot]) -> None:
    store, snap = populated
    hf = walk(render_root(snap).children["huggingface"])  # type: ignore[arg-type]
    top = {p for p in hf if "/" not in p}
    assert top == {"models--local--tiny-q8", "models--local--team_other", "models--local--my-hf-model",
                   "models--local--quants", "models--org--m-GGUF"}
    ref = hf["models--org--m-GGUF/refs/main"]
    assert isinstance(ref, File) and ref.content == Literal(b"a" * 40)  # the Hub commit, no newline
    assert [p for p in hf if "/refs/" in p] == [f"models--{repo}/refs/main" for repo in sorted(
        ("local--tiny-q8", "local--team_other", "local--my-hf-model", "local--quants", "org--m-GGUF"))]
    for path, node in hf.items():
        parts = path.split("/")
        if len(parts) >= 4 and parts[1] == "snapshots":
            if isinstance(node, Link):
                depth = len(parts) - 3
                assert node.target.startswith("../" * (depth + 1) + "blobs/")
                assert not node.target.startswith("../" * (depth + 2))
                blob = hf[f"{parts[0]}/blobs/{node.target.rsplit('/', 1)[1]}"]
                assert isinstance(blob, File)
                data = content_bytes(store, blob)
                name = node.target.rsplit("/", 1)[1]
                if parts[-1].endswith((".gguf", ".safetensors")):
                    assert name == hashlib.sha256(data).hexdigest()
                else:
                    assert name == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_hf_local_commit_is_stable_and_content_derived(populated: tuple[Store, Snapshot]) -> None:
    _, snap = populated
    hf = render_root(snap).children["huggingface"]
    ref = walk(hf)["models--local--tiny-q8/refs/main"]  # type: ignore[arg-type]
    assert isinstance(ref, File) and isinstance(ref.content, Literal)
    assert re.fullmatch(rb"[0-9a-f]{40}", ref.content.data)


def hf_repo_bytes(store: Store, snap: Snapshot) -> dict[str, set[str]]:
    """huggingface/ repo folder -> the SHA-256 of every blob it holds."""
    out: dict[str, set[str]] = {}
    for path, node in walk(render_root(snap).children["huggingface"]).items():  # type: ignore[arg-type]
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "blobs" and isinstance(node, File):
            out.setdefault(parts[0], set()).add(hashlib.sha256(content_bytes(store, node)).hexdigest())
    return out


def test_hf_repo_id_of_a_local_model_stays_when_lookalikes_are_added(store: Store, models: Path) -> None:
    """a-b and x_y are shown as local/a-b and local/x_y, their names unchanged. a--b and x/y, added
    later, are rewritten to the same ids ('--' -> '-', '/' -> '_'): they get the suffixes, the
    first two keep their ids (a script loading local/a-b must not get other weights)."""
    ggufs = {name: write_tiny_llama_gguf(models / f"{i}.gguf", seed=40 + i)
             for i, name in enumerate(("a-b", "x_y", "a--b", "x/y"))}
    sha = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in ggufs.items()}
    for name in ("a-b", "x_y"):
        add_local(store, ggufs[name], name=name)
    before = hf_repo_bytes(store, take_snapshot(store.catalog, str(store.objects.root)))
    assert sha["a-b"] in before["models--local--a-b"] and sha["x_y"] in before["models--local--x_y"]
    for name in ("a--b", "x/y"):
        add_local(store, ggufs[name], name=name)
    after = hf_repo_bytes(store, take_snapshot(store.catalog, str(store.objects.root)))
    assert after["models--local--a-b"] == before["models--local--a-b"]
    assert after["models--local--x_y"] == before["models--local--x_y"]
    assert sha["a--b"] in after["models--local--a-b-2"] and sha["a-b"] not in after["models--local--a-b-2"]
    assert sha["x/y"] in after["models--local--x_y-2"] and sha["x_y"] not in after["models--local--x_y-2"]


def test_a_local_model_never_joins_a_hub_repo_of_the_same_id(store: Store, models: Path) -> None:
    """A Hub repo whose id is local/tiny and a local model tiny (shown as local/tiny) are two
    repos: the Hub id stays as it is, the local model gets local/tiny-2."""
    hub, local = write_tiny_llama_gguf(models / "hub.gguf", seed=50), write_tiny_llama_gguf(models / "own.gguf", seed=51)
    add_local(store, local, name="tiny")
    add_local(store, hub, name="hub-source")
    with store.catalog.write() as w:  # a Hub repo, as `add local/tiny` records it
        source = w.model("hub-source")
        assert source is not None
        w.put_model(ModelRecord("local/tiny", Source("huggingface", "local/tiny", "d" * 40), source.files,
                                {REFS_KEY: ["main"]}, 9.0))
        w.remove_model("hub-source")
    snap = take_snapshot(store.catalog, str(store.objects.root))
    repos = hf_repo_bytes(store, snap)
    assert repos["models--local--tiny"] == {hashlib.sha256(hub.read_bytes()).hexdigest()}
    assert repos["models--local--tiny-2"] == {hashlib.sha256(local.read_bytes()).hexdigest()}
    hf = walk(render_root(snap).children["huggingface"])  # type: ignore[arg-type]
    assert {p.split("/")[2] for p in hf if p.startswith("models--local--tiny/snapshots/")} == {"d" * 40}

# -- ollama/ ---------------------------------------------------------------------------------


def ollama_tree(snap: Snapshot) -> dict[str, File | Link | Dir]:
    return walk(render_root(snap).children["ollama"])  # type: ignore[arg-type]


def manifests(tree: dict[str, File | Link | Dir]) -> dict[str, dict]:
    return {p: json.loads(n.content.data) for p, n in tree.items()  # type: ignore[union-attr]
            if p.startswith("manifests/") and isinstance(n, File)}


def test_ollama_manifest_paths_are_exactly_four_deep(populated: tuple[Store, Snapshot]) -> None:
    tree = ollama_tree(populated[1])
    for path, node in tree.items():
        if path.startswith("manifests/") and isinstance(node, File):
            assert len(path.split("/")) == 5, path
    assert set(manifests(tree)) == {
        "manifests/registry.ollama.ai/library/tiny/q8",
        "manifests/registry.ollama.ai/team/other/latest",
        "manifests/registry.ollama.ai/library/quants/F16",
        "manifests/registry.ollama.ai/library/quants/Q8_0",
        "manifests/hf.co/org/m-GGUF/F16",
        "manifests/hf.co/org/m-GGUF/Q8_0",
    }


def test_ollama_name_parts_are_valid(populated: tuple[Store, Snapshot]) -> None:
    for path in manifests(ollama_tree(populated[1])):
        _, host, namespace, model, tag = path.split("/")
        assert len(host) <= 350 and OLLAMA_NAMESPACE.fullmatch(namespace)
        assert OLLAMA_PART.fullmatch(model) and OLLAMA_PART.fullmatch(tag)


def test_ollama_names_are_sanitised_not_dropped(store: Store, models: Path) -> None:
    g = write_tiny_llama_gguf(models / "x.gguf")
    for name in ("a+b@c:v1", "ns.with.dots/m:1", "x" * 120 + ":t", "m:tag+plus"):
        add_local(store, g, name=name)
    tree = ollama_tree(take_snapshot(store.catalog, str(store.objects.root)))
    paths = manifests(tree)
    assert len(paths) == 4
    for path in paths:
        _, host, namespace, model, tag = path.split("/")
        assert OLLAMA_NAMESPACE.fullmatch(namespace) and OLLAMA_PART.fullmatch(model) and OLLAMA_PART.fullmatch(tag)


def test_ollama_blob_names_and_references(populated: tuple[Store, Snapshot]) -> None:
    store, snap = populated
    tree = ollama_tree(snap)
    blobs = {p.split("/", 1)[1]: n for p, n in tree.items() if p.startswith("blobs/")}
    referenced = set()
    for manifest in manifests(tree).values():
        assert manifest["schemaVersion"] == 2
        assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
        for item in [manifest["config"], *manifest["layers"]]:
            name = item["digest"].replace(":", "-")
            referenced.add(name)
            node = blobs[name]
            assert isinstance(node, File)
            data = content_bytes(store, node)
            assert len(data) == item["size"]  # exact sizes
            assert "sha256:" + hashlib.sha256(data).hexdigest() == item["digest"]
    assert all(OLLAMA_BLOB.fullmatch(n) for n in blobs)
    assert set(blobs) == referenced  # no unreferenced blobs (Ollama would prune them)


def test_ollama_config_blob(populated: tuple[Store, Snapshot]) -> None:
    store, snap = populated
    tree = ollama_tree(snap)
    manifest = manifests(tree)["manifests/registry.ollama.ai/library/tiny/q8"]
    config_node = tree["blobs/" + manifest["config"]["digest"].replace(":", "-")]
    config = json.loads(content_bytes(store, config_node))  # type: ignore[arg-type]
    assert config["model_format"] == "gguf" and config["model_family"] == "llama"
    assert config["model_families"] == ["llama"] and config["file_type"] == "F32"
    assert config["model_type"] == "123K" and config["architecture"] == "amd64" and config["os"] == "linux"
    kinds = [layer["mediaType"].rsplit(".", 1)[1] for layer in manifest["layers"]]
    assert kinds == ["model", "license"]
    license_node = tree["blobs/" + manifest["layers"][1]["digest"].replace(":", "-")]
    assert content_bytes(store, license_node) == b"mit"  # type: ignore[arg-type]


def test_ollama_model_layer_is_the_gguf_itself(populated: tuple[Store, Snapshot], models: Path) -> None:
    store, snap = populated
    tree = ollama_tree(snap)
    manifest = manifests(tree)["manifests/registry.ollama.ai/library/tiny/q8"]
    node = tree["blobs/" + manifest["layers"][0]["digest"].replace(":", "-")]
    assert content_bytes(store, node) == (models / "tiny.gguf").read_bytes()  # type: ignore[arg-type]


def test_ollama_manifest_bytes_are_stable(populated: tuple[Store, Snapshot]) -> None:
    _, snap = populated
    first = {p: n.content.data for p, n in ollama_tree(snap).items() if isinstance(n, File) and isinstance(n.content, Literal)}
    again = {p: n.content.data for p, n in ollama_tree(snap).items() if isinstance(n, File) and isinstance(n.content, Literal)}
    assert first == again
    raw = first["manifests/registry.ollama.ai/library/tiny/q8"]
    assert raw.endswith(b"}\n") and b" " not in raw  # compact JSON with a trailing newline, like Ollama


def test_ollama_no_empty_folders_no_dotfiles(populated: tuple[Store, Snapshot]) -> None:
    tree = ollama_tree(populated[1])
    for path, node in tree.items():
        assert not any(part.startswith(".") for part in path.split("/"))
        if isinstance(node, Dir) and path.startswith("manifests/"):
            assert node.children, f"empty folder {path}"


def test_ollama_skips_models_without_gguf(populated: tuple[Store, Snapshot]) -> None:
    assert not any("hf-model" in p for p in manifests(ollama_tree(populated[1])))


@pytest.mark.parametrize("n,text", [(135_000_000, "135M"), (8_030_000_000, "8.0B"), (1_240_000_000, "1.2B"),
                                    (7_000_000_000, "7B"), (122_816, "123K"), (999, "999"), (494_030_000, "494.03M")])
def test_human_number_matches_ollama(n: int, text: str) -> None:
    assert human_number(n) == text


# -- lmstudio/, llamacpp/, store/ -----------------------------------------------------------------


def test_lmstudio_and_llamacpp_layouts(populated: tuple[Store, Snapshot]) -> None:
    root = render_root(populated[1])
    lm = walk(root.children["lmstudio"])  # type: ignore[arg-type]
    files = sorted(p for p, n in lm.items() if isinstance(n, File))
    assert files == ["local/quants/m-F16.gguf", "local/quants/m-Q8_0.gguf", "local/team--other/other.gguf",
                     "local/tiny-q8/tiny.gguf", "org/m-GGUF/m-F16.gguf", "org/m-GGUF/m-Q8_0.gguf"]
    cpp = walk(root.children["llamacpp"])  # type: ignore[arg-type]
    assert sorted(p for p, n in cpp.items() if isinstance(n, File)) == [
        "org--m-GGUF-F16.gguf", "org--m-GGUF-Q8_0.gguf", "quants-F16.gguf", "quants-Q8_0.gguf",
        "team--other.gguf", "tiny-q8.gguf"]


def test_hub_snapshots_keep_only_their_own_refs(populated: tuple[Store, Snapshot]) -> None:
    """A Hub repo added at a commit, or at a PR ref, has no refs/main (huggingface_hub's own cache
    would not): loading the repo by id must not silently take it. A local model's repo has main."""
    store, _ = populated
    with store.catalog.write() as w:
        model = w.model("org/m-GGUF")
        assert model is not None
        w.put_model(ModelRecord("org/pinned", Source("huggingface", "org/pinned", "b" * 40), model.files, {}, 6.0))
        w.put_model(ModelRecord("org/pr", Source("huggingface", "org/pinned", "c" * 40), model.files,
                                {REFS_KEY: ["refs/pr/1"]}, 7.0))
    hf = walk(render_root(take_snapshot(store.catalog, str(store.objects.root))).children["huggingface"])  # type: ignore[arg-type]
    refs = {p: n.content for p, n in hf.items() if "/refs/" in p and isinstance(n, File)}
    assert refs["models--org--pinned/refs/refs/pr/1"] == Literal(b"c" * 40)
    assert not any(p.startswith("models--org--pinned/refs/") and p.endswith("/main") for p in refs)
    assert refs["models--org--m-GGUF/refs/main"] == Literal(b"a" * 40)
    assert {"b" * 40, "c" * 40} <= {p.split("/")[2] for p in hf if p.startswith("models--org--pinned/snapshots/")}


def test_split_gguf_goes_in_a_folder(store: Store, models: Path) -> None:
    folder = models / "split"
    folder.mkdir()
    for i in (1, 2):
        write_tiny_llama_gguf(folder / f"big-Q4_0-0000{i}-of-00002.gguf", seed=i)
    add_local(store, folder, name="big")
    snap = take_snapshot(store.catalog, str(store.objects.root))
    cpp = walk(render_root(snap).children["llamacpp"])  # type: ignore[arg-type]
    assert sorted(cpp) == ["big", "big/big-Q4_0-00001-of-00002.gguf", "big/big-Q4_0-00002-of-00002.gguf"]
    assert not manifests(ollama_tree(snap))  # Ollama needs one file: shown once conversion can merge


def test_store_view(populated: tuple[Store, Snapshot]) -> None:
    tree = walk(render_root(populated[1]).children["store"])  # type: ignore[arg-type]
    assert "by-model/tiny:q8/tiny.gguf" in tree and "by-model/team/other/other.gguf" in tree
    assert "by-model/my:hf-model/config.json" in tree


def test_same_content_same_inode_everywhere(populated: tuple[Store, Snapshot]) -> None:
    indexed = index_tree(render_root(populated[1]))
    by_b3: dict[str, set[int]] = {}
    for ino, node in indexed.nodes.items():
        if isinstance(node, File) and isinstance(node.content, StoredContent):
            by_b3.setdefault(node.content.b3, set()).add(ino)
    assert all(len(inos) == 1 for inos in by_b3.values())
    tiny = next(ino for ino, n in indexed.nodes.items() if isinstance(n, File) and n.content.size
                and isinstance(n.content, StoredContent) and indexed.attrs[ino].nlink >= 4)
    assert indexed.attrs[tiny].nlink >= 4  # hf blob, ollama blob, lmstudio, llamacpp, store


def test_a_folder_is_dated_by_the_newest_thing_it_holds(populated: tuple[Store, Snapshot]) -> None:
    """No folder shows 1970: the mount root, each view's root, a repo's blobs/ and snapshots/<commit>/
    and ollama/manifests take the newest mtime of what they hold; a folder holding nothing takes
    the time given (the mount's start)."""
    _, snap = populated
    root = render_root(snap)
    indexed = index_tree(root, empty_mtime_ns=7)

    def ino_of(path: str) -> int:
        ino = 1
        for part in filter(None, path.split("/")):
            ino = indexed.children[ino][part]
        return ino

    def newest(node: Dir | File | Link) -> int:
        if not isinstance(node, Dir):
            return node.mtime_ns
        return max([newest(child) for child in node.children.values()] + [node.mtime_ns]) or 7

    folders = {"": root, **{p: n for p, n in walk(root).items() if isinstance(n, Dir)}}
    for path, node in folders.items():
        assert indexed.attrs[ino_of(path)].mtime_ns == newest(node) > 7, path
    assert indexed.attrs[1].mtime_ns == max(int(m.added_at * 1e9) for m in snap.models)
    tiny = int(next(m for m in snap.models if m.name == "tiny:q8").added_at * 1e9)
    repo = "huggingface/models--local--tiny-q8"
    commit = next(iter(folders[f"{repo}/snapshots"].children))  # type: ignore[union-attr]
    for path in (repo, f"{repo}/blobs", f"{repo}/snapshots/{commit}"):
        assert indexed.attrs[ino_of(path)].mtime_ns == tiny
    assert indexed.attrs[ino_of("ollama/manifests")].mtime_ns == max(
        int(m.added_at * 1e9) for m in snap.models if m.name != "my:hf-model")
    empty = index_tree(render_root(Snapshot(0, (), {}, snap.objects_root)), empty_mtime_ns=7)
    assert {a.mtime_ns for ino, a in empty.attrs.items() if ino in empty.children} == {7}


def test_links_option(populated: tuple[Store, Snapshot]) -> None:
    store, snap = populated
    cpp = render_root(snap, ViewOptions(links=True)).children["llamacpp"]
    node = cpp.children["tiny-q8.gguf"]  # type: ignore[union-attr]
    assert isinstance(node, Link) and Path(node.target).read_bytes() == \
        content_bytes(store, File(StoredContent(*_one(store, "tiny:q8", "tiny.gguf"))))


def _one(store: Store, name: str, rel: str) -> tuple:
    r = store.file(store.model(name).files[rel])
    return r.b3, r.size, r.recipe


def test_show_says_where_a_model_is_and_why_not(populated: tuple[Store, Snapshot]) -> None:
    from modelstore.fusefs.renditions import renditions

    store, snap = populated
    by_view = {r.view: r for r in renditions(snap, store.model("tiny:q8"))}
    assert by_view["ollama"].paths == ["ollama/manifests/registry.ollama.ai/library/tiny/q8"]
    assert by_view["llamacpp"].paths == ["llamacpp/tiny-q8.gguf"]
    assert by_view["huggingface"].paths == ["huggingface/models--local--tiny-q8"]
    hf_only = {r.view: r for r in renditions(snap, store.model("my:hf-model"))}
    assert hf_only["huggingface"].present and not hf_only["ollama"].present
    assert "no GGUF" in str(hf_only["ollama"].reason) and "no GGUF" in str(hf_only["llamacpp"].reason)


def test_show_gives_the_path_that_holds_the_model_when_names_clash(store: Store, models: Path) -> None:
    """a:b and a-b want llamacpp/a-b.gguf and lmstudio/local/a-b/; x and x:latest want the tag
    x:latest. Each path `show` gives must hold that model's own bytes in the tree the mount serves,
    not the other model's (a script would load the wrong weights)."""
    from modelstore.fusefs.renditions import renditions

    for seed, name in enumerate(("a:b", "a-b", "x", "x:latest")):
        add_local(store, write_tiny_llama_gguf(models / f"m{seed}.gguf", seed=seed), name=name)
    snap = take_snapshot(store.catalog, str(store.objects.root))
    tree = walk(render_root(snap, ViewOptions()))
    for name in ("a:b", "a-b", "x", "x:latest"):
        own = {store.file(b3).sha256 for b3 in store.model(name).files.values()}
        shown = {r.view: r.paths for r in renditions(snap, store.model(name))}
        for view in ("ollama", "lmstudio", "llamacpp"):
            assert len(shown[view]) == 1, (name, view)
            node = tree[shown[view][0]]
            assert isinstance(node, File)
            data = content_bytes(store, node)
            held = {layer["digest"][7:] for layer in json.loads(data)["layers"]} if view == "ollama" \
                else {hashlib.sha256(data).hexdigest()}
            assert held & own, (name, view, shown[view][0])
    assert {r.view: r.paths for r in renditions(snap, store.model("x:latest"))}["ollama"] == \
        ["ollama/manifests/registry.ollama.ai/library/x/latest-2"]
    # The same bytes under two clashing names: each model still has a place of its own.
    twin = write_tiny_llama_gguf(models / "twin.gguf", seed=9)
    add_local(store, twin, name="t:1")
    add_local(store, twin, name="t-1")
    snap = take_snapshot(store.catalog, str(store.objects.root))
    places = [{r.view: r.paths for r in renditions(snap, store.model(name))} for name in ("t-1", "t:1")]
    for view, plain in (("llamacpp", ["llamacpp/t-1.gguf"]), ("lmstudio", ["lmstudio/local/t-1/twin.gguf"]),
                        ("store", ["store/by-model/t-1/twin.gguf"])):
        assert places[0][view] == plain and places[1][view] and places[1][view] != plain, view


def test_projectors_found_by_header_named_for_llama_server_and_paired_as_llama_cpp_does(store: Store,
                                                                                         models: Path) -> None:
    """A projector named without "mmproj" is still one (general.type): the llama.cpp and LM Studio
    views show it with "mmproj" in its name (llama-server tells it from the model by that word
    alone), Ollama gets a projector layer, and the safetensors rendition is made of the model. A
    projector at the repo's root goes with the shards in a subfolder, the one nearest in bits."""
    from modelstore.converters.planner import plan_conversions

    odd = models / "odd"
    odd.mkdir()
    write_tiny_llama_gguf(odd / "model-Q8_0.gguf", quant="Q8_0")
    projector = write_tiny_projector(odd / "vision-projector-f16.gguf")
    add_local(store, odd, name="odd")
    vl = models / "vl"
    (vl / "Q8_0").mkdir(parents=True)
    write_tiny_llama_gguf(vl / "Q8_0" / "tiny-Q8_0.gguf", quant="Q8_0", seed=5, split_max_tensors=8)
    write_tiny_projector(vl / "mmproj-F16.gguf", seed=2)
    nearest = write_tiny_projector(vl / "mmproj-Q8_0.gguf", seed=3)
    add_local(store, vl, name="vl")
    assert plan_conversions(store, "odd").unsupported == {}
    snap = take_snapshot(store.catalog, str(store.objects.root))
    tree = walk(render_root(snap, ViewOptions()))

    def shown(path: str) -> bytes:
        node = tree[path]
        assert isinstance(node, File)
        return content_bytes(store, node)

    assert shown("llamacpp/odd/mmproj-vision-projector-f16.gguf") == projector.read_bytes()
    assert shown("lmstudio/local/odd/mmproj-vision-projector-f16.gguf") == projector.read_bytes()
    assert sorted(n for n in tree if n.startswith("llamacpp/odd/")) == [
        "llamacpp/odd/mmproj-vision-projector-f16.gguf", "llamacpp/odd/model-Q8_0.gguf"]
    layers = json.loads(shown("ollama/manifests/registry.ollama.ai/library/odd/latest"))["layers"]
    assert [(layer["mediaType"].rsplit(".", 1)[1], layer["digest"]) for layer in layers] == [
        ("model", "sha256:" + hashlib.sha256((odd / "model-Q8_0.gguf").read_bytes()).hexdigest()),
        ("projector", "sha256:" + hashlib.sha256(projector.read_bytes()).hexdigest())]
    made = [p for p in tree if p.startswith("huggingface/models--local--odd/snapshots/") and p.endswith(".safetensors")]
    assert len(made) == 1, made
    assert shown("llamacpp/vl/mmproj-Q8_0.gguf") == nearest.read_bytes()
    assert sorted(n.rsplit("/", 1)[1] for n in tree if n.startswith("llamacpp/vl/")) == [
        "mmproj-Q8_0.gguf", *(f"tiny-Q8_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3))]


def test_a_split_missing_shards_is_shown_nowhere_and_show_says_why(store: Store, models: Path) -> None:
    """A split GGUF with a shard missing cannot be loaded: no view offers it (before, the lone first
    shard was Ollama's whole model and the source of a safetensors file missing most tensors)."""
    from modelstore.converters.planner import plan_conversions
    from modelstore.fusefs.renditions import renditions

    folder = models / "part"
    folder.mkdir()
    first = write_tiny_llama_gguf(folder / "tiny-Q8_0.gguf", quant="Q8_0", split_max_tensors=8)
    (folder / "tiny-Q8_0-00002-of-00003.gguf").unlink()
    add_local(store, folder, name="part")
    assert plan_conversions(store, "part").unsupported == {
        "merged-gguf": "split.count is 3, but 2 shards are stored",
        "safetensors": "the split GGUF misses shards: 2 of 3 stored"}
    snap = take_snapshot(store.catalog, str(store.objects.root))
    tree = render_root(snap, ViewOptions())
    for view in ("ollama", "llamacpp", "lmstudio"):  # huggingface/ shows the files, as a Hub repo holds them
        assert not [p for p in walk(tree.children[view]) if "part" in p or "tiny" in p], view  # type: ignore[arg-type]
    why = {r.view: r.reason for r in renditions(snap, store.model("part"))}
    assert why["llamacpp"] == why["ollama"] == "the split GGUF misses shards: 2 of 3 stored"
    assert first.name in store.model("part").files


def test_clashing_names_keep_gguf_at_the_end_and_plain_names_win(store: Store, models: Path) -> None:
    """foo+bar, foo-bar, foo:bar and foo@bar all sanitise to foo-bar: the model really named foo-bar
    gets it (whatever order they were added in), the others get foo-bar-2.gguf ... (still *.gguf,
    which llama-server and LM Studio list), and a llama.cpp file and folder never share a name,
    as llama-server names both by it."""
    gguf = write_tiny_llama_gguf(models / "tiny.gguf")
    for seed, name in enumerate(("foo+bar", "foo@bar", "foo-bar"), start=10):
        add_local(store, write_tiny_llama_gguf(models / f"{seed}.gguf", seed=seed), name=name)
    split = models / "split"
    split.mkdir()
    write_tiny_llama_gguf(split / "x-Q8_0-00001-of-00002.gguf", seed=2)
    write_tiny_llama_gguf(split / "x-Q8_0-00002-of-00002.gguf", seed=3)
    (split / "x-Q8_0.gguf").write_bytes(gguf.read_bytes())
    add_local(store, split, name="x")
    dup = models / "dup"
    for sub, seed in (("a", 20), ("b", 21)):
        (dup / sub).mkdir(parents=True)
        write_tiny_llama_gguf(dup / sub / "model.gguf", seed=seed)
    add_local(store, dup, name="dup")
    quants = models / "quants"
    quants.mkdir()
    write_tiny_llama_gguf(quants / "m-Q8_0.gguf", seed=30)
    write_tiny_llama_gguf(quants / "m-F16.gguf", seed=31, f16=True)
    write_tiny_llama_gguf(quants / "mmproj-m.gguf", seed=32, n_embd=32, name="projector")
    add_local(store, quants, name="quants")
    snap = take_snapshot(store.catalog, str(store.objects.root))
    root = render_root(snap)
    llamacpp = walk(root.children["llamacpp"])  # type: ignore[arg-type]
    tops = sorted(p for p in llamacpp if "/" not in p)
    assert {"foo-bar.gguf", "foo-bar-2.gguf", "foo-bar-3.gguf"} <= set(tops)
    assert all(t.endswith(".gguf") or isinstance(llamacpp[t], Dir) for t in tops)
    router_names = [t.removesuffix(".gguf") for t in tops]
    assert len(router_names) == len(set(router_names)), tops
    plain = next(m for m in snap.models if m.name == "foo-bar").files["12.gguf"]

    def b3(node: object) -> str:
        assert isinstance(node, File) and isinstance(node.content, StoredContent), node
        return node.content.b3

    assert b3(llamacpp["foo-bar.gguf"]) == plain
    lmstudio = walk(root.children["lmstudio"])  # type: ignore[arg-type]
    assert b3(lmstudio["local/foo-bar/12.gguf"]) == plain
    assert {p for p in lmstudio if p.startswith("local/dup/")} == {"local/dup/model.gguf", "local/dup/model-2.gguf"}
    # two quants and one projector beside them: one projector file, not one per quant
    assert sorted(p.rsplit("/", 1)[1] for p in lmstudio if p.startswith("local/quants/")) == [
        "m-F16.gguf", "m-Q8_0.gguf", "mmproj-m.gguf"]
    hf = walk(root.children["huggingface"])  # type: ignore[arg-type]
    assert {"models--local--foo-bar", "models--local--foo-bar-2", "models--local--foo-bar-3"} <= set(hf)
    assert any(b3(n) == plain for p, n in hf.items() if p.startswith("models--local--foo-bar/blobs/"))
    ollama = walk(root.children["ollama"])  # type: ignore[arg-type]
    manifest = ollama["manifests/registry.ollama.ai/library/foo-bar/latest"]
    assert isinstance(manifest, File) and isinstance(manifest.content, Literal)
    assert snap.file(plain).sha256 in manifest.content.data.decode()


def test_only_names_llama_cpp_takes_for_shards_make_a_split(store: Store, models: Path) -> None:
    """-00001-of-00000 or a shard number past the count is a plain file; shards named .GGUF (which
    llama.cpp does not find) with one missing are, by their split.count, splits never whole."""
    odd = write_tiny_llama_gguf(models / "x.gguf")
    plain = models / "x-00001-of-00000.gguf"
    odd.rename(plain)
    result = add_local(store, plain)
    assert list(result.model.files) == ["x-00001-of-00000.gguf"] and result.model.name == "x-00001-of-00000"

    upper = models / "upper"
    upper.mkdir()
    write_tiny_llama_gguf(upper / "tiny.gguf", seed=4, split_max_tensors=8)
    for shard in upper.iterdir():
        shard.rename(shard.with_suffix(".GGUF"))
    (upper / "tiny-00002-of-00003.GGUF").unlink()
    add_local(store, upper, name="upper")
    from modelstore.converters.planner import plan_conversions

    assert plan_conversions(store, "upper").unsupported["safetensors"] == (
        "tiny-00001-of-00003.GGUF, tiny-00003-of-00003.GGUF: shards not named as llama.cpp finds them "
        "(-0000N-of-0000M.gguf)")
    snap = take_snapshot(store.catalog, str(store.objects.root))
    tree = render_root(snap, ViewOptions())
    for view in ("ollama", "llamacpp", "lmstudio"):
        assert not [p for p in walk(tree.children[view]) if "upper" in p], view  # type: ignore[arg-type]
    assert [p for p in walk(tree.children["llamacpp"])] == ["x-00001-of-00000.gguf"]  # type: ignore[arg-type]
    from modelstore.fusefs.renditions import renditions

    assert {r.view: r.reason for r in renditions(snap, store.model("upper"))}["llamacpp"] == (
        "tiny-00001-of-00003.GGUF, tiny-00003-of-00003.GGUF: shards not named as llama.cpp finds them "
        "(-0000N-of-0000M.gguf)")


# -- jan/ ---------------------------------------------------------------------------------------

JAN_ID = re.compile(r"[a-zA-Z0-9/_\-.]+")  # Jan's import() isValidModelId


def write_tiny_embedding_gguf(path: Path) -> Path:
    """A GGUF whose general.architecture is one Jan takes for an embedding model."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "nomic-bert")
    w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def jan_models(store: Store, snap: Snapshot, options: ViewOptions = ViewOptions()) -> dict[str, dict]:
    """id -> {"yml": model.yml as yaml.safe_load reads it, "raw": its bytes, "files": name -> bytes}."""
    import yaml

    root = render_root(snap, options).children["jan"]
    assert isinstance(root, Dir)
    out = {}
    for model_id, folder in root.children.items():
        assert isinstance(folder, Dir) and JAN_ID.fullmatch(model_id) and model_id not in (".", "..")
        assert all(isinstance(n, (File, Link)) for n in folder.children.values())  # one level, as list() stops
        raw = folder.children["model.yml"]
        assert isinstance(raw, File) and isinstance(raw.content, Literal)
        files = {name: Path(n.target).read_bytes() if isinstance(n, Link) else content_bytes(store, n)
                 for name, n in folder.children.items() if name != "model.yml"}
        out[model_id] = {"yml": yaml.safe_load(raw.content.data), "raw": raw.content.data, "files": files}
    return out


def check_model_yml(model_id: str, entry: dict) -> None:
    """What Jan's load() and modelstore's importer rely on: paths relative to the data folder into
    this very folder, sizes and sha256 of the bytes served there, `embedding` always a bool."""
    yml, files = entry["yml"], entry["files"]
    prefix = f"llamacpp/models/{model_id}/"
    assert yml["model_path"].startswith(prefix) and yml["model_path"][len(prefix):] in files
    model = files[yml["model_path"][len(prefix):]]
    assert yml["model_sha256"] == hashlib.sha256(model).hexdigest()
    assert yml["model_size_bytes"] == len(model)
    if "mmproj_path" in yml:
        assert yml["mmproj_path"].startswith(prefix) and "mmproj" in yml["mmproj_path"][len(prefix):]
        mmproj = files[yml["mmproj_path"][len(prefix):]]
        assert yml["mmproj_sha256"] == hashlib.sha256(mmproj).hexdigest()
        assert yml["mmproj_size_bytes"] == len(mmproj)
    else:
        assert "mmproj_sha256" not in yml and "mmproj_size_bytes" not in yml
    assert yml["size_bytes"] == sum(len(data) for data in files.values())
    assert isinstance(yml["embedding"], bool) and isinstance(yml["name"], str)
    assert all(name.endswith(".gguf") for name in files)


def test_jan_layout_and_model_yml(populated: tuple[Store, Snapshot], models: Path) -> None:
    from tests.runtime_folders import add_split_and_vision_models

    store, _ = populated
    split, vision = add_split_and_vision_models(store, models)
    add_local(store, write_tiny_embedding_gguf(models / "embed.gguf"), name="nomic-embed")
    snap = take_snapshot(store.catalog, str(store.objects.root))
    jan = jan_models(store, snap)
    cpp = render_root(snap).children["llamacpp"]
    assert isinstance(cpp, Dir)
    # the ids are the llamacpp/ view's names: one namespace, unique; no GGUF (my:hf-model): not here
    assert sorted(jan) == sorted(name.removesuffix(".gguf") for name in cpp.children) == [
        "nomic-embed", "org--big", "org--m-GGUF-F16", "org--m-GGUF-Q8_0", "quants-F16", "quants-Q8_0", "see-q8",
        "team--other", "tiny-q8"]
    for model_id, entry in jan.items():
        check_model_yml(model_id, entry)
    assert jan["tiny-q8"]["yml"] == {
        "model_path": "llamacpp/models/tiny-q8/tiny.gguf", "name": "tiny:q8",
        "size_bytes": (models / "tiny.gguf").stat().st_size,
        "model_sha256": hashlib.sha256((models / "tiny.gguf").read_bytes()).hexdigest(),
        "model_size_bytes": (models / "tiny.gguf").stat().st_size, "embedding": False}
    assert jan["tiny-q8"]["files"] == {"tiny.gguf": (models / "tiny.gguf").read_bytes()}
    # a split: every shard beside the first, under its own name (llama.cpp opens them by name)
    shards = sorted(p.name for p in split.iterdir())
    assert len(shards) == 3 and sorted(jan["org--big"]["files"]) == shards
    assert jan["org--big"]["yml"]["model_path"] == f"llamacpp/models/org--big/{shards[0]}"
    assert all(jan["org--big"]["files"][name] == (split / name).read_bytes() for name in shards)
    # a projector: with "mmproj" in its name, named by mmproj_path
    assert jan["see-q8"]["files"] == {"see-Q8_0.gguf": (vision / "see-Q8_0.gguf").read_bytes(),
                                      "mmproj-projector.gguf": (vision / "projector.gguf").read_bytes()}
    assert jan["see-q8"]["yml"]["mmproj_path"] == "llamacpp/models/see-q8/mmproj-projector.gguf"
    # several quants of one model: one id each, told apart by name too
    assert (jan["quants-F16"]["yml"]["name"], jan["quants-Q8_0"]["yml"]["name"]) == ("quants (F16)", "quants (Q8_0)")
    assert {i for i, e in jan.items() if e["yml"]["embedding"]} == {"nomic-embed"}


def test_jan_model_yml_names_with_yaml_special_characters(store: Store, models: Path) -> None:
    """Any name reads back as the same string, in YAML 1.1 (PyYAML) and 1.2 (Jan's serde_yaml),
    where a plain 1e5 or 0o17 is a number: every string is double-quoted."""
    from modelstore.fusefs.views import VIEWS

    add_local(store, write_tiny_llama_gguf(models / "tiny.gguf"), name="plain")
    tricky = ["1e5", "0o17", "1:30", "null", "true", "123", 'we"ird: #name {x} [y] & *z !t | >f \'q\' % @ `',
              "ünï: cödé", "a" * 150]
    with store.catalog.write() as w:
        model = w.model("plain")
        assert model is not None
        for i, name in enumerate(tricky):
            w.put_model(ModelRecord(name, Source("local", f"/x/{i}"), model.files, model.metadata, 10.0 + i))
    snap = take_snapshot(store.catalog, str(store.objects.root))
    root = VIEWS["jan"](snap, ViewOptions())
    import yaml

    names = {}
    for model_id, folder in root.children.items():
        assert isinstance(folder, Dir) and JAN_ID.fullmatch(model_id) and len(model_id) <= 130
        node = folder.children["model.yml"]
        assert isinstance(node, File) and isinstance(node.content, Literal)
        text = node.content.data.decode()
        assert len(text.splitlines()) == 6  # one line per field: no folding a reader could get wrong
        for line in text.splitlines():
            key, value = line.split(": ", 1)
            assert value.startswith('"') or key in ("size_bytes", "model_size_bytes", "embedding"), line
        yml = yaml.safe_load(text)
        assert yaml.load(text, Loader=yaml.BaseLoader)["name"] == yml["name"]
        names[yml["name"]] = node.owner
    assert names == {name: name for name in ["plain", *tricky]}


def test_jan_links_option_and_owners(populated: tuple[Store, Snapshot]) -> None:
    """--links: the weights are links to the store's objects, model.yml stays generated; every file
    is tagged with its model, so `show` lists jan/ paths like the other views'."""
    from modelstore.fusefs.renditions import renditions

    store, snap = populated
    linked = render_root(snap, ViewOptions(links=True)).children["jan"]
    assert isinstance(linked, Dir)
    tiny = linked.children["tiny-q8"]
    assert isinstance(tiny, Dir) and isinstance(tiny.children["tiny.gguf"], Link)
    assert isinstance(tiny.children["model.yml"], File)
    assert jan_models(store, snap, ViewOptions(links=True)) == jan_models(store, snap)
    by_view = {r.view: r for r in renditions(snap, store.model("tiny:q8"))}
    assert by_view["jan"].paths == ["jan/tiny-q8/model.yml", "jan/tiny-q8/tiny.gguf"]
    both = {r.view: r for r in renditions(snap, store.model("quants"))}
    assert both["jan"].paths == ["jan/quants-F16/m-F16.gguf", "jan/quants-F16/model.yml",
                                 "jan/quants-Q8_0/m-Q8_0.gguf", "jan/quants-Q8_0/model.yml"]
    hf_only = {r.view: r for r in renditions(snap, store.model("my:hf-model"))}
    assert not hf_only["jan"].present and "no GGUF" in str(hf_only["jan"].reason)


def test_names_that_clash_hide_no_model_and_end_no_view(store: Store, models: Path) -> None:
    """Names a view turns into one path (foo's file foo.gguf and model foo.gguf's folder; a:b and
    a-b.gguf; x/b shown flat beside a model really named x--b, and x/b-2): every model is still
    shown in every GGUF view and in store/, and building the tree raises nothing."""
    plain = write_tiny_llama_gguf(models / "plain.gguf")
    withproj = models / "withproj"
    withproj.mkdir()
    write_tiny_llama_gguf(withproj / "m.gguf", seed=2)
    write_tiny_projector(withproj / "mmproj-m.gguf")
    names = {"foo": plain, "foo.gguf": withproj, "a-b.gguf": withproj, "a:b": plain,
             "x": plain, "x/b": plain, "x--b": plain, "x/b-2": plain}
    for name, source in names.items():
        add_local(store, source, name=name)
    root = render_root(take_snapshot(store.catalog, str(store.objects.root)))
    for view in ("llamacpp", "jan", "lmstudio", "store"):
        tree = walk(root.children[view])  # type: ignore[arg-type]
        shown = {n.owner for n in tree.values() if isinstance(n, File)}
        assert shown == set(names), (view, set(names) - shown)
    cpp = walk(root.children["llamacpp"])  # type: ignore[arg-type]
    assert isinstance(cpp["foo.gguf"], File) and cpp["foo.gguf"].owner == "foo"
    assert sorted(p for p in cpp if p.startswith("foo-2")) == ["foo-2.gguf", "foo-2.gguf/m.gguf",
                                                              "foo-2.gguf/mmproj-m.gguf"]


def _strict_json(data: bytes) -> object:
    """Parse as serde_json and Go do: no NaN or Infinity."""
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")
    return json.loads(data, parse_constant=refuse)


@pytest.mark.parametrize("arch", [float("nan"), 7])
def test_ollama_config_has_strings_whatever_the_gguf_architecture(store: Store, models: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  arch: object) -> None:
    """Ollama's ConfigV2 reads model_family and model_families as strings: a GGUF whose
    general.architecture is a NaN gave `"model_family":NaN`, which Go's decoder refuses."""
    import gguf

    kind = gguf.GGUFValueType.FLOAT32 if isinstance(arch, float) else gguf.GGUFValueType.UINT32
    add_name = gguf.GGUFWriter.add_name

    def odd_architecture(self: gguf.GGUFWriter, name: str) -> None:
        add_name(self, name)
        self.kv_data[0]["general.architecture"] = gguf.GGUFValue(arch, kind)
    monkeypatch.setattr(gguf.GGUFWriter, "add_name", odd_architecture)
    add_local(store, write_tiny_llama_gguf(models / "odd.gguf"), name="odd")
    tree = ollama_tree(take_snapshot(store.catalog, str(store.objects.root)))
    [(path, manifest)] = manifests(tree).items()
    node = tree["blobs/" + manifest["config"]["digest"].replace(":", "-")]
    config = _strict_json(content_bytes(store, node))  # type: ignore[arg-type]
    assert config["model_family"] == "" and config["model_families"] == []  # type: ignore[index]
    assert all(isinstance(config[k], str) for k in ("model_format", "model_type", "file_type"))  # type: ignore[index]
    _strict_json(tree[path].content.data)  # type: ignore[union-attr]
