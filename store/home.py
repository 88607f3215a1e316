"""Where the store lives when nobody says."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """MODELSTORE_HOME, else $XDG_DATA_HOME/modelstore, else ~/.local/share/modelstore."""
    env = os.environ.get("MODELSTORE_HOME")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "modelstore"
