from pathlib import Path

from modelstore.converters.synth import write_tiny_llama_gguf


def test_add_ls_roundtrip(cli, models: Path) -> None:
    gguf = write_tiny_llama_gguf(models / "tiny.gguf")
    r = cli("add", gguf, "--name", "tiny:q", "--json")
    assert r.code == 0, r.err
    assert r.json()["stored_bytes"] == gguf.stat().st_size
    r = cli("ls", "--json")
    assert [m["name"] for m in r.json()] == ["tiny:q"]
