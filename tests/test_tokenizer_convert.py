"""Tokenizers HF -> GGUF -> HF: the GGUF keys as llama.cpp's converter writes them, and the rebuilt
tokenizer.json encoding exactly as the original did (and as llama.cpp does, in a child process,
because llama.cpp aborts the whole process on a bad file)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from modelstore.converters.errors import ConversionUnsupported
from modelstore.converters.tokenizer import (
    LLAMA3_PATTERN,
    PLACEHOLDER_MERGE,
    QWEN2_PATTERN,
    TEKKEN_PATTERN,
    hf_tokenizer_files,
    write_gguf_tokenizer,
)
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from modelstore.converters.synth import write_hf_model
from tests.test_runtimes import require, run_child

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "  two leading spaces", " one",
         "tabs\tand\nnew lines\n\n", "héllo wörld ünïcödé", "emoji 😀👍🏽 end", "numbers 12345 and 3.14",
         "don't stop, it's fine", "trailing space ", ""]
CORPUS = ["hello world, the quick brown fox jumps over the lazy dog", "don't stop: numbers 12345 and 3.14",
          "héllo wörld", "new lines\n\nand\ttabs"] * 20
SPECIALS = ["<|start|>", "<|end|>"]
SPM = "\u2581"

LLAMA_CPP_TOKENIZE = r"""
import json, sys, llama_cpp
model = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False)
texts = json.loads(sys.argv[2])
print(json.dumps([model.tokenize(t.encode(), add_bos=True, special=False) for t in texts]))
"""


# --- building tokenizers and GGUFs ---------------------------------------------------------------


def byte_level_bpe(style: str) -> Tokenizer:
    """A trained byte-level BPE with two special tokens and one user token, pre-tokenized the way
    GPT-2 ("gpt2"), Llama 3 ("llama3"), Qwen2 ("qwen2") or Mistral Nemo ("tekken") tokenizer.json
    files are."""
    tok = Tokenizer(models.BPE(ignore_merges=style in ("llama3", "tekken")))
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        pattern = {"llama3": LLAMA3_PATTERN, "qwen2": QWEN2_PATTERN, "tekken": TEKKEN_PATTERN}[style]
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False)])
    if style in ("llama3", "tekken"):
        start = tok.token_to_id("<|start|>")
        tok.post_processor = processors.TemplateProcessing(single="<|start|> $A", pair="<|start|> $A <|start|>:1 $B:1",
                                                           special_tokens=[("<|start|>", start)])
    return tok


def bytes_only_bpe() -> Tokenizer:
    """The 256 byte-level characters and no merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


SPM_PIECES = [SPM + "t", "he", SPM + "the", SPM + "w", "or", SPM + "wor", "ld", SPM + "world", "ll", SPM + "he",
              SPM + "hell", SPM + "hello", "er", "ov", SPM + "ov", SPM + "over", SPM + "d", "og", SPM + "dog", "in",
              SPM + "f", SPM + "fin", SPM + "fine", SPM + SPM, SPM + SPM + SPM, "ck", "ui", SPM + "q", SPM + "qui",
              SPM + "quick", "ps", SPM + "j", SPM + "ju", SPM + "jum", SPM + "jumps", "az", SPM + "l", SPM + "laz",
              SPM + "lazy", "s" + SPM]


def spm_bpe() -> Tokenizer:
    """A Llama-2-style tokenizer.json: BPE with byte fallback, <0x00>..<0xFF>, "▁" for spaces, BOS
    added by the post-processor. Its merges are every split of every piece into two tokens, ranked
    by piece, as HF derives them from a SentencePiece model (so llama.cpp's score-driven merging
    can agree)."""
    chars = sorted(set(SPM + "abcdefghijklmnopqrstuvwxyzT.,'"))
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + chars + SPM_PIECES
    vocab = {t: i for i, t in enumerate(tokens)}
    mergeable = set(chars) | set(SPM_PIECES)
    merges = [(p[:cut], p[cut:]) for p in SPM_PIECES for cut in range(1, len(p))
              if p[:cut] in mergeable and p[cut:] in mergeable]
    assert {a + b for a, b in merges} == set(SPM_PIECES), "every piece is reachable by a merge"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPM), normalizers.Replace(" ", SPM)])
    tok.decoder = decoders.Sequence([decoders.Replace(SPM, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    return tok


def as_files(tok: Tokenizer, **extra: object) -> dict[str, bytes]:
    files = {"tokenizer.json": tok.to_str().encode()}
    for name, value in extra.items():
        files[name.replace("__", ".")] = value if isinstance(value, bytes) else json.dumps(value).encode()
    return files


def write_vocab_gguf(path: Path, files: dict[str, bytes], arch: str = "llama") -> dict[str, object]:
    """A GGUF with hyperparameters and the tokenizer only (llama.cpp loads it with vocab_only=True);
    returns its metadata as plain values, read back with gguf's own reader."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-5)
    write_gguf_tokenizer(writer, files, arch)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return read_kv(path)


def read_kv(path: Path) -> dict[str, object]:
    return {f.name: f.contents() for f in gguf.GGUFReader(str(path)).fields.values()}


def hf_folder(folder: Path, kv: dict[str, object]) -> Path:
    folder.mkdir()
    for name, data in hf_tokenizer_files(kv).items():
        (folder / name).write_bytes(data)
    return folder


def assert_hf_matches(folder: Path, original: Tokenizer, texts: list[str] = TEXTS) -> list[list[int]]:
    require("transformers")
    from transformers import AutoTokenizer

    rebuilt = AutoTokenizer.from_pretrained(str(folder))
    got = [rebuilt(t)["input_ids"] for t in texts]
    assert got == [original.encode(t).ids for t in texts]
    assert [rebuilt.decode(ids, skip_special_tokens=True) for ids in got] == texts
    return got


def llama_cpp_ids(path: Path, texts: list[str] = TEXTS) -> list[list[int]]:
    require("llama_cpp")
    out = run_child(LLAMA_CPP_TOKENIZE, str(path), json.dumps(texts))
    assert isinstance(out, list)
    return out


# --- byte-level BPE ------------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "arch", "pre", "adds_bos"), [("gpt2", "llama", "gpt-2", False),
                                                               ("llama3", "llama", "llama-bpe", True),
                                                               ("qwen2", "qwen2", "qwen2", False),
                                                               ("tekken", "llama", "tekken", True)])
def test_byte_level_bpe_round_trip(tmp_path: Path, style: str, arch: str, pre: str, adds_bos: bool) -> None:
    original = byte_level_bpe(style)
    spec = json.loads(original.to_str())
    n_trained = len(spec["model"]["vocab"])
    config = {"vocab_size": n_trained + 3 + 4, "bos_token_id": n_trained, "eos_token_id": [n_trained + 1, 7]}
    kv = write_vocab_gguf(tmp_path / "m.gguf", as_files(original, config__json=config), arch)

    n_vocab = n_trained + 3 + 4
    assert kv["tokenizer.ggml.model"] == "gpt2"
    assert kv["tokenizer.ggml.pre"] == pre
    expected_tokens = [original.id_to_token(i) for i in range(n_trained + 3)]
    assert kv["tokenizer.ggml.tokens"] == expected_tokens + [f"[PAD{i}]" for i in range(n_trained + 3, n_vocab)]
    assert kv["tokenizer.ggml.token_type"] == [1] * n_trained + [3, 3, 4] + [5] * 4
    assert kv["tokenizer.ggml.merges"] == [f"{a} {b}" for a, b in spec["model"]["merges"]]
    assert len(kv["tokenizer.ggml.merges"]) > 50
    assert kv["tokenizer.ggml.bos_token_id"] == n_trained
    assert kv["tokenizer.ggml.eos_token_id"] == n_trained + 1
    assert kv.get("tokenizer.ggml.add_bos_token") == (True if adds_bos else None)

    hf_ids = assert_hf_matches(hf_folder(tmp_path / "hf", kv), original, [*TEXTS, "a <think> b"])
    assert [ids[:1] == [n_trained] for ids in hf_ids] == [adds_bos] * len(hf_ids)
    assert llama_cpp_ids(tmp_path / "m.gguf", [*TEXTS, "a <think> b"]) == hf_ids


def test_bytes_only_vocab_gets_a_merge_that_never_fires(tmp_path: Path) -> None:
    original = bytes_only_bpe()
    kv = write_vocab_gguf(tmp_path / "m.gguf", as_files(original))

    assert kv["tokenizer.ggml.merges"] == [PLACEHOLDER_MERGE]
    assert kv["tokenizer.ggml.tokens"] == [original.id_to_token(i) for i in range(256)]
    assert kv["tokenizer.ggml.pre"] == "gpt-2"
    assert "tokenizer.ggml.add_bos_token" not in kv
    files = hf_tokenizer_files(kv)
    assert json.loads(files["tokenizer.json"])["model"]["merges"] == []

    hf_ids = assert_hf_matches(hf_folder(tmp_path / "hf", kv), original)
    assert [len(ids) for ids in hf_ids] == [len(t.encode()) for t in TEXTS]
    assert llama_cpp_ids(tmp_path / "m.gguf") == hf_ids


def test_default_pre_tokenizer_matches_llama_cpp(tmp_path: Path) -> None:
    """A split regex llama.cpp has no name for becomes pre "default"; the rebuilt HF tokenizer then
    splits with llama.cpp's default regex chain, so both agree (the original, of course, does not)."""
    original = byte_level_bpe("gpt2")
    original.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    kv = write_vocab_gguf(tmp_path / "m.gguf", as_files(original))
    assert kv["tokenizer.ggml.pre"] == "default"
    require("transformers")
    from transformers import AutoTokenizer

    texts = [*TEXTS, "a+b=c <x> $5 ~|^", "price: 1234567 dollars!!", "what's up?"]
    rebuilt = AutoTokenizer.from_pretrained(str(hf_folder(tmp_path / "hf", kv)))
    assert llama_cpp_ids(tmp_path / "m.gguf", texts) == [rebuilt(t)["input_ids"] for t in texts]


# --- SentencePiece-style BPE ---------------------------------------------------------------------


def test_sentencepiece_style_bpe_round_trip(tmp_path: Path) -> None:
    original = spm_bpe()
    tok_config = {"bos_token": "<s>", "eos_token": {"content": "</s>", "special": True}, "unk_token": "<unk>",
                  "add_bos_token": True, "add_eos_token": False}
    kv = write_vocab_gguf(tmp_path / "m.gguf", as_files(original, tokenizer_config__json=tok_config))

    n = original.get_vocab_size()
    assert kv["tokenizer.ggml.model"] == "llama"
    assert "tokenizer.ggml.merges" not in kv and "tokenizer.ggml.pre" not in kv
    assert kv["tokenizer.ggml.tokens"] == [original.id_to_token(i) for i in range(n)]
    assert kv["tokenizer.ggml.token_type"] == [2, 3, 3] + [6] * 256 + [1] * (n - 259)
    assert (kv["tokenizer.ggml.unknown_token_id"], kv["tokenizer.ggml.bos_token_id"],
            kv["tokenizer.ggml.eos_token_id"]) == (0, 1, 2)
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is False
    assert kv["tokenizer.ggml.add_space_prefix"] is True
    scores = kv["tokenizer.ggml.scores"]
    assert scores[:259] == [0.0] * 259
    piece_scores = [scores[original.token_to_id(p)] for p in SPM_PIECES]
    assert piece_scores == sorted(piece_scores, reverse=True), "pieces merged first score highest"

    hf_ids = assert_hf_matches(hf_folder(tmp_path / "hf", kv), original)
    assert all(ids[0] == 1 for ids in hf_ids)
    assert hf_ids[0] == [1, original.token_to_id(SPM + "hello"), original.token_to_id(SPM + "world")]
    assert llama_cpp_ids(tmp_path / "m.gguf") == hf_ids


def test_sentencepiece_bos_default_follows_llama_cpp(tmp_path: Path) -> None:
    """A llama GGUF without add_bos_token: llama.cpp adds BOS, so the HF tokenizer must too."""
    kv = write_vocab_gguf(tmp_path / "m.gguf", as_files(spm_bpe()))
    kv.pop("tokenizer.ggml.add_bos_token", None)
    config = json.loads(hf_tokenizer_files(kv)["tokenizer_config.json"])
    assert config["add_bos_token"] is True
    assert assert_hf_matches(hf_folder(tmp_path / "hf", kv), spm_bpe(), ["hello"]) == [[1, spm_bpe().token_to_id(SPM + "hello")]]


# --- special ids, flags, templates ---------------------------------------------------------------


def test_special_ids_fall_back_to_config_and_generation_config(tmp_path: Path) -> None:
    original = byte_level_bpe("qwen2")
    n = len(json.loads(original.to_str())["model"]["vocab"])
    files = as_files(original, config__json={"bos_token_id": n, "pad_token_id": None},
                     generation_config__json={"eos_token_id": [n + 1, n]},
                     tokenizer_config__json={"pad_token": "<|end|>", "add_eos_token": True})
    files["chat_template.jinja"] = b"{% for m in messages %}{{ m.content }}{% endfor %}"
    kv = write_vocab_gguf(tmp_path / "m.gguf", files, "qwen2")

    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"],
            kv["tokenizer.ggml.padding_token_id"]) == (n, n + 1, n + 1)
    assert kv["tokenizer.ggml.add_eos_token"] is True
    assert kv["tokenizer.chat_template"] == files["chat_template.jinja"].decode()
    hf = hf_tokenizer_files(kv)
    config = json.loads(hf["tokenizer_config.json"])
    assert config["chat_template"] == files["chat_template.jinja"].decode()
    assert (config["bos_token"], config["eos_token"], config["model_max_length"]) == ("<|start|>", "<|end|>", 256)
    assert json.loads(hf["special_tokens_map.json"])["pad_token"] == "<|end|>"
    ids = assert_hf_matches(hf_folder(tmp_path / "hf", kv), original_with_eos(original, n + 1), ["hello"])
    assert ids[0][-1] == n + 1


def original_with_eos(tok: Tokenizer, eos: int) -> Tokenizer:
    copy = Tokenizer.from_str(tok.to_str())
    copy.post_processor = processors.TemplateProcessing(single="$A <|end|>", pair="$A <|end|> $B:1 <|end|>:1",
                                                        special_tokens=[("<|end|>", eos)])
    return copy


def test_named_chat_templates_survive_the_round_trip(tmp_path: Path) -> None:
    templates = [{"name": "default", "template": "{{ a }}"}, {"name": "tool_use", "template": "{{ b }}"}]
    kv = write_vocab_gguf(tmp_path / "m.gguf", as_files(bytes_only_bpe(), tokenizer_config__json={"chat_template": templates}))
    assert kv["tokenizer.chat_template"] == "{{ a }}"
    assert kv["tokenizer.chat_template.tool_use"] == "{{ b }}"
    assert json.loads(hf_tokenizer_files(kv)["tokenizer_config.json"])["chat_template"] == templates


# --- determinism and refusals --------------------------------------------------------------------


def test_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    files = as_files(byte_level_bpe("llama3"), tokenizer_config__json={"chat_template": "{{ x }}"})
    first = write_vocab_gguf(tmp_path / "a.gguf", files)
    write_vocab_gguf(tmp_path / "b.gguf", files)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    out = hf_tokenizer_files(first)
    assert out == hf_tokenizer_files(read_kv(tmp_path / "b.gguf"))
    assert all(data.endswith(b"}\n") for data in out.values())
    config = out["tokenizer_config.json"].decode()
    assert config == json.dumps(json.loads(config), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(("model", "word"), [(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"), "WordPiece"),
                                             (models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0), "Unigram")])
def test_other_tokenizer_models_are_refused(tmp_path: Path, model: models.Model, word: str) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    with pytest.raises(ConversionUnsupported, match=word):
        write_gguf_tokenizer(writer, {"tokenizer.json": Tokenizer(model).to_str().encode()}, "llama")


def test_plain_bpe_without_byte_handling_is_refused(tmp_path: Path) -> None:
    tok = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    with pytest.raises(ConversionUnsupported, match="neither byte-level nor SentencePiece"):
        write_gguf_tokenizer(writer, {"tokenizer.json": tok.to_str().encode()}, "llama")


@pytest.mark.parametrize(("kv", "word"), [({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, "bert"),
                                          ({"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": ["a"]}, "t5"),
                                          ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"],
                                            "tokenizer.ggml.pre": "deepseek-coder"}, "deepseek-coder")])
def test_other_gguf_vocabularies_are_refused(kv: dict[str, object], word: str) -> None:
    with pytest.raises(ConversionUnsupported, match=word):
        hf_tokenizer_files(kv)


# --- tokenizer.model only (a SentencePiece model file, no tokenizer.json) -------------------------


def train_sentencepiece(folder: Path, model_type: str = "bpe", normalization: str = "identity") -> Path:
    """A real SentencePiece model, trained here the way Llama 2's was set up: BPE, byte fallback,
    a dummy prefix, no normalization and whitespace kept as it is."""
    require("sentencepiece")
    import sentencepiece as spm

    folder.mkdir(exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")  # not TEXTS: their emoji and accents must fall back to bytes
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "sp"), model_type=model_type, vocab_size=340,
        hard_vocab_limit=False,
        byte_fallback=True, normalization_rule_name=normalization, add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return folder / "sp.model"


def test_tokenizer_model_only_repo_tokenizes_as_sentencepiece(tmp_path: Path) -> None:
    """A repo with tokenizer.model and no tokenizer.json: the GGUF holds SentencePiece's own pieces,
    scores and types, and llama.cpp tokenizes every text as SentencePiece does (after BOS)."""
    import sentencepiece as spm

    model_file = train_sentencepiece(tmp_path / "sp")
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    n = sp.vocab_size()
    files = {"tokenizer.model": model_file.read_bytes(),
             "tokenizer_config.json": json.dumps({"add_bos_token": True, "add_eos_token": False,
                                                  "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                                  "chat_template": "{{ bos_token }}{{ messages[0]['content'] }}"}).encode(),
             "added_tokens.json": json.dumps({"<|tool|>": n}).encode(),
             "config.json": json.dumps({"vocab_size": n + 3}).encode()}
    kv = write_vocab_gguf(tmp_path / "m.gguf", files)

    assert kv["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.merges" not in kv
    pieces = [sp.id_to_piece(i) for i in range(n)]
    assert kv["tokenizer.ggml.tokens"] == pieces + ["<|tool|>", f"[PAD{n + 1}]", f"[PAD{n + 2}]"]
    assert kv["tokenizer.ggml.scores"][:n] == pytest.approx([sp.get_score(i) for i in range(n)])
    types = kv["tokenizer.ggml.token_type"]
    assert types[:3] == [2, 3, 3] and types[n:] == [4, 5, 5]
    assert [i for i in range(n) if types[i] == 6] == [i for i in range(n) if sp.is_byte(i)] and sp.is_byte(3)
    assert (kv["tokenizer.ggml.unknown_token_id"], kv["tokenizer.ggml.bos_token_id"],
            kv["tokenizer.ggml.eos_token_id"]) == (0, 1, 2)
    assert kv["tokenizer.ggml.add_space_prefix"] is True and kv["tokenizer.ggml.add_bos_token"] is True
    assert kv["tokenizer.chat_template"] == "{{ bos_token }}{{ messages[0]['content'] }}"

    expected = [[1] + sp.encode(t) for t in TEXTS]
    assert any(sp.is_byte(i) for ids in expected for i in ids), "the texts exercise byte fallback"
    assert llama_cpp_ids(tmp_path / "m.gguf") == expected
    # and back: the GGUF's vocabulary rebuilt as a tokenizer.json encodes the same
    require("transformers")
    from transformers import AutoTokenizer

    rebuilt = AutoTokenizer.from_pretrained(str(hf_folder(tmp_path / "hf", kv)))
    assert [rebuilt(t)["input_ids"] for t in TEXTS] == expected


@pytest.mark.parametrize(("kind", "normalization", "word"), [("unigram", "identity", "UNIGRAM"),
                                                             ("bpe", "nmt_nfkc", "normalizes")])
def test_sentencepiece_models_llama_cpp_would_read_differently_are_refused(
        tmp_path: Path, kind: str, normalization: str, word: str) -> None:
    model_file = train_sentencepiece(tmp_path / "sp", kind, normalization)
    with pytest.raises(ConversionUnsupported, match=word):
        write_vocab_gguf(tmp_path / "m.gguf", {"tokenizer.model": model_file.read_bytes()})


def test_a_damaged_tokenizer_model_is_refused(tmp_path: Path) -> None:
    require("sentencepiece")
    with pytest.raises(ConversionUnsupported, match="tokenizer.model"):
        write_vocab_gguf(tmp_path / "m.gguf", {"tokenizer.model": b"\x0a\xff\xff\xff\xff\x0f garbage"})


LLAMA_CPP_LOAD_AND_TOKENIZE = r"""
import json, sys, llama_cpp
model = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False)
texts = json.loads(sys.argv[2])
ids = [model.tokenize(t.encode(), add_bos=True, special=False) for t in texts]
model.eval(ids[1])
print(json.dumps({"ids": ids, "n_vocab": model.n_vocab(), "logits": len(model.scores[model.n_tokens - 1])}))
"""


def test_a_tokenizer_model_only_repo_shows_up_as_a_gguf_llama_cpp_loads(cli, home: Path, models: Path,
                                                                         tmp_path: Path) -> None:
    """Through `add` and the mount: the repo's GGUF rendition loads in llama.cpp, weights and all,
    and tokenizes as its tokenizer.model does."""
    require("llama_cpp")
    import sentencepiece as spm

    from tests.mounting import mounted, requires_fuse

    requires_fuse()
    folder = write_hf_model(models / "spm-llama", vocab=384)
    (folder / "tokenizer.json").unlink()
    model_file = train_sentencepiece(tmp_path / "sp")
    (folder / "tokenizer.model").write_bytes(model_file.read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "bos_token": "<s>",
                                                              "eos_token": "</s>", "unk_token": "<unk>"}))
    assert cli("add", str(folder), "--name", "spm-llama").code == 0
    shown = cli("show", "spm-llama", "--json")
    llamacpp = next(v for v in json.loads(shown.out)["views"] if v["view"] == "llamacpp")
    assert llamacpp["paths"] == ["llamacpp/spm-llama.gguf"] and "GGUF F16" in llamacpp["converted"], shown.out
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    with mounted(home, tmp_path / "mnt") as m:
        out = run_child(LLAMA_CPP_LOAD_AND_TOKENIZE, str(m.path / "llamacpp" / "spm-llama.gguf"), json.dumps(TEXTS))
    assert out["ids"] == [[1] + sp.encode(t) for t in TEXTS]
    assert out["n_vocab"] == 384 and out["logits"] == 384


def test_added_tokens_stay_inside_the_config_vocab_size_as_llama_cpp_converter_keeps_them(tmp_path: Path) -> None:
    """Llama-2 fine-tunes often add "<pad>" at id 32000 with vocab_size 32000: llama.cpp's converter
    leaves it out (the embedding has no such row). Hostile ids are left out too, never grown to."""
    model_file = train_sentencepiece(tmp_path / "sp")
    import sentencepiece as spm

    n = spm.SentencePieceProcessor(model_file=str(model_file)).vocab_size()
    files = {"tokenizer.model": model_file.read_bytes(),
             "config.json": json.dumps({"vocab_size": n + 2}).encode(),
             "added_tokens.json": json.dumps({"<pad>": n + 2, "<neg>": -1, "<huge>": 30_000_000, "<bool>": True,
                                              "<tool>": n}).encode(),
             "tokenizer_config.json": json.dumps({"added_tokens_decoder": {
                 "\u00b2": {"content": "<sup>", "special": True},  # isdigit() but no int
                 str(n + 1): {"content": "\u2581user", "special": False},
                 "2": {"content": "</s>", "special": True}}}).encode()}
    kv = write_vocab_gguf(tmp_path / "m.gguf", files)
    tokens, types, scores = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"], kv["tokenizer.ggml.scores"]
    assert len(tokens) == len(types) == len(scores) == n + 2
    assert tokens[n:] == ["<tool>", " user"] and types[n:] == [4, 4]  # user-defined "▁" pre-normalized
    assert tokens[2] == "</s>" and types[2] == 3 and scores[2] == -1000.0
    assert not {"<pad>", "<neg>", "<huge>", "<bool>", "<sup>"} & set(tokens)
    # and the same rule on the tokenizer.json path
    tok = spm_bpe()
    json_files = as_files(tok, config__json={"vocab_size": tok.get_vocab_size()})
    raw = json.loads(json_files["tokenizer.json"])
    raw["added_tokens"].append({"id": tok.get_vocab_size(), "content": "<pad>", "special": True, "single_word": False,
                                "lstrip": False, "rstrip": False, "normalized": False})
    json_files["tokenizer.json"] = json.dumps(raw).encode()
    kv = write_vocab_gguf(tmp_path / "j.gguf", json_files)
    assert len(kv["tokenizer.ggml.tokens"]) == tok.get_vocab_size() and "<pad>" not in kv["tokenizer.ggml.tokens"]


def _z_vocab_kv(longest: int, **tokens_extra: object) -> dict[str, object]:
    from modelstore.converters.synth import LLAMA_VOCAB

    tokens = list(dict.fromkeys([*LLAMA_VOCAB, *("z" * k for k in range(2, longest + 1))]))
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259),
            "tokenizer.ggml.scores": [0.0] * len(tokens), **tokens_extra}


@pytest.mark.parametrize("longest", [600, 1200])
def test_a_vocabulary_whose_merges_explode_is_refused_in_flat_memory(longest: int) -> None:
    """"zz", "zzz", ... each split every way into two tokens: before the bound, 600 z's took 1.1 s,
    443 MB and made a 79 MB tokenizer.json from 180 KB of tokens (1200: 3.4 GB, 577 MiB)."""
    import time
    import tracemalloc

    kv = _z_vocab_kv(longest)
    start = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(ConversionUnsupported, match="merges|too long"):
            hf_tokenizer_files(kv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20 and time.monotonic() - start < 5, (peak, time.monotonic() - start)


def test_long_tokens_no_merge_makes_are_refused_before_splitting_them() -> None:
    """Trying every split of every token costs the sum of squared token lengths, even when no split
    is a merge: 60 tokens of 3000 characters cost 540M character copies."""
    kv = _z_vocab_kv(2)
    tokens = kv["tokenizer.ggml.tokens"] + [f"{i:03d}" + "y" * 2997 for i in range(60)]
    kv |= {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": kv["tokenizer.ggml.token_type"] + [1] * 60,
           "tokenizer.ggml.scores": [0.0] * len(tokens)}
    with pytest.raises(ConversionUnsupported, match="too long"):
        hf_tokenizer_files(kv)


def test_a_short_z_ladder_still_converts_with_every_merge() -> None:
    """The bounds leave ordinary vocabularies alone: a short ladder gets all its merges."""
    out = json.loads(hf_tokenizer_files(_z_vocab_kv(20))["tokenizer.json"])
    merges = {tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in out["model"]["merges"]}
    assert ("zzzzzzzzzz", "zzzzzzzzzz") in merges and len([m for m in merges if m[0].startswith("z")]) >= 18 * 19 // 2


@pytest.mark.parametrize("vocab_size", [1_000_000, 385, 383])
def test_config_vocab_size_must_be_the_embedding_rows(store, tmp_path: Path, vocab_size: int) -> None:
    """llama.cpp loads a GGUF only when it names one token per embedding row; a vocab_size that
    disagrees was padded with "[PAD<id>]" tokens (10M of them: 228 MiB of header, 45 s, 1.5 GB)."""
    from modelstore.converters.planner import plan_conversions
    from modelstore.store.sources.local import add_local

    folder = write_hf_model(tmp_path / "m", vocab=384)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"vocab_size": vocab_size}))
    add_local(store, folder, name="m")
    result = plan_conversions(store, "m", "F16")
    assert "gguf" in result.unsupported and "vocab_size" in result.unsupported["gguf"], result.unsupported
    assert "embedding's 384 rows" in result.unsupported["gguf"]


def test_without_vocab_size_the_gguf_names_one_token_per_embedding_row(tmp_path: Path) -> None:
    tok = spm_bpe()
    n = tok.get_vocab_size()
    writer = gguf.GGUFWriter(None, "llama")
    write_gguf_tokenizer(writer, as_files(tok), "llama", n + 5)
    tokens = writer.kv_data[0]["tokenizer.ggml.tokens"].value
    assert len(tokens) == n + 5 and tokens[-1] == f"[PAD{n + 4}]"
    with pytest.raises(ConversionUnsupported, match="vocab_size"):
        write_gguf_tokenizer(gguf.GGUFWriter(None, "llama"), as_files(tok, config__json={"vocab_size": n}), "llama", n + 5)
    with pytest.raises(ConversionUnsupported, match="names only"):  # no embedding known, a hostile vocab_size
        write_gguf_tokenizer(gguf.GGUFWriter(None, "llama"), as_files(tok, config__json={"vocab_size": 10**7}), "llama")
