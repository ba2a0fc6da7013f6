"""Guard: the subnet owner's guide lists every run hyperparameter with its current default."""

from __future__ import annotations

from pathlib import Path

from template.protocol.config import HParams

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "subnet-owner.md"


def test_every_hparam_is_documented_with_its_default():
    text = GUIDE.read_text()
    for name, field in HParams.model_fields.items():
        assert f"| `{name}` | {field.default!r} |" in text, f"docs/subnet-owner.md: add or update the row of {name}"
