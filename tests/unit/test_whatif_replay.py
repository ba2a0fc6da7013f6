"""scripts/whatif.py on a small recorded run: the replay reproduces what the chain paid, and settings matter.

The fixture (tests/data/whatif_run/) is a real `scripts/localnet.py` run (3 honest miners, lazy,
replay and copycat miners, 2 validators) trimmed by `template.harness.whatif_replay.trim_run` to what the
replay reads: chain.sqlite (blocks and extrinsics), hparams.json, the validators' metrics and the
neurons' roles. If the localnet chain's state transition changes, `recorded()` refuses the old
recording; record a new run and trim it again:

    python scripts/localnet.py --miners 3 --validators 2 --windows 12 --adversaries lazy,replay,copycat \\
        --run-dir runs/fixture
    python -c "from template.harness.whatif_replay import trim_run; trim_run('runs/fixture', 'tests/data/whatif_run')"
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from template.harness.whatif import main, replay_error, summarize, what_if
from template.harness.whatif_replay import (
    LATE,
    RunError,
    build_settings,
    load_run,
    recorded,
    replay,
    rescored_scores,
)

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "whatif_run"


@pytest.fixture(scope="module")
def run():
    return load_run(FIXTURE)


@pytest.fixture(scope="module")
def truth(run):
    return recorded(run)


def test_fixture_is_small_and_complete(run):
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 1_000_000
    assert {n.kind for n in run.neurons} >= {"owner", "validator", "honest", "lazy", "replay", "copycat"}
    assert len(run.validator_hotkeys) == 2
    for hk in run.validator_hotkeys:
        events = run.events[hk]
        assert [e.window for e in events] == list(range(len(events)))
        # every window in which the validator set weights is found on chain at its real position
        assert any(e.matched for e in events) and all(e.index != LATE for e in events if e.matched)


def test_replay_with_the_runs_own_settings_reproduces_what_the_chain_paid(run, truth):
    """The faithfulness check: weights re-derived from the recorded scores, the chain re-run."""
    assert truth.emitted > 0 and sum(truth.earned.values()) > 0
    own = replay(run, build_settings(run, {}))
    assert own.earned == truth.earned
    assert own.burned == truth.burned
    assert own.state_root == truth.state_root == run.blocks[-1][2]
    assert replay_error(run, own, truth) == 0.0


def test_a_damaged_recording_is_refused(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(FIXTURE, copy)
    import sqlite3

    db = sqlite3.connect(copy / "chain.sqlite")
    db.execute("UPDATE blocks SET state_root = 'x' WHERE number = 50")
    db.commit()
    db.close()
    with pytest.raises(RunError, match="differs from it at block 50"):
        recorded(load_run(copy))


def test_burn_and_top_n_move_emission_the_expected_way(run, truth):
    base = summarize(run, truth, {})
    burn = summarize(run, replay(run, build_settings(run, {"burn_rate": 0.5})), {"burn_rate": 0.5})
    # half of every validator's row goes to the owner's uid, whose incentive the chain burns
    assert burn["alpha"]["burned"] > base["alpha"]["burned"]
    assert burn["alpha"]["honest"] < base["alpha"]["honest"]
    assert burn["alpha"]["owner"] == pytest.approx(base["alpha"]["owner"])  # the owner cut does not move
    wta = summarize(run, replay(run, build_settings(run, {"weight_curve": "winner_take_all"})), {})
    assert wta["gini_honest"] > base["gini_honest"]


def test_chain_settings_change_the_split(run, truth):
    base = summarize(run, truth, {})
    no_cut = summarize(run, replay(run, build_settings(run, {"owner_cut_enabled": False})), {})
    assert no_cut["alpha"]["owner"] == 0 and base["alpha"]["owner"] > 0
    half_cut = summarize(run, replay(run, build_settings(run, {"owner_cut": 0.5})), {})
    assert half_cut["alpha"]["owner"] > 2 * base["alpha"]["owner"]
    delayed = replay(run, build_settings(run, {"commit_reveal_delay": 3}))
    assert delayed.earned != truth.earned


def test_yuma_and_bond_settings_move_dividends_between_validators_and_the_table_shows_it(tmp_path, capsys):
    """The validators' total is the same 41% of emission under yuma3 on or off and any bonds EMA; what moves is
    the split between them. Each validator gets a column then, so such rows no longer read as "no effect"."""
    argv = ["--run", str(FIXTURE), "--grid", "yuma3_enabled=true,false", "bonds_moving_average=0.9,0.975",
            "--png", str(tmp_path / "w.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    points = json.loads(out[-1])["points"]
    run_row, yuma2 = points[0], next(p for p in points if p["settings"] == {"yuma3_enabled": False,
                                                                             "bonds_moving_average": 0.9})
    assert yuma2["alpha"]["validators"] == pytest.approx(run_row["alpha"]["validators"])
    assert sum(yuma2["by_validator"].values()) == pytest.approx(yuma2["alpha"]["validators"])
    moved = {v: yuma2["by_validator"][v] - run_row["by_validator"][v] for v in run_row["by_validator"]}
    assert max(abs(d) for d in moved.values()) > 0.5 and sum(moved.values()) == pytest.approx(0, abs=1e-6)
    assert out[0].rstrip(" |").endswith("| validator0 | validator1")


def test_grid_cli_prints_table_png_and_a_json_last_line(tmp_path, capsys):
    png = tmp_path / "whatif.png"
    assert main(["--run", str(FIXTURE), "--grid", "burn_rate=0.1,0.5", "top_n_miners=4,8", "--png", str(png)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    doc = json.loads(out[-1])
    assert doc["replay_error"] == 0.0 and doc["state_root_match"]
    assert len(doc["points"]) == 5  # the run's own settings, then 2 x 2
    assert doc["points"][0]["settings"] == {}
    assert doc["points"][4]["settings"] == {"burn_rate": 0.5, "top_n_miners": 8}
    for p in doc["points"]:
        assert set(p["alpha"]) >= {"owner", "validators", "honest", "hostile"}
        assert 0 <= p["gini_honest"] <= 1
    assert out[0].startswith("| burn_rate | top_n_miners | owner |")
    assert png.stat().st_size > 1000


def test_what_if_reports_errors_before_replaying(run):
    with pytest.raises(ValueError, match="burn_rate"):
        what_if(run, [{"burn_rate": 2.0}])
    with pytest.raises(ValueError, match="weight_curve"):
        what_if(run, [{"weight_curve": "cubic"}])


def test_pay_score_and_horizon_rescore_the_recorded_evaluations(run, truth):
    """Issue 31: the pay mapping is settable in the replay; the scores are re-derived from each row's
    evaluations (gauntlet.pay.rescore) with the validator's own functions."""
    assert (run.hparams.pay_score, run.hparams.weight_curve) == ("rating", "linear")  # recorded before issue 31
    own = rescored_scores(run, run.hparams)
    assert own == {}  # the run's own pay settings: the recorded scores are used as they are
    again = rescored_scores(run, run.hparams.model_copy(update={"pay_horizon": 3}))  # rating ignores the horizon
    for hk, events in run.events.items():
        for ev in events[:2]:  # before the first non-compliant window (the recording predates compliance matches)
            assert again[hk][ev.window] == pytest.approx(ev.scores)
    base = summarize(run, truth, {})
    new = summarize(run, replay(run, build_settings(run, {"pay_score": "contribution", "weight_curve": "proportional",
                                                          "horizon": 8})), {})
    assert new["honest_max_over_min"] < base["honest_max_over_min"]
    assert new["gini_honest"] < base["gini_honest"]
    assert 0 < new["best_hostile_share"] < 0.1
    assert set(base) >= {"honest_max_over_min", "best_hostile_share"}
    with pytest.raises(ValueError, match="pay_horizon"):
        what_if(run, [{"pay_horizon": 0}])
