"""scripts/publish_run.py's command line without a chain: mistakes end in one line and exit 1 (2 when the
command line does not parse). The publish itself runs in tests/integration/test_publish_run.py."""

from __future__ import annotations

import json

import pytest

from template.node.publish import hparams_bytes, main
from template.protocol.config import HParams


def _one_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_mistakes_are_one_line(tmp_path, capsys) -> None:
    assert "not found" in _one_line(capsys, ["--netuid", "1", "--wallet.path", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        main(["--netuid", "one"])
    assert e.value.code == 2


def test_hparams_file_is_what_nodes_load(tmp_path) -> None:
    hp = HParams(seq_len=16, start_block=123)
    assert HParams(**json.loads(hparams_bytes(hp))) == hp
