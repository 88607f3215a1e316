"""Every code folder is installed under the modelstore namespace (a non-editable install ships
only the packages pyproject lists: a missing one breaks `pip install .` but not the tests)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"store": "modelstore.store", "converters": "modelstore.converters", "fusefs": "modelstore.fusefs",
           "cli": "modelstore.cli"}


def test_every_package_is_listed_and_mapped() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, mapped = set(config["packages"]), config["package-dir"]
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    assert found == listed
    for package in listed:
        folder = mapped.get(package) or next(
            f"{mapped[parent]}/{package[len(parent) + 1:].replace('.', '/')}"
            for parent in sorted(mapped, key=len, reverse=True) if package.startswith(parent + "."))
        assert (ROOT / folder / "__init__.py").is_file(), package
