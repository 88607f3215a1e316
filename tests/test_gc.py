"""rm, gc, du and fsck: what each removes, frees and reports, including on a store whose catalog
tables are out of step or while another command runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelstore.converters.synth import write_tiny_llama_gguf
from tests.conftest import stored_bytes


def _two(cli, models: Path) -> tuple[Path, Path]:
    a = write_tiny_llama_gguf(models / "a.gguf")
    b = write_tiny_llama_gguf(models / "b.gguf", changed={"output.weight": 9})
    assert cli("add", a, "--name", "a", "--no-convert").code == 0
    assert cli("add", b, "--name", "b", "--no-convert").code == 0
    return a, b


# -- rm -----------------------------------------------------------------------------------------


def test_rm_a_name_given_twice_removes_it_once(cli, models: Path) -> None:
    _two(cli, models)
    r = cli("rm", "a", "b", "a", "--json")
    assert r.code == 0, r.err
    assert r.json()["removed"] == ["a", "b"]
    assert cli("ls", "--json").json() == []


def test_rm_removes_nothing_when_one_name_is_missing(cli, models: Path) -> None:
    _two(cli, models)
    r = cli("rm", "a", "nope", "a")
    assert r.code == 3 and "'nope'" in r.err and "nothing was removed" in r.err and r.out == ""
    assert [m["name"] for m in cli("ls", "--json").json()] == ["a", "b"]


@pytest.mark.parametrize("command", [("rm",), ("show",), ("convert",), ("rm", "a")])
@pytest.mark.parametrize("name", ["", "\udcff", "x" * 600, "../x"])
def test_a_name_no_model_can_have_is_one_line(cli, models: Path, command: tuple[str, ...], name: str) -> None:
    """An empty name, one that is not UTF-8 (a command-line byte), or one longer than LMDB keys
    can be: check_model_name's own error (exit 4), never an LMDB or codec traceback."""
    _two(cli, models)
    r = cli(*command, name)
    assert r.code == 4, r.err
    assert "is not allowed" in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert [m["name"] for m in cli("ls", "--json").json()] == ["a", "b"]


def test_the_catalog_answers_no_such_model_for_a_key_lmdb_cannot_hold(store) -> None:
    with store.catalog.read() as r:
        assert [r.model(n) for n in ("", "\udcff", "x" * 600)] == [None, None, None]
        assert r.conversions("") is None
    with store.catalog.write() as w:
        assert w.remove_model("") is None


# -- gc: liveness from the records ----------------------------------------------------------------


def _model_bytes(home: Path, name: str) -> dict[str, bytes]:
    from modelstore.store import Store
    from tests.conftest import read_model_file

    with Store(home, create=False) as store:
        return {rel: read_model_file(store, name, rel) for rel in store.model(name).files}


def _model_file(home: Path, name: str) -> str:
    from modelstore.store import Store

    with Store(home, create=False) as store:
        return next(iter(store.model(name).files.values()))


def _delete_pairs(home: Path, db: str, key: str) -> int:
    """Delete every reverse reference stored under `key` in `db` (file_models or blob_files)."""
    from modelstore.store import Store

    with Store(home, create=False) as store, store.catalog.write() as w:
        values = w._dups(db, key)
        for value in values:
            w.txn.delete(key.encode(), value.encode(), db=w.dbs[db])
    return len(values)


@pytest.mark.corrupts_store
@pytest.mark.parametrize("table", ["file_models", "blob_files"])
def test_gc_keeps_what_the_records_name_when_reverse_references_are_out_of_step(
        cli, home: Path, models: Path, table: str) -> None:
    """Reverse references lost (the catalog's indexes, not its records): gc must not take b's file
    or blobs for garbage, and fsck must not tell the user that gc removes them."""
    a, b = _two(cli, models)
    from modelstore.store import Store

    with Store(home, create=False) as store:
        b_file = store.file(store.model("b").files["b.gguf"])
    before, stored = _model_bytes(home, "b"), stored_bytes(home)
    keys = [b_file.b3] if table == "file_models" else sorted(b_file.blobs)
    assert sum(_delete_pairs(home, table, key) for key in keys) > 0

    r = cli("fsck", "--json")
    assert r.code == 1 and any("out of step" in p for p in r.json()["problems"])
    assert not any("no model names" in n for n in r.json()["notes"]), r.json()["notes"]
    assert cli("gc", "--dry-run", "--json").json()["bytes_freed"] == 0
    r = cli("gc", "--json")
    assert r.code == 0 and r.json()["bytes_freed"] == 0 and r.json()["files"] == 0, r.out
    assert stored_bytes(home) == stored
    assert _model_bytes(home, "b") == before == {"b.gguf": b.read_bytes()}


@pytest.mark.corrupts_store
def test_gc_removes_nothing_when_a_model_names_a_file_the_catalog_lacks(cli, home: Path, models: Path) -> None:
    """Which blobs a lost file record read is unknown: gc refuses, pointing at fsck, and removes
    not even what is certainly garbage."""
    from modelstore.store import Store

    _two(cli, models)
    with Store(home, create=False) as store, store.catalog.write() as w:
        w.txn.delete(store.model("b").files["b.gguf"].encode(), db=w.dbs["files"])
    r = cli("rm", "a", "--json")  # removed all the same; what gc frees is unknown, not gc's own refusal
    assert r.code == 0 and r.json() == {"removed": ["a"], "gc_would_free_bytes": None, "add_running": None}
    stored = stored_bytes(home)
    for args in (("gc", "--dry-run"), ("gc",)):
        r = cli(*args)
        assert r.code == 6 and "modelstore fsck" in r.err and r.err.count("\n") == 1, r.err
    assert stored_bytes(home) == stored


def test_gc_counts_stale_staging_and_only_bytes_it_removed(cli, home: Path, models: Path) -> None:
    """The staging folders of stopped processes are freed bytes too; a dead blob already gone from
    disk frees nothing."""
    a, b = _two(cli, models)
    stale = home / "tmp" / "add-1-deadbeef0000"
    stale.mkdir(parents=True)
    (stale / "partial").write_bytes(b"x" * 5000)  # no .lock: its owner died before locking it
    (stale / "sub").mkdir()
    (stale / "sub" / "more").write_bytes(b"y" * 700)
    dry = cli("gc", "--dry-run", "--json").json()
    assert dry["bytes_freed"] == 5700 and dry["stale_staging"] == 1 and dry["stale_staging_bytes"] == 5700
    du = cli("du", "--json").json()
    assert du["reclaimable_bytes"] == 5700

    from modelstore.store import Store

    cli("rm", "b")
    with Store(home, create=False) as store:
        b_blobs = store.file(store.model("a").files["a.gguf"]).blobs
        dead = [p for p in (home / "objects").rglob("*") if p.is_file() and p.name not in b_blobs]
    assert len(dead) == 1
    dead_size = dead[0].stat().st_size
    assert cli("gc", "--dry-run", "--json").json()["bytes_freed"] == dead_size + 5700
    r = cli("gc", "--json").json()
    assert r["bytes_freed"] == dead_size + 5700 and not stale.exists()

    cli("rm", "a")
    blob = next(p for p in (home / "objects").rglob("*") if p.is_file())
    blob.unlink()  # already gone: gc drops its records, but frees no bytes
    r = cli("gc", "--json").json()
    assert r["blobs"] == 1 and r["bytes_freed"] == 0
    assert stored_bytes(home) == 0


def _orphan(home: Path, data: bytes) -> Path:
    """An object no catalog record names, as an add killed before its commit leaves."""
    import blake3

    digest = blake3.blake3(data).hexdigest()
    path = home / "objects" / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.corrupts_store
def test_gc_keeps_a_blob_a_record_reads_that_the_blobs_table_lost(cli, home: Path, models: Path) -> None:
    """b reads a's blob in many extents; with a's blob record lost, fsck says so once (not once per
    extent) and gc does not take the object for an orphan."""
    from modelstore.store import Store

    a, b = _two(cli, models)
    with Store(home, create=False) as store:
        a_blob = store.file(store.model("a").files["a.gguf"]).recipe[0].blob
        assert sum(ext.blob == a_blob for ext in store.file(store.model("b").files["b.gguf"]).recipe) > 1
        with store.catalog.write() as w:
            w.remove_blob(a_blob)
    stored = stored_bytes(home)
    problems = cli("fsck", "--json").json()["problems"]
    assert len(problems) == len(set(problems))
    b_file = _model_file(home, "b")
    assert sum(p == f"file {b_file} uses blob {a_blob}, which the catalog does not have" for p in problems) == 1
    assert cli("du", "--json").json()["unreferenced_bytes"] == 0  # not negative: the lost blob is in no figure
    r = cli("gc", "--json")
    assert r.code == 0 and r.json()["orphan_objects"] == 0 and r.json()["bytes_freed"] == 0
    assert stored_bytes(home) == stored
    assert _model_bytes(home, "b") == {"b.gguf": b.read_bytes()} and _model_bytes(home, "a") == {"a.gguf": a.read_bytes()}


# -- du -------------------------------------------------------------------------------------------


def test_du_reclaimable_is_what_gc_frees(cli, home: Path, models: Path) -> None:
    """Orphan objects and stale staging are freed by gc, so du's reclaimable counts them too."""
    _two(cli, models)
    cli("rm", "b")
    orphan = _orphan(home, b"o" * 3000)
    stale = home / "tmp" / "add-1-0123456789ab"
    stale.mkdir()
    (stale / "part").write_bytes(b"s" * 400)
    du = cli("du", "--json").json()
    dry = cli("gc", "--dry-run", "--json").json()
    assert dry["orphan_objects"] == 1 and dry["stale_staging"] == 1
    assert du["reclaimable_bytes"] == dry["bytes_freed"] > 3400
    assert du["outside_catalog_bytes"] == 3400
    assert "`modelstore gc` frees" in cli("du").out
    assert cli("gc", "--json").json()["bytes_freed"] == du["reclaimable_bytes"]
    assert not orphan.exists() and cli("du", "--json").json()["reclaimable_bytes"] == 0


@pytest.mark.corrupts_store
def test_du_on_a_model_naming_a_missing_file_record_says_run_fsck(cli, home: Path, models: Path) -> None:
    from modelstore.store import Store

    _two(cli, models)
    with Store(home, create=False) as store, store.catalog.write() as w:
        w.txn.delete(store.model("b").files["b.gguf"].encode(), db=w.dbs["files"])
    for args in (("du",), ("du", "--json"), ("ls",)):
        r = cli(*args)
        assert r.code == 6 and "modelstore fsck" in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err


def test_du_saving_leaves_out_the_conversions_own_blobs(cli, home: Path, models: Path) -> None:
    """A safetensors model planned as a GGUF: the converted header is stored and has no logical
    counterpart. The saving is no longer negative; the header is shown as conversion bytes."""
    from modelstore.converters.synth import write_hf_model

    assert cli("add", write_hf_model(models / "hf"), "--name", "hf").code == 0
    du = cli("du", "--json").json()
    assert du["conversion_bytes"] > 0 and du["stored_bytes"] == stored_bytes(home)
    assert du["saved_bytes"] == du["logical_bytes"] - (du["stored_bytes"] - du["conversion_bytes"]) == 0
    assert du["dedup_ratio"] == 1.0


# -- while another command runs ---------------------------------------------------------------------


def test_gc_waits_for_a_running_fsck(cli, home: Path, models: Path) -> None:
    """fsck --deep holds the store lock shared: a gc started while it re-hashes waits, instead of
    removing blobs fsck is about to read (it used to abort with FileNotFoundError, no report)."""
    import subprocess
    import sys
    import threading

    from modelstore.store import Store
    from modelstore.store.fsck import fsck

    _two(cli, models)
    cli("rm", "a", "b")  # every blob is garbage: whichever fsck reads second, gc would remove first
    dead = stored_bytes(home)
    hashing, go = threading.Event(), threading.Event()

    def tick(_: int) -> None:
        hashing.set()
        assert go.wait(60)

    reports = []
    with Store(home, create=False) as store:
        worker = threading.Thread(target=lambda: reports.append(fsck(store, deep=True, progress=tick)))
        worker.start()
        try:
            assert hashing.wait(30)
            gc = subprocess.Popen([sys.executable, "-m", "modelstore.cli", "--home", str(home), "gc", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert gc.stderr is not None
            assert "waiting for running adds, imports, conversions or fsck" in gc.stderr.readline(), "gc did not wait"
            assert gc.poll() is None and stored_bytes(home) == dead
        finally:
            go.set()
            worker.join(60)
    assert len(reports) == 1 and reports[0].problems == [], reports
    out, err = gc.communicate(timeout=60)
    assert gc.returncode == 0, err
    assert '"bytes_freed": %d' % dead in out and stored_bytes(home) == 0


def test_objects_of_a_running_add_are_no_orphans(cli, home: Path, models: Path) -> None:
    """While an add runs (its staging folder locked), an object it placed and has not committed is
    not counted by rm or du as bytes gc frees, and fsck does not call that add interrupted. Once
    the add is gone (killed: the object stays uncommitted), all three count it."""
    from modelstore.store import Store
    from modelstore.store.fsck import fsck

    _two(cli, models)
    with Store(home, create=False) as store:
        b_novel = sum(ext.length for ext in store.file(store.model("b").files["b.gguf"]).recipe
                      if ext.blob not in store.file(store.model("a").files["a.gguf"]).blobs)
        with store.objects.staging("add"):  # an add running in another process, as the lock shows it
            placed = _orphan(home, b"n" * 2500)
            rm = cli("rm", "b", "--json").json()
            assert rm == {"removed": ["b"], "gc_would_free_bytes": b_novel, "add_running": True}
            assert "an add is running" in cli("du").out
            du = cli("du", "--json").json()
            assert du["reclaimable_bytes"] == b_novel and du["add_running"] is True
            notes = fsck(store).notes
            assert any("an add, import or convert is running" in n for n in notes), notes
            assert not any("interrupted" in n for n in notes), notes
        notes = fsck(store).notes
    assert any("interrupted" in n for n in notes), notes
    assert cli("du", "--json").json()["reclaimable_bytes"] == b_novel + 2500
    assert cli("gc", "--json").json()["bytes_freed"] == b_novel + 2500 and not placed.exists()
