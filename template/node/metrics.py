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

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from loguru import logger
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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


# Per-miner gauges a validator exports, each labelled uid and hotkey (`m` in the row's `miners`):
# row key -> (metric name, help). A key a row does not carry leaves that miner's gauge alone, so
# fields added later (issue 31's rank and compliance) slot in by appearing in the rows.
MINER_GAUGES: dict[str, tuple[str, str]] = {
    "rating": ("miner_rating", "a miner's rating (ordinal) after the window"),
    "score": ("miner_score", "a miner's score in the window"),
    "weight": ("miner_weight", "the weight this validator last set for a miner"),
    "rank": ("miner_rank", "a miner's rank among the paid (1: best; 0: not paid)"),
    "compliant": ("miner_compliant", "1 if the window's update passed the compliance test, 0 if not, -1 when it "
                  "was not evaluated (rows without the test: 1 when admitted)"),
    # why a miner earns what it earns (gauntlet/pay.py)
    "improvement_random": ("miner_gain", "a miner's relative loss drop on the private random batch in the window"),
    "contribution": ("miner_contribution", "a miner's contribution average (its pay score under "
                     "pay_score=contribution)"),
    "compliance": ("miner_compliance", "a miner's compliance average (gates and scales its pay)"),
}
ROLES = ("miner", "validator")


class PrometheusSink:
    """Prometheus metrics from the per-window rows, on its own registry.

    `role` registers that role's metrics only (a validator exports no train loss, a miner no held-out
    loss); None registers them on the first row of each role seen. `serve(host, port)` starts the
    exporter thread (port 0: any free port; `port` then says which). Per-miner series (validator) are
    labelled uid and hotkey; when a uid's hotkey changes every series of the old hotkey is removed,
    so a recycled uid starts fresh. `state_dir` (when given) is the folder whose disk is reported.
    Process (RSS, CPU, open fds) and, when CUDA is present, GPU memory gauges are read at scrape time.
    """

    def __init__(self, role: str | None = None, state_dir: str | Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.port: int | None = None
        self._server: Any = None
        self._roles: set[str] = set()
        self._hotkeys: dict[str, str] = {}  # uid -> hotkey its per-miner series are labelled with
        self._last_window_end: float | None = None
        r, ns = self.registry, NAMESPACE
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds
        self.info = Gauge("neuron_info", "1, labelled with the neuron's role, uid and hotkey",
                          ["role", "uid", "hotkey"], namespace=ns, registry=r)
        self.window = Gauge("window", "last window this neuron finished", namespace=ns, registry=r)
        self.windows = Counter("windows", "windows finished since start", namespace=ns, registry=r)
        self.window_end = Gauge("window_end_timestamp_seconds", "unix time the last window finished",
                                namespace=ns, registry=r)
        self.window_seconds = Gauge("window_duration_seconds", "wall time between the last two finished windows",
                                    namespace=ns, registry=r)
        self.in_sync = Gauge("in_sync", "1 if the last window ended in sync with the network's model",
                             namespace=ns, registry=r)
        self.chain_block = Gauge("chain_block", "chain head block this neuron last read", namespace=ns, registry=r)
        if state_dir is not None:
            r.register(DiskCollector(Path(state_dir).expanduser()))
        if gpu_present():
            r.register(GpuCollector())
        if role is not None:
            self._register_role(role)

    def _register_role(self, role: str) -> None:
        if role in self._roles or role not in ROLES:
            return
        self._roles.add(role)
        r, ns = self.registry, NAMESPACE
        if role == "miner":
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
            self.uploads_skipped = Counter("uploads_skipped", "windows that ended with nothing uploaded",
                                           namespace=ns, registry=r)
            return
        self.heldout_loss = Gauge("heldout_loss", "held-out loss of the global model at the window's start",
                                  namespace=ns, registry=r)
        self.admissions = Counter("admissions", "uploads admitted for scoring", namespace=ns, registry=r)
        self.rejections = Counter("rejections", "uploads rejected, by reason", ["reason"], namespace=ns,
                                  registry=r)
        self.miner_rejections = Counter("miner_rejections", "a miner's uploads rejected, by reason",
                                        ["uid", "hotkey", "reason"], namespace=ns, registry=r)
        self.fetch_seconds = Histogram("fetch_seconds", "time to fetch all miners' uploads of a window",
                                       namespace=ns, registry=r, buckets=SECONDS_BUCKETS)
        self.stage_seconds = Gauge("window_stage_seconds", "time the last window spent in each stage", ["stage"],
                                   namespace=ns, registry=r)
        self.miner_gauges = {key: Gauge(name, doc, ["uid", "hotkey"], namespace=ns, registry=r)
                             for key, (name, doc) in MINER_GAUGES.items()}
        self.miners = Gauge("miners", "miners judged in the last window", namespace=ns, registry=r)
        self.weights_set = Counter("weights_set", "times this validator set weights", namespace=ns, registry=r)
        self.weights_block = Gauge("chain_weights_block", "block of this validator's last weights on chain",
                                   namespace=ns, registry=r)
        self.blocks_since_weights = Gauge("chain_blocks_since_weights",
                                          "blocks between the chain head and this validator's last weights",
                                          namespace=ns, registry=r)
        # why a miner's final score is 0 this window (gauntlet/pay.py): one series per miner at most
        self.zero_reason = Gauge("miner_zero_reason", "1 for the reason a miner's final score is 0 this window",
                                 ["uid", "hotkey", "reason"], namespace=ns, registry=r)
        self._zero_reasons: dict[str, tuple[str, str]] = {}  # uid -> (hotkey, reason) of the series set now

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP exporter on host:port; return the port it listens on."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self._server.server_port)
        return self.port

    def log(self, row: dict[str, Any]) -> None:
        role = str(row.get("role", ""))
        self._register_role(role)
        self.info.labels(role=role, uid=str(row.get("uid", "")), hotkey=str(row.get("hotkey", ""))).set(1)
        self.window.set(row["window"])
        self.windows.inc()
        now = time.time()
        if self._last_window_end is not None:
            self.window_seconds.set(now - self._last_window_end)
        self._last_window_end = now
        self.window_end.set(now)
        if "sync/status" in row:
            status = str(row["sync/status"])  # in_sync | resynced | no_lead | lead:<peers> (the lead itself)
            self.in_sync.set(1.0 if status == "in_sync" or status.startswith("lead") else 0.0)
        if row.get("chain/block") is not None:
            self.chain_block.set(row["chain/block"])
        if role == "miner":
            self._log_miner(row)
        elif role == "validator":
            self._log_validator(row)

    def chain_head(self, block: int) -> None:
        """The chain head as the neuron just read it (its clock polls it while it waits for a block)."""
        self.chain_block.set(block)

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
        else:
            self.uploads_skipped.inc()

    def _log_validator(self, row: dict[str, Any]) -> None:
        if row.get("eval/heldout_loss") is not None:
            self.heldout_loss.set(row["eval/heldout_loss"])
        if row.get("fetch/s") is not None:
            self.fetch_seconds.observe(row["fetch/s"])
        for key, value in row.items():
            if key.startswith("time/") and key.endswith("_s") and isinstance(value, (int, float)):
                self.stage_seconds.labels(stage=key[len("time/"):-len("_s")]).set(value)
        if row.get("fetch/s") is not None:
            self.stage_seconds.labels(stage="fetch").set(row["fetch/s"])
        if row.get("weights_set"):
            self.weights_set.inc()
        if row.get("chain/weights_block") is not None:
            self.weights_block.set(row["chain/weights_block"])
            if row.get("chain/block") is not None:
                self.blocks_since_weights.set(max(0, row["chain/block"] - row["chain/weights_block"]))
        miners = row.get("miners", {})
        self.miners.set(len(miners))
        for uid, m in miners.items():
            hotkey = str(m.get("hotkey") or "")
            self._follow_hotkey(str(uid), hotkey)
            labels = {"uid": str(uid), "hotkey": hotkey}
            if m.get("reason"):
                self.rejections.labels(reason=m["reason"]).inc()
                self.miner_rejections.labels(reason=m["reason"], **labels).inc()
            else:
                self.admissions.inc()
            values = {**m, "score": m.get("score") or 0.0}
            if "compliant" not in m and "reason" in m:  # rows from before the compliance field: admitted
                values["compliant"] = m["reason"] is None
            elif "compliant" in m and m["compliant"] is None:
                values["compliant"] = -1.0  # not evaluated this window
            if "rank" in m:
                values["rank"] = m["rank"] or 0  # 0: not paid
            for key, gauge in self.miner_gauges.items():
                if values.get(key) is not None:
                    gauge.labels(**labels).set(float(values[key]))
            self._log_zero_reason(str(uid), hotkey, m.get("why") or "")

    def _log_zero_reason(self, uid: str, hotkey: str, reason: str) -> None:
        """Keep one `miner_zero_reason` series per miner: the reason now, none once it is paid again."""
        previous = self._zero_reasons.pop(uid, None)
        if previous is not None and previous != (hotkey, reason):
            with contextlib.suppress(KeyError):
                self.zero_reason.remove(uid, *previous)
        if reason:
            self.zero_reason.labels(uid=uid, hotkey=hotkey, reason=reason).set(1)
            self._zero_reasons[uid] = (hotkey, reason)

    def _follow_hotkey(self, uid: str, hotkey: str) -> None:
        """Drop every series of `uid`'s previous hotkey when the uid changed hands (bounded cardinality:
        one hotkey per uid, and uids are the metagraph's)."""
        old = self._hotkeys.get(uid)
        if old is not None and old != hotkey:
            for gauge in self.miner_gauges.values():
                with contextlib.suppress(KeyError):
                    gauge.remove(uid, old)
            for reason in rejection_reasons(self.miner_rejections, uid, old):
                self.miner_rejections.remove(uid, old, reason)
            self._log_zero_reason(uid, hotkey, "")
        self._hotkeys[uid] = hotkey

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def rejection_reasons(counter: Counter, uid: str, hotkey: str) -> list[str]:
    """The reasons `counter` (labelled uid, hotkey, reason) has a series for at (uid, hotkey)."""
    return [s.labels["reason"] for metric in counter.collect() for s in metric.samples
            if s.name.endswith("_total") and s.labels.get("uid") == uid and s.labels.get("hotkey") == hotkey]


def gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class GpuCollector(Collector):
    """Per CUDA device: memory this process allocated and reserved (torch's allocator), the device's
    total and free memory, read at scrape time."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        import torch

        names = {"allocated": "memory torch allocated on the device",
                 "reserved": "memory torch's caching allocator holds on the device",
                 "free": "free memory on the device", "total": "the device's memory"}
        fams = {k: GaugeMetricFamily(f"{NAMESPACE}_gpu_memory_{k}_bytes", doc, labels=["device"])
                for k, doc in names.items()}
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            values = {"allocated": torch.cuda.memory_allocated(i), "reserved": torch.cuda.memory_reserved(i),
                      "free": free, "total": total}
            for k, v in values.items():
                fams[k].add_metric([str(i)], float(v))
        return list(fams.values())


class DiskCollector(Collector):
    """Free and total bytes of the file system holding `path` (the neuron's state folder), read at
    scrape time; nothing while the folder does not exist yet."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterable[GaugeMetricFamily]:
        free = GaugeMetricFamily(f"{NAMESPACE}_disk_free_bytes", "free bytes on the state folder's file system",
                                 labels=["path"])
        total = GaugeMetricFamily(f"{NAMESPACE}_disk_total_bytes", "size of the state folder's file system",
                                  labels=["path"])
        path = self.path
        while not path.exists() and path != path.parent:  # not created yet: its nearest existing parent
            path = path.parent
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            return [free, total]
        free.add_metric([str(self.path)], float(usage.free))
        total.add_metric([str(self.path)], float(usage.total))
        return [free, total]


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

    def chain_head(self, block: int) -> None:
        """Hand a freshly read chain head to the sinks that keep one (Prometheus' `chain_block`)."""
        for sink in self.sinks:
            observe = getattr(sink, "chain_head", None)
            if observe is not None:
                observe(block)

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
        prom = PrometheusSink(role=cfg.role, state_dir=cfg.state_dir)
        port = prom.serve(cfg.metrics.host, cfg.metrics.port)
        logger.info(f"prometheus metrics on http://{cfg.metrics.host}:{port}/metrics")
        sinks.append(prom)
    _process_logger = MetricsLogger(sinks)
    return _process_logger


def process_metrics() -> MetricsLogger:
    """The process-wide logger (`configure_metrics` replaces it; a no-op before)."""
    return _process_logger


class PhaseTimer:
    """Wall seconds of the named phases of one window, for its metrics row (`phase` as a context manager;
    `seconds` holds name -> seconds rounded to the millisecond, the row's time keys)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = round(self.clock() - start, 3)
