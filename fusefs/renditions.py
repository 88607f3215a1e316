"""Where a model shows up in the mount, view by view, and why it does not where it does not."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir, File, StoredContent
from modelstore.fusefs.views import VIEWS, ViewOptions
from modelstore.fusefs.views.common import gguf_units
from modelstore.store.metadata import why_not_whole
from modelstore.store.records import ModelRecord

GGUF_VIEWS = ("ollama", "lmstudio", "llamacpp", "jan")  # the views that show GGUF files only


@dataclass
class Rendition:
    view: str
    paths: list[str] = field(default_factory=list)  # relative to the mount point
    reason: str | None = None  # why it is absent
    converted: str | None = None  # how the files shown were made, when they are converted

    @property
    def present(self) -> bool:
        return bool(self.paths)

    def to_json(self) -> dict[str, object]:
        return {"view": self.view, "present": self.present, "paths": self.paths, "reason": self.reason,
                "converted": self.converted}


def _why_absent(view: str, model: ModelRecord, snapshot: Snapshot) -> str:
    entry = snapshot.conversions.get(model.name)
    unsupported = (entry or {}).get("unsupported", {})
    if entry is None:
        not_planned = (f"no conversion planned yet (stored before conversions existed, or its add was "
                       f"interrupted): run `modelstore convert {model.name}`")
    elif entry.get("skipped"):
        not_planned = f"conversion skipped (--no-convert): run `modelstore convert {model.name}`"
    else:
        not_planned = "nothing to convert"
    units = gguf_units(model, snapshot, merged=view == "ollama")
    broken = [u for u in gguf_units(model, snapshot, whole=False) if not u.whole]
    if view in GGUF_VIEWS and not units and broken:
        return why_not_whole((u.files, u.shards) for u in broken)
    if view in GGUF_VIEWS and not units:
        if "gguf" in unsupported:
            return f"no GGUF file, and no GGUF conversion: {unsupported['gguf']}"
        return "no GGUF file, and " + (not_planned if entry is None or entry.get("skipped")
                                       else "no weights a GGUF could be made of")
    if view == "ollama" and all(u.split for u in units):
        if "merged-gguf" in unsupported:
            return f"split GGUF, and the shards cannot be merged: {unsupported['merged-gguf']}"
        return "split GGUF: Ollama needs one file, and " + not_planned
    if view == "huggingface" and "safetensors" in unsupported:
        return f"no safetensors conversion: {unsupported['safetensors']}"
    return "not shown"


def _contents(node: Dir) -> set[str]:
    """BLAKE3 of every stored or converted file in a tree."""
    out: set[str] = set()
    for child in node.children.values():
        if isinstance(child, Dir):
            out |= _contents(child)
        elif isinstance(child, File) and isinstance(child.content, StoredContent):
            out.add(child.content.b3)
    return out


def _how(model: ModelRecord, snapshot: Snapshot, tree: Dir) -> str | None:
    """How the converted files a view shows were made."""
    shown = _contents(tree)
    hows = {str(c["how"]) for path, b3 in model.files.items()
            if b3 in shown and (c := snapshot.conversion(model, path)) and "from" in c}
    return "; ".join(sorted(hows)) or None


def _placed_for(node: Dir, owner: str, prefix: str) -> list[str]:
    out: list[str] = []
    for name, child in sorted(node.children.items()):
        path = f"{prefix}/{name}"
        if isinstance(child, Dir):
            out += _placed_for(child, owner, path)
        elif child.owner == owner:
            out.append(path)
    return out


def renditions(snapshot: Snapshot, model: ModelRecord, options: ViewOptions = ViewOptions()) -> list[Rendition]:
    """Where the mount shows `model`: the paths each view placed for it, in the tree of every model
    (a name two models want, a view gives one of them with a suffix)."""
    model = next((m for m in snapshot.models if m.name == model.name), model)  # with its converted files
    alone = replace(snapshot, models=(model,))
    out = []
    for view, render in VIEWS.items():
        tree = render(snapshot, options)
        if view == "ollama":  # a model is its manifest; blobs are shared by content
            manifests = tree.children.get("manifests")
            paths = _placed_for(manifests, model.name, "ollama/manifests") if isinstance(manifests, Dir) else []
        else:
            paths = _placed_for(tree, model.name, view)
        if view == "huggingface":  # blobs are shared by content: name the repo folders instead
            paths = sorted({"/".join(p.split("/")[:2]) for p in paths})
        out.append(Rendition(view, paths, None if paths else _why_absent(view, model, snapshot),
                             _how(model, snapshot, render(alone, options)) if paths else None))
    return out
