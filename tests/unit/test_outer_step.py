"""The outer step (template/protocol/outer_step.py): median-norm clipping, averaging, skips, bit-reproducibility."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from template.protocol.outer_step import l2_norm, outer_step, outer_step_streamed

torch.set_num_threads(1)


def test_outer_step_median_clipping_by_hand():
    params = {"w": torch.zeros(2)}
    updates = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([6.0, 8.0])}]
    stats = outer_step(params, updates, lr=0.5)
    # norms 1, 2, 10 -> median 2: the third is scaled to [1.2, 1.6]; avg = [2.2, 3.6] / 3
    assert stats["used"] == 3 and stats["skipped"] == 0 and stats["clip_norms"]["w"] == 2.0
    torch.testing.assert_close(params["w"], -0.5 * torch.tensor([2.2, 3.6]) / 3)


def test_outer_step_even_count_takes_the_lower_median():
    params = {"w": torch.ones(1)}
    updates = [{"w": torch.tensor([1.0])}, {"w": torch.tensor([400.0])}]
    stats = outer_step(params, updates, lr=1.0)
    # lower median: with one of two peers hostile and huge, the limit is the honest norm (the mean of the
    # two middle norms, 200.5, was the attacker's to set)
    assert stats["clip_norms"]["w"] == 1.0
    torch.testing.assert_close(params["w"], torch.tensor([1.0 - 1.0]))


def test_outer_step_limit_stays_within_growth_of_the_history():
    params = {"w": torch.zeros(1)}
    huge = [{"w": torch.tensor([1000.0])}] * 3
    stats = outer_step(params, huge, lr=1.0, clip_ref={"w": 2.0}, norm_growth=2.0)
    assert stats["clip_norms"]["w"] == 4.0  # all peers hostile and huge: still only 2x the last limit
    tiny = [{"w": torch.tensor([1e-6])}] * 3
    stats = outer_step({"w": torch.zeros(1)}, tiny, lr=1.0, clip_ref={"w": 2.0}, norm_growth=2.0)
    assert stats["clip_norms"]["w"] == 1.0  # and the limit falls at most 2x per step
    with pytest.raises(ValueError, match="norm_growth"):
        outer_step({"w": torch.zeros(1)}, tiny, lr=1.0, norm_growth=0.5)


def test_outer_step_skips_non_finite_and_malformed_peers():
    params = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    good = {"a": torch.ones(3), "b": torch.ones(2, 2)}
    nan_peer = {"a": torch.tensor([1.0, float("nan"), 0.0]), "b": torch.ones(2, 2)}
    inf_peer = {"a": torch.ones(3), "b": torch.full((2, 2), float("inf"))}
    missing = {"a": torch.ones(3)}
    stats = outer_step(params, [good, nan_peer, inf_peer, missing], lr=1.0)
    assert stats["used"] == 1 and stats["skipped"] == 3
    assert torch.equal(params["a"], -torch.ones(3)) and torch.equal(params["b"], -torch.ones(2, 2))


def test_outer_step_skips_overflowing_tensor():
    params = {"a": torch.zeros(1), "b": torch.zeros(1)}
    updates = [{"a": torch.tensor([3e38]), "b": torch.tensor([1.0])}] * 2
    stats = outer_step(params, updates, lr=100.0)
    assert stats["skipped_tensors"] == ["a"]
    assert torch.equal(params["a"], torch.zeros(1)) and torch.equal(params["b"], torch.tensor([-100.0]))


def test_outer_step_rejects_non_cpu_fp32_params():
    with pytest.raises(ValueError, match="CPU float32"):
        outer_step({"a": torch.zeros(2, dtype=torch.float64)}, [{"a": torch.ones(2)}], lr=1.0)


def test_outer_step_no_updates_is_noop():
    params = {"a": torch.ones(2)}
    assert outer_step(params, [], lr=1.0)["used"] == 0
    assert torch.equal(params["a"], torch.ones(2))


def random_update(seed: int, scale: float, poison: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    upd = {"a": torch.randn(33, generator=gen) * scale, "b": torch.randn(4, 5, generator=gen) * scale / 3}
    if poison == 1:
        upd["a"][3] = float("nan")
    elif poison == 2:
        upd["b"][1, 1] = float("inf")
    elif poison == 3:
        del upd["b"]
    elif poison == 4:
        upd["a"][0] = 3e38  # finite, but two of them overflow the step of "a"
    return upd


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([1e-3, 1.0, 50.0]),
                          st.sampled_from([0, 0, 0, 1, 2, 3, 4])), max_size=7),
       st.booleans(), st.sampled_from([0.01, 1.0, 30.0]), st.booleans())
def test_streamed_outer_step_is_bit_identical_to_the_outer_step(peers, with_ref, lr, with_history):
    """Issue 18: the one-update-at-a-time step (norms known from admission) gives every node the same bits
    and statistics as the step over the whole gather set: clipping, skipped peers and tensors included."""
    updates = [random_update(seed, scale, poison) for seed, scale, poison in peers]
    ref = {"a": 2.0, "b": 0.5} if with_ref else None
    history = {"a": (3.0, 1.0, 4.0), "b": (0.2, 5.0, 1.0)} if with_history else None  # floors 1.5 and 0.5
    start = {"a": torch.linspace(-1, 1, 33), "b": torch.ones(4, 5)}
    whole = {n: t.clone() for n, t in start.items()}
    streamed = {n: t.clone() for n, t in start.items()}
    want = outer_step(whole, updates, lr, clip_ref=ref, clip_history=history)
    loaded: list[int] = []

    def load(i: int) -> dict[str, torch.Tensor]:
        loaded.append(i)
        return updates[i]

    norms = [{n: l2_norm(t) for n, t in u.items()} for u in updates]
    got = outer_step_streamed(streamed, norms, load, lr, clip_ref=ref, clip_history=history)
    assert got == want
    assert all(torch.equal(streamed[n], whole[n]) for n in start)
    assert loaded == sorted(loaded) and len(set(loaded)) == want["used"]


def test_streamed_outer_step_refuses_an_update_its_norms_misdescribe():
    params = {"a": torch.zeros(3)}
    with pytest.raises(ValueError, match="does not match"):
        outer_step_streamed(params, [{"a": 1.0}], lambda _i: {"a": torch.ones(4)}, 1.0)
