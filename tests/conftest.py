"""Shared fixtures. Every test that uses a store gets `fsck --deep` run on it afterwards: a test
that leaves the store inconsistent fails even when its own assertions pass."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelstore.cli import run
from modelstore.store import Store
from modelstore.store.fsck import fsck


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@pytest.fixture
def home(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """An empty store home, checked with fsck --deep after the test."""
    path = tmp_path / "home"
    yield path
    if request.node.get_closest_marker("corrupts_store") or not (path / "catalog").is_dir():
        return
    with Store(path, create=False) as store:
        report = fsck(store, deep=True)
    assert report.clean, f"fsck after the test: {report.problems}"


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    with Store(home) as s:
        yield s


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run `modelstore ARGS...` in this process against `home`; returns code, stdout, stderr."""
    monkeypatch.setenv("MODELSTORE_HOME", str(home))

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A folder for the models a test generates."""
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def edit_beside_the_pass(path: Path, edit: Callable[[], None]) -> threading.Thread:
    """Start `edit` of `path` in a thread of its own, as another program would, and return once it
    is done or waiting. A hashing pass that holds a read lease on the file (store/leased.py) makes
    a writer wait until the pass sees it and lets go, so a test hook must not make the edit from the
    pass's own thread (it would wait for itself). Join the thread once the add has returned."""
    inode = f":{path.stat().st_ino}"
    writer = threading.Thread(target=edit, name="editor")
    writer.start()
    deadline = time.monotonic() + 10
    while writer.is_alive():
        with open("/proc/locks") as locks:
            if any("BREAKING" in line and line.split()[5].endswith(inode) for line in locks):
                return writer  # it waits for the pass's lease
        assert time.monotonic() < deadline, f"the edit of {path} neither finished nor waits for a lease"
        time.sleep(0.001)
    return writer


def stored_bytes(home: Path) -> int:
    """Bytes of every blob file under objects/: what the store really holds on disk."""
    return sum(p.stat().st_size for p in (home / "objects").rglob("*") if p.is_file())


def read_model_file(store: Store, name: str, rel: str) -> bytes:
    record = store.file(store.model(name).files[rel])
    return b"".join(bytes(c) for c in store.iter_file(record))


os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def quiet_huggingface_hub() -> None:
    """huggingface_hub binds its log handler to the sys.stderr of its first use, which under
    capture is a stream that later closes: keep it to errors, which tests assert on anyway."""
    try:
        from huggingface_hub.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
