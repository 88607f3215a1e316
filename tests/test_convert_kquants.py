"""GGUF -> safetensors from k-quants (Q4_K_M: Q4_K and Q6_K tensors; Q5_K_M: Q5_K and Q6_K;
Q3_K_M: Q3_K among others; Q2_K), quantized by llama.cpp's
own quantizer (llama-cpp-python's `llama_model_quantize`), since gguf-py can only dequantize
them. transformers loads the rendition from the HF view and must agree with llama.cpp running the
quantized file; every tensor must equal gguf's own dequantization, cast to F16."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors import safe_open

from modelstore.converters import archs
from modelstore.converters.synth import write_tiny_llama_gguf
from modelstore.store import Store
from modelstore.store.sources.local import add_local
from tests.mounting import mounted, requires_fuse
from tests.test_runtimes import require, run_child

pytestmark = [requires_fuse, pytest.mark.fuse, pytest.mark.slow]

IDS = [1, 5, 77, 130, 12, 200, 41, 9]
TOLERANCE = 0.05  # F16 weights against llama.cpp's k-quant kernels (Q8_K activations); measured 0.010-0.016

QUANTIZE = r"""
import ctypes, json, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
print(json.dumps({"rc": llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params))}))
"""

LLAMA_CPP = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
ids = json.loads(sys.argv[2])
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, logits_all=True, seed=0, verbose=False)
llm.eval(ids)
logits = np.array(llm.scores[len(ids) - 1])
gen = [t for _, t in zip(range(6), llm.generate(ids, temp=0.0))]
print(json.dumps({"logits": logits.tolist(), "tokens": gen}))
"""

TRANSFORMERS = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
ids = json.loads(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0, -1].float()
    gen = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=0)
print(json.dumps({"logits": logits.tolist(), "tokens": gen[0, len(ids):].tolist()}))
"""


@pytest.mark.parametrize(("ftype", "types"), [("Q4_K_M", {"Q4_K", "Q6_K"}), ("Q5_K_M", {"Q5_K", "Q6_K"}),
                                               ("Q3_K_M", {"Q3_K"}), ("Q2_K", {"Q2_K"})])
def test_k_quant_gguf_as_safetensors_runs_like_llama_cpp(store: Store, home: Path, tmp_path: Path,
                                                       models: Path, ftype: str, types: set[str]) -> None:
    require("llama_cpp")
    require("transformers")
    source = write_tiny_llama_gguf(models / "tiny-f32.gguf", n_embd=256, n_ff=512, n_head=4, n_head_kv=2, seed=7)
    quantized = models / f"tiny-{ftype}.gguf"
    assert run_child(QUANTIZE, str(source), str(quantized), ftype)["rc"] == 0
    reader = gguf.GGUFReader(quantized)
    assert {t.tensor_type.name for t in reader.tensors} >= types
    add_local(store, quantized, name="kq")
    from modelstore.converters.planner import plan_conversions

    files = plan_conversions(store, "kq").files
    assert json.loads(store.read_range(files["config.json"], 0, files["config.json"].size))["torch_dtype"] == "float16"

    with mounted(home, tmp_path / "mnt") as m:
        env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(m.path / "huggingface")}
        hf = run_child(TRANSFORMERS, "local/kq", json.dumps(IDS), env=env)
        snapshot = next((m.path / "huggingface" / "models--local--kq" / "snapshots").iterdir())
        names = archs.hf_name_table(archs.LLAMA, 2)
        with safe_open(str(snapshot / "model.safetensors"), "np") as st:
            for t in reader.tensors:
                want = gguf.quants.dequantize(t.data, t.tensor_type)
                if t.name.startswith("blk.") and (".attn_q." in t.name or ".attn_k." in t.name):
                    heads = 4 if ".attn_q." in t.name else 2
                    want = want.reshape(heads, want.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(want.shape)
                assert st.get_tensor(names[t.name]).tobytes() == want.astype(np.float16).tobytes(), t.name
    cpp = run_child(LLAMA_CPP, str(quantized), json.dumps(IDS))
    diff = np.abs(np.array(hf["logits"]) - np.array(cpp["logits"])).max()
    print(f"{ftype}: max |logit difference| {diff:.4f}")
    assert diff < TOLERANCE, diff
    assert hf["tokens"] == cpp["tokens"]
    assert diff > 0  # really two runtimes on two files, not one file read twice
