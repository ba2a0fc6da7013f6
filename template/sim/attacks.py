"""Hostile miners of issue 15 (scoring and aggregation that can't be gamed), played as a real attacker would.

poisoner   a sybil group sharing a plan (every poisoner process of a run registers its hotkey in one plan
           folder): trains honestly until its members hold at least half of a window's gather set (peer
           lists are published two windows ahead), then each sends a huge negated update with a valid
           signature, base and receipt
scaler     an honest update multiplied by the factor that helps most on public data (the loss-curve samples)
heldout    trains on its assignment mixed with the public held-out tail, hoping the eval batches come from it
timed      honest in even windows, lazy (another uid's samples, the right receipt claimed) in odd ones
stakejack  stakes its coldkey's funds onto an honest miner's hotkey (to make it a "validator" or the lead),
           then idles

Each is an UploadStrategy of template.node.miner.run; template/sim/adversaries.py registers them.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from bittensor_wallet import Wallet
from loguru import logger

from gauntlet.evaluate import mean_loss
from storage.peers import fetch_peer_list
from template.node.miner import (
    Miner,
    WindowPlan,
    build_artifact,
    encode_update,
    honest_upload,
    train_inner_steps,
)
from template.node.neuron import declared_validators, find_lead, miner_uids
from template.protocol.data import loss_curve_ids, sample_ids

POISON_SCALE = 1e4  # "huge": far above any honest norm
SCALER_FACTORS = (1.0, 2.0, 4.0, 8.0)
STAKEJACK_TAO = 3000.0

_state: dict[str, object] = {}


def _plan_dir(m: Miner) -> Path:
    """The sybils' shared plan: one file per member hotkey, in the run's state folder."""
    path = m.state_dir.parent / "poisoner-plan"  # the run's state folder, shared by the group
    path.mkdir(parents=True, exist_ok=True)
    (path / m.hotkey.ss58_address).touch()
    return path


def _group_holds_half(m: Miner, window: int) -> tuple[bool, list[int]]:
    """Whether the group's members are at least half of the peer list in force for `window`."""
    members = {p.name for p in _plan_dir(m).iterdir()}
    m.peers.refresh()
    mg = m.chain.metagraph(m.cfg.netuid)
    lead = find_lead(m.peers, mg, m.hp.min_validator_stake, window)
    if lead is None:
        return False, []
    read = fetch_peer_list(m.peers, mg.hotkeys[lead], window)
    if not read.ok or not read.value:
        return False, []
    ours = [u for u in read.value if 0 <= u < mg.n and mg.hotkeys[u] in members]
    return 2 * len(ours) >= len(read.value), ours


def poisoner(m: Miner, plan: WindowPlan, base_fp: str):
    strike, ours = _group_holds_half(m, plan.window)
    result = train_inner_steps(m, plan)
    if not strike:
        return build_artifact(m, plan, encode_update(m, result.delta), base_fp), result
    logger.warning(f"poisoner: the group holds {len(ours)} places of window {plan.window}'s peer list; striking")
    wire = encode_update(m, {n: -d * POISON_SCALE for n, d in result.delta.items()})
    return build_artifact(m, plan, wire, base_fp), result


def scaler(m: Miner, plan: WindowPlan, base_fp: str):
    """Tunes its factor on the public loss-curve samples, as an outsider can."""
    result = train_inner_steps(m, plan)
    batch = m.dataset.batch(loss_curve_ids(m.num_train, len(m.dataset))[:8]).to(m.device)
    params = dict(m.gm.model.named_parameters())
    best, best_loss = 1.0, float("inf")
    with torch.no_grad():
        for factor in SCALER_FACTORS:
            for n, p in params.items():
                p.sub_(result.delta[n].to(p.device), alpha=factor * m.hp.outer_lr)
            loss = mean_loss(m.gm.model, batch)
            for n, p in params.items():
                p.add_(result.delta[n].to(p.device), alpha=factor * m.hp.outer_lr)
            if loss < best_loss:
                best, best_loss = factor, loss
    logger.info(f"scaler: factor {best} in window {plan.window}")
    wire = encode_update(m, {n: d * best for n, d in result.delta.items()})
    return build_artifact(m, plan, wire, base_fp), result


def heldout(m: Miner, plan: WindowPlan, base_fp: str):
    """Half of every batch from the public held-out tail (the old eval pool), half its assignment."""
    tail = list(range(m.num_train, len(m.dataset)))
    half = len(plan.sample_ids) // 2
    start = (plan.window * half) % max(len(tail) - half, 1)
    mixed = [x for pair in zip(plan.sample_ids[:half], tail[start:start + half], strict=False) for x in pair]
    mixed += plan.sample_ids[len(mixed):]  # as many samples as assigned; the receipt claims the assignment
    result = train_inner_steps(m, plan, ids=mixed[:len(plan.sample_ids)])
    return build_artifact(m, plan, encode_update(m, result.delta), base_fp), result


def timed(m: Miner, plan: WindowPlan, base_fp: str):
    if plan.window % 2 == 0:
        return honest_upload(m, plan, base_fp)
    other = sample_ids(m.uid + 97, plan.window, m.hp.data_seed, len(plan.sample_ids), m.num_train)
    result = train_inner_steps(m, plan, ids=other)
    return build_artifact(m, plan, encode_update(m, result.delta), base_fp), result


def stakejack(m: Miner, plan: WindowPlan, base_fp: str):
    """Once: stake onto the lowest-uid other miner (an honest one in the localnet); then upload nothing."""
    if "staked" in _state:
        return None, None
    mg = m.chain.metagraph(m.cfg.netuid)
    victims = [u for u in miner_uids(mg, m.hp.min_validator_stake, declared_validators(m.peers)) if u != m.uid]
    add_stake = getattr(m.chain, "add_stake", None)  # the localnet client; a subtensor adapter has btcli for this
    if not victims or add_stake is None:
        _state["staked"] = False
        return None, None
    wallet = Wallet(name=m.cfg.wallet.name, hotkey=m.cfg.wallet.hotkey, path=m.cfg.wallet.path)
    res = add_stake(wallet.coldkey, mg.hotkeys[victims[0]], m.cfg.netuid, STAKEJACK_TAO)
    logger.warning(f"stakejack: staked {STAKEJACK_TAO} onto uid {victims[0]}: "
                   f"{'ok' if res.ok else res.error}")
    _state["staked"] = time.time()
    return None, None


ATTACKS = {f.__name__: f for f in (poisoner, scaler, heldout, timed, stakejack)}
MODEL_LESS_ATTACKS = {"stakejack"}
