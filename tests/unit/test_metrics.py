"""Per-window metrics sinks (template/node/metrics.py): the Prometheus exporter scraped over HTTP."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from template.node import metrics
from template.node.metrics import MetricsLogger, PrometheusSink
from template.node.neuron import append_metrics
from template.protocol.config import parse_neuron_args

MINER_ROW = {"role": "miner", "uid": 3, "window": 7, "train/loss": 8.25, "train/tokens_per_s": 2000.0,
             "upload/bytes": 49068, "upload/s": 0.2, "upload/on_time": True, "sync/status": "in_sync",
             "sync/window": 8}
VALIDATOR_ROW = {"role": "validator", "uid": 1, "window": 4, "eval/heldout_loss": 8.9, "fetch/s": 0.4,
                 "sync/status": "lead:3", "weights_set": True, "miners": {
                     "3": {"reason": None, "rating": 2.5, "score": 1.5, "weight": 0.6},
                     "4": {"reason": None, "rating": 1.0, "score": 0.5, "weight": 0.4},
                     "6": {"reason": "copy", "rating": -3.0, "score": 0.0, "weight": 0.0},
                     "7": {"reason": "late", "rating": None, "score": 0.0, "weight": None}}}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
def sink():
    s = PrometheusSink()
    s.serve("127.0.0.1", 0)
    yield s
    s.close()


def test_validator_row_is_scraped_with_loss_admissions_rejections_ratings_and_weights(sink):
    sink.log(VALIDATOR_ROW)
    sink.log({**VALIDATOR_ROW, "window": 5, "eval/heldout_loss": 8.7, "weights_set": False})
    got = scrape(sink.port)
    assert got[("sparseloco_window", ())] == 5
    assert got[("sparseloco_heldout_loss", ())] == pytest.approx(8.7)
    assert got[("sparseloco_admissions_total", ())] == 4
    assert got[("sparseloco_rejections_total", (("reason", "copy"),))] == 2
    assert got[("sparseloco_rejections_total", (("reason", "late"),))] == 2
    assert got[("sparseloco_miner_rating", (("uid", "3"),))] == 2.5
    assert ("sparseloco_miner_rating", (("uid", "7"),)) not in got  # never rated
    assert got[("sparseloco_miner_weight", (("uid", "4"),))] == 0.4
    assert got[("sparseloco_weights_set_total", ())] == 1
    assert got[("sparseloco_fetch_seconds_count", ())] == 2
    assert got[("sparseloco_fetch_seconds_sum", ())] == pytest.approx(0.8)
    assert got[("sparseloco_in_sync", ())] == 1
    assert got[("sparseloco_neuron_info", (("role", "validator"), ("uid", "1")))] == 1


def test_miner_row_is_scraped_with_upload_bytes_and_times(sink):
    sink.log(MINER_ROW)
    sink.log({**MINER_ROW, "window": 8, "upload/on_time": False, "upload/s": 3.0, "sync/status": "resynced"})
    sink.log({**MINER_ROW, "window": 9, "upload/bytes": 0, "train/loss": None})  # nothing uploaded
    got = scrape(sink.port)
    assert got[("sparseloco_window", ())] == 9 and got[("sparseloco_windows_total", ())] == 3
    assert got[("sparseloco_train_loss", ())] == 8.25
    assert got[("sparseloco_last_upload_bytes", ())] == 49068
    assert got[("sparseloco_uploaded_bytes_total", ())] == 2 * 49068
    assert got[("sparseloco_uploads_total", (("on_time", "true"),))] == 1
    assert got[("sparseloco_uploads_total", (("on_time", "false"),))] == 1
    assert got[("sparseloco_upload_seconds_sum", ())] == pytest.approx(3.2)
    assert got[("sparseloco_upload_seconds_bucket", (("le", "0.25"),))] == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_port_flag_feeds_append_metrics_rows_to_the_exporter(tmp_path):
    port = free_port()
    cfg = parse_neuron_args("miner", ["--metrics.port", str(port)])
    assert cfg.metrics.port == port and cfg.metrics.host == "127.0.0.1"
    try:
        metrics.configure_metrics(cfg)
        append_metrics(str(tmp_path / "m.jsonl"), MINER_ROW)
        assert scrape(port)[("sparseloco_train_loss", ())] == 8.25
        assert json.loads((tmp_path / "m.jsonl").read_text())["window"] == 7  # the JSON lines file too
    finally:
        metrics.configure_metrics(parse_neuron_args("miner", []))  # off again: closes the exporter
    assert metrics.process_metrics().sinks == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_bad_port_is_refused_and_a_failing_sink_does_not_stop_the_others():
    with pytest.raises(SystemExit):
        parse_neuron_args("validator", ["--metrics.port", "70000"])

    class Broken:
        def log(self, row):
            raise OSError("disk full")

        def close(self):
            pass

    seen = []

    class Keep:
        def log(self, row):
            seen.append(row["window"])

        def close(self):
            pass

    MetricsLogger([Broken(), Keep()]).log({"window": 3})
    assert seen == [3]


def test_validator_row_says_why_each_miner_earns_what_it_earns(sink):
    """Issue 31: gain, compliance test, averages, rank and the reason for a zero, per miner."""
    why = {"3": {"improvement_random": 0.03, "compliant": True, "contribution": 0.02, "compliance": 0.9, "rank": 1,
                 "why": None},
           "4": {"improvement_random": 0.02, "compliant": False, "contribution": 0.01, "compliance": 0.4,
                 "rank": None, "why": "not_compliant"},
           "6": {"compliant": None, "contribution": 0.0, "compliance": 0.2, "rank": None, "why": "copy"}}
    row = {**VALIDATOR_ROW, "miners": {u: {**VALIDATOR_ROW["miners"][u], **why[u]} for u in why}}
    sink.log(row)
    got = scrape(sink.port)
    assert got[("sparseloco_miner_gain", (("uid", "3"),))] == pytest.approx(0.03)
    assert got[("sparseloco_miner_compliant", (("uid", "4"),))] == 0
    assert got[("sparseloco_miner_compliant", (("uid", "6"),))] == -1
    assert got[("sparseloco_miner_contribution", (("uid", "3"),))] == pytest.approx(0.02)
    assert got[("sparseloco_miner_compliance", (("uid", "4"),))] == pytest.approx(0.4)
    assert got[("sparseloco_miner_rank", (("uid", "3"),))] == 1 and got[("sparseloco_miner_rank", (("uid", "4"),))] == 0
    assert got[("sparseloco_miner_zero_reason", (("reason", "not_compliant"), ("uid", "4")))] == 1
    # next window uid 4 is paid again: its old reason is gone, not left at 1
    row["miners"]["4"] = {**row["miners"]["4"], "why": None, "rank": 2, "compliant": True}
    sink.log({**row, "window": 5})
    got = scrape(sink.port)
    assert ("sparseloco_miner_zero_reason", (("reason", "not_compliant"), ("uid", "4"))) not in got
    assert got[("sparseloco_miner_zero_reason", (("reason", "copy"), ("uid", "6")))] == 1
