"""Where a model shows up in the mount, view by view, and why it does not where it does not."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir, File, Link, Literal, StoredContent
from modelstore.fusefs.views import VIEWS, ViewOptions
from modelstore.fusefs.views.common import gguf_units
from modelstore.fusefs.views.store import folder_of
from modelstore.store.records import ModelRecord


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


def _paths_of(node: Dir, digests: set[str], prefix: str, objects_root: str) -> list[str]:
    out: list[str] = []
    for name, child in sorted(node.children.items()):
        path = f"{prefix}/{name}"
        if isinstance(child, Dir):
            out += _paths_of(child, digests, path, objects_root)
        elif isinstance(child, File) and isinstance(child.content, StoredContent) and child.content.b3 in digests:
            out.append(path)
        elif isinstance(child, Link) and child.target.startswith(objects_root) and child.target.rsplit("/", 1)[1] in digests:
            out.append(path)
    return out


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
    if view in ("ollama", "lmstudio", "llamacpp") and not units:
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


def _manifests_naming(node: Dir, sha256s: set[str], prefix: str) -> list[str]:
    out: list[str] = []
    for name, child in sorted(node.children.items()):
        path = f"{prefix}/{name}"
        if isinstance(child, Dir):
            out += _manifests_naming(child, sha256s, path)
        elif isinstance(child, File) and isinstance(child.content, Literal):
            text = child.content.data.decode(errors="replace")
            if any(f"sha256:{s}" in text for s in sha256s):
                out.append(path)
    return out


def renditions(snapshot: Snapshot, model: ModelRecord, options: ViewOptions = ViewOptions()) -> list[Rendition]:
    """Rendered from a snapshot of this model alone, so files it shares with other models are
    not attributed to them (a name another model already took would get a suffix in the mount)."""
    model = next((m for m in snapshot.models if m.name == model.name), model)  # with its converted files
    digests = set(model.files.values())
    names = [m.name for m in snapshot.models]
    alone = replace(snapshot, models=(model,))
    out = []
    for view, render in VIEWS.items():
        tree = render(alone, options)
        if view == "ollama":  # a model is its manifest; blobs are shared by content
            manifests = tree.children.get("manifests")
            sha256s = {snapshot.file(b3).sha256 for b3 in digests}
            # a generated manifest names the model's blobs; an imported one is a file of the model
            paths = sorted(_manifests_naming(manifests, sha256s, "ollama/manifests")
                           + _paths_of(manifests, digests, "ollama/manifests", snapshot.objects_root)
                           ) if isinstance(manifests, Dir) else []
        else:
            paths = _paths_of(tree, digests, view, snapshot.objects_root)
        if view == "store":  # rendered alone, the model sits at its name; among the others, maybe not
            alone_at, shown_at = f"store/by-model/{model.name}/", f"store/by-model/{folder_of(model.name, names)}/"
            paths = [shown_at + p[len(alone_at):] if p.startswith(alone_at) else p for p in paths]
        if view == "huggingface":  # blobs are shared by content: name the repo folders instead
            paths = sorted({"/".join(p.split("/")[:2]) for p in paths})
        out.append(Rendition(view, paths, None if paths else _why_absent(view, model, snapshot),
                             _how(model, snapshot, tree) if paths else None))
    return out
