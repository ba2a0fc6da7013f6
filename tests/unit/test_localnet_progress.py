"""Progress lines of a running localnet (scripts/localnet_progress.py), from recorded validator rows."""

from __future__ import annotations

import io
import json

from template.harness.progress import Progress, format_duration, format_line

ROW = {"window": 4, "eval/heldout_loss": 8.90441, "role": "validator", "miners": {
    "3": {"hotkey": "hk3", "reason": None, "rating": 2.16},
    "4": {"hotkey": "hk4", "reason": None, "rating": 4.83},
    "6": {"hotkey": "hk6", "reason": "copy", "rating": -3.6},
    "7": {"hotkey": "hk7", "reason": "copy", "rating": None},
    "8": {"hotkey": "hk8", "reason": "late", "rating": -1.0},
}}


def test_line_names_window_loss_admissions_rejections_leader_and_times():
    line = format_line(ROW, 5, 12, names={"hk4": "miner1"}, elapsed_s=130, eta_s=180, bar=False)
    assert line == ("window 5/12 | loss 8.904 | admitted 2 | rejected copy=2 late=1 | "
                    "leader miner1 (uid 4, rating 4.83) | 2m10s elapsed, ETA 3m00s")


def test_bar_only_on_a_terminal_and_unknown_leader_by_uid():
    line = format_line(ROW, 6, 12, names={}, elapsed_s=5, eta_s=None, bar=True)
    assert line.startswith("[######------] window 6/12 |")
    assert "leader uid 4 (uid 4, rating 4.83)" in line and line.endswith("5s elapsed, ETA -")
    empty = format_line({"window": 0, "eval/heldout_loss": None, "miners": {}}, 1, 2, names={}, elapsed_s=0,
                        eta_s=0, bar=False)
    assert empty == "window 1/2 | loss - | admitted 0 | rejected 0 | leader - | 0s elapsed, ETA 0s"


def test_durations():
    assert [format_duration(x) for x in (0, 59.6, 61, 3725, -1)] == ["0s", "1m00s", "1m01s", "1h02m", "-"]


def test_poll_prints_each_window_once_and_waits_for_whole_lines(tmp_path):
    path = tmp_path / "validator0.jsonl"
    out = io.StringIO()
    prog = Progress(path, 3, {"hk4": "miner1"}, window_s=20.0, started=1000.0, out=out)
    assert prog.poll(now=1001.0) == []  # no file yet
    rows = [dict(ROW, window=w) for w in range(3)]
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:10])  # second line half-written
    first = prog.poll(now=1030.0)
    assert len(first) == 1 and first[0].startswith("window 1/3 |") and "ETA 40s" in first[0]
    with path.open("w") as f:  # the rest of line two, a redo of window 0 (restart), then window 2
        f.write(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n" + json.dumps(rows[0]) + "\n"
                + json.dumps(rows[2]) + "\n")
    later = prog.poll(now=1050.0)
    assert [x.split(" |")[0] for x in later] == ["window 2/3", "window 3/3"]
    assert later[0].endswith("50s elapsed, ETA 20s")  # measured: 20 s per window since the first row
    assert out.getvalue().count("\n") == 3 and "[" not in out.getvalue()  # StringIO is not a TTY


class FakeProc:
    def __init__(self, rc):
        self.rc = rc

    def poll(self):
        return self.rc


def test_status_file_for_the_dashboard_and_an_open_ended_run(tmp_path):
    from types import SimpleNamespace

    procs = [SimpleNamespace(name="owner", role="owner", kind="owner", proc=None, restarts=0),
             SimpleNamespace(name="miner0", role="miner", kind="honest", proc=FakeProc(None), restarts=1),
             SimpleNamespace(name="noise0", role="miner", kind="noise", proc=FakeProc(1), restarts=0)]
    status = tmp_path / "status.json"
    prog = Progress(tmp_path / "v.jsonl", 0, {}, window_s=20.0, started=0.0, out=io.StringIO(),
                    status_path=status, procs=procs, chain_info=lambda: {"block": 77, "next_epoch_block": 80})
    (tmp_path / "v.jsonl").write_text(json.dumps(ROW) + "\n")
    line = prog.poll(now=30.0)[0]
    assert line.startswith("window 1 | ") and line.endswith("30s elapsed, ETA -")  # --windows 0: no total
    got = json.loads(status.read_text())
    assert got["block"] == 77 and got["next_epoch_block"] == 80 and got["windows_total"] == 0
    assert [(n["name"], n["state"], n["restarts"]) for n in got["neurons"]] == \
        [("miner0", "running", 1), ("noise0", "exited 1", 0)]
