"""Pay fairness study (issue 31): who earns what under a weight mapping, in-process, seeded, in seconds.

    python scripts/fairness.py --seeds 40 --windows 24

N identical honest miners and a few hostile kinds play `windows` windows. Each window a miner's evaluation
is drawn around its kind's mean (the numbers come from the recorded localnet run in tests/data/whatif_run,
see MEASURED below); everything after the draw is the validator's own code: `evaluate.is_compliant`,
`evaluate.match_scores`, `ratings.Ratings`, `pay.pay_scores`, `weights.compute_weights` and
`weights.weights_due`. Pay per window = the miner weights in force (set every `weights_interval` windows),
summed over the run, in shares of one window's miner emission.

Kinds (gain = relative loss drop on the random batch, ratio = assigned gain / random gain):
- honest: gain ~ m_w (1 + N(0, GAIN_NOISE)), ratio ~ N(HONEST_RATIO, RATIO_NOISE);
- lazy: trains on other data: the same gain, ratio ~ N(LAZY_RATIO, RATIO_NOISE) (passes now and then);
- timed: honest in even windows, lazy in odd ones (non-compliant every other window, same compute);
- halfscaled: half the inner steps, its delta x2; after clipping its gain is HALF_GAIN of an honest one,
  and it saw half its assignment: ratio ~ N(HALF_RATIO, RATIO_NOISE);
- heldout: half of every batch from the public tail: an honest gain, ratio ~ N(HALF_RATIO, RATIO_NOISE).

Output: one table row per mapping and, as the last line, JSON {"mappings": [{"name", "honest_max_over_min",
"honest_gini", "best_hostile_over_worst_honest", "by_kind", ...}], ...} (means and worst cases over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gauntlet.evaluate import is_compliant, match_scores
from gauntlet.pay import horizon_step, pay_scores
from gauntlet.ratings import Ratings
from gauntlet.weights import compute_weights, weights_due
from template.harness.whatif import gini
from template.protocol.config import HParams

# Measured on tests/data/whatif_run (3 honest miners, one lazy, 12 windows; validator0's rows):
GAIN_NOISE = 0.09  # honest gains within one window differ by ~9% (sd / mean)
HONEST_RATIO = 1.17  # assigned / random gain of an honest update (1.10-1.29 after window 0)
LAZY_RATIO = 0.99  # the lazy miner's (0.92-1.08)
RATIO_NOISE = 0.05
HALF_RATIO = 1.08  # half its batches on its assignment: about half the honest excess
HALF_GAIN = 0.8  # half the work, x2 and clipped: assumed, not measured
KINDS = ("honest", "timed", "lazy", "halfscaled", "heldout")


def window_mean_gain(window: int) -> float:
    """The recorded run's mean honest gain: ~0.007 in window 0, ~0.02-0.035 later."""
    return 0.03 * (1 - math.exp(-(window + 1) / 2.5))


@dataclass(frozen=True)
class Mapping:
    """A candidate scores-to-weights mapping (pay_score, horizon, curve); `window_sum` replaces the EMA by a
    plain sum over the last `horizon` windows (the study's alternative, not an hparam)."""

    name: str
    pay_score: str
    curve: str
    horizon: int = 8
    window_sum: bool = False


def draw_eval(kind: str, window: int, rng: random.Random) -> tuple[float, float]:
    """(gain on the random batch, gain on the assigned batch) of one miner in one window."""
    mean = window_mean_gain(window)
    if kind == "timed":
        kind = "honest" if window % 2 == 0 else "lazy"
    gain = mean * (HALF_GAIN if kind == "halfscaled" else 1.0) * (1 + rng.gauss(0, GAIN_NOISE))
    centre = {"honest": HONEST_RATIO, "lazy": LAZY_RATIO, "halfscaled": HALF_RATIO, "heldout": HALF_RATIO}[kind]
    return gain, gain * rng.gauss(centre, RATIO_NOISE)


@dataclass
class Outcome:
    pay: dict[int, float] = field(default_factory=dict)  # uid -> summed miner weight


def simulate(mapping: Mapping, kinds: list[str], *, windows: int, seed: int, hp: HParams | None = None) -> Outcome:
    """One run: uids 1..len(kinds) (uid 0 is the owner); pay in shares of a window's miner emission."""
    hp = hp or HParams()
    rng = random.Random(seed)
    uids = list(range(1, len(kinds) + 1))
    hotkeys = {u: f"hk{u}" for u in uids}
    ratings = Ratings(alpha=hp.compliance_alpha)
    history: dict[int, deque[float]] = {u: deque(maxlen=mapping.horizon) for u in uids}
    weights: list[float] | None = None
    last_interval: int | None = None
    out = Outcome({u: 0.0 for u in uids})
    for w in range(windows):
        evals = {u: draw_eval(k, w, rng) for u, k in zip(uids, kinds, strict=True)}
        compliant = {u: is_compliant(a, r, margin=hp.compliance_margin) for u, (r, a) in evals.items()}
        scores = match_scores(uids, {u: r for u, (r, _) in evals.items()}, min_improvement=hp.min_improvement,
                              min_ratio_to_best=hp.min_improvement_ratio, compliant=compliant)
        ratings.update(w, scores, hotkeys, compliant=compliant, contribution_step=horizon_step(mapping.horizon))
        contribution = ratings.contribution()
        if mapping.window_sum:
            for u in uids:
                history[u].append(scores[u] or 0.0)
            contribution = {u: math.fsum(history[u]) for u in uids}
        final = pay_scores(mapping.pay_score, ordinals=ratings.ordinals(), contribution=contribution,
                           compliance=ratings.compliance(), in_sync={u: True for u in uids},
                           threshold=hp.compliance_threshold)
        if weights_due(w, hp.weights_interval, last_interval):
            weights = compute_weights(final, n=len(uids) + 1, owner_uid=0, burn_rate=0.0, top_n=hp.top_n_miners,
                                      curve=mapping.curve, temperature=hp.weight_temperature)
            last_interval = w // hp.weights_interval
        if weights is not None:
            for u in uids:
                out.pay[u] += weights[u]
    return out


def fairness(outcome: Outcome, kinds: list[str]) -> dict[str, Any]:
    honest = [outcome.pay[u] for u, k in enumerate(kinds, start=1) if k == "honest"]
    hostile = {k: outcome.pay[u] for u, k in enumerate(kinds, start=1) if k != "honest"}
    worst = min(honest)
    return {"honest_max_over_min": max(honest) / worst if worst > 0 else math.inf, "honest_gini": gini(honest),
            "best_hostile_over_worst_honest": max(hostile.values(), default=0.0) / worst if worst > 0 else math.inf,
            "by_kind": {k: v / statistics.fmean(honest) for k, v in hostile.items()}}


def study(mappings: list[Mapping], *, honest: int, hostile: list[str], windows: int, seeds: int) -> list[dict]:
    kinds = ["honest"] * honest + hostile
    rows = []
    for m in mappings:
        runs = [fairness(simulate(m, kinds, windows=windows, seed=s), kinds) for s in range(seeds)]
        spread = [r["honest_max_over_min"] for r in runs]
        host = [r["best_hostile_over_worst_honest"] for r in runs]
        rows.append({
            "name": m.name, "pay_score": m.pay_score, "curve": m.curve, "horizon": m.horizon,
            "window_sum": m.window_sum,
            "honest_max_over_min": statistics.fmean(spread), "honest_max_over_min_worst": max(spread),
            "honest_gini": statistics.fmean(r["honest_gini"] for r in runs),
            "best_hostile_over_worst_honest": statistics.fmean(host),
            "best_hostile_over_worst_honest_worst": max(host),
            "runs_fair": sum(1 for s, h in zip(spread, host, strict=True) if s <= 1.5 and h < 1) / len(runs),
            "by_kind": {k: statistics.fmean(r["by_kind"][k] for r in runs) for k in runs[0]["by_kind"]},
        })
    return rows


CANDIDATES = [
    Mapping("today: rating + linear", "rating", "linear"),
    Mapping("rating + proportional", "rating", "proportional"),
    Mapping("contribution h1 + proportional", "contribution", "proportional", 1),
    Mapping("contribution h4 + proportional", "contribution", "proportional", 4),
    Mapping("contribution h8 + proportional", "contribution", "proportional", 8),
    Mapping("contribution h16 + proportional", "contribution", "proportional", 16),
    Mapping("contribution sum8 + proportional", "contribution", "proportional", 8, window_sum=True),
    Mapping("contribution h8 + linear", "contribution", "linear", 8),
]


def format_table(rows: list[dict]) -> str:
    kinds = list(rows[0]["by_kind"]) if rows else []
    head = ["mapping", "honest max/min (worst)", "gini", "best hostile/worst honest (worst)", "fair runs",
            *(f"{k}/honest" for k in kinds)]
    body = [[r["name"], f"{r['honest_max_over_min']:.2f} ({r['honest_max_over_min_worst']:.2f})",
             f"{r['honest_gini']:.3f}",
             f"{r['best_hostile_over_worst_honest']:.2f} ({r['best_hostile_over_worst_honest_worst']:.2f})",
             f"{100 * r['runs_fair']:.0f}%", *(f"{r['by_kind'][k]:.2f}" for k in kinds)] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--honest", type=int, default=4)
    p.add_argument("--hostile", default="timed,lazy,halfscaled,heldout", help="comma list of " + ",".join(KINDS[1:]))
    p.add_argument("--windows", type=int, default=24)
    p.add_argument("--seeds", type=int, default=40)
    args = p.parse_args(argv)
    hostile = [k for k in args.hostile.split(",") if k]
    bad = sorted(set(hostile) - set(KINDS[1:]))
    if bad or args.honest < 1 or args.windows < 1 or args.seeds < 1:
        p.error(f"unknown kinds {bad}" if bad else "--honest, --windows and --seeds must be >= 1")
    rows = study(CANDIDATES, honest=args.honest, hostile=hostile, windows=args.windows, seeds=args.seeds)
    print(format_table(rows))
    baseline, default = rows[0], next(r for r in rows if (r["pay_score"], r["curve"], r["horizon"], r["window_sum"])
                                       == (HParams().pay_score, HParams().weight_curve, HParams().pay_horizon, False))
    print(json.dumps({"mappings": rows, "baseline": baseline["name"], "default": default["name"],
                      "honest_max_over_min": {"baseline": baseline["honest_max_over_min"],
                                              "default": default["honest_max_over_min"]},
                      "seeds": args.seeds, "windows": args.windows}))
    return 0
