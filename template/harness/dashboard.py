"""A live dashboard of a localnet run, finished or running: one page that refreshes itself.

    python scripts/dashboard.py --run runs/demo --port 8765     # then open http://127.0.0.1:8765/

It reads only files in the run folder: the validators' and miners' metrics rows
(metrics/<name>.jsonl), status.json (chain head, next epoch, each process; scripts/localnet.py
rewrites it every few seconds), report/report.json (the final leaderboard, once the run ended)
and hparams.json. `GET /api/state` returns all of it as JSON and the page polls it.

The charts are inline SVG drawn by this module's own few functions, server-side, so the page
needs nothing from the internet and the repository carries no third-party JavaScript.
"""

from __future__ import annotations

import argparse
import html
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from template.harness.report import read_rows

ROOT = Path(__file__).resolve().parents[2]  # the repository root

HONEST_KINDS = ("honest", "validator", "owner")


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or half-written (the writer replaces it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def kind_of(name: str) -> str:
    """localnet names: miner<i> are honest, validator<i> validators, <kind><i> hostile miners."""
    base = name.rstrip("0123456789")
    return {"miner": "honest"}.get(base, base)


def neuron_rows(run_dir: Path) -> dict[str, list[dict]]:
    """name -> that neuron's metrics rows (last word per window)."""
    return {p.stem: read_rows(p) for p in sorted((run_dir / "metrics").glob("*.jsonl"))}


def miner_names(rows_by_name: dict[str, list[dict]]) -> dict[str, str]:
    """uid (as the validators' rows key it) -> the miner's localnet name, from the miners' own rows."""
    return {str(r[-1]["uid"]): name for name, r in rows_by_name.items()
            if r and r[-1].get("role", "miner") == "miner"}


def leaderboard_window(lead_rows: list[dict]) -> dict | None:
    """The lead validator's row the leaderboard shows: the last window it set weights in (rating, score
    and weight then all belong to that one window), else its latest window."""
    with_weights = [r for r in lead_rows if r.get("weights_set")]
    rows = with_weights or lead_rows
    return rows[-1] if rows else None


def leaderboard(lead_rows: list[dict], rows_by_name: dict[str, list[dict]]) -> dict:
    """The lead validator's view of the miners at one window, best rating first: every number of a row
    from that same window (`leaderboard_window`); `window`, `latest_window` and `weights_set` label it."""
    row = leaderboard_window(lead_rows)
    if row is None:
        return {"window": None, "latest_window": None, "weights_set": False, "rows": []}
    names = miner_names(rows_by_name)
    out = [{"uid": int(u), "name": names.get(u, f"uid {u}"), "kind": kind_of(names[u]) if u in names else "?",
            "hotkey": m.get("hotkey"), "rating": m.get("rating"), "score": m.get("score"),
            "weight": m.get("weight"), "reason": m.get("reason"),
            # why it earns what it earns, from the same window (gauntlet/pay.py): rank among the paid, the
            # window's gain and compliance test, the reason for a zero (older rows: the admission's reason)
            "rank": m.get("rank"), "gain": m.get("improvement_random"), "compliant": m.get("compliant"),
            "why": m.get("why") or m.get("reason") or ""} for u, m in row["miners"].items()]
    out.sort(key=lambda n: (-(n["rating"] if n["rating"] is not None else float("-inf")), n["uid"]))
    return {"window": row["window"], "latest_window": lead_rows[-1]["window"], "weights_set": bool(row.get("weights_set")),
            "rows": out}


def chain_table(report: dict | None, status: dict) -> dict:
    """What the chain paid, read once at the run's end (report.json): each neuron's weight (the mean of
    the validators' weights on chain), incentive and alpha earned. Empty while the run goes on."""
    if not report:
        return {"block": None, "rows": []}
    rows = sorted(({k: n[k] for k in ("uid", "name", "role", "kind", "weight", "incentive", "emission_alpha")}
                   for n in report["neurons"]), key=lambda n: (-n["emission_alpha"], n["uid"]))
    return {"block": status.get("block"), "rows": rows}


def miner_series(lead_rows: list[dict], rows_by_name: dict[str, list[dict]]) -> dict[str, dict[str, list]]:
    """Per-miner series over windows, keyed by metric then miner name: the lead validator's rating, score
    and weight (weights only in windows it set them), the miner's own tokens/s and upload seconds."""
    names = miner_names(rows_by_name)
    out: dict[str, dict[str, list]] = {k: {} for k in ("rating", "score", "weight", "tokens_per_s", "upload_s")}
    for row in lead_rows:
        for uid, m in row["miners"].items():
            for key in ("rating", "score", "weight"):
                if m.get(key) is not None:
                    out[key].setdefault(names.get(uid, f"uid {uid}"), []).append((row["window"], m[key]))
    for name, rows in rows_by_name.items():
        for r in rows:
            if r.get("role", "miner") != "miner":
                continue
            if r.get("train/tokens_per_s") is not None:
                out["tokens_per_s"].setdefault(name, []).append((r["window"], r["train/tokens_per_s"]))
            if r.get("upload/bytes"):
                out["upload_s"].setdefault(name, []).append((r["window"], r["upload/s"]))
    return out


# the lead validator's per-window stage times (row key -> label)
STAGES = {"fetch/s": "fetch", "time/checks_s": "checks", "time/eval_s": "eval", "time/aggregate_s": "aggregate"}


def window_timing(lead_rows: list[dict]) -> dict[str, list]:
    """stage label -> [(window, seconds)] from the lead validator's rows."""
    out: dict[str, list] = {}
    for row in lead_rows:
        for key, label in STAGES.items():
            if row.get(key) is not None:
                out.setdefault(label, []).append((row["window"], row[key]))
    return out


def neuron_status(status: dict | None, rows_by_name: dict[str, list[dict]]) -> list[dict]:
    procs = {n["name"]: n for n in (status or {}).get("neurons", [])}
    out = []
    for name in sorted(set(procs) | set(rows_by_name)):
        rows = rows_by_name.get(name, [])
        proc = procs.get(name, {})
        out.append({"name": name, "kind": proc.get("kind", kind_of(name)), "state": proc.get("state", "-"),
                    "restarts": proc.get("restarts", 0), "last_window": rows[-1]["window"] if rows else None,
                    "sync": rows[-1].get("sync/status") if rows else None})
    return out


def collect(run_dir: Path) -> dict:
    """Everything the page shows, from the files of `run_dir`."""
    rows_by_name = neuron_rows(run_dir)
    lead_rows = rows_by_name.get("validator0", [])
    report = read_json(run_dir / "report" / "report.json")
    status = read_json(run_dir / "status.json") or {}
    rejections: Counter[str] = Counter()
    for r in lead_rows:
        rejections.update(m["reason"] for m in r["miners"].values() if m.get("reason"))
    loss = [(r["window"], r["eval/heldout_loss"]) for r in lead_rows if r.get("eval/heldout_loss") is not None]
    checkpoints = (report or {}).get("checkpoints") or status.get("checkpoints") or []
    board, series, timing = leaderboard(lead_rows, rows_by_name), miner_series(lead_rows, rows_by_name), \
        window_timing(lead_rows)
    miners = sorted({name for by_name in series.values() for name in by_name})  # one colour per miner
    return {
        "run": run_dir.name, "finished": report is not None, "windows_total": status.get("windows_total"),
        "loss": [{"window": w, "loss": x} for w, x in loss],
        "leaderboard": board, "chain_table": chain_table(report, status),
        "miner_series": series, "window_timing": timing,
        "rejections": dict(sorted(rejections.items())),
        "records": sum(1 for r in lead_rows if str(r.get("sync/status", "")).startswith("lead")),
        "checkpoints": checkpoints,
        "chain": {k: status.get(k) for k in ("block", "tempo", "epoch_index", "next_epoch_block", "updated")},
        "neurons": neuron_status(status, rows_by_name),
        "loss_svg": line_chart_svg(loss, "window", "held-out loss"),
        "rejections_svg": bar_chart_svg(sorted(rejections.items())),
        "miner_svgs": {k: multi_line_chart_svg(series[k], "window", label, f"miner-{k}", color_order=miners)
                       for k, label in SERIES_LABELS.items()},
        "timing_svg": multi_line_chart_svg(timing, "window", "seconds", "timing-chart"),
    }


def chart_axes(xs: list[int], ys: list[float], box: tuple[int, int, int, int], width: int, height: int):
    """(x0, x1, y0, y1, sx, sy): the data ranges (widened by 1 when flat) and the maps from data to pixels
    inside `box` = (left, right, top, bottom) margins."""
    left, right, top, bottom = box
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    return x0, x1, y0, y1, sx, sy

def line_chart_svg(points: list[tuple[int, float]], xlabel: str, ylabel: str, width: int = 560,
                   height: int = 240) -> str:
    """A line chart with point markers and min/max labels; each point has a <title> "x: y"."""
    if not points:
        return f'<svg class="chart" width="{width}" height="{height}"><text x="20" y="40">no data yet</text></svg>'
    left, right, top, bottom = 56, 12, 12, 34
    x0, x1, y0, y1, sx, sy = chart_axes([p[0] for p in points], [p[1] for p in points], (left, right, top, bottom),
                                        width, height)

    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
    dots = "".join(f'<circle class="pt" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" data-x="{x}" data-y="{y:.4f}">'
                   f"<title>{xlabel} {x}: {y:.4f}</title></circle>" for x, y in points)
    axes = (f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>')
    labels = (f'<text x="{left - 4}" y="{sy(y1) + 4:.1f}" text-anchor="end">{y1:.3f}</text>'
              f'<text x="{left - 4}" y="{sy(y0) + 4:.1f}" text-anchor="end">{y0:.3f}</text>'
              f'<text x="{sx(x0):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x0}</text>'
              f'<text x="{sx(x1):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x1}</text>'
              f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">{xlabel}</text>'
              f'<text x="12" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
              f'transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">{ylabel}</text>')
    return (f'<svg class="chart" id="loss-chart" width="{width}" height="{height}" font-size="11">{axes}{labels}'
            f'<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>{dots}</svg>')


SERIES_LABELS = {"rating": "rating", "score": "score", "weight": "weight set", "tokens_per_s": "tokens/s",
                 "upload_s": "upload seconds"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def multi_line_chart_svg(series: dict[str, list[tuple[int, float]]], xlabel: str, ylabel: str, chart_id: str,
                         width: int = 420, height: int = 220, color_order: list[str] | None = None) -> str:
    """One line per named series on shared axes, with a legend; each point has a <title>
    "name, x: y" and data-series/data-x/data-y attributes. A name's colour is its place in
    `color_order` (default: the sorted names), so several charts can colour one miner alike."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return f'<svg class="chart" id="{chart_id}" width="{width}" height="40"><text x="20" y="24">no data yet</text></svg>'
    order = color_order or sorted(series)
    names = sorted(series, key=lambda n: (order.index(n) if n in order else len(order), n))
    left, right, top, bottom = 56, 110, 12, 34
    x0, x1, y0, y1, sx, sy = chart_axes([p[0] for p in points], [p[1] for p in points], (left, right, top, bottom),
                                        width, height)

    body = []
    for i, name in enumerate(names):
        slot = order.index(name) if name in order else len(order) + i
        color, pts = PALETTE[slot % len(PALETTE)], sorted(series[name])
        path = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(pts))
        body.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        body.extend(f'<circle class="pt" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}" '
                    f'data-series="{html.escape(name)}" data-x="{x}" data-y="{y:.4f}">'
                    f"<title>{html.escape(name)}, {xlabel} {x}: {y:.4f}</title></circle>" for x, y in pts)
        body.append(f'<text class="legend" x="{width - right + 8}" y="{top + 10 + 14 * i}" fill="{color}">'
                    f"{html.escape(name)}</text>")
    axes = (f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>'
            f'<text x="{left - 4}" y="{sy(y1) + 4:.1f}" text-anchor="end">{y1:.3g}</text>'
            f'<text x="{left - 4}" y="{sy(y0) + 4:.1f}" text-anchor="end">{y0:.3g}</text>'
            f'<text x="{sx(x0):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x0}</text>'
            f'<text x="{sx(x1):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x1}</text>'
            f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">{xlabel}</text>'
            f'<text x="12" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">{html.escape(ylabel)}</text>')
    return (f'<svg class="chart" id="{chart_id}" width="{width}" height="{height}" font-size="11">{axes}'
            + "".join(body) + "</svg>")


def bar_chart_svg(items: list[tuple[str, int]], width: int = 360, bar_h: int = 18) -> str:
    """Horizontal bars, one per (label, count)."""
    if not items:
        return '<svg class="chart" width="200" height="24"><text x="4" y="16">no rejections</text></svg>'
    top = max(c for _, c in items)
    height = len(items) * (bar_h + 6) + 4
    bars = "".join(
        f'<text x="96" y="{i * (bar_h + 6) + 15}" text-anchor="end">{html.escape(k)}</text>'
        f'<rect x="100" y="{i * (bar_h + 6) + 2}" width="{max(1.0, c / top * (width - 140)):.1f}" '
        f'height="{bar_h}" fill="#d62728"/>'
        f'<text x="{104 + c / top * (width - 140):.1f}" y="{i * (bar_h + 6) + 15}">{c}</text>'
        for i, (k, c) in enumerate(items))
    return f'<svg class="chart" id="rejections-chart" width="{width}" height="{height}" font-size="11">{bars}</svg>'


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sparseloco run</title>
<style>
body { font-family: sans-serif; margin: 16px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 15px; margin: 18px 0 6px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 32px; }
.grid3 { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 8px 24px; } h3 { font-size: 13px; margin: 8px 0 4px; }
table { border-collapse: collapse; font-size: 12px; } td, th { padding: 2px 8px; text-align: right; }
th { border-bottom: 1px solid #888; } td.l, th.l { text-align: left; } tr.hostile td { color: #b00; }
#meta { font-size: 13px; color: #555; }
</style></head><body>
<h1>Run <span id="run"></span></h1><div id="meta"></div>
<div class="grid">
<div><h2>Held-out loss per window</h2><div id="loss"></div></div>
<div><h2>Rejections by reason</h2><div id="rejections"></div>
<h2>Records and checkpoints</h2><div id="artifacts"></div></div>
<div><h2 id="leaderboard-title">Leaderboard</h2><table id="leaderboard"></table></div>
<div><h2 id="chain-title">On chain</h2><table id="chain"></table></div>
<div><h2>Neurons</h2><table id="neurons"></table></div>
<div><h2>Window timing: the lead validator's stages</h2><div id="timing"></div></div>
</div>
<h2>Per miner, per window</h2>
<div class="grid3" id="miner-charts"></div>
<script>
const SERIES = [["rating", "Rating (lead validator)"], ["score", "Score (lead validator)"],
  ["weight", "Weight set (lead validator)"], ["tokens_per_s", "Tokens/s (the miner's own)"],
  ["upload_s", "Upload seconds (the miner's own)"]];
function fmt(x, d) { return (x === null || x === undefined) ? "-" : (typeof x === "number" ? x.toFixed(d) : x); }
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]); }
function table(el, cols, rows, cls) {
  el.innerHTML = "<tr>" + cols.map(c => `<th class="${c[2] || ""}">${c[0]}</th>`).join("") + "</tr>" +
    rows.map(r => `<tr class="${cls ? cls(r) : ""}">` +
      cols.map(c => `<td class="${c[2] || ""}">${esc(c[1](r))}</td>`).join("") + "</tr>").join("");
}
const hostile = r => ["honest", "validator", "owner", "?"].includes(r.kind) ? "" : "hostile";
async function refresh() {
  const s = await (await fetch("api/state")).json();
  document.getElementById("run").textContent = s.run + (s.finished ? " (finished)" : " (running)");
  const c = s.chain, lw = s.loss.length ? s.loss[s.loss.length - 1] : null;
  document.getElementById("meta").textContent = `windows ${s.loss.length}/${fmt(s.windows_total, 0)}` +
    ` | last loss ${lw ? lw.loss.toFixed(4) : "-"} | chain head ${fmt(c.block, 0)} | epoch ${fmt(c.epoch_index, 0)}` +
    `, next at block ${fmt(c.next_epoch_block, 0)} (tempo ${fmt(c.tempo, 0)})`;
  document.getElementById("loss").innerHTML = s.loss_svg;
  document.getElementById("rejections").innerHTML = s.rejections_svg;
  document.getElementById("timing").innerHTML = s.timing_svg;
  document.getElementById("artifacts").textContent =
    `${s.records} records published by the lead; ${s.checkpoints.length} checkpoints` +
    (s.checkpoints.length ? ": " + s.checkpoints.join(", ") : "");
  const b = s.leaderboard;
  document.getElementById("leaderboard-title").textContent = b.window === null ? "Leaderboard: no window yet" :
    `Leaderboard after window ${b.window}: the lead validator's rating, score and weight of that window` +
    (b.weights_set ? " (the last it set weights in" : " (no weights set yet") + `; latest window ${b.latest_window})`;
  table(document.getElementById("leaderboard"), [["uid", r => r.uid], ["name", r => r.name, "l"],
    ["kind", r => r.kind, "l"], ["rating", r => fmt(r.rating, 2)], ["score", r => fmt(r.score, 3)],
    ["weight", r => fmt(r.weight, 3)], ["rank", r => fmt(r.rank, 0)], ["gain", r => fmt(r.gain, 4)],
    ["compliant", r => r.compliant === true ? "yes" : r.compliant === false ? "no" : "-"],
    ["why", r => r.why || "", "l"]], b.rows, hostile);
  const ch = s.chain_table;
  document.getElementById("chain-title").textContent = s.finished ?
    `On chain at the run's end (block ${fmt(ch.block, 0)}): mean weight from validators, incentive, alpha earned` :
    "On chain: read once the run ends";
  table(document.getElementById("chain"), [["uid", r => r.uid], ["name", r => r.name, "l"],
    ["kind", r => r.kind, "l"], ["weight", r => fmt(r.weight, 3)], ["incentive", r => fmt(r.incentive, 3)],
    ["alpha", r => fmt(r.emission_alpha, 2)]], ch.rows, hostile);
  document.getElementById("miner-charts").innerHTML = SERIES.map(([k, t]) =>
    `<div><h3>${t}</h3>${s.miner_svgs[k]}</div>`).join("");
  table(document.getElementById("neurons"), [["name", r => r.name, "l"], ["kind", r => r.kind, "l"],
    ["process", r => r.state, "l"], ["restarts", r => r.restarts], ["last window", r => fmt(r.last_window, 0)],
    ["sync", r => fmt(r.sync), "l"]], s.neurons);
}
refresh(); setInterval(refresh, REFRESH_MS);
</script></body></html>
"""


def make_app(run_dir: Path, refresh_s: float = 5.0) -> FastAPI:
    app = FastAPI(title="sparseloco run dashboard")
    page = PAGE.replace("REFRESH_MS", str(int(refresh_s * 1000)))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/state")
    def state() -> dict:
        return collect(run_dir)

    return app


class DashboardServer:
    """The dashboard on host:port in a background thread (`start()` returns once it listens)."""

    def __init__(self, run_dir: Path, host: str = "127.0.0.1", port: int = 0, refresh_s: float = 5.0) -> None:
        config = uvicorn.Config(make_app(run_dir, refresh_s), host=host, port=port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)

    def start(self, timeout_s: float = 10.0) -> str:
        """Start serving; return the URL. Raises RuntimeError if it did not come up within timeout_s."""
        import time

        self.thread.start()
        deadline = time.time() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the dashboard server did not start (is the port taken?)")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_dashboard(run_dir: Path, port: int = 0) -> DashboardServer | None:
    """Serve `run_dir`'s dashboard on 127.0.0.1 in the background and log its URL; None (with a
    warning) when it cannot start: a run never fails for want of its dashboard."""
    from loguru import logger

    server = DashboardServer(run_dir, "127.0.0.1", port)
    try:
        logger.info(f"dashboard: {server.start()}")
    except RuntimeError as e:
        logger.warning(f"{e}; running without a dashboard (--dashboard-port to pick another port)")
        return None
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the run folder (RUN_DIR of scripts/localnet.py)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--refresh-s", type=float, default=5.0, help="seconds between page refreshes")
    args = p.parse_args(argv)
    run_dir = Path(args.run).resolve()
    if not (run_dir / "metrics").is_dir():
        p.error(f"{run_dir} has no metrics/ folder: not a localnet run folder")
    server = DashboardServer(run_dir, args.host, args.port, args.refresh_s)
    try:
        print(f"dashboard of {run_dir}: {server.start()}", flush=True)
    except RuntimeError as e:
        p.error(f"{e}: --port {args.port}")
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
    return 0

