"""A Hugging Face hub cache (HF_HUB_CACHE; also llama.cpp's -hf cache): models--<org>--<name>/
with blobs/<etag>, refs/<branch or tag> and snapshots/<commit>/<path> links to the blobs (see
shared/provider-layouts.md §1).

Each snapshot becomes one store model: Source("huggingface", repo id, commit), named by the repo
id (the snapshot refs/main points at; the others get @<short commit>), with the refs that point at
it kept in its metadata. A blob's name (SHA-256 for LFS files, git blob SHA-1 otherwise) is
checked against the bytes stored. A blob several snapshots share is stored once (dedup).

--move removes, per committed snapshot: the refs that point at it (so no ref ever names a missing
snapshot), its links, then each blob no remaining link uses.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from modelstore.store.errors import UnsafeName
from modelstore.store.names import check_relpath
from modelstore.store.records import Source
from modelstore.store.sources.common import default_name
from modelstore.store.sources.runtimes.files import unfinished
from modelstore.store.sources.runtimes.found import (
    Digest,
    FoundModel,
    Held,
    Removal,
    RuntimeFolder,
    Scan,
)
from modelstore.store.sources.runtimes.identity import (
    IMPORTED_FROM_KEY,
    REFS_KEY,
    valid_ref,
)

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,95}")
REPO_PREFIX = "models--"


def repo_id_of(folder_name: str) -> str | None:
    """"models--org--name" -> "org/name" ("models--gpt2" -> "gpt2", an old id without an org)."""
    parts = folder_name.removeprefix(REPO_PREFIX).split("--", 1)
    if not all(_PART.fullmatch(p) and ".." not in p for p in parts):
        return None
    return "/".join(parts)


def blob_digest(name: str) -> Digest | None:
    if _SHA256.fullmatch(name):
        return Digest("sha256", name)
    if _COMMIT.fullmatch(name):
        return Digest("git", name)
    return None


class HfCacheFolder(RuntimeFolder):
    kind = "huggingface"
    label = "the Hugging Face cache"

    def repos(self) -> list[Path]:
        return sorted(p for p in self.root.glob(REPO_PREFIX + "*") if p.is_dir() and not p.is_symlink())

    def scan(self) -> Scan:
        scan = Scan()
        for repo in self.repos():
            scan.extend(self._repo(repo))
        return scan

    def _refs(self, repo: Path, scan: Scan) -> dict[str, str]:
        refs: dict[str, str] = {}
        folder = repo / "refs"
        if not folder.is_dir():
            return refs
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            name = path.relative_to(folder).as_posix()
            try:
                commit = path.read_text(errors="replace")[:200].strip()
            except OSError:
                continue
            if valid_ref(name) and _COMMIT.fullmatch(commit):
                refs[name] = commit
            else:
                scan.skip(f"{repo.name}/refs/{name}", "not a ref to a commit")
        return refs

    def _repo(self, repo: Path) -> Scan:
        scan = Scan()
        repo_id = repo_id_of(repo.name)
        if repo_id is None:
            scan.skip(repo.name, "not a valid repo id")
            return scan
        blobs = repo / "blobs"
        if blobs.is_dir():
            for blob in sorted(blobs.iterdir()):
                if unfinished(blob.name):
                    scan.skip(f"{repo.name}/blobs/{blob.name}", "an unfinished download")
        refs = self._refs(repo, scan)
        snapshots = repo / "snapshots"
        commits = sorted(p.name for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
        for bad in (c for c in commits if not _COMMIT.fullmatch(c)):
            scan.skip(f"{repo.name}/snapshots/{bad}", "not named by a commit")
        commits = [c for c in commits if _COMMIT.fullmatch(c)]
        for ref, commit in sorted(refs.items()):
            if commit not in commits:
                scan.skip(f"{repo.name}/refs/{ref}", f"names commit {commit[:8]}, which has no snapshot here")
        main = refs.get("main") if refs.get("main") in commits else None
        if main is None and commits:  # no main: the snapshot last written stands for the repo
            main = max(commits, key=lambda c: (snapshots / c).stat().st_mtime_ns)
        for commit in sorted(commits, key=lambda c: c != main):
            found = self._snapshot(repo, repo_id, commit, scan)
            if found is None:
                continue
            found.metadata[REFS_KEY] = sorted(r for r, c in refs.items() if c == commit)
            if commit != main:
                found.name, found.alternative = f"{found.name}@{commit[:8]}", "hf"
            scan.models.append(found)
        return scan

    def _snapshot(self, repo: Path, repo_id: str, commit: str, scan: Scan) -> FoundModel | None:
        folder = repo / "snapshots" / commit
        blobs = Path(os.path.realpath(repo / "blobs"))
        files: dict[str, Path] = {}
        expected: dict[str, Digest] = {}
        where = f"{repo.name}/snapshots/{commit[:8]}"
        broken = 0  # files the snapshot names but whose bytes are not (or not only) in this repo
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for fn in sorted(filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]):
                path = Path(dirpath) / fn
                rel = path.relative_to(folder).as_posix()
                what = f"{where}/{rel}"
                try:
                    check_relpath(rel, where=where)
                except UnsafeName as exc:
                    scan.skip(what, str(exc))
                    continue
                # No unfinished() here: a snapshot names only finished files (a download in
                # progress is blobs/*.incomplete), so uv.lock or notes.tmp are repo files.
                if path.is_symlink():
                    target = Path(os.path.realpath(path))
                    if not target.exists():
                        scan.skip(what, "a dangling symlink (its blob is missing)")
                        broken += 1
                        continue
                    if target.parent != blobs:
                        scan.skip(what, "a link that leads out of the repo's blobs/")
                        broken += 1
                        continue
                    if not target.is_file():
                        scan.skip(what, "not a regular file")
                        broken += 1
                        continue
                    digest = blob_digest(target.name)
                    if digest is not None:
                        expected[rel] = digest
                elif not path.is_file():
                    scan.skip(what, "not a regular file")
                    continue
                files[rel] = path
        if broken:  # imported without them, the model would be half of what the repo is
            scan.skip(where, f"not imported: {broken} of its files have no blob here; download it again "
                             f"(hf download {repo_id} --revision {commit})")
            return None
        if not files:
            scan.skip(where, "no files in this snapshot")
            return None
        return FoundModel(default_name(repo_id), commit[:8], Source(self.kind, repo_id, commit), files, where,
                          expected, {IMPORTED_FROM_KEY: str(self.root)}, originals=tuple(files.values()),
                          content_addressed=True, links_into_blobs=True)

    # -- --move -------------------------------------------------------------------------------

    @staticmethod
    def _linked_blobs(repo: Path) -> set[Path]:
        """Blobs the repo's remaining snapshot links use."""
        used = set()
        for dirpath, dirnames, filenames in os.walk(repo / "snapshots"):
            for fn in filenames + dirnames:
                path = Path(dirpath) / fn
                if path.is_symlink():
                    used.add(Path(os.path.realpath(path)))
        return used

    def release(self, model: FoundModel, removal: Removal) -> None:
        commit = model.source.revision or ""
        links = list(model.originals)
        if not links:
            return
        repo = next(p for p in links[0].parents if p.parent == self.root)
        snapshot = repo / "snapshots" / commit
        left = {Path(dirpath) / fn for dirpath, dirnames, filenames in os.walk(snapshot)
                for fn in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]}
        if left <= set(links):  # the whole snapshot goes: first every ref that names it
            refs = repo / "refs"
            for ref in sorted(refs.rglob("*")) if refs.is_dir() else []:
                try:
                    if ref.is_file() and ref.read_text(errors="replace").strip() == commit and removal.unlink(ref):
                        removal.prune(ref.parent, repo)
                except OSError:
                    continue
            shutil.rmtree(repo / ".no_exist" / commit, ignore_errors=True)
            removal.unlink(repo / "trees" / f"{commit}.json")
        targets = set()
        for link in links:
            if link.is_symlink():
                targets.add(Path(os.path.realpath(link)))
            if removal.unlink(link):
                removal.prune(link.parent, repo / "snapshots")
        still_used = self._linked_blobs(repo)
        for blob in sorted(targets - still_used):
            removal.unlink(blob)
        self._prune_repo(repo, removal)

    def _prune_repo(self, repo: Path, removal: Removal) -> None:
        """A repo with no snapshot left: drop its empty folders, and the repo folder once empty."""
        if (repo / "snapshots").is_dir() and any((repo / "snapshots").iterdir()):
            return
        for sub in ("snapshots", "refs", "blobs", ".no_exist", "trees"):
            if (repo / sub).is_dir():
                for dirpath, _, _ in sorted(os.walk(repo / sub), key=lambda t: -len(t[0])):
                    removal.prune(Path(dirpath), repo)
        removal.prune(repo, self.root)
        removal.prune(self.root / ".locks" / repo.name, self.root / ".locks")

    def tidy(self, held: Held, removal: Removal) -> None:
        """Blobs no snapshot links to any more whose bytes the store holds: what a --move killed
        between removing links and blobs left behind."""
        for repo in self.repos():
            blobs = repo / "blobs"
            if not blobs.is_dir():
                continue
            used = self._linked_blobs(repo)
            for blob in sorted(blobs.iterdir()):
                digest = blob_digest(blob.name)
                if digest is None or Path(os.path.realpath(blob)) in used or not blob.is_file():
                    continue
                have = held.has_sha256 if digest.kind == "sha256" else held.has_git_sha1
                if have(digest.value) and held.may_remove(blob):
                    removal.unlink(blob)
            self._prune_repo(repo, removal)
