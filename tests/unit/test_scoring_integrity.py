"""Scoring that can't be gamed (issue 15, properties 3-4): evaluation data nobody could train on in advance,
and compliance in every window's rank."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gauntlet.evaluate import match_scores
from gauntlet.ratings import Ratings
from gauntlet.weights import final_scores
from template.protocol.config import HParams
from template.protocol.data import eval_ids, eval_ids_by_page, heldout_ids, loss_curve_ids, sample_ids

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


def _touched(ids: list[int], page_samples: int) -> set[int]:
    return {i // page_samples for i in ids}


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), window=st.integers(0, 10_000), num_uids=st.integers(0, 12),
       page_samples=st.sampled_from([1, 3, 8, 16, 32, 64]), num_train=st.integers(400, 3000),
       n=st.integers(0, 80), min_pages=st.integers(1, 20), stray=st.sets(st.integers(-50, 3100), max_size=40))
def test_eval_batch_by_page_avoids_assignments_and_reads_few_pages(seed, window, num_uids, page_samples, num_train,
                                                                  n, min_pages, stray):
    assigned = {i for uid in range(num_uids) for i in sample_ids(uid, window, 7, 32, num_train)} | stray
    free = num_train - len({i for i in assigned if 0 <= i < num_train})
    if free < n:
        with pytest.raises(ValueError, match="left"):
            eval_ids_by_page(seed, n, num_train, assigned, page_samples, min_pages)
        return
    ids = eval_ids_by_page(seed, n, num_train, assigned, page_samples, min_pages)
    assert len(ids) == len(set(ids)) == n
    assert all(0 <= i < num_train for i in ids)
    assert not set(ids) & assigned
    assert eval_ids_by_page(seed, n, num_train, assigned, page_samples, min_pages) == ids  # pure in the seed
    # The read cost: at most k whole free pages, k = max(ceil(n / page_samples), min(min_pages, n)); any other
    # page touched is partial (holds an excluded id, or is the short last page).
    k = max(-(-n // page_samples), min(min_pages, n))
    whole = [p for p in _touched(ids, page_samples)
             if (p + 1) * page_samples <= num_train and not assigned & set(range(p * page_samples, (p + 1) * page_samples))]
    assert len(whole) <= k
    if not assigned and num_train % page_samples == 0:  # nothing partial: k pages (all there are, if fewer)
        assert len(_touched(ids, page_samples)) == min(k, num_train // page_samples)


LARGE_NUM_TRAIN = 10**9


@functools.cache
def large_assigned() -> frozenset[int]:
    """32 judged slots of 1024 ids: whole pages of 16, 64 or 512, so no page is partial."""
    return frozenset(i for uid in range(32) for i in sample_ids(uid, 5, 7, 1024, LARGE_NUM_TRAIN))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), n=st.integers(1, 64), page_samples=st.sampled_from([16, 64, 512]))
def test_eval_batch_by_page_costs_ceil_n_over_page_samples_reads(seed, n, page_samples):
    """The validator's random batch on a large corpus: with min_pages 1 it is ceil(n / page_samples) page reads,
    with EVAL_MIN_PAGES it spans that many distinct pages (regions) unless n is smaller."""
    num_train, assigned = LARGE_NUM_TRAIN, set(large_assigned())
    assert len(_touched(eval_ids_by_page(seed, n, num_train, assigned, page_samples), page_samples)) <= -(-n // page_samples)
    spread = eval_ids_by_page(seed, n, num_train, assigned, page_samples, min_pages=4)
    assert len(_touched(spread, page_samples)) >= min(4, n)


def test_eval_batch_by_page_cannot_be_predicted_and_covers_the_range():
    num_train = 64 * 200
    draws = [tuple(eval_ids_by_page(seed, 16, num_train, set(), 64, min_pages=4)) for seed in range(50)]
    assert len(set(draws)) == 50
    pages = {i // 64 for d in draws for i in d}
    assert len(pages) > 120  # 200 pages, 4 per draw: spread over the range, not a few favourite pages


def test_eval_batch_by_page_refuses_bad_input_and_too_few_free_ids():
    with pytest.raises(ValueError, match="left"):
        eval_ids_by_page(1, 16, 20, set(range(10)), 4)
    assert sorted(eval_ids_by_page(1, 10, 20, set(range(10)), 4)) == list(range(10, 20))  # exactly enough
    with pytest.raises(ValueError, match="page_samples"):
        eval_ids_by_page(1, 4, 100, set(), 0)
    with pytest.raises(ValueError, match="min_pages"):
        eval_ids_by_page(1, 4, 100, set(), 8, min_pages=0)
    with pytest.raises(ValueError, match="num_train"):
        eval_ids_by_page(1, 4, 0, set(), 8)


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
