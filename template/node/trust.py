"""Reading the validators' signed verdicts (template/protocol/verdicts.py): who rejected which lead, who attests
which theta; and the record check a node runs on the lead's word (`record_check`). The decisions are
`gauntlet/verify.py`'s; this module fetches their inputs."""

from __future__ import annotations

from collections.abc import Callable, Collection

from gauntlet.verify import checkpoint_accepted, rejected_leads
from storage.peers import PeerBuckets, fetch_verdict
from template.node.guard import GuardBatch
from template.node.sync import GlobalModel, RecordAdmission
from template.protocol import layout
from template.protocol.verdicts import Verdict

# how many windows back a rejection keeps its lead passed over (verdicts older than retention are pruned
# anyway; a lead passed over that keeps publishing bad records is rejected again at once)
REJECTION_MEMORY_WINDOWS = 32

def _cache(peers: PeerBuckets) -> dict[tuple[str, int], Verdict]:
    """(validator hotkey, window) -> its verdict, fetched once per `peers` (a verdict is written once)."""
    cache = getattr(peers, "_verdict_cache", None)
    if cache is None:
        cache = {}
        object.__setattr__(peers, "_verdict_cache", cache)
    return cache


def verdicts_of(peers: PeerBuckets, hotkey: str, windows: range) -> dict[int, Verdict]:
    """The validator's valid signed verdicts of `windows` (window -> verdict)."""
    listed = set(peers.list_windows(hotkey, layout.verdict_key(0).rsplit("/", 1)[0] + "/"))
    _verdicts = _cache(peers)
    out = {}
    for w in windows:
        if w not in listed:
            continue
        if (hotkey, w) not in _verdicts:
            read = fetch_verdict(peers, hotkey, w)
            if not read.ok or read.value is None:
                continue
            _verdicts[(hotkey, w)] = read.value
            if len(_verdicts) > 4096:
                _verdicts.pop(next(iter(_verdicts)))
        out[w] = _verdicts[(hotkey, w)]
    return out


def rejections(peers: PeerBuckets, validators: list[str], window: int) -> dict[str, set[str]]:
    """lead hotkey -> validators that rejected one of its records of the `REJECTION_MEMORY_WINDOWS` before
    `window` (a validator's rejection of its own record does not count)."""
    out: dict[str, set[str]] = {}
    span = range(max(0, window - REJECTION_MEMORY_WINDOWS), window)
    for v in validators:
        for verdict in verdicts_of(peers, v, span).values():
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


def record_check(num_train: int, deadline_of: Callable[[int], float], gm: GlobalModel, peers: PeerBuckets,
                 stake: dict[str, float], *, admitted_of: Callable[[int], Collection[int] | None] = lambda _w: None,
                 guard_batch: GuardBatch | None = None,
                 on_verdict: Callable[[Verdict], None] | None = None,
                 own_step: Callable[[int], bool] | None = None) -> RecordAdmission:
    """The full check of the lead's word (issue 27) for a node: deterministic admission of every entry, the record
    checks of `gauntlet/verify.py`, and checkpoints accepted only when they match this node's verified replay
    or validators holding a stake majority (`stake`: validator hotkey -> stake) attest them; a lead passed over
    for a rejected record (`rejected_leads`) counts for nothing there. `guard_batch(window, entry uids)` is the
    window's drawn guard batch (template/node/guard.py) the record's `dropped` and `refused` are checked on."""
    def accept(window: int, fingerprint: str) -> bool:
        # a lead passed over for a rejected record has lost its word here too: its stake attests nothing
        deposed = rejected_leads(rejections(peers, list(stake), window + 1), stake)
        trusted = {h: s for h, s in stake.items() if h not in deposed}
        return checkpoint_accepted(fingerprint, replayed=gm.verified.get(window),
                                   attesters=attesters(peers, list(trusted), window, fingerprint), stake=trusted)

    return RecordAdmission(num_train, deadline_of, verify=True, admitted_of=admitted_of, guard_batch=guard_batch,
                           accept_checkpoint=accept, on_verdict=on_verdict, own_step=own_step)
