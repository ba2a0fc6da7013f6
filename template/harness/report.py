"""The localnet run's report: loss per window, and per neuron what it earned and why.

Inputs are the validators' metrics files (JSON lines) and two metagraph snapshots (after
setup and at the end); outputs are a dict (report.json), printed tables and PNG plots.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    latest: dict[int, dict] = {}
    for r in rows:  # a restarted validator may redo a window: keep the last word on it
        latest[r["window"]] = r
    return [latest[w] for w in sorted(latest)]


def read_metrics(run_dir: Path, name: str) -> list[dict]:
    path = run_dir / "metrics" / f"{name}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def event_outcome(event: dict, run_dir: Path, rows: list[dict]) -> str:
    """What a chaos event did, read back from the metrics the neurons wrote."""
    w = event["window"]
    if event["event"] == "kill_miner":
        after = [r for r in read_metrics(run_dir, event["name"]) if r["window"] > w]
        ok = [r["window"] for r in after if r["sync/status"] == "in_sync" and r["upload/on_time"]]
        return (f"rejoined in sync and uploaded on time in window {ok[0]} ({ok[0] - w} after the kill)"
                if ok else "did not rejoin before the run ended")
    if event["event"] == "kill_validator":
        mine = read_metrics(run_dir, event["name"])
        restarted = [r for r in mine if r["window"] > w]
        restored = restarted[0]["ratings/restored"] if restarted else 0
        intervals = Counter(r["weights/interval"] for r in mine if r["weights_set"])
        twice = sorted(i for i, c in intervals.items() if c > 1)
        return (f"back for window {restarted[0]['window'] if restarted else '-'} with {restored} ratings restored; "
                f"weights set twice for intervals {twice or 'none'}")
    if event["event"] == "restart_seaweed":
        nxt = [r for r in rows if r["window"] > w]
        good = [r["window"] for r in nxt if any(m["reason"] is None for m in r["miners"].values())]
        return f"uploads admitted again from window {good[0]}" if good else "no upload admitted afterwards"
    return ""


def build_report(mg, baseline, neurons, run_dir: Path, args, events: list[dict], *, checkpoints: list[str],
                 wall_s: float, interrupted: bool) -> dict:
    rows = read_rows(run_dir / "metrics" / "validator0.jsonl")
    loss = [r["eval/heldout_loss"] for r in rows]
    rejections: Counter[str] = Counter()
    for r in rows:
        rejections.update(m["reason"] for m in r["miners"].values() if m["reason"])
    last_miners = rows[-1]["miners"] if rows else {}
    base_stake = {hk: baseline.stake[u] for u, hk in enumerate(baseline.hotkeys)}
    validator_uids = [mg.uid_of(n.wallet.hotkey.ss58_address) for n in neurons if n.role == "validator"]
    out = []
    for n in neurons:
        hk = n.wallet.hotkey.ss58_address
        uid = mg.uid_of(hk)
        if uid is None:
            continue
        # chain rows are max-upscaled u16; as shares they sum to 1 per validator
        weights = [dict(mg.weights.get(v, [])).get(uid, 0.0) / (sum(w for _, w in mg.weights.get(v, [])) or 1.0)
                   for v in validator_uids if v is not None]
        rating = last_miners.get(str(uid), {}).get("rating")
        fetched = [r["data/bytes"] for r in read_metrics(run_dir, n.name) if "data/bytes" in r] \
            if n.role == "miner" else []
        out.append({
            "uid": uid, "hotkey": hk, "name": n.name, "role": n.role, "kind": n.kind,
            "weight": sum(weights) / len(weights) if weights else 0.0,
            "incentive": mg.incentive[uid], "dividends": mg.dividends[uid],
            "emission_alpha": mg.stake[uid] - base_stake.get(hk, 0.0),
            "rating": rating if rating is not None else 0.0, "restarts": n.restarts,
            "data_bytes_per_window": round(sum(fetched) / len(fetched)) if fetched else None,
        })
    for e in events:
        e["outcome"] = event_outcome(e, run_dir, rows)
    first, final = (loss[0], loss[-1]) if loss else (None, None)
    return {
        "windows": len(rows), "loss": loss,
        "loss_drop": (first - final) / first if loss and first else None,
        "neurons": out, "rejections": dict(rejections), "checkpoints": checkpoints,
        "events": events, "wall_s": round(wall_s, 1), "interrupted": interrupted,
        "config": {"miners": args.miners, "validators": args.validators, "windows": args.windows,
                   "adversaries": args.adversary_kinds, "seed": args.seed, "chaos": args.chaos},
    }


def format_report(report: dict) -> str:
    lines = [f"windows: {report['windows']}   wall time: {report['wall_s']} s"]
    if report["loss"]:
        lines.append("held-out loss per window: " + " ".join(f"{x:.3f}" for x in report["loss"]))
        lines.append(f"loss drop: {100 * (report['loss_drop'] or 0):.1f}%")
    lines.append("")
    lines.append(f"{'uid':>3} {'name':<12} {'role':<9} {'kind':<10} {'weight':>7} {'incent':>7} "
                 f"{'divs':>7} {'alpha':>10} {'rating':>7}")
    for n in sorted(report["neurons"], key=lambda n: n["uid"]):
        lines.append(f"{n['uid']:>3} {n['name']:<12} {n['role']:<9} {n['kind']:<10} {n['weight']:>7.3f} "
                     f"{n['incentive']:>7.3f} {n['dividends']:>7.3f} {n['emission_alpha']:>10.3f} "
                     f"{n['rating']:>7.2f}")
    lines.append("")
    lines.append("rejections: " + (", ".join(f"{k}={v}" for k, v in sorted(report["rejections"].items())) or "none"))
    lines.append(f"checkpoints: {len(report['checkpoints'])}")
    data = [f"{n['name']} {n['data_bytes_per_window'] / 1024:.1f} KiB" for n in report["neurons"]
            if n.get("data_bytes_per_window") is not None]
    if data:
        lines.append("data fetched per miner per window (mean): " + ", ".join(data))
    for e in report["events"]:
        lines.append(f"event: {e['what']}: {e['outcome']}")
    return "\n".join(lines)


def print_report(report: dict) -> None:
    print(format_report(report), flush=True)


def write_report(report: dict, out_dir: Path) -> None:
    """report.json and the plots into `out_dir`, then the table on stdout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    save_plots(report, out_dir)
    print_report(report)


def save_plots(report: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(len(report["loss"])), report["loss"], marker="o")
    ax.set_xlabel("window")
    ax.set_ylabel("held-out loss of the global model")
    ax.set_title("Global model loss")
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=100)
    plt.close(fig)
    neurons = sorted(report["neurons"], key=lambda n: n["uid"])
    fig, ax = plt.subplots(figsize=(max(6, len(neurons) * 0.6), 3.5))
    colors = {"miner": "tab:blue", "validator": "tab:green", "owner": "tab:gray"}
    ax.bar([f"{n['uid']}:{n['kind']}" for n in neurons], [n["emission_alpha"] for n in neurons],
           color=[colors.get(n["role"], "tab:red") if n["kind"] in ("honest", "validator", "owner") else "tab:red"
                  for n in neurons])
    ax.set_ylabel("alpha earned")
    ax.set_title("Emission per neuron (red: hostile)")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(out_dir / "emission.png", dpi=100)
    plt.close(fig)


def format_markdown(report: dict) -> str:
    """The report as Markdown tables (what docs/benchmarks.md quotes)."""
    lines = [f"windows: {report['windows']}, wall time {report['wall_s']} s, "
             f"held-out loss {report['loss'][0]:.3f} -> {report['loss'][-1]:.3f} "
             f"({100 * (report['loss_drop'] or 0):.1f}% lower)", "",
             "| window | " + " | ".join(str(w) for w in range(len(report["loss"]))) + " |",
             "|---|" + "---|" * len(report["loss"]),
             "| held-out loss | " + " | ".join(f"{x:.3f}" for x in report["loss"]) + " |", "",
             "| uid | neuron | role | kind | weight | incentive | dividends | alpha earned | rating |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in sorted(report["neurons"], key=lambda n: n["uid"]):
        lines.append(f"| {n['uid']} | {n['name']} | {n['role']} | {n['kind']} | {n['weight']:.3f} | "
                     f"{n['incentive']:.3f} | {n['dividends']:.3f} | {n['emission_alpha']:.3f} | {n['rating']:.2f} |")
    lines += ["", "Rejections by reason: " + (", ".join(f"`{k}` {v}" for k, v in sorted(report["rejections"].items()))
                                              or "none") + f"; checkpoints published: {len(report['checkpoints'])}."]
    data = [f"{n['name']} {n['data_bytes_per_window'] / 1024:.1f} KiB" for n in report["neurons"]
            if n.get("data_bytes_per_window") is not None]
    if data:
        lines += ["", "Data fetched per miner per window (mean, pages of the paged corpus): " + ", ".join(data) + "."]
    lines += [f"- {e['what']}: {e['outcome']}" for e in report["events"]]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """`python scripts/localnet_report.py RUN_DIR/report/report.json`: print the report as Markdown."""
    if len(argv) != 1:
        print("usage: python scripts/localnet_report.py RUN_DIR/report/report.json  (prints Markdown)")
        return 2
    print(format_markdown(json.loads(Path(argv[0]).read_text())))
    return 0
