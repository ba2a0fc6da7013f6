"""The validator's share of the outer step (DESIGN sections 4.1 and 7): lead it or follow the lead.

The lead takes the guarded step over the window's gather set, signs the record and mirrors its inputs,
publishes the peer list two windows ahead and, every few windows, a checkpoint. Every other validator
replays the lead's record, checked against what it recomputed itself (`trust.record_check`), and publishes
its signed verdict; it also judges each checkpoint the lead publishes of a window whose theta it verified
(`check_lead_checkpoints`: the signed manifest's fingerprint against its own, from a header read), so a lead
that signs forged weights is rejected like one that signs a wrong record. `template/node/validator.py` judges
the window; this module moves theta.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import torch
from loguru import logger

from gauntlet.aggregate import bootstrap_peers, select_peers
from gauntlet.evaluate import mean_loss
from storage.peers import fetch_peer_list, fetch_record
from storage.s3 import S3Error
from template.node import trust
from template.node.admission import payload_sha
from template.node.guard import GuardBatch, guard_reader
from template.node.neuron import declared_validators, find_lead, lead_now, miner_uids, validator_stake
from template.node.sync import (
    RecordAdmission,
    SyncStatus,
    catch_up,
    log_outer_step,
    publish_checkpoint,
    restore_from_lead,
)
from template.protocol.data import loss_curve_ids
from template.protocol.metagraph import Metagraph
from template.protocol.outer_step import StreamedUpdates
from template.protocol.reads import ReadStatus
from template.protocol.records import AggregationRecord, RecordEntry
from template.protocol.uploads import Upload
from template.protocol.verdicts import CheckpointVerdict, Verdict

if TYPE_CHECKING:
    from template.node.validator import JudgedWindow, Validator


def judged_miners(v: Validator, mg: Metagraph) -> list[int]:
    """The miner uids this validator fetches, judges and may put on a peer list (never itself)."""
    return [uid for uid in miner_uids(mg, v.hp.min_validator_stake, declared_validators(v.peers)) if uid != v.uid]


def apply_outer_step(v: Validator, j: JudgedWindow, successes: list[int]) -> tuple[str, dict[str, Any]]:
    """Lead: the step, the signed record and its mirrors, the peer list two windows ahead, the checkpoint.
    Others follow the lead's record."""
    lead = find_lead(v.peers, j.mg, v.hp.min_validator_stake, j.window)
    if lead != v.uid:
        status = follow_lead(v, j.window, j.mg, lead, list(j.gather[0]), j.gather[1])
        # every validator keeps its peer list two windows ahead in place: when the lead is passed over, its
        # successor's list is already there and the window after a hand-over still aggregates
        keep_probation(v, j, successes, followed_drops(v, j.window, j.mg, lead))
        return status, {}
    chosen, updates = j.gather
    stats = guarded_lead_step(v, j.window, chosen, updates)
    v.gm.mark_verified()
    dropped = tuple(chosen[i] for i in stats["dropped"])
    publish_record(v, j, refused=stats["refused"], dropped=dropped)
    keep_probation(v, j, successes, dropped)
    maybe_publish_checkpoint(v)
    return f"lead:{len(chosen)}", stats


def keep_probation(v: Validator, j: JudgedWindow, successes: list[int], dropped: Collection[int]) -> None:
    """A member whose own step did not lower the guard loss is off this validator's peer lists until it has
    succeeded several windows in a row (sticky: one useful window does not put a cancelling sybil back); then
    the peer list two windows ahead."""
    v.state.probation = v.state.probation.after_window([u for u in successes if u not in set(dropped)], dropped)
    publish_next_peer_list(v, j.window, j.mg, v.state.probation.eligible(successes))


def followed_drops(v: Validator, window: int, mg: Metagraph, lead: int | None) -> tuple[int, ...]:
    """The uids the lead's record of `window` dropped, when that record is the one this validator applied (its
    theta_{w+1} is the record's, verified); none otherwise (no lead, no record, a rejected record)."""
    if lead is None or v.gm.window != window + 1:
        return ()
    read = fetch_record(v.peers, mg.hotkeys[lead], window)
    if not read.ok or read.value is None or v.gm.verified.get(window + 1) != read.value.next_fingerprint:
        return ()
    return read.value.dropped


def follow_lead(v: Validator, window: int, mg: Metagraph, lead: int | None, chosen: list[int],
                updates: StreamedUpdates) -> str:
    """Not the lead: replay the lead's record of `window` (waiting for it a while), verified against our own
    gather set `chosen` and guard, and publish our verdict of it; a rejected record: our own guarded step over
    `updates` (the honest step every honest node computes, as miners do); no lead: theta stays."""
    if lead is None:
        v.gm.window = window + 1
        return SyncStatus.NO_LEAD
    status = catch_up(v.gm, window + 1, v.peers, mg.hotkeys[lead], v.device, wait_last_s=v.clock.window_s() * 0.6,
                      should_stop=v.stop.is_set, check=validator_check(v, mg, {window: chosen}, (window, updates)))
    check_lead_checkpoints(v, mg.hotkeys[lead])
    return status


# windows back a follower looks for a checkpoint of a window it verified: the lead publishes the checkpoint of
# w + 1 after its record of w, so it may not be there yet when the record is; looked for again the next two
# windows, a forged checkpoint is rejected within two windows of its publication
CHECKPOINT_CHECK_WINDOWS = 2


def check_lead_checkpoints(v: Validator, lead_hotkey: str) -> list[CheckpointVerdict]:
    """Judge the lead's checkpoints of the recent windows whose theta this validator verified (`gm.verified`), each
    once, from its signed manifest alone (a header read): attest one naming the verified fingerprint, reject
    (signed, `put_checkpoint_verdict`) one naming another; returns the verdicts published. A checkpoint not
    there yet is looked for again next window; a hostile header is logged and judged no further."""
    if lead_hotkey == v.hotkey.ss58_address:
        return []
    checked, out = v.state.checked_checkpoints, []
    recent = v.gm.window - CHECKPOINT_CHECK_WINDOWS
    for key in [k for k in checked if k[1] < recent]:
        checked.discard(key)
    for w, fingerprint in sorted(v.gm.verified.items()):
        if w <= 0 or w < recent or w % v.hp.checkpoint_interval or (lead_hotkey, w) in checked:
            continue
        read = trust.check_checkpoint(v.peers, lead_hotkey, w, fingerprint, v.gm.verified_clip.get(w))
        if read.status in (ReadStatus.NOT_FOUND, ReadStatus.TIMEOUT, ReadStatus.ERROR):
            continue  # not published yet, or the read failed: again next window
        checked.add((lead_hotkey, w))
        if not read.ok or read.value is None:
            logger.bind(window=w).warning(f"the lead's checkpoint of window {w} cannot be judged: {read.describe()}")
            continue
        verdict = read.value
        if not verdict.valid:
            logger.bind(window=w).warning(f"rejecting the lead's checkpoint: {verdict.reason}")
        if publish_verdict(v, verdict):
            out.append(verdict)
    return out


def publish_verdict(v: Validator, verdict: Verdict | CheckpointVerdict) -> bool:
    """Sign and upload one of our verdicts (a record's or a checkpoint's, each under its own key); False, logged,
    when storage refuses: a verdict is advice to others, our own theta is already decided."""
    try:
        if isinstance(verdict, CheckpointVerdict):
            v.bucket.put_checkpoint_verdict(verdict, v.hotkey)
        else:
            v.bucket.put_verdict(verdict, v.hotkey)
    except S3Error as e:
        logger.bind(window=verdict.window).warning(f"cannot publish our verdict: {e}")
        return False
    return True


def validator_check(v: Validator, mg: Metagraph, admitted: dict[int, list[int]] | None = None,
                    own: tuple[int, StreamedUpdates] | None = None) -> RecordAdmission:
    """The checks this validator runs on the lead's records (`trust.record_check`): `admitted` holds the gather sets
    it computed itself (window -> uids), `own` the window it gathered and the updates, for its own step when the
    lead's record is rejected; its verdicts go to its own bucket, signed."""
    stake = validator_stake(mg, v.hp.min_validator_stake, declared_validators(v.peers))
    known = admitted or {}

    def own_step(window: int) -> bool:
        if own is None or own[0] != window or v.gm.window != window:
            return False
        logger.bind(window=window).warning("the lead's record was rejected: taking our own step of the window")
        guarded_lead_step(v, window, known.get(window, []), own[1])
        return True

    def on_verdict(verdict: Verdict | CheckpointVerdict) -> None:
        publish_verdict(v, verdict)

    return trust.record_check(v.num_train, v.clock.deadline, v.gm, v.peers, stake, admitted_of=known.get,
                              guard_batch=node_guard(v), on_verdict=on_verdict, own_step=own_step,
                              on_checkpoint_verdict=on_verdict)


def node_guard(v: Validator) -> GuardBatch:
    """The window's guard batch as this validator reads it (template/node/guard.py)."""
    return guard_reader(v.clock, v.dataset, v.hp, v.num_train, v.stop)


def guarded_lead_step(v: Validator, window: int, chosen: list[int], updates: StreamedUpdates) -> dict[str, Any]:
    """The outer step over the gather set `chosen`, guarded on the window's drawn guard batch (waited for: the
    guard block comes just after the reveal deadline): members whose own step does not lower the guard loss
    dropped, the step refused when it raises it too far; theta goes to window + 1 either way (a refused step is
    recorded as such). A guard block whose hash cannot be read: the plain step (nothing dropped or refused),
    logged; verifying nodes that can read it check the record against their own guard."""
    batch = node_guard(v)(window, chosen) if len(updates) else None
    if batch is None and len(updates):
        logger.bind(window=window).error("no guard batch for the outer step: taken unguarded")
    stats = v.gm.guarded_step(updates, v.hp.outer_lr, batch)
    log_outer_step(window, stats)
    if stats["refused"]:
        logger.bind(window=window).warning(
            f"outer step refused: held-out loss {stats['loss_before']:.4f} -> {stats['loss_after']:.4f} "
            f"(over +{v.hp.max_loss_rise:.1%}); theta_{{w+1}} = theta_w, the record says so")
    v.gm.window = window + 1
    return stats


def publish_record(v: Validator, j: JudgedWindow, *, refused: bool, dropped: tuple[int, ...] = ()) -> None:
    """Sign and publish the window's aggregation record, each gathered update mirrored into our bucket."""
    by_uid = {u.uid: u for u in j.uploads}
    record = AggregationRecord(
        window=j.window, base_fingerprint=j.aw.base_fingerprint, next_fingerprint=v.gm.fingerprint(),
        outer_lr=v.hp.outer_lr, refused=refused, dropped=dropped,
        included=tuple(RecordEntry(uid=u, hotkey=j.mg.hotkeys[u], key=mirror_input(v, j.window, by_uid[u]),
                                   sha256=payload_sha(by_uid[u].data)) for u in j.gather[0]))
    sign_record(v, j.window, record, j.mg, j.uploads)
    v.gm.lineage = v.gm.lineage.after_record(record)  # the next checkpoint lists it


def sign_record(v: Validator, window: int, record: AggregationRecord, mg: Metagraph, uploads: list[Upload]) -> None:
    """Lead: sign and upload the window's record, and its own verdict attesting it (the stake its word carries for
    a late joiner's checkpoint, `gauntlet.verify.checkpoint_accepted`). `mg` and `uploads` are what a rogue lead
    (template/sim/rogue_validator.py) needs to forge one; the honest lead signs `record` as it is."""
    v.bucket.put_record(window, record, v.hotkey)
    v.bucket.put_verdict(Verdict(window=window, lead_hotkey=v.hotkey.ss58_address,
                                 next_fingerprint=record.next_fingerprint, valid=True), v.hotkey)


def publish_next_peer_list(v: Validator, window: int, mg: Metagraph, successes: list[int]) -> None:
    """The peer list of window + 2: the best-rated judged miners whose update of this window counted."""
    miners = set(judged_miners(v, mg))
    v.bucket.put_peer_list(window + 2, select_peers(v.state.ratings.ordinals(), num_peers=v.hp.num_peers,
                                                    eligible=[u for u in successes if u in miners]), v.hotkey)


def maybe_publish_checkpoint(v: Validator) -> None:
    if v.gm.window % v.hp.checkpoint_interval == 0:
        nbytes = publish_checkpoint(v.gm, v.bucket, v.hotkey)
        logger.info(f"published checkpoint of window {v.gm.window} ({nbytes} bytes)")


def mirror_input(v: Validator, window: int, upload: Upload) -> str:
    """Lead: copy an update it aggregates into its own bucket, content-addressed (`layout.input_key`), and
    return that key for the record, so the record's inputs stay fetchable whatever the miner does later."""
    assert upload.data is not None, "an upload in the gather set was admitted, so it has its bytes"
    return v.bucket.put_input(window, upload.data)


def ensure_peer_lists(v: Validator, windows: list[int], mg: Metagraph) -> None:
    """Open windows (deadline ahead) without a peer list of ours get a bootstrap one from the miners.

    Only windows still open: a list must be in place before miners gather, or nodes disagree. Every validator,
    not only the lead: the list in force is the lead's, and a validator that becomes the lead (the one before
    it passed over) must already have its lists of the next windows in place, or those windows aggregate nothing.
    """
    for w in windows:
        if not fetch_peer_list(v.peers, v.hotkey.ss58_address, w).ok:
            peer_uids = bootstrap_peers({u: mg.hotkeys[u] for u in judged_miners(v, mg)}, num_peers=v.hp.num_peers,
                                        seed=v.gm.fingerprint())
            v.bucket.put_peer_list(w, peer_uids, v.hotkey)
            logger.info(f"published bootstrap peer list for window {w}: {peer_uids}")


def heldout_batch(v: Validator) -> torch.Tensor:
    """The run's fixed loss-curve samples (public held-out tail): the reported `eval/heldout_loss` only, never
    used for scoring or for the step guard (that is drawn per window, template/node/guard.py)."""
    return v.dataset.batch(loss_curve_ids(v.num_train, v.num_samples))


def heldout_loss(v: Validator) -> float:
    return mean_loss(v.gm.model, heldout_batch(v).to(v.device))


def restore_model(v: Validator, window: int) -> None:
    """Bring theta to `window`: the lead from its own checkpoints and records, others from the lead's."""
    mg, lead = lead_now(v, v.hp.min_validator_stake, window)
    if lead is None:
        v.gm.window = window
        return
    status = restore_from_lead(v.gm, window, v.peers, lead, v.device, should_stop=v.stop.is_set,
                               check=validator_check(v, mg))
    logger.info(f"model at window {v.gm.window} ({status})")

