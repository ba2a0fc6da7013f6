"""Weight curves (gauntlet/weights.py): the properties each curve promises, for any scores."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gauntlet.weights import WEIGHT_CURVES, compute_weights, curve_shares, ramp
from template.protocol.config import HParams

SCORES = st.dictionaries(st.integers(0, 29), st.floats(-5, 50, allow_nan=False), max_size=25)
CURVE = st.sampled_from(WEIGHT_CURVES)
TEMPERATURE = st.floats(0.05, 100)


def weights_for(scores, curve, *, n=31, burn=0.1, top_n=8, temperature=1.0):
    return compute_weights(scores, n=n, owner_uid=n - 1, burn_rate=burn, top_n=top_n, curve=curve,
                           temperature=temperature)


def miners(scores, n=31):
    """Uids that can earn: in range, not the owner, finite positive score."""
    return {u: s for u, s in scores.items() if u < n - 1 and math.isfinite(s) and s > 0}


@settings(max_examples=80, deadline=None)
@given(scores=SCORES, curve=CURVE, burn=st.floats(0, 1), top_n=st.integers(1, 10), temperature=TEMPERATURE)
def test_every_curve_pays_burn_to_owner_and_the_rest_to_at_most_top_n(scores, curve, burn, top_n, temperature):
    n = 31
    w = weights_for(scores, curve, burn=burn, top_n=top_n, temperature=temperature)
    assert len(w) == n and all(x >= 0 for x in w)
    assert math.fsum(w) == pytest.approx(1.0)
    eligible = miners(scores)
    if eligible:
        assert w[n - 1] == pytest.approx(burn)  # the owner's uid (never a scored miner here)
        assert math.fsum(w[:-1]) == pytest.approx(1 - burn)
    else:
        assert w[n - 1] == 1.0
    paid = [u for u in range(n - 1) if w[u] > 0]
    assert len(paid) <= top_n
    assert all(u in eligible for u in paid)


@settings(max_examples=80, deadline=None)
@given(scores=SCORES, curve=CURVE, temperature=TEMPERATURE)
def test_every_curve_is_monotone_in_score(scores, curve, temperature):
    """A better score never gets less weight than a worse one."""
    w = weights_for(scores, curve, burn=0.0, top_n=30, temperature=temperature)
    eligible = miners(scores)
    for a, sa in eligible.items():
        for b, sb in eligible.items():
            if sa > sb:
                assert w[a] >= w[b] - 1e-12


@settings(max_examples=80, deadline=None)
@given(scores=SCORES, curve=st.sampled_from(["proportional", "softmax", "winner_take_all"]),
       temperature=TEMPERATURE, top_n=st.integers(1, 30))
def test_score_based_curves_pay_ties_equally(scores, curve, temperature, top_n):
    """Equal scores, equal weight (among the paid: a tie at the top_n cut is split by uid)."""
    w = weights_for(scores, curve, burn=0.2, top_n=top_n, temperature=temperature)
    eligible = miners(scores)
    for a, sa in eligible.items():
        for b, sb in eligible.items():
            if sa == sb and w[a] > 0 and w[b] > 0:
                assert w[a] == pytest.approx(w[b])


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.floats(0.01, 50), min_size=1, max_size=12), factor=st.floats(0.1, 10))
def test_proportional_is_scale_free_and_exact_ratio(scores, factor):
    scores = sorted(scores, reverse=True)
    shares = curve_shares(scores, "proportional")
    assert shares == pytest.approx(curve_shares([s * factor for s in scores], "proportional"))
    assert shares[0] / shares[-1] == pytest.approx(scores[0] / scores[-1])


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.floats(0.01, 50), min_size=2, max_size=12))
def test_softmax_temperature_moves_between_equal_split_and_winner_take_all(scores):
    scores = sorted(scores, reverse=True)
    assume(scores[0] - scores[1] > 0.5)  # a unique best by a clear margin
    cold = curve_shares(scores, "softmax", temperature=0.01)
    hot = curve_shares(scores, "softmax", temperature=1e6)
    assert cold[0] == pytest.approx(1.0, abs=1e-9)
    assert hot == pytest.approx([1 / len(scores)] * len(scores), rel=1e-3)
    assert curve_shares(scores, "softmax", temperature=1.0)[0] >= curve_shares(scores, "softmax",
                                                                               temperature=10.0)[0]


def test_winner_take_all_splits_a_shared_top_only():
    assert curve_shares([3.0, 2.0, 1.0], "winner_take_all") == [1.0, 0.0, 0.0]
    assert curve_shares([3.0, 3.0, 1.0], "winner_take_all") == [0.5, 0.5, 0.0]
    w = compute_weights({1: 2.0, 2: 5.0, 3: 5.0}, n=4, owner_uid=0, burn_rate=0.5, top_n=8, curve="winner_take_all")
    assert w == pytest.approx([0.5, 0.0, 0.25, 0.25])


def test_linear_is_the_old_ramp_and_compute_weights_default():
    scores = {1: 3.0, 2: 1.0, 3: 2.0}
    assert weights_for(scores, "linear") == compute_weights(scores, n=31, owner_uid=30, burn_rate=0.1, top_n=8)
    assert curve_shares([9.0, 1.0, 0.5], "linear") == ramp(3)
    # the case: three equally good miners, rank alone gives the first 3x the third
    w = compute_weights({1: 2.0, 2: 2.0, 3: 2.0}, n=4, owner_uid=0, burn_rate=0.0, top_n=8)
    assert w[1] == pytest.approx(3 * w[3])
    # the run default since issue 31: contribution shares by ratio, equal workers earn alike
    assert (HParams().weight_curve, HParams().pay_score) == ("proportional", "contribution")


def test_equal_miners_get_equal_weight_except_on_the_linear_ramp():
    scores = {1: 2.0, 2: 2.0, 3: 2.0}
    for curve in ("proportional", "softmax", "winner_take_all"):
        w = compute_weights(scores, n=4, owner_uid=0, burn_rate=0.1, top_n=8, curve=curve)
        assert w[1:] == pytest.approx([0.3, 0.3, 0.3]), curve


def test_softmax_is_stable_for_large_scores():
    shares = curve_shares([1e6, 1e6 - 1, 5.0], "softmax", temperature=1.0)
    assert all(math.isfinite(s) for s in shares) and math.fsum(shares) == pytest.approx(1.0)
    assert shares[2] == 0.0


def test_bad_curve_and_temperature_are_refused():
    with pytest.raises(ValueError, match="weight curve must be one of"):
        compute_weights({1: 1.0}, n=2, owner_uid=0, burn_rate=0.1, top_n=2, curve="cubic")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        compute_weights({1: 1.0}, n=2, owner_uid=0, burn_rate=0.1, top_n=2, curve="softmax", temperature=0.0)
    with pytest.raises(ValueError):
        HParams(weight_curve="cubic")
    with pytest.raises(ValueError):
        HParams(weight_temperature=0)
    with pytest.raises(ValueError, match="must not be empty"):
        curve_shares([], "linear")
