"""The localnet playground (issue 19): a developer's own miner attached through a slot, then a resume.

`scripts/localnet.py --slots miner:1 --windows 0` runs as its own process; the test reads the command
it printed into RUN_DIR/slots.md and runs exactly that (with this interpreter for `python`) as a
separate process from the checkout, as a developer would from another terminal, until the validator
admitted and rated that miner's uploads; then it stops both with SIGTERM. The resume test starts the
stopped run again from its directory (chain on its SQLite file, SeaweedFS on its data dir, same ports)
and checks that the network goes on from where it stopped. Both are slow (several minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PLAYGROUND = ["--miners", "1", "--validators", "1", "--adversaries", "", "--slots", "miner:1"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _wait(what: str, cond, timeout_s: float, procs: list[subprocess.Popen], logs: list[Path]):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        for p in procs:
            assert p.poll() is None, f"process {p.args[:3]} exited with {p.returncode} waiting for {what}: " + \
                "".join(log.read_text()[-3000:] for log in logs)
        time.sleep(2.0)
    raise AssertionError(f"timed out waiting for {what}: " + "".join(log.read_text()[-3000:] for log in logs))


def _stop(proc: subprocess.Popen, timeout_s: float = 90.0) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args[:3]} did not stop within {timeout_s} s of SIGTERM") from None


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV, start_new_session=True)


@pytest.fixture(scope="module")
def attached(tmp_path_factory) -> dict:
    """A playground with one slot and the slot's miner started from the printed command, both stopped."""
    tmp = tmp_path_factory.mktemp("playground")
    run_dir = tmp / "run"
    pg_log, miner_log = tmp / "playground.out", tmp / "miner.out"
    playground = _start([sys.executable, "scripts/localnet.py", *PLAYGROUND, "--windows", "0",
                         "--run-dir", str(run_dir)], pg_log)
    miner = None
    try:
        slots = _wait("slots.md", lambda: (run_dir / "slots.md").exists() and (run_dir / "slots.md").read_text(),
                      300, [playground], [pg_log])
        line = next(x for x in slots.splitlines() if x.startswith("python neurons/miner.py"))
        assert line in pg_log.read_text(), "the command is printed as well as written to slots.md"
        cmd = shlex.split(line)
        miner = _start([sys.executable, *cmd[1:]], miner_log)
        uid = _wait("the slot miner's first upload", lambda: next(
            (r["uid"] for r in _rows(run_dir / "metrics" / "ext-miner0.jsonl") if r["upload/on_time"]), None),
            300, [playground, miner], [pg_log, miner_log])

        def rated() -> list[dict]:
            got = [r["miners"].get(str(uid)) for r in _rows(run_dir / "metrics" / "validator0.jsonl")]
            return [m for m in got if m is not None and m["reason"] is None and m["rating"] is not None]
        verdicts = _wait("the slot miner admitted and rated", rated, 240, [playground, miner], [pg_log, miner_log])
        miner_rc = _stop(miner)
        playground_rc = _stop(playground)
    finally:
        for p in (miner, playground):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    return {"run_dir": run_dir, "uid": uid, "verdicts": verdicts, "miner_rc": miner_rc,
            "playground_rc": playground_rc, "log": pg_log}


@pytest.mark.slow
def test_slot_miner_is_admitted_rated_and_reported(attached):
    run_dir = attached["run_dir"]
    assert attached["miner_rc"] == 0 and attached["playground_rc"] == 0
    assert attached["verdicts"], "the validator admitted and rated the attached miner"
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["interrupted"] is True and report["windows"] >= 1
    by_name = {n["name"]: n for n in report["neurons"]}
    assert by_name["ext-miner0"]["kind"] == "external" and by_name["ext-miner0"]["uid"] == attached["uid"]
    assert by_name["miner0"]["kind"] == "honest"
    creds = json.loads((run_dir / "credentials" / "ext-miner0.json").read_text())
    assert creds["bucket"] == "ext-miner0" and creds["write_key_id"] != creds["read_key_id"]
    # nothing the playground started is left running: its ports are free again
    from template.harness.slots import check_ports_free, load_run_state

    state = load_run_state(run_dir)
    check_ports_free([state["chain_port"], *state["seaweed_ports"].values()])


@pytest.mark.slow
def test_resume_goes_on_from_the_stopped_run(attached):
    run_dir = attached["run_dir"]
    with sqlite3.connect(run_dir / "chain.sqlite") as db:
        stopped_at = db.execute("SELECT max(number) FROM blocks").fetchone()[0]
    before = {r["window"] for r in _rows(run_dir / "metrics" / "validator0.jsonl")}
    target = len(before) + 2
    out = subprocess.run([sys.executable, "scripts/localnet.py", "--resume", str(run_dir), "--windows", str(target)],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ext-miner0" in (run_dir / "slots.md").read_text()
    with sqlite3.connect(run_dir / "chain.sqlite") as db:
        assert db.execute("SELECT max(number) FROM blocks").fetchone()[0] > stopped_at
    rows = _rows(run_dir / "metrics" / "validator0.jsonl")
    new = [r for r in rows if r["window"] > max(before)]
    assert len({r["window"] for r in rows}) >= target and new
    # the run's own miner came back on its state and was admitted again after the resume
    miner0 = json.loads((run_dir / "report" / "report.json").read_text())
    uid0 = next(n["uid"] for n in miner0["neurons"] if n["name"] == "miner0")
    assert any(r["miners"].get(str(uid0), {}).get("reason", "absent") is None for r in new)
    assert miner0["interrupted"] is False


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    out = subprocess.run([sys.executable, "scripts/localnet.py", "--resume", str(tmp_path)], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: --resume {tmp_path}: no playground.json there "
                                               "(not a run started by scripts/localnet.py, or one that stopped "
                                               "before its setup finished)"]
