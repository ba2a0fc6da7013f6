"""Client-side quotes of a subnet's stake pool and the owner's income, from the node's `/subnets` summary.

The quotes call the chain's own pool functions (`ChainState.quote_*`), so a preview matches what the chain
will do at the same reserves; the reserves can move before the extrinsic lands (other stakers, an epoch).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from template.chain.localnet import coinbase
from template.chain.localnet.state import ChainState


def _reserves(sub: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(subnet_tao=int(sub["subnet_tao_rao"]), alpha_in=int(sub["alpha_in_rao"]))


def price(sub: dict[str, Any]) -> float:
    """Spot price, TAO per alpha (0 for an empty pool)."""
    r = _reserves(sub)
    return r.subnet_tao / r.alpha_in if r.alpha_in else 0.0


def quote_buy(sub: dict[str, Any], tao_rao: int) -> int:
    """Alpha rao that `tao_rao` buys now (fee included)."""
    return ChainState.quote_alpha_for_tao(_reserves(sub), tao_rao)


def quote_sell(sub: dict[str, Any], alpha_rao: int) -> int:
    """TAO rao that selling `alpha_rao` returns now (fee included)."""
    return ChainState.quote_tao_for_alpha(_reserves(sub), alpha_rao)


def slippage_buy(sub: dict[str, Any], tao_rao: int) -> float:
    """Share of the spot-price value lost to price impact and fee when buying alpha with `tao_rao` (0..1)."""
    ideal = tao_rao / price(sub) if price(sub) else 0.0
    return 1.0 - quote_buy(sub, tao_rao) / ideal if ideal else 1.0


def slippage_sell(sub: dict[str, Any], alpha_rao: int) -> float:
    """Share of the spot-price value lost to price impact and fee when selling `alpha_rao` (0..1)."""
    ideal = alpha_rao * price(sub)
    return 1.0 - quote_sell(sub, alpha_rao) / ideal if ideal else 1.0


def price_move_buy(sub: dict[str, Any], tao_rao: int) -> float:
    """How far buying alpha with `tao_rao` moves the pool price up, as a fraction of the spot price.

    This is what btcli's rate tolerance bounds: a safe stake sets the limit price spot x (1 + tolerance), and
    the chain refuses a swap that would leave the pool above it (subtensor's add_stake_limit, SlippageTooHigh).
    """
    r = _reserves(sub)
    left = r.alpha_in - quote_buy(sub, tao_rao)
    if not r.alpha_in or left <= 0:
        return float("inf")
    return (r.subnet_tao + tao_rao) / left / price(sub) - 1.0


def price_move_sell(sub: dict[str, Any], alpha_rao: int) -> float:
    """How far selling `alpha_rao` moves the pool price down, as a fraction of the spot price (the limit of a
    safe unstake is spot x (1 - tolerance))."""
    r = _reserves(sub)
    left = r.subnet_tao - quote_sell(sub, alpha_rao)
    if not r.alpha_in or left <= 0:
        return 1.0
    return 1.0 - left / (r.alpha_in + alpha_rao) / price(sub)


def owner_cut_per_epoch(sub: dict[str, Any]) -> int:
    """Owner cut (alpha rao) one epoch pays at the current emission rate: per-block cut x tempo (0 if not started
    or the cut is off)."""
    if not sub.get("first_emission_block") or not sub.get("owner_cut_enabled", True):
        return 0
    issuance = sum(int(sub[k]) for k in ("alpha_in_rao", "alpha_out_rao", "pending_server_rao",
                                         "pending_validator_rao", "pending_owner_cut_rao"))
    per_block = coinbase.split_block_emission(coinbase.block_emission(issuance)).owner_cut
    return per_block * int(sub["tempo"])


def owner_income(netuid: str | int, sub: dict[str, Any]) -> dict[str, Any]:
    """The owner's income on one subnet, in alpha rao: last epoch, total so far, accruing now, per epoch now."""
    return {"netuid": int(netuid), "owner_hotkey": sub["owner_hotkey"],
            "owner_cut_last_epoch_rao": int(sub.get("owner_cut_last_epoch_rao", 0)),
            "owner_cut_total_rao": int(sub.get("owner_cut_total_rao", 0)),
            "owner_cut_pending_rao": int(sub.get("pending_owner_cut_rao", 0)),
            "owner_cut_per_epoch_rao": owner_cut_per_epoch(sub),
            "blocks_until_next_epoch": int(sub["blocks_until_next_epoch"])}
