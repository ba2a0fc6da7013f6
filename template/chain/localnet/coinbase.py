"""Per-block alpha emission and per-epoch payouts of a dynamic-TAO subnet, as subtensor's coinbase does them.

All amounts are integers in rao (1 alpha = 1 TAO = 10**9 rao). Subtensor computes the coinbase in U96F32 fixed
point (32 fractional bits) and floors when it converts to rao; these functions do the same with Python ints, so
per-block pending amounts and per-epoch payouts match the chain to the rao.

What a local chain skips (see SUBTENSOR.md section 4): the TAO side (TAO injection, swaps, EMA prices), root
stake and root dividends (root_proportion = 0 without root stake), parent/child key splits, miner collateral.

Flow:
* every block, for each emitting subnet: ``split_block_emission(block_emission(alpha_issuance))`` and add the
  split to the subnet's ``PendingEmission``;
* when ``should_run_epoch(...)``: run ``yuma_epoch`` with ``rao_emission = pending.server + pending.validator``,
  then ``distribute_epoch(...)`` turns the result and the pending amounts into stake credits and a burn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from template.chain.localnet.yuma import EpochResult

RAO_PER_ALPHA = 10**9
TOTAL_SUPPLY_RAO = 21_000_000 * RAO_PER_ALPHA
DEFAULT_BLOCK_EMISSION_RAO = RAO_PER_ALPHA
DEFAULT_OWNER_CUT_U16 = 11_796  # 11796 / 65535 = 0.17999...
DEFAULT_DELEGATE_TAKE_U16 = 11_796
U16_MAX = 65_535
FRAC_BITS = 32  # U96F32


def _u16_fraction_fx(value_u16: int) -> int:
    """U96F32(value) / U96F32(65535) as a raw fixed-point value."""
    return (value_u16 << FRAC_BITS) // U16_MAX


# ---------------------------------------------------------------------------
# Per-block emission
# ---------------------------------------------------------------------------


def block_emission(issuance_rao: int, *, total_supply_rao: int = TOTAL_SUPPLY_RAO) -> int:
    """Emission per block (rao) for an issuance: 10**9 / 2**k with k = floor(log2(S / (S - I))).

    The rate halves each time issuance crosses 1/2, 3/4, 7/8, ... of the total supply; 0 once it is reached.
    Used for alpha with issuance = alpha_in + alpha_out of the subnet (1 alpha per block below 10.5M alpha).
    """
    if issuance_rao >= total_supply_rao:
        return 0
    # The chain computes residual = log2(1 / (1 - I / S)) in I96F32 and floors it.
    ratio = (issuance_rao << FRAC_BITS) // total_supply_rao
    inverse = (1 << (2 * FRAC_BITS)) // ((1 << FRAC_BITS) - ratio)
    halvings = inverse.bit_length() - 1 - FRAC_BITS
    return (DEFAULT_BLOCK_EMISSION_RAO << FRAC_BITS >> halvings) >> FRAC_BITS


@dataclass(frozen=True)
class BlockSplit:
    """One block's alpha emission of a subnet, split as run_coinbase accumulates it (rao)."""

    owner_cut: int
    server: int
    validator: int

    @property
    def total(self) -> int:
        return self.owner_cut + self.server + self.validator


def split_block_emission(
    alpha_emission: int, *, owner_cut_u16: int = DEFAULT_OWNER_CUT_U16, owner_cut_enabled: bool = True
) -> BlockSplit:
    """Split a block's alpha emission into owner cut, miner (server) and validator parts.

    owner = floor(A * cut); the remainder A' (kept fractional, as the chain does) goes half to miners and half
    to validators, each floored. With the mainnet cut, A = 10**9 gives 179_995_422 / 410_002_288 / 410_002_288
    (2 rao per block are lost to flooring, as on chain). No root stake locally, so no root alpha.
    """
    remaining = alpha_emission << FRAC_BITS
    owner_cut = 0
    if owner_cut_enabled:
        owner_cut_fx = (remaining * _u16_fraction_fx(owner_cut_u16)) >> FRAC_BITS
        remaining -= owner_cut_fx
        owner_cut = owner_cut_fx >> FRAC_BITS
    server_fx = remaining >> 1
    validator_fx = remaining - server_fx
    return BlockSplit(owner_cut=owner_cut, server=server_fx >> FRAC_BITS, validator=validator_fx >> FRAC_BITS)


@dataclass(frozen=True)
class PendingEmission:
    """Alpha a subnet has accumulated since its last epoch (rao); drained when the epoch runs."""

    server: int = 0
    validator: int = 0
    owner_cut: int = 0

    def add(self, split: BlockSplit) -> PendingEmission:
        return PendingEmission(
            server=self.server + split.server,
            validator=self.validator + split.validator,
            owner_cut=self.owner_cut + split.owner_cut,
        )

    @property
    def epoch_emission(self) -> int:
        """The rao_emission the epoch splits (server + validator; root alpha is 0 locally)."""
        return self.server + self.validator


# ---------------------------------------------------------------------------
# Epoch scheduling (stateful scheduler: LastEpochBlock + tempo)
# ---------------------------------------------------------------------------


def initial_last_epoch_block(netuid: int, tempo: int, block: int) -> int:
    """LastEpochBlock of a newly created subnet: now minus a per-netuid stagger (netuid mod tempo)."""
    return max(0, block - netuid % max(tempo, 1))


def should_run_epoch(
    tempo: int,
    block: int,
    *,
    last_epoch_block: int,
    pending_epoch_at: int = 0,
    blocks_since_last_step: int = 0,
) -> bool:
    """True when the subnet's epoch is due at `block` (before the per-block cap of MaxEpochsPerBlock).

    Due when an owner-triggered epoch is pending and reached, when the epoch was missed for more than `tempo`
    blocks, or when `tempo` blocks have passed since the last epoch. Tempo 0 never runs.
    """
    if tempo == 0:
        return False
    if 0 < pending_epoch_at <= block:
        return True
    if blocks_since_last_step > tempo:
        return True
    return block - last_epoch_block >= tempo


def next_epoch_start_block(tempo: int, *, last_epoch_block: int, pending_epoch_at: int = 0) -> int | None:
    """Block at which the next epoch is expected (the chain's get_next_epoch_start_block); None if tempo 0."""
    if tempo == 0:
        return None
    auto_next = last_epoch_block + tempo
    return min(auto_next, pending_epoch_at) if pending_epoch_at > 0 else auto_next


def blocks_until_next_epoch(
    tempo: int, block: int, *, last_epoch_block: int, pending_epoch_at: int = 0
) -> int | None:
    """Blocks from `block` until the next epoch, as the SDK derives it; None if tempo is 0."""
    start = next_epoch_start_block(
        tempo, last_epoch_block=last_epoch_block, pending_epoch_at=pending_epoch_at
    )
    return None if start is None else max(0, start - block)


def legacy_blocks_until_next_epoch(netuid: int, tempo: int, block: int) -> int:
    """The pre-2026 modulo rule, for older clients: tempo - (block + netuid + 1) % (tempo + 1).

    The old chain ran the epoch at blocks where this is 0, i.e. (block + netuid + 2) % (tempo + 1) == 0.
    """
    if tempo == 0:
        return 1 << 64
    return tempo - (block + netuid + 1) % (tempo + 1)


# ---------------------------------------------------------------------------
# Epoch payouts
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StakeCredit:
    """Alpha (rao) to add as stake on the subnet.

    coldkey is None for the nominator part of a validator's dividends: it goes to the hotkey's pool, pro rata
    to everyone staked on that hotkey (see `split_pool_credit`); if nobody is, to the hotkey's owner coldkey.
    kind: "owner_cut", "incentive", "validator_take" or "nominator_dividend".
    """

    hotkey: str
    coldkey: str | None
    amount: int
    kind: str


@dataclass(frozen=True)
class EpochPayout:
    """What one epoch pays out: stake credits plus alpha burned (owner-owned miners' incentive, lost owner cut)."""

    credits: list[StakeCredit] = field(default_factory=list)
    burned: int = 0

    @property
    def total_credited(self) -> int:
        return sum(c.amount for c in self.credits)


def owner_hotkeys_on_subnet(
    registered_hotkeys: Sequence[str],
    hotkey_owners: Mapping[str, str],
    owner_coldkey: str | None,
    owner_hotkey: str | None,
) -> set[str]:
    """Registered hotkeys whose incentive is burned: the subnet owner hotkey and any hotkey of the owner coldkey."""
    registered = set(registered_hotkeys)
    owned = {hk for hk in registered if owner_coldkey is not None and hotkey_owners.get(hk) == owner_coldkey}
    if owner_hotkey is not None and owner_hotkey in registered:
        owned.add(owner_hotkey)
    return owned


def distribute_epoch(
    result: EpochResult,
    *,
    hotkeys: Sequence[str],
    hotkey_owners: Mapping[str, str],
    owner_coldkey: str | None,
    owner_hotkey: str | None,
    pending: PendingEmission,
    delegate_takes_u16: Mapping[str, int] | None = None,
    auto_stake_destinations: Mapping[str, str] | None = None,
) -> EpochPayout:
    """Turn an epoch result and the drained pending alpha into payouts (subtensor's distribute_emission).

    Args:
        result: `yuma_epoch` output, run with rao_emission = pending.epoch_emission.
        hotkeys: hotkey of each uid (index = uid). hotkey_owners: hotkey -> owning coldkey.
        owner_coldkey / owner_hotkey: the subnet owner's keys (None if unset).
        pending: the pending amounts drained for this epoch.
        delegate_takes_u16: per validator hotkey take (u16 / 65535); default 11796 (18%).
        auto_stake_destinations: coldkey -> hotkey where that coldkey's miner incentive is staked instead.
    Returns:
        EpochPayout. Incentive of owner-owned hotkeys is burned. Each validator's dividend share of the
        validator pot (V, or V + S when no miner earned incentive) is split into the delegate take, credited to
        (hotkey, owner coldkey), and the nominator part, credited to the hotkey's pool (coldkey None). When the
        validator is its own only nominator both parts end up on its own stake.
    """
    takes = delegate_takes_u16 or {}
    destinations = auto_stake_destinations or {}
    credits: list[StakeCredit] = []
    burned = 0

    if owner_coldkey is not None and owner_hotkey is not None:
        credits.append(StakeCredit(owner_hotkey, owner_coldkey, pending.owner_cut, "owner_cut"))
    else:
        burned += pending.owner_cut

    owned = owner_hotkeys_on_subnet(hotkeys, hotkey_owners, owner_coldkey, owner_hotkey)
    for uid, incentive in enumerate(result.server_emission):
        if incentive == 0:
            continue
        hotkey = hotkeys[uid]
        if hotkey in owned:
            burned += incentive
            continue
        coldkey = hotkey_owners[hotkey]
        credits.append(StakeCredit(destinations.get(coldkey, hotkey), coldkey, incentive, "incentive"))

    validator_pot = (
        pending.validator if sum(result.server_emission) > 0 else pending.validator + pending.server
    )
    credits.extend(_dividend_credits(result.validator_emission, hotkeys, hotkey_owners, validator_pot, takes))
    return EpochPayout(credits=credits, burned=burned)


def _dividend_credits(
    validator_emission: Sequence[int],
    hotkeys: Sequence[str],
    hotkey_owners: Mapping[str, str],
    validator_pot: int,
    takes: Mapping[str, int],
) -> list[StakeCredit]:
    """Each hotkey gets pot * its dividend / all dividends (U96F32), then the take split, each floored."""
    total_dividends = sum(validator_emission)
    credits: list[StakeCredit] = []
    if total_dividends == 0:
        return credits
    pot_fx = validator_pot << FRAC_BITS
    for uid, dividend in enumerate(validator_emission):
        if dividend == 0:
            continue
        hotkey = hotkeys[uid]
        share_fx = (dividend << FRAC_BITS) // total_dividends
        alpha_divs_fx = (pot_fx * share_fx) >> FRAC_BITS
        take_fx = (
            alpha_divs_fx * _u16_fraction_fx(takes.get(hotkey, DEFAULT_DELEGATE_TAKE_U16))
        ) >> FRAC_BITS
        take = take_fx >> FRAC_BITS
        nominator = (alpha_divs_fx - take_fx) >> FRAC_BITS
        if take:
            credits.append(StakeCredit(hotkey, hotkey_owners[hotkey], take, "validator_take"))
        if nominator:
            credits.append(StakeCredit(hotkey, None, nominator, "nominator_dividend"))
    return credits


def split_pool_credit(amount: int, stakes_by_coldkey: Mapping[str, int], hotkey_owner: str) -> dict[str, int]:
    """Split a hotkey-pool credit over its stakers pro rata to their stake (rao), flooring each share.

    The chain raises the pool's share value instead, which has no rounding; here the few rao of flooring
    remainder go to the largest staker (ties: first in order). With no stake on the hotkey the whole amount
    goes to the hotkey's owner coldkey, as the chain does for an empty pool.
    """
    total = sum(stakes_by_coldkey.values())
    if total == 0:
        return {hotkey_owner: amount} if amount else {}
    shares = {ck: amount * stake // total for ck, stake in stakes_by_coldkey.items() if stake > 0}
    remainder = amount - sum(shares.values())
    if remainder:
        largest = max(shares, key=lambda ck: stakes_by_coldkey[ck])
        shares[largest] += remainder
    return {ck: v for ck, v in shares.items() if v}
