"""Attacks on the protocol's trust in the lead and on progress (issue 27), played as real attackers would.

stall      a coalition on the peer list: each member trains its own update to estimate the honest direction,
           and sends that direction negated and scaled by the honest peers' count (so the coalition's sum
           cancels the honest sum), on its own disjoint share of the positions (chunk blocks by
           uid % STALL_COALITION), so no two members' updates overlap for the copy check; plus a delta trained
           on the public loss-curve samples, so the guard loss falls where the guard is that set. The guard
           batch is now drawn after the reveal deadline from the guard block's hash (template/node/guard.py),
           so a real coalition cannot predict it: it trains on what it can see, the public set, and hopes
staleecho  the applied aggregate step of window w-k (k from 2 to 16, theta_{w-k} - theta_{w-k+1} over the outer
           lr, as a miner's delta), plus two inner steps of its own
roguelead  a validator with the top stake that signs a wrong record or checkpoint, one flag each
           (`ROGUE_FLAGS`): `lr` inflates outer_lr, `offlist` lists an admissible upload that is not on its
           own peer list, `veto` refuses every step, `forge` publishes a checkpoint of other weights
           (`corrupt_record`, `forged_checkpoint_tensors`; played on fakes in tests/unit/test_record_verification.py)
"""

from __future__ import annotations

import dataclasses

import torch

from template.node.miner import Miner, WindowPlan, build_artifact, encode_update, train_inner_steps
from template.protocol.data import loss_curve_ids
from template.protocol.records import AggregationRecord, RecordEntry

STALL_COALITION = 3  # members; member i takes the chunk blocks whose index is i mod this
STALL_HONEST_GUESS = 4  # the honest peers a member assumes it has to cancel
STALE_MIN_K, STALE_MAX_K = 2, 16
STALE_OWN_STEPS = 2
ROGUE_FLAGS = ("lr", "offlist", "veto", "forge")
ROGUE_LR = 100.0

_state: dict[str, object] = {}


def share_mask(shape: tuple[int, ...], chunk: int, member: int, members: int) -> torch.Tensor:
    """Member `member`'s disjoint share of a tensor's positions: chunk-row blocks whose index is member mod members
    (chunk-aligned, so the codec's per-chunk top-k keeps the member's values and nobody else's)."""
    rows = shape[0] if shape else 1
    keep = ((torch.arange(rows) // chunk) % members) == member
    return keep.view(-1, *([1] * (len(shape) - 1))).expand(shape) if shape else keep.view(())


def stall(m: Miner, plan: WindowPlan, base_fp: str):
    own = train_inner_steps(m, plan)  # the estimate of the honest direction
    guard_plan = dataclasses.replace(plan, sample_ids=loss_curve_ids(m.num_train, len(m.dataset)))
    guard = train_inner_steps(m, guard_plan)  # the guard it can see (the drawn one is unknown until after the deadline)
    member = m.uid % STALL_COALITION
    delta = {n: -d * STALL_HONEST_GUESS * share_mask(tuple(d.shape), m.hp.chunk_size, member, STALL_COALITION)
             + guard.delta[n] for n, d in own.delta.items()}
    return build_artifact(m, plan, encode_update(m, delta), base_fp), own


def stale_k(window: int, uid: int) -> int:
    """Which old aggregate to echo this window: k in [STALE_MIN_K, STALE_MAX_K], varying by window and uid."""
    return STALE_MIN_K + (window * 7 + uid) % (STALE_MAX_K - STALE_MIN_K + 1)


def staleecho(m: Miner, plan: WindowPlan, base_fp: str):
    thetas = _state.setdefault("thetas", {})
    assert isinstance(thetas, dict)
    thetas[plan.window] = {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in m.gm.model.named_parameters()}
    for w in [w for w in thetas if w < plan.window - STALE_MAX_K - 1]:
        del thetas[w]
    own = train_inner_steps(m, plan, num_steps=STALE_OWN_STEPS)
    k = stale_k(plan.window, m.uid)
    old, new = thetas.get(plan.window - k), thetas.get(plan.window - k + 1)
    delta = dict(own.delta)
    if old is not None and new is not None:
        delta = {n: (old[n] - new[n]) / m.hp.outer_lr + d.cpu() for n, d in own.delta.items()}
    return build_artifact(m, plan, encode_update(m, delta), base_fp), own


def corrupt_record(record: AggregationRecord, flag: str, *, offlist: RecordEntry | None = None) -> AggregationRecord:
    """The rogue lead's record: `record` with one thing wrong (`ROGUE_FLAGS`; `forge` leaves the record be)."""
    if flag == "lr":
        return dataclasses.replace(record, outer_lr=ROGUE_LR)
    if flag == "offlist":
        if offlist is None:
            raise ValueError("the offlist flag needs an entry to add")
        entries = sorted((*record.included, offlist), key=lambda e: e.uid)
        return dataclasses.replace(record, included=tuple(entries))
    if flag == "veto":
        return dataclasses.replace(record, refused=True, next_fingerprint=record.base_fingerprint)
    if flag == "forge":
        return record
    raise ValueError(f"flag must be one of {ROGUE_FLAGS}, got {flag!r}")


def forged_checkpoint_tensors(tensors: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Other weights of the same shapes (what a forging lead publishes as its checkpoint)."""
    gen = torch.Generator().manual_seed(seed)
    return {n: t + torch.randn(t.shape, generator=gen) * 0.1 for n, t in tensors.items()}


PROTOCOL_ATTACKS = {f.__name__: f for f in (stall, staleecho)}
