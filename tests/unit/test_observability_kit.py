"""The observability kit in deploy/: the Prometheus scrape config and alert rules (checked and
unit-tested by promtool), and the Grafana dashboard, whose every query names a metric the neurons
export (template/node/metrics.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from template.node.metrics import GpuCollector, PrometheusSink

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana" / "sparseloco.json"
# series Prometheus makes itself for every target
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "inf", "nan"}

MINER_ROW = {"role": "miner", "uid": 3, "hotkey": "5M", "window": 7, "train/loss": 8.0, "train/tokens_per_s": 9.0,
             "upload/bytes": 10, "upload/s": 0.2, "upload/on_time": True, "sync/status": "in_sync"}
VALIDATOR_ROW = {"role": "validator", "uid": 1, "hotkey": "5V", "window": 4, "eval/heldout_loss": 8.9,
                 "fetch/s": 0.4, "time/eval_s": 1.0, "sync/status": "lead:1", "weights_set": True,
                 "chain/block": 130, "chain/weights_block": 100,
                 "miners": {"3": {"hotkey": "5M", "reason": "late", "rating": 1.0, "score": 0.5, "weight": 0.2,
                                  "rank": 1, "compliant": True}}}


def exported_names(tmp_path: Path) -> set[str]:
    """Every series name the two roles export after one window each, GPU gauges included."""
    names = set(PROMETHEUS_OWN)
    for role, row in (("miner", MINER_ROW), ("validator", VALIDATOR_ROW)):
        sink = PrometheusSink(role=role, state_dir=tmp_path)
        sink.log(row)
        sink.log({**row, "window": row["window"] + 1})
        names |= {s.name for m in sink.registry.collect() for s in m.samples}
    names |= {m.name for m in GpuCollector().collect()}  # families even with no CUDA device here
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: label matchers, ranges, strings, grouping
    clauses and function calls stripped; what is left that looks like a name is a metric."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)
    return {tok for tok in re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", expr)
            if tok not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", tok)}


def grafana_exprs(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.sub(r"label_values\(([^,)]+).*", r"\1", var["query"]["query"]))
    return exprs


def test_metric_names_helper():
    assert metric_names('sum by (uid, le) (rate(a_total{x="b c", y=~"$i"}[5m])) / b_bytes > 0 and on (h) c') == \
        {"a_total", "b_bytes", "c"}
    assert metric_names("time() - x_seconds > 900") == {"x_seconds"}


def test_every_grafana_query_names_a_metric_the_neurons_export(tmp_path):
    dash = json.loads(GRAFANA.read_text())
    exprs = grafana_exprs(dash)
    assert len(exprs) >= 30
    exported = exported_names(tmp_path)
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - exported == set(), "the dashboard queries metrics no neuron exports"
    # the per-miner series are on the board, each by uid and hotkey
    for name in ("rating", "score", "weight", "rank", "compliant"):
        assert f"sparseloco_miner_{name}" in used
    assert {"process_resident_memory_bytes", "sparseloco_chain_blocks_since_weights",
            "sparseloco_gpu_memory_allocated_bytes", "sparseloco_disk_free_bytes"} <= used


def test_every_alert_rule_names_a_metric_the_neurons_export(tmp_path):
    rules = [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "SparselocoNeuronDown", "SparselocoWindowStalled", "SparselocoOutOfSync", "SparselocoUploadsLate",
        "SparselocoUploadsMissing", "SparselocoMyUidRejected", "SparselocoWeightsNotSet",
        "SparselocoChainHeadStalled", "SparselocoFetchTimeoutsRising", "SparselocoDiskLow"}
    exported = exported_names(tmp_path)
    for r in rules:
        assert metric_names(r["expr"]) - exported == set(), r["alert"]


def test_the_docs_scrape_config_is_the_deployed_ones_jobs():
    deployed = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in deployed["scrape_configs"]}
    for doc in ("miner.md", "validator.md"):
        block = re.search(r"```yaml\n(scrape_configs:.*?)```", (ROOT / "docs" / doc).read_text(), re.S)
        assert block, doc
        assert {j["job_name"] for j in yaml.safe_load(block.group(1))["scrape_configs"]} <= jobs


@pytest.fixture
def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (scripts/setup_env.sh installs Debian's prometheus with apt-get)")
    return exe


def test_promtool_checks_the_config_and_passes_the_alert_unit_tests(promtool):
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    # every alert has at least one unit test that expects it to fire
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    rules = {r["alert"] for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert fired == rules


def test_localnet_writes_a_scrape_config_for_its_neurons(tmp_path):
    from template.harness.localnet import Neuron, write_prometheus_config

    neurons = [Neuron(name=name, role=role, kind=kind, wallet=None, bucket=name)  # type: ignore[arg-type]
               for name, role, kind in (("validator0", "validator", "validator"), ("miner0", "miner", "honest"),
                                        ("copycat0", "miner", "copycat"))]
    path = write_prometheus_config(tmp_path, neurons, 19101)
    assert [n.metrics_port for n in neurons] == [19101, 19102, 19103]
    config = yaml.safe_load(path.read_text())
    jobs = {j["job_name"]: [(t["targets"][0], t["labels"]["name"]) for t in j["static_configs"]]
            for j in config["scrape_configs"]}
    assert jobs == {"sparseloco-validator": [("127.0.0.1:19101", "validator0")],
                    "sparseloco-miner": [("127.0.0.1:19102", "miner0"), ("127.0.0.1:19103", "copycat0")]}
    assert config["rule_files"] == [str(PROM / "alerts.yml")]
    if shutil.which("promtool"):
        done = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
