"""The store's settings: `<home>/config.toml`, every key optional.

    derived_cache = "20GiB"   # room for converted tensor slices; default: 10% of free disk, at most 20 GiB
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from modelstore.store.errors import UsageError

DERIVED_CACHE_CAP = 20 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
          "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


def parse_size(text: str | int) -> int:
    """'20GiB', '500M', '1.5G' or a number of bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"{text!r} is not a size (examples: 20GiB, 500M, 1073741824)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def load(home: Path) -> dict[str, Any]:
    path = home / "config.toml"
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None


def derived_cache_bytes(home: Path) -> int:
    configured = load(home).get("derived_cache")
    if configured is not None:
        return parse_size(configured)
    st = os.statvfs(home)
    return min(DERIVED_CACHE_CAP, st.f_bavail * st.f_frsize // 10)
