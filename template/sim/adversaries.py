"""Hostile miners, for testing the incentives only (`python -m template.sim.hostile_miner --mode KIND`;
scripts/localnet.py --adversaries).

Each behaviour is an UploadStrategy for template.node.miner.run: it decides what bytes (if any)
to upload for a window. The honest miner never calls into this module.

idle       registered, never uploads
noise      a random update of the right shapes, honestly encoded and signed
copycat    waits for another miner's upload of the window, re-signs it as its own
replay     re-uploads the update it made in an earlier window, re-signed for this one
lazy       trains on samples other than its assignment (claims the right receipt)
late       an honest update, uploaded after the deadline
malformed  a broken payload (cycling through truncation, garbage, NaN values)
negator    the negated honest update
(and the kinds of template/sim/attacks.py: poisoner, scaler, heldout, timed, stakejack; of
template/sim/protocol_attacks.py: stall, staleecho)
tarpit     commits its own endpoint (template/sim/hostile_s3.py on 127.0.0.1) that answers HEAD at
           once and trickles GET bodies one byte every 2 s, serving a signed noise update
backdater  commits its own endpoint that forges Last-Modified; after the deadline it re-signs an
           honest peer's update and serves it dated 5 s before the deadline (to win copy ties)
"""

from __future__ import annotations

import time
from typing import Any

import torch
from loguru import logger

from storage.credentials import BucketAccess
from storage.peers import fetch_record
from template.node import neuron
from template.node.miner import (
    Miner,
    TrainResult,
    WindowPlan,
    build_artifact,
    encode_update,
    follow_network,
    reveal_key,
    run,
    train_inner_steps,
)
from template.node.neuron import declared_validators, find_lead, miner_uids
from template.node.sync import SyncStatus
from template.protocol import layout
from template.protocol.artifacts import read_tensor_artifact
from template.protocol.config import NeuronConfig
from template.protocol.data import sample_ids
from template.protocol.sparseloco import compress
from template.sim.attacks import ATTACKS, MODEL_LESS_ATTACKS
from template.sim.hostile_s3 import HostileS3
from template.sim.protocol_attacks import PROTOCOL_ATTACKS
from template.sim.storage_attacks import FOLLOWS, STORAGE_ATTACKS

_memory: dict[str, Any] = {}  # per-process state of a hostile strategy (its replayed wire, its server)


def idle(m: Miner, plan: WindowPlan, base_fp: str):
    return None, None


def claimed_base(m: Miner, plan: WindowPlan, base_fp: str) -> str:
    """The base a model-less adversary claims, to look in sync: theta_w as the lead's record of
    window w-1 names it (polled for up to 0.8 of a window: the lead publishes it while w runs), else `base_fp`."""
    if plan.window == 0:
        return base_fp
    mg = m.chain.metagraph(m.cfg.netuid)
    lead = find_lead(m.peers, mg, m.hp.min_validator_stake, plan.window)
    if lead is None:
        return base_fp
    lead_hotkey = mg.hotkeys[lead]
    until = time.time() + 0.8 * m.clock.window_s()
    while not m.stop.is_set():
        read = fetch_record(m.peers, lead_hotkey, plan.window - 1)
        if read.ok and read.value is not None:
            return read.value.next_fingerprint
        if time.time() > until:
            return base_fp
        time.sleep(1.0)
    return base_fp


def follow_records_only(m: Miner, window: int) -> str:
    """Model-less adversaries skip the gather (CPU they do not need): they only wait for the deadline."""
    if m.clock.wait_past_deadline(window, m.stop) is None:
        return SyncStatus.STOPPED
    reveal_key(m, window)  # a sealed upload (hp.sealed_uploads) still opens
    m.gm.window = max(window + 1, m.clock.current_window())
    return "model_less"


def noise(m: Miner, plan: WindowPlan, base_fp: str):
    gen = torch.Generator().manual_seed(plan.window * 7919 + m.uid)
    delta = {n: torch.randn(s, generator=gen) * 1e-3 for n, s in m.gm.shapes().items()}
    wire, _ = compress(delta, None, m.gm.codec, m.hp.ef_beta)
    return build_artifact(m, plan, wire, claimed_base(m, plan, base_fp)), None


def negator(m: Miner, plan: WindowPlan, base_fp: str):
    result = train_inner_steps(m, plan)
    wire = encode_update(m, {n: -d for n, d in result.delta.items()})
    return build_artifact(m, plan, wire, base_fp), result


def lazy(m: Miner, plan: WindowPlan, base_fp: str):
    # someone else's samples (another uid's slice): cheap to get, not what was assigned
    other = sample_ids(m.uid + 97, plan.window, m.hp.data_seed, len(plan.sample_ids), m.num_train)
    result = train_inner_steps(m, plan, ids=other)
    wire = encode_update(m, result.delta)
    return build_artifact(m, plan, wire, base_fp), result


def replay(m: Miner, plan: WindowPlan, base_fp: str):
    if "replay_wire" not in _memory:
        result = train_inner_steps(m, plan)
        _memory["replay_wire"] = encode_update(m, result.delta)
        return build_artifact(m, plan, _memory["replay_wire"], base_fp), result
    return build_artifact(m, plan, _memory["replay_wire"], claimed_base(m, plan, base_fp)), None


def copycat(m: Miner, plan: WindowPlan, base_fp: str):
    """Poll the other miners' buckets until one uploads this window, then re-sign its tensors."""
    key = layout.gradient_key(plan.window)
    m.peers.refresh()
    mg = m.chain.metagraph(m.cfg.netuid)
    while not m.stop.is_set() and m.chain.block() <= plan.deadline_block:
        for uid in miner_uids(mg, m.hp.min_validator_stake, declared_validators(m.peers)):
            if uid == m.uid:
                continue
            read = m.peers.get(mg.hotkeys[uid], key, max_bytes=m.hp.max_upload_bytes)
            if read.ok and read.value is not None:
                try:
                    art = read_tensor_artifact(read.value, kind="gradient", max_bytes=m.hp.max_upload_bytes)
                except ValueError:
                    continue
                logger.info(f"copycat: re-signing uid {uid}'s update")
                return build_artifact(m, plan, art.tensors, claimed_base(m, plan, base_fp)), None
        time.sleep(1.0)
    return None, None


def late(m: Miner, plan: WindowPlan, base_fp: str):
    result = train_inner_steps(m, plan)
    data = build_artifact(m, plan, encode_update(m, result.delta), base_fp)
    m.clock.wait_past_deadline(plan.window, m.stop)
    time.sleep(1.5)
    m.bucket.put_update(plan.window, data)
    logger.info("late: uploaded after the deadline")
    return None, result


def malformed(m: Miner, plan: WindowPlan, base_fp: str):
    # no training: a broken payload is rejected before anyone looks at what it would do
    gen = torch.Generator().manual_seed(plan.window * 104729 + m.uid)
    wire, _ = compress({n: torch.randn(s, generator=gen) for n, s in m.gm.shapes().items()}, None, m.gm.codec,
                       m.hp.ef_beta)
    result = None
    kind = plan.window % 3
    if kind == 0:
        data = build_artifact(m, plan, wire, claimed_base(m, plan, base_fp))
        return data[: len(data) // 2], result  # truncated
    if kind == 1:
        return b"\x80\x04\x95" + bytes(range(256)) * 4, result  # pickle-looking garbage
    bad = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in wire.items()}
    return build_artifact(m, plan, bad, claimed_base(m, plan, base_fp)), result  # NaN value tables


def own_endpoint(m: Miner, mode: str) -> HostileS3:
    """This process's hostile S3 server (started once), committed on chain as the miner's bucket."""
    if "endpoint" not in _memory:
        srv = HostileS3(mode, trickle_s=2.0).start()
        acc = m.bucket.access
        neuron.publish_commitment(m.chain, m.hotkey, m.cfg.netuid, BucketAccess(
            endpoint=srv.endpoint, bucket=acc.bucket, access_key_id=acc.access_key_id,
            secret_access_key=acc.secret_access_key, region=acc.region, role=acc.role))
        logger.info(f"{mode} endpoint at {srv.endpoint} committed as this miner's bucket")
        _memory["endpoint"] = srv
    return _memory["endpoint"]


def tarpit(m: Miner, plan: WindowPlan, base_fp: str):
    """A signed noise update on its own endpoint, whose GETs trickle: stalls whoever waits for it."""
    srv = own_endpoint(m, "trickle")
    data, _ = noise(m, plan, base_fp)
    srv.put(m.bucket.access.bucket, layout.gradient_key(plan.window), data)
    return None, None


def backdater(m: Miner, plan: WindowPlan, base_fp: str):
    """After the deadline, an honest peer's update re-signed, on its own endpoint dated before the deadline."""
    srv = own_endpoint(m, "backdate")
    deadline = m.clock.wait_past_deadline(plan.window, m.stop)
    if deadline is None:
        return None, None
    key = layout.gradient_key(plan.window)
    m.peers.refresh()
    mg = m.chain.metagraph(m.cfg.netuid)
    for uid in miner_uids(mg, m.hp.min_validator_stake, declared_validators(m.peers)):
        read = m.peers.get(mg.hotkeys[uid], key, max_bytes=m.hp.max_upload_bytes) if uid != m.uid else None
        if read is None or not read.ok or read.value is None:
            continue
        try:
            art = read_tensor_artifact(read.value, kind="gradient", max_bytes=m.hp.max_upload_bytes)
        except ValueError:
            continue
        srv.forged_time = deadline - 5.0
        srv.put(m.bucket.access.bucket, key, build_artifact(m, plan, art.tensors, claimed_base(m, plan, base_fp)))
        logger.info(f"backdater: uid {uid}'s update re-signed after the deadline, dated {srv.forged_time:.0f}")
        break
    return None, None


STRATEGIES = {f.__name__: f for f in (idle, noise, copycat, replay, lazy, late, malformed, negator, tarpit,
                                      backdater)}
MODEL_LESS = {"idle", "noise", "copycat", "replay", "malformed", "tarpit", "backdater"}  # no model of their own
STRATEGIES.update(ATTACKS)  # poisoner, scaler, heldout, timed, stakejack (template/sim/attacks.py)
STRATEGIES.update(STORAGE_ATTACKS)  # vanisher, copymix, nearcopy, equivocator (template/sim/storage_attacks.py)
STRATEGIES.update(PROTOCOL_ATTACKS)  # stall, staleecho (template/sim/protocol_attacks.py)
MODEL_LESS |= MODEL_LESS_ATTACKS
# what `make localnet` launches when --adversaries is not given: one of each basic kind, light enough for
# two cores; `--adversaries all` launches one of every kind
DEFAULT_KINDS = ("idle", "noise", "copycat", "replay", "lazy", "late", "malformed", "negator")


def run_hostile(cfg: NeuronConfig, kind: str) -> None:
    """Run the miner loop with hostile strategy `kind` (a key of STRATEGIES)."""
    if kind not in STRATEGIES:
        raise ValueError(f"--mode must be one of {sorted(STRATEGIES)}, got {kind!r}")
    follow = FOLLOWS.get(kind) or (follow_records_only if kind in MODEL_LESS else follow_network)
    run(cfg, strategy=STRATEGIES[kind], follow=follow)


__all__ = ["STRATEGIES", "run_hostile", "TrainResult"]
