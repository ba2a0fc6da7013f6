"""Per-window metrics sinks (template/node/metrics.py): the Prometheus exporter scraped over HTTP."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from template.node import metrics
from template.node.metrics import MetricsLogger, PrometheusSink
from template.node.neuron import append_metrics
from template.protocol.config import parse_neuron_args

MINER_ROW = {"role": "miner", "uid": 3, "hotkey": "5Miner3", "window": 7, "train/loss": 8.25, "train/tokens_per_s": 2000.0,
             "upload/bytes": 49068, "upload/s": 0.2, "upload/on_time": True, "sync/status": "in_sync",
             "sync/window": 8}
VALIDATOR_ROW = {"role": "validator", "uid": 1, "hotkey": "5Val1", "window": 4, "eval/heldout_loss": 8.9,
                 "fetch/s": 0.4, "time/eval_s": 2.5, "sync/status": "lead:3", "weights_set": True,
                 "chain/block": 130, "chain/weights_block": 100, "miners": {
                     "3": {"hotkey": "5H3", "reason": None, "rating": 2.5, "score": 1.5, "weight": 0.6},
                     "4": {"hotkey": "5H4", "reason": None, "rating": 1.0, "score": 0.5, "weight": 0.4},
                     "6": {"hotkey": "5H6", "reason": "copy", "rating": -3.0, "score": 0.0, "weight": 0.0},
                     "7": {"hotkey": "5H7", "reason": "late", "rating": None, "score": 0.0, "weight": None}}}


def miner_labels(uid: str, hotkey: str, **more: str) -> tuple:
    return tuple(sorted({"uid": uid, "hotkey": hotkey, **more}.items()))


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
    assert got[("sparseloco_miner_rating", miner_labels("3", "5H3"))] == 2.5
    assert ("sparseloco_miner_rating", miner_labels("7", "5H7")) not in got  # never rated
    assert got[("sparseloco_miner_weight", miner_labels("4", "5H4"))] == 0.4
    assert got[("sparseloco_miner_compliant", miner_labels("4", "5H4"))] == 1
    assert got[("sparseloco_miner_compliant", miner_labels("6", "5H6"))] == 0
    assert got[("sparseloco_weights_set_total", ())] == 1
    assert got[("sparseloco_fetch_seconds_count", ())] == 2
    assert got[("sparseloco_fetch_seconds_sum", ())] == pytest.approx(0.8)
    assert got[("sparseloco_window_stage_seconds", (("stage", "eval"),))] == 2.5
    assert got[("sparseloco_in_sync", ())] == 1
    assert got[("sparseloco_neuron_info", (("hotkey", "5Val1"), ("role", "validator"), ("uid", "1")))] == 1
    # who is refused and why: uid and hotkey on each rejection
    assert got[("sparseloco_miner_rejections_total", miner_labels("6", "5H6", reason="copy"))] == 2
    assert got[("sparseloco_miner_rejections_total", miner_labels("7", "5H7", reason="late"))] == 2
    # the chain as the validator read it
    assert got[("sparseloco_chain_block", ())] == 130 and got[("sparseloco_chain_weights_block", ())] == 100
    assert got[("sparseloco_chain_blocks_since_weights", ())] == 30
    assert got[("sparseloco_miners", ())] == 4
    assert got[("sparseloco_window_end_timestamp_seconds", ())] > 0
    assert got[("process_resident_memory_bytes", ())] > 0 and ("process_open_fds", ()) in got


def test_each_role_exports_only_its_own_metrics():
    names = {}
    for role, row in (("miner", MINER_ROW), ("validator", VALIDATOR_ROW)):
        s = PrometheusSink(role=role)
        s.log(row)
        names[role] = {m.name for m in s.registry.collect()}
    assert "sparseloco_train_loss" in names["miner"] and "sparseloco_heldout_loss" not in names["miner"]
    assert "sparseloco_heldout_loss" in names["validator"] and "sparseloco_train_loss" not in names["validator"]
    assert "sparseloco_miner_rating" not in names["miner"]
    assert {"sparseloco_window", "sparseloco_in_sync", "process_resident_memory_bytes"} <= \
        names["miner"] & names["validator"]


def test_a_recycled_uid_does_not_continue_the_old_miners_series(sink):
    sink.log(VALIDATOR_ROW)
    recycled = {**VALIDATOR_ROW["miners"], "6": {"hotkey": "5New6", "reason": None, "rating": 0.0, "score": 0.2,
                                                 "weight": 0.1}}
    sink.log({**VALIDATOR_ROW, "window": 5, "miners": recycled})
    got = scrape(sink.port)
    old = [k for k in got if ("hotkey", "5H6") in k[1]]
    assert old == []  # rating, score, weight, compliant and rejections of the old hotkey: gone
    assert got[("sparseloco_miner_score", miner_labels("6", "5New6"))] == 0.2
    assert got[("sparseloco_miner_rating", miner_labels("3", "5H3"))] == 2.5  # others untouched
    # bounded: one series per uid for each per-miner gauge
    assert len([k for k in got if k[0] == "sparseloco_miner_score"]) == 4


def test_fields_a_row_adds_later_fill_their_gauges(sink):
    row = {**VALIDATOR_ROW, "miners": {"3": {"hotkey": "5H3", "reason": None, "score": 1.0, "rank": 1,
                                             "compliant": False}}}
    sink.log(row)
    got = scrape(sink.port)
    assert got[("sparseloco_miner_rank", miner_labels("3", "5H3"))] == 1
    assert got[("sparseloco_miner_compliant", miner_labels("3", "5H3"))] == 0  # the row's word wins


def test_disk_gauges_report_the_state_folders_file_system(tmp_path):
    s = PrometheusSink(role="miner", state_dir=tmp_path / "not-yet" / "state")
    got = {(x.name, x.labels.get("path")): x.value for m in s.registry.collect() for x in m.samples}
    total = got[("sparseloco_disk_total_bytes", str(tmp_path / "not-yet" / "state"))]
    assert 0 < got[("sparseloco_disk_free_bytes", str(tmp_path / "not-yet" / "state"))] <= total


def test_miner_row_is_scraped_with_upload_bytes_and_times(sink):
    sink.log(MINER_ROW)
    sink.log({**MINER_ROW, "window": 8, "upload/on_time": False, "upload/s": 3.0, "sync/status": "resynced"})
    sink.log({**MINER_ROW, "window": 9, "upload/bytes": 0, "train/loss": None})  # nothing uploaded
    got = scrape(sink.port)
    assert got[("sparseloco_uploads_skipped_total", ())] == 1
    assert got[("sparseloco_window_duration_seconds", ())] >= 0
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


def test_the_clocks_chain_head_reads_reach_the_exporter(sink):
    MetricsLogger([sink]).chain_head(4321)
    assert scrape(sink.port)[("sparseloco_chain_block", ())] == 4321
    MetricsLogger([]).chain_head(1)  # no sinks: nothing to do


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("0123"), st.sampled_from(["5A", "5B", "5C"]), min_size=1),
                min_size=1, max_size=6))
def test_per_miner_series_are_one_per_uid_labelled_with_its_latest_hotkey(windows):
    s = PrometheusSink(role="validator")
    latest: dict[str, str] = {}
    for i, owners in enumerate(windows):
        s.log({"role": "validator", "uid": 0, "window": i, "miners": {
            uid: {"hotkey": hk, "reason": "copy" if uid == "1" else None, "score": 0.5, "rating": 1.0}
            for uid, hk in owners.items()}})
        latest.update(owners)
    for m in s.registry.collect():
        if m.name.startswith("sparseloco_miner_"):
            seen = {(x.labels["uid"], x.labels["hotkey"]) for x in m.samples}
            assert all(latest[uid] == hk for uid, hk in seen), m.name
            assert len({uid for uid, _ in seen}) == len(seen)


def test_no_gpu_gauges_without_cuda_and_an_empty_collector_is_harmless():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here: test_gpu_gauges_read_the_devices_memory covers it")
    names = {m.name for m in PrometheusSink(role="miner").registry.collect()}
    assert not any("gpu" in n for n in names)
    assert all(m.samples == [] for m in metrics.GpuCollector().collect())  # no device: families, no samples


@pytest.mark.gpu
def test_gpu_gauges_read_the_devices_memory():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    held = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda:0")  # 64 MiB
    got = {(x.name, x.labels["device"]): x.value for m in PrometheusSink(role="miner").registry.collect()
           if m.name.startswith("sparseloco_gpu") for x in m.samples}
    assert got[("sparseloco_gpu_memory_allocated_bytes", "0")] >= held.numel()
    assert 0 < got[("sparseloco_gpu_memory_free_bytes", "0")] < got[("sparseloco_gpu_memory_total_bytes", "0")]


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
    assert got[("sparseloco_miner_gain", miner_labels("3", "5H3"))] == pytest.approx(0.03)
    assert got[("sparseloco_miner_compliant", miner_labels("4", "5H4"))] == 0
    assert got[("sparseloco_miner_compliant", miner_labels("6", "5H6"))] == -1
    assert got[("sparseloco_miner_contribution", miner_labels("3", "5H3"))] == pytest.approx(0.02)
    assert got[("sparseloco_miner_compliance", miner_labels("4", "5H4"))] == pytest.approx(0.4)
    assert got[("sparseloco_miner_rank", miner_labels("3", "5H3"))] == 1 and got[("sparseloco_miner_rank", miner_labels("4", "5H4"))] == 0
    assert got[("sparseloco_miner_zero_reason", miner_labels("4", "5H4", reason="not_compliant"))] == 1
    # next window uid 4 is paid again: its old reason is gone, not left at 1
    row["miners"]["4"] = {**row["miners"]["4"], "why": None, "rank": 2, "compliant": True}
    sink.log({**row, "window": 5})
    got = scrape(sink.port)
    assert ("sparseloco_miner_zero_reason", miner_labels("4", "5H4", reason="not_compliant")) not in got
    assert got[("sparseloco_miner_zero_reason", miner_labels("6", "5H6", reason="copy"))] == 1
