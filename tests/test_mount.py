"""Real FUSE mounts: every byte of every view, the HF client's own scan and offline download,
live updates, open files across rm + gc, unmounting and remounting."""

from __future__ import annotations

import errno
import hashlib
import json
import re
import mmap
import os
import signal
import subprocess
import sys
import time
import threading
from pathlib import Path

import pytest

from modelstore.converters.synth import write_tiny_hf_folder, write_tiny_llama_gguf
from modelstore.fusefs.snapshot import take_snapshot
from modelstore.fusefs.tree import Dir, File, Literal, StoredContent
from modelstore.fusefs.views import render_root
from modelstore.store import Store
from modelstore.store.gc import run_gc
from modelstore.store.sources.local import add_local
from tests.mounting import mounted, requires_fuse, wait_until

pytestmark = [requires_fuse, pytest.mark.fuse]

VIEWS = {"huggingface", "ollama", "lmstudio", "llamacpp", "jan", "store"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def filled(store: Store, models: Path) -> Store:
    add_local(store, write_tiny_llama_gguf(models / "tiny.gguf", license="mit"), name="tiny:f32")
    add_local(store, write_tiny_llama_gguf(models / "tuned.gguf", changed={"output.weight": 5}), name="tiny:tuned")
    add_local(store, write_tiny_hf_folder(models / "hf", shards=2), name="hf-model")
    return store


def expected_files(store: Store) -> dict[str, tuple[str, int]]:
    """path in the mount -> (sha256, size), from the views rendered in-process."""
    snap = take_snapshot(store.catalog, str(store.objects.root))
    out: dict[str, tuple[str, int]] = {}

    def visit(node: Dir, prefix: str) -> None:
        for name, child in node.children.items():
            path = f"{prefix}{name}"
            if isinstance(child, Dir):
                visit(child, path + "/")
            elif isinstance(child, File):
                if isinstance(child.content, Literal):
                    out[path] = (hashlib.sha256(child.content.data).hexdigest(), child.content.size)
                else:
                    assert isinstance(child.content, StoredContent)
                    record = snap.file(child.content.b3)
                    out[path] = (record.sha256, record.size)

    visit(render_root(snap), "")
    return out


def test_every_file_of_every_view_reads_back_exactly(filled: Store, home: Path, tmp_path: Path) -> None:
    expected = expected_files(filled)
    with mounted(home, tmp_path / "mnt") as m:
        assert set(os.listdir(m.path)) == VIEWS
        seen = {}
        for dirpath, _, filenames in os.walk(m.path):
            for fn in filenames:
                p = Path(dirpath) / fn
                if p.is_symlink():
                    continue
                rel = p.relative_to(m.path).as_posix()
                seen[rel] = (sha256_file(p), p.stat().st_size)
        assert seen == expected
        # the catalog's SHA-256 is the name Ollama and the HF cache use
        for rel, (digest, _) in seen.items():
            if rel.startswith("ollama/blobs/"):
                assert rel == f"ollama/blobs/sha256-{digest}"


def test_huggingface_clients_read_the_view(filled: Store, home: Path, tmp_path: Path) -> None:
    import huggingface_hub

    with mounted(home, tmp_path / "mnt") as m:
        cache = m.path / "huggingface"
        info = huggingface_hub.scan_cache_dir(cache)
        assert info.warnings == []
        repos = {r.repo_id: r for r in info.repos}
        assert set(repos) == {"local/tiny-f32", "local/tiny-tuned", "local/hf-model"}
        hf_repo = repos["local/hf-model"]
        assert hf_repo.nb_files == 6 and [r.refs for r in hf_repo.revisions] == [frozenset({"main"})]
        code = (
            "import sys, huggingface_hub as h\n"
            "p = h.hf_hub_download('local/hf-model', 'config.json', cache_dir=sys.argv[1])\n"
            "q = h.snapshot_download('local/hf-model', cache_dir=sys.argv[1])\n"
            "print(p); print(q)\n")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, "-c", code, str(cache)], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        config_path, snapshot = out.stdout.split()
        source = filled.model("hf-model")
        assert Path(config_path).read_bytes() == filled.read_range(filled.file(source.files["config.json"]), 0, 10**6)
        assert sorted(os.listdir(snapshot)) == sorted(source.files)


def test_inodes_sizes_and_mtimes_are_stable_across_views_and_remounts(filled: Store, home: Path, tmp_path: Path) -> None:
    def stats(root: Path) -> dict[str, tuple[int, int, int]]:
        paths = ["llamacpp/tiny-f32.gguf", "lmstudio/local/tiny-f32/tiny.gguf", "store/by-model/tiny:f32/tiny.gguf"]
        out = {}
        for p in paths:
            st = os.stat(root / p)
            out[p] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return out

    with mounted(home, tmp_path / "a") as m:
        first = stats(m.path)
    with mounted(home, tmp_path / "b") as m:
        second = stats(m.path)
    assert first == second
    assert len({v for v in first.values()}) == 1  # one file, one inode, whichever view


def test_mmap_reads_like_a_file(filled: Store, home: Path, tmp_path: Path, models: Path) -> None:
    with mounted(home, tmp_path / "mnt") as m, open(m.path / "llamacpp/tiny-f32.gguf", "rb") as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            assert hashlib.sha256(mm).hexdigest() == hashlib.sha256((models / "tiny.gguf").read_bytes()).hexdigest()


def test_live_updates_within_a_second(filled: Store, home: Path, tmp_path: Path, models: Path) -> None:
    new = write_tiny_llama_gguf(models / "new.gguf", seed=11)
    with mounted(home, tmp_path / "mnt") as m:
        targets = [m.path / "llamacpp/new-q.gguf", m.path / "lmstudio/local/new-q/new.gguf",
                   m.path / "ollama/manifests/registry.ollama.ai/library/new/q", m.path / "store/by-model/new:q/new.gguf"]
        assert not any(t.exists() for t in targets)
        add_local(filled, new, name="new:q")
        added = wait_until(lambda: all(t.exists() for t in targets), timeout=5)
        assert added < 1.0
        assert (m.path / "llamacpp/new-q.gguf").read_bytes() == new.read_bytes()
        filled.remove("new:q")
        removed = wait_until(lambda: not any(t.exists() for t in targets), timeout=5)
        assert removed < 1.0
        assert "new-q.gguf" not in os.listdir(m.path / "llamacpp")


def test_link_counts_and_folder_dates_follow_catalog_changes(store: Store, home: Path, tmp_path: Path,
                                                             models: Path) -> None:
    """Attributes are cached for an hour, so a change must invalidate them: once one of two models
    sharing a file is removed, the file's link count drops on the open mount (not at the next
    remount), and a folder's mtime (never 1970) follows the newest model it holds."""
    twin = write_tiny_llama_gguf(models / "twin.gguf", seed=9)
    add_local(store, twin, name="t-1")
    with mounted(home, tmp_path / "mnt") as m:
        path = m.path / "llamacpp/t-1.gguf"
        alone = os.stat(path).st_nlink
        first = os.stat(m.path).st_mtime_ns
        assert first == int(store.model("t-1").added_at * 1e9)
        assert os.stat(m.path / "ollama/manifests").st_mtime_ns == first
        add_local(store, twin, name="t:1")
        wait_until(lambda: (m.path / "llamacpp/t-1-2.gguf").exists(), timeout=5)
        shared = os.stat(path).st_nlink
        assert shared > alone
        assert os.stat(m.path).st_mtime_ns == int(store.model("t:1").added_at * 1e9) > first
        store.remove("t:1")
        wait_until(lambda: not (m.path / "llamacpp/t-1-2.gguf").exists(), timeout=5)
        assert os.stat(path).st_nlink == alone
        assert os.stat(m.path).st_mtime_ns == first


def test_open_file_keeps_reading_after_rm_and_gc(filled: Store, home: Path, tmp_path: Path, models: Path) -> None:
    expected = (models / "tuned.gguf").read_bytes()
    with mounted(home, tmp_path / "mnt") as m:
        with open(m.path / "llamacpp/tiny-tuned.gguf", "rb", buffering=0) as f:
            head = f.read(1000)
            filled.remove("tiny:tuned")
            freed = run_gc(filled).plan.bytes_freed
            assert freed > 0
            wait_until(lambda: not (m.path / "llamacpp/tiny-tuned.gguf").exists(), timeout=5)
            rest = f.read()
        assert head + rest == expected


def test_concurrent_readers_while_adds_and_removes_commit(filled: Store, home: Path, tmp_path: Path,
                                                          models: Path) -> None:
    tiny = (models / "tiny.gguf").read_bytes()
    errors: list[str] = []
    stop = threading.Event()
    with mounted(home, tmp_path / "mnt") as m:
        path = m.path / "lmstudio/local/tiny-f32/tiny.gguf"

        def reader() -> None:
            reads = 0
            while not stop.is_set() or reads < 3:
                with open(path, "rb") as f:
                    if f.read() != tiny:
                        errors.append("mismatch")
                reads += 1
                os.posix_fadvise(os.open(path, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(6):
            g = write_tiny_llama_gguf(models / f"c{i}.gguf", seed=20 + i)
            add_local(filled, g, name=f"c{i}")
            if i % 2:
                filled.remove(f"c{i - 1}")
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors
        wait_until(lambda: sorted(p for p in os.listdir(m.path / "llamacpp") if p.startswith("c")) ==
                   ["c1.gguf", "c3.gguf", "c5.gguf"], timeout=5)


GETDENTS64 = {"x86_64": 217, "aarch64": 61}.get(os.uname().machine)


def getdents(fd: int, size: int = 512) -> list[str]:
    """One getdents64 call with a small buffer, as readdir(3) makes them: each asks the mount for
    the next part of the listing, from the offset the last one ended at."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(size)
    n = libc.syscall(GETDENTS64, fd, buf, size)
    if n < 0:
        raise OSError(ctypes.get_errno(), "getdents64")
    names, pos = [], 0
    while pos < n:
        reclen = struct.unpack_from("QqH", buf.raw, pos)[2]
        names.append(buf.raw[pos + 19 : pos + reclen].split(b"\0")[0].decode())
        pos += reclen
    return names


@pytest.mark.skipif(GETDENTS64 is None, reason="getdents64's syscall number is known here for x86_64 and aarch64")
def test_a_listing_across_catalog_changes_lists_every_lasting_entry_once(store: Store, home: Path, tmp_path: Path,
                                                                         models: Path) -> None:
    """POSIX readdir: an entry there for the whole listing is returned exactly once, whatever is
    removed or added meanwhile. Models that sort before where the listing has got to are removed,
    then others added, between the listing's requests."""
    from modelstore.store.records import ModelRecord

    base = add_local(store, write_tiny_llama_gguf(models / "t.gguf"), name="m-base").model
    with store.catalog.write() as w:
        for i in range(80):
            w.put_model(ModelRecord(f"m{i:03d}", base.source, base.files, {}, 1.0 + i))
    with mounted(home, tmp_path / "mnt") as m:
        folder = m.path / "store/by-model"
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            got = getdents(fd)
            assert 3 <= len(got) < 40, got  # the listing takes several requests
            removed = [n for n in got if n.startswith("m0")]
            with store.catalog.write() as w:
                for name in removed:
                    w.remove_model(name)
            wait_until(lambda: not (folder / removed[0]).exists(), timeout=5)
            got += getdents(fd)
            added = [f"a{i:03d}" for i in range(30)]  # sort before every name listed so far
            with store.catalog.write() as w:
                for name in added:
                    w.put_model(ModelRecord(name, base.source, base.files, {}, 200.0))
            wait_until(lambda: (folder / added[0]).exists(), timeout=5)
            while names := getdents(fd):
                got += names
        finally:
            os.close(fd)
        lasting = {"m-base", *(f"m{i:03d}" for i in range(80))} - set(removed) - {".", ".."}
        counts = {name: got.count(name) for name in {*got, *lasting, *removed, *added}}
        assert {name for name in lasting if counts[name] != 1} == set()
        assert all(counts[name] <= 1 for name in (*removed, *added))
        assert set(os.listdir(folder)) == lasting | set(added)

        def listing(skip: int = 0) -> list[str]:  # a fresh descriptor, sought first (seekdir)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.lseek(fd, skip, os.SEEK_SET)
                out: list[str] = []
                while names := getdents(fd):
                    out += names
                return out
            finally:
                os.close(fd)

        whole = listing()
        assert len(whole) > 40 and listing(7) == whole[7:]


def test_two_mounts_of_one_store(filled: Store, home: Path, tmp_path: Path, models: Path) -> None:
    with mounted(home, tmp_path / "a") as a, mounted(home, tmp_path / "b") as b:
        for root in (a.path, b.path):
            assert (root / "llamacpp/tiny-f32.gguf").read_bytes() == (models / "tiny.gguf").read_bytes()


def test_sigterm_unmounts_cleanly(filled: Store, home: Path, tmp_path: Path) -> None:
    with mounted(home, tmp_path / "mnt") as m:
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(10) == 0
        assert not os.path.ismount(m.path)


def test_mount_refuses_busy_and_non_empty_mount_points(filled: Store, home: Path, tmp_path: Path, cli) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    r = cli("mount", full)
    assert r.code == 2 and "not empty" in r.err
    with mounted(home, tmp_path / "mnt") as m:
        r = cli("mount", m.path)
        assert r.code == 8 and "already a mount point" in r.err


def run_modelstore(home: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """`modelstore ARGS` against `home` in a process of its own, as a user runs it (a background
    mount detaches from it)."""
    return subprocess.run([sys.executable, "-m", "modelstore.cli", *(str(a) for a in args)],
                          env={**os.environ, "MODELSTORE_HOME": str(home)}, capture_output=True, text=True, timeout=60)


def test_background_mount_and_umount_commands(filled: Store, home: Path, tmp_path: Path, models: Path) -> None:
    mnt = tmp_path / "bg"
    r = run_modelstore(home, "mount", mnt)
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt) and "mounted" in r.stdout
        with open(mnt / "llamacpp/tiny-f32.gguf", "rb") as f:
            busy = run_modelstore(home, "umount", mnt)
            assert busy.returncode == 8 and "busy" in busy.stderr
            lazy = run_modelstore(home, "umount", "--lazy", mnt)
            assert lazy.returncode == 0, lazy.stderr
            assert f.read() == (models / "tiny.gguf").read_bytes()  # an open file reads on after a lazy unmount
            wait_until(lambda: not os.path.ismount(mnt))
            # Mounted again while the detached server still serves f: umount waits for the new one only.
            assert run_modelstore(home, "mount", mnt).returncode == 0
            start = time.monotonic()
            again = run_modelstore(home, "umount", mnt)
            assert again.returncode == 0 and "still running" not in again.stderr, again.stderr
            assert time.monotonic() - start < 5
        # A plain umount returns once the serving process is gone: the store is closed, so the
        # filesystem holding it can be unmounted next.
        r = run_modelstore(home, "mount", mnt)
        assert r.returncode == 0, r.stderr
        pid = int(re.search(r"\(pid (\d+),", r.stdout).group(1))  # type: ignore[union-attr]
        assert run_modelstore(home, "umount", mnt).returncode == 0
        assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_the_unmount_hint_is_a_command_a_shell_runs_as_shown(filled: Store, home: Path, tmp_path: Path) -> None:
    """A mount point with spaces (and a quote) is quoted in the "unmount with:" hint, so pasting
    it unmounts that folder, not three others."""
    import shlex

    mnt = tmp_path / "my models's mount"
    r = run_modelstore(home, "mount", mnt)
    try:
        assert r.returncode == 0, r.stderr
        hint = shlex.split(r.stdout.split("unmount with: ", 1)[1])
        assert hint[1:] == ["umount", str(mnt)], r.stdout
        assert run_modelstore(home, *hint[1:]).returncode == 0
        assert not os.path.ismount(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_links_option_points_into_the_store(filled: Store, home: Path, tmp_path: Path, models: Path) -> None:
    with mounted(home, tmp_path / "mnt", "--links") as m:
        path = m.path / "llamacpp/tiny-f32.gguf"
        assert path.is_symlink() and os.readlink(path).startswith(str(home / "objects"))
        assert path.read_bytes() == (models / "tiny.gguf").read_bytes()
        manifest = m.path / "ollama/manifests/registry.ollama.ai/library/tiny/f32"
        layers = json.loads(manifest.read_text())["layers"]
        blob = m.path / "ollama/blobs" / layers[0]["digest"].replace(":", "-")
        assert blob.read_bytes() == (models / "tiny.gguf").read_bytes()


def test_a_catalog_no_view_can_show_does_not_end_the_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the views cannot be rebuilt for a new catalog generation, the mount keeps serving its
    last tree (and tries again at the next generation) instead of ending."""
    import trio
    from modelstore.fusefs import mount as mount_module

    class Catalog:
        generation_now = 1

        def generation(self) -> int:
            return self.generation_now

    class FakeStore:
        catalog = Catalog()

    class Ops:
        tree = object()
        replaced: list[object] = []

        def replace_tree(self, tree: object) -> None:
            self.replaced.append(tree)

    attempts: list[int] = []

    def build_tree(store: object, options: object, started_ns: int = 0) -> tuple[int, object]:
        attempts.append(store.catalog.generation_now)  # type: ignore[attr-defined]
        raise ValueError("'a' is a file and a folder")

    monkeypatch.setattr(mount_module, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(mount_module, "build_tree", build_tree)
    ops, store = Ops(), FakeStore()

    async def main() -> None:
        with trio.move_on_after(1.0):  # many polls: one rebuild attempt, however slow the machine
            await mount_module._watch(store, ops, object(), 0)  # type: ignore[arg-type]

    trio.run(main)
    assert attempts == [1] and ops.replaced == []  # one try per generation, the old tree kept


def test_umount_leaves_other_mounts_alone(home: Path, tmp_path: Path, cli) -> None:
    other = tmp_path / "tmpfs"
    other.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(other)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = cli("umount", other)
        assert r.code == 2 and "not a modelstore mount" in r.err
        assert os.path.ismount(other)
    finally:
        subprocess.run(["umount", str(other)], capture_output=True)


@requires_fuse
@pytest.mark.corrupts_store
def test_links_from_a_relative_home_and_a_missing_blob(filled: Store, home: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--links with a relative --home still links to the blob (an absolute target); a file whose
    blob went missing opens with EIO, not ENOENT (it is listed: the store is damaged)."""
    monkeypatch.chdir(home.parent)
    mnt = tmp_path / "rel"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "modelstore.cli", "--home", home.name, "mount", "-f", "--links",
                             str(mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.ismount(mnt))
        path = mnt / "llamacpp/tiny-f32.gguf"
        assert os.readlink(path).startswith("/") and path.read_bytes()[:4] == b"GGUF"
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        proc.wait(10)
    with mounted(home, tmp_path / "mnt") as m:
        victim = m.path / "llamacpp/tiny-f32.gguf"
        record = filled.file(filled.model("tiny:f32").files["tiny.gguf"])
        filled.objects.path(record.recipe[0].blob).unlink()
        with pytest.raises(OSError) as raised:
            open(victim, "rb").close()
        assert raised.value.errno == errno.EIO


def test_jan_reads_the_jan_view_as_its_models_folder(store: Store, home: Path, tmp_path: Path, models: Path,
                                                     cli) -> None:
    """A Jan data folder whose llamacpp/models is a link to <mount>/jan, read by modelstore's own Jan
    importer (which follows model.yml as Jan does): every model found, its files' bytes hash to
    the store's and to the sha256 model.yml gives, and `import --dry-run` has nothing new to store."""
    from modelstore.store.sources.runtimes import open_folder
    from tests.runtime_folders import add_split_and_vision_models

    add_local(store, write_tiny_llama_gguf(models / "tiny.gguf"), name="tiny:f32")
    add_split_and_vision_models(store, models)
    add_local(store, write_tiny_hf_folder(models / "hf"), name="hf-only")  # no GGUF: not in jan/
    stored = {m.name: {rel: store.file(b3).sha256 for rel, b3 in m.files.items()} for m in store.models()}
    with mounted(home, tmp_path / "mnt") as m:
        data = tmp_path / "Jan" / "data"
        (data / "llamacpp").mkdir(parents=True)
        (data / "llamacpp" / "models").symlink_to(m.path / "jan")
        scan = open_folder("jan", data).scan()
        assert not scan.skipped
        found = {f.source.location: f for f in scan.models}
        assert set(found) == set(os.listdir(m.path / "jan")) == {"tiny-f32", "org--big", "see-q8"}
        for model_id, model in found.items():
            assert all(path.parent == data / "llamacpp/models" / model_id for path in model.files.values())
            hashes = {rel: sha256_file(path) for rel, path in model.files.items()}
            assert {rel: hashes[rel] for rel in model.expected} == {rel: d.value for rel, d in model.expected.items()}
            assert len(model.files) == (3 if model_id == "org--big" else len(model.expected))  # a split: every shard
            # the folder Jan's llama-server is pointed at: the model's stored files, each byte
            folder = {p.name: sha256_file(p) for p in (m.path / "jan" / model_id).iterdir() if p.name != "model.yml"}
            assert set(hashes.values()) <= set(folder.values())
            owner = {"tiny-f32": "tiny:f32", "org--big": "org/big", "see-q8": "see:q8"}[model_id]
            assert sorted(folder.values()) == sorted(stored[owner].values())
        assert set(found["see-q8"].files) == {"see-Q8_0.gguf", "mmproj-projector.gguf"}
        assert next(iter(found["org--big"].files)).endswith("-00001-of-00003.gguf")  # model_path: the first shard
        dry = cli("import", "--from", "jan", data, "--dry-run", "--json")
        assert dry.code == 0, dry.err
        plan = dry.json()
        later_shards = sum(p.stat().st_size for rel, p in found["org--big"].files.items() if "-00001-" not in rel)
        # model.yml gives a SHA-256 for the first shard only: the others are what the dry run cannot know unhashed
        assert len(plan["models"]) == 3 and plan["new_bytes"] == 0 and plan["unhashed_bytes"] == later_shards > 0
        assert plan["stored_bytes"] + plan["unhashed_bytes"] == plan["logical_bytes"] > 0
        assert "EROFS" not in m.log_text() and "Read-only" not in m.log_text()
