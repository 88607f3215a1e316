"""Where a model shows up in the mount, view by view, and why it does not where it does not."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir, File, Link, Literal, StoredContent
from modelstore.fusefs.views import VIEWS, ViewOptions
from modelstore.fusefs.views.common import gguf_units
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


def _leaves(node: Dir, prefix: str = "") -> dict[str, File | Link]:
    out: dict[str, File | Link] = {}
    for name, child in node.children.items():
        path = f"{prefix}/{name}" if prefix else name
        if isinstance(child, Dir):
            out.update(_leaves(child, path))
        else:
            out[path] = child
    return out


def _same(a: File | Link | None, b: File | Link) -> bool:
    if isinstance(a, File) and isinstance(b, File):
        return a.content == b.content
    return isinstance(a, Link) and isinstance(b, Link) and a.target == b.target


def _placed_by(full: Dir, without: Dir, view: str) -> set[str]:
    """Paths (as `view/...`) the model puts into the mount: those the tree shows with it and not,
    or not the same, without it. A name it shares with another model, the other one may hold."""
    before = _leaves(without)
    return {f"{view}/{path}" for path, node in _leaves(full).items() if not _same(before.get(path), node)}


def renditions(snapshot: Snapshot, model: ModelRecord, options: ViewOptions = ViewOptions()) -> list[Rendition]:
    """Where the mount shows `model`: the paths that hold its bytes in the tree of every model, and
    that the tree of every other model does not have the same (a file it shares with another
    model is that model's too; a name two models want, the view gives one of them with a suffix)."""
    model = next((m for m in snapshot.models if m.name == model.name), model)  # with its converted files
    digests = set(model.files.values())
    others = replace(snapshot, models=tuple(m for m in snapshot.models if m.name != model.name))
    alone = replace(snapshot, models=(model,))
    out = []
    for view, render in VIEWS.items():
        tree = render(snapshot, options)
        placed = _placed_by(tree, render(others, options), view)
        if view == "ollama":  # a model is its manifest; blobs are shared by content
            manifests = tree.children.get("manifests")
            sha256s = {snapshot.file(b3).sha256 for b3 in digests}
            # a generated manifest names the model's blobs; an imported one is a file of the model
            paths = sorted(_manifests_naming(manifests, sha256s, "ollama/manifests")
                           + _paths_of(manifests, digests, "ollama/manifests", snapshot.objects_root)
                           ) if isinstance(manifests, Dir) else []
        else:
            paths = _paths_of(tree, digests, view, snapshot.objects_root)
        paths = [p for p in paths if p in placed]
        if view == "huggingface":  # blobs are shared by content: name the repo folders instead
            paths = sorted({"/".join(p.split("/")[:2]) for p in paths})
        out.append(Rendition(view, paths, None if paths else _why_absent(view, model, snapshot),
                             _how(model, snapshot, render(alone, options)) if paths else None))
    return out
