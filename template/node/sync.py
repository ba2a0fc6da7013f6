"""Keeping theta_w in step with the network (DESIGN sections 4.1 and 7).

The global model moves only through signed artifacts of the lead validator: a checkpoint
fixes theta_W, and the aggregation record of each later window names the updates whose outer
step gives theta_{w+1}. A window with no record leaves the model as it was. Replaying is
deterministic: updates are decoded and applied on the CPU in fp32 in the record's order, so
every node that replays the same records holds bit-identical weights, whatever its device.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from bittensor_wallet import Keypair
from loguru import logger

from gauntlet.aggregate import admit_for_gather, step_refused
from gauntlet.checks import Admission
from gauntlet.evaluate import mean_loss
from gauntlet.progress import no_gain_members
from gauntlet.verify import dropped_problem, entry_set_problem, refused_problem, settings_problem
from storage.peers import (
    OwnBucket,
    PeerBuckets,
    fetch_checkpoint,
    fetch_peer_list,
    fetch_record,
    fetch_record_inputs,
    fetch_record_updates,
    newest_checkpoint,
)
from template.node.guard import GuardBatch
from template.protocol.artifacts import tensors_digest, write_tensor_artifact
from template.protocol.checkpoint import (
    ArtifactRef,
    Lineage,
    checkpoint_fields,
    clip_state_digest,
    clip_state_fields,
    parse_clip_history,
    parse_clip_ref,
)
from template.protocol.config import HParams
from template.protocol.model import build_model, model_fingerprint
from template.protocol.outer_step import (
    ClipHistory,
    StreamedUpdates,
    history_after,
    l2_norm,
    outer_step,
    outer_step_streamed,
)
from template.protocol.reads import Read, ReadStatus
from template.protocol.records import AggregationRecord
from template.protocol.sparseloco import CodecParams
from template.protocol.uploads import Upload
from template.protocol.verdicts import Verdict

VERIFIED_KEPT = 64  # windows of verified fingerprints a node remembers (checkpoints come every few windows)


@dataclass
class GlobalModel:
    """theta_window: the network's model at the start of `window`, as this node holds it."""

    model: torch.nn.Module
    window: int
    hparams: HParams
    lineage: Lineage = field(default_factory=Lineage)  # parent checkpoint and records since (theta_0: none)
    clip_ref: dict[str, float] | None = None  # clip limits of the last outer step: the norm history (none yet)
    # per tensor, the limits of the last CLIP_HISTORY_LEN applied steps: the clip floor is taken over it. Replaced,
    # never mutated, so a saved reference restores it
    clip_history: ClipHistory = field(default_factory=dict)
    # window -> fingerprint of theta_window as this node reached it by replaying verified records (or its own
    # gather): a checkpoint of that window is accepted when it matches (`gauntlet.verify.checkpoint_accepted`)
    verified: dict[int, str] = field(default_factory=dict)
    # window -> digest of the clip state (`clip_ref`, `clip_history`) at that verified theta: the lead's checkpoint
    # of the window must carry the same (`checkpoint.clip_state_digest`), or a joiner loading it steps differently
    verified_clip: dict[int, str] = field(default_factory=dict)
    # leads whose record this node rejected: while one of them leads, a record built on its rejected theta is
    # no reason to resync onto its checkpoint (the window changes nothing here instead)
    distrusted: set[str] = field(default_factory=set)
    # window -> (guard loss before, after) of this node's own guarded step of it: a lead's refusal is checked
    # against it (`gauntlet.verify.refused_problem`)
    guard_losses: dict[int, tuple[float, float]] = field(default_factory=dict)
    version: int = 0  # bumped on every change of theta made through this object (the fingerprint cache's key)
    _fingerprint: tuple[object, str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def initial(cls, hparams: HParams, device: torch.device) -> GlobalModel:
        """theta_0: deterministic from the run's model seed, identical on every node."""
        model = build_model(hparams.model_preset, hparams.vocab_size, hparams.seq_len, hparams.model_seed)
        return cls(model=model.to(device), window=0, hparams=hparams)

    @property
    def codec(self) -> CodecParams:
        return CodecParams.from_hparams(self.hparams)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(p.shape) for n, p in self.model.named_parameters()}

    def fingerprint(self) -> str:
        """`model_fingerprint` of theta, hashed once per model state: cached under `version` and torch's own
        in-place counters of the parameters (so a change made around this object is seen too)."""
        key = (self.version, tuple((p._version, p.data_ptr()) for p in self.model.parameters()))
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, model_fingerprint(self.model))
        return self._fingerprint[1]

    def checkpoint_max_bytes(self) -> int:
        return sum(p.numel() for p in self.model.parameters()) * 4 + (4 << 20)

    def apply_updates(self, updates: list[dict[str, torch.Tensor]] | StreamedUpdates, lr: float) -> dict[str, Any]:
        """Outer step on CPU fp32 (bit-exact across devices), then back to the model's device.

        The clip limits are held within `clip_norm_growth` of the previous step's (`clip_ref`) and at least
        the clip floor of `clip_history`; they become the next step's reference and join the history.
        `StreamedUpdates` are applied one at a time (`outer_step_streamed`: the same bits). Returns the outer
        step's statistics (used, skipped, skipped_tensors, clip_norms)."""
        params = dict(self.model.named_parameters())
        cpu = {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in params.items()}
        stats: dict[str, Any] = {"used": 0, "skipped": 0, "clip_norms": {}, "skipped_tensors": []}
        growth = self.hparams.clip_norm_growth
        if isinstance(updates, StreamedUpdates):
            if len(updates):
                stats = outer_step_streamed(cpu, updates.norms, updates.load, lr, clip_ref=self.clip_ref,
                                            norm_growth=growth, clip_history=self.clip_history)
        elif updates:
            stats = outer_step(cpu, updates, lr, clip_ref=self.clip_ref, norm_growth=growth,
                               clip_history=self.clip_history)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(cpu[n])
        self.version += 1
        if stats["used"]:
            self.clip_ref = dict(stats["clip_norms"])
            self.clip_history = history_after(self.clip_history, stats["clip_norms"])
        return stats

    def own_gains(self, updates: list[dict[str, torch.Tensor]] | StreamedUpdates, lr: float,
                  batch: torch.Tensor, before: float) -> list[float]:
        """Each update's own guard gain: the loss on `batch` before (`before`) minus after its step alone at
        `lr` (clipped against the norm history as any step); theta and the norm history are restored bit for
        bit after each (issue 27, `gauntlet.progress.no_gain_members`)."""
        saved = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        saved_ref, saved_history, window, gains = self.clip_ref, self.clip_history, self.window, []
        for i in range(len(updates)):
            stats = self.apply_updates(subset(updates, [i]), lr)
            gains.append(before - mean_loss(self.model, batch) if stats["used"] else 0.0)
            self.load_state(saved, window)
            self.clip_ref, self.clip_history = saved_ref, saved_history
        return gains

    def guarded_step(self, updates: list[dict[str, torch.Tensor]] | StreamedUpdates, lr: float,
                     heldout: torch.Tensor | None, *, drop_no_gain: bool = True) -> dict[str, Any]:
        """`apply_updates` over the members whose own step lowers the loss on the guard batch `heldout` (the
        others are "dropped": `gauntlet.progress.no_gain_members`; `drop_no_gain` False keeps all), refused when
        it raises that loss by more than `max_loss_rise`: theta and the norm history are then restored bit for
        bit. `heldout` None (the guard block's hash could not be read, template/node/guard.py): the plain step,
        nothing dropped or refused, and no guard losses remembered.

        Adds "refused", "loss_before", "loss_after" and "dropped" (indices into `updates`) to the statistics.
        The lead's verdict is the one in the record; miners run the same guard so that they rarely need the
        record to correct them."""
        if heldout is None:
            nan = float("nan")
            return {**self.apply_updates(updates, lr), "refused": False, "loss_before": nan, "loss_after": nan,
                    "dropped": []}
        saved = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        saved_ref, saved_history = self.clip_ref, self.clip_history
        batch = heldout.to(next(self.model.parameters()).device)
        before = mean_loss(self.model, batch)
        gains = self.own_gains(updates, lr, batch, before) if drop_no_gain and len(updates) else []
        dropped = no_gain_members(gains)
        kept = [i for i in range(len(updates)) if i not in set(dropped)]
        stats = self.apply_updates(subset(updates, kept), lr)
        after = mean_loss(self.model, batch) if stats["used"] else before
        refused = bool(stats["used"]) and step_refused(before, after, max_rise=self.hparams.max_loss_rise)
        if refused:
            self.load_state(saved, self.window)
            self.clip_ref, self.clip_history = saved_ref, saved_history
        if stats["used"]:
            self.guard_losses[self.window] = (before, after)
            for w in sorted(self.guard_losses)[:-VERIFIED_KEPT]:
                del self.guard_losses[w]
        return {**stats, "refused": refused, "loss_before": before, "loss_after": after, "dropped": dropped}

    def mark_verified(self) -> None:
        """Remember theta_window's fingerprint, and the digest of its clip state, as reached by verified steps (the
        newest VERIFIED_KEPT windows)."""
        self.verified[self.window] = self.fingerprint()
        fields = clip_state_fields(self.clip_ref, self.clip_history)
        self.verified_clip[self.window] = clip_state_digest(fields["clip_ref"], fields["clip_history"])
        for w in sorted(self.verified)[:-VERIFIED_KEPT]:
            del self.verified[w]
        for w in sorted(self.verified_clip)[:-VERIFIED_KEPT]:
            del self.verified_clip[w]

    def load_state(self, tensors: dict[str, torch.Tensor], window: int) -> None:
        params = dict(self.model.named_parameters())
        if set(tensors) != set(params):
            raise ValueError(f"checkpoint tensors {sorted(set(tensors) ^ set(params))[:4]} do not match the model")
        with torch.no_grad():
            for n, p in params.items():
                if tuple(tensors[n].shape) != tuple(p.shape):
                    raise ValueError(f"checkpoint tensor {n} has shape {tuple(tensors[n].shape)}")
                p.copy_(tensors[n])
        self.version += 1
        self.window = window


def subset(updates: list[dict[str, torch.Tensor]] | StreamedUpdates, idx: Sequence[int]
           ) -> list[dict[str, torch.Tensor]] | StreamedUpdates:
    """The members `idx` (ascending) of a gather set, in the same form."""
    if isinstance(updates, StreamedUpdates):
        picked = list(idx)
        return StreamedUpdates(norms=[updates.norms[i] for i in picked], load=lambda k: updates.load(picked[k]))
    return [updates[i] for i in idx]


def log_outer_step(window: int, stats: dict[str, Any]) -> None:
    """One line per outer step: how many updates were used and skipped, and tensors left out."""
    skipped_tensors = stats.get("skipped_tensors") or []
    line = f"outer step: {stats.get('used', 0)} used, {stats.get('skipped', 0)} skipped"
    if skipped_tensors:
        line += f", tensors skipped: {', '.join(skipped_tensors[:8])}"
    if stats.get("dropped"):
        line += f", {len(stats['dropped'])} dropped (their own step did not lower the guard loss)"
    if stats.get("refused"):
        line += f", REFUSED (held-out loss {stats['loss_before']:.4f} -> {stats['loss_after']:.4f})"
    warn = stats.get("skipped") or skipped_tensors or stats.get("refused")
    logger.bind(window=window).log("WARNING" if warn else "DEBUG", line)


def outer_step_metrics(stats: dict[str, Any]) -> dict[str, Any]:
    """The outer step's statistics as metrics-row keys."""
    return {"outer/used": stats.get("used", 0), "outer/skipped": stats.get("skipped", 0),
            "outer/skipped_tensors": len(stats.get("skipped_tensors") or []),
            "outer/refused": bool(stats.get("refused", False))}


class SyncStatus(StrEnum):
    """Where a node's theta stands after following the network for a window."""

    IN_SYNC = "in_sync"  # theta_{w+1} as the lead's record says (or as our own gather computed it)
    RESYNCED = "resynced"  # a record disagreed or could not be replayed: reloaded from a checkpoint
    DIVERGED = "diverged"  # three reloads did not get us there; the next window tries again
    NO_LEAD = "no_lead"  # no validator leads: nothing is aggregated, theta stays
    STOPPED = "stopped"  # asked to stop before the window was followed


class ApplyOutcome(StrEnum):
    """Why replaying one record did or did not give the record's theta_{w+1}."""

    OK = "ok"
    BASE_MISMATCH = "base_mismatch"  # our theta_w is not the record's base
    MISSING_UPDATE = "missing_update"  # a listed update cannot be fetched or decoded
    NEXT_MISMATCH = "next_mismatch"  # replayed, but the result is not the record's next fingerprint
    WRONG_WINDOW = "wrong_window"  # the record's body names another window than theta's
    INADMISSIBLE = "inadmissible"  # an entry fails deterministic admission: the record is rejected
    INVALID = "invalid"  # the record disagrees with what this node recomputes (gauntlet/verify.py): rejected


@dataclass(frozen=True)
class RecordAdmission:
    """What a node needs to re-run the deterministic admission (gauntlet/checks.py) on a record's entries:
    the training range (data receipts) and window -> upload deadline (chain timestamp + grace)."""

    num_train: int
    deadline_of: Callable[[int], float]
    # issue 27: with `verify`, a record is also checked against what the node recomputes (`gauntlet/verify.py`):
    # outer_lr, the entry set against the lead's signed peer list (and `admitted_of(window)`, the peers this
    # node admitted itself, None when it did not gather that window), and `dropped` and `refused` against the
    # node's own guard on `guard_batch(window, entry uids)` (template/node/guard.py: drawn from the window's
    # guard block; None when its hash cannot be read: those two checks are skipped, the others still run);
    # a checkpoint is loaded only when `accept_checkpoint(window, fingerprint)`.
    # `on_verdict` publishes the node's signed verdict of each record it checked (validators).
    verify: bool = False
    admitted_of: Callable[[int], Collection[int] | None] = lambda _w: None
    guard_batch: GuardBatch | None = None
    accept_checkpoint: Callable[[int, str], bool] | None = None
    on_verdict: Callable[[Verdict], None] | None = None
    # when the lead's record of a window is rejected: the node's own step of that window (its own gather set,
    # the hparams' outer_lr, its own guard: what every honest node computes), True when it took it (theta and
    # window advanced); None or False: the window changes nothing
    own_step: Callable[[int], bool] | None = None
    # a checkpoint `accept_checkpoint` refused: (window, its signed manifest), e.g. for a validator's rejection
    on_checkpoint_refused: Callable[[int, dict[str, Any]], None] | None = None


def admit_record_entries(gm: GlobalModel, record: AggregationRecord, raws: list, check: RecordAdmission
                         ) -> tuple[StreamedUpdates, str | None]:
    """(the updates, None) when every entry passes the gather's deterministic admission (file sha256,
    deadline, signature, fields and receipt, codec, finite values, base = the record's base), else
    (no updates, why). So a faulty lead cannot slip a late, unsigned, stale or malformed update into theta.

    The updates come as `StreamedUpdates`: each entry's norms from its admission here, its tensors decoded
    again when the outer step adds it, so a node replaying a record holds one decoded update at a time.
    `raws` holds (read, mirrored) per entry (`storage.peers.fetch_record_inputs`); a bare read counts as
    not mirrored. An entry read from the lead's mirror (its original deleted or re-signed since) has no
    upload time of its own left to check: the lead's signed record vouches for it; every other check runs."""
    norms = []
    for i in range(len(record.included)):
        adm = _admit_record_entry(gm, record, raws, check, i)
        if isinstance(adm, str):
            return StreamedUpdates(norms=[], load=lambda _i: {}), adm
        assert adm.update is not None, "an admitted update decoded"
        norms.append({name: l2_norm(t) for name, t in adm.update.items()})
        del adm

    def load(i: int) -> dict[str, torch.Tensor]:
        adm = _admit_record_entry(gm, record, raws, check, i)
        assert not isinstance(adm, str) and adm.update is not None, "admitted once, so again"
        return adm.update

    return StreamedUpdates(norms=norms, load=load), None


def _admit_record_entry(gm: GlobalModel, record: AggregationRecord, raws: list, check: RecordAdmission,
                        i: int) -> Admission | str:
    """The deterministic admission of the record's entry i (with its update), or why it fails."""
    hp = gm.hparams
    deadline = check.deadline_of(record.window)
    entry = record.included[i]
    raw, mirrored = raws[i] if isinstance(raws[i], tuple) else (raws[i], False)
    if raw.ok and raw.value is not None and hashlib.sha256(raw.value).hexdigest() != entry.sha256:
        return f"uid {entry.uid}: file changed since the record was signed"
    upload = Upload(uid=entry.uid, hotkey=entry.hotkey, key=entry.key, data=raw.value,
                    last_modified=deadline if mirrored else raw.last_modified, status=raw.status)
    adm = admit_for_gather(upload, window=record.window, deadline_s=deadline, hparams=hp, shapes=gm.shapes(),
                           base_fingerprint=record.base_fingerprint, num_train=check.num_train)
    if not adm.ok or adm.update is None:
        return f"uid {entry.uid}: {adm.reason}"
    return adm


def record_problem(gm: GlobalModel, record: AggregationRecord, peers: PeerBuckets, check: RecordAdmission,
                   lead_hotkey: str | None) -> str | None:
    """Why the record disagrees with what this node can recompute before stepping (settings, entry set); None
    when it agrees. The refusal is checked with the step (`_verified_step`)."""
    why = settings_problem(record, gm.hparams)
    if why is not None:
        return why
    peer_uids = None
    if lead_hotkey is not None:
        read = fetch_peer_list(peers, lead_hotkey, record.window)
        peer_uids = read.value if read.ok else None
    return entry_set_problem([e.uid for e in record.included], peer_uids=peer_uids,
                             admitted_uids=check.admitted_of(record.window), max_peers=gm.hparams.num_peers)


def _reject(gm: GlobalModel, record: AggregationRecord, check: RecordAdmission, lead_hotkey: str | None,
            why: str, problems: list[str] | None) -> ApplyOutcome:
    logger.bind(window=record.window).warning(f"the lead's record is invalid, not applied: {why}")
    if lead_hotkey is not None:
        gm.distrusted.add(lead_hotkey)
        if check.on_verdict is not None:
            check.on_verdict(Verdict(window=record.window, lead_hotkey=lead_hotkey,
                                     next_fingerprint=record.next_fingerprint, valid=False, reason=why[:300]))
    if problems is not None:
        problems.append(why)
    return ApplyOutcome.INVALID


def _fetch_and_admit(gm: GlobalModel, record: AggregationRecord, peers: PeerBuckets, check: RecordAdmission,
                     lead_hotkey: str | None) -> tuple[StreamedUpdates, str | None]:
    """The record's entries fetched (the lead's mirrors first) and admitted as this node would admit them;
    (updates, None), or (_, why) when one fails admission (logged)."""
    raws = fetch_record_inputs(peers, list(record.included), record.window, lead_hotkey, gm.hparams.max_upload_bytes)
    checked, why = admit_record_entries(gm, record, raws, check)
    if why is not None:
        logger.bind(window=record.window).warning(f"the lead's record fails admission: {why}")
    return checked, why


def apply_record(gm: GlobalModel, record: AggregationRecord, peers: PeerBuckets,
                 check: RecordAdmission | None = None, lead_hotkey: str | None = None,
                 problems: list[str] | None = None) -> ApplyOutcome:
    """Advance theta_w -> theta_{w+1} by the record (a refused record leaves theta and the norm history).

    With `check`, every entry must pass deterministic admission first (`admit_record_entries`), else
    INADMISSIBLE and theta is untouched; the updates are then added one at a time. `lead_hotkey` (the
    record's signer) is where mirrored inputs are read from when an original is gone (`fetch_record_inputs`).
    With `check.verify`, a record that disagrees with what the node recomputes is INVALID (theta untouched,
    the reason appended to `problems`, a signed rejection through `check.on_verdict`)."""
    if record.window != gm.window:  # the body's window must be the one the signed manifest was fetched for
        return ApplyOutcome.WRONG_WINDOW
    if record.base_fingerprint != gm.fingerprint():
        return ApplyOutcome.BASE_MISMATCH
    if check is not None and check.verify:
        why = record_problem(gm, record, peers, check, lead_hotkey)
        if why is not None:
            return _reject(gm, record, check, lead_hotkey, why, problems)
        if record.included:
            checked, inadmissible = _fetch_and_admit(gm, record, peers, check, lead_hotkey)
            if inadmissible is not None:
                return ApplyOutcome.INADMISSIBLE
        else:
            checked = StreamedUpdates(norms=[], load=lambda _i: {})
        return _verified_step(gm, record, checked, check, lead_hotkey, problems)
    if record.refused:
        gm.window = record.window + 1
        gm.lineage = gm.lineage.after_record(record)
        return ApplyOutcome.OK
    if check is not None and record.included:
        checked, why = _fetch_and_admit(gm, record, peers, check, lead_hotkey)
        if why is not None:
            return ApplyOutcome.INADMISSIBLE
        return _step_by_record(gm, record, checked)
    updates = []
    reads = fetch_record_updates(peers, list(record.included), record.window, gm.shapes(), gm.codec,
                                 gm.hparams.max_upload_bytes, lead_hotkey)  # all at once, within one fetch budget
    for entry, read in zip(record.included, reads, strict=True):
        if not read.ok or read.value is None:
            logger.bind(window=record.window, uid=entry.uid).warning(
                f"cannot replay the update of uid {entry.uid}: {read.describe()}")
            return ApplyOutcome.MISSING_UPDATE
        updates.append(read.value)
    return _step_by_record(gm, record, updates)


def _verified_step(gm: GlobalModel, record: AggregationRecord, updates: StreamedUpdates, check: RecordAdmission,
                   lead_hotkey: str | None, problems: list[str] | None) -> ApplyOutcome:
    """The record's step with this node's own guard (the window's drawn guard batch over the record's entry uids,
    `check.guard_batch`): the record's `dropped` and `refused` must agree with it (`dropped_problem`, within the
    margin `refused_problem`); theta_{w+1} must then be the record's. A disagreeing record leaves theta as it
    was and is rejected; an agreeing one is attested (`check.on_verdict`). When the guard block's hash cannot be
    read the guard-based checks are skipped (logged): the record's drop set and refusal are taken as signed."""
    saved = {n: p.detach().clone() for n, p in gm.model.named_parameters()}
    saved_ref, saved_history = gm.clip_ref, gm.clip_history
    stats: dict[str, Any] = {"used": 0}
    before = after = float("nan")
    why = None
    batch: torch.Tensor | None = None
    if len(updates):
        guard = check.guard_batch(record.window, [e.uid for e in record.included]) if check.guard_batch else None
        batch = guard.to(next(gm.model.parameters()).device) if guard is not None else None
        before = mean_loss(gm.model, batch) if batch is not None else float("nan")
        if batch is not None:  # the lead's drop set against this node's own gain of each entry
            gains = gm.own_gains(updates, record.outer_lr, batch, before)
            why = dropped_problem(record.dropped, {e.uid: g for e, g in zip(record.included, gains, strict=True)},
                                  loss_before=before)
        if why is None:
            stats = gm.apply_updates(kept_updates(record, updates), record.outer_lr)
            after = mean_loss(gm.model, batch) if batch is not None and stats["used"] else before
    if why is None and batch is not None and stats["used"]:
        why = refused_problem(record.refused, before, after, max_rise=gm.hparams.max_loss_rise)
    if why is not None or record.refused:
        gm.load_state(saved, gm.window)
        gm.clip_ref, gm.clip_history = saved_ref, saved_history
    if why is not None:
        return _reject(gm, record, check, lead_hotkey, why, problems)
    gm.window = record.window + 1
    gm.lineage = gm.lineage.after_record(record)
    if gm.fingerprint() != record.next_fingerprint:
        return ApplyOutcome.NEXT_MISMATCH
    gm.mark_verified()
    if check.on_verdict is not None and lead_hotkey is not None:
        check.on_verdict(Verdict(window=record.window, lead_hotkey=lead_hotkey,
                                 next_fingerprint=record.next_fingerprint, valid=True))
    return ApplyOutcome.OK


def kept_updates(record: AggregationRecord, updates: list[dict[str, torch.Tensor]] | StreamedUpdates
                 ) -> list[dict[str, torch.Tensor]] | StreamedUpdates:
    """The record's entries' updates (in entry order) less those of its `dropped` uids: the step's members."""
    out = set(record.dropped)
    return subset(updates, [i for i, e in enumerate(record.included) if e.uid not in out])


def _step_by_record(gm: GlobalModel, record: AggregationRecord,
                    updates: list[dict[str, torch.Tensor]] | StreamedUpdates) -> ApplyOutcome:
    gm.apply_updates(kept_updates(record, updates), record.outer_lr)
    gm.window = record.window + 1
    gm.lineage = gm.lineage.after_record(record)
    if gm.fingerprint() != record.next_fingerprint:
        return ApplyOutcome.NEXT_MISMATCH
    return ApplyOutcome.OK


def load_checkpoint(gm: GlobalModel, peers: PeerBuckets, lead_hotkey: str, window: int,
                    accept: Callable[[int, str], bool] | None = None,
                    refused: Callable[[int, dict[str, Any]], None] | None = None) -> bool:
    """Load the lead's checkpoint of `window` into gm; False (logged) when absent, unusable or, with `accept`,
    not accepted (`accept(window, fingerprint)`: its fingerprint is neither our verified replay's nor attested
    by a stake majority; gm is then untouched, and `refused(window, manifest)` hears of it)."""
    read = fetch_checkpoint(peers, lead_hotkey, window, gm.checkpoint_max_bytes())
    if not read.ok or read.value is None:
        logger.bind(window=window).warning(f"checkpoint of window {window}: {read.describe()}")
        return False
    art = read.value
    claimed = art.manifest.get("fingerprint")
    if accept is not None and (not isinstance(claimed, str) or not accept(window, claimed)):
        logger.bind(window=window).warning(f"checkpoint of window {window} is neither our verified replay nor "
                                           f"attested by a stake majority: not loaded")
        if refused is not None:
            refused(window, art.manifest)
        return False
    try:
        clip_ref = parse_clip_ref(art.manifest.get("clip_ref"), set(gm.shapes()))
        clip_history = parse_clip_history(art.manifest.get("clip_history"), set(gm.shapes()))
        gm.load_state(art.tensors, window)
    except ValueError as e:
        logger.bind(window=window).warning(f"checkpoint of window {window} is unusable: {e}")
        return False
    if gm.fingerprint() != art.manifest.get("fingerprint"):
        logger.bind(window=window).warning(f"checkpoint of window {window} does not match its own fingerprint")
        return False
    gm.lineage = Lineage(parent=ArtifactRef(window, art.manifest["payload_sha256"]))
    gm.clip_ref, gm.clip_history = clip_ref, clip_history
    if accept is not None:
        gm.mark_verified()
    return True


def publish_checkpoint(gm: GlobalModel, bucket: OwnBucket, keypair: Keypair) -> int:
    """Sign and upload theta_window as a checkpoint; returns bytes written."""
    tensors = {n: p.detach().to("cpu", torch.float32) for n, p in gm.model.named_parameters()}
    data = write_tensor_artifact(tensors, kind="checkpoint", window=gm.window, keypair=keypair,
                                 fields=checkpoint_fields(gm.hparams, gm.fingerprint(), gm.lineage, gm.clip_ref,
                                                         gm.clip_history))
    bucket.put_checkpoint(gm.window, data)
    gm.lineage = Lineage(parent=ArtifactRef(gm.window, tensors_digest(tensors)))
    return len(data)


def resync(gm: GlobalModel, peers: PeerBuckets, lead_hotkey: str, target: int, device: torch.device,
           accept: Callable[[int, str], bool] | None = None,
           refused: Callable[[int, dict[str, Any]], None] | None = None) -> None:
    """Start over from the newest usable (with `accept`: accepted) checkpoint <= target (or theta_0)."""
    ckpt = newest_checkpoint(peers, lead_hotkey, target)
    if ckpt is not None and load_checkpoint(gm, peers, lead_hotkey, ckpt, accept, refused):
        logger.info(f"loaded checkpoint of window {ckpt}")
        return
    fresh = GlobalModel.initial(gm.hparams, device)
    gm.load_state({n: p.detach() for n, p in fresh.model.named_parameters()}, 0)
    gm.lineage = Lineage()
    gm.clip_ref, gm.clip_history = None, {}
    logger.info("no usable checkpoint: starting from theta_0")


def wait_for_record(peers: PeerBuckets, lead_hotkey: str, window: int, wait_s: float,
                    should_stop: Callable[[], bool]) -> Read[AggregationRecord]:
    """The lead's record of `window`, read again every 0.5 s for up to `wait_s` while it is not there."""
    read = fetch_record(peers, lead_hotkey, window)
    until = time.time() + wait_s
    while not read.ok and time.time() < until and not should_stop():
        time.sleep(0.5)
        read = fetch_record(peers, lead_hotkey, window)
    return read


def catch_up(
    gm: GlobalModel,
    target: int,
    peers: PeerBuckets,
    lead_hotkey: str,
    device: torch.device,
    *,
    wait_last_s: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    check: RecordAdmission | None = None,
) -> SyncStatus:
    """Replay records until gm.window == target. The last record may be waited for.

    A window without a record changed nothing. Returns IN_SYNC, RESYNCED when the node had to
    reload a checkpoint on the way, DIVERGED when three reloads did not get it there, or STOPPED
    when `should_stop` cut it short (a record it stopped waiting for does not count as absent).
    """
    status = SyncStatus.IN_SYNC
    for _attempt in range(3):
        while gm.window < target and not should_stop():
            read = wait_for_record(peers, lead_hotkey, gm.window, wait_last_s if gm.window == target - 1 else 0.0,
                                   should_stop)
            if not read.ok and should_stop():
                return SyncStatus.STOPPED
            if read.status is ReadStatus.INVALID:
                logger.bind(window=gm.window).warning(f"the lead's record is invalid: {read.reason}")
            if not read.ok or read.value is None:  # no usable record: the window changed nothing
                gm.window += 1
                continue
            outcome = apply_record(gm, read.value, peers, check, lead_hotkey)
            rejected = outcome in (ApplyOutcome.INADMISSIBLE, ApplyOutcome.INVALID)
            if outcome is ApplyOutcome.BASE_MISMATCH and lead_hotkey in gm.distrusted and check is not None \
                    and check.verify:  # built on a theta we rejected: not ours to resync onto
                logger.bind(window=gm.window).warning("the record builds on a rejected record: not applied")
                rejected = True
            if rejected:  # our own step of the window where we have one (what every honest node computes), else none
                if check is None or check.own_step is None or not check.own_step(gm.window):
                    gm.window += 1
                continue
            if outcome is not ApplyOutcome.OK:
                logger.bind(window=read.value.window).warning(f"{outcome}; resyncing from a checkpoint")
                break
        else:
            return status if gm.window >= target else SyncStatus.STOPPED
        if should_stop():
            return SyncStatus.STOPPED
        status = SyncStatus.RESYNCED
        resync(gm, peers, lead_hotkey, target, device, None if check is None else check.accept_checkpoint,
               None if check is None else check.on_checkpoint_refused)
    return SyncStatus.DIVERGED


def restore_from_lead(gm: GlobalModel, window: int, peers: PeerBuckets, lead_hotkey: str, device: torch.device, *,
                      check: RecordAdmission, should_stop: Callable[[], bool], wait_last_s: float = 0.0,
                      force_resync: bool = False) -> SyncStatus:
    """Bring `gm` to `window` from the lead's objects: its newest checkpoint first when that is ahead of us (or
    when `force_resync`: we are ahead of the window), then its records (`catch_up`)."""
    ckpt = newest_checkpoint(peers, lead_hotkey, window)
    if force_resync or (ckpt is not None and ckpt > gm.window):
        resync(gm, peers, lead_hotkey, window, device, check.accept_checkpoint, check.on_checkpoint_refused)
    return catch_up(gm, window, peers, lead_hotkey, device, wait_last_s=wait_last_s, should_stop=should_stop,
                    check=check)
