"""A validator's admission step (DESIGN sections 4 and 8): every upload of a window admitted one at a time from
the spool, kept in the compact form later steps need, plus the findings only this validator's history can make
(replays, near-copies of earlier windows' updates, gathered uploads that vanished).

The decisions are pure functions in gauntlet/; this module feeds them the window's bytes and the validator's
memory of earlier windows (`template.node.state.ValidatorState`) and keeps that memory up to date. It takes
what it needs (the window's admission inputs, the spool, the state), never the validator itself.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from loguru import logger

from gauntlet.aggregate import admit_for_gather, reject_copies
from gauntlet.checks import NEAR_COPY, VANISHED, Admission, Upload, mark_replays
from gauntlet.nearcopy import aggregate_sketch, find_near_copies, sketch_update
from gauntlet.sampling import sketch_indices, sketch_rate
from storage.peers import PeerBuckets, fetch_uploads
from storage.spool import UploadSpool
from template.node.state import GatheredInputs, ValidatorState
from template.protocol.config import HParams
from template.protocol.metagraph import Metagraph
from template.protocol.outer_step import l2_norm
from template.protocol.reads import ReadStatus
from template.protocol.sealing import KEY_MISSING
from template.protocol.sparseloco import CodecParams


def upload_spool(state_dir: Path) -> UploadSpool:
    """Where a window's uploads wait on disk between the fetch and their admission (one file per uid)."""
    return UploadSpool(state_dir / "uploads")


@dataclass(frozen=True)
class AdmissionWindow:
    """What every upload of one window is admitted against (`gauntlet.aggregate.admit_for_gather`)."""

    window: int
    deadline: float
    base_fingerprint: str  # theta_w's
    hparams: HParams
    shapes: dict[str, tuple[int, ...]]
    num_train: int

    def admit(self, upload: Upload) -> Admission:
        """The deterministic admission of one upload (what every node computes), its update decoded densely."""
        return admit_for_gather(upload, window=self.window, deadline_s=self.deadline, hparams=self.hparams,
                                shapes=self.shapes, base_fingerprint=self.base_fingerprint,
                                num_train=self.num_train)


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


def admit_all(aw: AdmissionWindow, uploads: list[Upload], spool: UploadSpool, state: ValidatorState, *,
              peer_uids: list[int], seed: bytes, near_copy_key: bytes) -> Checked:
    """Admit every upload, one dense decode at a time, keeping per upload only its verdict, payload digest,
    tensor norms and a sketch of its kept positions (`gauntlet.sampling.sketch_indices`, keyed by the
    window's private `seed`); the uploads of `peer_uids` keep their exact indices for the gather set.

    Scoring adds this validator's history (replays; near-copies of earlier windows' updates, by count
    sketch keyed by `near_copy_key`) and copies among all uploads (by index sketch); the gather set
    (`gauntlet.aggregate.gather_set`) judges copies among the peers only, exactly, as every miner does. Each
    upload's bytes are read back from the window's `spool` as it is admitted: one upload's at a time."""
    hp = aw.hparams
    rate = sketch_rate(aw.shapes, topk=hp.topk, chunk_size=hp.chunk_size)
    on_list = set(peer_uids)
    base: dict[int, Admission] = {}
    norms: dict[int, dict[str, float]] = {}
    peers: dict[int, Admission] = {}
    sketches: dict[int, torch.Tensor] = {}
    for stub in uploads:
        up = spool.load(stub)
        adm = aw.admit(up)
        if adm.ok and adm.update is not None:
            norms[up.uid] = {name: l2_norm(t) for name, t in adm.update.items()}
            if adm.indices is not None:
                sketches[up.uid] = sketch_update(adm.update, adm.indices, key=near_copy_key)
        if up.uid in on_list:
            peers[up.uid] = replace(adm, update=None)
        sketch = None if adm.indices is None else sketch_indices(adm.indices, seed=seed, rate=rate)
        base[up.uid] = replace(adm, update=None, indices=sketch)
        del adm, up  # the dense update and the bytes go now
        release_freed_memory()
    replays = mark_replays(base, set(state.seen))
    earlier = state.sketches.before(aw.window, hp.near_copy_windows)
    hotkeys = {up.uid: up.hotkey for up in uploads}
    near, shares = find_near_copies({u: (hotkeys[u], s) for u, s in sketches.items() if replays[u].ok}, earlier,
                                    threshold=hp.near_copy_threshold)
    for uid, found in near.items():
        replays[uid] = replays[uid].reject(NEAR_COPY)
        logger.bind(window=aw.window).info(
            f"uid {uid}: near-copy, {found.explained:.0%} of its update is in earlier updates of "
            + ", ".join(f"uid {e.uid} (window {e.window})" for e in found.sources[:4]))
    scored = reject_copies(replays, uploads, threshold=hp.copy_overlap_threshold)
    release_freed_memory()  # the copy check's incidence matrix over every upload's sketch
    return Checked(scored=scored, norms=norms, peers=peers, sketches=sketches, near_copy=shares)


def vanished_inputs(peers: PeerBuckets, state: ValidatorState, window: int, mg: Metagraph, *,
                    max_upload_bytes: int) -> set[int]:
    """The miners whose upload of `window - 1` that went into that window's gather set is gone or changed now
    (`not_found`, other bytes, or the sealed upload's key withdrawn): the record's inputs must stay
    fetchable (the lead's mirror keeps replay safe; this makes withdrawing them cost the miner a window).
    A read that fails for another reason (timeout, error) proves nothing and is not counted."""
    gathered = state.gathered
    if gathered is None or gathered.window != window - 1 or not gathered.uploads:
        return set()
    expected = {uid: (hotkey, sha) for uid, (hotkey, sha) in gathered.uploads.items()
                if uid < mg.n and mg.hotkeys[uid] == hotkey}  # a uid re-registered since is not judged
    found = set()
    for up in fetch_uploads(peers, {uid: hk for uid, (hk, _) in expected.items()}, window - 1, max_upload_bytes):
        changed = up.status is ReadStatus.OK and up.rejected is None and payload_sha(up.data) != expected[up.uid][1]
        if up.status is ReadStatus.NOT_FOUND or up.rejected == KEY_MISSING or changed:
            found.add(up.uid)
            logger.bind(window=window).warning(f"uid {up.uid}: its gathered upload of window {window - 1} is "
                                               f"{'changed' if changed else 'gone'} ({VANISHED})")
    return found


def near_copy_key(state: ValidatorState, rng: random.Random) -> bytes:
    """This validator's private key for the near-copy sketches: drawn once from `rng`, kept in the state
    (sketches of different windows must share it to compare), never published."""
    if not state.near_copy_key:
        state.near_copy_key = rng.randbytes(32)
    return state.near_copy_key


def remember_sketches(state: ValidatorState, window: int, mg: Metagraph, sketches: dict[int, torch.Tensor], *,
                      keep_windows: int) -> None:
    """Keep `window`'s sketches for the near-copy checks of the next `keep_windows` windows."""
    state.sketches = state.sketches.with_window(window, {u: (mg.hotkeys[u], s) for u, s in sketches.items()}
                                                ).before(window + 1, keep_windows)


def remember_aggregate(state: ValidatorState, window: int, theta_w: dict[str, torch.Tensor], model: torch.nn.Module,
                       *, lr: float, codec: CodecParams, key: bytes) -> None:
    """Keep the sketch of `window`'s applied aggregate step (theta_w -> `model` now) for the near-copy checks of
    the next `AGGREGATE_KEEP_WINDOWS` windows: it is public, so echoing it is the cheapest copy there is."""
    after = {n: p.detach() for n, p in model.named_parameters()}
    if all(torch.equal(theta_w[n], after[n].to("cpu", torch.float32)) for n in theta_w):
        return  # no step was applied (refused, rejected or empty)
    state.sketches = state.sketches.with_aggregate(window, aggregate_sketch(theta_w, after, lr=lr, codec=codec, key=key))


def remember_gathered(state: ValidatorState, window: int, mg: Metagraph, gathered: list[Upload]) -> None:
    """Keep what `window`'s gather set held (uid -> hotkey, payload sha256), for `vanished_inputs` next window."""
    state.gathered = GatheredInputs(window, {u.uid: (mg.hotkeys[u.uid], payload_sha(u.data)) for u in gathered})


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
