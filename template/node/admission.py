"""A validator's admission step (DESIGN sections 4 and 8): every upload of a window admitted one at a time from
the spool, kept in the compact form later steps need, plus the findings only this validator's history can make
(replays, near-copies of earlier windows' updates, gathered uploads that vanished).

The decisions are pure functions in gauntlet/; this module feeds them the window's bytes and the validator's
memory of earlier windows (`Validator.run_state`, `Validator.sketches`) and keeps that memory up to date.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from loguru import logger

from gauntlet.aggregate import admit_uploads, reject_copies
from gauntlet.checks import NEAR_COPY, VANISHED, Admission, Upload, mark_replays
from gauntlet.nearcopy import aggregate_sketch, find_near_copies, sketch_update
from gauntlet.sampling import sketch_indices, sketch_rate
from storage.peers import fetch_uploads
from storage.spool import UploadSpool
from template.chain.base import Metagraph
from template.protocol.outer_step import l2_norm
from template.protocol.reads import ReadStatus
from template.protocol.sealing import KEY_MISSING

if TYPE_CHECKING:
    from template.node.validator import Validator


def upload_spool(v: Validator) -> UploadSpool:
    """Where a window's uploads wait on disk between the fetch and their admission (one file per uid)."""
    return UploadSpool(v.state_dir / "uploads")


@dataclass(frozen=True)
class Checked:
    """A window's admissions in the compact form later steps need (issue 18: nothing here grows with the
    model per judged miner; the peers' exact kept positions, at most num_peers, are the largest part).

    scored: uid -> verdict for scoring (history: replays and near-copies of earlier windows; copies among all
        uploads, by index sketch), no update.
    norms: uid -> per-tensor L2 norms of each deterministically admitted update (clip limits, the outer step).
    peers: uid -> deterministic Admission of the uids on the peer list, with exact indices (the gather set's
        copy check) and no update: the outer step decodes each again when it adds it (`StreamedUpdates`).
    sketches: uid -> count sketch of each deterministically admitted update (`gauntlet.nearcopy`).
    near_copy: uid -> share of its update that earlier windows' updates explain.
    """

    scored: dict[int, Admission]
    norms: dict[int, dict[str, float]]
    peers: dict[int, Admission]
    sketches: dict[int, torch.Tensor] = field(default_factory=dict)
    near_copy: dict[int, float] = field(default_factory=dict)


def admit_one(v: Validator, window: int, upload: Upload, deadline: float, base_fp: str) -> Admission:
    """The deterministic admission of one upload (what every node computes), its update decoded densely."""
    return admit_uploads([upload], window=window, deadline_s=deadline, hparams=v.hp, shapes=v.gm.shapes(),
                         base_fingerprint=base_fp, num_train=v.num_train)[upload.uid]


def admit_all(v: Validator, window: int, uploads: list[Upload], deadline: float, base_fp: str, *,
              peer_uids: list[int], seed: bytes) -> Checked:
    """Admit every upload, one dense decode at a time, keeping per upload only its verdict, payload digest,
    tensor norms and a sketch of its kept positions (`gauntlet.sampling.sketch_indices`, keyed by the
    window's private `seed`); the uploads of `peer_uids` keep their exact indices for the gather set.

    Scoring adds this validator's history (replays; near-copies of earlier windows' updates, by count
    sketch) and copies among all uploads (by index sketch); the gather set (`lead_gather`) judges copies
    among the peers only, exactly, as every miner does. Each upload's bytes are read back from the window's
    spool (`fetch_updates`) as it is admitted: one upload's at a time."""
    rate = sketch_rate(v.gm.shapes(), topk=v.hp.topk, chunk_size=v.hp.chunk_size)
    key = near_copy_key(v)
    on_list = set(peer_uids)
    base: dict[int, Admission] = {}
    norms: dict[int, dict[str, float]] = {}
    peers: dict[int, Admission] = {}
    sketches: dict[int, torch.Tensor] = {}
    spool = upload_spool(v)
    for stub in uploads:
        up = spool.load(stub)
        adm = admit_one(v, window, up, deadline, base_fp)
        if adm.ok and adm.update is not None:
            norms[up.uid] = {name: l2_norm(t) for name, t in adm.update.items()}
            if adm.indices is not None:
                sketches[up.uid] = sketch_update(adm.update, adm.indices, key=key)
        if up.uid in on_list:
            peers[up.uid] = replace(adm, update=None)
        sketch = None if adm.indices is None else sketch_indices(adm.indices, seed=seed, rate=rate)
        base[up.uid] = replace(adm, update=None, indices=sketch)
        del adm, up  # the dense update and the bytes go now
        release_freed_memory()
    replays = mark_replays(base, set(v.run_state.get("seen", [])))
    earlier = v.sketches.before(window, v.hp.near_copy_windows)
    hotkeys = {up.uid: up.hotkey for up in uploads}
    near, shares = find_near_copies({u: (hotkeys[u], s) for u, s in sketches.items() if replays[u].ok}, earlier,
                                    threshold=v.hp.near_copy_threshold)
    for uid, found in near.items():
        replays[uid] = replays[uid].reject(NEAR_COPY)
        logger.bind(window=window).info(
            f"uid {uid}: near-copy, {found.explained:.0%} of its update is in earlier updates of "
            + ", ".join(f"uid {e.uid} (window {e.window})" for e in found.sources[:4]))
    scored = reject_copies(replays, uploads, threshold=v.hp.copy_overlap_threshold)
    release_freed_memory()  # the copy check's incidence matrix over every upload's sketch
    return Checked(scored=scored, norms=norms, peers=peers, sketches=sketches, near_copy=shares)


def vanished_inputs(v: Validator, window: int, mg: Metagraph) -> set[int]:
    """The miners whose upload of `window - 1` that went into that window's gather set is gone or changed now
    (`not_found`, other bytes, or the sealed upload's key withdrawn): the record's inputs must stay
    fetchable (the lead's mirror keeps replay safe; this makes withdrawing them cost the miner a window).
    A read that fails for another reason (timeout, error) proves nothing and is not counted."""
    gathered = v.run_state.get("gathered") or {}
    if gathered.get("window") != window - 1 or not gathered.get("uploads"):
        return set()
    expected = {int(uid): (hotkey, sha) for uid, (hotkey, sha) in gathered["uploads"].items()
                if int(uid) < mg.n and mg.hotkeys[int(uid)] == hotkey}  # a uid re-registered since is not judged
    found = set()
    for up in fetch_uploads(v.peers, {uid: hk for uid, (hk, _) in expected.items()}, window - 1,
                            v.hp.max_upload_bytes):
        changed = up.status is ReadStatus.OK and up.rejected is None and payload_sha(up.data) != expected[up.uid][1]
        if up.status is ReadStatus.NOT_FOUND or up.rejected == KEY_MISSING or changed:
            found.add(up.uid)
            logger.bind(window=window).warning(f"uid {up.uid}: its gathered upload of window {window - 1} is "
                                               f"{'changed' if changed else 'gone'} ({VANISHED})")
    return found


def near_copy_key(v: Validator) -> bytes:
    """This validator's private key for the near-copy sketches: drawn once, kept in the run state (sketches
    of different windows must share it to compare), never published."""
    key = v.run_state.get("near_copy_key")
    if not key:
        key = os.urandom(32).hex()
        v.run_state["near_copy_key"] = key
    return bytes.fromhex(key)


def remember_sketches(v: Validator, window: int, mg: Metagraph, sketches: dict[int, torch.Tensor]) -> None:
    """Keep `window`'s sketches for the near-copy checks of the next `near_copy_windows` windows."""
    keep = v.hp.near_copy_windows
    v.sketches = v.sketches.with_window(window, {u: (mg.hotkeys[u], s) for u, s in sketches.items()}
                                        ).before(window + 1, keep)


def remember_aggregate(v: Validator, window: int, theta_w: dict[str, torch.Tensor]) -> None:
    """Keep the sketch of `window`'s applied aggregate step (theta_w -> the model now) for the near-copy checks of
    the next `AGGREGATE_KEEP_WINDOWS` windows: it is public, so echoing it is the cheapest copy there is."""
    after = {n: p.detach() for n, p in v.gm.model.named_parameters()}
    if all(torch.equal(theta_w[n], after[n].to("cpu", torch.float32)) for n in theta_w):
        return  # no step was applied (refused, rejected or empty)
    sketch = aggregate_sketch(theta_w, after, lr=v.hp.outer_lr, codec=v.gm.codec, key=near_copy_key(v))
    v.sketches = v.sketches.with_aggregate(window, sketch)


def remember_gathered(v: Validator, window: int, mg: Metagraph, gathered: list[Upload]) -> None:
    """Keep what `window`'s gather set held (uid -> hotkey, payload sha256), for `vanished_inputs` next window."""
    v.run_state["gathered"] = {"window": window, "uploads": {
        str(u.uid): [mg.hotkeys[u.uid], payload_sha(u.data)] for u in gathered}}


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc `malloc_trim`; nothing elsewhere).

    Admitting an upload allocates and frees several model-sized and many mid-sized buffers; the few small
    objects kept of it (sketch, norms) pin those heap pages, so without this the validator's RSS grew by
    about 1.5 MB per upload of the tiny preset (scripts/bench_validator.py). About 1 ms a call."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def payload_sha(data: bytes | None) -> str:
    assert data is not None, "an upload in the gather set was admitted, so it has its bytes"
    return hashlib.sha256(data).hexdigest()
