"""Where scan and import look for each runtime's models: each rule as the runtime's own code has it
(shared/provider-layouts.md), and a folder this user may not read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from modelstore.converters.synth import write_tiny_llama_gguf
from modelstore.store.sources.locations import default_folders, folders_here, qsettings_value

from tests.runtime_folders import write_hf_snapshot, write_jan_model, write_lmstudio_model, write_ollama_model

VARIABLES = ("OLLAMA_MODELS", "LMSTUDIO_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "LLAMA_CACHE",
             "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "APP_NAME", "JAN_DATA_FOLDER")


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own, with none of the runtimes' variables set."""
    home = tmp_path / "user"
    home.mkdir()
    for var in VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.mark.parametrize("value", ["'/data/ollama'", '"/data/ollama"', "  /data/ollama \n"])
def test_ollama_models_trimmed_as_ollama_trims_it(user: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", value)
    assert default_folders("ollama") == [Path("/data/ollama")]


def test_lmstudio_home_variable_wins_and_its_settings_count(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (user / ".lmstudio" / "models").mkdir(parents=True)
    monkeypatch.setenv("LMSTUDIO_HOME", str(user / "lms"))
    assert default_folders("lmstudio") == [user / "lms" / "models"]
    (user / "lms").mkdir()
    (user / "lms" / "settings.json").write_text(json.dumps({"downloadsFolder": "/big/lms-models"}))
    assert default_folders("lmstudio") == [Path("/big/lms-models")]
    monkeypatch.delenv("LMSTUDIO_HOME")
    assert folders_here("lmstudio")[0] == [user / ".lmstudio" / "models"]


def test_jan_data_folder_from_variable_then_settings(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = user / ".local/share/Jan/data/llamacpp/models"
    assert default_folders("jan") == [default]
    (user / ".local/share/Jan").mkdir(parents=True)
    (user / ".local/share/Jan/settings.json").write_text(json.dumps({"data_folder": "/big/jan", "quick_ask": False}))
    assert default_folders("jan") == [Path("/big/jan/llamacpp/models"), default]
    (user / ".config/Jan").mkdir(parents=True)  # older builds kept it here while the folder exists
    (user / ".config/Jan/settings.json").write_text(json.dumps({"data_folder": "/old/jan"}))
    assert default_folders("jan") == [Path("/old/jan/llamacpp/models"), default]
    monkeypatch.setenv("JAN_DATA_FOLDER", "/env/jan")
    assert default_folders("jan") == [Path("/env/jan/llamacpp/models")]


def test_llamacpp_newer_builds_download_into_the_hf_cache(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_folders("llamacpp") == [user / ".cache/llama.cpp", user / ".cache/huggingface/hub"]
    monkeypatch.setenv("HF_HOME", "/hf")
    assert default_folders("llamacpp") == [user / ".cache/llama.cpp", Path("/hf/hub")]
    monkeypatch.setenv("LLAMA_CACHE", "/llama")
    assert default_folders("llamacpp") == [Path("/llama")]


@pytest.mark.parametrize(("written", "value"), [
    ('"/home/u/Models, GPT4All/"', "/home/u/Models, GPT4All/"),
    ('"/a\\\\b \\"c\\" \\x44/"', '/a\\b "c" D/'),
    ("/home/u/plain/", "/home/u/plain/"),
])
def test_gpt4all_model_path_as_qsettings_writes_it(user: Path, written: str, value: str) -> None:
    assert qsettings_value(written) == value
    (user / ".config/nomic.ai").mkdir(parents=True)
    (user / ".config/nomic.ai/GPT4All.ini").write_text(f"[General]\nmodelPath={written}\nthreadCount=4\n")
    assert default_folders("gpt4all") == [Path(value)]


def test_import_finds_each_configured_folder(cli, user: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    write_lmstudio_model(tmp_path / "lms" / "models", "pub", "tiny-GGUF", {"tiny.gguf": gguf})
    write_jan_model(tmp_path / "jan-data", "pub/tiny", gguf)
    (user / ".local/share/Jan").mkdir(parents=True)
    (user / ".local/share/Jan/settings.json").write_text(json.dumps({"data_folder": str(tmp_path / "jan-data")}))
    write_hf_snapshot(user / ".cache/huggingface/hub", "ggml-org/tiny-GGUF", "c" * 40,
                      {"tiny.gguf": gguf.read_bytes()}, refs=("main",))
    monkeypatch.setenv("LMSTUDIO_HOME", str(tmp_path / "lms"))
    for kind, name in (("lmstudio", "pub/tiny-GGUF"), ("jan", "pub/tiny"), ("llamacpp", "ggml-org/tiny-GGUF")):
        report = cli("import", "--from", kind, "--dry-run", "--json").json()
        assert [m["name"] for m in report["models"]] == [name], kind


def in_user_namespace(*args: str) -> subprocess.CompletedProcess[str]:
    """Run modelstore as root of a user namespace: files of users it does not map are as closed to it
    as another user's files are to an ordinary user."""
    modelstore = [sys.executable, "-c", "from modelstore.cli import main; main()"]
    return subprocess.run(["unshare", "--user", "--map-root-user", *modelstore, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_a_folder_this_user_may_not_read(user: Path, home: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    locked = user / ".ollama"  # the Ollama service's folder is another user's, mode 0750 or 0700
    write_ollama_model(locked / "models", "registry.ollama.ai/library/tiny/latest", gguf)
    write_hf_snapshot(user / ".cache/huggingface/hub", "org/tiny", "a" * 40, {"tiny.gguf": gguf.read_bytes()},
                      refs=("main",))
    os.chown(locked, 4242, 4242)
    locked.chmod(0o700)
    monkeypatch.setenv("MODELSTORE_HOME", str(home))

    scan = in_user_namespace("scan", "--no-cache", "--json")
    assert scan.returncode == 0, scan.stderr
    report = json.loads(scan.stdout)
    assert [(f["runtime"], f["files"] > 0) for f in report["folders"]] == [("ollama", False), ("huggingface", True)]
    assert report["skipped"] == [{"path": str(locked / "models"), "reason": "not readable: Permission denied"}]

    imported = in_user_namespace("import", "--from", "ollama", "--dry-run")
    assert imported.returncode == 3
    assert f"ollama's models folder {locked / 'models'} cannot be read by this user" in imported.stderr

    # One LM Studio home is another user's, the next one is ours: import takes ours, and says so.
    write_lmstudio_model(user / ".cache/lm-studio/models", "pub", "other-GGUF", {"tiny.gguf": gguf})
    write_lmstudio_model(user / ".lmstudio/models", "pub", "tiny-GGUF", {"tiny.gguf": gguf})
    os.chown(user / ".cache/lm-studio", 4242, 4242)
    (user / ".cache/lm-studio").chmod(0o700)
    imported = in_user_namespace("import", "--from", "lmstudio", "--dry-run", "--json")
    assert imported.returncode == 0, imported.stderr
    assert [m["name"] for m in json.loads(imported.stdout)["models"]] == ["pub/tiny-GGUF"]
    assert f"warning: skipped {user / '.cache/lm-studio/models'}: this user may not read it" in imported.stderr


def test_help_says_where_each_runtime_is_looked_for(cli) -> None:
    for command in ("scan", "import"):
        text = " ".join(cli(command, "--help").out.split())
        for named in ("$OLLAMA_MODELS", "/usr/share/ollama/.ollama/models", "$LMSTUDIO_HOME", "~/.lmstudio-home-pointer",
                      "$HUGGINGFACE_HUB_CACHE", "$LLAMA_CACHE", "the Hugging Face cache (newer builds' -hf downloads)",
                      "GPT4All.ini", "$JAN_DATA_FOLDER", "data_folder in Jan's settings.json"):
            assert named in text, (command, named)
