"""The pure checks a node runs on the lead's word (gauntlet/verify.py) and the verdict artifact's body."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gauntlet.verify import (
    checkpoint_accepted,
    entry_set_problem,
    expected_gather,
    refused_problem,
    rejected_leads,
    settings_problem,
    stake_share,
)
from template.protocol.records import AggregationRecord
from template.protocol.verdicts import Verdict
from tests.unit.fakes import tiny_hparams

FP = "ab" * 32


def record(lr: float, uids: tuple[int, ...] = ()) -> AggregationRecord:
    return AggregationRecord(window=3, base_fingerprint=FP, next_fingerprint="cd" * 32, outer_lr=lr, included=())


def test_outer_lr_must_equal_the_hparams_in_force():
    hp = tiny_hparams()
    assert settings_problem(record(hp.outer_lr), hp) is None
    assert "outer_lr" in (settings_problem(record(100.0), hp) or "")
    assert settings_problem(record(hp.outer_lr * (1 + 1e-9)), hp) is not None


def test_entries_off_the_peer_list_fail():
    assert entry_set_problem([1, 2], peer_uids=[1, 2, 3], admitted_uids=[1, 2], max_peers=8) is None
    why = entry_set_problem([1, 9], peer_uids=[1, 2, 3], admitted_uids=None, max_peers=8)
    assert why is not None and "[9]" in why


def test_an_admitted_peer_left_out_fails():
    why = entry_set_problem([1], peer_uids=[1, 2, 3], admitted_uids=[1, 2], max_peers=8)
    assert why is not None and "[2]" in why
    # beyond num_peers, the lowest uids are the gather set
    assert entry_set_problem([1, 2], peer_uids=[1, 2, 3], admitted_uids=[1, 2, 3], max_peers=2) is None
    assert entry_set_problem([1, 3], peer_uids=[1, 2, 3], admitted_uids=[1, 2, 3], max_peers=2) is not None


def test_entries_without_a_peer_list_fail_and_an_empty_record_needs_nothing_admitted():
    assert entry_set_problem([1], peer_uids=None, admitted_uids=None, max_peers=8) is not None
    assert entry_set_problem([], peer_uids=None, admitted_uids=None, max_peers=8) is None
    assert entry_set_problem([], peer_uids=[1, 2], admitted_uids=[], max_peers=8) is None
    assert entry_set_problem([], peer_uids=[1, 2], admitted_uids=[2], max_peers=8) is not None
    assert entry_set_problem([1, 2, 3], peer_uids=[1, 2, 3], admitted_uids=None, max_peers=2) is not None


@settings(max_examples=60, deadline=None)
@given(peers=st.sets(st.integers(0, 40), max_size=12), admitted=st.sets(st.integers(0, 40), max_size=12),
       max_peers=st.integers(1, 10))
def test_the_gather_set_itself_always_passes(peers, admitted, max_peers):
    honest = expected_gather(peers, admitted, max_peers)
    assert entry_set_problem(honest, peer_uids=peers, admitted_uids=admitted, max_peers=max_peers) is None
    assert entry_set_problem(honest, peer_uids=peers, admitted_uids=None, max_peers=max_peers) is None


def test_a_veto_and_a_missed_refusal_fail_and_the_margin_is_the_leads_word():
    assert refused_problem(True, 5.0, 4.9, max_rise=0.01) is not None  # the loss fell: a veto
    assert refused_problem(False, 5.0, 5.5, max_rise=0.01) is not None  # rose 10%: must have been refused
    assert refused_problem(True, 5.0, 5.5, max_rise=0.01) is None
    assert refused_problem(False, 5.0, 4.9, max_rise=0.01) is None
    assert refused_problem(True, 5.0, 5.0 * 1.007, max_rise=0.01) is None  # within the margin: either verdict
    assert refused_problem(False, 5.0, 5.0 * 1.012, max_rise=0.01) is None
    assert refused_problem(False, 5.0, float("nan"), max_rise=0.01) is not None


def test_a_checkpoint_needs_an_equal_replay_or_a_stake_majority():
    stake = {"a": 60.0, "b": 30.0, "c": 10.0}
    assert checkpoint_accepted(FP, replayed=FP, attesters=(), stake=stake)
    assert not checkpoint_accepted(FP, replayed="00" * 32, attesters=("b", "c"), stake=stake)
    assert checkpoint_accepted(FP, replayed="00" * 32, attesters=("a", "b"), stake=stake)  # a majority outweighs us
    assert checkpoint_accepted(FP, replayed=None, attesters=("a",), stake=stake)
    assert not checkpoint_accepted(FP, replayed=None, attesters=("b", "c"), stake=stake)  # 40%
    assert not checkpoint_accepted(FP, replayed=None, attesters=("x",), stake=stake)  # not a validator
    assert not checkpoint_accepted(FP, replayed=None, attesters=(), stake={})


def test_a_lead_is_passed_over_only_on_a_stake_majority_of_the_others():
    stake = {"rogue": 100.0, "b": 30.0, "c": 20.0}
    assert rejected_leads({"rogue": {"b"}}, stake) == {"rogue"}  # 30 of 50
    assert rejected_leads({"rogue": {"c"}}, stake) == set()  # 20 of 50
    assert rejected_leads({"rogue": {"rogue"}}, stake) == set()  # its own word does not count
    assert rejected_leads({"b": {"c"}}, stake) == set()  # a small validator cannot depose b (20 of 120)
    assert rejected_leads({"b": {"rogue"}}, stake) == {"b"}  # ... but a stake majority of the others can
    assert rejected_leads({"solo": {"x"}}, {"solo": 5.0}) == set()  # nobody else to judge


@given(st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 1e6), max_size=6), st.sets(st.sampled_from("abcdef")))
def test_stake_share_is_a_share(stake, holders):
    assert 0.0 <= stake_share(holders, stake) <= 1.0 + 1e-12


def test_verdict_bodies_round_trip_and_reject_junk():
    v = Verdict(window=4, lead_hotkey="5Lead", next_fingerprint=FP, valid=False, reason="outer_lr 100.0")
    assert Verdict.from_body(v.to_body(), window=4) == v
    ok = dataclasses.replace(v, valid=True, reason="")
    assert Verdict.from_body(ok.to_body(), window=4) == ok
    for bad in ({**v.to_body(), "window": 5}, {**v.to_body(), "valid": "no"}, {**v.to_body(), "reason": ""},
                {**ok.to_body(), "reason": "why"}, {**v.to_body(), "next_fingerprint": "zz"},
                {**v.to_body(), "extra": 1}, [], {**v.to_body(), "reason": "x" * 400}):
        with pytest.raises(ValueError):
            Verdict.from_body(bad, window=4)
