"""The run dashboard (scripts/dashboard.py): its JSON state and SVG charts from a small recorded run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from template.harness.dashboard import DashboardServer, collect, kind_of, line_chart_svg, make_app

RUN = Path(__file__).resolve().parents[1] / "data" / "run_small"


def test_finished_run_state_has_loss_leaderboard_rejections_chain_and_neurons():
    s = collect(RUN)
    report = json.loads((RUN / "report" / "report.json").read_text())
    assert [p["loss"] for p in s["loss"]] == report["loss"] and s["finished"]
    assert [n["name"] for n in s["leaderboard"][:3]] == ["miner2", "miner0", "miner1"]  # best rating first
    assert s["leaderboard"][-1]["kind"] in ("noise", "copycat")
    assert s["rejections"] == report["rejections"] == {"copy": 11}
    assert s["checkpoints"] == report["checkpoints"] and s["chain"]["block"] == 412
    assert s["chain"]["next_epoch_block"] == 440
    status = {n["name"]: n for n in s["neurons"]}
    assert status["miner0"]["last_window"] == 10 and status["validator0"]["state"] == "exited 0"
    assert s["records"] == 10  # validator0 led every window
    # every loss point is in the chart, with its value
    assert s["loss_svg"].count("<circle") == 10 and f'data-y="{report["loss"][-1]:.4f}"' in s["loss_svg"]


def test_running_run_without_report_ranks_by_the_lead_validator_rows(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN / "metrics", run / "metrics")
    s = collect(run)
    assert not s["finished"] and s["chain"]["block"] is None and s["checkpoints"] == []
    top = s["leaderboard"][0]
    assert top["name"].startswith("miner") and top["kind"] == "honest" and top["weight"] is not None
    assert {n["kind"] for n in s["leaderboard"]} == {"honest", "noise", "copycat"}
    (run / "status.json").write_text("{half")  # being rewritten: ignored, not an error
    assert collect(run)["chain"]["block"] is None


def test_page_and_json_endpoint():
    client = TestClient(make_app(RUN))
    assert "api/state" in client.get("/").text
    assert client.get("/api/state").json()["rejections"] == {"copy": 11}


def test_server_thread_serves_and_stops():
    server = DashboardServer(RUN, port=0)
    url = server.start()
    try:
        assert httpx.get(url + "api/state", timeout=5).json()["run"] == "run_small"
    finally:
        server.stop()
    assert not server.thread.is_alive()


def test_helpers():
    assert [kind_of(n) for n in ("miner3", "validator0", "copycat12", "owner")] == \
        ["honest", "validator", "copycat", "owner"]
    assert "no data yet" in line_chart_svg([], "w", "l")
    assert line_chart_svg([(0, 1.0)], "w", "l").count("<circle") == 1  # one point: no division by zero


def test_leaderboard_says_why_each_miner_earns_what_it_earns(tmp_path):
    """Issue 31: a per-miner why from the lead's latest row (pay score, rank, gain, compliance, reason)."""
    run = tmp_path / "run"
    shutil.copytree(RUN / "metrics", run / "metrics")
    rows = [json.loads(line) for line in (run / "metrics" / "validator0.jsonl").read_text().splitlines()]
    last = rows[-1]
    uids = sorted(last["miners"], key=int)
    last["miners"][uids[0]].update(score=0.02, rank=1, compliant=True, why=None, improvement_random=0.03)
    last["miners"][uids[1]].update(score=0.0, rank=None, compliant=False, why="not_compliant")
    (run / "metrics" / "validator0.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    board = {n["uid"]: n for n in collect(run)["leaderboard"]}
    first, second = board[int(uids[0])], board[int(uids[1])]
    assert (first["score"], first["rank"], first["compliant"], first["why"], first["gain"]) == (0.02, 1, True, "",
                                                                                                   0.03)
    assert (second["rank"], second["compliant"], second["why"]) == (None, False, "not_compliant")
    copied = [n for n in board.values() if n["kind"] == "copycat"]
    assert copied and all(n["why"] == "copy" for n in copied)  # an older row: the admission's reason
    assert '["why", r => r.why' in TestClient(make_app(run)).get("/").text  # the page has the column
