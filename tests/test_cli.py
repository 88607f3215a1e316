"""The command line: help that teaches, JSON that scripts can read, errors in one line."""

from __future__ import annotations

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
    assert rm == {"removed": ["b"], "gc_would_free_bytes": unique_b}
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
        (("add", models / "missing.gguf"), 2, "no such file"),
        (("add", a, "--name", "../x"), 4, "not allowed"),
        (("add", a, "--revision", "main"), 2, "for Hub repos"),
        (("add", "org/name", "--link"), 2, "for local files"),
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
    assert cli("fsck").code == 0  # sizes still agree: only --deep reads the bytes
    r = cli("fsck", "--deep", "--json")
    assert r.code == 1
    report = r.json()
    assert report["clean"] is False and any("no longer hashes" in p for p in report["problems"])
    blob.unlink()
    r = cli("fsck")
    assert r.code == 1 and "missing" in r.out
