"""Every module of the product ships in the wheel (``pip install meterline``).

The editable install used by the tests imports straight from the tree, so a package
folder without ``__init__.py`` (skipped by setuptools' package discovery) would pass
every other test and still be missing for users. This test packs what the build
config packs and compares it with the tree.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_product_folder_with_python_modules_is_a_packaged_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packaged = set(find_packages(str(ROOT), include=include))
    roots = {pattern.rstrip("*") for pattern in include}
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for root in roots
        for path in (ROOT / root).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert folders <= packaged, sorted(folders - packaged)
