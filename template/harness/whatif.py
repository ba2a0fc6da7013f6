"""The subnet owner's what-if: who would have earned what in a finished run under other settings.

    python scripts/whatif.py --run runs/demo --grid burn_rate=0.1,0.5 top_n_miners=4,8
    python scripts/whatif.py --run runs/demo --grid weight_curve=linear,proportional,softmax \\
        yuma3_enabled=true,false liquid_alpha_enabled=false,true commit_reveal_delay=0,2
    python scripts/whatif.py --run runs/demo --grid pay_score=rating,contribution \\
        weight_curve=linear,proportional pay_horizon=4,8,16
    python scripts/whatif.py --sweep blocks_per_window=20,30 topk=32,64 \\
        --localnet-args "--miners 3 --windows 8 --adversaries noise,copycat"

Replay mode (--run, seconds): re-derives each validator's weights from its recorded per-window
scores under other scoring-to-weight settings (burn_rate, top_n_miners, weight_curve,
weight_temperature, weights_interval; pay_score and pay_horizon re-derive the scores themselves from the
recorded evaluations, gauntlet.pay.rescore) and re-runs the chain's own coinbase and Yuma code over the
recorded history under other chain settings (yuma3_enabled, liquid_alpha_enabled, alpha_low,
alpha_high, bonds_moving_average, bonds_penalty, kappa, any other subnet hyperparameter, owner_cut as
a fraction, commit_reveal_delay in tempos: 0 = commit-reveal off). u16 and per-million parameters take
chain units or a fraction (kappa=0.5). The grid is every combination of the values given; the run's
own settings come first as the reference row.

Sweep mode (--sweep, one real network per point, minutes each): for settings that change training
itself (blocks_per_window, tempo, or any HParams field such as topk or min_improvement), runs
scripts/localnet.py once per point and prints the same table from each run's own emissions.

Output: a table, a PNG (--png, default RUN_DIR/report/whatif.png) and, as the last line, JSON:
{"points": [{"settings", "alpha": {"owner", "validators", "honest", "hostile", "burned"}, "by_kind",
"honest_share", "gini_honest", "honest_max_over_min", "best_hostile_share", "best_hostile_over_worst_honest",
"neurons", "by_validator"}], "replay_error", ...}. honest_max_over_min is the best over the worst honest miner's
alpha (the honest spread; null = infinite), best_hostile_share the best hostile miner's share of all miners'
alpha. With two or more validators, the table adds one column per validator (its dividends) whenever a setting
moves them: yuma3, kappa, bonds and liquid alpha shift dividends between validators and leave their sum alone.
Amounts are alpha earned at the epochs over the whole recorded chain. replay_error is the largest
relative difference, over neurons, between a replay with the run's own settings and what the chain
actually paid (0 when exact).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from template.harness.whatif_replay import (
    RAO_PER_ALPHA,
    ReplayResult,
    Run,
    RunError,
    build_settings,
    load_run,
    parse_value,
    recorded,
    replay,
)
from template.protocol.config import HParams

ROOT = Path(__file__).resolve().parents[2]  # the repository root

SWEEP_FLAGS = {"blocks_per_window": "--blocks-per-window", "tempo": "--tempo"}


def parse_axes(items: Sequence[str], what: str) -> list[tuple[str, list[Any]]]:
    """["burn_rate=0.1,0.5", ...] -> [("burn_rate", [0.1, 0.5]), ...]. Raises ValueError on bad syntax."""
    axes = []
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name or not raw:
            raise ValueError(f"{what} expects name=v1,v2,..., got {item!r}")
        axes.append((name.strip(), [parse_value(v) for v in raw.split(",") if v.strip()]))
    names = [n for n, _ in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: a name appears twice in {names}")
    return axes


def grid_points(axes: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    names = [n for n, _ in axes]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


# ---------------------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------------------


def gini(values: Sequence[float]) -> float:
    """0 when everyone earns the same, towards 1 when one earns everything (0 for no earnings)."""
    xs = sorted(max(0.0, v) for v in values)
    total = math.fsum(xs)
    if not xs or total == 0:
        return 0.0
    n = len(xs)
    return math.fsum((2 * (i + 1) - n - 1) * x for i, x in enumerate(xs)) / (n * total)


def honest_spread(honest: Sequence[float]) -> float | None:
    """Best over worst honest miner's earnings (1 = equal pay); None when one earned nothing while another
    earned something (an infinite spread), 1.0 for no honest miner or none earning."""
    if not honest or max(honest) <= 0:
        return 1.0
    return max(honest) / min(honest) if min(honest) > 0 else None


def summarize(run: Run, result: ReplayResult, settings: dict[str, Any]) -> dict[str, Any]:
    """Alpha per group of neurons, the honest miners' share of miner earnings and Gini, best hostile / worst
    honest (None when no honest miner earned anything while a hostile one did)."""
    alpha = {n.name: result.earned.get(n.hotkey, 0) / RAO_PER_ALPHA for n in run.neurons}
    by_kind: dict[str, float] = {}
    honest: list[float] = []
    hostile: list[float] = []
    for n in run.neurons:
        if n.role == "miner":
            (honest if n.kind == "honest" else hostile).append(alpha[n.name])
            if n.kind != "honest":
                by_kind[n.kind] = by_kind.get(n.kind, 0.0) + alpha[n.name]
    owner = sum(alpha[n.name] for n in run.neurons if n.role == "owner")
    validators = sum(alpha[n.name] for n in run.neurons if n.role == "validator")
    miners_total = math.fsum(honest) + math.fsum(hostile)
    best_hostile, worst_honest = max(hostile, default=0.0), min(honest, default=0.0)
    if best_hostile == 0:
        ratio: float | None = 0.0
    else:
        ratio = best_hostile / worst_honest if worst_honest > 0 else None
    return {
        "settings": settings,
        "alpha": {"owner": owner, "validators": validators, "honest": math.fsum(honest),
                  "hostile": math.fsum(hostile), "burned": result.burned / RAO_PER_ALPHA},
        "by_kind": by_kind,
        "honest_share": math.fsum(honest) / miners_total if miners_total > 0 else None,
        "gini_honest": gini(honest),
        "honest_max_over_min": honest_spread(honest),
        "best_hostile_share": best_hostile / miners_total if miners_total > 0 else None,
        "best_hostile_over_worst_honest": ratio,
        "neurons": alpha,
        "weight_calls_refused": result.weight_refused,
        "by_validator": {n.name: alpha[n.name] for n in run.neurons if n.role == "validator"},
    }


def moved_validators(points: list[dict[str, Any]], eps: float = 0.005) -> list[str]:
    """Validators whose dividends differ between points by what a 2-decimal table shows, when there are two or
    more: yuma3, kappa, bonds and liquid-alpha settings move dividends between validators while their sum (the
    `validators` column) stays put, so such rows would otherwise read as "no effect"."""
    names = list(dict.fromkeys(k for p in points for k in p.get("by_validator", {})))
    if len(names) < 2:
        return []
    first = points[0].get("by_validator", {})
    moved = any(abs(p.get("by_validator", {}).get(v, 0.0) - first.get(v, 0.0)) >= eps for p in points for v in names)
    return names if moved else []


def replay_error(run: Run, own: ReplayResult, truth: ReplayResult) -> float:
    """Largest |replayed - paid| / max(|replayed|, |paid|) over the run's neurons (0 when exact)."""
    worst = 0.0
    for n in run.neurons:
        a, b = own.earned.get(n.hotkey, 0), truth.earned.get(n.hotkey, 0)
        if a != b:
            worst = max(worst, abs(a - b) / max(abs(a), abs(b)))
    return worst


def format_table(points: list[dict[str, Any]]) -> str:
    kinds = sorted({k for p in points for k in p["by_kind"]})
    names = list(dict.fromkeys(k for p in points for k in p["settings"]))
    head = [*names, "owner", "validators", "honest", "hostile", *kinds, "burned", "honest%", "gini", "host/hon",
            "hon max/min", "best host%"]
    rows = []
    for p in points:
        a = p["alpha"]
        ratio = p["best_hostile_over_worst_honest"]
        share = p["honest_share"]
        rows.append([*(str(p["settings"].get(n, "(run)")) for n in names),
                     *(f"{a[k]:.2f}" for k in ("owner", "validators", "honest", "hostile")),
                     *(f"{p['by_kind'].get(k, 0.0):.2f}" for k in kinds), f"{a['burned']:.2f}",
                     "-" if share is None else f"{100 * share:.1f}", f"{p['gini_honest']:.3f}",
                     "inf" if ratio is None else f"{ratio:.3f}",
                     "inf" if p.get("honest_max_over_min") is None else f"{p['honest_max_over_min']:.2f}",
                     "-" if p.get("best_hostile_share") is None else f"{100 * p['best_hostile_share']:.1f}"])
    per_validator = moved_validators(points)  # each validator's dividends, where a setting moves them
    head += per_validator
    for row, p in zip(rows, points, strict=True):
        row += [f"{p.get('by_validator', {}).get(v, 0.0):.2f}" for v in per_validator]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def save_png(points: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(f"{k}={v}" for k, v in p["settings"].items()) or "(run)" for p in points]
    groups = [("owner", "tab:gray"), ("validators", "tab:green"), ("honest", "tab:blue"), ("hostile", "tab:red"),
              ("burned", "black")]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(points) + 1.5))
    left = [0.0] * len(points)
    for key, color in groups:
        vals = [p["alpha"][key] for p in points]
        ax.barh(range(len(points)), vals, left=left, color=color, label=key)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_yticks(range(len(points)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("alpha over the run")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# Replay mode
# ---------------------------------------------------------------------------------------------------------


def what_if(run: Run, points: list[dict[str, Any]], progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The run's own settings first, then every grid point; returns the JSON document."""
    settings = [build_settings(run, p) for p in points]  # all errors before any replay
    t0 = time.time()
    truth = recorded(run)
    own = replay(run, build_settings(run, {}))
    out = [summarize(run, own, {})]
    for i, (p, s) in enumerate(zip(points, settings, strict=True)):
        out.append(summarize(run, replay(run, s), p))
        if (i + 1) % 10 == 0:
            progress(f"  {i + 1}/{len(points)} points")
    return {"points": out, "replay_error": replay_error(run, own, truth),
            "state_root_match": own.state_root == truth.state_root, "run": str(run.path),
            "blocks": len(run.blocks), "seconds": round(time.time() - t0, 2)}


# ---------------------------------------------------------------------------------------------------------
# Sweep mode
# ---------------------------------------------------------------------------------------------------------


def sweep_command(point: dict[str, Any], run_dir: Path, localnet_args: str) -> list[str]:
    """The scripts/localnet.py command for one sweep point. Raises ValueError for a setting it cannot pass."""
    cmd = [sys.executable, str(ROOT / "scripts" / "localnet.py"), *shlex.split(localnet_args),
           "--run-dir", str(run_dir)]
    for name, value in point.items():
        if name in SWEEP_FLAGS:
            cmd += [SWEEP_FLAGS[name], str(value)]
        elif name in HParams.model_fields and name != "start_block":
            cmd += ["--hparam", f"{name}={json.dumps(value)}"]
        else:
            raise ValueError(f"--sweep: {name!r} is not blocks_per_window, tempo or an HParams field "
                             "(chain and weight settings need no new run: use --grid)")
    return cmd


def sweep(points: list[dict[str, Any]], sweep_dir: Path, localnet_args: str,
          runner: Callable[[list[str], Path], int] | None = None,
          progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the real network once per point (slow) and summarise what each run's chain paid."""
    runner = runner or run_logged
    commands = [sweep_command(p, sweep_dir / f"point{i}", localnet_args) for i, p in enumerate(points)]
    out, errors = [], []
    for i, (p, cmd) in enumerate(zip(points, commands, strict=True)):
        run_dir = sweep_dir / f"point{i}"
        t0 = time.time()
        progress(f"[{i + 1}/{len(points)}] {p}: running the network in {run_dir} ...")
        rc = runner(cmd, run_dir)
        if rc != 0:
            raise RunError(f"sweep point {p}: scripts/localnet.py exited {rc} (log: {run_dir}/localnet.log)")
        run = load_run(run_dir)
        truth = recorded(run)
        own = replay(run, build_settings(run, {}))
        errors.append(replay_error(run, own, truth))
        out.append(summarize(run, truth, p))
        progress(f"[{i + 1}/{len(points)}] done in {time.time() - t0:.0f} s")
    return {"points": out, "replay_error": max(errors, default=0.0), "sweep_dir": str(sweep_dir)}


def run_logged(cmd: list[str], run_dir: Path) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "localnet.log", "w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a finished scripts/localnet.py run folder (replay mode)")
    p.add_argument("--grid", nargs="+", default=[], metavar="NAME=V1,V2", help="settings to try (replay mode)")
    p.add_argument("--sweep", nargs="+", default=[], metavar="NAME=V1,V2",
                   help="training settings, one real network per point (sweep mode)")
    p.add_argument("--localnet-args", default="--miners 3 --windows 8 --adversaries noise,copycat",
                   help="flags passed to scripts/localnet.py in sweep mode")
    p.add_argument("--sweep-dir", default=None, help="sweep mode: folder of the runs (default runs/sweep-<time>)")
    p.add_argument("--png", default=None, help="plot path (default: RUN_DIR/report/whatif.png or SWEEP_DIR)")
    args = p.parse_args(argv)
    if bool(args.run) == bool(args.sweep):
        p.error("give either --run RUN_DIR (with --grid) or --sweep")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.run:
            run = load_run(args.run)
            points = grid_points(parse_axes(args.grid, "--grid")) if args.grid else []
            doc = what_if(run, points)
            png = Path(args.png) if args.png else run.path / "report" / "whatif.png"
            title = f"what-if over {run.path.name}: {len(points)} points + the run's own settings"
        else:
            sweep_dir = Path(args.sweep_dir or ROOT / "runs" / time.strftime("sweep-%Y%m%d-%H%M%S"))
            doc = sweep(grid_points(parse_axes(args.sweep, "--sweep")), sweep_dir, args.localnet_args)
            png = Path(args.png) if args.png else sweep_dir / "whatif.png"
            title = f"sweep: {len(doc['points'])} runs"
    except (ValueError, OSError) as e:
        print(f"whatif: {e}", file=sys.stderr)
        return 2
    print(format_table(doc["points"]))
    print(f"replay_error: {doc['replay_error']:.3g}" + (f" ({doc['seconds']} s for {len(doc['points'])} replays)"
                                                         if "seconds" in doc else ""))
    save_png(doc["points"], png, title)
    print(f"plot: {png}")
    print(json.dumps(doc))
    return 0

