"""The outer step (template/protocol/outer_step.py): median-norm clipping, averaging, skips, bit-reproducibility."""

from __future__ import annotations

import pytest
import torch

from template.protocol.outer_step import outer_step

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
