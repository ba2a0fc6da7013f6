"""Read-only JSON views of the localnet state, served by the node's HTTP API.

Pure functions of a `ChainState`; amounts stay in rao here (the client converts to TAO/alpha units).
"""

from __future__ import annotations

from typing import Any

from template.chain.localnet import hparams
from template.chain.localnet.calls import lock_cost
from template.chain.localnet.state import ChainState, Subnet


def commitment_text(entry: dict[str, Any]) -> str:
    """The committed string: the UTF-8 decoding of all fields' bytes, concatenated in order."""
    raw = b"".join(bytes.fromhex(hexdata) for f in entry["fields"] for hexdata in f.values())
    return raw.decode("utf-8", errors="replace")


def metagraph_view(state: ChainState, netuid: int) -> dict[str, Any]:
    sub = state.subnet(netuid)
    neurons = sub.neurons
    return {
        "netuid": netuid,
        "block": state.block,
        "n": len(neurons),
        "hotkeys": [n.hotkey for n in neurons],
        "coldkeys": [state.owner_of.get(n.hotkey, "") for n in neurons],
        "stake_rao": [state.stake_of(netuid, n.hotkey) for n in neurons],
        "validator_permit": [n.permit for n in neurons],
        "incentive_u16": [n.incentive for n in neurons],
        "dividends_u16": [n.dividends for n in neurons],
        "consensus_u16": [n.consensus for n in neurons],
        "validator_trust_u16": [n.validator_trust for n in neurons],
        "emission_rao": [n.emission for n in neurons],
        "last_update": [n.last_update for n in neurons],
        "block_at_registration": [n.registered_at for n in neurons],
        "active": [n.active for n in neurons],
        "weights": {str(uid): n.weights for uid, n in enumerate(neurons) if n.weights},
        "bonds": {str(uid): n.bonds for uid, n in enumerate(neurons) if n.bonds},
        "owner_hotkey": sub.owner_hotkey,
        "owner_coldkey": sub.owner_coldkey,
        **subnet_summary(state, sub),
    }


def subnet_summary(state: ChainState, sub: Subnet) -> dict[str, Any]:
    return {
        "tempo": sub.hparams["tempo"],
        "last_epoch_block": sub.last_epoch_block,
        "epoch_index": sub.epoch_index,
        "blocks_until_next_epoch": int(sub.hparams["tempo"]) - (state.block - sub.last_epoch_block),
        "first_emission_block": sub.first_emission_block,
        "pending_weight_commits": len(sub.weight_commits),  # count only: the contents stay hidden
        "burn_rao": sub.burn,
        "subnet_tao_rao": sub.subnet_tao,
        "alpha_in_rao": sub.alpha_in,
        "alpha_out_rao": sub.alpha_out,
        "pending_server_rao": sub.pending_server,
        "pending_validator_rao": sub.pending_validator,
        "pending_owner_cut_rao": sub.pending_owner_cut,
        "owner_cut_last_epoch_rao": sub.owner_cut_last_epoch,
        "owner_cut_total_rao": sub.owner_cut_total,
        "owner_cut_enabled": bool(sub.hparams["owner_cut_enabled"]),
    }


def network_view(state: ChainState) -> dict[str, Any]:
    """Chain-wide values a subnet owner needs before `register_network`: the current lock cost and its rules."""
    return {"block": state.block, "lock_cost_rao": lock_cost(state), "min_lock_rao": state.genesis.min_lock_rao,
            "last_lock_rao": state.network_last_lock, "last_lock_block": state.network_last_lock_block,
            "network_rate_limit": state.genesis.network_rate_limit, "num_subnets": len(state.subnets)}


def commitments_view(state: ChainState, netuid: int) -> dict[str, Any]:
    """Commitments of the hotkeys registered on `netuid` (a pruned hotkey's entry is not reported)."""
    sub = state.subnet(netuid)
    registered = {n.hotkey for n in sub.neurons}
    return {hk: {"data": commitment_text(e), "block": e["block"], "fields": e["fields"]}
            for hk, e in sorted(sub.commitments.items()) if hk in registered}


def hyperparameters_view(state: ChainState, netuid: int) -> dict[str, Any]:
    sub = state.subnet(netuid)
    hp = sub.hparams
    cutoff = hparams.activity_cutoff_blocks(int(hp["activity_cutoff_factor"]), int(hp["tempo"]))
    return {**hp, "activity_cutoff": cutoff, "burn": sub.burn, "netuid": netuid}


def account_view(state: ChainState, ss58: str) -> dict[str, Any]:
    stakes = []
    for key, shares in sorted(state.shares.items()):
        netuid, hotkey, coldkey = key.split(":")
        if coldkey == ss58 and shares > 0:
            stakes.append({"netuid": int(netuid), "hotkey": hotkey,
                           "alpha_rao": state.stake_of_coldkey(int(netuid), hotkey, coldkey)})
    return {"ss58": ss58, "balance_rao": state.balance(ss58), "nonce": state.nonces.get(ss58, 0),
            "owner_coldkey": state.owner_of.get(ss58), "stakes": stakes}
