"""Views: pure functions from a catalog snapshot to a tree. No FUSE, no trio, no disk access."""

from __future__ import annotations

from collections.abc import Callable

from modelstore.fusefs.snapshot import Snapshot
from modelstore.fusefs.tree import Dir
from modelstore.fusefs.views import huggingface, jan, llamacpp, lmstudio, ollama, store
from modelstore.fusefs.views.common import ViewOptions

View = Callable[[Snapshot, ViewOptions], Dir]

VIEWS: dict[str, View] = {
    "huggingface": huggingface.render,
    "ollama": ollama.render,
    "lmstudio": lmstudio.render,
    "llamacpp": llamacpp.render,
    "jan": jan.render,
    "store": store.render,
}


def render_root(snapshot: Snapshot, options: ViewOptions = ViewOptions()) -> Dir:
    root = Dir()
    for name, view in VIEWS.items():
        root.children[name] = view(snapshot, options)
    return root


__all__ = ["VIEWS", "ViewOptions", "render_root"]
