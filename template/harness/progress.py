"""Progress of a running localnet: one line per window, read from the lead validator's metrics rows.

    [#####-------] window 5/12 | loss 8.904 | admitted 3 | rejected copy=2 late=1 |
        leader miner1 (uid 4, rating 4.83) | 2m10s elapsed, ETA 3m00s

On a terminal each line starts with a progress bar; in CI logs (stdout not a TTY) the bar is left
out so every line is plain, greppable text. The rows are the ones the validator appends to
RUN_DIR/metrics/<name>.jsonl (`append_metrics`); nothing here talks to the chain or the neurons.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

BAR_WIDTH = 12


def format_duration(seconds: float) -> str:
    """`1h02m`, `2m10s`, `45s` (negative or unknown durations print as `-`)."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def leader(row: dict) -> tuple[str, float] | None:
    """(uid, rating) of the best-rated miner in a validator row, or None when no miner has a rating."""
    rated = [(uid, m["rating"]) for uid, m in row.get("miners", {}).items() if m.get("rating") is not None]
    if not rated:
        return None
    return max(rated, key=lambda x: (x[1], -int(x[0])))


def window_counts(row: dict) -> tuple[int, Counter[str]]:
    """(uploads admitted, rejections by reason) of one validator row."""
    reasons = Counter(m["reason"] for m in row.get("miners", {}).values() if m.get("reason"))
    admitted = sum(1 for m in row.get("miners", {}).values() if not m.get("reason"))
    return admitted, reasons


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = min(width, max(0, round(width * done / total))) if total > 0 else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def format_line(row: dict, done: int, total: int, *, names: dict[str, str], elapsed_s: float,
                eta_s: float | None, bar: bool) -> str:
    """One progress line for validator row `row`, the `done`-th of `total` windows.

    names: hotkey -> neuron name (localnet's names; unknown hotkeys print as `uid N`).
    """
    loss = row.get("eval/heldout_loss")
    admitted, reasons = window_counts(row)
    parts = [f"window {done}/{total}" if total > 0 else f"window {done}", f"loss {loss:.3f}" if loss is not None else "loss -",
             f"admitted {admitted}",
             "rejected " + (" ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "0")]
    best = leader(row)
    if best is None:
        parts.append("leader -")
    else:
        uid, rating = best
        name = names.get(row["miners"][uid].get("hotkey", ""), f"uid {uid}")
        parts.append(f"leader {name} (uid {uid}, rating {rating:.2f})")
    parts.append(f"{format_duration(elapsed_s)} elapsed, ETA {format_duration(eta_s) if eta_s is not None else '-'}")
    line = " | ".join(parts)
    return f"{progress_bar(done, total)} {line}" if bar and total > 0 else line


@dataclass
class Progress:
    """Prints a line for each window the lead validator finished since the last `poll`.

    total: windows the run lasts (0: until stopped, no ETA); window_s: nominal seconds per window
    (the ETA until two windows were timed); started: unix time the run started (for "elapsed").
    With `status_path`, each poll (at most every STATUS_EVERY_S) also rewrites that JSON file with
    the chain's head and next epoch (`chain_info()`) and each process's state (`procs`: localnet's
    Neuron objects), for scripts/dashboard.py.
    """

    path: Path
    total: int
    names: dict[str, str]
    window_s: float
    started: float
    out: TextIO = field(default_factory=lambda: sys.stdout)
    bar: bool | None = None
    status_path: Path | None = None
    procs: list[Any] = field(default_factory=list)
    chain_info: Callable[[], dict] | None = None
    _offset: int = 0
    _status_at: float = 0.0
    _seen: set[int] = field(default_factory=set)
    _times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.bar is None:
            self.bar = self.out.isatty()

    def new_rows(self) -> list[dict]:
        """Rows appended since the last call (complete lines only; a half-written one waits)."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        return [json.loads(x) for x in data[:end].decode().splitlines() if x.strip()]

    def eta(self, done: int, now: float) -> float | None:
        if self.total <= 0:  # runs until stopped
            return None
        if done >= self.total:
            return 0.0
        per_window = self.window_s
        if len(self._times) >= 2:
            per_window = (self._times[-1] - self._times[0]) / (len(self._times) - 1)
        return (self.total - done) * per_window

    def poll(self, now: float | None = None) -> list[str]:
        """Print (and return) the lines of windows finished since the last poll."""
        now = time.time() if now is None else now
        lines = []
        for row in self.new_rows():
            if row["window"] in self._seen:  # a restarted validator redoing a window
                continue
            self._seen.add(row["window"])
            self._times.append(now)
            done = len(self._seen)
            lines.append(format_line(row, done, self.total, names=self.names, elapsed_s=now - self.started,
                                     eta_s=self.eta(done, now), bar=bool(self.bar)))
        for line in lines:
            print(line, file=self.out, flush=True)
        if self.status_path is not None and (lines or now - self._status_at >= STATUS_EVERY_S):
            self._status_at = now
            write_status(self.status_path, now, self.total, self.procs, self.chain_info)
        return lines


STATUS_EVERY_S = 2.0


def process_state(proc: Any) -> str:
    """`running`, `exited <rc>` or `-` (never started) for a subprocess.Popen or None."""
    if proc is None:
        return "-"
    rc = proc.poll()
    return "running" if rc is None else f"exited {rc}"


def write_status(path: Path, now: float, total: int, procs: list[Any], chain_info: Callable[[], dict] | None
                 ) -> None:
    """Rewrite RUN_DIR/status.json atomically (a reader never sees half a file)."""
    status = {"updated": now, "windows_total": total,
              "neurons": [{"name": n.name, "role": n.role, "kind": n.kind, "state": process_state(n.proc),
                           "restarts": n.restarts} for n in procs if n.role != "owner"]}
    if chain_info is not None:
        status.update(chain_info())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1))
    tmp.replace(path)


def localnet_chain_info(chain: Any) -> Callable[[], dict]:
    """chain head, tempo, epoch and next epoch block of the run's subnet (the highest netuid: localnet
    creates one subnet per run) from the localnet node's /subnets view."""
    def info() -> dict:
        block = chain.block()
        subnets = chain.subnets()
        if not subnets:
            return {"block": block}
        netuid = max(subnets, key=int)
        sub = subnets[netuid]
        return {"block": block, "netuid": int(netuid), "tempo": sub["tempo"], "epoch_index": sub["epoch_index"],
                "next_epoch_block": block + sub["blocks_until_next_epoch"]}
    return info
