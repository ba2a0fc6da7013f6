"""Scoring after admission: evaluation, ratings, final scores, weights and aggregation choices."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gauntlet.aggregate import bootstrap_peers, gather_set, select_peers
from gauntlet.checks import Admission, Upload
from gauntlet.evaluate import (
    EvalResult,
    RestoreError,
    evaluate_update,
    is_compliant,
    match_scores,
    mean_loss,
    relative_improvement,
)
from gauntlet.ratings import Ratings, match_ranks
from gauntlet.weights import compute_weights, final_scores, ramp, weights_due
from template.node.state import load_ratings, save_ratings
from template.protocol.config import HParams
from template.protocol.model import build_model
from template.protocol.peer_lists import parse_peer_list
from template.protocol.reads import ReadStatus

ALPHA = HParams().compliance_alpha  # the one compliance EMA step of the run

VOCAB, SEQ = 64, 16


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def markov_batch(n: int, seed: int) -> torch.Tensor:
    """Token sequences of a fixed rule (next = 5 * prev + 3 mod VOCAB) from random starts: learnable."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (n, 1), generator=gen)
    rows = [start]
    for _ in range(SEQ):
        rows.append((rows[-1] * 5 + 3) % VOCAB)
    return torch.cat(rows, dim=1)


def gradient_update(model: torch.nn.Module, batch: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
    """The pseudo-gradient of one SGD step: theta_start - theta_trained = lr * grad."""
    model.zero_grad()
    _, loss = model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    update = {n: lr * p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return update


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.set_num_threads(1)
    return build_model("tiny", VOCAB, SEQ, seed=3)


def params_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same_params(model: torch.nn.Module, snap: dict[str, torch.Tensor]) -> None:
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), snap[n]), n


# -- evaluate ------------------------------------------------------------------------------------


def test_mean_loss_is_eval_mode_and_restores_training_flag(model):
    model.train()
    batch = markov_batch(4, seed=1)
    a = mean_loss(model, batch)
    assert model.training
    assert a == mean_loss(model, batch)
    assert 0 < a < 2 * math.log(VOCAB)
    with pytest.raises(ValueError, match="seq_len"):
        mean_loss(model, batch[0])


def one_forward_loss(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """The whole batch in one forward: what mean_loss computed before it was micro-batched."""
    model.eval()
    with torch.no_grad():
        _, loss = model(batch[:, :-1], batch[:, 1:])
    return float(loss)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 11), micro=st.integers(1, 12), seed=st.integers(0, 1000), num_ignored=st.integers(0, 11))
def test_micro_batched_mean_loss_is_the_one_forward_mean(model, n, micro, seed, num_ignored):
    """Any split of the batch gives the mean over every counted target: rows whose last target is ignored
    (-1, the only place a -1 is not also an input) count one target fewer, so parts weigh unequally."""
    batch = markov_batch(n, seed=seed).clone()
    batch[: min(num_ignored, n), -1] = -1
    got, want = mean_loss(model, batch, micro_batch=micro), one_forward_loss(model, batch)
    assert got == pytest.approx(want, rel=1e-5)


def test_micro_batch_bounds_the_samples_of_each_forward(model):
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        mean_loss(model, markov_batch(10, seed=2), micro_batch=4)
    finally:
        handle.remove()
    assert seen == [4, 4, 2]
    with pytest.raises(ValueError, match="micro_batch"):
        mean_loss(model, markov_batch(2, seed=2), micro_batch=0)


def test_helpful_update_improves_and_model_is_restored_exactly(model):
    snap = params_snapshot(model)
    assigned, random_batch = markov_batch(8, seed=11), markov_batch(8, seed=12)
    update = gradient_update(model, assigned, lr=0.5)
    res = evaluate_update(model, update, assigned_batch=assigned, random_batch=random_batch, lr=1.0)
    assert isinstance(res, EvalResult)
    assert res.loss_after_assigned < res.loss_before_assigned
    assert res.loss_after_random < res.loss_before_random
    assert res.improvement_assigned > 0 and res.improvement_random > 0
    assert res.improvement_random == pytest.approx(
        (res.loss_before_random - res.loss_after_random) / res.loss_before_random)
    assert_same_params(model, snap)
    assert res.loss_before_random == mean_loss(model, random_batch)


def test_harmful_update_worsens(model):
    snap = params_snapshot(model)
    assigned, random_batch = markov_batch(8, seed=21), markov_batch(8, seed=22)
    update = {n: -t for n, t in gradient_update(model, assigned, lr=0.5).items()}
    res = evaluate_update(model, update, assigned_batch=assigned, random_batch=random_batch, lr=1.0)
    assert res.improvement_assigned < 0 and res.improvement_random < 0
    assert_same_params(model, snap)


def test_trained_on_assigned_beats_random(model):
    """The compliance signal: an update fitted to the assigned samples helps them most."""
    gen = torch.Generator().manual_seed(5)
    assigned = torch.randint(0, VOCAB, (4, SEQ + 1), generator=gen)  # memorisable noise
    random_batch = torch.randint(0, VOCAB, (4, SEQ + 1), generator=gen)
    update = gradient_update(model, assigned, lr=0.5)
    res = evaluate_update(model, update, assigned_batch=assigned, random_batch=random_batch, lr=1.0)
    assert res.improvement_assigned > res.improvement_random


def test_non_finite_update_scores_minus_inf_and_restores(model):
    snap = params_snapshot(model)
    batch = markov_batch(4, seed=31)
    update = {n: torch.full_like(p, math.nan) for n, p in model.named_parameters()}
    res = evaluate_update(model, update, assigned_batch=batch, random_batch=batch, lr=1.0)
    assert res.improvement_random == -math.inf
    assert_same_params(model, snap)


def test_update_with_wrong_names_is_refused_before_touching_the_model(model):
    snap = params_snapshot(model)
    batch = markov_batch(2, seed=41)
    update = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    update.pop(next(iter(update)))
    with pytest.raises(ValueError, match="differing names"):
        evaluate_update(model, update, assigned_batch=batch, random_batch=batch, lr=1.0)
    assert_same_params(model, snap)


def test_restore_check_detects_difference():
    from gauntlet.evaluate import _restore

    p = torch.nn.Parameter(torch.zeros(3))
    _restore({"p": p}, {"p": torch.ones(3)})
    assert torch.equal(p.detach(), torch.ones(3))
    nan_saved = {"p": torch.tensor([math.nan, 0.0, 0.0])}
    with pytest.raises(RestoreError):  # NaN != NaN: a theta holding NaN can never be certified
        _restore({"p": p}, nan_saved)


def test_relative_improvement_edges():
    assert relative_improvement(2.0, 1.0) == 0.5
    assert relative_improvement(2.0, 3.0) == -0.5
    assert relative_improvement(2.0, math.inf) == -math.inf
    assert relative_improvement(0.0, 0.5) == -0.5


# -- ratings -------------------------------------------------------------------------------------

HOTKEYS = {u: f"hk{u}" for u in range(10)}


def test_match_ranks():
    assert match_ranks([0.3, None, 0.1, 0.3, math.nan, -1.0]) == [1, 4, 2, 1, 4, 3]
    assert match_ranks([None, None]) == [1, 1]
    assert match_ranks([]) == []


def test_ratings_order_follows_scores_and_failures_tie_last():
    r = Ratings(alpha=ALPHA)
    for w in range(5):
        r.update(w, {0: 0.3, 1: 0.2, 2: 0.1, 3: None, 4: None}, HOTKEYS,
                 compliant={0: True, 1: True, 2: True})
    o = r.ordinals()
    assert o[0] > o[1] > o[2] > o[3]
    assert o[3] == o[4]
    assert r.last_window == 4


def test_ratings_follow_scores_not_uid_order():
    r = Ratings(alpha=ALPHA)
    r.update(0, {0: 0.1, 1: 0.3, 2: 0.2, 3: None}, HOTKEYS, compliant={0: True, 1: True, 2: True})
    o = r.ordinals()
    assert o[1] > o[2] > o[0] > o[3]


def test_ratings_same_window_twice_is_ignored():
    r = Ratings(alpha=ALPHA)
    r.update(7, {0: 0.3, 1: 0.1}, HOTKEYS, compliant={0: True, 1: False})
    state = json.dumps(r.state_dict(), sort_keys=True)
    r.update(7, {0: 0.0, 1: 0.9}, HOTKEYS, compliant={0: False, 1: True})
    r.update(6, {0: 0.0, 1: 0.9}, HOTKEYS, compliant={0: False, 1: True})
    assert json.dumps(r.state_dict(), sort_keys=True) == state


def test_ratings_save_load_round_trip(tmp_path):
    path = tmp_path / "state" / "ratings.json"
    fresh = load_ratings(path, alpha=0.3)
    assert fresh.ordinals() == {} and fresh.last_window is None
    r = Ratings(alpha=ALPHA)
    for w in range(3):
        r.update(w, {0: 0.1 * w, 1: 0.05, 2: None}, HOTKEYS, compliant={0: True, 1: w % 2 == 0})
    save_ratings(r, path)
    loaded = load_ratings(path, alpha=0.3)
    assert loaded.ordinals() == r.ordinals()
    assert loaded.compliance() == r.compliance()
    assert loaded.state_dict() == r.state_dict()
    # and they evolve identically afterwards
    for rr in (r, loaded):
        rr.update(3, {0: 0.2, 1: 0.3, 2: 0.1}, HOTKEYS, compliant={0: True, 1: True, 2: True})
    assert loaded.ordinals() == r.ordinals()


def test_corrupt_ratings_file_names_the_fix(tmp_path):
    path = tmp_path / "ratings.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="move it away"):
        load_ratings(path, alpha=0.3)
    path.write_text('{"ratings": {"1": {"mu": 1.0}}}')
    with pytest.raises(ValueError, match="unreadable"):
        load_ratings(path, alpha=0.3)


def test_new_hotkey_on_uid_resets_rating_and_compliance():
    r = Ratings(alpha=ALPHA)
    for w in range(4):
        r.update(w, {0: 0.5, 1: 0.1}, HOTKEYS, compliant={0: True, 1: True})
    assert r.ordinals()[0] > 0
    # the same match played with uid 0 unknown: what a reset must give
    expected = Ratings(alpha=ALPHA)
    state = r.state_dict()
    del state["ratings"]["0"], state["compliance"]["0"], state["contribution"]["0"]
    expected.load_state_dict(state)
    for rr, hk in ((r, "someone-else"), (expected, "someone-else")):
        rr.update(4, {0: None, 1: None}, {0: hk, 1: "hk1"}, compliant={})
    assert r.state_dict() == expected.state_dict()
    assert r.state_dict()["ratings"]["0"]["hotkey"] == "someone-else"
    assert r.compliance()[0] == pytest.approx(0.5 * 0.7)
    assert r.contribution()[0] == 0.0  # the new hotkey inherits no pay either


def test_compliance_ema():
    r = Ratings(alpha=0.5)
    r.update(0, {0: 0.1, 1: 0.2, 2: None}, HOTKEYS, compliant={0: True, 1: False})
    c = r.compliance()
    assert c[0] == pytest.approx(0.75)
    assert c[1] == pytest.approx(0.25)
    assert c[2] == pytest.approx(0.25)  # a failure counts as non-compliant
    r.update(1, {0: 0.1, 1: 0.2}, HOTKEYS, compliant={0: True, 1: True})
    assert r.compliance()[0] == pytest.approx(0.875)
    with pytest.raises(ValueError):
        Ratings(alpha=0.0)


def test_empty_and_single_player_windows():
    r = Ratings(alpha=ALPHA)
    r.update(0, {}, {}, compliant={})
    assert r.ordinals() == {} and r.last_window == 0
    r.update(1, {5: 0.3}, HOTKEYS, compliant={5: True})
    assert r.ordinals() == {5: pytest.approx(0.0)}
    with pytest.raises(ValueError, match="hotkeys missing"):
        r.update(2, {6: 0.1}, {}, compliant={})


# -- final scores and weights ------------------------------------------------------------------


def test_final_scores_gates():
    ordinals = {0: 5.0, 1: 4.0, 2: 3.0, 3: 2.0, 4: -1.0}
    compliance = {0: 0.9, 1: 0.2, 2: 0.9, 3: 0.5, 4: 0.9}
    in_sync = {0: True, 1: True, 2: False, 4: True}
    s = final_scores(ordinals, compliance, in_sync, threshold=0.5)
    assert s == {0: 5.0 * 0.9, 1: 0.0, 2: 0.0, 3: 0.0, 4: -1.0 * 0.9}  # 3: not seen this window
    assert final_scores({7: 1.0}, {7: 0.0}, {7: True}, threshold=0.0) == {7: 0.0}
    assert final_scores({7: 1.0}, {}, {7: True}, threshold=0.0) == {7: 0.0}  # never rated: compliance 0
    # a lazy miner whose gate is open for now stays below an honest one of equal skill
    lazy_vs_honest = final_scores({1: 6.0, 2: 5.0}, {1: 0.6, 2: 0.95}, {1: True, 2: True}, threshold=0.5)
    assert lazy_vs_honest[2] > lazy_vs_honest[1]
    assert final_scores({7: 1.0}, {}, {7: True}, threshold=0.1) == {7: 0.0}  # never rated for compliance


def test_weights_burn_ramp_and_order():
    w = compute_weights({1: 3.0, 2: 1.0, 3: 2.0, 4: 0.0, 5: -2.0}, n=6, owner_uid=0, burn_rate=0.1, top_n=8)
    assert len(w) == 6 and sum(w) == pytest.approx(1.0)
    assert w[0] == pytest.approx(0.1)
    assert w[1] == pytest.approx(0.9 * 3 / 6)
    assert w[3] == pytest.approx(0.9 * 2 / 6)
    assert w[2] == pytest.approx(0.9 * 1 / 6)
    assert w[4] == 0 and w[5] == 0


def test_weights_ties_by_uid_and_top_n():
    w = compute_weights({4: 1.0, 2: 1.0, 3: 1.0, 1: 0.5}, n=5, owner_uid=0, burn_rate=0.0, top_n=2)
    assert w == pytest.approx([0.0, 0.0, 2 / 3, 1 / 3, 0.0])


def test_weights_without_positive_scores_go_to_owner():
    assert compute_weights({}, n=3, owner_uid=2, burn_rate=0.1, top_n=4) == [0.0, 0.0, 1.0]
    assert compute_weights({0: 0.0, 1: -1.0, 2: math.nan}, n=3, owner_uid=1, burn_rate=0.5,
                           top_n=4) == [0.0, 1.0, 0.0]


def test_weights_full_burn_and_out_of_range():
    w = compute_weights({1: 1.0, 9: 5.0}, n=3, owner_uid=0, burn_rate=1.0, top_n=4)
    assert w == [1.0, 0.0, 0.0]  # uid 9 is beyond n: ignored
    for bad in ({"owner_uid": 3}, {"burn_rate": 1.5}, {"top_n": 0}, {"n": 0}):
        args = {"n": 3, "owner_uid": 0, "burn_rate": 0.1, "top_n": 2, **bad}
        with pytest.raises(ValueError):
            compute_weights({1: 1.0}, **args)


def test_owner_can_also_be_a_winner():
    w = compute_weights({0: 2.0, 1: 1.0}, n=2, owner_uid=0, burn_rate=0.2, top_n=4)
    assert w == pytest.approx([0.2 + 0.8 * 2 / 3, 0.8 / 3])


@settings(max_examples=60, deadline=None)
@given(
    scores=st.dictionaries(st.integers(0, 40), st.floats(-5, 5, allow_nan=False), max_size=30),
    n=st.integers(1, 40), burn=st.floats(0, 1), top_n=st.integers(1, 10),
)
def test_weights_property(scores, n, burn, top_n):
    w = compute_weights(scores, n=n, owner_uid=n - 1, burn_rate=burn, top_n=top_n)
    assert len(w) == n
    assert sum(w) == pytest.approx(1.0)
    assert all(x >= 0 for x in w)
    paid = [u for u in range(n) if w[u] > 0 and u != n - 1]
    assert len(paid) <= top_n
    for a in paid:  # a paid uid outranks every unpaid positive one
        for b, s in scores.items():
            if b < n and b != n - 1 and s > 0 and w[b] == 0:
                assert (scores[a], -a) > (s, -b)


def test_ramp():
    assert ramp(1) == [1.0]
    assert ramp(3) == pytest.approx([0.5, 1 / 3, 1 / 6])
    assert sum(ramp(17)) == pytest.approx(1.0)


def test_weights_due_once_per_interval_across_restarts():
    interval, last = 3, None
    set_in = []
    for window in range(12):
        for _restart in range(2):  # the same window handled again after a restart
            if weights_due(window, interval, last):
                last = window // interval
                set_in.append(window)
    assert set_in == [0, 3, 6, 9]
    assert weights_due(5, 3, None)
    assert not weights_due(5, 3, 1)
    assert weights_due(6, 3, 1)
    with pytest.raises(ValueError):
        weights_due(1, 0, None)


def test_weights_due_retries_after_a_refused_set():
    # the chain refused in window 3: last stays 0, so window 4 (same interval 1) tries again
    assert weights_due(3, 3, 0) and weights_due(4, 3, 0)


# -- aggregation choices --------------------------------------------------------------------------


def adm(uid: int, ok: bool = True) -> Admission:
    upd = {"w": torch.zeros(2)} if ok else None
    return Admission(uid=uid, ok=ok, reason=None if ok else "late", update=upd, payload_sha256=None,
                     in_sync=True, indices=None)


def test_select_peers_takes_the_eligible_best_ordinals_first():
    ordinals = {3: 1.0, 1: 2.0, 2: 1.0, 0: -1.0, 5: math.nan, 6: -4.0}
    assert select_peers(ordinals, num_peers=3, eligible=[0, 1, 2, 3, 5]) == [1, 2, 3]
    assert select_peers(ordinals, num_peers=8, eligible=[2, 3]) == [2, 3]
    # a miner that lost early matches is back as soon as it succeeds again
    assert select_peers(ordinals, num_peers=8, eligible=[6, 1]) == [1, 6]
    assert select_peers(ordinals, num_peers=3, eligible=[]) == []
    assert select_peers({}, num_peers=3, eligible=[7]) == [7]  # never rated: ordinal 0
    with pytest.raises(ValueError):
        select_peers({1: 1.0}, num_peers=0, eligible=[1])


def test_bootstrap_peers_are_not_the_lowest_uids_and_follow_the_seed():
    miners = {u: f"5Hotkey{u:03d}" for u in range(2, 40)}
    picks = {tuple(bootstrap_peers(miners, num_peers=3, seed=f"{s:064x}")) for s in range(20)}
    assert all(len(p) == 3 and list(p) == sorted(p) and set(p) <= set(miners) for p in picks)
    assert len(picks) > 10  # an unpredictable seed (the lead's model fingerprint) reshuffles the list
    assert sum(p == (2, 3, 4) for p in picks) <= 1  # registering the lowest uids buys nothing
    assert bootstrap_peers(miners, num_peers=3, seed="ab") == bootstrap_peers(dict(reversed(miners.items())),
                                                                              num_peers=3, seed="ab")
    assert bootstrap_peers({}, num_peers=3, seed="ab") == []


def test_gather_set_is_admitted_peers_sorted_by_uid():
    admissions = {u: replace(adm(u, ok=u != 4), payload_sha256=f"{u:064x}") for u in range(7)}

    def gather(peer_uids: list[int], max_peers: int) -> list[int]:
        return gather_set(admissions, [], peer_uids=peer_uids, max_peers=max_peers, copy_threshold=0.9)

    assert gather([5, 1, 4, 2], 10) == [1, 2, 5]
    assert gather([5, 1, 4, 2], 2) == [1, 2]
    assert gather([], 3) == []
    assert gather([9], 3) == []
    with pytest.raises(ValueError):
        gather([1], 0)


def test_gather_set_rejects_copies_among_the_peers_only():
    """Two peers with the same payload: the later upload (by LastModified second) is a copy and out; the
    same payload from a uid off the peer list takes no part (copies are judged among the peers)."""
    admissions = {u: replace(adm(u), payload_sha256="ab" * 32 if u in (1, 3, 5) else f"{u:064x}") for u in range(6)}
    uploads = [Upload(uid=u, hotkey=f"h{u}", key="k", data=b"x", last_modified=100.0 + u, status=ReadStatus.OK)
               for u in range(6)]
    assert gather_set(admissions, uploads, peer_uids=[1, 2, 3], max_peers=8, copy_threshold=0.9) == [1, 2]
    assert gather_set(admissions, uploads, peer_uids=[2, 3, 4], max_peers=8, copy_threshold=0.9) == [2, 3, 4]


@pytest.mark.parametrize("body", [None, [], {"window": 3}, {"window": 2, "peers": [1]},
                                  {"window": 3, "peers": [1, 1]}, {"window": 3, "peers": [-1]},
                                  {"window": 3, "peers": [True]}, {"window": 3, "peers": "1"},
                                  {"window": 3, "peers": [1], "extra": 0}])
def test_parse_peer_list_rejects_garbage(body):
    with pytest.raises(ValueError):
        parse_peer_list(body, window=3)


def test_parse_peer_list_accepts_valid():
    assert parse_peer_list({"window": 3, "peers": [4, 2]}, window=3) == [4, 2]


# -- the whole gauntlet on one window, as template/node/validator.py strings it together ------------------


def test_gauntlet_pipeline_ranks_honest_above_negator_and_rejects_copy(model):
    from bittensor_wallet import Keypair

    from gauntlet.checks import admit_upload, detect_copies
    from template.protocol.artifacts import write_tensor_artifact
    from template.protocol.model import model_fingerprint
    from template.protocol.sparseloco import CodecParams, compress

    hp = HParams(vocab_size=VOCAB, seq_len=SEQ)
    codec = CodecParams.from_hparams(hp)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    base_fp = model_fingerprint(model)
    keys = {uid: Keypair.create_from_uri(f"//Miner{uid}") for uid in (1, 2, 3, 4)}
    ratings = Ratings(alpha=hp.compliance_alpha)
    snap = params_snapshot(model)
    for window in range(3):
        batches = {uid: markov_batch(8, seed=100 * window + uid) for uid in keys}
        wires = {uid: compress(gradient_update(model, batches[uid], lr=2.0), None, codec, 0.0)[0] for uid in (1, 2, 3)}
        wires[3] = {k: (-t if k.endswith("::table") else t) for k, t in wires[3].items()}  # the negator
        wires[4] = wires[1]  # the copier re-signs miner 1's tensors, one second later
        uploads = []
        for uid, wire in wires.items():
            fields = {"uid": uid, "base_fingerprint": base_fp, "data_receipt": f"r{uid}", "num_inner_steps": 8,
                      "codec": {"chunk_size": codec.chunk_size, "topk": codec.topk, "bits": codec.bits}}
            data = write_tensor_artifact(wire, kind="gradient", window=window, keypair=keys[uid], fields=fields)
            uploads.append(Upload(uid=uid, hotkey=keys[uid].ss58_address, key="k", data=data,
                                  last_modified=100.0 + (uid == 4), status="ok"))
        admissions = {u.uid: admit_upload(u, window=window, deadline_s=101.0, hparams=hp, shapes=shapes,
                                          expected_receipt=f"r{u.uid}", base_fingerprint=base_fp, seen_payloads=set())
                      for u in uploads}
        for uid, reason in detect_copies(list(admissions.values()), uploads, threshold=0.9).items():
            admissions[uid] = admissions[uid].reject(reason)
        assert [a.reason for a in admissions.values()] == [None, None, None, "copy"]
        random_batch = markov_batch(8, seed=999 + window)
        evals = {uid: evaluate_update(model, adm.update, assigned_batch=batches[uid], random_batch=random_batch,
                                      lr=1.0) for uid, adm in admissions.items() if adm.ok}
        assert_same_params(model, snap)
        scores = match_scores(list(admissions), {u: e.improvement_random for u, e in evals.items()})
        compliant = {uid: e.improvement_assigned > e.improvement_random for uid, e in evals.items()}
        ratings.update(window, scores, {u: keys[u].ss58_address for u in admissions}, compliant=compliant)
        assert gather_set(admissions, uploads, peer_uids=[1, 2, 3, 4], max_peers=8, copy_threshold=0.9) == [1, 2, 3]
    successes = [u for u, sc in scores.items() if sc is not None]
    assert sorted(select_peers(ratings.ordinals(), num_peers=8, eligible=successes)) == [1, 2]  # negator, copier out
    final = final_scores(ratings.ordinals(), ratings.compliance(), {u: a.in_sync for u, a in admissions.items()},
                         threshold=0.5)
    weights = compute_weights(final, n=5, owner_uid=0, burn_rate=0.1, top_n=8)
    assert weights[0] >= 0.1 and sum(weights) == pytest.approx(1.0)
    assert weights[3] == 0 and weights[4] == 0
    assert ratings.ordinals()[1] > ratings.ordinals()[3] and ratings.ordinals()[2] > ratings.ordinals()[4]


def test_match_scores_ranks_harmful_updates_with_failures():
    scores = match_scores([1, 2, 3, 4, 5], {1: 0.02, 2: -0.01, 3: 0.0, 5: math.nan})
    assert scores == {1: 0.02, 2: None, 3: None, 4: None, 5: None}


def test_match_scores_floor_and_ratio_to_best():
    imp = {1: 0.02, 2: 0.0005, 3: 4e-5}
    assert match_scores([1, 2, 3], imp, min_improvement=1e-4) == {1: 0.02, 2: 0.0005, 3: None}
    assert match_scores([1, 2, 3], imp, min_improvement=1e-4, min_ratio_to_best=0.05) == {1: 0.02, 2: None, 3: None}
    assert match_scores([3], {3: 4e-5}, min_improvement=1e-4, min_ratio_to_best=0.05) == {3: None}


def test_compliance_needs_a_margin_over_the_random_batch():
    assert is_compliant(0.0120, 0.0100, margin=0.02)
    assert not is_compliant(0.0101, 0.0100, margin=0.02)  # a lazy miner's ratio of about 1
    assert not is_compliant(0.02, -0.01, margin=0.0)  # a harmful update proves nothing
    assert not is_compliant(math.nan, 0.01, margin=0.0)
