"""scripts/localnet_slots.py: --slots parsing and the printed slot commands (pure; no processes)."""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

from template.harness.localnet import parse_args
from template.harness.slots import load_run_state, parse_slots, slot_command, slot_names
from template.protocol.config import parse_neuron_args


def test_parse_slots_counts_roles_and_refuses_bad_parts():
    assert parse_slots("miner:2,validator:1") == {"miner": 2, "validator": 1}
    assert parse_slots("") == {"miner": 0, "validator": 0}
    assert parse_slots("miner:1,miner:1") == {"miner": 2, "validator": 0}
    for bad in ("owner:1", "miner", "miner:x", "miner:-1"):
        with pytest.raises(ValueError, match="ROLE:COUNT"):
            parse_slots(bad)


def test_slot_names_are_bucket_names():
    assert slot_names({"miner": 2, "validator": 1}) == [("ext-miner0", "miner"), ("ext-miner1", "miner"),
                                                        ("ext-validator0", "validator")]


@pytest.mark.parametrize("role", ["miner", "validator"])
def test_printed_command_parses_as_the_neurons_flags(role, tmp_path: Path):
    n = SimpleNamespace(name=f"ext-{role}0", role=role, wallet=SimpleNamespace(name=f"ext-{role}0"),
                        creds_file=tmp_path / "credentials" / f"ext-{role}0.json")
    cmd = shlex.split(slot_command(n, tmp_path, "http://127.0.0.1:40001", 3))
    assert cmd[:2] == ["python", f"neurons/{role}.py"]
    cfg = parse_neuron_args(role, cmd[2:])
    assert cfg.netuid == 3 and cfg.wallet.name == f"ext-{role}0"
    assert cfg.subtensor.chain_endpoint == "http://127.0.0.1:40001"
    assert cfg.storage.credentials_file == str(n.creds_file)


def test_parse_args_windows_zero_slots_and_resume_default():
    args = parse_args(["--miners", "0", "--adversaries", "", "--slots", "miner:1", "--windows", "0"])
    assert args.windows == 0 and args.slot_counts == {"miner": 1, "validator": 0}
    assert parse_args([]).windows == 12
    assert parse_args(["--resume", "x"]).windows == 0  # a resumed run goes on until Ctrl-C unless told
    with pytest.raises(SystemExit):
        parse_args(["--windows", "-1"])


def test_resume_of_a_folder_without_run_state_names_the_problem(tmp_path: Path):
    with pytest.raises(ValueError, match="no playground.json"):
        load_run_state(tmp_path)
