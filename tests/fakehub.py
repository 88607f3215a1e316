"""A local stand-in for the Hugging Face Hub: the routes huggingface_hub 2.4 uses to look a model
repo up, list it and download its files, served from memory on 127.0.0.1.

Repos hold commits (path -> bytes) and branches pointing at them, so a test can publish a new
commit. Every request is logged, so a test can count downloads. Faults a real Hub (or a network)
can produce are injected per file: a status code, a Ctrl-C while a download runs, bytes that differ
from the listing, and listing entries with hostile names.
"""

from __future__ import annotations

import _thread
import contextlib
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class HubFile:
    data: bytes
    served: bytes | None = None  # what a download returns when it differs from the listing

    def body(self) -> bytes:
        return self.data if self.served is None else self.served


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def tree_entry(path: str, data: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
    if is_lfs(path):
        entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
    return entry


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated_token: str | None = None  # gated: only this token may download
    hostile: list[str] = field(default_factory=list)  # extra listing entries, never downloadable

    def publish(self, files: Mapping[str, bytes], branch: str = "main", *, commit: str | None = None) -> str:
        """A new commit holding `files`, with `branch` moved to it; returns its id (a made-up
        40-hex sha unless `commit` names it)."""
        if commit is None:
            seed = json.dumps([self.repo_id, len(self.commits), sorted((p, git_sha1(d)) for p, d in files.items())])
            commit = hashlib.sha1(seed.encode()).hexdigest()
        self.commits[commit] = {p: HubFile(d) for p, d in files.items()}
        self.refs[branch] = commit
        return commit

    def update(self, changes: Mapping[str, bytes], branch: str = "main") -> str:
        """A new commit on `branch`: its files with `changes` applied."""
        current = {p: f.data for p, f in self.commits[self.refs[branch]].items()}
        return self.publish({**current, **changes}, branch)

    def lie(self, path: str, served: bytes, branch: str = "main") -> None:
        """Downloads of `path` return `served` while the listing keeps the real hashes."""
        files = self.commits[self.refs[branch]]
        files[path] = HubFile(files[path].data, served)

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)

    def files(self, revision: str = "main") -> dict[str, bytes]:
        commit = self.resolve(revision)
        assert commit is not None, revision
        return {p: f.data for p, f in self.commits[commit].items()}

    def listing(self, commit: str) -> list[dict[str, Any]]:
        entries = [tree_entry(p, f.data) for p, f in sorted(self.commits[commit].items())]
        return entries + [tree_entry(p, b"hostile") for p in self.hostile]

    def tree(self, commit: str, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        """The tree route's answer: the files under `prefix`, or without `recursive` its direct
        children, folders included."""
        under = [e for e in self.listing(commit) if not prefix or e["path"].startswith(prefix + "/")]
        if recursive:
            return under
        depth = prefix.count("/") + 1 if prefix else 0
        out: dict[str, dict[str, Any]] = {}
        for entry in under:
            parts = entry["path"].split("/")
            if len(parts) == depth + 1:
                out[entry["path"]] = entry
            else:
                folder = "/".join(parts[: depth + 1])
                out.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                        "oid": hashlib.sha1(folder.encode()).hexdigest()})
        return list(out.values())


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # decoded, without the query

    @property
    def is_download(self) -> bool:
        return self.method == "GET" and "/resolve/" in self.path


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # answer with this status instead of the file
    interrupt: bool = False  # raise KeyboardInterrupt in the main thread, as Ctrl-C would
    methods: tuple[str, ...] = ("GET",)
    etag: str | None = None  # serve the file under this ETag (a hostile server)
    cut_once: int | None = None  # the first GET sends this many bytes of the body, then hangs up


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (an interrupted download): not the test's business


_TREE = re.compile(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?")
_INFO = re.compile(r"/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?")
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.faults: dict[tuple[str, str], Fault] = {}
        self.cut: set[tuple[str, str]] = set()  # files whose cut_once fault has happened
        self.connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and hang up on kept-alive connections, as a Hub that went away would."""
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        with self._lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def repo(self, repo_id: str, files: Mapping[str, bytes] | Path | None = None, *,
             gated_token: str | None = None) -> Repo:
        repo = Repo(repo_id, gated_token=gated_token)
        if files is not None:
            repo.publish(folder_files(files) if isinstance(files, Path) else files)
        self.repos[repo_id] = repo
        return repo

    def fail(self, repo_id: str, path: str, fault: Fault) -> None:
        self.faults[(repo_id, path)] = fault

    def track(self, conn: socket.socket, *, open: bool) -> None:
        with self._lock:
            if open:
                self.connections.add(conn)
            else:
                self.connections.discard(conn)

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def downloads(self) -> list[str]:
        """The files fetched so far, as 'org/name/path', in request order."""
        with self._lock:
            return [re.sub(r"/resolve/[^/]+/", "/", r.path.lstrip("/")) for r in self.requests if r.is_download]

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def setup(self) -> None:
            super().setup()
            hub.track(self.connection, open=True)

        def finish(self) -> None:
            hub.track(self.connection, open=False)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, value: Any) -> None:
            self._send(200, json.dumps(value).encode())

        def _error(self, status: int, code: str | None, message: str,
                   extra: Mapping[str, str] | None = None) -> None:
            headers = {"X-Error-Message": message, **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _repo(self, raw_id: str) -> Repo | None:
            repo = hub.repos.get(unquote(raw_id))
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {unquote(raw_id)} not found")
            return repo

        def _commit(self, repo: Repo, raw_rev: str) -> str | None:
            commit = repo.resolve(unquote(raw_rev))
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(raw_rev)}")
            return commit

        def _route(self) -> None:
            url = urlsplit(self.path)
            raw = url.path
            hub.log(Request(self.command, unquote(raw)))
            if m := _TREE.fullmatch(raw):
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
                self._tree(m[1], m[2], unquote(m[3] or ""), recursive)
            elif m := _INFO.fullmatch(raw):
                self._info(m[1], m[2] or "main")
            elif m := _RESOLVE.fullmatch(raw):
                self._resolve(m[1], m[2], unquote(m[3]))
            else:
                self._error(404, None, f"no route for {raw}")

        def _info(self, raw_id: str, raw_rev: str) -> None:
            if (repo := self._repo(raw_id)) is None or (commit := self._commit(repo, raw_rev)) is None:
                return
            siblings = [{"rfilename": e["path"]} for e in repo.listing(commit)]
            self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit, "private": False,
                        "gated": "manual" if repo.gated_token else False, "siblings": siblings})

        def _tree(self, raw_id: str, raw_rev: str, prefix: str, recursive: bool) -> None:
            if (repo := self._repo(raw_id)) is None or (commit := self._commit(repo, raw_rev)) is None:
                return
            self._json(repo.tree(commit, prefix.strip("/"), recursive))

        def _resolve(self, raw_id: str, raw_rev: str, path: str) -> None:
            if (repo := self._repo(raw_id)) is None or (commit := self._commit(repo, raw_rev)) is None:
                return
            auth = self.headers.get("Authorization")
            if repo.gated_token and auth != f"Bearer {repo.gated_token}":
                # as the Hub does: 401 without a token, 403 for a token without access
                self._error(403 if auth else 401, "GatedRepo", f"Access to model {repo.repo_id} is restricted")
                return
            file = repo.commits[commit].get(path)
            if file is None:
                self._error(404, "EntryNotFound", f"{path} does not exist at {commit}", {"X-Repo-Commit": commit})
                return
            fault = hub.faults.get((repo.repo_id, path))
            if fault is not None and self.command in fault.methods:
                if fault.interrupt:
                    _thread.interrupt_main()
                elif fault.status is not None:
                    self._error(fault.status, None, f"injected {fault.status}")
                    return
                elif fault.cut_once is not None and (repo.repo_id, path) not in hub.cut and self.command == "GET":
                    hub.cut.add((repo.repo_id, path))
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(file.body())))
                    self.end_headers()
                    self.wfile.write(file.body()[: fault.cut_once])
                    self.close_connection = True
                    return
            self._file(commit, path, file, fault.etag if fault is not None and self.command in fault.methods else None)

        def _file(self, commit: str, path: str, file: HubFile, etag: str | None = None) -> None:
            body = file.body()
            lfs = is_lfs(path)
            etag = etag or (sha256(file.data) if lfs else git_sha1(file.data))
            headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "ETag": f'"{etag}"'}
            if lfs:
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(file.data))})
            wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
            if wanted and int(wanted[1]) < len(body):
                start = int(wanted[1])
                end = min(int(wanted[2]), len(body) - 1) if wanted[2] else len(body) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                self._send(206, body[start : end + 1], headers, "application/octet-stream")
                return
            self._send(200, body, headers, "application/octet-stream")

    return Handler


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A running fake Hub that HF_ENDPOINT points at; downloads go over plain HTTP, and the
    Hugging Face home (cache, token) is a fresh folder."""
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield hub
    finally:
        hub.stop()
