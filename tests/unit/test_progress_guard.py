"""Steps must make progress (gauntlet/progress.py): the unpredictable guard batch, the opposed-member drop
and sticky exclusion (the clip floor: tests/unit/test_clip_floor.py)."""

from __future__ import annotations

import pytest
import torch

from gauntlet.progress import Probation, guard_ids, no_gain_members, opposed_members


def test_the_guard_batch_avoids_assignments_and_follows_the_block_hash():
    assigned = set(range(0, 100))
    a = guard_ids("aa" * 32, 5, 16, 400, assigned)
    assert len(set(a)) == 16 and not set(a) & assigned and all(0 <= i < 400 for i in a)
    assert guard_ids("aa" * 32, 5, 16, 400, assigned) == a
    assert guard_ids("bb" * 32, 5, 16, 400, assigned) != a
    assert guard_ids("aa" * 32, 6, 16, 400, assigned) != a
    with pytest.raises(ValueError):
        guard_ids("", 5, 16, 400, assigned)


def stall_round(seed: int, honest: int = 4, coalition: int = 3) -> list[dict[str, torch.Tensor]]:
    """Honest updates around one direction, and a coalition cancelling their sum on disjoint row blocks."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(96, 16, generator=gen)
    ups = [{"w": d + 1.5 * torch.randn(96, 16, generator=gen)} for _ in range(honest)]
    for i in range(coalition):
        mask = ((torch.arange(96) // 32) % coalition == i).view(-1, 1).float()
        ups.append({"w": -honest * d * mask})
    return ups


@pytest.mark.parametrize("seed", range(5))
def test_a_cancelling_coalition_is_dropped_and_honest_members_stay(seed):
    ups = stall_round(seed)
    assert opposed_members(ups) == [4, 5, 6]
    assert opposed_members(ups[:4]) == []
    assert opposed_members(ups[:2]) == []


def test_exclusion_is_sticky_until_several_successes_in_a_row():
    p = Probation().after_window(successes=[1, 2], failures=[3])
    assert p.eligible([1, 2, 3]) == [1, 2]
    for _ in range(2):
        p = p.after_window(successes=[1, 2, 3], failures=[])
        assert p.eligible([1, 2, 3]) == [1, 2]
    p = p.after_window(successes=[1, 2, 3], failures=[])
    assert p.eligible([1, 2, 3]) == [1, 2, 3]
    p = p.after_window(successes=[1, 2], failures=[3]).after_window(successes=[1, 2, 3], failures=[])
    p = p.after_window(successes=[1, 2], failures=[3])  # a fail restarts the count
    assert p.needs == {3: 3}


def test_a_coalition_as_large_as_the_honest_side_is_not_told_apart():
    """The bound: with as many cancelling members as honest ones, every member is outvoted and dropped: no step
    (no progress that window, but no harm either)."""
    assert opposed_members(stall_round(0, honest=3, coalition=3)) == [0, 1, 2, 3, 4, 5]


def test_sparse_honest_updates_that_barely_overlap_cast_no_votes():
    gen = torch.Generator().manual_seed(3)
    ups = []
    for _ in range(6):
        mask = (torch.rand(4096, generator=gen) < 0.06).float()
        ups.append({"w": torch.randn(4096, generator=gen) * mask})
    assert opposed_members(ups) == []


def test_members_whose_own_step_does_not_lower_the_guard_loss_are_dropped():
    assert no_gain_members([0.02, 0.0, -0.1, float("nan"), 0.001]) == [1, 2, 3]
    assert no_gain_members([]) == []
