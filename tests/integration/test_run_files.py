"""Preflight and the pm2 run file against a real playground (scripts/localnet.py --slots miner:1: real localnet
node, real SeaweedFS, the run's own miner and validator running; issue 29).

The slot miner (`ext-miner0`) is not started by the playground. The tests start it as an operator would:
first wrongly (--device cuda on a CPU box, a storage endpoint nobody listens on, a short key id) - it
must stop with exit 2, a line per failed check, no traceback, and nothing published on chain; then
`--preflight` passes; then pm2 starts it from deploy/pm2/ecosystem.config.js, the test kills it with -9,
pm2 starts it again and it is back in sync and uploading on time. Slow: several minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
PLAYGROUND = ["--miners", "1", "--validators", "1", "--adversaries", "", "--slots", "miner:1", "--windows", "0"]

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _wait(what: str, cond, timeout_s: float, proc: subprocess.Popen, logs: list[Path]):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        assert proc.poll() is None, f"the playground exited with {proc.returncode} waiting for {what}"
        time.sleep(2.0)
    raise AssertionError(f"timed out waiting for {what}: " + "".join(p.read_text()[-3000:] for p in logs if p.exists()))


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runfiles")
    run_dir, log = tmp / "run", tmp / "playground.out"
    with log.open("a") as f:
        proc = subprocess.Popen([sys.executable, "scripts/localnet.py", *PLAYGROUND, "--run-dir", str(run_dir)],
                                stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV, start_new_session=True)
    try:
        slots = _wait("slots.md", lambda: (run_dir / "slots.md").exists() and (run_dir / "slots.md").read_text(),
                      400, proc, [log])
        line = next(x for x in slots.splitlines() if x.startswith("python neurons/miner.py"))
        yield {"tmp": tmp, "run_dir": run_dir, "log": log, "proc": proc, "args": shlex.split(line)[1:]}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _with(args: list[str], **flags: str) -> list[str]:
    out = list(args)
    for name, value in flags.items():
        flag = "--" + name.replace("__", ".")
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def _run(args: list[str], timeout_s: float = 300, keep: Path | None = None) -> subprocess.CompletedProcess:
    """Run a neuron command to its end; with `keep`, its command, output and status go to that file too
    (docs/operator.md quotes them)."""
    out = subprocess.run([sys.executable, *args, "--num_threads", "1"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=timeout_s)
    if keep is not None:
        keep.write_text(f"$ python {shlex.join(args)}\n{out.stdout}{out.stderr}$ echo $?\n{out.returncode}\n")
    return out


def _commitments(args: list[str]) -> dict[str, str]:
    from template.chain.localnet.client import LocalnetClient

    chain = LocalnetClient(_flag(args, "--subtensor.chain_endpoint"))
    chain.connect()
    return chain.commitments(int(_flag(args, "--netuid")))


def _slot_hotkey(args: list[str]) -> str:
    from bittensor_wallet import Wallet

    return Wallet(name=_flag(args, "--wallet.name"), hotkey="default", path=_flag(args, "--wallet.path")).hotkey.ss58_address


def test_a_wrong_start_stops_in_one_line_per_failure_and_publishes_nothing(playground):
    import torch

    args = playground["args"]
    creds = json.loads(Path(_flag(args, "--storage.credentials_file")).read_text())
    dead = playground["tmp"] / "dead-endpoint.json"
    dead.write_text(json.dumps({**creds, "endpoint": "http://127.0.0.1:9"}))  # nothing listens on port 9
    wrong = _with(args, storage__credentials_file=str(dead), device="cuda")
    out = _run(wrong, keep=playground["tmp"] / "transcript-wrong-start.txt")
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert "Traceback" not in text
    assert "preflight FAIL storage" in text
    if not torch.cuda.is_available():
        assert "preflight FAIL device" in text and "no CUDA device" in text
    assert _slot_hotkey(args) not in _commitments(args), "a failed preflight published the bucket commitment"

    short = playground["tmp"] / "short-key.json"
    short.write_text(json.dumps({**creds, "read_key_id": "ab"}))
    out = _run(_with(args, storage__credentials_file=str(short)), keep=playground["tmp"] / "transcript-short-key.txt")
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text
    assert [x for x in text.splitlines() if "preflight FAIL" in x] == \
        [x for x in text.splitlines() if "FAIL storage" in x and "access_key_id" in x]


def test_preflight_passes_on_the_slot(playground):
    out = _run([*playground["args"], "--preflight"], keep=playground["tmp"] / "transcript-preflight.txt")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    lines = [x for x in text.splitlines() if "| preflight " in x]
    names = [x.split("| preflight ", 1)[1].split()[1] for x in lines if "preflight passed" not in x]
    assert names == ["wallet", "state", "chain", "clock", "version", "storage", "hparams", "registered", "stake",
                     "endpoint", "dataset", "device", "memory", "disk"]
    assert all("| preflight ok " in x for x in lines[:-1]) and "preflight passed" in lines[-1]
    assert _slot_hotkey(playground["args"]) not in _commitments(playground["args"]), "--preflight publishes nothing"


def _pm2(env: dict, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pm2", *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _pm2_miner(env: dict) -> dict:
    apps = json.loads(_pm2(env, "jlist").stdout or "[]")
    return next((a for a in apps if a["name"] == "miner"), {})


@pytest.mark.skipif(shutil.which("pm2") is None, reason="pm2 absent (npm install -g pm2; scripts/setup_env.sh does)")
def test_pm2_restarts_a_killed_miner_back_in_sync(playground):
    args, tmp = playground["args"], playground["tmp"]
    metrics = tmp / "pm2-miner.jsonl"
    logs = tmp / "logs"
    env = {**ENV, "PM2_HOME": str(tmp / "pm2"), "SPARSELOCO_VENV": str(Path(sys.executable).parents[1]),
           "SPARSELOCO_NETUID": _flag(args, "--netuid"), "SPARSELOCO_NETWORK": "local",
           "SPARSELOCO_CHAIN_ENDPOINT": _flag(args, "--subtensor.chain_endpoint"),
           "SPARSELOCO_WALLET_PATH": _flag(args, "--wallet.path"), "SPARSELOCO_STATE_DIR": _flag(args, "--state_dir"),
           "SPARSELOCO_LOG_DIR": str(logs), "MINER_WALLET": _flag(args, "--wallet.name"), "MINER_HOTKEY": "default",
           "MINER_CREDENTIALS": _flag(args, "--storage.credentials_file"), "MINER_DEVICE": "cpu",
           "MINER_METRICS_FILE": str(metrics)}
    started = _pm2(env, "start", "deploy/pm2/ecosystem.config.js", "--only", "miner")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        (tmp / "transcript-pm2-start.txt").write_text(started.stdout + started.stderr)
        watch = [logs / "pm2-miner.err.log", logs / "pm2-miner.out.log", playground["log"]]

        def in_sync_after(count: int):
            rows = _rows(metrics)[count:]
            return next((r for r in rows if r["upload/on_time"] and r["sync/status"] == "in_sync"), None)
        first = _wait("the pm2 miner's first on-time upload", lambda: in_sync_after(0), 400, playground["proc"], watch)
        pid = _pm2_miner(env)["pid"]
        rows_before = len(_rows(metrics))
        killed_in = _rows(metrics)[-1]["window"]
        os.kill(pid, signal.SIGKILL)
        back = _wait("the restarted miner in sync", lambda: in_sync_after(rows_before), 400, playground["proc"], watch)
        app = _pm2_miner(env)
        assert app["pm2_env"]["restart_time"] >= 1 and app["pid"] != pid
        assert back["window"] > killed_in
        log_files = sorted(p.name for p in logs.iterdir())
        assert f"miner-{_flag(args, '--wallet.name')}-default.log" in log_files and not any(":" in n for n in log_files)
        print(f"first in-sync window {first['window']}, killed in window {killed_in}, "
              f"back in sync at window {back['window']} ({back['window'] - killed_in} later)")
        (tmp / "pm2-result.json").write_text(json.dumps({"first": first["window"], "killed": killed_in,
                                                         "back": back["window"]}))
    finally:
        _pm2(env, "delete", "all")
        _pm2(env, "kill")  # the pm2 daemon of this PM2_HOME, started by this test


def test_a_raised_weights_version_stops_neurons_with_what_to_install(playground):
    """The owner's upgrade lever: weights_version above this code's version_key. The preflight fails on it,
    and the playground's own running miner and validator stop at their next window with the one line."""
    from bittensor_wallet import Wallet

    from template.chain.localnet.client import LocalnetClient
    from template.node.preflight import run_preflight
    from template.protocol.config import parse_neuron_args
    from template.protocol.version import VERSION_KEY, version_of_key

    args, run_dir = playground["args"], playground["run_dir"]
    chain = LocalnetClient(_flag(args, "--subtensor.chain_endpoint"))
    chain.connect()
    owner = Wallet(name="owner", hotkey="default", path=_flag(args, "--wallet.path"))
    required = version_of_key(VERSION_KEY + 100)
    cfg = parse_neuron_args("miner", args[1:])  # args[0] is neurons/miner.py
    chain.set_hyperparameter(owner.coldkey, int(_flag(args, "--netuid")), "weights_version",
                             VERSION_KEY + 100).raise_for_error()
    # in this process, at once: the playground's own neurons stop within a window of the change, and the first
    # one to stop ends the playground (and its chain), so a preflight started seconds later finds no chain
    checks = {c.name: c for c in run_preflight(cfg)}
    (playground["tmp"] / "transcript-upgrade.txt").write_text("\n".join(c.line() for c in checks.values()) + "\n")
    assert checks["version"].status == "FAIL" and f">= {required}" in checks["version"].detail, checks["version"]
    needle = f"the subnet requires release >= {required}"
    logs = [run_dir / "logs" / "miner0.log", run_dir / "logs" / "validator0.log"]
    # the first neuron to stop (exit 2) ends the playground, which then stops the other: one line is enough
    deadline = time.time() + 300
    while time.time() < deadline and not any(needle in p.read_text() for p in logs):
        time.sleep(2.0)
    stopped = [p.name for p in logs if needle in p.read_text()]
    assert stopped, "no running neuron stopped on the raised weights_version: " + logs[0].read_text()[-2000:]
    for p in logs:
        assert "Traceback" not in p.read_text()
