"""How an imported model remembers where it came from, so the views can put it back as it was.

Shared by the importers (which record it) and the views (which read it); kept free of ingest
and disk access so views can import it.

- Ollama: Source("ollama", "<host>/<namespace>/<model>:<tag>", "sha256:<manifest digest>"); the
  manifest's own bytes are the model file `ollama/manifest`, every other file is one of its blobs.
- Hugging Face cache: Source("huggingface", repo id, commit); metadata "refs" lists the branch and
  tag names that pointed at that commit.
- LM Studio: Source("lmstudio", "<publisher>/<model>"); the files keep their paths in that folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelstore.store.records import ModelRecord

OLLAMA_MANIFEST = "ollama/manifest"
OLLAMA_CONFIG = "ollama/config"
REFS_KEY = "refs"
IMPORTED_FROM_KEY = "imported_from"

# Ollama's name rules (types/model/name.go): 1-80 characters, the first a letter, digit or '_';
# no '.' in the namespace; the host may also hold ':' (a port) and be longer.
_OLLAMA_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_OLLAMA_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_OLLAMA_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
_REF_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_COMMIT = re.compile(r"[0-9a-f]{40}")

OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE = "registry.ollama.ai", "library"


@dataclass(frozen=True)
class OllamaManifestName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def path(self) -> str:
        """Where the manifest lives under manifests/."""
        return f"{self.host}/{self.namespace}/{self.model}/{self.tag}"

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """The name `ollama list` shows: the default host and the library namespace left out."""
        if self.host != OLLAMA_DEFAULT_HOST:
            return self.full
        if self.namespace == OLLAMA_DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        return f"{self.namespace}/{self.model}:{self.tag}"


def ollama_name_from_parts(host: str, namespace: str, model: str, tag: str) -> OllamaManifestName | None:
    """The name, or None when a part breaks Ollama's rules (Ollama could not list it either)."""
    ok = (_OLLAMA_HOST.fullmatch(host) and _OLLAMA_NAMESPACE.fullmatch(namespace)
          and _OLLAMA_PART.fullmatch(model) and _OLLAMA_PART.fullmatch(tag))
    return OllamaManifestName(host, namespace, model, tag) if ok else None


def ollama_name_from_full(full: str) -> OllamaManifestName | None:
    head, _, tag = full.rpartition(":")
    parts = head.split("/")
    if len(parts) != 3 or "/" in tag:
        return None
    return ollama_name_from_parts(parts[0], parts[1], parts[2], tag)


def imported_ollama_name(model: ModelRecord) -> OllamaManifestName | None:
    """The manifest name of a model imported from an Ollama folder (None for any other model)."""
    if model.source.kind != "ollama" or OLLAMA_MANIFEST not in model.files:
        return None
    return ollama_name_from_full(model.source.location)


def valid_ref(name: str) -> bool:
    """A branch or tag name safe to place under refs/ ("main", "v1.0", "refs/pr/1")."""
    return all(_REF_PART.fullmatch(part) for part in name.split("/")) and ".." not in name


def hf_refs(model: ModelRecord) -> list[str]:
    """The refs an imported Hugging Face snapshot had; [] for anything else."""
    if model.source.kind != "huggingface" or not _COMMIT.fullmatch(model.source.revision or ""):
        return []
    refs = model.metadata.get(REFS_KEY)
    if not isinstance(refs, list):
        return []
    return [r for r in refs if isinstance(r, str) and valid_ref(r)]


def valid_folder_part(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def lmstudio_place(model: ModelRecord) -> tuple[str, str] | None:
    """(publisher, model folder) of a model imported from LM Studio."""
    if model.source.kind != "lmstudio":
        return None
    publisher, _, folder = model.source.location.partition("/")
    if not (valid_folder_part(publisher) and valid_folder_part(folder)):
        return None
    return publisher, folder
