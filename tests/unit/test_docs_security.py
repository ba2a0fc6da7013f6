"""Guard: every hostile kind of the simulation has a row in docs/security.md (attack, defence, test, outcome)."""

from __future__ import annotations

import re
from pathlib import Path

from template.sim.adversaries import STRATEGIES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()


def test_every_hostile_kind_has_a_row():
    rows = [line for line in DOC.splitlines() if line.startswith("| ") and line.count(" | ") >= 3]
    missing = [kind for kind in STRATEGIES if not any(re.match(rf"\| [^|]*`{kind}`", row) for row in rows)]
    assert missing == [], f"docs/security.md: add a row (attack, defence, test, outcome) for {missing}"


def test_every_test_a_row_names_exists():
    root = Path(__file__).resolve().parents[2]
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)", DOC):
        text = (root / path).read_text()
        assert f"def {name}(" in text, f"docs/security.md names {path}::{name}, which does not exist"
