"""Hostile kinds of issue 14 that attack peers' storage and its readers (`--adversaries vanisher,copymix,nearcopy,equivocator`).

vanisher     uploads honestly, then, once the lead's record of the window is out, deletes its object (even
             windows) or re-signs another update in its place (odd windows): replay of a record that named the
             miner's own key would fail; records now name the lead's mirror (docs/protocol.md)
copymix      during the window reads its peers' uploads (read keys are public), averages what it can decode,
             adds a quarter of its own update, scales by 1.5, re-encodes and signs it as its own; honest miners'
             sealed uploads give it nothing to read before the deadline (it then uploads its own update only)
nearcopy     during window w, once window w-1's keys are revealed, reads every other miner's update of w-1, takes
             their mean, drops a fifth of its values, scales it by 1.3, adds a quarter of its own cheap update and
             signs the result as its w work: caught by the near-copy check (gauntlet/nearcopy.py)
equivocator  commits its own S3 endpoint (template/sim/hostile_s3.py on 127.0.0.1) that serves two different
             signed updates to alternate readers; refused as an unapproved endpoint, and a record's sha256 plus
             the lead's mirror keep replay in step if it were not

Each is an UploadStrategy (and, for the vanisher, a FollowStep) for template.node.miner.run.
"""

from __future__ import annotations

import time

import torch
from loguru import logger

from storage.credentials import BucketAccess
from storage.peers import fetch_record, fetch_uploads
from template.node import neuron
from template.node.miner import (
    Miner,
    TrainResult,
    WindowPlan,
    build_artifact,
    encode_update,
    follow_network,
    honest_upload,
    train_inner_steps,
)
from template.node.neuron import declared_validators, find_lead, miner_uids
from template.protocol import layout
from template.protocol.artifacts import ArtifactError, read_tensor_artifact
from template.protocol.sparseloco import CodecError, decompress
from template.sim.hostile_s3 import HostileS3

COPYMIX_OWN_SHARE = 0.25  # what its own (cheap) training adds to the mix
COPYMIX_SCALE = 1.5
COPYMIX_STEP_DIVISOR = 4  # it trains a quarter of the inner steps an honest miner does
NEARCOPY_DROP = 0.2  # share of the copied values it zeroes
NEARCOPY_SCALE = 1.3
_servers: dict[str, HostileS3] = {}


def vanisher_follow(m: Miner, window: int) -> str:
    """The honest follow, then: once the lead's record of `window` is out, delete or re-sign our upload of it."""
    status = follow_network(m, window)
    mg = m.chain.metagraph(m.cfg.netuid)
    lead = find_lead(m.peers, mg, m.hp.min_validator_stake, window)
    until = time.time() + m.clock.window_s()
    while lead is not None and not m.stop.is_set() and time.time() < until:
        if fetch_record(m.peers, mg.hotkeys[lead], window).ok:
            break
        time.sleep(1.0)
    key = layout.gradient_key(window)
    if window % 2 == 0:
        m.bucket.client.delete(m.bucket.access.bucket, key)
        logger.info(f"vanisher: deleted {key} after the lead's record")
    else:
        gen = torch.Generator().manual_seed(window)
        other = encode_update(m, {n: torch.randn(s, generator=gen) * 1e-3 for n, s in m.gm.shapes().items()})
        plan = WindowPlan(window=window, uid=m.uid, sample_ids=[], deadline_block=m.clock.last_block(window))
        m.bucket.put_update(window, build_artifact(m, plan, other, m.gm.fingerprint()))
        logger.info(f"vanisher: re-signed another update as {key} after the lead's record")
    return status


def readable_peer_updates(m: Miner, window: int) -> dict[int, dict[str, torch.Tensor]]:
    """One pass over the other miners' uploads of `window`: uid -> decoded update, for those a reader can decode
    now (a sealed upload is opened once its author revealed the key, as any validator does; before that it is
    not among them)."""
    m.peers.refresh()
    mg = m.chain.metagraph(m.cfg.netuid)
    hotkeys = {uid: mg.hotkeys[uid] for uid in miner_uids(mg, m.hp.min_validator_stake, declared_validators(m.peers))
               if uid != m.uid}
    found: dict[int, dict[str, torch.Tensor]] = {}
    for up in fetch_uploads(m.peers, hotkeys, window, m.hp.max_upload_bytes):
        if up.data is None or up.rejected:
            continue
        try:
            art = read_tensor_artifact(up.data, kind="gradient", max_bytes=m.hp.max_upload_bytes)
            found[up.uid] = decompress(art.tensors, m.gm.shapes(), m.gm.codec)
        except (ArtifactError, CodecError):
            continue  # still sealed, or junk
    return found


def mix(copies: list[dict[str, torch.Tensor]], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The copymix update: (mean of the copies + COPYMIX_OWN_SHARE x own) x COPYMIX_SCALE."""
    return {n: (torch.stack([c[n] for c in copies]).mean(0) + COPYMIX_OWN_SHARE * own[n]) * COPYMIX_SCALE
            for n in own}


def cheap_train(m: Miner, plan: WindowPlan) -> TrainResult:
    """A quarter of the honest inner steps: the copier's own work is a garnish on what it copies
    (the manifest still claims the full count, as the attacker would)."""
    return train_inner_steps(m, plan, num_steps=max(1, m.hp.inner_steps // COPYMIX_STEP_DIVISOR))


def copymix(m: Miner, plan: WindowPlan, base_fp: str):
    """Poll the peers' uploads until half the window is gone, then mix whatever was readable with its own
    cheap update (a quarter of the compute); with nothing readable it uploads the cheap update alone."""
    result = cheap_train(m, plan)
    until = time.time() + 0.5 * m.clock.window_s()
    copies: dict[int, dict[str, torch.Tensor]] = {}
    while not m.stop.is_set() and m.chain.block() <= plan.deadline_block and time.time() < until:
        copies = readable_peer_updates(m, plan.window)
        if copies:
            break
        time.sleep(1.0)
    if not copies:
        logger.info("copymix: no peer update readable inside the window; uploading its own")
        return build_artifact(m, plan, encode_update(m, result.delta), base_fp), result
    logger.info(f"copymix: mixing the updates of uids {sorted(copies)}")
    wire = encode_update(m, mix(list(copies.values()), result.delta))
    return build_artifact(m, plan, wire, base_fp), result


def tweak(copies: list[dict[str, torch.Tensor]], own: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The nearcopy update: the mean of the copies with NEARCOPY_DROP of its values zeroed (a fresh random
    choice each window), scaled by NEARCOPY_SCALE, plus COPYMIX_OWN_SHARE x its own update."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n in own:
        mean = torch.stack([c[n] for c in copies]).mean(0)
        keep = (torch.rand(mean.shape, generator=gen) >= NEARCOPY_DROP).to(mean.dtype)
        out[n] = mean * keep * NEARCOPY_SCALE + COPYMIX_OWN_SHARE * own[n]
    return out


def nearcopy(m: Miner, plan: WindowPlan, base_fp: str):
    """Train a quarter of the steps; poll for the previous window's revealed updates until half this window is
    gone; upload the tweaked mean of whatever was readable (its own cheap update when nothing was)."""
    result = cheap_train(m, plan)
    until = time.time() + 0.5 * m.clock.window_s()
    copies: dict[int, dict[str, torch.Tensor]] = {}
    while plan.window > 0 and not m.stop.is_set() and m.chain.block() <= plan.deadline_block and time.time() < until:
        copies = readable_peer_updates(m, plan.window - 1)
        if copies:
            break
        time.sleep(1.0)
    if not copies:
        logger.info(f"nearcopy: nothing of window {plan.window - 1} readable; uploading its own cheap update")
        return build_artifact(m, plan, encode_update(m, result.delta), base_fp), result
    logger.info(f"nearcopy: tweaking the window-{plan.window - 1} updates of uids {sorted(copies)}")
    wire = encode_update(m, tweak(list(copies.values()), result.delta, seed=plan.window))
    return build_artifact(m, plan, wire, base_fp), result


def equivocator(m: Miner, plan: WindowPlan, base_fp: str):
    """Its own endpoint, serving its honest update and a noise update to alternate readers."""
    if "equivocator" not in _servers:
        srv = HostileS3("normal").start()
        acc = m.bucket.access
        neuron.publish_commitment(m.chain, m.hotkey, m.cfg.netuid, BucketAccess(
            endpoint=srv.endpoint, bucket=acc.bucket, access_key_id=acc.access_key_id,
            secret_access_key=acc.secret_access_key, region=acc.region, role=acc.role))
        _servers["equivocator"] = srv
    srv = _servers["equivocator"]
    honest, result = honest_upload(m, plan, base_fp)
    gen = torch.Generator().manual_seed(plan.window)
    noise = encode_update(m, {n: torch.randn(s, generator=gen) * 1e-3 for n, s in m.gm.shapes().items()})
    assert honest is not None
    srv.put_variants(m.bucket.access.bucket, layout.gradient_key(plan.window),
                     [honest, build_artifact(m, plan, noise, base_fp)])
    return None, result


STORAGE_ATTACKS = {"vanisher": honest_upload, "copymix": copymix, "nearcopy": nearcopy, "equivocator": equivocator}
FOLLOWS = {"vanisher": vanisher_follow}
