"""Yuma epoch rules beyond subtensor's own vectors: masking, permits, owner exemptions, properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from template.chain.localnet.yuma import (
    EpochResult,
    NeuronState,
    YumaParams,
    max_upscale_u16,
    yuma_epoch,
)

U16_MAX = 65535
M = U16_MAX
H = U16_MAX // 2
RAO_PER_EPOCH = 1_000_000_000


# ---------------------------------------------------------------------------
# Masks and properties
# ---------------------------------------------------------------------------


def _run(neurons: list[NeuronState], block: int = 10, **kwargs) -> EpochResult:
    params = kwargs.pop("params", YumaParams())
    return yuma_epoch(
        neurons,
        block=block,
        last_step_block=0,
        tempo=360,
        rao_emission=RAO_PER_EPOCH,
        params=params,
        **kwargs,
    )


def test_weights_set_before_registration_are_masked() -> None:
    validator = NeuronState(stake=100, last_update=5, registered_at=0, permit=True, weights=[(1, M), (2, M)])
    old_miner = NeuronState(stake=0, last_update=0, registered_at=0)
    new_miner = NeuronState(stake=0, last_update=5, registered_at=5)  # registered at the weight-set block
    result = _run([validator, old_miner, new_miner])
    assert result.incentive == [0, M, 0]


def test_validator_needs_previous_permit_and_activity() -> None:
    weights = [(1, M)]
    no_permit = NeuronState(stake=100, last_update=5, registered_at=0, permit=False, weights=weights)
    miner = NeuronState(stake=0, last_update=0, registered_at=0)
    assert _run([no_permit, miner]).incentive == [0, 0]
    inactive = NeuronState(stake=100, last_update=5, registered_at=0, permit=True, weights=weights)
    params = YumaParams(activity_cutoff=10)
    assert _run([inactive, miner], block=16, params=params).incentive == [0, 0]
    assert _run([inactive, miner], block=15, params=params).incentive == [0, M]


def test_owner_keeps_self_weight_permit_and_threshold_exemption() -> None:
    owner = NeuronState(stake=1, last_update=5, registered_at=0, permit=False, weights=[(0, M)])
    other = NeuronState(stake=10, last_update=5, registered_at=0, permit=True, weights=[(0, M)])
    result = _run([owner, other], owner_uid=0, stake_threshold=5)
    assert result.permits == [True, True]
    assert result.incentive == [M, 0]
    # Without owner status the self-weight is dropped and the low stake filtered.
    result = _run([owner, other], stake_threshold=5)
    assert result.stake_weight == [0, M]
    assert result.permits == [False, True]


def test_permits_top_k_lower_uid_loses_ties() -> None:
    neurons = [NeuronState(stake=s, last_update=0, registered_at=0) for s in [5, 5, 7, 0]]
    result = _run(neurons, params=YumaParams(max_validators=2))
    assert result.permits == [False, True, True, False]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=2, max_value=12).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 10**12), min_size=n, max_size=n),
            st.lists(st.lists(st.integers(0, M), min_size=n, max_size=n), min_size=n, max_size=n),
            st.booleans(),
        )
    )
)
def test_epoch_properties(graph: tuple[list[int], list[list[int]], bool]) -> None:
    stakes, weight_rows, yuma3 = graph
    neurons = [
        NeuronState(
            stake=s,
            last_update=5,
            registered_at=0,
            permit=True,
            weights=list(enumerate(max_upscale_u16(row))),
        )
        for s, row in zip(stakes, weight_rows, strict=True)
    ]
    result = _run(neurons, params=YumaParams(yuma3=yuma3))
    total = sum(result.emission)
    if sum(stakes) == 0:
        assert total == 0  # no stake and no weights: nothing to follow, the chain emits nothing either
        return
    assert RAO_PER_EPOCH - len(neurons) - 1 <= total <= RAO_PER_EPOCH
    split = sum(result.server_emission) + sum(result.validator_emission)
    assert split <= RAO_PER_EPOCH
    if sum(result.incentive) > 0:
        # incentive is normalized: sums to 65535 up to one unit of flooring per uid
        assert U16_MAX - len(neurons) <= sum(result.incentive) <= U16_MAX
        assert RAO_PER_EPOCH - 2 * len(neurons) - 2 <= split


def test_commit_reveal_mask_drops_weights_committed_before_registration() -> None:
    validator = NeuronState(stake=100, last_update=9, registered_at=0, permit=True, weights=[(1, M), (2, M)])
    old_miner = NeuronState(stake=0, last_update=0, registered_at=0)
    new_miner = NeuronState(stake=0, last_update=6, registered_at=6)
    assert _run([validator, old_miner, new_miner]).incentive == [0, H, H]
    # committed at block 5, before uid 2 registered at 6: that weight is dropped
    assert _run([validator, old_miner, new_miner], commit_blocks=[5, None, None]).incentive == [0, M, 0]
    assert _run([validator, old_miner, new_miner], commit_blocks=[6, None, None]).incentive == [0, H, H]


def test_stake_threshold_filters_small_validators() -> None:
    big = NeuronState(stake=1000, last_update=5, registered_at=0, permit=True, weights=[(2, M)])
    small = NeuronState(stake=10, last_update=5, registered_at=0, permit=True, weights=[(2, M)])
    miners = [NeuronState(stake=0, last_update=0, registered_at=0) for _ in range(2)]
    result = _run([big, small, *miners])
    assert result.stake_weight == result.dividends == [64886, 648, 0, 0]  # floor(65535 * 1000/1010), ...
    assert result.permits == [True, True, False, False]
    result = _run([big, small, *miners], stake_threshold=11)
    assert result.stake_weight == result.dividends == [M, 0, 0, 0]
    assert result.permits == [True, False, False, False]
    assert result.validator_emission == [RAO_PER_EPOCH // 2, 0, 0, 0]


def test_can_set_self_weight_as_subnet_owner() -> None:
    # upstream epoch/self_weight.rs::test_can_set_self_weight_as_subnet_owner: the owner's self-weight counts.
    owner = NeuronState(
        stake=5_000_000_000_000, last_update=2, registered_at=0, permit=True, weights=[(0, H), (1, H)]
    )
    other = NeuronState(stake=0, last_update=0, registered_at=0, permit=False)
    result = yuma_epoch(
        [owner, other],
        block=2,
        last_step_block=0,
        tempo=360,
        rao_emission=RAO_PER_EPOCH,
        params=YumaParams(),
        owner_uid=0,
    )
    assert result.server_emission[0] == result.server_emission[1] > 0
