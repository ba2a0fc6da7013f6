"""scripts/whatif.py plumbing: grid parsing, setting conversion and errors, summaries, sweep commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from template.harness.whatif import gini, grid_points, main, parse_axes, sweep, sweep_command
from template.harness.whatif_replay import chain_value, name_role, parse_value


def test_grid_is_every_combination_in_order():
    axes = parse_axes(["burn_rate=0.1,0.5", "top_n_miners=4,8", "yuma3_enabled=true,false"], "--grid")
    assert axes[0] == ("burn_rate", [0.1, 0.5])
    points = grid_points(axes)
    assert len(points) == 8
    assert points[0] == {"burn_rate": 0.1, "top_n_miners": 4, "yuma3_enabled": True}
    assert points[-1] == {"burn_rate": 0.5, "top_n_miners": 8, "yuma3_enabled": False}


@pytest.mark.parametrize("bad", ["burn_rate", "burn_rate=", "=0.1"])
def test_grid_syntax_errors_name_the_item(bad):
    with pytest.raises(ValueError, match="name=v1,v2"):
        parse_axes([bad], "--grid")


def test_grid_refuses_a_name_twice():
    with pytest.raises(ValueError, match="twice"):
        parse_axes(["kappa=0.5", "kappa=0.6"], "--grid")


def test_values_parse_as_bool_int_float_or_text():
    assert [parse_value(v) for v in ("true", "off", "4", "0.5", "softmax")] == [True, False, 4, 0.5, "softmax"]


def test_chain_values_take_chain_units_or_fractions():
    assert chain_value("kappa", 0.5) == {"kappa": 32768}
    assert chain_value("kappa", 32767) == {"kappa": 32767}
    assert chain_value("bonds_moving_average", 0.975) == {"bonds_moving_average": 975_000}
    assert chain_value("yuma3", False) == {"yuma3_enabled": False}  # aliases resolve
    assert chain_value("liquid_alpha_enabled", True) == {"liquid_alpha_enabled": True}
    assert chain_value("commit_reveal_delay", 0) == {"commit_reveal_weights_enabled": False}
    assert chain_value("commit_reveal_delay", 2) == {"commit_reveal_weights_enabled": True,
                                                     "commit_reveal_period": 2}


@pytest.mark.parametrize("name,value,match", [
    ("kappa", 70000, "kappa must be an integer in"),
    ("alpha_low", 0.01, "alpha_low must be an integer in"),  # 655 is below the chain's 1638 floor
    ("yuma3_enabled", 3, "true/false"),
    ("commit_reveal_delay", -1, "whole tempos"),
    ("not_a_setting", 1, "unknown setting 'not_a_setting'"),
])
def test_bad_chain_values_are_one_line_errors(name, value, match):
    with pytest.raises(ValueError, match=match):
        chain_value(name, value)


def test_gini():
    assert gini([]) == 0.0
    assert gini([0, 0]) == 0.0
    assert gini([5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 9]) == pytest.approx(2 / 3)
    assert 0 < gini([1, 2, 3]) < gini([1, 1, 10])


def test_neuron_roles_from_localnet_names():
    assert name_role("owner") == ("owner", "owner")
    assert name_role("validator1") == ("validator", "validator")
    assert name_role("miner2") == ("miner", "honest")
    assert name_role("copycat7") == ("miner", "copycat")


def test_sweep_command_maps_settings_to_localnet_flags(tmp_path):
    cmd = sweep_command({"blocks_per_window": 30, "topk": 32, "weight_curve": "softmax"}, tmp_path / "p0",
                        "--miners 2 --windows 4")
    assert cmd[0] == sys.executable and cmd[1].endswith("scripts/localnet.py")
    assert cmd[2:6] == ["--miners", "2", "--windows", "4"]
    assert cmd[cmd.index("--run-dir") + 1] == str(tmp_path / "p0")
    assert cmd[cmd.index("--blocks-per-window") + 1] == "30"
    hparams = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--hparam"]
    assert hparams == ["topk=32", 'weight_curve="softmax"']
    with pytest.raises(ValueError, match="use --grid"):
        sweep_command({"kappa": 0.5}, tmp_path, "")


def test_sweep_runs_one_network_per_point_and_stops_on_failure(tmp_path):
    seen: list[list[str]] = []
    lines: list[str] = []

    def runner(cmd: list[str], run_dir: Path) -> int:
        seen.append(cmd)
        return 1  # the network failed: the sweep stops with the point and the log path

    points = grid_points(parse_axes(["blocks_per_window=20,30"], "--sweep"))
    with pytest.raises(ValueError, match=r"exited 1 \(log: .*point0/localnet.log\)"):
        sweep(points, tmp_path, "--windows 2", runner=runner, progress=lines.append)
    assert len(seen) == 1 and "--blocks-per-window" in seen[0]
    assert lines == [f"[1/2] {{'blocks_per_window': 20}}: running the network in {tmp_path / 'point0'} ..."]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"whatif: --run {tmp_path / 'nope'}: no such folder"
    assert main(["--run", str(tmp_path)]) == 2
    assert "chain.sqlite is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--grid", "burn_rate=0.1"])  # neither --run nor --sweep


def _point(settings, validators):
    return {"settings": settings, "alpha": {"owner": 1.0, "validators": sum(validators.values()), "honest": 2.0,
                                            "hostile": 0.0, "burned": 0.0},
            "by_kind": {}, "honest_share": 1.0, "gini_honest": 0.0, "best_hostile_over_worst_honest": 0.0,
            "by_validator": validators}


def test_table_shows_each_validator_only_where_a_setting_moves_them():
    from template.harness.whatif import format_table, moved_validators

    same = [_point({}, {"validator0": 3.0, "validator1": 1.0}), _point({"kappa": 0.5}, {"validator0": 3.0,
                                                                                          "validator1": 1.0})]
    assert moved_validators(same) == [] and "validator0" not in format_table(same)
    moved = [*same, _point({"kappa": 0.9}, {"validator0": 2.5, "validator1": 1.5})]
    assert moved_validators(moved) == ["validator0", "validator1"]
    lines = format_table(moved).splitlines()
    assert lines[0].rstrip(" |").endswith("validator0 | validator1")
    assert lines[-1].rstrip(" |").endswith("2.50 |       1.50") and lines[-1].count("4.00") == 1  # sum unchanged
    assert moved_validators([_point({}, {"validator0": 4.0}), _point({"x": 1}, {"validator0": 3.0})]) == []
