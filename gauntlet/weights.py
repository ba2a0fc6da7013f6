"""From ratings to on-chain weights (DESIGN section 8): gates, ramp, burn, and when to set them.

final score = ordinal x compliance x compliance gate x sync gate, where
- compliance is the uid's compliance EMA in [0, 1]: a soft factor, so a miner that trains on other
  data than it was assigned (a passing lazy window now and then) stays below the honest ones even
  while its gate happens to be open,
- compliance gate = 1 if the uid's compliance EMA >= threshold else 0 (a uid never rated: 0),
- sync gate = 1 if the uid was fetched this window and its upload did not prove it trains on
  another base model (`in_sync[uid]` True), else 0. A uid absent from `in_sync` is not a
  miner this window (deregistered, or now a validator) and gets 0.

Weights: `burn_rate` to the subnet owner's uid; the rest shared by the `top_n` uids with a
positive final score (best first, equal scores ordered by uid) along a weight curve
(`HParams.weight_curve`). No positive score -> everything to the owner's uid.

Curves (shares of the m winners, each summing to 1):
- linear: a ramp by rank, rank r of m gets (m - r) / (1 + ... + m). Rewards rank, not margin:
  the best of three equal miners gets 3x the third's weight; equal scores are split by uid.
- proportional: share = score / sum of the winners' scores. Rewards the margin: equal scores
  get equal weight, a miner twice as good gets twice the weight.
- softmax: share ~ exp(score / temperature). Rewards the margin exponentially: a small
  temperature (in score units) approaches winner-take-all, a large one an equal split.
- winner_take_all: everything to the best score (split equally when several share it).
  Rewards being first only; the strongest pull to the top and the least room for a runner-up.
"""

from __future__ import annotations

import math


def final_scores(ordinals: dict[int, float], compliance: dict[int, float], in_sync: dict[int, bool], *,
                 threshold: float) -> dict[int, float]:
    """uid -> gated score for every rated uid (0.0 where a gate closes)."""
    scores = {}
    for uid, ordinal in ordinals.items():
        compliant = compliance.get(uid, 0.0) >= threshold
        synced = in_sync.get(uid, False)
        factor = compliance.get(uid, 0.0)
        scores[uid] = float(ordinal) * factor if compliant and synced and math.isfinite(ordinal) else 0.0
    return scores


def ramp(m: int) -> list[float]:
    """m shares decreasing linearly by rank and summing to 1: [m, m-1, ..., 1] / (m (m+1) / 2)."""
    total = m * (m + 1) / 2
    return [(m - r) / total for r in range(m)]


def rank_positive(scores: dict[int, float], *, n: int) -> list[int]:
    """uids in [0, n) with a finite positive score, best first, equal scores by lower uid."""
    eligible = [u for u, s in scores.items() if 0 <= u < n and math.isfinite(s) and s > 0]
    return sorted(eligible, key=lambda u: (-scores[u], u))


WEIGHT_CURVES = ("linear", "proportional", "softmax", "winner_take_all")


def curve_shares(winner_scores: list[float], curve: str, temperature: float = 1.0) -> list[float]:
    """Shares (summing to 1) of winners given best first; scores finite and > 0.

    Raises ValueError for an unknown curve, a temperature <= 0 or an empty list.
    """
    if not winner_scores:
        raise ValueError("winner_scores must not be empty")
    m = len(winner_scores)
    if curve == "linear":
        return ramp(m)
    if curve == "proportional":
        top = max(winner_scores)
        ratios = [s / top for s in winner_scores]  # scaled by the best: no overflow
        total = math.fsum(ratios)
        return [r / total for r in ratios]
    if curve == "softmax":
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        top = max(winner_scores)
        exps = [math.exp((s - top) / temperature) for s in winner_scores]  # shifted: no overflow
        total = math.fsum(exps)
        return [e / total for e in exps]
    if curve == "winner_take_all":
        top = max(winner_scores)
        num_best = sum(1 for s in winner_scores if s == top)
        return [1.0 / num_best if s == top else 0.0 for s in winner_scores]
    raise ValueError(f"weight curve must be one of {', '.join(WEIGHT_CURVES)}, got {curve!r}")


def compute_weights(scores: dict[int, float], *, n: int, owner_uid: int, burn_rate: float, top_n: int,
                    curve: str = "linear", temperature: float = 1.0) -> list[float]:
    """Length-n weights summing to 1: burn to `owner_uid`, the rest to the top_n positive scores.

    `curve` (one of WEIGHT_CURVES) shapes how the non-burned share is split among the winners;
    `temperature` (score units) is read by the softmax curve only.
    """
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    if not 0 <= owner_uid < n:
        raise ValueError(f"owner_uid must be in [0, {n}), got {owner_uid}")
    if not 0 <= burn_rate <= 1:
        raise ValueError(f"burn_rate must be in [0, 1], got {burn_rate}")
    if top_n <= 0:
        raise ValueError(f"top_n must be > 0, got {top_n}")
    if curve not in WEIGHT_CURVES:
        raise ValueError(f"weight curve must be one of {', '.join(WEIGHT_CURVES)}, got {curve!r}")
    weights = [0.0] * n
    winners = rank_positive(scores, n=n)[:top_n]
    if not winners:
        weights[owner_uid] = 1.0
        return weights
    weights[owner_uid] += burn_rate
    shares = curve_shares([scores[u] for u in winners], curve, temperature)
    for uid, share in zip(winners, shares, strict=True):
        weights[uid] += (1 - burn_rate) * share
    return weights


def weights_due(window: int, interval: int, last_set_interval: int | None) -> bool:
    """True in every window of a weights interval (window // interval) until weights were set for it.

    `last_set_interval` is persisted as soon as the chain accepts weights, so a restart in
    the same interval does not set them twice; a refused attempt is retried next window.
    """
    if interval <= 0:
        raise ValueError(f"interval must be > 0, got {interval}")
    current = window // interval
    return last_set_interval is None or current > last_set_interval
