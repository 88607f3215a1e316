"""`modelstore scan`: exact byte figures on runtime-like folders, the hash cache, and that the scanned
folders are only ever read.

Expected figures are computed here with the `gguf` package's own reader and SHA-256, not with the
store's parsers or BLAKE3, and checked once more against what a real `add` stores."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from gguf import GGUFReader
from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf
from modelstore.store import Store
from modelstore.store.ingest import MIN_SHARED_TENSOR
from modelstore.store.sources.local import add_local

from tests.conftest import stored_bytes
from tests.mounting import mounted, requires_fuse
from tests.runtime_folders import (
    write_hf_snapshot,
    write_lmstudio_model,
    write_ollama_model,
)

COMMIT = "a" * 40
OTHER_COMMIT = "b" * 40
TUNED_TENSOR = "blk.1.ffn_up.weight"


@dataclass
class Layout:
    base: Path  # the generated GGUF
    tuned: Path  # the same model with one tensor changed
    ollama: Path
    lmstudio: Path
    hf: Path
    partial: list[Path]
    dangling: Path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    made = tmp_path / "made"
    made.mkdir()
    base = write_tiny_llama_gguf(made / "tiny.gguf")
    tuned = write_tiny_llama_gguf(made / "tiny-tuned.gguf", changed={TUNED_TENSOR: 7})
    scanned = tmp_path / "scanned"
    ollama = scanned / "ollama"
    write_ollama_model(ollama, "registry.ollama.ai/library/tiny/latest", base)
    lmstudio = scanned / "lmstudio"
    write_lmstudio_model(lmstudio, "pub", "tiny-GGUF", {base.name: base})
    write_lmstudio_model(lmstudio, "pub", "tiny-tuned-GGUF", {tuned.name: tuned})
    hf = scanned / "hf"
    write_hf_snapshot(hf, "org/tiny-GGUF", COMMIT, {base.name: base.read_bytes()}, refs=("main",))
    write_hf_snapshot(hf, "org/tiny-GGUF", OTHER_COMMIT, {base.name: base.read_bytes()})  # links to the same blob
    no_exist = hf / "models--org--tiny-GGUF" / ".no_exist" / COMMIT  # hidden: ignored
    no_exist.mkdir(parents=True)
    (no_exist / "config.json").touch()
    partial = [ollama / "blobs" / f"sha256-{'1' * 64}-partial-0",
               hf / "models--org--tiny-GGUF" / "blobs" / "x.incomplete",
               lmstudio / "pub" / "tiny-GGUF" / "next.gguf.part"]
    for i, p in enumerate(partial):
        p.write_bytes(b"p" * (1000 + i))
    dangling = hf / "models--org--tiny-GGUF" / "snapshots" / COMMIT / "gone.gguf"
    dangling.symlink_to("../../blobs/" + "0" * 64)
    return Layout(base, tuned, ollama, lmstudio, hf, partial, dangling)


# -- the expected figures, computed independently ----------------------------------------------------

def big_tensors(path: Path) -> list[tuple[str, int]]:
    """(SHA-256, length) of the tensors of at least MIN_SHARED_TENSOR bytes, via gguf's own reader."""
    reader = GGUFReader(path)
    out = []
    for t in reader.tensors:
        if t.n_bytes >= MIN_SHARED_TENSOR:
            with open(path, "rb") as f:
                f.seek(t.data_offset)
                out.append((hashlib.sha256(f.read(t.n_bytes)).hexdigest(), int(t.n_bytes)))
    return out


def tensor_length(path: Path, name: str) -> int:
    return int(next(t.n_bytes for t in GGUFReader(path).tensors if t.name == name))


def expected(paths: list[Path]) -> dict[str, int]:
    """logical / whole-file / tensor-level bytes of these paths (files reached twice counted once)."""
    by_inode = {(p.stat().st_dev, p.stat().st_ino): p for p in paths}
    contents = {sha256_file(p): p for p in by_inode.values()}
    tensors: dict[str, int] = {}
    rest = 0
    for p in contents.values():
        found = big_tensors(p) if p.read_bytes()[:4] == b"GGUF" else []
        rest += p.stat().st_size - sum(n for _, n in found)
        tensors.update(found)
    return {"files": len(by_inode), "logical_bytes": sum(p.stat().st_size for p in by_inode.values()),
            "whole_file_dedup_bytes": sum(p.stat().st_size for p in contents.values()),
            "tensor_dedup_bytes": rest + sum(tensors.values())}


def counted_files(folder: Path, layout: Layout) -> list[Path]:
    """The files scan should count under `folder`: everything but hidden, partial and dangling ones."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames]
    return [p for p in out if p not in layout.partial and p != layout.dangling]


def figures(entry: dict[str, object]) -> dict[str, object]:
    return {k: entry[k] for k in ("files", "logical_bytes", "whole_file_dedup_bytes", "tensor_dedup_bytes")}


def tree_state(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under `folder` with its mode, size and mtime, links not followed."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            state[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


# -- tests --------------------------------------------------------------------------------------------

def test_figures_per_folder_and_in_total(cli, layout: Layout) -> None:
    folders = [layout.ollama, layout.lmstudio, layout.hf]
    r = cli("scan", *folders, "--json")
    assert r.code == 0, r.err
    report = r.json()
    for entry, folder in zip(report["folders"], folders):
        assert entry["path"] == str(folder)
        assert figures(entry) == expected(counted_files(folder, layout))
    everything = [p for f in folders for p in counted_files(f, layout)]
    total = expected(everything)
    assert figures(report["total"]) == total
    # Spelled out: the base GGUF is on disk three times (the HF snapshots are two links to one
    # blob), the fine-tune shares all but one tensor with it, the rest is small text.
    base, tuned = layout.base.stat().st_size, layout.tuned.stat().st_size
    base_tensors = dict(big_tensors(layout.base))
    shared = sum(n for digest, n in big_tensors(layout.tuned) if digest in base_tensors)
    assert shared == sum(base_tensors.values()) - tensor_length(layout.base, TUNED_TENSOR)
    small = sum(p.stat().st_size for p in everything if p.stat().st_size < 1000)
    assert total["files"] == 7
    assert total["logical_bytes"] == 3 * base + tuned + small
    assert total["whole_file_dedup_bytes"] == base + tuned + small
    assert total["tensor_dedup_bytes"] == base + tuned - shared + small
    assert report["total"]["saved_bytes"] == total["logical_bytes"] - total["tensor_dedup_bytes"]


def test_top_duplications_name_the_models(cli, layout: Layout) -> None:
    report = cli("scan", layout.ollama, layout.lmstudio, layout.hf, "--json").json()
    first, second = report["duplicates"][:2]
    base = layout.base.stat().st_size
    assert first["kind"] == "same file" and first["bytes"] == base and first["saved_bytes"] == 2 * base
    assert sorted(p["name"] for p in first["places"]) == ["org/tiny-GGUF/tiny.gguf", "pub/tiny-GGUF/tiny.gguf",
                                                          "tiny:latest"]
    assert {p["folder"] for p in first["places"]} == {str(layout.ollama), str(layout.lmstudio), str(layout.hf)}
    assert second["kind"] == "shared tensors" and len(second["places"]) == 2
    assert "pub/tiny-tuned-GGUF/tiny-tuned.gguf" in [p["name"] for p in second["places"]]
    total = report["total"]
    by_kind = {kind: sum(d["saved_bytes"] for d in report["duplicates"] if d["kind"] == kind)
               for kind in ("same file", "shared tensors")}
    assert by_kind["same file"] == total["logical_bytes"] - total["whole_file_dedup_bytes"]
    assert by_kind["shared tensors"] == total["whole_file_dedup_bytes"] - total["tensor_dedup_bytes"]


def test_partial_and_dangling_files_are_listed_not_counted(cli, layout: Layout) -> None:
    report = cli("scan", layout.ollama, layout.lmstudio, layout.hf, "--json").json()
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert skipped == {**{str(p): "an unfinished download" for p in layout.partial},
                       str(layout.dangling): f"a dangling link (to ../../blobs/{'0' * 64})"}
    counted = sum(f["logical_bytes"] for f in report["folders"])
    assert counted == sum(expected(counted_files(f, layout))["logical_bytes"]
                          for f in (layout.ollama, layout.lmstudio, layout.hf))
    table = cli("scan", layout.hf)
    assert "not counted: 2" in table.err and "gone.gguf: a dangling link" in table.err


def test_scan_predicts_what_add_stores(cli, home: Path, layout: Layout) -> None:
    report = cli("scan", layout.ollama, layout.lmstudio, layout.hf, "--json").json()
    assert report["in_store"] is None  # no store yet
    with Store(home) as store:
        add_local(store, layout.lmstudio / "pub" / "tiny-GGUF" / "tiny.gguf", name="first")
    first = stored_bytes(home)
    report = cli("scan", layout.ollama, layout.lmstudio, layout.hf, "--json").json()
    assert report["in_store"] == {"home": str(home), "stored_bytes": first,
                                  "new_bytes": report["total"]["tensor_dedup_bytes"] - first}
    for p in layout.partial:  # add's own filter lets Ollama's "-partial-0" chunks through
        p.unlink()
    with Store(home) as store:
        for i, folder in enumerate((layout.ollama, layout.lmstudio, layout.hf)):
            add_local(store, folder, name=f"folder-{i}")
    assert stored_bytes(home) == report["total"]["tensor_dedup_bytes"]
    assert stored_bytes(home) - first == report["in_store"]["new_bytes"]


def test_a_file_sharing_under_one_percent_is_predicted_whole(cli, home: Path, models: Path) -> None:
    """add stores a file whole when the tensors it could reuse are under 1% of it: scan says so."""
    shape = {"n_embd": 256, "n_head": 8, "n_head_kv": 1, "n_ff": 512}
    same = {"blk.0.attn_k.weight": 99}  # one 32 KiB tensor, the same in both
    a = write_tiny_llama_gguf(models / "a.gguf", seed=0, changed=same, **shape)
    b = write_tiny_llama_gguf(models / "b.gguf", seed=1, changed=same, **shape)
    shared = tensor_length(b, "blk.0.attn_k.weight")
    assert dict(big_tensors(a)).keys() & dict(big_tensors(b)).keys()  # they do share it...
    assert 0 < shared < 0.01 * b.stat().st_size  # ...but too little of b to be worth it
    report = cli("scan", models, "--json").json()
    assert report["total"]["tensor_dedup_bytes"] == a.stat().st_size + b.stat().st_size
    with Store(home) as store:
        add_local(store, models, name="both")
    assert stored_bytes(home) == report["total"]["tensor_dedup_bytes"]


def test_second_scan_hashes_nothing(cli, home: Path, layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    import modelstore.store.scan as scan_module

    hashed: list[str] = []
    real = scan_module.hash_file

    def counting(path: str, *args: object, **kwargs: object):
        hashed.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "hash_file", counting)
    folders = (layout.ollama, layout.lmstudio, layout.hf)
    first = cli("scan", *folders, "--json").json()
    assert len(hashed) == 7 == len(set(hashed))  # each inode once, though 3 paths reach the HF blob
    assert (home / "scan-cache.sqlite").is_file()

    hashed.clear()
    second = cli("scan", *folders, "--json").json()
    assert hashed == []
    assert second["hashing"] == {"hashed_files": 0, "hashed_bytes": 0, "cached_files": 7}
    assert second["total"] == first["total"] and second["duplicates"] == first["duplicates"]

    touched = layout.lmstudio / "pub" / "tiny-tuned-GGUF" / "tiny-tuned.gguf"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1))
    cli("scan", *folders, "--json")
    assert hashed == [os.path.realpath(touched)]

    hashed.clear()
    third = cli("scan", *folders, "--json", "--no-cache").json()
    assert len(hashed) == 7 and third["total"] == first["total"]


def test_cache_forgets_deleted_files(cli, home: Path, layout: Layout) -> None:
    import sqlite3

    cli("scan", layout.lmstudio)
    gone = layout.lmstudio / "pub" / "tiny-tuned-GGUF" / "tiny-tuned.gguf"
    gone.unlink()
    cli("scan", layout.lmstudio)
    with sqlite3.connect(home / "scan-cache.sqlite") as db:
        rows = [r[0] for r in db.execute("SELECT realpath FROM files")]
    assert rows == [os.fsencode(os.path.realpath(layout.lmstudio / "pub" / "tiny-GGUF" / "tiny.gguf"))]


def test_scanned_folders_are_never_written(cli, layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    scanned = layout.ollama.parent
    before = tree_state(scanned)
    assert cli("scan", scanned).code == 0
    assert cli("scan", scanned, "--json").code == 0
    assert tree_state(scanned) == before
    # A store home inside the scanned folder: the cache stays in memory rather than land there.
    monkeypatch.setenv("MODELSTORE_HOME", str(scanned / "home-inside"))
    r = cli("scan", scanned)
    assert r.code == 0 and "no hash cache: the store home" in r.err
    assert tree_state(scanned) == before


def test_folder_links_are_not_followed_file_links_are(cli, tmp_path: Path, layout: Layout) -> None:
    folder = tmp_path / "links"
    folder.mkdir()
    (folder / "to-lmstudio").symlink_to(layout.lmstudio)
    (folder / "tuned.gguf").symlink_to(layout.tuned)  # a file outside the folder
    report = cli("scan", folder, "--json").json()
    assert figures(report["total"]) == expected([layout.tuned])
    assert report["skipped"] == [{"path": str(folder / "to-lmstudio"),
                                  "reason": "a link to a folder, not followed: add or import its target by its own path"}]


def test_bad_header_counts_as_plain_bytes(cli, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "fake.gguf").write_bytes(b"not a gguf at all" * 100)
    write_tiny_hf_folder(folder / "hf-model")
    report = cli("scan", folder, "--json").json()
    assert report["problems"] == [{"path": str(folder / "fake.gguf"),
                                   "reason": "not a GGUF file (no 'GGUF' magic at the start)"}]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert report["total"]["logical_bytes"] == sum(p.stat().st_size for p in files)
    # The safetensors file has no repeated tensors (seeded randoms), so nothing is shared.
    assert report["total"]["tensor_dedup_bytes"] == report["total"]["logical_bytes"]
    # Cached digests keep the problem: a second scan still reports it.
    assert cli("scan", folder, "--json").json()["problems"] == report["problems"]


def test_default_folders_of_every_runtime(cli, tmp_path: Path, layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_home = tmp_path / "user"
    (fake_home / ".lmstudio").mkdir(parents=True)
    (fake_home / ".lmstudio" / "models").symlink_to(layout.lmstudio)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "LLAMA_CACHE", "XDG_CACHE_HOME",
                "XDG_DATA_HOME", "XDG_CONFIG_HOME", "APP_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(fake_home))
    monkeypatch.setenv("OLLAMA_MODELS", str(layout.ollama))
    monkeypatch.setenv("HF_HUB_CACHE", str(layout.hf))
    report = cli("scan", "--json").json()
    assert [(f["runtime"], f["path"]) for f in report["folders"]] == [
        ("ollama", str(layout.ollama)), ("lmstudio", str(fake_home / ".lmstudio" / "models")),
        ("huggingface", str(layout.hf))]
    assert report["total"]["logical_bytes"] == cli("scan", layout.ollama, layout.lmstudio, layout.hf,
                                                   "--json").json()["total"]["logical_bytes"]


def test_json_shape_and_table(cli, layout: Layout) -> None:
    r = cli("scan", layout.ollama, layout.lmstudio, "--json", "--top", "1")
    report = r.json()
    assert set(report) == {"folders", "total", "duplicates", "skipped", "problems", "hashing", "in_store", "cache",
                           "cache_problem"}
    assert set(report["total"]) == {"files", "logical_bytes", "whole_file_dedup_bytes", "tensor_dedup_bytes",
                                    "saved_bytes", "ratio"}
    assert set(report["folders"][0]) == {"path", "runtime"} | set(report["total"])
    assert len(report["duplicates"]) == 1
    assert set(report["duplicates"][0]) == {"kind", "bytes", "saved_bytes", "places"}
    assert set(report["duplicates"][0]["places"][0]) == {"path", "name", "folder"}
    table = cli("scan", layout.ollama, layout.lmstudio)
    assert table.code == 0
    header = table.out.splitlines()[0].split()
    assert header == ["FOLDER", "RUNTIME", "FILES", "LOGICAL", "WHOLE-FILE", "TENSOR", "SAVED", "RATIO"]
    total_row = next(line for line in table.out.splitlines() if line.startswith("all folders"))
    assert total_row.split()[2] == str(report["total"]["files"])
    assert "largest duplications" in table.out and "tiny:latest" in table.out


def test_missing_folder_is_an_error(cli, tmp_path: Path) -> None:
    r = cli("scan", tmp_path / "nope")
    assert r.code == 3 and "no such file or folder" in r.err


def test_help_has_examples(cli) -> None:
    r = cli("scan", "--help")
    assert r.code == 0 and "modelstore scan ~/models" in r.out and "--json" in r.out


def test_odd_names_hostile_headers_and_manifests(cli, tmp_path: Path) -> None:
    """A file name that is not UTF-8 is scanned and shown escaped; a safetensors header of deeply
    nested JSON counts as plain bytes, with the reason; a manifest whose layers are not a list is
    passed over; a real model named like x-partial-ft.gguf is counted; zero-byte files are no
    duplication worth listing."""
    folder = tmp_path / "odd"
    (folder / "manifests/registry.ollama.ai/library/bad").mkdir(parents=True)
    (folder / "manifests/registry.ollama.ai/library/bad/latest").write_text('{"layers": 5}')
    for name in (b"bad\xffname.bin", b"bad\x1b[31mname.bin"):  # not UTF-8; a terminal escape
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(b"x" * 100)
    nested = b"[" * 5000 + b"]" * 5000
    (folder / "deep.safetensors").write_bytes(len(nested).to_bytes(8, "little") + nested)
    write_tiny_llama_gguf(folder / "x-partial-ft.gguf")
    (folder / "empty-1").touch()
    (folder / "empty-2").touch()

    report = cli("scan", folder, "--json").json()

    files = [p for p in folder.rglob("*") if p.is_file()]
    assert report["total"]["files"] == len(files) == 7
    assert report["total"]["logical_bytes"] == sum(p.stat().st_size for p in files)
    assert report["skipped"] == []
    assert [(p["path"], p["reason"]) for p in report["problems"]] == [
        (str(folder / "deep.safetensors"), "safetensors header is not valid JSON: JSON nested too deeply")]
    assert [(d["kind"], d["saved_bytes"]) for d in report["duplicates"]] == [("same file", 100)]  # not the empty files
    table = cli("scan", folder)
    assert table.code == 0 and "bad\\xffname.bin" in table.out and "bad\\x1b[31mname.bin" in table.out
    assert "\x1b" not in table.out
    assert cli("scan", folder, "--top", "-1").code == 2


def test_store_home_inside_the_folder_is_not_scanned(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store inside the scanned folder: its blobs and catalog are not more copies of the models,
    and the same folder named twice is one row."""
    top = tmp_path / "top"
    (top / "models").mkdir(parents=True)
    gguf = write_tiny_llama_gguf(top / "models" / "tiny.gguf")
    home = top / "store"
    monkeypatch.setenv("MODELSTORE_HOME", str(home))
    assert cli("add", gguf, "--no-convert").code == 0
    report = cli("scan", top, top / ".", "--json").json()
    assert len(report["folders"]) == 1
    assert figures(report["total"]) == expected([gguf])
    assert report["in_store"]["new_bytes"] == 0


def test_a_file_rewritten_with_its_mtime_put_back_is_hashed_again(cli, tmp_path: Path) -> None:
    """Same inode, same size, the old mtime restored (cp -p, touch -r): the ctime still moved, so
    the cache's old hashes are not used."""
    folder = tmp_path / "m"
    folder.mkdir()
    a, b = folder / "a.bin", folder / "b.bin"
    a.write_bytes(os.urandom(50_000))
    b.write_bytes(a.read_bytes())
    assert cli("scan", folder, "--json").json()["total"]["whole_file_dedup_bytes"] == 50_000
    st = b.stat()
    with open(b, "r+b") as f:
        f.write(os.urandom(50_000))
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = cli("scan", folder, "--json").json()
    assert report["hashing"]["hashed_files"] == 1
    assert report["total"]["whole_file_dedup_bytes"] == 100_000


def test_a_damaged_cache_is_set_aside(cli, home: Path, layout: Layout) -> None:
    """The cache is written without fsync, so a crash may leave it damaged: the scan still gives
    the right figures, says so, removes the damaged file, and the next scan builds a new one."""
    first = cli("scan", layout.lmstudio, "--json").json()
    cache = home / "scan-cache.sqlite"
    data = bytearray(cache.read_bytes())
    data[4096 + 100:] = b"\x5a" * (len(data) - 4096 - 100)
    cache.write_bytes(bytes(data))

    second = cli("scan", layout.lmstudio, "--json").json()
    assert second["total"] == first["total"] and second["cache_problem"] and second["cache"] is None
    assert not cache.exists()
    third = cli("scan", layout.lmstudio, "--json").json()
    assert third["total"] == first["total"] and third["cache_problem"] is None and cache.is_file()
    assert cli("scan", layout.lmstudio, "--json").json()["hashing"]["hashed_files"] == 0


def test_a_file_that_cannot_be_read_is_named_as_scanned(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error is reported under the path the scan found, not where a link leads."""
    from modelstore.store import scan as scan_module

    folder, elsewhere = tmp_path / "m", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (elsewhere / "real.bin").write_bytes(b"r" * 1000)
    (folder / "link.bin").symlink_to(elsewhere / "real.bin")

    def failing(path: str, *args: object, **kwargs: object):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(scan_module, "hash_file", failing)
    report = cli("scan", folder, "--json").json()
    assert report["skipped"] == [{"path": str(folder / "link.bin"), "reason": "not readable: Input/output error"}]
    assert report["total"]["files"] == 0


def test_a_cache_that_cannot_be_opened_is_left_alone(cli, home: Path, layout: Layout) -> None:
    """Not damaged but unusable (here a folder where the file should be): the scan works, says the
    cache could not be used, and removes nothing."""
    (home / "scan-cache.sqlite").mkdir(parents=True)
    r = cli("scan", layout.lmstudio)
    assert r.code == 0 and "the hash cache could not be used" in r.err and "set aside" not in r.err
    assert (home / "scan-cache.sqlite").is_dir()


@requires_fuse
@pytest.mark.fuse
def test_a_mount_inside_the_folder_is_not_scanned(cli, home: Path, tmp_path: Path) -> None:
    """A store mounted inside the scanned folder: its views are the store's models again, not
    more copies, and reading them would convert what it shows converted."""
    top = tmp_path / "top"
    (top / "models").mkdir(parents=True)
    gguf = write_tiny_llama_gguf(top / "models" / "tiny.gguf")
    assert cli("add", gguf).code == 0
    with mounted(home, top / "mnt"):
        report = cli("scan", top, "--json").json()
        log = top / "mnt.log"  # the test's mount writes its log beside the mount point, as it goes
        assert report["total"]["files"] == 2 and report["duplicates"] == []
        assert gguf.stat().st_size <= report["total"]["logical_bytes"] <= gguf.stat().st_size + log.stat().st_size


def test_hf_cache_blobs_are_read_by_their_links_names(cli, tmp_path: Path) -> None:
    """An HF cache names a safetensors blob by its hash, with no extension; the snapshot's link
    says what it is, so scan reads its tensors as add does (a fine-tune shares most of them)."""
    base = write_tiny_hf_folder(tmp_path / "made" / "base", hidden=128, vocab=512)
    tuned = write_tiny_hf_folder(tmp_path / "made" / "tuned", hidden=128, vocab=512,
                                 changed={"model.layers.0.mlp.up_proj.weight": 7})
    hub = tmp_path / "hub"
    write_hf_snapshot(hub, "org/base", COMMIT, {p.name: p.read_bytes() for p in base.iterdir()}, refs=("main",))
    write_hf_snapshot(hub, "org/tuned", COMMIT, {p.name: p.read_bytes() for p in tuned.iterdir()}, refs=("main",))
    cli("scan", hub / "models--org--tuned" / "blobs")  # hashed first by names that say nothing
    total = cli("scan", hub, "--json").json()["total"]
    weights = (tuned / "model.safetensors").stat().st_size
    assert total["whole_file_dedup_bytes"] - total["tensor_dedup_bytes"] > weights * 0.5
