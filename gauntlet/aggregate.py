"""Who is aggregated (DESIGN section 4.1): the peer list and the gather set of a window.

The gather set of window w is computed, not decided: it is the admitted uploads of the uids
on the peer list in force for w, where admission is the deterministic part of
gauntlet/checks.py (signature, deadline by storage LastModified, format, receipt, base model,
copies among the peers). Every miner computes it right after the deadline, applies the outer
step and goes on training w+1 at once; nobody waits for a validator. The lead validator
computes the very same set, signs the record with the fingerprint of theta_{w+1}, and nodes
check their model against it when it appears (a mismatch sends them to resync).

What a validator learns by evaluating (loss improvement) steers who is on the *next* peer
lists (`select_peers`), published two windows ahead, so a miner whose updates hurt drops out
of aggregation two windows after it is found out. Loss-based filtering of the set
itself cannot be reproduced by miners (random eval batches), so it is not done.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gauntlet.checks import Admission, Upload, admit_upload, detect_copies
from template.protocol.data import data_receipt, sample_ids

if TYPE_CHECKING:
    from template.protocol.config import HParams


def select_peers(ordinals: dict[int, float], *, num_peers: int, eligible: Sequence[int]) -> list[int]:
    """Up to `num_peers` of the `eligible` uids, best ordinal first (equal ordinals: lower uid).

    `eligible` is the miners whose update of the window just judged counted as a success (it
    lowered the loss above the floor): a failing, idle or harmful miner drops off at once, and a
    miner that returns after a bad spell is back as soon as it succeeds, whatever its ordinal (a
    rule of "ordinal > 0" locked out a miner that had lost a few early matches, since coming second
    of two every window never lifts an ordinal).
    """
    if num_peers <= 0:
        raise ValueError(f"num_peers must be > 0, got {num_peers}")
    allowed = set(eligible)
    ranked = sorted((u for u in allowed if math.isfinite(ordinals.get(u, 0.0))),
                    key=lambda u: (-ordinals.get(u, 0.0), u))
    return ranked[:num_peers]


def bootstrap_peers(miners: dict[int, str], *, num_peers: int, seed: str) -> list[int]:
    """Before any rating exists: `num_peers` of the miners (uid -> hotkey), ordered by
    sha256(seed, hotkey), returned sorted by uid.

    `seed` is the lead's model fingerprint when it publishes (unknown to anyone in advance), so
    neither registering low uids nor grinding hotkeys buys a place on a bootstrap list, and a
    lead that restarts does not hand the same uids the same places again.
    """
    if num_peers <= 0:
        raise ValueError(f"num_peers must be > 0, got {num_peers}")
    order = sorted(miners, key=lambda u: (hashlib.sha256(f"bootstrap:{seed}:{miners[u]}".encode()).digest(), u))
    return sorted(order[:num_peers])


def step_refused(loss_before: float, loss_after: float, *, max_rise: float) -> bool:
    """Whether an outer step must be refused: the held-out loss became non-finite or rose by more than
    `max_rise` (relative) over `loss_before`."""
    if not math.isfinite(loss_after):
        return True
    if not math.isfinite(loss_before):
        return False
    return loss_after > loss_before + abs(loss_before) * max_rise


def admit_for_gather(upload: Upload, *, window: int, deadline_s: float, hparams: HParams,
                     shapes: dict[str, tuple[int, ...]], base_fingerprint: str, num_train: int) -> Admission:
    """The deterministic admission of one upload, as every node computes it for the gather set and the replay
    of a record (signature, deadline, fields and the uid's data receipt, codec, finite values, base model).

    No history enters (a replay of an older window is the validator's finding, and costs the replayer its
    place on later peer lists); copies are judged among the peers by `gather_set`."""
    ids = sample_ids(upload.uid, window, hparams.data_seed, hparams.samples_per_window, num_train)
    return admit_upload(upload, window=window, deadline_s=deadline_s, hparams=hparams, shapes=shapes,
                        expected_receipt=data_receipt(ids), base_fingerprint=base_fingerprint, seen_payloads=set())


def reject_copies(admissions: dict[int, Admission], uploads: Sequence[Upload], *, threshold: float
                  ) -> dict[int, Admission]:
    """The same admissions with copies among them (see `detect_copies`) rejected."""
    out = dict(admissions)
    for uid, reason in detect_copies(list(admissions.values()), [u for u in uploads if u.uid in admissions],
                                     threshold=threshold).items():
        out[uid] = out[uid].reject(reason)
    return out


def gather_set(admissions: dict[int, Admission], uploads: Sequence[Upload], *, peer_uids: Sequence[int],
               max_peers: int, copy_threshold: float) -> list[int]:
    """The gather set of a window: the uids whose updates form theta_{w+1}, the same on every node.

    `admissions` holds `admit_for_gather` verdicts (at least those of the peers; an admission kept without
    its update is fine: only `ok`, the payload digest and the kept positions are read); `uploads` gives
    their storage LastModified (who was first, for the copy check). The rule: the uploads of the uids on
    the peer list in force (`peer_uids`), copies among those peers rejected (`detect_copies` with
    `copy_threshold`), the admitted ones sorted by uid (the order every node applies them in), at most
    `max_peers`. The miner (`template.node.miner.gather_streamed`) and the lead
    (`template.node.validator.lead_gather`) call it; a node replaying a record re-runs `admit_for_gather`
    on each entry (`template.node.sync.admit_record_entries`)."""
    if max_peers <= 0:
        raise ValueError(f"max_peers must be > 0, got {max_peers}")
    allowed = set(peer_uids)
    peers = reject_copies({u: a for u, a in admissions.items() if u in allowed}, uploads, threshold=copy_threshold)
    chosen = sorted(uid for uid, adm in peers.items() if adm.ok)
    return chosen[:max_peers]
