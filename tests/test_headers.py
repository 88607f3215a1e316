"""Truncated, lying and hostile GGUF and safetensors headers: a one-line error naming the file
and the problem, no huge allocation, nothing committed."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from modelstore.converters.synth import write_tiny_llama_gguf
from modelstore.store import Store
from modelstore.store.errors import BadModelFile
from modelstore.store.tensors import read_weights_header
from tests.ggufbytes import ARRAY, STRING, UINT32, GGUFBytes, gguf_str, valid_gguf


def parse(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    read_weights_header(path)


def problem_of(tmp_path: Path, data: bytes, name: str = "bad.gguf") -> str:
    path = tmp_path / name
    with pytest.raises(BadModelFile) as info:
        parse(path, data)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return info.value.problem


def test_valid_builder_parses(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    path.write_bytes(valid_gguf().build())
    header = read_weights_header(path)
    assert header is not None and [t.name for t in header.tensors] == ["t0", "t1"]
    assert header.tensors[1].offset - header.tensors[0].offset == 4096


def test_real_writer_output_parses_like_gguf_reader(tmp_path: Path) -> None:
    import gguf

    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    ours = read_weights_header(path)
    theirs = gguf.GGUFReader(path)
    assert ours is not None
    assert [(t.name, t.offset, t.length) for t in ours.tensors] == \
        [(t.name, int(t.data_offset), int(t.n_bytes)) for t in theirs.tensors]
    assert ours.metadata["general.architecture"] == "llama"
    assert ours.metadata["tokenizer.ggml.tokens"] == {"array": "STRING", "count": 317}


@pytest.mark.parametrize("cut", [0, 3, 7, 20, 30, 60, 100, 150, 400, 5000])
def test_truncated_gguf(tmp_path: Path, cut: int) -> None:
    data = valid_gguf().build()
    assert cut < len(data)
    problem = problem_of(tmp_path, data[:cut])
    assert any(w in problem for w in ("truncated", "empty", "not a GGUF", "outside", "more than")), problem


def test_not_gguf_magic(tmp_path: Path) -> None:
    assert "magic" in problem_of(tmp_path, b"GGML" + b"\0" * 100)


def test_unsupported_version(tmp_path: Path) -> None:
    g = valid_gguf()
    g.version = 1
    assert "version 1" in problem_of(tmp_path, g.build())


def test_absurd_counts_fail_fast_without_allocating(tmp_path: Path) -> None:
    cases = []
    g = valid_gguf()
    g.tensor_count = 2**60
    cases.append((g.build(), "tensors"))
    g = valid_gguf()
    g.kv_count = 2**62
    cases.append((g.build(), "metadata keys"))
    g = valid_gguf().add_raw_kv(gguf_str("k") + struct.pack("<I", STRING) + struct.pack("<Q", 2**62))
    cases.append((g.build(), "needs"))
    g = valid_gguf().add_raw_kv(gguf_str("k") + struct.pack("<IIQ", ARRAY, UINT32, 2**61))
    cases.append((g.build(), "array"))
    g = valid_gguf().add_raw_kv(gguf_str("k") + struct.pack("<IIQ", ARRAY, STRING, 2**40))
    cases.append((g.build(), "strings"))
    g = valid_gguf()
    g.tensors[0].shape = (2**40, 2**20)
    cases.append((g.build(), "claims"))
    tracemalloc.start()
    try:
        for data, word in cases:
            assert word in problem_of(tmp_path, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"parsing hostile headers allocated {peak} bytes"


def test_tensor_past_end_of_file(tmp_path: Path) -> None:
    data = valid_gguf().build()
    assert "outside the data section" in problem_of(tmp_path, data[:-100])


def test_overlapping_tensors(tmp_path: Path) -> None:
    g = valid_gguf()
    g.tensors[1].offset = 2048  # half inside t0
    g.tensors[1].data = g.tensors[1].data  # still 4096 bytes long
    assert "overlap" in problem_of(tmp_path, g.build())


@pytest.mark.parametrize("mutate,word", [
    (lambda g: setattr(g.tensors[0], "shape", (1, 1, 1, 1, 1024)), "dimensions"),
    (lambda g: setattr(g.tensors[0], "ggml_type", 9999), "unknown ggml type"),
    (lambda g: setattr(g.tensors[1], "offset", 4100), "not aligned"),
    (lambda g: setattr(g.tensors[1], "name", "t0"), "appears twice"),
    (lambda g: setattr(g.tensors[0], "name", "x" * 5000), "at most"),
    (lambda g: setattr(g.tensors[0], "ggml_type", 8), "block size"),  # Q8_0 with 1024 elems is fine...
])
def test_lying_tensor_infos(tmp_path: Path, mutate, word: str) -> None:
    g = valid_gguf()
    mutate(g)
    if word == "block size":
        g.tensors[0].shape = (1000,)  # ...but 1000 is not a multiple of 32
    assert word in problem_of(tmp_path, g.build())


def test_unknown_value_type_and_duplicate_key(tmp_path: Path) -> None:
    g = valid_gguf().add_raw_kv(gguf_str("k") + struct.pack("<I", 77))
    assert "unknown value type" in problem_of(tmp_path, g.build())
    g = valid_gguf().add_string("general.architecture", "again")
    assert "appears twice" in problem_of(tmp_path, g.build())


def test_bad_alignment(tmp_path: Path) -> None:
    g = valid_gguf().add_raw_kv(gguf_str("general.alignment") + struct.pack("<II", UINT32, 24))
    assert "power of two" in problem_of(tmp_path, g.build())


def test_invalid_utf8_name(tmp_path: Path) -> None:
    g = GGUFBytes()
    g.kv.append(gguf_str(b"\xff\xfe") + struct.pack("<I", STRING) + gguf_str("x"))
    assert "UTF-8" in problem_of(tmp_path, g.build())


# -- safetensors ---------------------------------------------------------------------------------


def st_bytes(header: object, data: bytes, *, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def st_problem(tmp_path: Path, data: bytes) -> str:
    return problem_of(tmp_path, data, "bad.safetensors")


GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]}}


def test_valid_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(st_bytes({"__metadata__": {"format": "pt"}, **GOOD}, bytes(24)))
    header = read_weights_header(path)
    assert header is not None and header.metadata == {"format": "pt"}
    assert [(t.name, t.length) for t in header.tensors] == [("a", 16), ("b", 8)]


@pytest.mark.parametrize("data,word", [
    (b"\x01\x02", "truncated"),
    (struct.pack("<Q", 10**12) + b"{}", "at most"),
    (struct.pack("<Q", 1000) + b"{}", "truncated"),
    (st_bytes(["not", "an", "object"], b""), "not a JSON object"),
    (struct.pack("<Q", 8) + b"{bad json", "not valid JSON"),
    (struct.pack("<Q", 22) + b'{"a":1,"a":2}' + b" " * 9, "appears twice"),
    (st_bytes({"a": {**GOOD["a"], "dtype": "F33"}}, bytes(16)), "unknown dtype"),
    (st_bytes({"a": {**GOOD["a"], "shape": [3, 3]}}, bytes(16)), "do not hold"),
    (st_bytes({"a": {**GOOD["a"], "shape": [-1]}}, bytes(16)), "shape"),
    (st_bytes({"a": {**GOOD["a"], "data_offsets": [16, 0]}}, bytes(16)), "data_offsets"),
    (st_bytes({"a": {**GOOD["a"], "data_offsets": [0, 2**62]}, }, bytes(16)), "do not hold"),
    (st_bytes(GOOD, bytes(20)), "outside"),
    (st_bytes(GOOD, bytes(30)), "ends at byte"),
    (st_bytes({"a": GOOD["a"], "b": {**GOOD["b"], "data_offsets": [8, 16]}}, bytes(24)), "overlap"),
    (st_bytes({"a": GOOD["a"], "b": {**GOOD["b"], "data_offsets": [20, 28]}}, bytes(28)), "does not start"),
    (st_bytes({"__metadata__": {"x": 1}, **GOOD}, bytes(24)), "__metadata__"),
])
def test_hostile_safetensors(tmp_path: Path, data: bytes, word: str) -> None:
    assert word in st_problem(tmp_path, data)


def test_cli_refuses_bad_file_and_commits_nothing(cli, home: Path, models: Path) -> None:
    good = write_tiny_llama_gguf(models / "good.gguf")
    bad_folder = models / "folder"
    bad_folder.mkdir()
    (bad_folder / "a.gguf").write_bytes(good.read_bytes())
    (bad_folder / "b.gguf").write_bytes(good.read_bytes()[:-1000])
    for target in (bad_folder, bad_folder / "b.gguf"):
        r = cli("add", target)
        assert r.code == 4
        assert r.err.count("\n") == 1 and "Traceback" not in r.err
        assert "b.gguf" in r.err and "outside the data section" in r.err
    assert cli("ls", "--json").json() == []
    with Store(home, create=False) as store, store.catalog.read() as r:
        assert list(r.blobs()) == [] and list(r.files()) == [] and list(r.tensors()) == []
    assert list((home / "tmp").iterdir()) == []


def test_a_copy_is_parsed_once_and_a_changed_header_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same GGUF in three runtime folders costs one parse; a header that differs in one byte
    (the same size) or a file of another size is parsed for itself."""
    from modelstore.store import tensors

    parsed: list[str] = []
    real_parse = tensors._parse
    monkeypatch.setattr(tensors, "_parse", lambda path, fmt, buf, size: parsed.append(path) or real_parse(path, fmt, buf, size))
    first = write_tiny_llama_gguf(tmp_path / "a.gguf", name="cache-probe-one")
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(first.read_bytes())
    other = write_tiny_llama_gguf(tmp_path / "b.gguf", name="cache-probe-two")
    assert other.stat().st_size == first.stat().st_size
    longer = tmp_path / "longer.gguf"
    longer.write_bytes(first.read_bytes() + b"\0" * 32)

    headers = [read_weights_header(p) for p in (first, copy, other, longer)]
    assert parsed == [str(first), str(other), str(longer)]
    assert headers[1] is headers[0]
    assert headers[0] is not None and headers[2] is not None
    assert headers[0].metadata["general.name"] == "cache-probe-one"
    assert headers[2].metadata["general.name"] == "cache-probe-two"


def test_a_header_longer_than_the_first_read_is_read_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read more only where the header goes on past what was read, as much as it needs; a header
    that is bad in the bytes read is refused as it is, without reading any further."""
    from modelstore.store import tensors

    gguf = write_tiny_llama_gguf(tmp_path / "a.gguf", name="grown")
    whole = read_weights_header(gguf)
    reads: list[int] = []
    real_read = tensors._read_start
    monkeypatch.setattr(tensors, "_read_start", lambda fd, n: reads.append(n) or real_read(fd, n))
    monkeypatch.setattr(tensors, "HEADER_READ", 1024)
    monkeypatch.setattr(tensors, "_PARSED", tensors._ParsedHeaders())
    grown = read_weights_header(gguf)
    assert grown == whole and grown is not whole
    assert grown is not None and len(reads) > 2 and reads[0] == 1024 and reads[-1] < 2 * grown.data_start
    monkeypatch.setattr(tensors, "MAX_HEADER_READ", 4096)
    monkeypatch.setattr(tensors, "_PARSED", tensors._ParsedHeaders())
    with pytest.raises(BadModelFile, match="more than the 0 MiB modelstore reads"):
        read_weights_header(gguf)

    bad = tmp_path / "bad.gguf"
    data = bytearray(gguf.read_bytes())
    data[16:24] = (10**12).to_bytes(8, "little")  # the metadata key count
    bad.write_bytes(data)
    with open(bad, "r+b") as f:
        f.truncate(1 << 30)  # a big file, sparse
    reads.clear()
    with pytest.raises(BadModelFile, match="header claims 1000000000000 metadata keys"):
        read_weights_header(bad)
    assert reads == [1024]


def test_a_file_truncated_while_its_header_is_parsed_does_not_kill_the_process(tmp_path: Path) -> None:
    """Another process truncates the file while its header is parsed. Parsed through a mapping,
    the header changed under the parser (zeros), or the process died of SIGBUS at a page past the
    new end, which no Python code can catch; the bytes read first are parsed now."""
    gguf = write_tiny_llama_gguf(tmp_path / "a.gguf")
    expected = read_weights_header(gguf)
    assert expected is not None
    code = f"""
from pathlib import Path
from modelstore.store import tensors
real = tensors._parse
def truncated_first(*args):
    with open({str(gguf)!r}, "r+b") as f:
        f.truncate(64)
    return real(*args)
tensors._parse = truncated_first
header = tensors.read_weights_header(Path({str(gguf)!r}))
print(len(header.tensors))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert int(done.stdout) == len(expected.tensors)  # parsed from the bytes read before the truncation


def test_a_header_of_too_many_keys_is_refused(tmp_path: Path) -> None:
    """Every key is kept in the catalog, read whole by ls and the mount: a million of them is not
    a model file but a way to make every command slow and large."""
    from modelstore.store.gguf_header import MAX_METADATA_KEYS

    g = valid_gguf()
    for i in range(MAX_METADATA_KEYS):
        g.add_raw_kv(gguf_str(f"k{i}") + struct.pack("<II", UINT32, i))
    assert f"{MAX_METADATA_KEYS + 1} metadata keys" in problem_of(tmp_path, g.build())


def test_safetensors_metadata_is_kept_up_to_a_bound(tmp_path: Path) -> None:
    from modelstore.store.safetensors_header import KEEP_METADATA_BYTES

    meta = {"format": "pt", "big": "x" * (4 * KEEP_METADATA_BYTES), "after": "y"}
    header = json.dumps({"__metadata__": meta, "t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    parsed = read_weights_header(path)
    assert parsed is not None and parsed.metadata["format"] == "pt"
    assert "big" not in parsed.metadata and "after" not in parsed.metadata
    assert len(json.dumps(parsed.metadata)) < KEEP_METADATA_BYTES


@pytest.mark.parametrize("where", ["metadata value", "metadata key", "tensor name"])
def test_a_lone_surrogate_in_a_safetensors_header_is_refused(tmp_path: Path, where: str) -> None:
    """JSON can spell "\\ud800", which no UTF-8 reader takes (serde_json refuses it): a bad file,
    not a crash of the whole add or import."""
    bad = "\\ud800"
    meta = {"format": bad} if where == "metadata value" else {bad: "x"} if where == "metadata key" else {}
    name = bad if where == "tensor name" else "t"
    header = ('{"__metadata__": %s, "%s": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
              % (json.dumps(meta).replace("\\\\ud800", bad), name)).encode()
    data = struct.pack("<Q", len(header)) + header + b"\0" * 8
    assert "lone surrogate" in problem_of(tmp_path, data, "m.safetensors")
