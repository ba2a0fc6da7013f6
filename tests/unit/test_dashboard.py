"""The run dashboard (scripts/dashboard.py): its JSON state and SVG charts from a small recorded run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from template.harness.dashboard import (
    DashboardServer,
    collect,
    kind_of,
    line_chart_svg,
    make_app,
    multi_line_chart_svg,
    window_timing,
)

RUN = Path(__file__).resolve().parents[1] / "data" / "run_small"


def test_finished_run_state_has_loss_leaderboard_rejections_chain_and_neurons():
    s = collect(RUN)
    report = json.loads((RUN / "report" / "report.json").read_text())
    assert [p["loss"] for p in s["loss"]] == report["loss"] and s["finished"]
    assert s["rejections"] == report["rejections"] == {"copy": 11}
    assert s["checkpoints"] == report["checkpoints"] and s["chain"]["block"] == 412
    assert s["chain"]["next_epoch_block"] == 440
    status = {n["name"]: n for n in s["neurons"]}
    assert status["miner0"]["last_window"] == 10 and status["validator0"]["state"] == "exited 0"
    assert s["records"] == 10  # validator0 led every window
    # every loss point is in the chart, with its value
    assert s["loss_svg"].count("<circle") == 10 and f'data-y="{report["loss"][-1]:.4f}"' in s["loss_svg"]
    # what the chain paid: one read at the run's end, labelled with its block, richest first
    chain = s["chain_table"]
    assert chain["block"] == 412 and len(chain["rows"]) == len(report["neurons"])
    assert chain["rows"][0]["emission_alpha"] == max(n["emission_alpha"] for n in report["neurons"])


def test_a_leaderboard_row_is_one_window_the_last_with_weights_set():
    """The recorded run set weights in even windows; its last window is 9. Every number of a row is the
    lead validator's word for window 8 (not window 9's rating beside window 8's weight)."""
    board = collect(RUN)["leaderboard"]
    assert (board["window"], board["latest_window"], board["weights_set"]) == (8, 9, True)
    row8 = {json.loads(line)["window"]: json.loads(line) for line in
            (RUN / "metrics" / "validator0.jsonl").read_text().splitlines()}[8]["miners"]
    for r in board["rows"]:
        m = row8[str(r["uid"])]
        assert (r["rating"], r["score"], r["weight"], r["reason"]) == (m["rating"], m["score"], m["weight"],
                                                                       m["reason"])
    assert [r["name"] for r in board["rows"][:3]] == ["miner1", "miner2", "miner0"]  # best rating first
    assert {r["kind"] for r in board["rows"][3:]} == {"noise", "copycat"}


def test_per_miner_series_and_their_charts():
    s = collect(RUN)
    series = s["miner_series"]
    assert set(series["rating"]) == {"miner0", "miner1", "miner2", "noise0", "copycat1"}
    assert len(series["rating"]["miner0"]) == 10 and len(series["weight"]["miner0"]) == 5  # weights: even windows
    assert set(series["tokens_per_s"]) == {"miner0", "miner1", "miner2"}  # hostile miners do not train
    assert all(sec >= 0 for _, sec in series["upload_s"]["miner0"])
    svg = s["miner_svgs"]["rating"]
    assert svg.count('data-series="miner2"') == 10 and 'id="miner-rating"' in svg
    last = series["rating"]["miner2"][-1]
    assert f'data-series="miner2" data-x="{last[0]}" data-y="{last[1]:.4f}"' in svg


def test_running_run_without_report_ranks_by_the_lead_validator_rows(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN / "metrics", run / "metrics")
    s = collect(run)
    assert not s["finished"] and s["chain"]["block"] is None and s["checkpoints"] == []
    assert s["chain_table"] == {"block": None, "rows": []}  # the chain's numbers come with the report
    top = s["leaderboard"]["rows"][0]
    assert top["name"].startswith("miner") and top["kind"] == "honest" and top["weight"] is not None
    assert {n["kind"] for n in s["leaderboard"]["rows"]} == {"honest", "noise", "copycat"}
    (run / "status.json").write_text("{half")  # being rewritten: ignored, not an error
    assert collect(run)["chain"]["block"] is None


def test_window_timing_charts_the_lead_validators_stages(tmp_path):
    rows = [{"role": "validator", "uid": 1, "window": w, "fetch/s": 0.5 + w, "time/checks_s": 0.1, "time/eval_s": 2.0, "time/aggregate_s": 0.3,
             "miners": {}} for w in range(3)]
    timing = window_timing(rows)
    assert timing["fetch"] == [(0, 0.5), (1, 1.5), (2, 2.5)] and set(timing) == {"fetch", "checks", "eval",
                                                                                 "aggregate"}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "validator0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    svg = collect(tmp_path)["timing_svg"]
    assert svg.count("<circle") == 12 and 'data-series="eval"' in svg
    assert collect(tmp_path)["leaderboard"]["window"] == 2  # no weights set yet: the latest window, said so
    assert not collect(tmp_path)["leaderboard"]["weights_set"]


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
    assert "no data yet" in multi_line_chart_svg({}, "w", "l", "c")
    assert multi_line_chart_svg({"<a>": [(0, 1.0)]}, "w", "l", "c").count("&lt;a&gt;") == 3  # names escaped


def test_a_miner_has_one_colour_on_every_chart():
    svgs = collect(RUN)["miner_svgs"]

    def colour(svg: str, name: str) -> str:
        return svg.split(f'data-series="{name}"')[0].rsplit('fill="', 1)[1].split('"')[0]

    assert colour(svgs["tokens_per_s"], "miner1") == colour(svgs["rating"], "miner1") != \
        colour(svgs["rating"], "miner0")


def test_leaderboard_says_why_each_miner_earns_what_it_earns(tmp_path):
    """Issue 31: a per-miner why from the leaderboard's window (pay score, rank, gain, compliance, reason)."""
    run = tmp_path / "run"
    shutil.copytree(RUN / "metrics", run / "metrics")
    rows = [json.loads(line) for line in (run / "metrics" / "validator0.jsonl").read_text().splitlines()]
    last = rows[-1]
    last["weights_set"] = True  # the leaderboard shows the last window with weights set: make it this one
    uids = sorted(last["miners"], key=int)
    last["miners"][uids[0]].update(score=0.02, rank=1, compliant=True, why=None, improvement_random=0.03)
    last["miners"][uids[1]].update(score=0.0, rank=None, compliant=False, why="not_compliant")
    (run / "metrics" / "validator0.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    board = {n["uid"]: n for n in collect(run)["leaderboard"]["rows"]}
    first, second = board[int(uids[0])], board[int(uids[1])]
    assert (first["score"], first["rank"], first["compliant"], first["why"], first["gain"]) == (0.02, 1, True, "",
                                                                                                   0.03)
    assert (second["rank"], second["compliant"], second["why"]) == (None, False, "not_compliant")
    copied = [n for n in board.values() if n["kind"] == "copycat"]
    assert copied and all(n["why"] == "copy" for n in copied)  # an older row: the admission's reason
    assert '["why", r => r.why' in TestClient(make_app(run)).get("/").text  # the page has the column
