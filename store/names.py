"""Checks for names that come from outside: model names, repo ids, and file paths in a repo."""

from __future__ import annotations

import re
from collections.abc import Iterable

from modelstore.store.errors import UnsafeName

_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:@+/-]{0,199}")
_REPO_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,95}/[A-Za-z0-9_][A-Za-z0-9._-]{0,95}")


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.fullmatch(name) or any(p in ("", ".", "..") for p in name.split("/")):
        raise UnsafeName(f"model name {name!r} is not allowed: use letters, digits and . _ : @ + - /, "
                         f"no empty, '.' or '..' parts, at most 200 characters")
    return name


def check_file_tree(paths: Iterable[str], *, where: str) -> None:
    """The paths of one model make a tree: no path is also a folder of another ('a' and 'a/b'),
    which no view could show."""
    paths = set(paths)
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise UnsafeName(f"{where}: {'/'.join(parts[:i])!r} is both a file and the folder of {path!r}; "
                                 f"refusing it")


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text


def check_repo_id(repo_id: str) -> str:
    if not looks_like_repo_id(repo_id):
        raise UnsafeName(f"{repo_id!r} is not a Hugging Face repo id (expected 'org/name')")
    return repo_id


def _is_utf8(text: str) -> bool:
    try:
        text.encode()  # a name that was not UTF-8 on disk holds surrogates here, which do not encode
    except UnicodeEncodeError:
        return False
    return True


def check_relpath(path: str, *, where: str) -> str:
    """A relative path inside a model: UTF-8, no absolute paths, no '..', no backslash, no NUL,
    no empty parts, none over 255 bytes (every runtime's view must be able to show it, under the
    same name)."""
    problem = None
    if not path or "\0" in path:
        problem = "is empty or holds a NUL byte"
    elif not _is_utf8(path):
        problem = "is not valid UTF-8"
    elif path.startswith("/") or re.match(r"[A-Za-z]:", path):
        problem = "is absolute"
    elif "\\" in path:
        problem = "holds a backslash (a Windows path separator)"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' part"
    elif len(path.encode()) > 1024:
        problem = "is longer than 1024 bytes"
    elif any(len(part.encode()) > 255 for part in path.split("/")):
        problem = "has a part longer than 255 bytes, the most a file name may be"
    if problem:
        raise UnsafeName(f"{where}: file name {path!r} {problem}; refusing it")
    return path
