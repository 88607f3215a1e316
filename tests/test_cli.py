"""The command line: help that teaches, JSON that scripts can read, errors in one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf
from tests.conftest import stored_bytes

COMMANDS = ["add", "ls", "show", "rm", "du", "gc", "fsck"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(cli, command: str) -> None:
    r = cli(command, "--help")
    assert r.code == 0
    assert "Example" in r.out and f"modelstore {command}" in r.out


def test_add_help_explains_link_risk(cli) -> None:
    out = cli("add", "--help").out
    assert "--link" in out and "editing the original" in out.replace("\n", " ").replace("  ", " ")


def test_help_does_not_need_fuse_or_gguf() -> None:
    code = ("import sys; from modelstore.cli import run; rc = run(['--help']); "
            "assert rc == 0; bad = [m for m in ('pyfuse3', 'gguf', 'huggingface_hub', 'lmdb') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_metadata_from_gguf_and_config(cli, models: Path) -> None:
    gguf = write_tiny_llama_gguf(models / "chat.gguf", chat_template="{{ x }}", license="mit", n_ctx=2048)
    assert cli("add", gguf, "--name", "chat:f32").code == 0
    folder = write_tiny_hf_folder(models / "hf-model")
    assert cli("add", folder).code == 0
    by_name = {m["name"]: m for m in cli("ls", "--json").json()}
    g = by_name["chat:f32"]["metadata"]
    assert g == {"format": "gguf", "primary_file": "chat.gguf", "architecture": "llama",
                 "name": "tiny-random-llama", "parameter_count": 122816, "quantization": "F32",
                 "context_length": 2048, "has_chat_template": True, "license": "mit"}
    h = by_name["hf-model"]["metadata"]
    assert h["architecture"] == "LlamaForCausalLM" and h["context_length"] == 512
    assert h["has_chat_template"] is True and h["license"] == "apache-2.0" and h["dtype"] == "float32"
    assert h["parameter_count"] == 115008
    assert by_name["hf-model"]["size"] == sum(p.stat().st_size for p in folder.iterdir())


def test_ls_show_du_rm_gc(cli, home: Path, models: Path) -> None:
    a = write_tiny_llama_gguf(models / "a.gguf")
    b = write_tiny_llama_gguf(models / "b.gguf", changed={"output.weight": 9})
    assert cli("add", a, "--name", "a", "--no-convert").code == 0
    assert cli("add", b, "--name", "b", "--no-convert").code == 0
    table = cli("ls").out
    assert "a" in table and "llama" in table and "123K" in table

    show = cli("show", "b", "--json").json()
    assert show["files"]["b.gguf"]["size"] == b.stat().st_size
    assert show["files"]["b.gguf"]["extents"] > 1  # shares tensors with a

    du = cli("du", "--json").json()
    assert du["logical_bytes"] == a.stat().st_size + b.stat().st_size
    assert du["stored_bytes"] == stored_bytes(home)
    assert du["saved_bytes"] == du["logical_bytes"] - du["stored_bytes"]
    unique_b = next(m for m in du["models"] if m["name"] == "b")["unique_bytes"]
    assert "saved" in cli("du").out

    rm = cli("rm", "b", "--json").json()
    assert rm == {"removed": ["b"], "gc_would_free_bytes": unique_b, "add_running": False}
    dry = cli("gc", "--dry-run", "--json").json()
    assert dry["bytes_freed"] == unique_b and dry["dry_run"] is True
    assert stored_bytes(home) == du["stored_bytes"]
    assert cli("gc", "--json").json()["bytes_freed"] == unique_b
    assert stored_bytes(home) == a.stat().st_size
    assert cli("fsck", "--deep", "--json").json()["clean"] is True


def test_errors_are_one_line_with_exit_codes(cli, models: Path) -> None:
    a = write_tiny_llama_gguf(models / "a.gguf")
    cases = [
        (("show", "nope"), 3, "no model named"),
        (("rm", "nope"), 3, "no model named"),
        (("add", models / "missing.gguf"), 3, "no such file"),
        (("add", a, "--name", "../x"), 4, "not allowed"),
        (("add", a, "--revision", "main"), 2, "for Hub repos"),
        (("add", "org/name", "--link"), 2, "for local files"),
        (("convert", "a", "--gguf-type", "Q9"), 2, "'Q9' is not one of"),  # click's own usage errors too
        (("add",), 2, "Missing argument"),
        (("import",), 2, "Missing option '--from'"),
        (("add", a, "--link", "--move"), 2, "--link and --move contradict each other"),
    ]
    cli("add", a, "--name", "a")
    for args, code, words in cases:
        r = cli(*args)
        assert r.code == code, (args, r.err)
        assert words in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err


def test_no_store_yet(cli) -> None:
    r = cli("ls")
    assert r.code == 3 and "no store at" in r.err


def test_schema_version_is_checked(cli, home: Path, models: Path) -> None:
    cli("add", write_tiny_llama_gguf(models / "a.gguf"))
    env = lmdb.open(str(home / "catalog"), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"schema", b"999", db=env.open_db(b"meta", txn=txn))
    env.close()
    r = cli("ls")
    assert r.code == 6 and "schema version 999" in r.err
    with lmdb.open(str(home / "catalog"), max_dbs=16) as env, env.begin(write=True) as txn:
        txn.put(b"schema", b"1", db=env.open_db(b"meta", txn=txn))


def test_home_option_and_env(tmp_path: Path, cli, models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_tiny_llama_gguf(models / "a.gguf")
    other = tmp_path / "other-home"
    assert cli("--home", other, "add", a).code == 0
    assert (other / "catalog").is_dir()
    monkeypatch.delenv("MODELSTORE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert cli("add", a).code == 0
    assert (tmp_path / "xdg" / "modelstore" / "catalog").is_dir()


def test_console_script_runs(tmp_path: Path, models: Path) -> None:
    a = write_tiny_llama_gguf(models / "a.gguf")
    r = subprocess.run([sys.executable, "-m", "modelstore.cli", "--home", tmp_path / "h", "add", a, "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"stored_bytes": %d' % a.stat().st_size in r.stdout


def test_fsck_reports_a_damaged_blob(cli, home: Path, models: Path, request: pytest.FixtureRequest) -> None:
    request.applymarker(pytest.mark.corrupts_store)
    a = write_tiny_llama_gguf(models / "a.gguf")
    cli("add", a, "--no-convert")  # its blobs only: the first one found is the GGUF
    blob = next(p for p in (home / "objects").rglob("*") if p.is_file())
    blob.chmod(0o644)
    with open(blob, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    quiet = cli("fsck")
    assert quiet.code == 0 and quiet.err == ""  # sizes still agree: only --deep reads the bytes; nothing to wait for
    r = cli("fsck", "--deep", "--json")
    assert r.code == 1
    report = r.json()
    assert report["clean"] is False and any("no longer hashes" in p for p in report["problems"])
    blob.unlink()
    r = cli("fsck")
    assert r.code == 1 and "missing" in r.out


def test_add_never_takes_the_store_itself(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`add --move` of a folder that holds the store's home leaves the home out (before, it moved
    the store's own blobs and catalog into a model and deleted them); a path inside the store is
    refused outright."""
    top = tmp_path / "top"
    (top / "models").mkdir(parents=True)
    home = top / "store"
    monkeypatch.setenv("MODELSTORE_HOME", str(home))
    mid = write_tiny_llama_gguf(top / "models" / "mid.gguf")
    assert cli("add", mid, "--name", "mid", "--no-convert").code == 0
    r = cli("add", top, "--move", "--name", "everything", "--no-convert", "--json")
    assert r.code == 0, r.err
    assert r.json()["files"] == 1
    assert cli("show", "everything", "--json").json()["files"].keys() == {"models/mid.gguf"}
    assert cli("show", "mid", "--json").code == 0
    assert cli("fsck", "--deep", "--json").json()["clean"] is True
    blob = next(p for p in (home / "objects").rglob("*") if p.is_file())
    r = cli("add", blob, "--move", "--name", "again")
    assert r.code == 2 and "inside the store" in r.err
    assert blob.exists() and cli("fsck", "--deep", "--json").json()["clean"] is True


def test_names_every_view_can_show(cli, models: Path) -> None:
    """A file name that is not UTF-8, or holds a backslash, is refused when added (a view could not
    show it); models "x" and "x/b" both stay visible in store/by-model."""
    gguf = write_tiny_llama_gguf(models / "a.gguf")
    odd = Path(os.fsdecode(os.path.join(os.fsencode(models), b"bad\xffname.gguf")))
    odd.write_bytes(gguf.read_bytes())
    r = cli("add", odd)
    assert r.code == 4 and "not valid UTF-8" in r.err
    folder = models / "folder"
    folder.mkdir()
    (folder / "back\\slash.txt").write_text("x")
    r = cli("add", folder)
    assert r.code == 4 and "backslash" in r.err

    other = models / "x"
    other.mkdir()
    (other / "b").write_bytes(b"the file b of model x")
    assert cli("add", other, "--name", "x").code == 0
    assert cli("add", gguf, "--name", "x/b", "--no-convert").code == 0
    shown = {v["view"]: v["paths"] for v in cli("show", "x", "--json").json()["views"]}
    assert shown["store"] == ["store/by-model/x/b"]
    shown = {v["view"]: v["paths"] for v in cli("show", "x/b", "--json").json()["views"]}
    assert shown["store"] == ["store/by-model/x--b/a.gguf"]
    assert cli("add", gguf, "--name", "x--b", "--no-convert").code == 0  # a model really named so keeps it
    shown = {v["view"]: v["paths"] for v in cli("show", "x--b", "--json").json()["views"]}
    assert shown["store"] == ["store/by-model/x--b/a.gguf"]
    shown = {v["view"]: v["paths"] for v in cli("show", "x/b", "--json").json()["views"]}
    assert shown["store"] == ["store/by-model/x--b-2/a.gguf"]


@pytest.mark.corrupts_store
def test_a_damaged_catalog_and_odd_headers_in_plain_words(cli, home: Path, models: Path) -> None:
    """A catalog that is not an LMDB file is a damaged store (6); a GGUF whose general.alignment is
    not a UINT32 is a bad model file (4), as gguf-py and llama.cpp see it."""
    import gguf

    w = gguf.GGUFWriter(str(models / "odd.gguf"), "llama")
    w.add_bool("general.alignment", True)
    w.add_tensor("t", __import__("numpy").zeros(64, dtype="float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = cli("add", models / "odd.gguf")
    assert r.code == 4 and "general.alignment is a BOOL" in r.err

    assert cli("add", write_tiny_llama_gguf(models / "a.gguf"), "--no-convert").code == 0
    (home / "catalog" / "data.mdb").write_bytes(b"\0" * 8192)
    r = cli("ls")
    assert r.code == 6 and "damaged" in r.err and r.err.count("\n") == 1


def test_du_says_what_gc_gives_back(cli, models: Path) -> None:
    """A removed model's tensors that a remaining model still reads stay in their blob: du does not
    promise that gc frees them."""
    a = write_tiny_llama_gguf(models / "a.gguf")
    b = write_tiny_llama_gguf(models / "b.gguf", changed={"output.weight": 9})
    cli("add", a, "--name", "a", "--no-convert")
    cli("add", b, "--name", "b", "--no-convert")
    cli("rm", "a")
    du = cli("du", "--json").json()
    assert du["unreferenced_bytes"] > 0
    freed = cli("gc", "--json").json()["bytes_freed"]
    assert du["reclaimable_bytes"] == freed
    after = cli("du", "--json").json()
    assert after["reclaimable_bytes"] == 0 and after["unreferenced_bytes"] == du["unreferenced_bytes"] - freed
    assert "stays" in cli("du").out


def test_move_takes_the_inode_a_store_object_already_shares(cli, home: Path, models: Path) -> None:
    """A file whose only other name is its own blob in the store (an orphan an interrupted --move
    left) is still moved in by link, not copied; a symlink into the store (as `mount --links`
    shows files) can be added like any file."""
    import blake3
    from modelstore.store import Store

    a = write_tiny_llama_gguf(models / "a.gguf")
    ino = a.stat().st_ino
    assert cli("add", write_tiny_llama_gguf(models / "other.gguf", seed=5), "--no-convert").code == 0
    with Store(home) as store:
        orphan = store.objects.path(blake3.blake3(a.read_bytes()).hexdigest())
    orphan.parent.mkdir(parents=True, exist_ok=True)
    os.link(a, orphan)  # in objects/, not in the catalog: what a --move killed before its commit leaves
    assert cli("add", a, "--move", "--name", "second", "--no-convert").code == 0
    assert not a.exists()
    assert ino in {p.stat().st_ino for p in (home / "objects").rglob("*") if p.is_file()}
    blob = next(p for p in (home / "objects").rglob("*") if p.is_file())
    (models / "link.gguf").symlink_to(blob)
    assert cli("add", models / "link.gguf", "--name", "alias", "--no-convert").code == 0


@pytest.mark.corrupts_store
def test_fsck_finds_every_damage_and_says_what_to_do(cli, home: Path, models: Path) -> None:
    """A cut blob must not hide a changed one (--deep re-hashes the rest), and each problem names
    the models that read the blob and the way back; gc removes whatever else lies in objects/."""
    cli("add", write_tiny_llama_gguf(models / "a.gguf"), "--name", "a", "--no-convert")
    cli("add", write_tiny_llama_gguf(models / "b.gguf", seed=7), "--name", "b", "--no-convert")
    blobs = sorted(p for p in (home / "objects").rglob("*") if p.is_file())
    assert len(blobs) == 2
    for blob in blobs:
        blob.chmod(0o644)
    with open(blobs[0], "r+b") as f:
        f.truncate(1000)
    with open(blobs[1], "r+b") as f:
        f.seek(5000)
        f.write(b"\xff\xff")
    problems = cli("fsck", "--deep", "--json").json()["problems"]
    assert len(problems) == 2, problems
    assert any("bytes on disk" in p for p in problems) and any("no longer hashes" in p for p in problems)
    assert all("`modelstore rm` them" in p and ("a" in p or "b" in p) for p in problems)

    (blobs[0].parent / "junk.txt").write_bytes(b"x")  # things that are no blob at all
    (home / "objects" / "zz").mkdir()
    (home / "objects" / "zz" / ("0" * 64)).write_bytes(b"yy")
    r = cli("gc", "--json")
    assert r.code == 0, r.err
    assert not (blobs[0].parent / "junk.txt").exists() and not (home / "objects" / "zz" / ("0" * 64)).exists()


@pytest.mark.corrupts_store
def test_fsck_and_gc_on_a_catalog_and_objects_folder_out_of_step(cli, home: Path, models: Path, tmp_path: Path) -> None:
    """A blob the catalog lost (and its object moved away) is reported by fsck --deep, not a crash;
    a damaged converted header names the model it belongs to; gc never follows a link out of
    objects/ and leaves folders it finds there alone."""
    from modelstore.store import Store

    cli("add", write_tiny_llama_gguf(models / "a.gguf"), "--name", "a", "--no-convert")
    from modelstore.converters.synth import write_hf_model

    cli("add", write_hf_model(models / "hf"), "--name", "hf")  # plans a GGUF: a converted header blob
    with Store(home) as store:
        with store.catalog.read() as r:
            header = r.conversions("hf")["blobs"][0]
            a_blob = store.file(store.model("a").files["a.gguf"]).recipe[0].blob
        path = store.objects.path(header)
        with store.catalog.write() as w:
            w.remove_blob(a_blob)
        store.objects.path(a_blob).rename(tmp_path / "moved-away")
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    r = cli("fsck", "--deep", "--json")
    assert r.code == 1 and "Traceback" not in r.err, r.err
    problems = r.json()["problems"]
    assert any(header in p and "no longer hashes" in p and "hf" in p for p in problems), problems
    assert any(a_blob in p for p in problems)

    user = tmp_path / "user-files"
    user.mkdir()
    (user / ("1" * 64)).write_bytes(b"keep me")
    (home / "objects" / "zz").symlink_to(user)
    (path.parent / "a-folder").mkdir()
    (path.parent / "dangling").symlink_to(tmp_path / "nothing")
    r = cli("gc", "--json")
    assert r.code == 0, r.err
    assert (user / ("1" * 64)).read_bytes() == b"keep me" and (path.parent / "a-folder").is_dir()
    assert not (path.parent / "dangling").is_symlink()


def test_add_one_shard_adds_the_split_model(cli, models: Path) -> None:
    """`add x-00001-of-00003.gguf` (what llama.cpp's -m takes for a split) adds every shard, as one
    model named without the shard suffix; with a shard missing it stores nothing and says which."""
    first = write_tiny_llama_gguf(models / "tiny-Q8_0.gguf", quant="Q8_0", split_max_tensors=8)
    shards = sorted(p.name for p in models.glob("tiny-Q8_0-*-of-00003.gguf"))
    assert len(shards) == 3
    second = models / shards[1]
    r = cli("add", second, "--json")
    assert r.code == 0, r.err
    shown = cli("show", "tiny-Q8_0", "--json").json()
    assert sorted(shown["files"]) == shards
    assert {f: v["sha256"] for f, v in shown["files"].items()} == {
        name: hashlib.sha256((models / name).read_bytes()).hexdigest() for name in shards}
    assert shown["source"]["location"] == str(first.resolve())  # the split is where its first shard is
    again = cli("add", first, "--json")  # named by another shard: the same model, not another's name
    assert again.code == 0 and again.json()["unchanged"] is True, again.err
    second.unlink()
    r = cli("add", first, "--name", "other")
    assert r.code == 2
    assert f"one of the 3 shards of a split GGUF, and 1 of them are missing ({shards[1]})" in r.err
    assert cli("show", "other").code == 3


def test_renditions_left_unplanned_after_a_commit_say_what_was_committed(cli, models: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is committed before its renditions are planned: a full disk or Ctrl-C there must
    not say "nothing was committed", and a model another command removed meanwhile is a warning,
    not the end of the import (whose report would be lost)."""
    import modelstore.converters.planner as planner
    from modelstore.store.errors import NotFound, OutOfSpace

    real = planner.plan_conversions
    stop: list[BaseException] = []

    def planning(store, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if stop:
            raise stop[0]
        return real(store, name, *args, **kwargs)

    monkeypatch.setattr(planner, "plan_conversions", planning)
    gguf = write_tiny_llama_gguf(models / "a.gguf")
    stop.append(OutOfSpace("no space left in /x"))
    r = cli("add", gguf)
    assert r.code == 7 and "Added a:" in r.out
    assert "no space left to plan renditions: a is committed, but without renditions for the other runtimes; free" in r.err
    assert "run `modelstore convert a`" in r.err
    assert "nothing was committed" not in r.err and cli("show", "a").code == 0
    stop[0] = KeyboardInterrupt()
    r = cli("add", write_tiny_llama_gguf(models / "b.gguf", seed=1))
    assert r.code == 130 and "interrupted: b is committed, but without renditions for the other runtimes" in r.err

    folder = models / "two"
    folder.mkdir()
    write_tiny_llama_gguf(folder / "c.gguf", seed=2)
    write_tiny_llama_gguf(folder / "d.gguf", seed=3)
    stop.clear()

    def one_gone(store, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "c":
            raise NotFound("no model named 'c'")
        return real(store, name, *args, **kwargs)

    monkeypatch.setattr(planner, "plan_conversions", one_gone)
    r = cli("import", "--from", "path", folder, "--json")
    assert r.code == 0, r.err
    assert sorted(m["name"] for m in r.json()["models"]) == ["c", "d"]
    planned = [c["model"] for c in r.json()["conversions"]]
    assert "d" in planned and "c" not in planned  # (a and b too: their planning was cut short above)
    assert "warning: no renditions planned for c: no model named 'c'" in r.err


def test_everyday_mistakes_in_plain_words(cli, home: Path, models: Path, tmp_path: Path) -> None:
    """Found by a new user's audit: each gives one line that says what to do, with the README's
    exit status."""
    a = write_tiny_llama_gguf(models / "a.gguf")
    r = cli("add", "somewhere/missing.gguf")  # looks like org/name, but a repo id never ends in .gguf
    assert r.code == 3 and r.err.strip() == "modelstore: error: somewhere/missing.gguf: no such file or folder"
    r = cli("add", tmp_path / "nowhere")
    assert r.code == 3 and "no such file or folder" in r.err

    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    for args in (("--home", afile, "ls"), ("--home", afile / "sub", "add", a)):
        r = cli(*args)
        assert r.code == 2 and r.err.count("\n") == 1 and "folder" in r.err and "Errno" not in r.err, r.err

    r = cli("convert", "--all", "x")
    assert r.code == 2 and "not both" in r.err

    # Two files whose names hold no ASCII: distinct default names, and never one replacing the other
    first, second = models / "日本語 モデル.gguf", models / "中文.gguf"
    first.write_bytes(a.read_bytes())
    second.write_bytes(write_tiny_llama_gguf(models / "b.gguf", seed=5).read_bytes())
    assert cli("add", first, "--no-convert").code == 0 and cli("add", second, "--no-convert").code == 0
    names = [m["name"] for m in cli("ls", "--json").json()]
    assert len(names) == 2 and all(n.startswith("model-") for n in names), names
    # A default name taken by a model from elsewhere is refused; the same file again replaces it
    other = models / "x" / "a.gguf"
    other.parent.mkdir()
    other.write_bytes(a.read_bytes())
    assert cli("add", a, "--no-convert").code == 0
    r = cli("add", other, "--no-convert")
    assert r.code == 2 and "--name" in r.err and str(a.resolve()) in r.err, r.err
    assert cli("add", a, "--no-convert").code == 0

    # A fine-tune of a, then a removed: a's blob stays, read by the fine-tune, so saved is negative,
    # in the text as in --json
    tuned = write_tiny_llama_gguf(models / "tiny-ft.gguf", changed={"blk.1.ffn_up.weight": 7})
    assert cli("add", tuned, "--no-convert").code == 0
    assert cli("rm", "a", *names).code == 0 and cli("gc").code == 0
    saved = cli("du", "--json").json()["saved_bytes"]
    assert saved < 0 and "saved -" in cli("du").out
    deep = cli("fsck", "--deep")
    assert deep.code == 0 and "rehashed blobs" in deep.out and "_" not in deep.out.split("(")[-1]

    for args in (("show", "tiny_ft"), ("rm", "tiny_ft")):  # a typo of a stored name: it is suggested
        r = cli(*args)
        assert r.code == 3 and "did you mean 'tiny-ft'?" in r.err and r.err.count("\n") == 1, r.err
    assert "did you mean" not in cli("show", "zzzz").err
    r = cli("convert", "tiny-ft", "--gguf-type", "Q8_0")  # a GGUF model: the GGUF type changes nothing
    assert r.code == 0 and "warning: --gguf-type" in r.err and "tiny-ft is a GGUF model" in r.err

    r = cli()  # `modelstore` alone prints its help, not an error line
    assert r.code == 0 and r.out.startswith("Usage: modelstore") and "Commands:" in r.out and r.err == ""


def test_control_characters_from_files_are_shown_escaped(cli, home: Path, models: Path) -> None:
    """A GGUF's metadata and a file name are the file's author's: show and the error line print
    their control characters escaped, never as terminal sequences (a title change, a clear)."""
    evil = "evil\x1b]0;PWNED\x07\x1b[2J\nfake-line: x"
    gguf = write_tiny_llama_gguf(models / "esc.gguf", name=evil, license="MIT\x1b[5m")
    assert cli("add", gguf, "--name", "esc", "--no-convert").code == 0
    out = cli("show", "esc").out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;PWNED" in out
    assert not any(line.startswith("fake-line") for line in out.splitlines())
    bad = models / "x\x1b[2Jbad.gguf"
    bad.write_bytes(gguf.read_bytes()[:100])
    r = cli("add", bad)
    assert r.code == 4 and "\x1b" not in r.err and "\\x1b[2Jbad.gguf" in r.err and r.err.count("\n") == 1
