"""docs/layout.md matches the code: every module is listed, every key example is what layout.py returns."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from template.protocol import layout

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "layout.md").read_text()
PACKAGES = ["template/protocol", "template/node", "template/chain", "template/sim", "template/harness/prepare",
            "gauntlet", "storage"]

# `function(args)` | `example` rows of the key tables
KEY_ROW = re.compile(r"^\| `(\w+)\(([^)]*)\)` \| `([^`]+)` \|", re.MULTILINE)


def documented_modules(package: str) -> set[str]:
    """Module names in the table under the package's heading (`### `package/``)."""
    section = DOC.split(f"### `{package}/`", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return set(re.findall(r"^\| `([\w/]+?)(?:\.py|/)` \|", section, re.MULTILINE))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_documented_and_exists(package: str) -> None:
    pkg = ROOT / package
    actual = {p.stem for p in pkg.glob("*.py") if p.name != "__init__.py"}
    actual |= {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert documented_modules(package) == actual


def test_key_examples_match_layout() -> None:
    rows = KEY_ROW.findall(DOC)
    documented = {name for name, _, _ in rows}
    public = {n for n in dir(layout) if not n.startswith("_") and callable(getattr(layout, n))
              and getattr(getattr(layout, n), "__module__", None) == layout.__name__ and n not in ("parse_window", "is_input_key")}
    assert documented == public, "every key function of template/protocol/layout.py has a row"
    for name, args, example in rows:
        values = ast.literal_eval(f"({args},)") if args else ()  # literals in the doc, e.g. "train", 3
        assert getattr(layout, name)(*values) == example, name
        if name != "checkpoint_prefix" and example.startswith("v"):
            assert layout.parse_window(example) == values[0]
