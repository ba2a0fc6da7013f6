"""Pay follows work (gauntlet/pay.py, issue 31): the contribution average, the pay scores and the why."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gauntlet.pay import (
    COMPLIANCE_GATE,
    NO_GAIN,
    NOT_COMPLIANT,
    NOTHING_EARNED,
    MinerOutcome,
    PaySettings,
    horizon_step,
    pay_scores,
    rescore,
    why_zero,
)
from gauntlet.ratings import Ratings, accumulate, window_contribution
from gauntlet.weights import compute_weights
from template.harness.fairness import CANDIDATES, study
from template.protocol.config import HParams

gains = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)
uid_maps = st.dictionaries(st.integers(0, 30), gains, max_size=12)


@given(st.integers(1, 10_000))
def test_horizon_step_is_a_valid_ema_step(horizon):
    step = horizon_step(horizon)
    assert 0 < step <= 1
    assert (step == 1) == (horizon == 1)
    assert horizon_step(horizon + 1) < step  # a longer horizon moves slower


def test_horizon_step_rejects_nonsense():
    with pytest.raises(ValueError, match="horizon"):
        horizon_step(0)
    with pytest.raises(ValueError, match="step"):
        accumulate({}, {1: 0.1}, step=0.0)


@given(uid_maps, uid_maps, st.floats(min_value=0.01, max_value=1.0))
def test_accumulate_moves_towards_the_window_and_keeps_the_rest(previous, window, step):
    out = accumulate(previous, window, step=step)
    assert set(out) == set(previous) | set(window)
    for uid, value in out.items():
        if uid not in window:
            assert value == previous[uid]  # not evaluated this window: keeps its average
            continue
        old = previous.get(uid, 0.0)
        assert min(old, window[uid]) - 1e-12 <= value <= max(old, window[uid]) + 1e-12
    assert accumulate(previous, window, step=1.0) == {**previous, **window}


@given(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_window_contribution_counts_only_a_positive_finite_gain(score):
    value = window_contribution(score)
    assert value >= 0 and math.isfinite(value)
    assert value == (score if score is not None and math.isfinite(score) and score > 0 else 0.0)


def play(pattern: dict[int, list[float | None]], horizon: int = 8) -> Ratings:
    """Rate windows where uid u's window w has match score pattern[u][w] (None: a failure), all compliant."""
    r = Ratings(alpha=0.3)
    hotkeys = {u: f"hk{u}" for u in pattern}
    for w in range(len(next(iter(pattern.values())))):
        scores = {u: p[w] for u, p in pattern.items()}
        r.update(w, scores, hotkeys, compliant={u: s is not None for u, s in scores.items()},
                 contribution_step=horizon_step(horizon))
    return r


def weights_of(r: Ratings, curve: str = "proportional") -> list[float]:
    final = pay_scores("contribution", ordinals=r.ordinals(), contribution=r.contribution(),
                       compliance=r.compliance(), in_sync={u: True for u in r.ordinals()}, threshold=0.5)
    return compute_weights(final, n=max(final) + 1, owner_uid=0, burn_rate=0.0, top_n=8, curve=curve)


@settings(max_examples=20, deadline=None)
@given(st.floats(min_value=1e-3, max_value=0.1), st.integers(2, 6), st.integers(2, 12), st.integers(1, 16))
def test_equal_work_earns_equal_pay(gain, miners, windows, horizon):
    r = play({u: [gain] * windows for u in range(1, miners + 1)}, horizon)
    w = weights_of(r)
    assert max(w[1:]) == pytest.approx(min(w[1:]), rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.floats(min_value=1e-3, max_value=0.1), st.integers(2, 24), st.integers(1, 16), st.booleans())
def test_alternating_cheat_earns_less_than_steady_work(gain, windows, horizon, odd_first):
    """`timed`: non-compliant (a failure) every other window, the same gain when it works."""
    timed = [None if (w % 2 == 0) == odd_first else gain for w in range(windows)]
    r = play({1: [gain] * windows, 2: timed}, horizon)
    w = weights_of(r)
    assert w[2] < w[1]  # the compliance average's cut even right after a good window
    if horizon > 1:  # a horizon of one window remembers only the last one
        assert r.contribution()[2] < r.contribution()[1]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(min_value=1e-3, max_value=0.1)), min_size=1, max_size=16))
def test_a_failed_window_costs_pay_at_once(history):
    """The same history ending in a failure averages less than ending in a counted window."""
    failed = play({1: [*history, None], 2: [*history, 0.05]})
    assert failed.contribution()[1] < failed.contribution()[2]


@given(st.dictionaries(st.integers(1, 20), st.floats(min_value=0, max_value=1), min_size=1),
       st.floats(min_value=0, max_value=1))
def test_pay_scores_gates(contribution, threshold):
    ordinals = {u: 1.0 for u in contribution}
    compliance = {u: (u % 3) / 2 for u in contribution}
    in_sync = {u: u % 5 != 0 for u in contribution}
    out = pay_scores("contribution", ordinals=ordinals, contribution=contribution, compliance=compliance,
                     in_sync=in_sync, threshold=threshold)
    for u, s in out.items():
        if not in_sync[u] or compliance[u] < threshold:
            assert s == 0.0
        else:
            assert s == pytest.approx(contribution[u] * compliance[u])
    with pytest.raises(ValueError, match="pay_score"):
        pay_scores("luck", ordinals=ordinals, contribution=contribution, compliance=compliance, in_sync=in_sync,
                   threshold=threshold)


def test_why_zero_names_the_first_reason():
    base = dict(reason=None, evaluated=True, compliant=True, counted=True, compliance=0.9, threshold=0.5,
                in_sync=True, final=0.0)
    assert why_zero(**{**base, "final": 0.01}) is None
    assert why_zero(**{**base, "reason": "missing", "evaluated": False, "compliant": None}) == "missing"
    assert why_zero(**{**base, "in_sync": False}) == "out_of_sync"
    assert why_zero(**{**base, "compliant": False, "counted": False}) == NOT_COMPLIANT
    assert why_zero(**{**base, "counted": False}) == NO_GAIN
    assert why_zero(**{**base, "compliance": 0.4}) == COMPLIANCE_GATE
    assert why_zero(**base) == NOTHING_EARNED


def outcome(hotkey: str, gain: float | None, ratio: float = 1.2, reason: str | None = None) -> MinerOutcome:
    return MinerOutcome(hotkey=hotkey, reason=reason, evaluated=gain is not None, improvement_random=gain,
                        improvement_assigned=None if gain is None else gain * ratio, in_sync=True)


def test_rescore_pays_contribution_and_punishes_the_lazy_window():
    hp = HParams()
    settings_ = PaySettings(**{f: getattr(hp, f) for f in PaySettings.__dataclass_fields__})
    windows = [(w, {1: outcome("a", 0.02), 2: outcome("b", 0.02, ratio=1.2 if w % 2 == 0 else 0.95),
                    3: outcome("c", None, reason="missing")}) for w in range(6)]
    finals = rescore(windows, settings_)
    assert len(finals) == 6
    assert finals[-2][1] > finals[-2][2] > 0 and finals[-2][3] == 0.0  # after its compliant window: less
    assert finals[-1][2] == 0.0  # after the lazy one its compliance average closes the gate
    rating = rescore(windows, PaySettings(**{**settings_.__dict__, "pay_score": "rating"}))
    assert rating[-1][1] > rating[-1][3]


def test_fairness_study_favours_the_default():
    """The in-process study (template/harness/fairness.py) on a few seeds: today's default spreads equal honest
    miners' pay far more than the contribution mapping, which keeps every hostile kind under the honest."""
    default = next(m for m in CANDIDATES if (m.pay_score, m.curve, m.horizon, m.window_sum)
                   == (HParams().pay_score, HParams().weight_curve, HParams().pay_horizon, False))
    rows = study([CANDIDATES[0], default], honest=4, hostile=["timed", "lazy", "halfscaled"], windows=24,
                 seeds=3)
    old, new = rows
    assert new["honest_max_over_min_worst"] <= 1.5
    assert new["honest_max_over_min"] < old["honest_max_over_min"]
    assert new["best_hostile_over_worst_honest_worst"] < 1
    assert new["by_kind"]["timed"] < 0.8
