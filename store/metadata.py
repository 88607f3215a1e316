"""A model's metadata, from GGUF keys or from config.json and its neighbours.

Read before anything is moved into the store, from the headers the ingest parsed and the small
JSON/README files of the model folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from modelstore.store import jsontext

_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$")  # as gguf-split names them
_ANY_CASE_SHARD = re.compile(_SHARD_NAME.pattern, re.IGNORECASE)
_SMALL_JSON = 16 << 20


@dataclass(frozen=True)
class Shard:
    prefix: str  # the path without -0000N-of-0000M.gguf
    no: int
    count: int

    def name(self, no: int) -> str:
        return f"{self.prefix}-{no:05d}-of-{self.count:05d}.gguf"

    def names(self) -> list[str]:
        """Every shard of the split, first to last."""
        return [self.name(no) for no in range(1, self.count + 1)]


def split_group(path: str, kv: Mapping[str, Any]) -> tuple[str, int]:
    """(the split a GGUF belongs to, how many shards it has): by its name; a file whose header says
    it is one of several shards but whose name does not is a split of its own, never whole."""
    shard = shard_of(path)
    if shard is not None:
        return shard.prefix, shard.count
    declared = kv.get("split.count")
    return path, declared if isinstance(declared, int) and declared > 1 else 1


def shard_of(path: str, *, any_case: bool = False) -> Shard | None:
    """Which shard of a split GGUF `path` is, by its name as llama.cpp writes and finds shards
    (lower case, 1 <= N <= M); None for any other file. `any_case`: also .GGUF and -OF- (to keep
    such shards together as one model, though no view can offer it to llama.cpp)."""
    m = _SHARD_NAME.match(path) or (_ANY_CASE_SHARD.match(path) if any_case else None)
    if m is None or not 1 <= int(m.group("no")) <= int(m.group("count")):
        return None
    return Shard(m.group("prefix"), int(m.group("no")), int(m.group("count")))


def why_not_whole(splits: Iterable[tuple[list[str], int]]) -> str:
    """Why splits (their files, the shard count each claims) cannot be loaded: shards missing, or
    shards named so that llama.cpp does not find them."""
    splits = list(splits)
    named = [f"{len(files)} of {count} stored" for files, count in splits if shard_of(files[0])]
    unnamed = [files[0] for files, _ in splits if not shard_of(files[0])]
    return "; ".join((["the split GGUF misses shards: " + ", ".join(named)] if named else [])
                     + ([f"{', '.join(unnamed[:3])}: shards not named as llama.cpp finds them "
                         f"(-0000N-of-0000M.gguf)"] if unnamed else []))


def is_projector(path: str, kv: Mapping[str, Any]) -> bool:
    """A vision or audio projector (mmproj) rather than a language model: by its name, as llama.cpp
    and LM Studio find one, or by its header (general.type; older files only say arch "clip")."""
    return ("mmproj" in PurePosixPath(path).name.lower() or kv.get("general.type") in ("mmproj", "projector")
            or kv.get("general.architecture") == "clip")


def gguf_file_type_name(value: Any) -> str | None:
    if not isinstance(value, int):
        return None
    from gguf import LlamaFileType  # imported when needed: it brings numpy

    try:
        name = LlamaFileType(value).name
    except ValueError:
        return f"type {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _primary_gguf(weights: dict[str, dict[str, Any]]) -> str | None:
    """The main weights of a GGUF model: not a projector, the first shard of a split, the largest."""
    ggufs = [p for p, w in weights.items() if w["format"] == "gguf"
             and w["metadata"].get("general.type", "model") == "model" and not is_projector(p, w["metadata"])]
    firsts = [p for p in ggufs if (shard := shard_of(p)) is None or shard.no == 1]
    return max(firsts or ggufs, key=lambda p: weights[p]["parameter_count"], default=None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _SMALL_JSON:
            return {}
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _license_from_readme(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return None
    front = re.match(r"---\s*\n(.*?)\n---", text, re.S)
    if front:
        m = re.search(r"^license:\s*['\"]?([^'\"\n]+)", front.group(1), re.M)
        if m:
            return m.group(1).strip()
    return None


def model_metadata(files: dict[str, Path], weights: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`files`: the model's small text files (config.json, README.md, ...) where they can be read
    now; `weights`: the header summary of each GGUF/safetensors file (FileRecord.weights)."""
    meta: dict[str, Any] = {}
    primary = _primary_gguf(weights)
    if primary is not None:
        kv = weights[primary]["metadata"]
        arch = kv.get("general.architecture")
        split = shard_of(primary)
        params = weights[primary]["parameter_count"]
        if split:
            params = sum(w["parameter_count"] for p, w in weights.items()
                         if (shard := shard_of(p)) and (shard.prefix, shard.count) == (split.prefix, split.count))
        meta.update({
            "format": "gguf",
            "primary_file": primary,
            "architecture": arch,
            "name": kv.get("general.name"),
            "parameter_count": params,
            "quantization": gguf_file_type_name(kv.get("general.file_type")),
            "context_length": kv.get(f"{arch}.context_length") if arch else None,
            "has_chat_template": "tokenizer.chat_template" in kv,
            "license": kv.get("general.license") if isinstance(kv.get("general.license"), str) else None,
        })
    config_path = files.get("config.json")
    if config_path is not None:
        config = _read_json(config_path)
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
        archs = config.get("architectures")
        safetensors = {p: w for p, w in weights.items() if w["format"] == "safetensors"}
        index = _read_json(files["model.safetensors.index.json"]) if "model.safetensors.index.json" in files else {}
        weight_map = index.get("weight_map")
        if isinstance(weight_map, dict):
            counted = set(weight_map.values())
            safetensors = {p: w for p, w in safetensors.items() if p in counted} or safetensors
        dtype = config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype")
        quant = config.get("quantization_config")
        if primary is None:
            meta.update({
                "format": "safetensors" if safetensors else None,
                "architecture": archs[0] if isinstance(archs, list) and archs else config.get("model_type"),
                "model_type": config.get("model_type"),
                "parameter_count": sum(w["parameter_count"] for w in safetensors.values()) or None,
                "dtype": dtype,
                "quantization": quant.get("quant_method") if isinstance(quant, dict) else dtype,
                "context_length": config.get("max_position_embeddings") or text.get("max_position_embeddings"),
            })
    if "format" not in meta:
        meta["format"] = None
    if primary is None:
        tok_config = _read_json(files["tokenizer_config.json"]) if "tokenizer_config.json" in files else {}
        meta["has_chat_template"] = bool(tok_config.get("chat_template")) or "chat_template.jinja" in files
    if not meta.get("license") and "README.md" in files:
        meta["license"] = _license_from_readme(files["README.md"])
    return {k: v for k, v in meta.items() if v is not None}
