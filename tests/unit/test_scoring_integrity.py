"""Scoring that can't be gamed (issue 15, properties 3-4): evaluation data nobody could train on in advance,
and compliance in every window's rank."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gauntlet.evaluate import match_scores
from gauntlet.ratings import Ratings
from gauntlet.weights import final_scores
from template.protocol.config import HParams
from template.protocol.data import eval_ids, heldout_ids, loss_curve_ids, sample_ids

HP = HParams()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), window=st.integers(0, 10_000), num_uids=st.integers(1, 12))
def test_eval_batch_avoids_every_assignment_and_the_public_tail(seed, window, num_uids):
    num_train, num_samples = 2000, 2100
    assigned = {i for uid in range(num_uids) for i in sample_ids(uid, window, 7, 32, num_train)}
    ids = eval_ids(seed, 16, num_train, assigned)
    assert len(ids) == len(set(ids)) == 16
    assert all(0 <= i < num_train for i in ids)  # the held-out tail [num_train, num_samples) never enters a score
    assert not set(ids) & assigned  # no miner trained on it as its assignment
    assert not set(ids) & set(loss_curve_ids(num_train, num_samples))
    assert eval_ids(seed, 16, num_train, assigned) == ids  # a pure function of the private seed


def test_eval_batch_cannot_be_predicted_from_public_data():
    """The old batch was heldout_ids(window, ...) from the public tail: a miner could train on all of it."""
    num_train = 5000
    draws = [tuple(eval_ids(seed, 16, num_train, set())) for seed in range(50)]
    assert len(set(draws)) == 50
    covered = {i for d in draws for i in d}
    assert len(covered) > 600  # spread over the whole training range, not a small pool
    tail = heldout_ids(3, 1, 16, num_train, num_train + 100)
    assert all(i >= num_train for i in tail)


def test_eval_batch_refuses_when_too_few_ids_are_left():
    with pytest.raises(ValueError, match="left"):
        eval_ids(1, 16, 20, set(range(10)))
    with pytest.raises(ValueError, match="num_train"):
        eval_ids(1, 4, 0, set())


def test_non_compliant_update_ranks_with_the_failures_and_sets_no_floor():
    improvement = {1: 0.002, 2: 0.05, 3: 0.001}
    scores = match_scores([1, 2, 3, 4], improvement, min_improvement=1e-4, min_ratio_to_best=0.05,
                          compliant={1: True, 2: False, 3: True})
    assert scores == {1: 0.002, 2: None, 3: 0.001, 4: None}  # uid 2 (0.05, not compliant) would floor uid 3 out


def play_timed_vs_honest(num_windows: int) -> dict[int, float]:
    """uid 1 honest (always compliant), uid 2 `timed` (does its assignment every other window, trains on
    other data in between - which still helps a random batch a bit more), uid 3 idle."""
    ratings = Ratings(alpha=HP.compliance_alpha)
    hotkeys = {1: "h1", 2: "h2", 3: "h3"}
    for w in range(num_windows):
        improvement = {1: 0.0010, 2: 0.0012}
        compliant = {1: True, 2: w % 2 == 0}
        scores = match_scores([1, 2, 3], improvement, min_improvement=HP.min_improvement,
                              min_ratio_to_best=HP.min_improvement_ratio, compliant=compliant)
        ratings.update(w, scores, hotkeys, compliant=compliant)
    return final_scores(ratings.ordinals(), ratings.compliance(), {1: True, 2: True, 3: True},
                        threshold=HP.compliance_threshold)


@pytest.mark.parametrize("num_windows", [6, 7, 12, 13])
def test_timed_compliance_earns_less_than_honest_in_every_window(num_windows):
    final = play_timed_vs_honest(num_windows)
    assert final[1] > final[2] >= 0.0 and final[3] == 0.0
