"""The localnet report's text and Markdown forms (scripts/localnet_report.py)."""

from __future__ import annotations

from template.harness.report import format_markdown, format_report

REPORT = {
    "windows": 2, "loss": [9.0, 8.1], "loss_drop": 0.1, "wall_s": 12.5, "checkpoints": ["k"],
    "rejections": {"copy": 2, "late": 1},
    "events": [{"window": 1, "event": "kill_miner", "name": "miner0", "what": "kill -9 of miner0",
                "outcome": "rejoined in sync"}],
    "neurons": [
        {"uid": 2, "name": "miner0", "role": "miner", "kind": "honest", "weight": 0.9, "incentive": 0.9,
         "dividends": 0.0, "emission_alpha": 12.0, "rating": 5.0},
        {"uid": 0, "name": "owner", "role": "owner", "kind": "owner", "weight": 0.1, "incentive": 0.1,
         "dividends": 0.0, "emission_alpha": 3.0, "rating": 0.0},
    ],
}


def test_text_report_lists_loss_neurons_rejections_and_events():
    text = format_report(REPORT)
    assert "loss drop: 10.0%" in text and "copy=2, late=1" in text
    assert text.index("owner") < text.index("miner0")  # by uid
    assert "kill -9 of miner0: rejoined in sync" in text


def test_markdown_report_has_a_row_per_neuron():
    md = format_markdown(REPORT)
    assert "9.000 -> 8.100 (10.0% lower)" in md
    assert "| 2 | miner0 | miner | honest | 0.900 |" in md
    assert "`copy` 2" in md and "- kill -9 of miner0: rejoined in sync" in md


def test_both_forms_show_the_data_each_miner_fetched_per_window():
    neurons = [dict(REPORT["neurons"][0], data_bytes_per_window=13_210), REPORT["neurons"][1]]
    report = dict(REPORT, neurons=neurons)
    assert "data fetched per miner per window (mean): miner0 12.9 KiB" in format_report(report)
    assert "per window (mean, pages of the paged corpus): miner0 12.9 KiB." in format_markdown(report)
    assert "data fetched" not in format_report(REPORT)  # older reports have no such field
