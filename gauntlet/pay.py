"""What a miner is paid for (issue 31): measured contribution over a horizon, not rank luck.

Two pay scores, chosen by the hparam `pay_score`:
- contribution (default): the miner's per-window contribution in the Gauntlet's own units, the clipped
  update's relative loss drop on the validator's private random batch (`EvalResult.improvement_random`),
  counted only when the window's update was compliant and cleared the noise floors
  (`evaluate.match_scores` with compliance); a failed, rejected or non-compliant window counts 0.
  The contributions are averaged over `pay_horizon` windows by an exponential moving average (step
  2 / (horizon + 1): the centre of mass of a plain average over the last `pay_horizon` windows), so a
  zero costs pay in the window it happens (the average drops by the step at once) and equal workers,
  whose per-window gains differ by a few percent of noise, earn alike. A miner the validator did not
  evaluate this window (the rotating sample) keeps its average.
- rating: today's before issue 31, the OpenSkill ordinal (mu - 3 sigma) of the per-window matches.

Either pay score then passes the gates of `weights.final_scores` (x compliance EMA, compliance EMA >=
threshold, in sync this window) and the weight curve (`weights.compute_weights`). OpenSkill ratings stay
where order matters: the lead's peer selection ranks by ordinal (`aggregate.select_peers`).

`why_zero` names the reason a miner's final score is 0 in a window, for its log, metrics and dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gauntlet.checks import Admission
from gauntlet.evaluate import EvalResult, is_compliant, match_scores
from gauntlet.ratings import Ratings
from gauntlet.weights import final_scores, rank_positive
from template.protocol.config import HParams

PAY_SCORES = ("contribution", "rating")

# Reasons for a zero final score (besides the admission's own reasons: missing, copy, out_of_sync, ...)
NOT_COMPLIANT = "not_compliant"  # evaluated, but its update did not help its assigned samples more than random
NO_GAIN = "no_gain"  # evaluated and compliant, but under the noise floor or the share of the window's best
COMPLIANCE_GATE = "compliance_gate"  # this window may be fine, but the compliance average is under the threshold
NOTHING_EARNED = "nothing_earned"  # its pay score is 0: no counted contribution (in the horizon) yet
OUT_OF_SYNC = "out_of_sync"


def horizon_step(horizon: int) -> float:
    """The EMA step whose centre of mass equals a plain average over `horizon` windows: 2 / (horizon + 1)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return 2.0 / (horizon + 1)


def pay_scores(pay_score: str, *, ordinals: Mapping[int, float], contribution: Mapping[int, float],
               compliance: Mapping[int, float], in_sync: Mapping[int, bool], threshold: float) -> dict[int, float]:
    """uid -> final (gated) score under `pay_score` (one of PAY_SCORES), for every rated uid."""
    if pay_score == "rating":
        return final_scores(dict(ordinals), dict(compliance), dict(in_sync), threshold=threshold)
    if pay_score == "contribution":
        base = {uid: contribution.get(uid, 0.0) for uid in ordinals}
        return final_scores(base, dict(compliance), dict(in_sync), threshold=threshold)
    raise ValueError(f"pay_score must be one of {', '.join(PAY_SCORES)}, got {pay_score!r}")


def explain_window(hp: HParams, ratings: Ratings, admissions: Mapping[int, Admission],
                   evals: Mapping[int, EvalResult], scores: Mapping[int, float]) -> dict[int, dict[str, Any]]:
    """uid -> why it earns what it earns this window (the validator's row and log): in_sync, the window's
    compliance test and whether its gain counted, its contribution and compliance averages after the
    window (`ratings` already updated), its rank among the positive final `scores`, the reason for a 0."""
    compliant = {uid: is_compliant(e.improvement_assigned, e.improvement_random, margin=hp.compliance_margin)
                 for uid, e in evals.items()}
    counted = match_scores(sorted(admissions), {uid: e.improvement_random for uid, e in evals.items()},
                           min_improvement=hp.min_improvement, min_ratio_to_best=hp.min_improvement_ratio,
                           compliant=compliant)
    contribution, compliance = ratings.contribution(), ratings.compliance()
    ranked = rank_positive(dict(scores), n=max(scores, default=0) + 1)
    out = {}
    for uid, adm in admissions.items():
        out[uid] = {"in_sync": adm.in_sync, "compliant": compliant.get(uid), "counted": counted.get(uid) is not None,
                    "contribution": contribution.get(uid, 0.0), "compliance": compliance.get(uid, 0.0),
                    "rank": ranked.index(uid) + 1 if uid in ranked else None,
                    "why": why_zero(reason=adm.reason, evaluated=uid in evals, compliant=compliant.get(uid),
                                    counted=counted.get(uid) is not None, compliance=compliance.get(uid, 0.0),
                                    threshold=hp.compliance_threshold, in_sync=adm.in_sync,
                                    final=scores.get(uid, 0.0))}
    return out


def why_zero(*, reason: str | None, evaluated: bool, compliant: bool | None, counted: bool, compliance: float,
             threshold: float, in_sync: bool, final: float) -> str | None:
    """Why a miner's final score is 0 this window (None when it is positive).

    `reason` is the admission's rejection reason (None: admitted); `compliant` this window's compliance
    test (None: not evaluated); `counted` whether the window's contribution counted (a success)."""
    if final > 0:
        return None
    if reason:
        return reason
    if not in_sync:
        return OUT_OF_SYNC
    if evaluated and compliant is False:
        return NOT_COMPLIANT
    if evaluated and not counted:
        return NO_GAIN
    if compliance < threshold:
        return COMPLIANCE_GATE
    return NOTHING_EARNED


# -- re-deriving a run's scores under other pay settings (the what-if replay) ---------------------


@dataclass(frozen=True)
class MinerOutcome:
    """What a validator recorded about one miner in one window (its metrics row), enough to rate it again."""

    hotkey: str
    reason: str | None  # the admission's rejection reason; None = admitted
    evaluated: bool
    improvement_random: float | None
    improvement_assigned: float | None
    in_sync: bool


@dataclass(frozen=True)
class PaySettings:
    """The hparams that turn outcomes into final scores (a subset of HParams, same names and meanings)."""

    pay_score: str
    pay_horizon: int
    compliance_alpha: float
    compliance_margin: float
    compliance_threshold: float
    min_improvement: float
    min_improvement_ratio: float


def rescore(windows: list[tuple[int, dict[int, MinerOutcome]]], settings: PaySettings) -> list[dict[int, float]]:
    """Final scores per window, as the validator computes them (`update_scores`), from recorded outcomes."""
    ratings = Ratings(alpha=settings.compliance_alpha)
    step = horizon_step(settings.pay_horizon)
    out = []
    for window, miners in windows:
        evaluated = {u: m for u, m in miners.items() if m.evaluated and m.improvement_random is not None}
        players = sorted({u for u, m in miners.items() if m.reason} | set(evaluated))
        compliant = {u: is_compliant(m.improvement_assigned if m.improvement_assigned is not None else math.nan,
                                     m.improvement_random or 0.0, margin=settings.compliance_margin)
                     for u, m in evaluated.items()}
        scores = match_scores(players, {u: m.improvement_random or 0.0 for u, m in evaluated.items()},
                              min_improvement=settings.min_improvement,
                              min_ratio_to_best=settings.min_improvement_ratio, compliant=compliant)
        ratings.update(window, scores, {u: miners[u].hotkey for u in players}, compliant=compliant,
                       contribution_step=step)
        out.append(pay_scores(settings.pay_score, ordinals=ratings.ordinals(), contribution=ratings.contribution(),
                              compliance=ratings.compliance(), in_sync={u: m.in_sync for u, m in miners.items()},
                              threshold=settings.compliance_threshold))
    return out
