"""The architectures the converters cover, and how their names and settings map between a
Hugging Face `config.json` + tensor names and GGUF keys + tensor names.

One table serves both directions. Tensor names go through `gguf`'s own name maps (the ones
llama.cpp's converter uses), so a GGUF made here names tensors as llama.cpp expects.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

from modelstore.converters.errors import ConversionUnsupported


@dataclass(frozen=True)
class Arch:
    gguf_name: str  # general.architecture
    model_arch: gguf.MODEL_ARCH
    hf_class: str  # config.json "architectures"
    hf_model_type: str
    permute_qk: bool  # llama's rotary layout: Q/K rows reordered between HF and GGUF
    norms_plus_one: bool = False  # gemma: HF keeps w of its (1 + w) norms, GGUF 1 + w itself


LLAMA = Arch("llama", gguf.MODEL_ARCH.LLAMA, "LlamaForCausalLM", "llama", True)
MISTRAL = Arch("llama", gguf.MODEL_ARCH.LLAMA, "MistralForCausalLM", "mistral", True)
QWEN2 = Arch("qwen2", gguf.MODEL_ARCH.QWEN2, "Qwen2ForCausalLM", "qwen2", False)
QWEN3 = Arch("qwen3", gguf.MODEL_ARCH.QWEN3, "Qwen3ForCausalLM", "qwen3", False)
# phi3: Q, K and V in one qkv_proj, gate and up in one gate_up_proj, in both formats alike
PHI3 = Arch("phi3", gguf.MODEL_ARCH.PHI3, "Phi3ForCausalLM", "phi3", False)
# gemma (the first): NEOX rope, GELU, embeddings tied, norms stored as w and applied as 1 + w
GEMMA = Arch("gemma", gguf.MODEL_ARCH.GEMMA, "GemmaForCausalLM", "gemma", False, norms_plus_one=True)

BY_MODEL_TYPE = {a.hf_model_type: a for a in (LLAMA, MISTRAL, QWEN2, QWEN3, PHI3, GEMMA)}
BY_GGUF_NAME = {a.gguf_name: a for a in (LLAMA, QWEN2, QWEN3, PHI3, GEMMA)}  # a "llama" GGUF loads as Llama

_LAYER_TENSORS = (
    "input_layernorm.weight", "post_attention_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.bias",
    "self_attn.q_norm.weight", "self_attn.k_norm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
)
_PHI3_LAYER_TENSORS = (
    "input_layernorm.weight", "post_attention_layernorm.weight",
    "self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight",
)
_GLOBAL_TENSORS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
IGNORED_HF_TENSORS = ("rotary_emb.inv_freq",)


def arch_for_config(config: Mapping[str, Any]) -> Arch:
    model_type = config.get("model_type")
    arch = BY_MODEL_TYPE.get(str(model_type))
    if arch is None:
        covered = ", ".join(sorted(BY_MODEL_TYPE))
        raise ConversionUnsupported(f"architecture {model_type!r} is not covered by the GGUF converter ({covered} are)")
    return arch


def arch_for_gguf(name: str) -> Arch:
    arch = BY_GGUF_NAME.get(name)
    if arch is None:
        covered = ", ".join(sorted(BY_GGUF_NAME))
        raise ConversionUnsupported(f"GGUF architecture {name!r} is not covered by the safetensors converter "
                                    f"({covered} are)")
    return arch


def hf_names(n_blocks: int, arch: Arch | None = None) -> list[str]:
    layer = _PHI3_LAYER_TENSORS if arch is PHI3 else _LAYER_TENSORS  # phi3's ffn_up is gate and up fused
    return list(_GLOBAL_TENSORS) + [f"model.layers.{i}.{t}" for i in range(n_blocks) for t in layer]


@functools.lru_cache(maxsize=8)
def _name_map(model_arch: gguf.MODEL_ARCH, n_blocks: int) -> gguf.TensorNameMap:
    """gguf builds its map anew each call, in milliseconds per dozen layers: build it once."""
    return gguf.get_tensor_name_map(model_arch, n_blocks)


def gguf_tensor_name(arch: Arch, n_blocks: int, hf_name: str) -> str:
    name = _name_map(arch.model_arch, n_blocks).get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise ConversionUnsupported(f"tensor {hf_name!r} has no GGUF name for {arch.gguf_name}")
    return name


def hf_name_table(arch: Arch, n_blocks: int) -> dict[str, str]:
    """GGUF tensor name -> HF tensor name, for every tensor these architectures can have."""
    names = _name_map(arch.model_arch, n_blocks)
    out = {}
    for hf in hf_names(n_blocks, arch):
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is not None:
            out.setdefault(name, hf)
    return out


def norm_offset(arch: Arch, hf_name: str) -> float | None:
    """What HF -> GGUF adds to this tensor's values (GGUF -> HF takes it away again)."""
    return 1.0 if arch.norms_plus_one and hf_name.endswith("norm.weight") else None


def is_permuted(arch: Arch, hf_name: str) -> bool:
    return arch.permute_qk and (".self_attn.q_proj." in hf_name or ".self_attn.k_proj." in hf_name)


def _rope(config: Mapping[str, Any]) -> dict[str, Any]:
    """transformers 5 keeps rope settings in `rope_parameters`; older configs in `rope_theta` and
    `rope_scaling`."""
    params = dict(config.get("rope_scaling") or {})
    params.update(config.get("rope_parameters") or {})
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    return params


def head_dim(config: Mapping[str, Any]) -> int:
    """The attention head size config.json gives, checked: the rotary permutation needs it even."""
    try:
        dim = int(config.get("head_dim") or int(config["hidden_size"]) // int(config["num_attention_heads"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ConversionUnsupported(f"config.json gives no usable head size (head_dim, or hidden_size / "
                                    f"num_attention_heads): {type(exc).__name__}: {exc}") from None
    if dim <= 0 or dim % 2:
        raise ConversionUnsupported(f"config.json gives a head size of {dim}: rotary embeddings need an even, "
                                    f"positive one")
    return dim


ROPE_FREQS = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"  # Llama 3.1's rope scaling, in GGUF


def _rope_wavelengths(base: float, dim: int) -> np.ndarray:
    """The wavelength of each rotary frequency of a head of `dim`, from float32 frequencies."""
    freqs = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
    return 2 * math.pi / freqs.astype(np.float64)


def llama3_rope_factors(config: Mapping[str, Any]) -> np.ndarray | None:
    """Llama 3.1+'s `llama3` rope scaling as llama.cpp takes it: one F32 divisor per rotary
    frequency (the `rope_freqs` tensor), 1 for wavelengths well inside the original context, the
    full factor for those beyond it, and a smooth blend between. None for other rope types."""
    rope = _rope(config)
    if (rope.get("rope_type") or rope.get("type")) != "llama3":
        return None
    try:
        factor = float(rope.get("factor", 8.0))
        low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
        original = float(rope.get("original_max_position_embeddings", 8192))
        base, dim = float(rope.get("rope_theta", 10000.0)), head_dim(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionUnsupported(f"llama3 rope scaling lacks a usable {exc}") from None
    if not (factor > 0 and high > low > 0 and original > 0):
        raise ConversionUnsupported(f"llama3 rope scaling has unusable factors {rope}")
    wavelengths = _rope_wavelengths(base, dim)
    smooth = (original / wavelengths - low) / (high - low)
    blended = 1.0 / ((1.0 - smooth) / factor + smooth)
    factors = np.where(wavelengths < original / high, 1.0, np.where(wavelengths > original / low, factor, blended))
    return factors.astype(np.float32)


def llama3_rope_from_factors(factors: np.ndarray, config: Mapping[str, Any]) -> dict[str, Any]:
    """The `rope_scaling` of config.json whose llama3_rope_factors are `factors` (a GGUF's
    rope_freqs). Only the ratios of the original context to the two frequency factors are in the
    factors, so low_freq_factor is taken as 1, as in every Llama 3.x; what is found is checked by
    computing the factors again, and anything that does not give them back is refused."""
    dim = head_dim(config)
    if factors.shape != (dim // 2,) or not np.isfinite(factors).all():
        raise ConversionUnsupported(f"rope_freqs holds {factors.size} values; a head of {dim} has {dim // 2} frequencies")
    factor = float(factors.max())
    if factor <= 1.0:
        raise ConversionUnsupported("rope_freqs scales no frequency: not a llama3 rope scaling")
    base = float(config.get("rope_theta", 10000.0))
    wavelengths = _rope_wavelengths(base, dim)
    blended = [i for i, f in enumerate(factors) if 1.0 < f < factor]
    candidates = [(4.0, 8192.0)]  # Llama 3.1 and 3.2: high_freq_factor 4, original context 8192
    if len(blended) >= 2:  # smooth = original/wavelength - 1) / (high - 1): a line in 1/wavelength
        i, j = blended[0], blended[-1]
        s_i, s_j = ((1.0 / float(factors[k]) - 1.0 / factor) / (1.0 - 1.0 / factor) for k in (i, j))
        slope = (s_i - s_j) / (1.0 / wavelengths[i] - 1.0 / wavelengths[j])
        intercept = s_i - slope / wavelengths[i]
        if intercept < 0:
            high = 1.0 - 1.0 / intercept
            candidates.insert(0, (float(round(high, 4)), float(round(slope * (high - 1.0)))))
    for high, original in candidates:
        rope = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": high,
                "original_max_position_embeddings": int(original)}
        again = llama3_rope_factors({"head_dim": dim, "rope_theta": base, "rope_scaling": rope})
        if again is not None and again.shape == factors.shape and np.allclose(again, factors, rtol=1e-5, atol=0):
            return rope
    raise ConversionUnsupported("rope_freqs is no llama3 rope scaling this converter can name")


def gguf_model_keys(writer: gguf.GGUFWriter, config: Mapping[str, Any]) -> None:
    """The model's hyperparameters, as llama.cpp's converter writes them."""
    try:
        _write_model_keys(writer, config)
    except KeyError as exc:
        raise ConversionUnsupported(f"config.json lacks {exc}, which the GGUF header needs") from None
    except (TypeError, ValueError, ZeroDivisionError) as exc:  # a config.json with odd values
        raise ConversionUnsupported(f"config.json has a value the GGUF header cannot use: {exc}") from None


def _write_model_keys(writer: gguf.GGUFWriter, config: Mapping[str, Any]) -> None:
    heads = int(config["num_attention_heads"])
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    rope = _rope(config)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    dim = head_dim(config)
    partial = float(config.get("partial_rotary_factor") or 1.0)  # llama.cpp's converter rounds it so:
    writer.add_rope_dimension_count(dim if partial == 1.0 else int(partial * config["hidden_size"]) // heads)
    original = config.get("original_max_position_embeddings")
    if config.get("model_type") == "phi3":  # as llama.cpp's converter writes phi3 headers
        if original:
            writer.add_rope_scaling_orig_ctx_len(int(original))
        writer.add_sliding_window(int(config.get("sliding_window") or 0))
    if dim != config["hidden_size"] // heads:
        writer.add_key_length(dim)
        writer.add_value_length(dim)
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type == "yarn":
        factor, context, attn_factor = _yarn_for_gguf(config, rope)
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        if not (config.get("model_type") == "phi3" and original):  # written above already
            writer.add_rope_scaling_orig_ctx_len(context)
        if attn_factor is not None:
            writer.add_rope_scaling_attn_factors(attn_factor)
    elif rope_type == "llama3":
        pass  # no keys: llama.cpp reads it from the rope_freqs tensor (llama3_rope_factors)
    elif rope_type != "default":
        raise ConversionUnsupported(f"rope type {rope_type!r} is not covered by the GGUF converter")
    if config.get("vocab_size"):
        writer.add_vocab_size(int(config["vocab_size"]))


def hf_config(arch: Arch, kv: Mapping[str, Any], tensors: set[str], dtype: str,
              rope_factors: np.ndarray | None = None) -> dict[str, Any]:
    """config.json for a GGUF model of `arch`; `tensors` are its GGUF tensor names, `rope_factors`
    its rope_freqs tensor, if it has one."""
    try:
        return _hf_config(arch, kv, tensors, dtype, rope_factors)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:  # a key of the wrong type in a hostile GGUF
        raise ConversionUnsupported(f"the GGUF has a {arch.gguf_name}.* value config.json cannot use: {exc}") from None


def _finite(a: str, name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ConversionUnsupported(f"the GGUF's {a}.{name} is {value}, which config.json cannot say")
    return value


def _hf_config(arch: Arch, kv: Mapping[str, Any], tensors: set[str], dtype: str,
               rope_factors: np.ndarray | None) -> dict[str, Any]:
    a = arch.gguf_name

    def key(name: str, default: Any = None) -> Any:
        return kv.get(f"{a}.{name}", default)

    try:
        hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
        config: dict[str, Any] = {
            "architectures": [arch.hf_class],
            "model_type": arch.hf_model_type,
            "hidden_size": hidden,
            "intermediate_size": int(key("feed_forward_length")),
            "num_hidden_layers": int(key("block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(key("attention.head_count_kv", heads)),
            "head_dim": int(key("attention.key_length", hidden // heads)),
        }
    except (TypeError, ValueError):
        raise ConversionUnsupported(f"the GGUF lacks the {a}.* hyperparameters a config.json needs") from None
    tokens = kv.get("tokenizer.ggml.tokens")
    config.update({
        "max_position_embeddings": int(key("context_length", 4096)),
        "rms_norm_eps": _finite(a, "attention.layer_norm_rms_epsilon", float(key("attention.layer_norm_rms_epsilon", 1e-6))),
        "rope_theta": _finite(a, "rope.freq_base", float(key("rope.freq_base", 10000.0))),
        "vocab_size": int(key("vocab_size") or (len(tokens) if isinstance(tokens, list) else 0)),
        "hidden_act": "gelu_pytorch_tanh" if arch is GEMMA else "silu",
        "tie_word_embeddings": "output.weight" not in tensors,
        "torch_dtype": dtype,
        "bos_token_id": kv.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": kv.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": kv.get("tokenizer.ggml.padding_token_id"),  # phi3's default (32000) is no id of a small vocab
    })
    if arch is LLAMA:
        config["attention_bias"] = "blk.0.attn_q.bias" in tensors
        config["mlp_bias"] = False
    rope_dim = int(key("rope.dimension_count", config["head_dim"]))
    if rope_dim != config["head_dim"]:
        config["partial_rotary_factor"] = rope_dim / config["head_dim"]
    if arch is PHI3:
        config["original_max_position_embeddings"] = int(key("rope.scaling.original_context_length",
                                                             config["max_position_embeddings"]))
        config["sliding_window"] = int(key("attention.sliding_window", 0)) or None
    scaling = _rope_scaling_from_gguf(a, kv, config)
    if rope_factors is not None:
        if scaling is not None:
            raise ConversionUnsupported(f"the GGUF has both rope_freqs and {scaling['rope_type']} rope scaling")
        config["rope_scaling"] = llama3_rope_from_factors(rope_factors, config)
    elif scaling is not None:
        if arch is PHI3:  # transformers' Phi3Config refuses any other type
            raise ConversionUnsupported(f"transformers' phi3 takes only longrope rope scaling, not the "
                                        f"{scaling['rope_type']} scaling llama.cpp applies to this GGUF")
        config["rope_scaling"] = scaling
    return config


# YaRN as llama.cpp runs it for the architectures here: it reads the scaling type, factor, original
# context and `rope.scaling.attn_factor` (a multiplier of its own magnitude 1 + 0.1 ln(factor)),
# but no `rope.scaling.yarn_*` key, so its betas are always 32 and 1 (transformers' defaults too).
YARN_BETAS = {"beta_fast": 32.0, "beta_slow": 1.0}
_IGNORED_YARN_KEYS = {"rope.scaling.yarn_beta_fast": 32.0, "rope.scaling.yarn_beta_slow": 1.0,
                      "rope.scaling.yarn_attn_factor": 1.0, "rope.scaling.yarn_log_multiplier": 0.0}


def _hf_yarn_magnitude(factor: float, mscale: float = 1.0) -> float:
    """transformers' yarn_get_mscale: the attention factor YaRN gets unless config.json names one."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _ggml_yarn_magnitude(factor: float) -> float:
    """What llama.cpp multiplies its attn_factor by under YaRN (ggml's rope, freq_scale = 1 / factor)."""
    return 1.0 + 0.1 * math.log(factor)


def _yarn_for_gguf(config: Mapping[str, Any], rope: Mapping[str, Any]) -> tuple[float, int, float | None]:
    """(factor, original context, `rope.scaling.attn_factor` or None) of config.json's YaRN, as
    transformers reads them; what llama.cpp cannot run alike is refused."""
    arch = config.get("model_type")
    top, inner = config.get("original_max_position_embeddings"), rope.get("original_max_position_embeddings")
    if top and inner and int(top) != int(inner):  # transformers 5 takes the top-level one, 4.x rope_scaling's
        raise ConversionUnsupported(f"config.json gives YaRN two original contexts ({top} and {inner})")
    context = int(top or inner or config.get("max_position_embeddings") or 4096)
    factor = float(rope["factor"]) if rope.get("factor") is not None else int(config["max_position_embeddings"]) / context
    if not (math.isfinite(factor) and factor > 0):
        raise ConversionUnsupported(f"YaRN factor {factor} is no usable scaling factor")
    if factor < 1:
        raise ConversionUnsupported(f"YaRN factor {factor:g} below 1: llama.cpp versions differ on its attention "
                                    f"magnitude (current ones clamp it to 1, older ones do not)")
    for name, default in YARN_BETAS.items():
        value = float(rope.get(name) or default)  # transformers reads 0 and null as its default
        if value != default:
            raise ConversionUnsupported(f"YaRN {name} {value:g}: llama.cpp reads no {name} for {arch} and "
                                        f"runs it with {default:g}")
    if not rope.get("truncate", True):  # transformers rounds only when truncate is true (or not given)
        raise ConversionUnsupported("YaRN with truncate false: llama.cpp always rounds its correction range")
    attention = rope.get("attention_factor")
    if attention is None:
        mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
        attention = (_hf_yarn_magnitude(factor, float(mscale)) / _hf_yarn_magnitude(factor, float(mscale_all_dim))
                     if mscale and mscale_all_dim else _hf_yarn_magnitude(factor))
    attn_factor = float(attention) / _ggml_yarn_magnitude(factor)
    if not (math.isfinite(attn_factor) and attn_factor > 0):
        raise ConversionUnsupported(f"YaRN attention factor {attention} is not usable")
    return factor, context, None if math.isclose(attn_factor, 1.0, rel_tol=1e-6) else attn_factor


def _rope_scaling_from_gguf(a: str, kv: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any] | None:
    """config.json's rope_scaling for the rope scaling llama.cpp applies to this GGUF (rope_freqs
    aside): the type defaults to linear, the factor is `rope.scaling.factor` or the older
    `rope.scale_linear`, and a factor of 0 or 1 (or type none) scales nothing. None for no scaling."""
    def key(name: str, default: Any = None) -> Any:
        return kv.get(f"{a}.{name}", default)

    kind = key("rope.scaling.type", "linear")
    if kind not in ("none", "linear", "yarn"):
        raise ConversionUnsupported(f"rope scaling {kind!r} is not covered by the safetensors converter")
    for name, default in _IGNORED_YARN_KEYS.items():
        if key(name) is not None and float(key(name)) != default:
            raise ConversionUnsupported(f"the GGUF sets {a}.{name} to {key(name):g}, which llama.cpp does not read "
                                        f"for {a} (it runs with {default:g}): no config.json computes the same")
    ext = key("rope.scaling.yarn_ext_factor")
    if ext is not None and float(ext) not in (-1.0, 1.0 if kind == "yarn" else 0.0):
        raise ConversionUnsupported(f"the GGUF sets {a}.rope.scaling.yarn_ext_factor to {ext:g}, which llama.cpp "
                                    f"does not read for {a}")
    factor = key("rope.scaling.factor")
    factor = float(key("rope.scale_linear", 0.0) if factor is None else factor)
    if not (math.isfinite(factor) and factor >= 0):
        raise ConversionUnsupported(f"rope scaling factor {factor} is no usable scaling factor")
    if kind == "none" or factor == 0.0:
        factor = 1.0  # llama.cpp: frequencies unscaled
    attn_factor = float(key("rope.scaling.attn_factor", 1.0))
    if kind == "yarn":
        if factor == 1.0 and attn_factor == 1.0:
            return None
        if factor < 1:
            raise ConversionUnsupported(f"YaRN factor {factor:g} below 1: llama.cpp versions differ on its attention "
                                        f"magnitude (current ones clamp it to 1, older ones do not)")
        context = int(key("rope.scaling.original_context_length") or config["max_position_embeddings"])
        scaling: dict[str, Any] = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": context}
        attention = attn_factor * _ggml_yarn_magnitude(factor)
        if not math.isclose(attention, _hf_yarn_magnitude(factor), rel_tol=1e-6):
            scaling["attention_factor"] = attention
        return scaling
    if attn_factor != 1.0:
        raise ConversionUnsupported(f"the GGUF scales rope by {a}.rope.scaling.attn_factor {attn_factor:g} without "
                                    f"YaRN, which config.json cannot say")
    return None if factor == 1.0 else {"rope_type": "linear", "factor": factor}
