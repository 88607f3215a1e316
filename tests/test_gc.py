"""rm, gc, du and fsck: what each removes, frees and reports, including on a store whose catalog
tables are out of step or while another command runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelstore.converters.synth import write_tiny_llama_gguf


def _two(cli, models: Path) -> tuple[Path, Path]:
    a = write_tiny_llama_gguf(models / "a.gguf")
    b = write_tiny_llama_gguf(models / "b.gguf", changed={"output.weight": 9})
    assert cli("add", a, "--name", "a", "--no-convert").code == 0
    assert cli("add", b, "--name", "b", "--no-convert").code == 0
    return a, b


# -- rm -----------------------------------------------------------------------------------------


def test_rm_a_name_given_twice_removes_it_once(cli, models: Path) -> None:
    _two(cli, models)
    r = cli("rm", "a", "b", "a", "--json")
    assert r.code == 0, r.err
    assert r.json()["removed"] == ["a", "b"]
    assert cli("ls", "--json").json() == []


def test_rm_removes_nothing_when_one_name_is_missing(cli, models: Path) -> None:
    _two(cli, models)
    r = cli("rm", "a", "nope", "a")
    assert r.code == 3 and "'nope'" in r.err and "nothing was removed" in r.err and r.out == ""
    assert [m["name"] for m in cli("ls", "--json").json()] == ["a", "b"]


@pytest.mark.parametrize("command", [("rm",), ("show",), ("convert",), ("rm", "a")])
@pytest.mark.parametrize("name", ["", "\udcff", "x" * 600, "../x"])
def test_a_name_no_model_can_have_is_one_line(cli, models: Path, command: tuple[str, ...], name: str) -> None:
    """An empty name, one that is not UTF-8 (a command-line byte), or one longer than LMDB keys
    can be: check_model_name's own error (exit 4), never an LMDB or codec traceback."""
    _two(cli, models)
    r = cli(*command, name)
    assert r.code == 4, r.err
    assert "is not allowed" in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert [m["name"] for m in cli("ls", "--json").json()] == ["a", "b"]


def test_the_catalog_answers_no_such_model_for_a_key_lmdb_cannot_hold(store) -> None:
    with store.catalog.read() as r:
        assert [r.model(n) for n in ("", "\udcff", "x" * 600)] == [None, None, None]
        assert r.conversions("") is None
    with store.catalog.write() as w:
        assert w.remove_model("") is None
