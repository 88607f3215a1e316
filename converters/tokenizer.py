"""Tokenizers between a Hugging Face repo (`tokenizer.json` and friends) and GGUF `tokenizer.*` keys.

Two shapes are covered, the two llama.cpp's `convert_hf_to_gguf.py` writes for llama-family models:

- byte-level BPE (GPT-2, Llama 3, Qwen2/2.5/3, Mistral Nemo): GGUF tokenizer model "gpt2", with
  merges and a named pre-tokenizer (`tokenizer.ggml.pre`) that selects llama.cpp's split regex;
- SentencePiece-style BPE with byte fallback (Llama 2, Mistral 7B v0.1): GGUF tokenizer model
  "llama", where llama.cpp merges by token score instead of a merge list; from tokenizer.json, or
  from a SentencePiece BPE `tokenizer.model` when the repo has no tokenizer.json.

Anything else (Unigram, WordPiece, other GGUF tokenizer models) raises ConversionUnsupported.
Both directions are pure: bytes and plain values in, bytes or writer calls out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import gguf
from modelstore.store import jsontext
from modelstore.converters.errors import ConversionUnsupported, malformed_input
from modelstore.converters.plans import json_file
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

VocabKind = Literal["gpt2", "llama"]

SPACE_MARK = "\u2581"  # SentencePiece's "▁", standing for a space
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")

# llama.cpp refuses a "gpt2" vocabulary without merges, and GGUFWriter refuses an empty array. Its
# halves are no single byte-level character and no merge builds them, so it can never fire.
PLACEHOLDER_MERGE = "<modelstore:no-merges> <modelstore:no-merges>"

# The split regexes as tokenizer.json files spell them, and the name llama.cpp knows each by.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                  r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                  r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp's regex chain for pre "default" (also used when the key is missing): each one splits
# the pieces the previous left, keeping matches and the text between them.
DEFAULT_PATTERNS = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_PATTERN, r"\p{N}+", r"[0-9][0-9][0-9]")

PRE_BY_PATTERN = {GPT2_PATTERN: "gpt-2", LLAMA3_PATTERN: "llama-bpe", QWEN2_PATTERN: "qwen2",
                  TEKKEN_PATTERN: "tekken"}
QWEN_ARCHES = frozenset({"qwen2", "qwen3", "qwen2moe", "qwen3moe"})
# Pre names whose llama.cpp regex is LLAMA3_PATTERN, and the subset that also ignores merges for
# whole-word vocab hits and adds BOS by default.
LLAMA3_PRES = frozenset({"llama-bpe", "llama3", "llama-v3", "dbrx", "smaug-bpe"})
LLAMA3_IGNORE_MERGES = frozenset({"llama-bpe", "llama3", "llama-v3"})
QWEN2_PRES = frozenset({"qwen2", "deepseek-r1-qwen", "megrez"})
GPT2_PRES = frozenset({"gpt-2", "phi-2", "mpt", "olmo"})
ADDS_BOS_BY_DEFAULT = LLAMA3_IGNORE_MERGES | {"tekken"}

# Bounds on the merges rebuilt from a SentencePiece vocabulary's scores (_merges_from_scores), far
# above real ones (Llama 2: 32k tokens of at most 16 characters; Gemma: 256k of at most a few dozen).
MAX_SPLIT_WORK = 1 << 28  # characters copied while trying every split: sum of squared token lengths
MERGES_PER_TOKEN, MERGES_BASE = 16, 1 << 16
MERGE_CHARS_PER_CHAR, MERGE_CHARS_BASE = 16, 1 << 22
# and on tokenizer.json against the GGUF vocabulary it comes from (characters of tokens and merges)
TOKENIZER_JSON_PER_CHAR, TOKENIZER_JSON_BASE = 64, 1 << 20

SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad")
K = gguf.Keys.Tokenizer
ID_KEYS = {"bos": K.BOS_ID, "eos": K.EOS_ID, "unk": K.UNK_ID, "sep": K.SEP_ID, "pad": K.PAD_ID}
SPECIAL_TYPES = (gguf.TokenType.CONTROL, gguf.TokenType.UNKNOWN)


# --- Hugging Face -> GGUF ------------------------------------------------------------------------


@malformed_input("the tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
def write_gguf_tokenizer(writer: gguf.GGUFWriter, files: dict[str, bytes], arch: str,
                         n_vocab: int | None = None) -> None:
    """Add the tokenizer keys for the HF repo `files` (file name -> bytes) to `writer`, as llama.cpp's
    converter would for architecture `arch`. Needs `tokenizer.json`, else a SentencePiece
    `tokenizer.model` (with `added_tokens.json`); reads `tokenizer_config.json`,
    `special_tokens_map.json`, `config.json`, `generation_config.json` and `chat_template.jinja`
    (or `chat_template.json`) when present.

    `n_vocab` is the token embedding's rows, when known: llama.cpp loads a GGUF only when it names
    one token per row, so the vocabulary is that long and config.json's vocab_size must agree."""
    if "tokenizer.json" not in files:
        if "tokenizer.model" in files:
            _write_sentencepiece_tokenizer(writer, files, n_vocab)
            return
        raise ConversionUnsupported("no tokenizer.json or tokenizer.model in the repo")
    tok = _json(files, "tokenizer.json")
    tok_config = _json(files, "tokenizer_config.json")
    config = _json(files, "config.json")
    model = tok.get("model") or {}
    kind = _hf_vocab_kind(tok)

    tokens = _tokens_by_id(model, tok.get("added_tokens") or [], _vocab_size(config, n_vocab))
    added = {int(a["id"]): a for a in tok.get("added_tokens") or []}
    names = [text if text is not None else f"[PAD{i}]" for i, text in enumerate(tokens)]
    ids = {text: i for i, text in enumerate(names)}
    if len(ids) != len(names):
        raise ConversionUnsupported("tokenizer.json names one token text at two ids, which llama.cpp refuses")
    token_texts = _json(files, "special_tokens_map.json") | tok_config
    special = _special_ids(ids, token_texts, config, _json(files, "generation_config.json"), model)

    writer.add_tokenizer_model(kind)
    if kind == "gpt2":
        writer.add_tokenizer_pre(_gguf_pre_name(tok.get("pre_tokenizer"), arch, len(names)))
        writer.add_token_list(names)
        writer.add_token_types([_gpt2_token_type(i, tokens, added) for i in range(len(names))])
        writer.add_token_merges(_merge_strings(model.get("merges") or []) or [PLACEHOLDER_MERGE])
    else:
        writer.add_token_list(names)
        writer.add_token_scores(_spm_scores(names, model.get("merges") or [], tokens, added, special.get("unk")))
        writer.add_token_types([_spm_token_type(i, tokens, added, special.get("unk")) for i in range(len(names))])
        writer.add_add_space_prefix(_hf_adds_space_prefix(tok))
    _write_specials(writer, special, *_hf_adds_bos_eos(tok, tok_config, ids, special))
    _write_chat_template(writer, tok_config, files)


def _write_specials(writer: gguf.GGUFWriter, special: Mapping[str, int], add_bos: bool | None,
                    add_eos: bool | None) -> None:
    for kind_name in SPECIAL_KINDS:
        if kind_name in special:
            getattr(writer, f"add_{kind_name}_token_id")(special[kind_name])
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    if add_eos is not None:
        writer.add_add_eos_token(add_eos)


def _write_chat_template(writer: gguf.GGUFWriter, tok_config: Mapping[str, Any], files: Mapping[str, bytes]) -> None:
    template = _chat_template(tok_config, files)
    if template is not None:
        writer.add_chat_template(template)


def _json(files: Mapping[str, bytes], name: str) -> dict[str, Any]:
    if name not in files:
        return {}
    try:
        value = jsontext.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConversionUnsupported(f"{name} is not valid JSON ({e})") from None
    return value if isinstance(value, dict) else {}


def _components(node: Any, key: str) -> list[dict[str, Any]]:
    """A normalizer / pre-tokenizer / decoder and, for a Sequence, its parts, flattened."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        return [c for part in node.get(key) or [] for c in _components(part, key)]
    return [node]


def _hf_vocab_kind(tok: Mapping[str, Any]) -> VocabKind:
    model = tok.get("model") or {}
    model_type = model.get("type")
    if model_type != "BPE":
        raise ConversionUnsupported(f"tokenizer.json model {model_type!r} is not converted (only BPE)")
    if any(c.get("type") == "ByteLevel" for c in _components(tok.get("pre_tokenizer"), "pretokenizers")):
        return "gpt2"
    normalizer = _components(tok.get("normalizer"), "normalizers")
    spaces_marked = any(c.get("type") == "Replace" and c.get("content") == SPACE_MARK for c in normalizer) or any(
        c.get("type") == "Metaspace" for c in _components(tok.get("pre_tokenizer"), "pretokenizers"))
    if model.get("byte_fallback") and spaces_marked:
        return "llama"
    raise ConversionUnsupported("tokenizer.json BPE is neither byte-level nor SentencePiece-style with byte fallback")


def _config_vocab_size(config: Mapping[str, Any]) -> int:
    size = config.get("vocab_size")
    if size is None and isinstance(config.get("text_config"), dict):
        size = config["text_config"].get("vocab_size")
    return size if isinstance(size, int) else 0


def _vocab_size(config: Mapping[str, Any], n_vocab: int | None) -> int:
    """How many tokens the GGUF names: the embedding's rows, which config.json's vocab_size must
    agree with; without them, vocab_size (0 when config.json has none)."""
    size = _config_vocab_size(config)
    if n_vocab is not None:
        if size and size != n_vocab:
            raise ConversionUnsupported(f"config.json's vocab_size {size} is not the token embedding's {n_vocab} rows "
                                        "(llama.cpp needs one token per row)")
        return n_vocab
    return size


def _tokens_by_id(model: Mapping[str, Any], added_tokens: Sequence[Mapping[str, Any]],
                  vocab_size: int) -> list[str | None]:
    """Token text by id, None for ids nothing names. As llama.cpp's converter: config.json's
    vocab_size (the embedding's rows) is the length, and an id beyond it is left out; without one,
    the highest id named. Either is refused when it is far beyond the count of tokens: the rest
    would be "[PAD<id>]" placeholders, megabytes of them for a hostile file."""
    by_id: dict[int, str] = {}
    for text, i in (model.get("vocab") or {}).items():
        if (n := _token_id(i, None)) is not None and isinstance(text, str):
            by_id[n] = text
    for a in added_tokens:
        if isinstance(a, Mapping) and (n := _token_id(a.get("id"), None)) is not None and isinstance(a.get("content"), str):
            by_id[n] = a["content"]
    size = vocab_size or max(by_id, default=-1) + 1
    if size > 2 * len(by_id) + 1024:
        raise ConversionUnsupported(f"a vocabulary of {size} names only {len(by_id)} tokens in tokenizer.json")
    return [by_id.get(i) for i in range(size)]


def _token_id(value: Any, size: int | None) -> int | None:
    """A token id from JSON (a number, or a decimal string key), if it is one below `size`."""
    if isinstance(value, str) and value.isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value if size is None or value < size else None


def _gguf_pre_name(pre_tokenizer: Any, arch: str, n_vocab: int) -> str:
    """The llama.cpp pre-tokenizer whose split regex is the one tokenizer.json uses.

    llama.cpp's converter recognises pre-tokenizers by hashing how a reference text tokenizes; we
    compare the regex itself, which needs no table of hashes. When the regex is not one we know,
    the guess goes by architecture: "qwen2" for Qwen, "llama-bpe" for a Llama-3-sized llama vocab
    (128k), else "default"."""
    parts = _components(pre_tokenizer, "pretokenizers")
    patterns = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if not patterns and any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        patterns = [GPT2_PATTERN]
    if len(patterns) == 1 and patterns[0] in PRE_BY_PATTERN:
        return PRE_BY_PATTERN[patterns[0]]
    if arch in QWEN_ARCHES:
        return "qwen2"
    if arch == "llama" and n_vocab >= 100_000:
        return "llama-bpe"
    return "default"


def _gpt2_token_type(i: int, tokens: Sequence[str | None], added: Mapping[int, Mapping[str, Any]]) -> int:
    if tokens[i] is None:
        return gguf.TokenType.UNUSED
    if i in added:
        return gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
    return gguf.TokenType.NORMAL


def _spm_token_type(i: int, tokens: Sequence[str | None], added: Mapping[int, Mapping[str, Any]],
                    unk: int | None) -> int:
    text = tokens[i]
    if text is None:
        return gguf.TokenType.UNUSED
    if i == unk:
        return gguf.TokenType.UNKNOWN
    if BYTE_TOKEN.fullmatch(text):
        return gguf.TokenType.BYTE
    if i in added:
        return gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
    return gguf.TokenType.NORMAL


def _merge_pairs(merges: Sequence[Any]) -> list[tuple[str, str]]:
    """tokenizer.json merges, written either as "a b" or as ["a", "b"]."""
    pairs = []
    for merge in merges:
        if isinstance(merge, str):
            left, _, right = merge.partition(" ")
        else:
            left, right = merge
            if " " in left or " " in right:
                raise ConversionUnsupported(f"merge {merge!r} has a space inside a token, GGUF merges cannot say that")
        pairs.append((left, right))
    return pairs


def _merge_strings(merges: Sequence[Any]) -> list[str]:
    return [f"{left} {right}" for left, right in _merge_pairs(merges)]


def _spm_scores(names: Sequence[str], merges: Sequence[Any], tokens: Sequence[str | None],
                added: Mapping[int, Mapping[str, Any]], unk: int | None) -> list[float]:
    """Scores for llama.cpp's SPM tokenizer, which merges the adjacent pair whose result has the
    highest score. A token made by merge number r scores -r, so llama.cpp merges in the order HF
    BPE does; tokens no merge makes come after all of them, in id order. llama.cpp's own HF-only
    path scores everything -1000, which makes it merge left to right instead.

    Byte, control and unknown tokens score 0 like SentencePiece's; no pair of pieces forms them."""
    first_merge: dict[str, int] = {}
    for rank, (left, right) in enumerate(_merge_pairs(merges)):
        first_merge.setdefault(left + right, rank)
    after_merges = len(merges)
    scores = []
    for i, text in enumerate(names):
        if _spm_token_type(i, tokens, added, unk) in (gguf.TokenType.BYTE, gguf.TokenType.CONTROL,
                                                      gguf.TokenType.UNKNOWN):
            scores.append(0.0)
        elif text in first_merge:
            scores.append(-float(first_merge[text]))
        else:
            scores.append(-float(after_merges + i))
    return scores


def _hf_adds_space_prefix(tok: Mapping[str, Any]) -> bool:
    for c in _components(tok.get("normalizer"), "normalizers"):
        if c.get("type") == "Prepend" and c.get("prepend") == SPACE_MARK:
            return True
    for c in _components(tok.get("pre_tokenizer"), "pretokenizers"):
        if c.get("type") == "Metaspace":
            return c.get("prepend_scheme", "always" if c.get("add_prefix_space", True) else "never") != "never"
    return False


def _token_text(entry: Any) -> str | None:
    """A tokenizer_config token entry: a string or an AddedToken dict."""
    if isinstance(entry, dict):
        entry = entry.get("content")
    return entry if isinstance(entry, str) else None


def _special_ids(ids: Mapping[str, int], token_texts: Mapping[str, Any], config: Mapping[str, Any],
                 generation: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, int]:
    """bos/eos/unk/sep/pad ids: the token texts tokenizer_config (or special_tokens_map) names
    first, then config.json's and generation_config.json's ids (a list of eos ids gives its first)."""
    found: dict[str, int] = {}
    for kind in SPECIAL_KINDS:
        text = _token_text(token_texts.get(f"{kind}_token"))
        if kind == "unk" and text is None:
            text = model.get("unk_token")
        if text is not None and text in ids:
            found[kind] = ids[text]
            continue
        for source in (config, generation):
            value = source.get(f"{kind}_token_id")
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, int) and 0 <= value < len(ids):
                found[kind] = value
                break
    return found


def _template_ends(tok: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    """The special tokens a TemplateProcessing post-processor puts before and after a single
    sequence, or None when there is no such post-processor."""
    for c in _components(tok.get("post_processor"), "processors"):
        if c.get("type") == "TemplateProcessing":
            single = c.get("single") or []
            first = single[0].get("SpecialToken", {}).get("id") if single else None
            last = single[-1].get("SpecialToken", {}).get("id") if len(single) > 1 else None
            return first, last
    return None


def _hf_adds_bos_eos(tok: Mapping[str, Any], tok_config: Mapping[str, Any], ids: Mapping[str, int],
                     special: dict[str, int]) -> tuple[bool | None, bool | None]:
    """Whether the HF tokenizer adds BOS / EOS: tokenizer_config's add_*_token flags, else what the
    TemplateProcessing post-processor puts around a single sequence (as llama.cpp reads it; its
    tokens also name BOS / EOS when nothing else did). None leaves llama.cpp's own default: yes for
    SentencePiece and Llama 3, no for other byte-level vocabularies."""
    add: dict[str, bool | None] = {"bos": None, "eos": None}
    ends = _template_ends(tok)
    if ends is not None:
        for kind, text in zip(("bos", "eos"), ends, strict=True):
            if text is not None and text in ids:
                special.setdefault(kind, ids[text])
            add[kind] = text is not None and ids.get(text) == special.get(kind)
    for kind in add:
        flag = tok_config.get(f"add_{kind}_token")
        if isinstance(flag, bool):
            add[kind] = flag
    return add["bos"], add["eos"]


def _chat_template(tok_config: Mapping[str, Any], files: Mapping[str, bytes]) -> str | list[dict[str, str]] | None:
    template = tok_config.get("chat_template")
    if isinstance(template, (str, list)):
        return template
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].decode("utf-8")
    alt = _json(files, "chat_template.json").get("chat_template")
    return alt if isinstance(alt, (str, list)) else None


def _write_sentencepiece_tokenizer(writer: gguf.GGUFWriter, files: dict[str, bytes], n_vocab: int | None) -> None:
    """A repo with only `tokenizer.model` (Llama 2 and Mistral v0.1 era): its pieces, scores and
    piece types are what llama.cpp's "llama" vocabulary reads, in the same numbering."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(files["tokenizer.model"])
    except (DecodeError, ValueError) as exc:
        raise ConversionUnsupported(f"tokenizer.model is not a SentencePiece model ({exc})") from None
    bpe = sentencepiece_model_pb2.TrainerSpec.ModelType.Value("BPE")
    if proto.trainer_spec.model_type != bpe:
        kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
        raise ConversionUnsupported(f"tokenizer.model is a SentencePiece {kind} model; only BPE is converted")
    normalizer = proto.normalizer_spec
    if normalizer.name not in ("identity", "") or normalizer.remove_extra_whitespaces:
        raise ConversionUnsupported(f"tokenizer.model normalizes text ({normalizer.name or 'custom'} rule, "
                                    f"extra whitespace removed: {normalizer.remove_extra_whitespaces}), "
                                    "which llama.cpp does not")
    if not proto.pieces:
        raise ConversionUnsupported("tokenizer.model has no pieces")
    tok_config = _json(files, "tokenizer_config.json")
    config = _json(files, "config.json")
    # As llama.cpp's converter does: the vocabulary is config.json's vocab_size long (the rows of
    # the embedding), pieces first, then added tokens at their ids; an id outside is left out.
    size = _vocab_size(config, n_vocab) or len(proto.pieces)
    if len(proto.pieces) > size:
        raise ConversionUnsupported(f"tokenizer.model has {len(proto.pieces)} pieces, more than the vocabulary's "
                                    f"{size} (the token embedding's rows)")
    if size > 2 * len(proto.pieces) + 1024:
        raise ConversionUnsupported(f"a vocabulary of {size} has only {len(proto.pieces)} pieces in tokenizer.model")
    names = [f"[PAD{i}]" for i in range(size)]
    scores = [-10000.0] * size
    types = [int(gguf.TokenType.UNUSED)] * size
    for i, p in enumerate(proto.pieces):
        # SentencePiece's piece types are numbered as GGUF's token types (NORMAL 1 ... BYTE 6)
        names[i], scores[i] = p.piece, float(p.score)
        types[i] = int(p.type) if 1 <= p.type <= 6 else int(gguf.TokenType.NORMAL)
    for text, i in _json(files, "added_tokens.json").items():
        if _token_id(i, size) is not None and isinstance(text, str):
            names[i], scores[i], types[i] = text, -1000.0, int(gguf.TokenType.USER_DEFINED)
    decoder = tok_config.get("added_tokens_decoder")
    for key, entry in (decoder if isinstance(decoder, dict) else {}).items():
        i = _token_id(key, size)
        if i is None or not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            continue
        text = entry["content"]
        if entry.get("special") is True or (text.startswith("<|") and text.endswith("|>")):
            names[i], types[i] = text, int(gguf.TokenType.CONTROL)
        else:  # a user-defined token's "▁" is a space to llama.cpp, which matches it before splitting
            names[i], types[i] = text.replace(SPACE_MARK, " "), int(gguf.TokenType.USER_DEFINED)
        scores[i] = -1000.0
    ids = {text: i for i, text in enumerate(names)}
    if len(ids) != len(names):
        raise ConversionUnsupported("tokenizer.model and its added tokens name one text at two ids")

    token_texts = _json(files, "special_tokens_map.json") | tok_config
    special = _special_ids(ids, token_texts, config, _json(files, "generation_config.json"), {})
    for kind, piece_id in (("unk", proto.trainer_spec.unk_id), ("bos", proto.trainer_spec.bos_id),
                           ("eos", proto.trainer_spec.eos_id), ("pad", proto.trainer_spec.pad_id)):
        if 0 <= piece_id < len(proto.pieces):
            special.setdefault(kind, piece_id)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(names)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(bool(normalizer.add_dummy_prefix))
    _write_specials(writer, special, *_hf_adds_bos_eos({}, tok_config, ids, special))
    _write_chat_template(writer, tok_config, files)


# --- GGUF -> Hugging Face ------------------------------------------------------------------------


@malformed_input("the GGUF's tokenizer keys")
def hf_tokenizer_files(kv: Mapping[str, Any]) -> dict[str, bytes]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json for a GGUF's metadata
    (`kv`: key -> plain value, arrays as lists). The same metadata always gives the same bytes."""
    kind = kv.get(K.MODEL)
    if kind not in ("gpt2", "llama"):
        raise ConversionUnsupported(f"GGUF tokenizer model {kind!r} is not converted (only gpt2 and llama)")
    tokens = [str(t) for t in kv.get(K.LIST) or []]
    if not tokens:
        raise ConversionUnsupported(f"GGUF has no {K.LIST}")
    types = [int(t) for t in kv.get(K.TOKEN_TYPE) or [gguf.TokenType.NORMAL] * len(tokens)]
    special = {k: _gguf_special_id(kv, k, len(tokens)) for k in SPECIAL_KINDS}
    if kind == "llama":
        # llama.cpp's defaults for a SentencePiece vocabulary when the keys are missing.
        special = {"bos": 1, "eos": 2, "unk": 0} | {k: v for k, v in special.items() if v is not None}
        if kv.get(K.REMOVE_EXTRA_WS):
            raise ConversionUnsupported("GGUF asks to remove extra whitespace, which is not converted")
        add_bos = bool(kv.get(K.ADD_BOS, True))
        tokenizer = _spm_tokenizer(tokens, types, _scores(kv, len(tokens)), special.get("unk"),
                                   bool(kv.get(K.ADD_PREFIX, True)))
    else:
        pre = str(kv.get(K.PRE) or "default")
        add_bos = bool(kv.get(K.ADD_BOS, pre in ADDS_BOS_BY_DEFAULT))
        tokenizer = _gpt2_tokenizer(tokens, [str(m) for m in kv.get(K.MERGES) or []], pre)
    add_eos = bool(kv.get(K.ADD_EOS, False))
    texts = {k: tokens[i] for k, i in special.items() if i is not None and 0 <= i < len(tokens)}
    if add_bos and "bos" not in texts:
        raise ConversionUnsupported("GGUF asks to add BOS but names no BOS token")
    if add_eos and "eos" not in texts:
        raise ConversionUnsupported("GGUF asks to add EOS but names no EOS token")

    _add_special_tokens(tokenizer, tokens, types)
    tokenizer.post_processor = _template(texts.get("bos") if add_bos else None,
                                         texts.get("eos") if add_eos else None, special)
    config = _tokenizer_config(kv, tokens, types, texts, add_bos, add_eos)
    special_map = {f"{k}_token": text for k, text in texts.items()}
    tokenizer_json = _tokenizer_json(tokenizer)
    source_chars = sum(len(t) + 1 for t in tokens) + sum(len(str(m)) + 1 for m in kv.get(K.MERGES) or [])
    if len(tokenizer_json) > TOKENIZER_JSON_PER_CHAR * source_chars + TOKENIZER_JSON_BASE:
        raise ConversionUnsupported(f"tokenizer.json would be {len(tokenizer_json)} bytes from a vocabulary of "
                                    f"{source_chars} characters; not converted")
    return {"tokenizer.json": tokenizer_json,
            "tokenizer_config.json": json_file(config, "tokenizer_config.json", ensure_ascii=False),
            "special_tokens_map.json": json_file(special_map, "special_tokens_map.json", ensure_ascii=False)}


def _gguf_special_id(kv: Mapping[str, Any], kind: str, n_tokens: int) -> int | None:
    value = kv.get(ID_KEYS[kind])
    return int(value) if value is not None and 0 <= int(value) < n_tokens else None


def _scores(kv: Mapping[str, Any], n: int) -> list[float]:
    scores = kv.get(K.SCORES)
    return [float(s) for s in scores] if scores is not None else [0.0] * n


def _gpt2_tokenizer(tokens: list[str], merges: list[str], pre: str) -> Tokenizer:
    vocab = {text: i for i, text in enumerate(tokens)}
    pairs = []
    for merge in merges:
        left, right = _split_merge(merge)
        # Drops the placeholder, and any merge naming a token the vocab lacks: HF refuses those
        # (llama.cpp would build a symbol that is no token and spell it out in bytes).
        if left in vocab and right in vocab and left + right in vocab:
            pairs.append((left, right))
    ignore_merges = pre in LLAMA3_IGNORE_MERGES or pre == "tekken"
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = _byte_level_pre_tokenizer(pre)
    if pre in QWEN2_PRES:
        tokenizer.normalizer = normalizers.NFC()  # as Qwen's own tokenizer.json; llama.cpp skips it
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _split_merge(merge: str) -> tuple[str, str]:
    """A GGUF merge "a b"; like llama.cpp, the separator is the first space after the first byte."""
    cut = merge.find(" ", 1)
    return (merge[:cut], merge[cut + 1:]) if cut > 0 else (merge, "")


def _byte_level_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in GPT2_PRES:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in LLAMA3_PRES:
        patterns: Sequence[str] = [LLAMA3_PATTERN]
    elif pre in QWEN2_PRES:
        patterns = [QWEN2_PATTERN]
    elif pre == "tekken":
        patterns = [TEKKEN_PATTERN]
    elif pre == "default":
        patterns = DEFAULT_PATTERNS
    else:
        raise ConversionUnsupported(f"GGUF pre-tokenizer {pre!r} is not converted")
    splits = [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in patterns]
    return pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _spm_tokenizer(tokens: list[str], types: list[int], scores: list[float], unk: int | None,
                   space_prefix: bool) -> Tokenizer:
    vocab = {text: i for i, text in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=_merges_from_scores(tokens, types, scores),
                                     unk_token=tokens[unk] if unk is not None else None,
                                     fuse_unk=True, byte_fallback=True))
    # Prepend (not Metaspace) because llama.cpp adds its space even before a leading space.
    steps: list[normalizers.Normalizer] = [normalizers.Prepend(SPACE_MARK)] if space_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE_MARK)])
    decode: list[decoders.Decoder] = [decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if space_prefix:
        decode.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode)
    return tokenizer


def _merges_from_scores(tokens: list[str], types: list[int], scores: list[float]) -> list[tuple[str, str]]:
    """The merge list HF BPE needs to do what llama.cpp's SPM tokenizer does with scores: every
    way to split a normal token into two tokens, best-scored result first.

    That is up to one merge per character of every token, each spelling the token out, so a
    hostile vocabulary ("zz", "zzz", ... a thousand z's) would ask for gigabytes. The work (the
    sum of squared token lengths) and the merges (their count and text) are bounded far above
    what SentencePiece vocabularies need, and beyond that the vocabulary is refused."""
    mergeable = {text: i for i, text in enumerate(tokens)
                 if types[i] in (gguf.TokenType.NORMAL, gguf.TokenType.USER_DEFINED)}
    work = sum(len(text) ** 2 for text in mergeable)
    if work > MAX_SPLIT_WORK:
        longest = max(mergeable, key=len)
        raise ConversionUnsupported(f"the GGUF's tokens are too long to rebuild merges from (longest {len(longest)} "
                                    f"characters; squared lengths sum to {work}, the limit is {MAX_SPLIT_WORK})")
    max_merges = MERGES_PER_TOKEN * len(mergeable) + MERGES_BASE
    max_chars = MERGE_CHARS_PER_CHAR * sum(len(text) for text in mergeable) + MERGE_CHARS_BASE
    ranked: list[tuple[float, int, int]] = []
    chars = 0
    for text, i in mergeable.items():
        for cut in range(1, len(text)):
            if text[:cut] in mergeable and text[cut:] in mergeable:
                ranked.append((-scores[i], i, cut))
                chars += len(text)
        if len(ranked) > max_merges or chars > max_chars:
            raise ConversionUnsupported(f"the GGUF's vocabulary of {len(tokens)} tokens splits into more than "
                                        f"{min(len(ranked), max_merges)} merges ({chars} characters), far more than "
                                        "a SentencePiece vocabulary makes; not converted")
    ranked.sort()
    return [(tokens[i][:cut], tokens[i][cut:]) for _, i, cut in ranked]


def _add_special_tokens(tokenizer: Tokenizer, tokens: list[str], types: list[int]) -> None:
    """Control and unknown tokens become HF special tokens, user-defined ones plain added tokens; all
    match the raw text (normalized=False), as llama.cpp matches them before splitting."""
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, t in enumerate(types) if t in SPECIAL_TYPES])
    tokenizer.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                          for i, t in enumerate(types) if t == gguf.TokenType.USER_DEFINED])


def _template(bos: str | None, eos: str | None, special: Mapping[str, int | None]) -> processors.TemplateProcessing:
    head = [bos] if bos else []
    tail = [eos] if eos else []
    pairs = [(text, special[kind]) for kind, text in (("bos", bos), ("eos", eos)) if text]
    return processors.TemplateProcessing(single=[*head, "$A", *tail],
                                         pair=[*head, "$A", *tail, *[f"{t}:1" for t in head], "$B:1",
                                               *[f"{t}:1" for t in tail]],
                                         special_tokens=sorted(set(pairs)))


def _tokenizer_config(kv: Mapping[str, Any], tokens: list[str], types: list[int], texts: Mapping[str, str],
                      add_bos: bool, add_eos: bool) -> dict[str, Any]:
    decoder = {str(i): {"content": tokens[i], "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": t in SPECIAL_TYPES}
               for i, t in enumerate(types) if t in (*SPECIAL_TYPES, gguf.TokenType.USER_DEFINED)}
    config: dict[str, Any] = {"add_bos_token": add_bos, "add_eos_token": add_eos, "added_tokens_decoder": decoder,
                              "clean_up_tokenization_spaces": False,
                              "tokenizer_class": "PreTrainedTokenizerFast"}
    config.update({f"{kind}_token": text for kind, text in texts.items()})
    context = kv.get(f"{kv.get('general.architecture')}.context_length")
    if context is not None:
        config["model_max_length"] = int(context)
    template = _gguf_chat_template(kv)
    if template is not None:
        config["chat_template"] = template
    return config


def _gguf_chat_template(kv: Mapping[str, Any]) -> str | list[dict[str, str]] | None:
    default = kv.get(K.CHAT_TEMPLATE)
    names = sorted(str(n) for n in kv.get(K.CHAT_TEMPLATES) or [])
    named = [{"name": n, "template": str(kv[K.CHAT_TEMPLATE_N.format(name=n)])}
             for n in names if K.CHAT_TEMPLATE_N.format(name=n) in kv]
    if not named:
        return str(default) if default is not None else None
    head = [{"name": "default", "template": str(default)}] if default is not None else []
    return head + named


def _tokenizer_json(tokenizer: Tokenizer) -> bytes:
    # tokenizers writes the vocab in id order and merges in rank order: already deterministic.
    return (tokenizer.to_str(pretty=True) + "\n").encode("utf-8")

