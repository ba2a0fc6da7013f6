"""Persistent miner ratings: one Plackett-Luce match per window (openskill), plus compliance.

Each window, every miner the validator looked at plays one match: admitted and evaluated
miners are ranked by score (higher is better, equal scores tie), and every failure
(admission rejected, nothing uploaded) shares the last place. A rating is reset when the
hotkey on a uid changes (a new registration inherits nothing). A window is rated at most
once, so replaying it after a restart changes nothing.

Compliance is an exponential moving average, over the windows a uid took part in, of "the
miner's admitted update improved its assigned samples more than a random batch" (1 or 0; a
failed admission counts 0), starting at `INITIAL_COMPLIANCE`. It gates the final score, so
an idle miner loses its weight within two windows (a lazy one in most windows) while its
Plackett-Luce ordinal (mu - 3 sigma), earned over many windows, falls only slowly.

Contribution is an exponential moving average, over the same windows, of the window's compliance-gated
match score (the update's gain on the private random batch; 0 for a failure): the pay score of
`gauntlet/pay.py`. It starts at 0 and is reset with the rating when the hotkey changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

from loguru import logger
from openskill.models import PlackettLuce

INITIAL_COMPLIANCE = 0.5  # unknown: one non-compliant window drops a new miner below a 0.5 gate


class Rating(TypedDict):
    mu: float
    sigma: float
    hotkey: str


class Ratings:
    """uid -> (mu, sigma, hotkey) ratings and compliance EMAs, kept by the validator as `state_dict()` JSON."""

    def __init__(self, *, alpha: float) -> None:
        """`alpha`: the EMA step of the compliance average, the hparam `compliance_alpha`."""
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.model = PlackettLuce()
        self._ratings: dict[int, Rating] = {}
        self._compliance: dict[int, float] = {}
        self._contribution: dict[int, float] = {}
        self.last_window: int | None = None

    # -- persistence ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "ratings": {str(uid): dict(r) for uid, r in sorted(self._ratings.items())},
            "compliance": {str(uid): c for uid, c in sorted(self._compliance.items())},
            "contribution": {str(uid): c for uid, c in sorted(self._contribution.items())},
            "last_window": self.last_window,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ratings = {int(uid): {"mu": float(r["mu"]), "sigma": float(r["sigma"]), "hotkey": str(r["hotkey"])}
                         for uid, r in (state.get("ratings") or {}).items()}
        self._compliance = {int(uid): float(c) for uid, c in (state.get("compliance") or {}).items()}
        self._contribution = {int(uid): float(c) for uid, c in (state.get("contribution") or {}).items()}
        last = state.get("last_window")
        self.last_window = None if last is None else int(last)

    # -- updates -------------------------------------------------------------------------------

    def _reset_changed_hotkeys(self, hotkeys: dict[int, str]) -> None:
        for uid, hotkey in hotkeys.items():
            old = self._ratings.get(uid)
            if old is not None and old["hotkey"] != hotkey:
                logger.info(f"uid {uid} has a new hotkey; its rating and compliance start over")
                del self._ratings[uid]
                self._compliance.pop(uid, None)
                self._contribution.pop(uid, None)

    def update(self, window: int, scores: dict[int, float | None], hotkeys: dict[int, str], *,
               compliant: dict[int, bool], contribution_step: float = 2 / 9) -> None:
        """Rate window `window` as one match; a window at or before the last rated one is ignored.

        `contribution_step`: the EMA step of the contribution average (`pay.horizon_step(pay_horizon)`)."""
        if self.last_window is not None and window <= self.last_window:
            logger.debug(f"window {window} already rated (last {self.last_window}); ignored")
            return
        missing = set(scores) - set(hotkeys)
        if missing:
            raise ValueError(f"hotkeys missing for uids {sorted(missing)}")
        self._reset_changed_hotkeys(hotkeys)
        players = sorted(scores)
        if len(players) >= 2:
            self._rate_match(players, scores, hotkeys)
        else:
            for uid in players:  # no opponent: nothing to learn, but the uid is now known
                self._ratings.setdefault(uid, self._fresh(hotkeys[uid]))
        for uid in players:
            # a failure (score None) counts as non-compliant: no valid update, no proof of work
            ok = scores[uid] is not None and compliant.get(uid, False)
            prev = self._compliance.get(uid, INITIAL_COMPLIANCE)
            self._compliance[uid] = (1 - self.alpha) * prev + self.alpha * (1.0 if ok else 0.0)
        self._contribution = accumulate(self._contribution, {uid: window_contribution(scores[uid]) for uid in players},
                                        step=contribution_step)
        self.last_window = window

    def _fresh(self, hotkey: str) -> Rating:
        r = self.model.rating()
        return {"mu": r.mu, "sigma": r.sigma, "hotkey": hotkey}

    def _rate_match(self, players: list[int], scores: dict[int, float | None], hotkeys: dict[int, str]) -> None:
        teams = []
        for uid in players:
            r = self._ratings.get(uid) or self._fresh(hotkeys[uid])
            teams.append([self.model.rating(mu=r["mu"], sigma=r["sigma"])])
        new = self.model.rate(teams, ranks=[float(r) for r in match_ranks([scores[u] for u in players])])
        for uid, team in zip(players, new, strict=True):
            self._ratings[uid] = {"mu": float(team[0].mu), "sigma": float(team[0].sigma), "hotkey": hotkeys[uid]}

    # -- views ---------------------------------------------------------------------------------

    def ordinals(self) -> dict[int, float]:
        """uid -> mu - 3 sigma (a conservative skill estimate; 0 for a fresh rating)."""
        return {uid: self.model.rating(mu=r["mu"], sigma=r["sigma"]).ordinal() for uid, r in self._ratings.items()}

    def compliance(self) -> dict[int, float]:
        return dict(self._compliance)

    def contribution(self) -> dict[int, float]:
        """uid -> contribution EMA (relative loss drop per window, 0 for a fresh uid)."""
        return dict(self._contribution)


def match_ranks(scores: list[float | None]) -> list[int]:
    """Dense ranks, 1 = best: higher score ranks higher, equal scores tie, None/NaN share the last rank."""
    valid = sorted({s for s in scores if s is not None and not math.isnan(s)}, reverse=True)
    rank_of = {s: i + 1 for i, s in enumerate(valid)}
    last = len(valid) + 1
    return [rank_of[s] if s is not None and not math.isnan(s) else last for s in scores]


def window_contribution(score: float | None) -> float:
    """A window's contribution from its compliance-gated match score (None: a failure) -> 0 or the gain."""
    if score is None or not math.isfinite(score) or score <= 0:
        return 0.0
    return float(score)


def accumulate(previous: Mapping[int, float], window: Mapping[int, float], *, step: float) -> dict[int, float]:
    """EMA update: uids in `window` move by `step` towards their contribution (from 0 when new); others keep."""
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    out = dict(previous)
    for uid, value in window.items():
        out[uid] = (1 - step) * previous.get(uid, 0.0) + step * value
    return out
