"""A real Prometheus (Debian's `prometheus` binary, on loopback) scrapes a neuron's metrics exporter in
another process with deploy/prometheus/alerts.yml loaded; stopping that process fires
SparselocoNeuronDown. Skips, with the reason, when the prometheus binary is not installed."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# a miner's exporter with one window logged, in its own process (the target Prometheus sees stop)
EXPORTER = """
import sys, time
from template.node.metrics import PrometheusSink
sink = PrometheusSink(role="miner", state_dir=sys.argv[2])
sink.serve("127.0.0.1", int(sys.argv[1]))
sink.log({"role": "miner", "uid": 3, "hotkey": "5Miner3", "window": 7, "train/loss": 8.25,
          "train/tokens_per_s": 2000.0, "upload/bytes": 49068, "upload/s": 0.2, "upload/on_time": True,
          "sync/status": "in_sync"})
print("serving", flush=True)
time.sleep(600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout_s: float = 60.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def prometheus_exe() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus is not installed (scripts/setup_env.sh installs Debian's prometheus with apt-get)")
    return exe


def test_prometheus_scrapes_a_miner_and_fires_neuron_down_when_it_stops(prometheus_exe, tmp_path):
    # the deployed rules, with SparselocoNeuronDown's "for" cut from 1m so the test is short
    rules = yaml.safe_load(ALERTS.read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] == "SparselocoNeuronDown":
            rule["for"] = "2s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    target, web = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "sparseloco-miner", "static_configs": [
            {"targets": [f"127.0.0.1:{target}"], "labels": {"name": "miner0"}}]}]}))
    exporter = subprocess.Popen([sys.executable, "-c", EXPORTER, str(target), str(tmp_path)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
    prom = subprocess.Popen([prometheus_exe, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{web}/api/v1"

    def query(expr: str) -> list[dict]:
        try:
            return httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()["data"]["result"]
        except (httpx.TransportError, ValueError, KeyError):
            return []

    def alerts() -> dict[str, str]:
        try:
            got = httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
        except (httpx.TransportError, ValueError, KeyError):
            return {}
        return {a["labels"]["alertname"]: a["state"] for a in got}

    try:
        assert exporter.stdout is not None and exporter.stdout.readline().strip() == "serving"
        # scraped: the miner's own numbers, labelled by the scrape config
        loss = wait_for("the miner's train loss", lambda: query('sparseloco_train_loss{name="miner0"}'))
        assert float(loss[0]["value"][1]) == 8.25 and loss[0]["metric"]["job"] == "sparseloco-miner"
        info = query("sparseloco_neuron_info")[0]["metric"]
        assert (info["role"], info["uid"], info["hotkey"]) == ("miner", "3", "5Miner3")
        assert query("process_resident_memory_bytes") and query("sparseloco_disk_free_bytes")
        assert "SparselocoNeuronDown" not in alerts()
        exporter.terminate()
        exporter.wait(timeout=10)
        wait_for("SparselocoNeuronDown firing", lambda: alerts().get("SparselocoNeuronDown") == "firing")
        down = [a for a in httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
                if a["labels"]["alertname"] == "SparselocoNeuronDown"][0]
        assert down["labels"]["name"] == "miner0" and down["labels"]["severity"] == "critical"
        assert down["annotations"]["summary"] == f"sparseloco-miner 127.0.0.1:{target} is down: its metrics " \
                                                 "port does not answer"
    finally:
        for proc in (exporter, prom):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
