"""`modelstore add org/name`: a Hugging Face repo at a revision, through huggingface_hub.

The listing gives each file's SHA-256 (LFS files) or git blob SHA-1 (the rest); a file the store
already holds under that hash is not downloaded again. Each download goes to the add's staging
folder (under its listed name: never a path the server's answers make up), is checked against
the listed hash before it is placed in objects/, and is deleted, so the extra disk at any moment
is one file. HF_ENDPOINT, HF_TOKEN and the cache location (HF_HOME, HF_HUB_CACHE)
are read when an add runs, not at import.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from modelstore.store.digests import git_blob_header
from modelstore.store.errors import ModelstoreError, NotFound, SourceError, UsageError
from modelstore.store.hashing import CHUNK, FileHashes
from modelstore.store.ingest import ImportMode, ProgressFactory
from modelstore.store.names import check_file_tree, check_model_name, check_relpath, check_repo_id
from modelstore.store.objects import no_space
from modelstore.store.records import Source
from modelstore.store.sources.common import default_name, finish
from modelstore.store.sources.local import ingest_all
from modelstore.store.sources.runtimes.identity import REFS_KEY, hf_refs, valid_ref
from modelstore.store.store import SMALL_FILE, AddResult, Store


_COMMIT = re.compile(r"[0-9a-f]{40}")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hub_cache() -> Path:
    """The Hugging Face cache folder, from the environment as it is now (huggingface_hub reads it at import)."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextmanager
def hub_errors(repo_id: str, revision: str | None, path: str | None = None) -> Iterator[None]:
    """The Hub's refusals in plain words, on one line."""
    from huggingface_hub import errors

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    at = f"{repo_id} at {revision or 'main'}"
    incomplete = getattr(errors, "IncompleteSnapshotError", ())  # not in older huggingface_hub
    try:
        yield
    except errors.GatedRepoError:
        raise SourceError(f"{repo_id} is gated: accept its terms on its Hub page, then set HF_TOKEN "
                          f"to a token of that account") from None
    except errors.RepositoryNotFoundError:
        raise SourceError(f"{repo_id}: no such model repo on {endpoint} (if it is private, set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise SourceError(f"{repo_id}: no revision {revision!r} (a branch, tag or commit)") from None
    except incomplete:
        raise SourceError(f"{at}: the Hugging Face cache ({_hub_cache()}) holds an incomplete copy, and "
                          f"offline mode (HF_HUB_OFFLINE) forbids downloading the rest") from None
    except errors.LocalEntryNotFoundError as exc:
        if _offline():
            raise SourceError(f"{at} is not in the Hugging Face cache ({_hub_cache()}), and offline mode "
                              f"(HF_HUB_OFFLINE) forbids downloading it") from None
        cause = exc.__cause__ or exc
        raise SourceError(f"{repo_id}: cannot download {path or 'the repo'} from {endpoint}: "
                          f"{_first_line(cause)}") from None
    except errors.EntryNotFoundError:
        raise SourceError(f"{repo_id}: {path or 'a listed file'} is listed but missing on the Hub") from None
    except errors.HfHubHTTPError as exc:
        if path is not None:
            raise SourceError(f"{repo_id}: cannot download {path} from {endpoint}: {_first_line(exc)}") from None
        raise SourceError(f"{repo_id}: the Hub answered: {_first_line(exc)}") from None
    except OSError as exc:
        if exc.errno is not None:  # the local disk: permissions, no space
            raise
        raise SourceError(f"{repo_id}: downloading {path or 'the repo'} failed: {_first_line(exc)}") from None
    except ModelstoreError:
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3"):
            raise SourceError(f"cannot reach {endpoint}: {_first_line(exc)}") from None  # no connection, DNS, TLS
        if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError)):  # a reply that is not what the API says
            raise SourceError(f"{repo_id}: {endpoint} gave an answer that cannot be read "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
        raise


def add_from_hub(store: Store, repo_id: str, *, name: str | None = None, revision: str | None = None,
                 include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                 progress: ProgressFactory | None = None, on_wait: Any = None) -> AddResult:
    check_repo_id(repo_id)
    name = check_model_name(name or default_name(repo_id))  # before anything is downloaded
    if _offline():
        return _add_from_hf_cache(store, repo_id, name, revision, include, exclude, progress, on_wait)

    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    endpoint = os.environ.get("HF_ENDPOINT") or None
    token = os.environ.get("HF_TOKEN") or None
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(repo_id, revision):
        info = api.model_info(repo_id, revision=revision)
        commit = info.sha
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            raise SourceError(f"{repo_id}: the Hub gave no commit (40 hex digits) for revision "
                              f"{revision or 'main'}, but {commit!r}")
        listing = [e for e in api.list_repo_tree(repo_id, revision=commit, recursive=True) if isinstance(e, RepoFile)]
    for entry in listing:
        check_relpath(entry.path, where=f"{repo_id}@{commit[:8]}")
        if not isinstance(entry.size, int) or entry.size < 0:
            raise SourceError(f"{repo_id}@{commit[:8]}: the Hub lists {entry.path} with size {entry.size!r}")
    check_file_tree((e.path for e in listing), where=f"{repo_id}@{commit[:8]}")
    chosen = list(filter_repo_objects(listing, allow_patterns=list(include) or None,
                                      ignore_patterns=list(exclude) or None, key=lambda e: e.path))
    if not chosen:
        raise UsageError(f"{repo_id}@{commit[:8]}: no file matches --include/--exclude "
                         f"({len(listing)} files in the repo)")

    source = Source("huggingface", repo_id, commit)
    with store.adding(ImportMode.MOVE, progress, on_wait) as ingest:
        stored: dict[str, str] = {}
        readable: dict[str, Path] = {}
        this_add: dict[str, str] = {}  # listed hash -> file digest, for a file listed twice
        logical = novel = reused = downloaded = 0
        for i, entry in enumerate(chosen):
            lfs_sha = entry.lfs.sha256 if entry.lfs else None
            listed = lfs_sha or entry.blob_id
            with store.catalog.read() as r:
                known = r.file_by_sha256(lfs_sha) if lfs_sha else r.file_by_git_sha1(entry.blob_id)
            known = known or this_add.get(listed)
            if known is not None:
                stored[entry.path] = known
                logical += entry.size
                reused += 1
                continue
            local = _download(repo_id, commit, entry.path, entry.size, ingest.staging, i, endpoint, token, store.home)
            downloaded += local.stat().st_size
            mismatch = SourceError(f"{repo_id}/{entry.path}: the downloaded bytes do not match the hash "
                                   f"the Hub lists; nothing was committed")

            def check(hashes: FileHashes, local: Path = local, lfs_sha: str | None = lfs_sha,
                      blob_id: str = entry.blob_id, mismatch: SourceError = mismatch) -> None:
                if not _matches_listing(hashes.size, hashes.sha256, hashes.git_sha1, local, lfs_sha, blob_id):
                    raise mismatch  # before the bytes are placed in objects/

            result = ingest.ingest(local, entry.path, check=check)
            record = result.record
            if not _matches_listing(record.size, record.sha256, record.git_sha1, local, lfs_sha, entry.blob_id):
                raise mismatch  # a file the store held already, under another hash than the one listed
            if record.size <= SMALL_FILE:
                readable[entry.path] = local  # small text files are read for metadata at commit
            else:
                local.unlink()  # the bytes now live in objects/: keep the extra disk to one file
            stored[entry.path] = this_add[listed] = record.b3
            logical += record.size
            novel += result.novel_bytes
            reused += result.reused_file
        ingest.sources_to_remove.clear()  # downloads live in staging, which goes away by itself
        return finish(store, ingest, name, source, stored, readable, logical, novel, reused, downloaded,
                      extra_metadata=_refs(store, name, source, revision))


def _refs(store: Store, name: str, source: Source, revision: str | None) -> dict[str, Any]:
    """The branch or tag asked for ("main" when none was), with the refs the model already had at
    that commit: the huggingface/ view points refs/<ref> at it, as the Hub's own cache would."""
    refs = set()
    try:
        current = store.model(name)
        if current.source == source:
            refs.update(hf_refs(current))
    except NotFound:
        pass
    asked = revision or "main"
    if not _COMMIT.fullmatch(asked) and valid_ref(asked):
        refs.add(asked)
    return {REFS_KEY: sorted(refs)} if refs else {}


def _download(repo_id: str, commit: str, path: str, size: int, staging: Path, index: int,
              endpoint: str | None, token: str | None, home: Path) -> Path:
    """One listed file, downloaded into `staging` under its own name (the suffix tells a
    safetensors file apart), read-only: the store's bytes from now on.

    Not through hf_hub_download: it names its files after the server's ETag, unchecked, so an
    ETag such as "../../x" would write, link or move a file outside the store. Here the path is
    the listed name, already checked, and the bytes are checked against the listed hash."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    local = staging / "files" / str(index) / PurePosixPath(path).name
    local.parent.mkdir(parents=True)
    try:
        with hub_errors(repo_id, commit, path), open(local, "wb") as f:
            http_get(hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint), f,
                     headers=build_hf_headers(token=token), expected_size=size, displayed_filename=path)
    except OSError as exc:
        raise no_space(exc, home, f"downloading {path}") from exc
    local.chmod(0o444)
    return local


def _matches_listing(size: int, sha256: str | None, git_sha1: str | None, path: Path, lfs_sha: str | None,
                     listed_git_sha1: str) -> bool:
    if lfs_sha:
        return sha256 == lfs_sha
    if git_sha1 is not None:
        return git_sha1 == listed_git_sha1
    h = hashlib.sha1(git_blob_header(size))  # a git file too large for the store to index
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest() == listed_git_sha1


def _snapshot_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Every file of a cached snapshot: all of it is the repo, hidden files (.gitattributes) and
    names that look like unfinished downloads included, as an online add of the commit takes them."""
    files: dict[str, Path] = {}
    skipped: list[str] = []
    for dirpath, _, filenames in os.walk(folder):
        for fn in sorted(filenames):
            path = Path(dirpath) / fn
            rel = path.relative_to(folder).as_posix()
            if path.is_file():
                files[check_relpath(rel, where=str(folder))] = path
            else:
                skipped.append(f"{rel} (a link to a blob that is not in the cache)")
    return dict(sorted(files.items())), skipped


def _add_from_hf_cache(store: Store, repo_id: str, name: str, revision: str | None, include: tuple[str, ...],
                       exclude: tuple[str, ...], progress: ProgressFactory | None, on_wait: Any) -> AddResult:
    """Offline: take the repo from the local Hugging Face cache, copying its files."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    allow, ignore = list(include) or None, list(exclude) or None
    with hub_errors(repo_id, revision):
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=_hub_cache(), local_files_only=True,
                                        allow_patterns=allow, ignore_patterns=ignore))
    commit = folder.name
    cached, skipped = _snapshot_files(folder)
    files = {rel: cached[rel] for rel in filter_repo_objects(list(cached), allow_patterns=allow,
                                                             ignore_patterns=ignore)}
    if not files:
        raise UsageError(f"{repo_id}@{commit[:8]}: no cached file matches --include/--exclude "
                         f"({len(cached)} files in the cache)")
    source = Source("huggingface", repo_id, commit)
    with store.adding(ImportMode.COPY, progress, on_wait) as ingest:
        stored, logical, novel, reused = ingest_all(ingest, files)
        return finish(store, ingest, name, source, stored, files, logical, novel, reused, skipped=skipped,
                      extra_metadata=_refs(store, name, source, revision))
