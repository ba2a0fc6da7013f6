"""Coinbase: block emission schedule, per-block split, epoch scheduling and epoch payouts.

Upstream references (opentensor/subtensor, pallets/subtensor/src/tests/): `root.rs` (test_halving,
test_issance_bounds), `coinbase.rs` (drain tests), and SUBTENSOR.md section 4 for the per-block split.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from template.chain.localnet.coinbase import (
    RAO_PER_ALPHA,
    TOTAL_SUPPLY_RAO,
    BlockSplit,
    PendingEmission,
    block_emission,
    blocks_until_next_epoch,
    distribute_epoch,
    initial_last_epoch_block,
    legacy_blocks_until_next_epoch,
    next_epoch_start_block,
    owner_hotkeys_on_subnet,
    should_run_epoch,
    split_block_emission,
    split_pool_credit,
)
from template.chain.localnet.yuma import NeuronState, YumaParams, max_upscale_u16, yuma_epoch

# upstream root.rs::test_halving (issuance -> block emission)
HALVING_VECTORS = [
    (0, 1_000_000_000),
    (1_776_000, 1_000_000_000),
    (1_776_000_000, 1_000_000_000),
    (1_776_000_000_000, 1_000_000_000),
    (10_500_000_000_000_000, 500_000_000),
    (10_999_999_000_000_000, 500_000_000),
    (11_000_000_000_000_000, 500_000_000),
    (12_000_999_000_000_000, 500_000_000),
    (15_749_999_000_000_000, 500_000_000),
    (15_800_000_000_000_000, 250_000_000),
    (16_400_999_000_000_000, 250_000_000),
    (16_499_999_000_000_000, 250_000_000),
    (17_624_999_000_000_000, 250_000_000),
    (18_400_000_000_000_000, 125_000_000),
    (19_312_500_000_000_000, 125_000_000),
    (19_700_000_000_000_000, 62_500_000),
    (19_906_249_000_000_000, 62_500_000),
    (20_400_000_000_000_000, 31_250_000),
    (20_500_000_000_000_000, 31_250_000),
    (20_700_000_000_000_000, 15_625_000),
    (20_800_000_000_000_000, 15_625_000),
    (20_900_000_000_000_000, 7_812_500),
    (20_917_970_000_000_000, 3_906_250),
    (20_958_985_000_000_000, 1_953_125),
    (20_979_493_000_000_000, 976_562),
    (20_989_747_000_000_000, 488_281),
    (20_994_874_000_000_000, 244_140),
    (20_997_437_000_000_000, 122_070),
    (20_998_719_000_000_000, 61_035),
    (20_999_360_000_000_000, 30_517),
    (20_999_680_000_000_000, 15_258),
    (20_999_840_000_000_000, 7_629),
    (20_999_920_000_000_000, 3_814),
    (20_999_960_000_000_000, 1_907),
    (20_999_980_000_000_000, 953),
    (20_999_990_000_000_000, 476),
    (20_999_990_500_000_000, 476),
    (20_999_995_000_000_000, 238),
    (20_999_998_000_000_000, 119),
    (20_999_999_000_000_000, 59),
    (21_000_000_000_000_000, 0),
    (21_100_000_000_000_000, 0),
    (2**64 - 1, 0),
]


@pytest.mark.parametrize(("issuance", "expected"), HALVING_VECTORS)
def test_block_emission_halving(issuance: int, expected: int) -> None:
    assert block_emission(issuance) == expected


def test_issuance_bounds() -> None:
    # upstream root.rs::test_issance_bounds: 100 halvings of 10.5M blocks converge just below 21M.
    issuance = 0
    for _ in range(100):
        issuance += block_emission(issuance) * 10_500_000
    assert issuance == 20_999_999_989_500_000 < TOTAL_SUPPLY_RAO


def test_split_block_emission_mainnet_cut() -> None:
    # SUBTENSOR.md section 4: the "18/41/41" split of one alpha.
    split = split_block_emission(RAO_PER_ALPHA)
    assert split == BlockSplit(owner_cut=179_995_422, server=410_002_288, validator=410_002_288)
    assert RAO_PER_ALPHA - split.total == 2  # flooring loss, as on chain


def test_split_block_emission_without_owner_cut() -> None:
    split = split_block_emission(RAO_PER_ALPHA, owner_cut_enabled=False)
    assert split == BlockSplit(owner_cut=0, server=500_000_000, validator=500_000_000)
    assert split_block_emission(RAO_PER_ALPHA, owner_cut_u16=0).owner_cut == 0


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**12), st.integers(0, 65535))
def test_split_conserves_emission(alpha: int, cut: int) -> None:
    split = split_block_emission(alpha, owner_cut_u16=cut)
    assert alpha - 2 <= split.total <= alpha
    assert abs(split.server - split.validator) <= 1


def test_pending_accumulates_over_a_tempo() -> None:
    pending = PendingEmission()
    for _ in range(360):
        pending = pending.add(split_block_emission(RAO_PER_ALPHA))
    assert pending == PendingEmission(
        server=360 * 410_002_288, validator=360 * 410_002_288, owner_cut=360 * 179_995_422
    )
    assert pending.epoch_emission == 2 * 360 * 410_002_288


def test_epoch_schedule_is_last_epoch_plus_tempo() -> None:
    assert not should_run_epoch(360, 459, last_epoch_block=100)
    assert should_run_epoch(360, 460, last_epoch_block=100)
    assert should_run_epoch(360, 200, last_epoch_block=100, pending_epoch_at=150)
    assert not should_run_epoch(360, 140, last_epoch_block=100, pending_epoch_at=150)
    assert should_run_epoch(360, 101, last_epoch_block=100, blocks_since_last_step=361)
    assert not should_run_epoch(0, 10**6, last_epoch_block=0)
    assert next_epoch_start_block(360, last_epoch_block=100) == 460
    assert next_epoch_start_block(360, last_epoch_block=100, pending_epoch_at=150) == 150
    assert next_epoch_start_block(0, last_epoch_block=100) is None
    assert blocks_until_next_epoch(360, 400, last_epoch_block=100) == 60
    assert blocks_until_next_epoch(360, 500, last_epoch_block=100) == 0
    assert blocks_until_next_epoch(0, 400, last_epoch_block=100) is None


def test_new_subnet_epoch_stagger_and_legacy_rule() -> None:
    assert initial_last_epoch_block(netuid=3, tempo=360, block=1000) == 997
    assert initial_last_epoch_block(netuid=365, tempo=360, block=1000) == 995
    assert initial_last_epoch_block(netuid=3, tempo=360, block=1) == 0
    # legacy: tempo - (block + netuid + 1) % (tempo + 1); the epoch ran where that is 0
    assert legacy_blocks_until_next_epoch(netuid=1, tempo=10, block=8) == 0
    assert legacy_blocks_until_next_epoch(netuid=1, tempo=10, block=9) == 10
    assert legacy_blocks_until_next_epoch(netuid=1, tempo=10, block=0) == 8
    assert legacy_blocks_until_next_epoch(netuid=1, tempo=10, block=19) == 0


# ---------------------------------------------------------------------------
# Epoch payouts
# ---------------------------------------------------------------------------

OWNER_CK, OWNER_HK = "owner-ck", "owner-hk"
HOTKEYS = ["val-a", "val-b", "miner-1", "miner-2", "owner-miner"]
HOTKEY_OWNERS = {
    "val-a": "ck-a",
    "val-b": "ck-b",
    "miner-1": "ck-1",
    "miner-2": "ck-2",
    "owner-miner": OWNER_CK,
}


def _epoch_for_graph(pending: PendingEmission):
    """Two validators (stake 3:1, permits held) weighting three miners; miner 'owner-miner' is the owner's."""
    weights = list(zip([2, 3, 4], max_upscale_u16([1, 2, 1]), strict=True))
    neurons = [
        NeuronState(stake=3 * RAO_PER_ALPHA, last_update=10, registered_at=0, permit=True, weights=weights),
        NeuronState(stake=1 * RAO_PER_ALPHA, last_update=10, registered_at=0, permit=True, weights=weights),
        NeuronState(stake=0, last_update=0, registered_at=0),
        NeuronState(stake=0, last_update=0, registered_at=0),
        NeuronState(stake=0, last_update=0, registered_at=0),
    ]
    return yuma_epoch(
        neurons,
        block=20,
        last_step_block=10,
        tempo=10,
        rao_emission=pending.epoch_emission,
        params=YumaParams(),
    )


def test_distribute_epoch_pays_miners_validators_owner_and_burns_owner_incentive() -> None:
    pending = PendingEmission()
    for _ in range(10):
        pending = pending.add(split_block_emission(RAO_PER_ALPHA))
    result = _epoch_for_graph(pending)
    payout = distribute_epoch(
        result,
        hotkeys=HOTKEYS,
        hotkey_owners=HOTKEY_OWNERS,
        owner_coldkey=OWNER_CK,
        owner_hotkey=OWNER_HK,
        pending=pending,
    )
    by_kind: dict[str, dict[str, int]] = {}
    for credit in payout.credits:
        by_kind.setdefault(credit.kind, {})[credit.hotkey] = credit.amount
    assert by_kind["owner_cut"] == {OWNER_HK: pending.owner_cut}
    # miner-1 gets 1/4 of the weight, miner-2 1/2; the owner's miner (1/4) is burned.
    assert set(by_kind["incentive"]) == {"miner-1", "miner-2"}
    assert payout.burned == result.server_emission[4] > 0
    # weights [1, 2, 1] are stored max-upscaled as [32768, 65535, 32768]
    assert by_kind["incentive"]["miner-2"] == pytest.approx(2 * by_kind["incentive"]["miner-1"], rel=1e-4)
    # Validators split V by dividends (3:1 here), each with an 18% take to (hotkey, owner coldkey).
    takes, nominators = by_kind["validator_take"], by_kind["nominator_dividend"]
    for hotkey in ("val-a", "val-b"):
        total = takes[hotkey] + nominators[hotkey]
        assert takes[hotkey] == pytest.approx(total * 11796 / 65535, abs=1)
    assert takes["val-a"] + nominators["val-a"] == pytest.approx(
        3 * (takes["val-b"] + nominators["val-b"]), rel=1e-6
    )
    assert sum(takes.values()) + sum(nominators.values()) == pytest.approx(pending.validator, abs=4)
    assert [c.coldkey for c in payout.credits if c.kind == "validator_take"] == ["ck-a", "ck-b"]
    assert all(c.coldkey is None for c in payout.credits if c.kind == "nominator_dividend")
    total_out = payout.total_credited + payout.burned
    assert (
        pending.owner_cut + pending.epoch_emission - 10
        <= total_out
        <= pending.owner_cut + pending.epoch_emission
    )


def test_distribute_epoch_without_incentive_gives_validators_everything() -> None:
    # upstream coinbase.rs::test_drain_base_with_subnet_with_single_staker_registered: a registered staker with
    # no weights set receives the whole pending alpha (server + validator) as dividends.
    pending = PendingEmission(server=500_000_000, validator=500_000_000)
    neurons = [NeuronState(stake=RAO_PER_ALPHA, last_update=0, registered_at=0)]
    result = yuma_epoch(
        neurons, block=5, last_step_block=0, tempo=1, rao_emission=pending.epoch_emission, params=YumaParams()
    )
    payout = distribute_epoch(
        result,
        hotkeys=["hk"],
        hotkey_owners={"hk": "ck"},
        owner_coldkey=None,
        owner_hotkey=None,
        pending=pending,
    )
    assert payout.burned == 0
    assert payout.total_credited == pytest.approx(RAO_PER_ALPHA, abs=2)
    assert {c.kind for c in payout.credits} == {"validator_take", "nominator_dividend"}


def test_distribute_epoch_uses_take_and_auto_stake() -> None:
    pending = PendingEmission(server=1_000, validator=1_000, owner_cut=7)
    result = _epoch_for_graph(pending)
    payout = distribute_epoch(
        result,
        hotkeys=HOTKEYS,
        hotkey_owners=HOTKEY_OWNERS,
        owner_coldkey=None,
        owner_hotkey=None,
        pending=pending,
        delegate_takes_u16={"val-a": 0, "val-b": 65535},
        auto_stake_destinations={"ck-1": "val-a"},
    )
    kinds = {(c.kind, c.hotkey): c for c in payout.credits}
    assert ("validator_take", "val-a") not in kinds  # zero take
    assert ("nominator_dividend", "val-b") not in kinds  # 100% take
    assert kinds[("incentive", "val-a")].coldkey == "ck-1"  # miner-1's incentive auto-staked to val-a
    assert payout.burned == 7  # no owner: the owner cut has nowhere to go


def test_owner_hotkeys_on_subnet() -> None:
    owners = {"a": "owner", "b": "x", "c": "owner"}
    assert owner_hotkeys_on_subnet(["a", "b", "ohk"], owners, "owner", "ohk") == {"a", "ohk"}
    assert owner_hotkeys_on_subnet(["a", "b"], owners, None, None) == set()


def test_split_pool_credit() -> None:
    assert split_pool_credit(100, {"x": 1, "y": 3}, "owner") == {"x": 25, "y": 75}
    assert split_pool_credit(10, {"x": 1, "y": 1, "z": 1}, "owner") == {"x": 4, "y": 3, "z": 3}
    assert split_pool_credit(10, {}, "owner") == {"owner": 10}
    assert split_pool_credit(0, {}, "owner") == {}
