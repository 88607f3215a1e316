"""`modelstore add org/name` against a fake Hub on 127.0.0.1 (tests/fakehub.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest

from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf
from modelstore.store import Store
from modelstore.store.digests import GIT_SHA1_LIMIT
from tests.conftest import CliResult, read_model_file, stored_bytes
from tests.fakehub import FakeHub, Fault, Repo, fake_hub, sha256

__all__ = ["fake_hub"]

HF_FILES = ["README.md", "config.json", "model.safetensors", "tokenizer_config.json"]


class Cli(Protocol):
    def __call__(self, *args: str | Path) -> CliResult: ...


@contextmanager
def opened(home: Path) -> Iterator[Store]:
    with Store(home, create=False) as store:
        yield store


def hf_repo(hub: FakeHub, models: Path, repo_id: str = "org/tiny", **kw: Any) -> Repo:
    return hub.repo(repo_id, write_tiny_hf_folder(models / repo_id.replace("/", "--"), **kw))


def gguf_bytes(models: Path, filename: str, **kw: Any) -> bytes:
    return write_tiny_llama_gguf(models / filename, **kw).read_bytes()


def gguf_repo(hub: FakeHub, models: Path, repo_id: str = "org/tiny-gguf") -> Repo:
    return hub.repo(repo_id, {"README.md": b"---\nlicense: mit\n---\n",
                              "tiny-F32.gguf": gguf_bytes(models, "f32.gguf"),
                              "tiny-F16.gguf": gguf_bytes(models, "f16.gguf", f16=True)})


def add_json(cli: Cli, *args: str) -> dict[str, Any]:
    r = cli("add", *args, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert isinstance(out, dict)
    return out


def model_names(cli: Cli) -> list[str]:
    r = cli("ls", "--json")
    assert r.code == 0, r.err
    return [m["name"] for m in r.json()]


def assert_stored_as_served(home: Path, name: str, repo: Repo, revision: str = "main") -> None:
    served = repo.files(revision)
    with opened(home) as store:
        model = store.model(name)
        assert sorted(model.files) == sorted(served)
        for rel, data in served.items():
            assert read_model_file(store, name, rel) == data, rel


def assert_refused(r: CliResult, *words: str) -> None:
    assert r.code != 0
    assert "Traceback" not in r.err
    message = r.err.strip()
    assert message.count("\n") == 0, message
    for word in words:
        assert word.lower() in message.lower(), message


def assert_nothing_left(cli: Cli, home: Path) -> None:
    assert model_names(cli) == []
    assert list((home / "tmp").iterdir()) == []


def safetensors_parameters(data: bytes) -> int:
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


# -- adding ------------------------------------------------------------------------------------------


def test_add_hf_repo_records_commit_bytes_and_metadata(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    repo = hf_repo(fake_hub, models)
    out = add_json(cli, "org/tiny")
    commit = repo.refs["main"]
    assert out["source"] == {"kind": "huggingface", "location": "org/tiny", "revision": commit}
    assert out["downloaded_bytes"] == sum(len(d) for d in repo.files().values())
    assert sorted(fake_hub.downloads()) == [f"org/tiny/{f}" for f in HF_FILES]
    assert_stored_as_served(home, "org/tiny", repo)
    with opened(home) as store:
        meta = store.model("org/tiny").metadata
    assert meta["architecture"] == "LlamaForCausalLM"
    assert meta["context_length"] == 512
    assert meta["license"] == "apache-2.0"
    assert meta["parameter_count"] == safetensors_parameters(repo.files()["model.safetensors"])
    assert meta["parameter_count"] > 0


def test_revision_as_branch_and_as_commit(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    repo = hf_repo(fake_hub, models)
    first = repo.refs["main"]
    changed = write_tiny_hf_folder(models / "v2", seed=1, license="mit")
    second = repo.publish({**repo.files(), "model.safetensors": (changed / "model.safetensors").read_bytes(),
                           "README.md": (changed / "README.md").read_bytes()})
    repo.refs["v1"] = first

    out = add_json(cli, "org/tiny", "--revision", "v1", "--name", "by-branch")
    assert out["source"]["revision"] == first
    assert_stored_as_served(home, "by-branch", repo, first)

    out = add_json(cli, "org/tiny", "--revision", second, "--name", "by-commit")
    assert out["source"]["revision"] == second
    assert out["metadata"]["license"] == "mit"
    assert_stored_as_served(home, "by-commit", repo, second)
    assert repo.files(first)["model.safetensors"] != repo.files(second)["model.safetensors"]


@pytest.mark.parametrize(("option", "expected"), [
    (("--include", "*F16*"), ["tiny-F16.gguf"]),
    (("--exclude", "*F16*", "--exclude", "*.md"), ["tiny-F32.gguf"]),
    (("--include", "*.gguf", "--exclude", "*F32*"), ["tiny-F16.gguf"]),
])
def test_include_exclude_pick_one_quantization(cli: Cli, home: Path, models: Path, fake_hub: FakeHub,
                                               option: tuple[str, ...], expected: list[str]) -> None:
    repo = gguf_repo(fake_hub, models)
    out = add_json(cli, "org/tiny-gguf", *option, "--name", "q", "--no-convert")  # stored bytes = downloaded bytes
    assert out["files"] == len(expected)
    assert fake_hub.downloads() == [f"org/tiny-gguf/{f}" for f in expected]
    with opened(home) as store:
        assert sorted(store.model("q").files) == expected
        for rel in expected:
            assert read_model_file(store, "q", rel) == repo.files()[rel]
    assert stored_bytes(home) == sum(len(repo.files()[f]) for f in expected)


def test_include_matching_nothing_is_a_usage_error(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    gguf_repo(fake_hub, models)
    r = cli("add", "org/tiny-gguf", "--include", "*Q4_K_M*")
    assert_refused(r, "no file matches", "3 files")
    assert r.code == 2
    assert fake_hub.downloads() == []


def test_readding_unchanged_repo_downloads_nothing_then_only_what_changed(
        cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    repo = hf_repo(fake_hub, models)
    add_json(cli, "org/tiny")
    fake_hub.reset_log()

    r = cli("add", "org/tiny")
    assert r.code == 0, r.err
    assert "up to date" in r.out
    assert fake_hub.downloads() == []
    assert [q.method for q in fake_hub.requests] == ["GET", "GET"]  # model info and the listing

    new = json.dumps({"model_max_length": 1024}).encode()
    commit = repo.update({"tokenizer_config.json": new})
    fake_hub.reset_log()
    before = stored_bytes(home)
    out = add_json(cli, "org/tiny")
    assert fake_hub.downloads() == ["org/tiny/tokenizer_config.json"]
    assert out["downloaded_bytes"] == len(new)
    assert out["replaced"] is True
    assert out["source"]["revision"] == commit
    assert stored_bytes(home) - before == len(new)
    assert_stored_as_served(home, "org/tiny", repo)


def test_hub_gguf_equal_to_a_local_one_is_not_downloaded_or_stored_twice(
        cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    local = write_tiny_llama_gguf(models / "local.gguf")
    assert cli("add", local, "--name", "local").code == 0
    before = stored_bytes(home)
    readme = b"# the same weights, on the Hub\n"
    repo = fake_hub.repo("org/same", {"tiny.gguf": local.read_bytes(), "README.md": readme})

    out = add_json(cli, "org/same")
    assert fake_hub.downloads() == ["org/same/README.md"]
    assert out["downloaded_bytes"] == len(readme)
    assert stored_bytes(home) - before == len(readme)
    assert_stored_as_served(home, "org/same", repo)
    with opened(home) as store:
        assert store.model("org/same").files["tiny.gguf"] == store.model("local").files["local.gguf"]


def test_same_file_twice_in_one_repo_is_downloaded_once(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    data = gguf_bytes(models, "a.gguf")
    repo = fake_hub.repo("org/twice", {"a.gguf": data, "copy/a.gguf": data})
    add_json(cli, "org/twice", "--no-convert")  # stored bytes = the one download
    assert len(fake_hub.downloads()) == 1
    assert stored_bytes(home) == len(data)
    assert_stored_as_served(home, "org/twice", repo)


# -- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["../evil.gguf", "/abs.gguf", "a/../../b.gguf", "evil\x00.gguf",
                                     "a\\..\\b.gguf", "./x.gguf", "a//b.gguf", "x" * 300 + ".txt"])
def test_hostile_listing_is_refused(cli: Cli, home: Path, models: Path, fake_hub: FakeHub, hostile: str) -> None:
    repo = hf_repo(fake_hub, models)
    repo.hostile.append(hostile)
    r = cli("add", "org/tiny")
    assert_refused(r, repr(hostile), "refusing")
    assert r.code == 4
    assert fake_hub.downloads() == []
    assert_nothing_left(cli, home)
    assert stored_bytes(home) == 0


def test_hostile_entry_is_refused_even_when_excluded(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    repo = hf_repo(fake_hub, models)
    repo.hostile.append("../evil.gguf")
    assert_refused(cli("add", "org/tiny", "--include", "*.json"), "../evil.gguf")
    assert_nothing_left(cli, home)


@pytest.mark.parametrize(("args", "words"), [
    (("org/nope",), ("org/nope", "no such model repo")),
    (("org/tiny", "--revision", "no-such-branch"), ("org/tiny", "no revision", "no-such-branch")),
    (("org/tiny", "--revision", "0" * 40), ("no revision", "0" * 40)),
])
def test_unknown_repo_or_revision_in_plain_words(cli: Cli, home: Path, models: Path, fake_hub: FakeHub,
                                                 args: tuple[str, ...], words: tuple[str, ...]) -> None:
    hf_repo(fake_hub, models)
    r = cli("add", *args)
    assert_refused(r, *words)
    assert fake_hub.downloads() == []
    assert_nothing_left(cli, home)


def test_gated_repo_needs_a_token(cli: Cli, home: Path, models: Path, fake_hub: FakeHub,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    repo = fake_hub.repo("org/gated", write_tiny_hf_folder(models / "gated"), gated_token="hf_secret")
    assert_refused(cli("add", "org/gated"), "org/gated", "gated", "HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", "hf_other")
    assert_refused(cli("add", "org/gated"), "org/gated", "gated", "HF_TOKEN")
    assert_nothing_left(cli, home)

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    add_json(cli, "org/gated")
    assert_stored_as_served(home, "org/gated", repo)


def test_a_commit_id_that_is_not_hex_is_refused(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    repo = hf_repo(fake_hub, models)
    repo.publish(repo.files(), commit="../../../../../../../../../../../../../x")
    assert_refused(cli("add", "org/tiny"), "org/tiny", "40 hex", "../")
    assert fake_hub.downloads() == []
    assert_nothing_left(cli, home)


def test_unreachable_hub_in_plain_words(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    hf_repo(fake_hub, models)
    fake_hub.stop()
    assert_refused(cli("add", "org/tiny"), "cannot reach", fake_hub.url)
    assert_nothing_left(cli, home)


@pytest.mark.parametrize(("path", "lie", "words"), [
    ("model.safetensors", lambda d: d[:-1] + bytes([d[-1] ^ 1]), ("do not match", "nothing was committed")),
    ("config.json", lambda d: d.replace(b"llama", b"LLAMA"), ("do not match", "nothing was committed")),
    ("model.safetensors", lambda d: d[:-100], ("downloading", "size")),
], ids=["lfs-same-size", "git-same-size", "lfs-short"])
def test_bytes_unlike_the_listing_are_refused(cli: Cli, home: Path, models: Path, fake_hub: FakeHub, path: str,
                                               lie: Callable[[bytes], bytes], words: tuple[str, ...]) -> None:
    repo = hf_repo(fake_hub, models)
    served = lie(repo.files()[path])
    assert served != repo.files()[path]
    repo.lie(path, served)
    r = cli("add", "org/tiny")
    assert_refused(r, "org/tiny", path, *words)
    assert f"org/tiny/{path}" in fake_hub.downloads()
    assert_nothing_left(cli, home)


def test_bytes_unlike_the_listing_leave_no_object(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    """The hash is checked before the bytes are placed in objects/: a lying file leaves no blob
    for gc to find (the files downloaded before it are stored, for a rerun to reuse)."""
    repo = hf_repo(fake_hub, models)
    data = repo.files()["model.safetensors"]
    repo.lie("model.safetensors", data[:-1] + bytes([data[-1] ^ 1]))
    assert_refused(cli("add", "org/tiny"), "do not match")
    on_disk = {p.stat().st_size for p in (home / "objects").rglob("*") if p.is_file()}
    assert len(data) not in on_disk
    assert cli("gc", "--dry-run", "--json").json()["bytes_freed"] < 10_000  # README.md and config.json


@pytest.mark.parametrize("path", ["model.safetensors", "config.json"])
def test_a_hostile_etag_names_no_path(cli: Cli, home: Path, models: Path, fake_hub: FakeHub, tmp_path: Path,
                                      path: str) -> None:
    """huggingface_hub's cache names a download after the server's ETag: one such as '../../x'
    would make it write, link or move a file outside the store. add names downloads by the
    listing alone, so the answer changes nothing outside the store."""
    repo = hf_repo(fake_hub, models)
    victim, planted = tmp_path / "victim.txt", tmp_path / "planted.txt"
    victim.write_bytes(b"precious")
    for target in (victim, planted):
        fake_hub.fail("org/tiny", path, Fault(etag="../" * 40 + str(target).lstrip("/"), methods=("HEAD", "GET")))
        add_json(cli, "org/tiny", "--name", target.stem)
        assert_stored_as_served(home, target.stem, repo)
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("victim", "planted"))) == ["victim.txt"]


def test_a_dropped_connection_is_resumed_without_noise(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    """huggingface_hub resumes a download the server hung up on, and logs that it does: add says
    nothing of it (errors are one line of modelstore's own; --debug shows the library's logs)."""
    import os
    import subprocess
    import sys

    repo = hf_repo(fake_hub, models)
    fake_hub.fail("org/tiny", "model.safetensors", Fault(cut_once=1000))
    r = subprocess.run([sys.executable, "-m", "modelstore.cli", "--home", str(home), "add", "org/tiny", "--json"],
                       capture_output=True, text=True, env=dict(os.environ), timeout=120)  # the library's own stderr
    assert r.returncode == 0, r.stderr
    assert ("org/tiny", "model.safetensors") in fake_hub.cut
    assert_stored_as_served(home, "org/tiny", repo)
    assert r.stderr == ""


def test_hub_blobs_are_read_only(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    hf_repo(fake_hub, models)
    add_json(cli, "org/tiny")
    modes = {p.stat().st_mode & 0o777 for p in (home / "objects").rglob("*") if p.is_file()}
    assert modes == {0o444}


def test_hub_files_named_like_downloads_are_taken(cli: Cli, home: Path, fake_hub: FakeHub) -> None:
    """A Hub commit holds no unfinished downloads: uv.lock or notes.tmp are repo files like any."""
    files = {"README.md": b"# r\n", "uv.lock": b"lock", "notes.tmp": b"tmp", "incomplete-list.txt": b"x"}
    repo = fake_hub.repo("org/partials", files)
    assert add_json(cli, "org/partials")["files"] == 4
    assert_stored_as_served(home, "org/partials", repo)
    assert add_json(cli, "org/partials", "--include", "uv.lock", "--name", "lock")["files"] == 1


def test_an_invalid_name_is_refused_before_downloading(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    hf_repo(fake_hub, models)
    r = cli("add", "org/tiny", "--name", "bad name!")
    assert r.code == 4 and "bad name!" in r.err
    assert fake_hub.downloads() == []


@pytest.mark.parametrize("lying", [False, True])
def test_a_git_file_too_big_for_the_sha1_index_is_still_checked(cli: Cli, home: Path, fake_hub: FakeHub,
                                                                 lying: bool) -> None:
    big = bytes(range(256)) * (GIT_SHA1_LIMIT // 256 + 1)
    repo = fake_hub.repo("org/big", {"vocab.txt": big})
    if lying:
        repo.lie("vocab.txt", big[::-1])
        assert_refused(cli("add", "org/big"), "org/big/vocab.txt", "do not match")
        assert_nothing_left(cli, home)
    else:
        add_json(cli, "org/big")
        assert_stored_as_served(home, "org/big", repo)
        again = cli("add", "org/big")  # a git file the store keeps no SHA-1 of is downloaded to compare
        assert again.code == 0 and "is up to date" in again.out
        assert "nothing downloaded" not in again.out and "10.0 MiB downloaded to compare" in again.out


@pytest.mark.parametrize(("fault", "words", "code"), [
    (Fault(status=500), ("org/tiny", "500"), 5),
    (Fault(status=403), ("org/tiny", "cannot download model.safetensors", "403"), 5),
    (Fault(interrupt=True), ("interrupted", "nothing was committed"), 130),
], ids=["get-500", "get-403", "ctrl-c"])
def test_failure_on_the_third_file_commits_nothing(cli: Cli, home: Path, models: Path, fake_hub: FakeHub,
                                                    fault: Fault, words: tuple[str, ...], code: int) -> None:
    repo = hf_repo(fake_hub, models)
    fake_hub.fail("org/tiny", "model.safetensors", fault)
    r = cli("add", "org/tiny")
    assert_refused(r, *words)
    assert r.code == code
    assert "offline" not in r.err.lower()
    assert fake_hub.downloads()[:2] == ["org/tiny/README.md", "org/tiny/config.json"]
    assert_nothing_left(cli, home)

    fake_hub.faults.clear()
    add_json(cli, "org/tiny")
    assert_stored_as_served(home, "org/tiny", repo)


# -- offline: the Hugging Face cache -----------------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


def fill_cache(hub: FakeHub, cache: Path, repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, cache_dir=cache, endpoint=hub.url))


def go_offline(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_offline_add_takes_the_cached_commit(cli: Cli, home: Path, models: Path, fake_hub: FakeHub, hf_cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    repo = hf_repo(fake_hub, models)
    cached = repo.refs["main"]
    assert fill_cache(fake_hub, hf_cache, "org/tiny").name == cached
    repo.update({"README.md": b"---\nlicense: mit\n---\nnewer\n"})
    go_offline(monkeypatch, hf_cache)
    fake_hub.reset_log()

    out = add_json(cli, "org/tiny")
    assert fake_hub.requests == []
    assert out["source"] == {"kind": "huggingface", "location": "org/tiny", "revision": cached}
    assert out["metadata"]["license"] == "apache-2.0"
    assert_stored_as_served(home, "org/tiny", repo, cached)


def test_offline_add_honours_include(cli: Cli, home: Path, models: Path, fake_hub: FakeHub, hf_cache: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    repo = gguf_repo(fake_hub, models)
    fill_cache(fake_hub, hf_cache, "org/tiny-gguf")
    go_offline(monkeypatch, hf_cache)
    add_json(cli, "org/tiny-gguf", "--include", "*F16*", "--name", "q", "--no-convert")
    with opened(home) as store:
        assert list(store.model("q").files) == ["tiny-F16.gguf"]
        assert read_model_file(store, "q", "tiny-F16.gguf") == repo.files()["tiny-F16.gguf"]
    assert stored_bytes(home) == len(repo.files()["tiny-F16.gguf"])


def test_offline_and_online_adds_of_a_commit_store_the_same_files(cli: Cli, home: Path, fake_hub: FakeHub,
                                                                    hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {".gitattributes": b"*.bin filter=lfs\n", "README.md": b"# r\n", "sub/.hidden": b"h", "uv.lock": b"l"}
    repo = fake_hub.repo("org/dotfiles", files)
    fill_cache(fake_hub, hf_cache, "org/dotfiles")
    online = add_json(cli, "org/dotfiles", "--name", "online")
    go_offline(monkeypatch, hf_cache)
    offline = add_json(cli, "org/dotfiles", "--name", "offline")
    assert offline["files"] == online["files"] == 4 and offline["skipped"] == []
    assert_stored_as_served(home, "offline", repo)


def test_offline_repo_not_in_the_cache(cli: Cli, home: Path, models: Path, fake_hub: FakeHub, hf_cache: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    hf_repo(fake_hub, models)
    fill_cache(fake_hub, hf_cache, "org/tiny")
    hf_repo(fake_hub, models, "org/other")
    go_offline(monkeypatch, hf_cache)
    fake_hub.reset_log()
    assert_refused(cli("add", "org/other"), "org/other", "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    assert_refused(cli("add", "org/tiny", "--revision", "v9"), "org/tiny", "v9", "not in the Hugging Face cache")
    assert fake_hub.requests == []
    assert_nothing_left(cli, home)


def test_offline_incomplete_cache_is_refused(cli: Cli, home: Path, models: Path, fake_hub: FakeHub, hf_cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    hf_repo(fake_hub, models)
    (fill_cache(fake_hub, hf_cache, "org/tiny") / "model.safetensors").unlink()
    go_offline(monkeypatch, hf_cache)
    assert_refused(cli("add", "org/tiny"), "org/tiny", "incomplete", "HF_HUB_OFFLINE")
    assert_nothing_left(cli, home)


# -- the fake itself ---------------------------------------------------------------------------------


def test_fake_hub_answers_like_the_hub(fake_hub: FakeHub) -> None:
    from urllib.request import Request as UrlRequest
    from urllib.request import urlopen

    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    data = bytes(range(256)) * 40
    repo = fake_hub.repo("org/nested", {"top.json": b"{}", "sub/deep/w.gguf": data})
    api = HfApi(endpoint=fake_hub.url)
    assert {e.path: type(e).__name__ for e in api.list_repo_tree("org/nested")} == \
        {"top.json": "RepoFile", "sub": "RepoFolder"}
    deep = list(api.list_repo_tree("org/nested", path_in_repo="sub", recursive=True))
    assert [(e.path, e.lfs.sha256 if e.lfs else None) for e in deep] == [("sub/deep/w.gguf", sha256(data))]

    url = hf_hub_url("org/nested", "sub/deep/w.gguf", endpoint=fake_hub.url)
    meta = get_hf_file_metadata(url)
    assert (meta.etag, meta.size, meta.commit_hash) == (sha256(data), len(data), repo.refs["main"])
    with urlopen(UrlRequest(url, headers={"Range": "bytes=100-"})) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        assert response.read() == data[100:]


def test_a_file_that_is_also_a_folder_is_refused(cli: Cli, home: Path, fake_hub: FakeHub) -> None:
    """'a' and 'a/b' in one repo: no view could show both, so the repo is refused before any
    download (before, the mount died on it)."""
    fake_hub.repo("org/conflict", {"a": b"one", "a/b": b"two"})
    r = cli("add", "org/conflict")
    assert_refused(r, "'a' is both a file and the folder of 'a/b'")
    assert r.code == 4 and fake_hub.downloads() == []
    assert_nothing_left(cli, home)


@pytest.mark.parametrize("broken", ["not json", "no path", "negative size"])
def test_a_hub_reply_that_cannot_be_read_is_a_hub_error(cli: Cli, home: Path, models: Path, fake_hub: FakeHub,
                                                        monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    """A reply that is not what the API promises is the Hub's fault (exit 5), in one line."""
    import json as json_module

    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    hf_repo(fake_hub, models)
    if broken == "not json":
        def model_info(self: object, *args: object, **kwargs: object) -> object:
            raise json_module.JSONDecodeError("Expecting value", "<html>", 0)
        monkeypatch.setattr(HfApi, "model_info", model_info)
    else:
        real = HfApi.list_repo_tree

        def list_repo_tree(self: object, *args: object, **kwargs: object):
            entries = list(real(self, *args, **kwargs))
            if broken == "no path":
                raise KeyError("path")
            return [RepoFile(path=e.path, size=-5, oid=e.blob_id) if isinstance(e, RepoFile) else e for e in entries]
        monkeypatch.setattr(HfApi, "list_repo_tree", list_repo_tree)
    r = cli("add", "org/tiny")
    assert_refused(r, "org/tiny", *{"not json": ["cannot be read", "JSONDecodeError"], "no path": ["cannot be read"],
                                    "negative size": ["with size -5"]}[broken])
    assert r.code == 5, r.err
    assert_nothing_left(cli, home)


def test_a_full_disk_while_downloading_is_out_of_space(cli: Cli, home: Path, models: Path, fake_hub: FakeHub,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import huggingface_hub.file_download

    hf_repo(fake_hub, models)

    def full(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(huggingface_hub.file_download, "http_get", full)
    r = cli("add", "org/tiny")
    assert_refused(r, "no space left", "nothing was committed")
    assert r.code == 7
    assert_nothing_left(cli, home)


def test_each_revision_added_keeps_its_ref(cli: Cli, home: Path, models: Path, fake_hub: FakeHub) -> None:
    """main, a tag and another branch of one repo added as three models: the huggingface/ view's
    refs/main names main's commit whichever was added last, and refs/v1.0 and refs/dev name theirs,
    so transformers asking for a revision gets that model."""
    from modelstore.fusefs.snapshot import take_snapshot
    from modelstore.fusefs.tree import File
    from modelstore.fusefs.views import render_root
    from modelstore.store import Store

    repo = hf_repo(fake_hub, models)
    main = repo.refs["main"]
    v1 = repo.update({"README.md": b"# v1.0\n"}, branch="main")
    repo.refs["v1.0"], repo.refs["main"] = v1, main
    dev = repo.publish({**repo.files("main"), "README.md": b"# dev\n"}, branch="dev")
    assert len({main, v1, dev}) == 3
    add_json(cli, "org/tiny", "--no-convert")
    add_json(cli, "org/tiny", "--revision", "v1.0", "--name", "tiny-v1", "--no-convert")
    add_json(cli, "org/tiny", "--revision", dev, "--name", "tiny-by-commit", "--no-convert")  # a commit: no ref
    add_json(cli, "org/tiny", "--revision", "dev", "--name", "tiny-dev", "--no-convert")

    with Store(home) as store:
        tree = render_root(take_snapshot(store.catalog, str(store.objects.root)))
    refs = tree.children["huggingface"].children["models--org--tiny"].children["refs"].children  # type: ignore[union-attr]
    served = {ref: node.content.data.decode() for ref, node in refs.items() if isinstance(node, File)}
    assert served == {"main": main, "v1.0": v1, "dev": dev}
