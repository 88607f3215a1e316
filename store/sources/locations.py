"""Where each runtime keeps its models by default (see shared/provider-layouts.md), read from the
environment when asked, not at import. Each rule follows the runtime's own code; `WHERE` says it in
words for the --help texts."""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path
from typing import Literal

from modelstore.store import jsontext

RUNTIMES = ("ollama", "lmstudio", "huggingface", "llamacpp", "gpt4all", "jan")

WHERE = {
    "ollama": "$OLLAMA_MODELS, ~/.ollama/models, /usr/share/ollama/.ollama/models",
    "lmstudio": "the models folder of LM Studio's home ($LMSTUDIO_HOME, else each of: the home named in "
                "~/.lmstudio-home-pointer, ~/.cache/lm-studio, ~/.lmstudio): downloadsFolder in its "
                "settings.json, else <home>/models",
    "huggingface": "$HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, "
                   "~/.cache/huggingface/hub",
    "llamacpp": "$LLAMA_CACHE, else ~/.cache/llama.cpp (older builds: flat GGUF files) and the Hugging Face "
                "cache (newer builds' -hf downloads)",
    "gpt4all": "modelPath in $XDG_CONFIG_HOME/nomic.ai/GPT4All.ini, $XDG_DATA_HOME/nomic.ai/GPT4All "
               "($XDG_CONFIG_HOME is ~/.config, $XDG_DATA_HOME ~/.local/share when unset)",
    "jan": "$JAN_DATA_FOLDER, data_folder in Jan's settings.json, $XDG_DATA_HOME/$APP_NAME/data "
           "(~/.local/share/Jan/data; llamacpp/models/<id>/model.yml)",
}


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _xdg(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or _home() / default)


def _is_file(path: Path) -> bool:
    return os.path.isfile(path)  # never raises: a folder we may not enter holds no settings for us


def ollama_folders() -> list[Path]:
    # Ollama trims spaces, then quotes, from every variable it reads (envconfig.Var).
    if env := os.environ.get("OLLAMA_MODELS", "").strip().strip("\"'"):
        return [Path(env)]
    return [_home() / ".ollama/models", Path("/usr/share/ollama/.ollama/models")]


def _lmstudio_models(home: Path) -> Path:
    settings = home / "settings.json"
    try:
        folder = jsontext.loads(settings.read_text()).get("downloadsFolder") if _is_file(settings) else None
    except (OSError, ValueError, AttributeError):
        folder = None
    return Path(folder) if isinstance(folder, str) and folder else home / "models"


def lmstudio_folders() -> list[Path]:
    if env := os.environ.get("LMSTUDIO_HOME"):  # it overrides every other home (findLMStudioHome)
        return [_lmstudio_models(Path(env).absolute())]
    pointer = _home() / ".lmstudio-home-pointer"
    homes = []
    if _is_file(pointer):
        try:
            homes.append(Path(pointer.read_text().strip()))
        except OSError:
            pass
    homes += [_home() / ".cache/lm-studio", _home() / ".lmstudio"]
    return [_lmstudio_models(home) for home in homes]


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
    """LLAMA_CACHE wins; without it older builds wrote flat files to ~/.cache/llama.cpp and newer
    ones download into the Hugging Face cache (llama.cpp common/hf-cache.cpp)."""
    if env := os.environ.get("LLAMA_CACHE"):
        return [Path(env)]
    return [_xdg("XDG_CACHE_HOME", ".cache") / "llama.cpp", *huggingface_folders()]


_QT_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def qsettings_value(raw: str) -> str:
    """A string as Qt's QSettings writes it to an INI file: quoted when it holds ; , or =, with
    backslash escapes (\\\\, \\", \\xNN, \\n, ...) inside."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]

    def unescape(m: re.Match[str]) -> str:
        escape = m.group(1)
        if escape[0] == "x":
            return chr(int(escape[1:], 16))
        return _QT_ESCAPES.get(escape, escape)

    return re.sub(r"\\(x[0-9a-fA-F]{1,4}|.)", unescape, text)


def gpt4all_folders() -> list[Path]:
    ini = _xdg("XDG_CONFIG_HOME", ".config") / "nomic.ai/GPT4All.ini"
    if _is_file(ini):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(ini)
            configured = parser.get("General", "modelPath", fallback=None)
        except (configparser.Error, OSError, UnicodeDecodeError):
            configured = None
        if configured and (folder := qsettings_value(configured)):
            return [Path(folder)]
    return [_xdg("XDG_DATA_HOME", ".local/share") / "nomic.ai/GPT4All"]


def _jan_configured() -> Path | None:
    """data_folder in Jan's settings.json: in ~/.config/Jan while that folder exists (older
    builds made it), else in ~/.local/share/Jan (janhq/jan src-tauri core/app commands.rs)."""
    legacy = _xdg("XDG_CONFIG_HOME", ".config") / "Jan"
    folder = legacy if os.path.isdir(legacy) else _xdg("XDG_DATA_HOME", ".local/share") / "Jan"
    settings = folder / "settings.json"
    if not _is_file(settings):
        return None
    try:
        data = jsontext.loads(settings.read_text()).get("data_folder")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(data) if isinstance(data, str) and data else None


def jan_folders() -> list[Path]:
    if env := os.environ.get("JAN_DATA_FOLDER"):
        return [Path(env) / "llamacpp/models"]
    default = _xdg("XDG_DATA_HOME", ".local/share") / os.environ.get("APP_NAME", "Jan") / "data"
    configured = _jan_configured()
    return [data / "llamacpp/models" for data in ([configured] if configured else []) + [default]]


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


def _state(folder: Path) -> Literal["folder", "absent", "unreadable"]:
    """Whether `folder` is there to read ("unreadable": there may be one, but we may not look in)."""
    try:
        if not folder.is_dir():
            return "absent"
    except PermissionError:
        return "unreadable"
    except OSError:
        return "absent"
    return "folder" if os.access(folder, os.R_OK | os.X_OK) else "unreadable"


def _distinct(folders: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for folder in folders:
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            out.append(folder)
    return out


def folders_here(runtime: str) -> tuple[list[Path], list[Path]]:
    """(the default folders of `runtime` that exist and can be read, those we may not look into:
    another user's, e.g. the Ollama service's)."""
    states = [(folder, _state(folder)) for folder in default_folders(runtime)]
    return (_distinct([f for f, state in states if state == "folder"]),
            _distinct([f for f, state in states if state == "unreadable"]))
