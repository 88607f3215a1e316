"""Where each runtime keeps its models by default (see shared/provider-layouts.md), read from the
environment when asked, not at import."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from modelstore.store import jsontext

RUNTIMES = ("ollama", "lmstudio", "huggingface", "llamacpp", "gpt4all", "jan")


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _xdg(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or _home() / default)


def ollama_folders() -> list[Path]:
    if env := os.environ.get("OLLAMA_MODELS"):
        return [Path(env)]
    return [_home() / ".ollama/models", Path("/usr/share/ollama/.ollama/models")]


def lmstudio_folders() -> list[Path]:
    pointer = _home() / ".lmstudio-home-pointer"
    homes = []
    if pointer.is_file():
        homes.append(Path(pointer.read_text().strip()))
    homes += [_home() / ".cache/lm-studio", _home() / ".lmstudio"]
    out = []
    for home in homes:
        settings = home / "settings.json"
        try:
            folder = jsontext.loads(settings.read_text()).get("downloadsFolder") if settings.is_file() else None
        except (OSError, ValueError):
            folder = None
        out.append(Path(folder) if folder else home / "models")
    return out


def _hf_env(var: str) -> str | None:
    """As huggingface_hub reads its folders: ~ and $VARS expanded."""
    value = os.environ.get(var)
    return os.path.expandvars(os.path.expanduser(value)) if value else None


def huggingface_folders() -> list[Path]:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env := _hf_env(var):
            return [Path(env)]
    if env := _hf_env("HF_HOME"):
        return [Path(env) / "hub"]
    return [_xdg("XDG_CACHE_HOME", ".cache") / "huggingface/hub"]


def llamacpp_folders() -> list[Path]:
    if env := os.environ.get("LLAMA_CACHE"):
        return [Path(env)]
    return [_xdg("XDG_CACHE_HOME", ".cache") / "llama.cpp"]


def gpt4all_folders() -> list[Path]:
    ini = _xdg("XDG_CONFIG_HOME", ".config") / "nomic.ai/GPT4All.ini"
    if ini.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(ini)
            configured = parser.get("General", "modelPath", fallback=None)
        except configparser.Error:
            configured = None
        if configured:
            return [Path(configured)]
    return [_xdg("XDG_DATA_HOME", ".local/share") / "nomic.ai/GPT4All"]


def jan_folders() -> list[Path]:
    app = os.environ.get("APP_NAME", "Jan")
    return [_xdg("XDG_DATA_HOME", ".local/share") / app / "data/llamacpp/models"]


_FOLDERS = {
    "ollama": ollama_folders,
    "lmstudio": lmstudio_folders,
    "huggingface": huggingface_folders,
    "llamacpp": llamacpp_folders,
    "gpt4all": gpt4all_folders,
    "jan": jan_folders,
}


def default_folders(runtime: str) -> list[Path]:
    """The folders `runtime` would use here, existing or not, most specific first."""
    return _FOLDERS[runtime]()


def existing_folders(runtime: str) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for folder in default_folders(runtime):
        if folder.is_dir() and folder.resolve() not in seen:
            seen.add(folder.resolve())
            out.append(folder)
    return out
