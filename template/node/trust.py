"""Reading the validators' signed verdicts (template/protocol/verdicts.py): who rejected which lead (a record or a
checkpoint of its), who attests which theta; the record check a node runs on the lead's word (`record_check`);
and a validator's check of the lead's checkpoints against the theta it verified (`check_checkpoint`). The
decisions are `gauntlet/verify.py`'s; this module fetches their inputs."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from loguru import logger

from gauntlet.verify import checkpoint_accepted, rejected_leads
from storage.peers import PeerBuckets, fetch_checkpoint_manifest, fetch_checkpoint_verdict, fetch_verdict
from template.node.guard import GuardBatch
from template.node.sync import GlobalModel, RecordAdmission
from template.protocol import layout
from template.protocol.checkpoint import clip_state_digest
from template.protocol.reads import Read, ReadStatus
from template.protocol.verdicts import CheckpointVerdict, Verdict

# how many windows back a rejection keeps its lead passed over (verdicts older than retention are pruned
# anyway; a lead passed over that keeps publishing bad records is rejected again at once)
REJECTION_MEMORY_WINDOWS = 32

V = TypeVar("V", Verdict, CheckpointVerdict)
VERDICTS_CACHED = 4096  # verdicts a node keeps per kind (a verdict is written once: fetched once)


def _written_once(peers: PeerBuckets, hotkey: str, windows: range, *, key_of: Callable[[int], str],
                  fetch: Callable[[PeerBuckets, str, int], Read[V]], cache_name: str) -> dict[int, V]:
    """The validator's valid signed verdicts of one kind over `windows` (window -> verdict): the windows its
    bucket lists under the kind's prefix, each fetched once per `peers` (cached on it as `cache_name`)."""
    listed = set(peers.list_windows(hotkey, key_of(0).rsplit("/", 1)[0] + "/"))
    cache: dict[tuple[str, int], V] | None = getattr(peers, cache_name, None)
    if cache is None:
        cache = {}
        object.__setattr__(peers, cache_name, cache)
    out = {}
    for w in windows:
        if w not in listed:
            continue
        if (hotkey, w) not in cache:
            read = fetch(peers, hotkey, w)
            if not read.ok or read.value is None:
                continue
            cache[(hotkey, w)] = read.value
            if len(cache) > VERDICTS_CACHED:
                cache.pop(next(iter(cache)))
        out[w] = cache[(hotkey, w)]
    return out


def verdicts_of(peers: PeerBuckets, hotkey: str, windows: range) -> dict[int, Verdict]:
    """The validator's valid signed verdicts on the lead's records of `windows` (window -> verdict)."""
    return _written_once(peers, hotkey, windows, key_of=layout.verdict_key, fetch=fetch_verdict,
                         cache_name="_verdict_cache")


def checkpoint_verdicts_of(peers: PeerBuckets, hotkey: str, windows: range) -> dict[int, CheckpointVerdict]:
    """The validator's valid signed verdicts on the lead's checkpoints of `windows` (window -> verdict)."""
    return _written_once(peers, hotkey, windows, key_of=layout.checkpoint_verdict_key,
                         fetch=fetch_checkpoint_verdict, cache_name="_checkpoint_verdict_cache")


def rejections(peers: PeerBuckets, validators: list[str], window: int) -> dict[str, set[str]]:
    """lead hotkey -> validators that rejected one of its records, or one of its checkpoints, of the
    `REJECTION_MEMORY_WINDOWS` before `window` (a validator's rejection of its own does not count). A checkpoint
    of window w holds theta_w and is published with the record of w - 1, so its verdict counts as that record's:
    from the lead rule of window w on."""
    out: dict[str, set[str]] = {}
    span = range(max(0, window - REJECTION_MEMORY_WINDOWS), window)
    checkpoints = range(span.start + 1, span.stop + 1)
    for v in validators:
        verdicts: list[Verdict | CheckpointVerdict] = [*verdicts_of(peers, v, span).values(),
                                                        *checkpoint_verdicts_of(peers, v, checkpoints).values()]
        for verdict in verdicts:
            if not verdict.valid and verdict.lead_hotkey != v:
                out.setdefault(verdict.lead_hotkey, set()).add(v)
    return out


def attesters(peers: PeerBuckets, validators: list[str], window: int, fingerprint: str) -> set[str]:
    """Validators whose verdict of window `window - 1` attests theta_window = `fingerprint` (a checkpoint of
    `window` holds theta_window, the state after the record of window - 1)."""
    if window <= 0:
        return set()
    return {v for v in validators
            if (d := verdicts_of(peers, v, range(window - 1, window)).get(window - 1)) is not None
            and d.valid and d.next_fingerprint == fingerprint}


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def checkpoint_verdict(manifest: Mapping[str, Any], window: int, verified: str | None,
                       verified_clip: str | None = None) -> CheckpointVerdict | None:
    """This node's verdict on the checkpoint of `window` whose signed manifest is `manifest`, against `verified`
    (the theta_window fingerprint it reached by verified steps) and `verified_clip` (the digest of its clip state
    then, `checkpoint.clip_state_digest`; None: not compared); None when it verified none, or when the manifest
    names no well-formed fingerprint or payload digest (nothing to attest or to hold against the signer)."""
    fingerprint, payload, signer = manifest.get("fingerprint"), manifest.get("payload_sha256"), manifest.get("hotkey")
    if verified is None or not isinstance(signer, str) or not 0 < len(signer) <= 64:
        return None
    if not (isinstance(fingerprint, str) and _HEX64.match(fingerprint) and isinstance(payload, str)
            and _HEX64.match(payload)):
        return None
    clip_problem = None
    if verified_clip is not None and clip_state_digest(manifest.get("clip_ref"), manifest.get("clip_history")) \
            != verified_clip:
        clip_problem = f"checkpoint clip state (clip_ref, clip_history) is not the verified theta_{window}'s"
    return CheckpointVerdict.judge(window, signer, fingerprint, payload, verified, clip_problem)


def check_checkpoint(peers: PeerBuckets, lead_hotkey: str, window: int, verified: str,
                     verified_clip: str | None = None) -> Read[CheckpointVerdict]:
    """The verdict on the lead's checkpoint of `window` against `verified`, from its signed manifest alone (a
    header read, `storage.peers.fetch_checkpoint_manifest`): NOT_FOUND while it is not published, INVALID
    (with the reason) for a hostile or malformed header."""
    read = fetch_checkpoint_manifest(peers, lead_hotkey, window)
    if not read.ok or read.value is None:
        return Read.failure(read.status, read.reason)
    verdict = checkpoint_verdict(read.value, window, verified, verified_clip)
    if verdict is None:
        return Read.failure(ReadStatus.INVALID, f"checkpoint of window {window} names no well-formed fingerprint")
    return Read.success(verdict)


def record_check(num_train: int, deadline_of: Callable[[int], float], gm: GlobalModel, peers: PeerBuckets,
                 stake: dict[str, float], *, admitted_of: Callable[[int], Collection[int] | None] = lambda _w: None,
                 guard_batch: GuardBatch | None = None,
                 on_verdict: Callable[[Verdict], None] | None = None,
                 own_step: Callable[[int], bool] | None = None,
                 on_checkpoint_verdict: Callable[[CheckpointVerdict], None] | None = None) -> RecordAdmission:
    """The full check of the lead's word (issue 27) for a node: deterministic admission of every entry, the record
    checks of `gauntlet/verify.py`, and checkpoints accepted only when they match this node's verified replay
    or validators holding a stake majority (`stake`: validator hotkey -> stake) attest them; a lead passed over
    for a rejected record (`rejected_leads`) counts for nothing there. A checkpoint refused while this node
    verified another theta of its window is rejected through `on_checkpoint_verdict` (validators: signed).
    `guard_batch(window, entry uids)` is the window's drawn guard batch (template/node/guard.py) the record's
    `dropped` and `refused` are checked on."""
    def accept(window: int, fingerprint: str) -> bool:
        # a lead passed over for a rejected record has lost its word here too: its stake attests nothing
        deposed = rejected_leads(rejections(peers, list(stake), window + 1), stake)
        trusted = {h: s for h, s in stake.items() if h not in deposed}
        return checkpoint_accepted(fingerprint, replayed=gm.verified.get(window),
                                   attesters=attesters(peers, list(trusted), window, fingerprint), stake=trusted)

    def refused(window: int, manifest: Mapping[str, Any]) -> None:
        verdict = checkpoint_verdict(manifest, window, gm.verified.get(window), gm.verified_clip.get(window))
        if verdict is not None and not verdict.valid and on_checkpoint_verdict is not None:
            logger.bind(window=window).warning(f"rejecting the lead's checkpoint: {verdict.reason}")
            on_checkpoint_verdict(verdict)

    return RecordAdmission(num_train, deadline_of, verify=True, admitted_of=admitted_of, guard_batch=guard_batch,
                           accept_checkpoint=accept, on_verdict=on_verdict, own_step=own_step,
                           on_checkpoint_refused=refused)
