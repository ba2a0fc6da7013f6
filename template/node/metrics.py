"""Per-window metrics: one `MetricsLogger` with sinks that share one interface.

The loops build one row (a flat dict, plus `miners` for a validator) per window and hand it to
`append_metrics` (template/node/neuron.py); every sink gets the same row:

- `JsonlSink`: one JSON line per window in --metrics_file (the localnet report and dashboard read it).
- `PrometheusSink`: gauges, counters and histograms served over HTTP on --metrics.port
  (prometheus-client), for Grafana. Off unless the port is set.

The process-wide logger is a no-op until the entry point calls `configure_metrics(cfg)`
(nothing runs at import).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from template.protocol.config import NeuronConfig

NAMESPACE = "sparseloco"
# upload and fetch times: a few ms on a local SeaweedFS up to the tens of seconds a slow link takes
SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricsSink(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends each row as one JSON line (sorted keys) to `path`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def log(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")

    def close(self) -> None:
        pass


class PrometheusSink:
    """Prometheus metrics from the per-window rows, on its own registry.

    `serve(host, port)` starts the exporter thread (port 0: any free port; `port` then says which).
    Validator rows label per-miner gauges by `uid`; rejections are counted by `reason`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.port: int | None = None
        self._server: Any = None
        r, ns = self.registry, NAMESPACE
        self.info = Gauge("neuron_info", "1, labelled with the neuron's role and uid", ["role", "uid"],
                          namespace=ns, registry=r)
        self.window = Gauge("window", "last window this neuron finished", namespace=ns, registry=r)
        self.windows = Counter("windows", "windows finished since start", namespace=ns, registry=r)
        self.in_sync = Gauge("in_sync", "1 if the last window ended in sync with the network's model",
                             namespace=ns, registry=r)
        # miner
        self.train_loss = Gauge("train_loss", "mean inner-step training loss of the last window",
                                namespace=ns, registry=r)
        self.tokens_per_s = Gauge("train_tokens_per_second", "training throughput of the last window",
                                  namespace=ns, registry=r)
        self.upload_bytes = Gauge("last_upload_bytes", "size of the last uploaded update (bytes)", namespace=ns,
                                  registry=r)
        self.upload_bytes_total = Counter("uploaded_bytes", "bytes uploaded since start", namespace=ns,
                                          registry=r)
        self.upload_seconds = Histogram("upload_seconds", "time to upload one update", namespace=ns,
                                        registry=r, buckets=SECONDS_BUCKETS)
        self.uploads = Counter("uploads", "updates uploaded, by whether they made the deadline", ["on_time"],
                               namespace=ns, registry=r)
        # validator
        self.heldout_loss = Gauge("heldout_loss", "held-out loss of the global model at the window's start",
                                  namespace=ns, registry=r)
        self.admissions = Counter("admissions", "uploads admitted for scoring", namespace=ns, registry=r)
        self.rejections = Counter("rejections", "uploads rejected, by reason", ["reason"], namespace=ns,
                                  registry=r)
        self.fetch_seconds = Histogram("fetch_seconds", "time to fetch all miners' uploads of a window",
                                       namespace=ns, registry=r, buckets=SECONDS_BUCKETS)
        self.rating = Gauge("miner_rating", "a miner's rating (ordinal) after the window", ["uid"], namespace=ns,
                            registry=r)
        self.score = Gauge("miner_score", "a miner's score in the window", ["uid"], namespace=ns, registry=r)
        self.weight = Gauge("miner_weight", "the weight last set for a miner", ["uid"], namespace=ns, registry=r)
        self.weights_set = Counter("weights_set", "times this validator set weights", namespace=ns, registry=r)
        # why a miner earns what it earns (gauntlet/pay.py)
        self.gain = Gauge("miner_gain", "a miner's relative loss drop on the private random batch in the window",
                          ["uid"], namespace=ns, registry=r)
        self.compliant = Gauge("miner_compliant", "1 if the window's update passed the compliance test, 0 if not, "
                               "-1 when it was not evaluated", ["uid"], namespace=ns, registry=r)
        self.contribution = Gauge("miner_contribution", "a miner's contribution average (its pay score under "
                                  "pay_score=contribution)", ["uid"], namespace=ns, registry=r)
        self.compliance = Gauge("miner_compliance", "a miner's compliance average (gates and scales its pay)",
                                ["uid"], namespace=ns, registry=r)
        self.rank = Gauge("miner_rank", "a miner's rank among the positive final scores (0: not paid)", ["uid"],
                          namespace=ns, registry=r)
        self.zero_reason = Gauge("miner_zero_reason", "1 for the reason a miner's final score is 0 this window",
                                 ["uid", "reason"], namespace=ns, registry=r)
        self._zero_reasons: dict[str, str] = {}  # uid -> the reason label set now (removed when it changes)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP exporter on host:port; return the port it listens on."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self._server.server_port)
        return self.port

    def log(self, row: dict[str, Any]) -> None:
        self.info.labels(role=str(row.get("role", "")), uid=str(row.get("uid", ""))).set(1)
        self.window.set(row["window"])
        self.windows.inc()
        if "sync/status" in row:
            status = str(row["sync/status"])  # in_sync | resynced | no_lead | lead:<peers> (the lead itself)
            self.in_sync.set(1.0 if status == "in_sync" or status.startswith("lead") else 0.0)
        if row.get("role") == "miner":
            self._log_miner(row)
        elif row.get("role") == "validator":
            self._log_validator(row)

    def _log_miner(self, row: dict[str, Any]) -> None:
        if row.get("train/loss") is not None:
            self.train_loss.set(row["train/loss"])
        if row.get("train/tokens_per_s") is not None:
            self.tokens_per_s.set(row["train/tokens_per_s"])
        if row.get("upload/bytes"):
            self.upload_bytes.set(row["upload/bytes"])
            self.upload_bytes_total.inc(row["upload/bytes"])
            self.upload_seconds.observe(row["upload/s"])
            self.uploads.labels(on_time=str(bool(row["upload/on_time"])).lower()).inc()

    def _log_validator(self, row: dict[str, Any]) -> None:
        if row.get("eval/heldout_loss") is not None:
            self.heldout_loss.set(row["eval/heldout_loss"])
        if row.get("fetch/s") is not None:
            self.fetch_seconds.observe(row["fetch/s"])
        if row.get("weights_set"):
            self.weights_set.inc()
        for uid, m in row.get("miners", {}).items():
            if m.get("reason"):
                self.rejections.labels(reason=m["reason"]).inc()
            else:
                self.admissions.inc()
            if m.get("rating") is not None:
                self.rating.labels(uid=uid).set(m["rating"])
            self.score.labels(uid=uid).set(m.get("score") or 0.0)
            if m.get("weight") is not None:
                self.weight.labels(uid=uid).set(m["weight"])
            self._log_why(uid, m)

    def _log_why(self, uid: str, m: dict[str, Any]) -> None:
        if m.get("improvement_random") is not None:
            self.gain.labels(uid=uid).set(m["improvement_random"])
        if "compliant" in m:
            self.compliant.labels(uid=uid).set(-1.0 if m["compliant"] is None else float(bool(m["compliant"])))
        for gauge, key in ((self.contribution, "contribution"), (self.compliance, "compliance")):
            if m.get(key) is not None:
                gauge.labels(uid=uid).set(m[key])
        if "rank" in m:
            self.rank.labels(uid=uid).set(m["rank"] or 0)
        reason = m.get("why") or ""
        previous = self._zero_reasons.pop(uid, None)
        if previous is not None and previous != reason:
            self.zero_reason.remove(uid, previous)
        if reason:
            self.zero_reason.labels(uid=uid, reason=reason).set(1)
            self._zero_reasons[uid] = reason

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class MetricsLogger:
    """Fans each row out to its sinks; with no sinks it does nothing. A failing sink is logged
    and skipped: metrics never stop a window."""

    def __init__(self, sinks: list[MetricsSink] | None = None) -> None:
        self.sinks: list[MetricsSink] = list(sinks or [])

    def log(self, row: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.log(row)
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.bind(window=row.get("window")).warning(f"metrics sink {type(sink).__name__} failed: {e}")

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


_process_logger = MetricsLogger()


def configure_metrics(cfg: NeuronConfig) -> MetricsLogger:
    """Build the process's extra sinks from the config (Prometheus when --metrics.port > 0).

    The JSON lines file is written by `append_metrics` itself (it names its path per call).
    Raises OSError when the port cannot be bound.
    """
    global _process_logger
    _process_logger.close()
    sinks: list[MetricsSink] = []
    if cfg.metrics.port:
        prom = PrometheusSink()
        port = prom.serve(cfg.metrics.host, cfg.metrics.port)
        logger.info(f"prometheus metrics on http://{cfg.metrics.host}:{port}/metrics")
        sinks.append(prom)
    _process_logger = MetricsLogger(sinks)
    return _process_logger


def process_metrics() -> MetricsLogger:
    """The process-wide logger (`configure_metrics` replaces it; a no-op before)."""
    return _process_logger
