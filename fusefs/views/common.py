"""What several views share: turning a stored file into a node, and finding a model's GGUFs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import File, Link, StoredContent
from modelstore.store.metadata import is_projector, split_group
from modelstore.store.records import Extent, ModelRecord

_QUANT = re.compile(r"(?:^|[._-])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)(?=[._-]|$)", re.I)


@dataclass(frozen=True)
class ViewOptions:
    links: bool = False  # one-blob files as symlinks to the object file (reads bypass FUSE)


def mtime_ns(model: ModelRecord) -> int:
    return int(model.added_at * 1e9)


def stored_node(snapshot: Snapshot, b3: str, model: ModelRecord, options: ViewOptions) -> File | Link:
    """The file `b3` as `model`'s: its bytes, or with --links a symlink to its one blob."""
    record = snapshot.file(b3)
    first = record.recipe[0] if len(record.recipe) == 1 else None
    if options.links and isinstance(first, Extent) and first.length == record.size:
        blob = first.blob
        return Link(f"{snapshot.objects_root}/{blob[:2]}/{blob}", mtime_ns(model), model.name)
    return File(StoredContent(record.b3, record.size, record.recipe), mtime_ns(model), model.name)


@dataclass
class GgufUnit:
    """One loadable GGUF model inside a model: a single file or the shards of a split, plus the
    projector (mmproj) that goes with it."""

    files: list[str]  # paths in the model; shards in order
    quant: str | None
    mmproj: str | None = None
    shards: int = 1  # what the shard names say the split has

    @property
    def split(self) -> bool:
        return self.shards > 1

    @property
    def whole(self) -> bool:
        """Every shard is there: a split missing one cannot be loaded."""
        return len(self.files) == self.shards


def quant_of(path: str, file_type: str | None) -> str | None:
    m = _QUANT.search(PurePosixPath(path).name.removesuffix(".gguf"))
    if m:
        return m.group(1).upper()
    return file_type


def stored_files(model: ModelRecord, snapshot: Snapshot) -> dict[str, str]:
    """The model's own files, without its converted ones."""
    return {p: b3 for p, b3 in model.files.items() if snapshot.conversion(model, p) is None}


def gguf_units(model: ModelRecord, snapshot: Snapshot, *, merged: bool = False, whole: bool = True) -> list[GgufUnit]:
    """The model's loadable GGUFs (with `whole` False, also splits that miss shards). A split
    GGUF's merged rendition only with `merged` (Ollama needs one file; llama.cpp and LM Studio read
    the shards themselves)."""
    from modelstore.store.metadata import gguf_file_type_name

    def wanted(path: str, b3: str) -> bool:
        record = snapshot.file(b3)
        conversion = snapshot.conversion(model, path) or {}
        return ((record.weights or {}).get("format") == "gguf"
                and (merged or conversion.get("kind") != "merged-gguf"))

    ggufs = {p: snapshot.file(b3) for p, b3 in model.files.items() if wanted(p, b3)}
    projectors = {p: quant_of(p, None) for p, r in sorted(ggufs.items())
                  if is_projector(p, (r.weights or {}).get("metadata", {}))}
    units: dict[tuple[str, int], GgufUnit] = {}
    for path, record in sorted(ggufs.items()):
        if path in projectors:
            continue
        ftype = gguf_file_type_name((record.weights or {}).get("metadata", {}).get("general.file_type"))
        key = split_group(path, (record.weights or {}).get("metadata", {}))
        unit = units.setdefault(key, GgufUnit([], quant_of(key[0], ftype), shards=key[1]))
        unit.files.append(path)
    for unit in units.values():
        unit.files.sort()
        unit.mmproj = _projector_for(unit, projectors)
    return [u for u in units.values() if u.whole or not whole]


def projector_name(path: str) -> str:
    """The projector's file name, with "mmproj" in it: llama-server (and LM Studio) tell a projector
    from a model in the same folder by that word alone, in lower case."""
    name = PurePosixPath(path).name
    return name if "mmproj" in name else f"mmproj-{name}"


def _quant_bits(quant: str | None) -> int | None:
    m = re.search(r"\d+", quant or "")
    return int(m.group()) if m else None


def _projector_for(unit: GgufUnit, projectors: dict[str, str | None]) -> str | None:
    """As llama.cpp pairs them (common/download.cpp find_best_mmproj): a projector in the model's
    folder or one above it, the deepest; among those, the one whose bits are nearest the model's."""
    folder = PurePosixPath(unit.files[0]).parent.parts
    above = {p: len(parts) for p in projectors if (parts := PurePosixPath(p).parent.parts) == folder[:len(parts)]}
    if not above:
        return None
    deepest = max(above.values())
    bits = _quant_bits(unit.quant)

    def distance(path: str) -> int:
        own = _quant_bits(projectors[path])
        return 0 if bits is None or own is None else abs(own - bits)

    return min((p for p, depth in above.items() if depth == deepest), key=distance)


def safe_part(text: str, allowed: str = r"A-Za-z0-9._-", limit: int = 80) -> str:
    """`text` with characters outside `allowed` turned into '-', never empty."""
    cleaned = re.sub(rf"[^{allowed}]+", "-", text).strip("-.") or "model"
    return cleaned[:limit]


_GGUF_END = re.compile(r"(-\d{5}-of-\d{5})?\.gguf$", re.I)


def unique(name: str, taken: set[str], also: Callable[[str], str] | None = None) -> str:
    """`name`, or `name-2`, `name-3`...: two models never hide each other. A GGUF file keeps its
    .gguf (and a shard its -0000N-of-0000M.gguf) at the end, where runtimes look for it. `also`:
    a second name the candidate takes as well (and which must be free too)."""
    m = _GGUF_END.search(name)
    stem, end = (name[:m.start()], name[m.start():]) if m else (name, "")
    candidate, n = name, 2
    while candidate in taken or (also is not None and also(candidate) in taken):
        candidate = f"{stem}-{n}{end}"
        n += 1
    taken.add(candidate)
    if also is not None:
        taken.add(also(candidate))
    return candidate


def plain_names_first(models: Iterable[ModelRecord],
                      shown_unchanged: Callable[[ModelRecord], bool] | None = None) -> list[ModelRecord]:
    """Models whose names a view shows unchanged come first, so a model named foo-bar keeps
    "foo-bar" over foo+bar (which a view also shows as foo-bar), whatever is added or removed
    later. `shown_unchanged` says which those are by the view's own rewriting rules; without it,
    a name of letters, digits and ._:/- counts as plain (the views that turn '/' into '--' and ':'
    into '-' rely on those names sorting after the ones they are turned into)."""
    if shown_unchanged is None:
        return sorted(models, key=lambda m: re.search(r"[^A-Za-z0-9._:/-]", m.name) is not None)
    return sorted(models, key=lambda m: not shown_unchanged(m))


def named_gguf_units(snapshot: Snapshot) -> Iterator[tuple[ModelRecord, str, GgufUnit]]:
    """Every model's loadable GGUFs, each with the one name a llama.cpp-style folder gives it: the
    model's name (with '/' as '--', ':' as '-'), plus the quant when the model has several;
    `unique` across all models, since llama-server names a file by its stem and a folder by its
    name, one namespace (the llamacpp/ and jan/ views name models alike)."""
    taken: set[str] = set()
    for model in plain_names_first(snapshot.models):
        units = gguf_units(model, snapshot)
        base = safe_part(model.name.replace("/", "--").replace(":", "-"), limit=120)
        for unit in units:
            name = base if len(units) == 1 else f"{base}-{unit.quant or PurePosixPath(unit.files[0]).stem}"
            # A single file is shown as <name>.gguf: that name is taken too, so a model named
            # foo.gguf (a folder, with its mmproj) never lands on model foo's file.
            name = unique(name, taken, also=(lambda n: f"{n}.gguf") if not (unit.split or unit.mmproj) else None)
            yield model, name, unit
