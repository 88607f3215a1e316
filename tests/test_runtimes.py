"""The runtimes' own code loading models through the mount: transformers from the HF view
(offline, by repo id), llama.cpp from the paths Ollama, LM Studio and llama-server would use.
Each runtime runs in a child process: llama.cpp aborts the whole process on a bad file, and
huggingface_hub reads HF_HUB_CACHE at import."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelstore.converters.synth import write_tiny_llama_gguf
from modelstore.store import Store
from modelstore.store.sources.local import add_local
from tests.mounting import mounted, requires_fuse

pytestmark = [requires_fuse, pytest.mark.fuse, pytest.mark.slow]


def require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("MODELSTORE_REQUIRE_RUNTIMES"):
            pytest.fail(f"{module} is not installed, and MODELSTORE_REQUIRE_RUNTIMES is set")
        pytest.skip(f"{module} is not installed (pip install -e '.[runtimes]')")


def run_child(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


MAKE_TRANSFORMERS_MODEL = r"""
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False,
                  initializer_range=0.1)
LlamaForCausalLM(cfg).save_pretrained(sys.argv[1])
vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(sys.argv[1])
print(json.dumps({"ok": True}))
"""

GENERATE_TRANSFORMERS = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
out = {}
for label, ref in (("original", sys.argv[1]), ("mount", sys.argv[2])):
    tok = AutoTokenizer.from_pretrained(ref)
    model = AutoModelForCausalLM.from_pretrained(ref)
    ids = tok("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
        gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    out[label] = {"tokens": gen[0].tolist(), "logits": logits[:16].tolist(),
                  "params": sum(p.numel() for p in model.parameters())}
print(json.dumps(out))
"""


def test_transformers_loads_from_the_hf_view_offline(store: Store, home: Path, tmp_path: Path) -> None:
    require("transformers")
    require("torch")
    folder = tmp_path / "tiny-tf"
    run_child(MAKE_TRANSFORMERS_MODEL, str(folder))
    add_local(store, folder, name="tiny-tf")
    with mounted(home, tmp_path / "mnt") as m:
        env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(m.path / "huggingface"), "TRANSFORMERS_OFFLINE": "1"}
        result = run_child(GENERATE_TRANSFORMERS, str(folder), "local/tiny-tf", env=env)
        assert "EROFS" not in m.log_text() and "Read-only" not in m.log_text()
    original, mounted_ = result["original"], result["mount"]
    assert original["params"] == mounted_["params"] > 0
    assert mounted_["tokens"] == original["tokens"]
    assert mounted_["logits"] == original["logits"]  # the same bytes: exactly the same numbers
    assert len(set(original["tokens"][-8:])) > 1  # a model that repeats one token would hide little


GENERATE_LLAMA_CPP = r"""
import json, sys
from llama_cpp import Llama
out = {}
for path in sys.argv[1:]:
    llm = Llama(model_path=path, n_ctx=128, n_threads=2, seed=0, verbose=False, use_mmap=True)
    toks = llm.tokenize(b"hello world")
    ids = [t for _, t in zip(range(8), llm.generate(toks, temp=0.0))]
    out[path] = {"tokens": toks, "generated": ids, "arch": llm.metadata.get("general.architecture"),
                 "vocab": llm.n_vocab()}
    del llm
print(json.dumps(out))
"""


def test_llama_cpp_loads_from_ollama_lmstudio_and_llamacpp_views(store: Store, home: Path, tmp_path: Path,
                                                                   models: Path) -> None:
    require("llama_cpp")
    gguf = write_tiny_llama_gguf(models / "tiny.gguf", n_embd=128, n_ff=256, seed=7)
    add_local(store, gguf, name="tiny:f32")
    with mounted(home, tmp_path / "mnt") as m:
        manifest = json.loads((m.path / "ollama/manifests/registry.ollama.ai/library/tiny/f32").read_text())
        model_layer = next(layer for layer in manifest["layers"] if layer["mediaType"].endswith(".model"))
        paths = [str(gguf), str(m.path / "ollama/blobs" / model_layer["digest"].replace(":", "-")),
                 str(m.path / "lmstudio/local/tiny-f32/tiny.gguf"), str(m.path / "llamacpp/tiny-f32.gguf")]
        result = run_child(GENERATE_LLAMA_CPP, *paths)
    original = result[paths[0]]
    assert original["arch"] == "llama" and original["vocab"] == 317 and len(original["generated"]) == 8
    for path in paths[1:]:
        assert result[path] == original, path


def test_llama_cpp_loads_what_jan_s_model_yml_names_through_a_linked_models_folder(
        store: Store, home: Path, tmp_path: Path, models: Path) -> None:
    """Jan's load(): llama-server -m <data>/<model_path>, with <data>/llamacpp/models a link to the
    jan/ view. A split's first shard: llama.cpp finds the others beside it, by name."""
    require("llama_cpp")
    import yaml

    gguf = write_tiny_llama_gguf(models / "tiny.gguf", n_embd=128, n_ff=256, seed=7)
    add_local(store, gguf, name="tiny:f32")
    split = models / "split"
    split.mkdir()
    first = write_tiny_llama_gguf(split / "tiny.gguf", n_embd=128, n_ff=256, seed=7, split_max_tensors=8)
    add_local(store, split, name="tiny-split")
    with mounted(home, tmp_path / "mnt") as m:
        data = tmp_path / "Jan" / "data"
        (data / "llamacpp").mkdir(parents=True)
        (data / "llamacpp" / "models").symlink_to(m.path / "jan")
        paths = [str(gguf), str(first)]
        for model_id in ("tiny-f32", "tiny-split"):
            yml = yaml.safe_load((data / "llamacpp/models" / model_id / "model.yml").read_text())
            paths.append(str(data / yml["model_path"]))
        result = run_child(GENERATE_LLAMA_CPP, *paths)
    original = result[paths[0]]
    assert original["arch"] == "llama" and len(original["generated"]) == 8
    assert paths[3].endswith("/tiny-split/tiny-00001-of-00003.gguf")
    for path in paths[1:]:
        assert result[path] == original, path
