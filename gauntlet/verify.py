"""Checks a node runs on the lead's word before it applies it (issue 27): records, checkpoints, the lead itself.

Each check is a pure function of what the node recomputes and what the lead signed; it returns None when
the two agree and a short reason when they do not. A record that fails any check is never applied (the
window changes nothing on this node), and the node publishes a signed rejection
(`template/protocol/verdicts.py`). What the checks cover:

- settings: `outer_lr` must equal the hparams in force (the record carries no other setting);
- entries: every entry is on the lead's own signed peer list of the window, and the entries are exactly
  the gather set of the node's own admitted peers plus the entries (which the node admitted itself, reading
  from the lead's mirror where an original was gone): nothing off-list, nothing admitted left out;
- refused: the node runs the guard itself; a refusal where the loss plainly did not rise (a veto), or no
  refusal where it plainly did, fails. Within `REFUSAL_MARGIN` of the threshold the lead's verdict stands
  (guard losses computed on different devices differ in the last bits);
- dropped (`dropped_problem`): the node measures each entry's own step on its guard batch; an entry whose
  step plainly lowered the guard loss must not be dropped, one whose step plainly raised it must be
  (within `DROP_MARGIN` of zero the lead's call stands);
- checkpoints (`checkpoint_accepted`): a checkpoint is loaded only when its fingerprint equals the theta the
  node reached by replaying verified records from an earlier accepted state, or, for a node that cannot
  replay (it joined after the records' updates were pruned), when validators holding a stake majority
  attest that fingerprint in their verdicts;
- the lead (`rejected_leads`): a lead is passed over once validators holding more than half of the other
  validators' stake have rejected one of its records or checkpoints (a checkpoint whose signed fingerprint is
  not the theta they verified for its window), so a single hostile validator cannot depose an honest lead,
  and a rogue lead cannot outvote the rest.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from gauntlet.aggregate import step_refused
from template.protocol.config import HParams
from template.protocol.records import AggregationRecord

# the share of `max_loss_rise` around the refusal threshold within which the lead's verdict is taken
# on its word (guard losses of the same step on two devices differ by far less than this)
REFUSAL_MARGIN = 0.5
# the band around a zero own guard gain, relative to the guard loss before the step, within which the lead's
# drop-or-keep call stands (`dropped_problem`); device differences in guard losses are far smaller
DROP_MARGIN = 1e-4


def settings_problem(record: AggregationRecord, hparams: HParams) -> str | None:
    """Why the record's settings differ from the hparams in force (None: they agree)."""
    if record.outer_lr != float(hparams.outer_lr):
        return f"outer_lr {record.outer_lr} is not the hparams' {hparams.outer_lr}"
    return None


def expected_gather(peer_uids: Collection[int], admitted_uids: Collection[int], max_peers: int) -> list[int]:
    """The gather set as `gauntlet.aggregate.gather_set` forms it: admitted peers sorted by uid, at most max_peers."""
    allowed = set(peer_uids)
    return sorted(u for u in set(admitted_uids) if u in allowed)[:max_peers]


def entry_set_problem(record_uids: Sequence[int], *, peer_uids: Collection[int] | None,
                      admitted_uids: Collection[int] | None, max_peers: int) -> str | None:
    """Why the record's entries are not the gather set of the lead's peer list (None: they are).

    `peer_uids`: the lead's signed peer list in force for the window (None: the node could not read it, and
    then a record with entries cannot be checked and fails). `admitted_uids`: the peers this node admitted
    itself (None: it did not gather this window, e.g. it replays an old record; then only off-list entries
    and the size are checked). The record's own entries count as admitted: the node has already run the
    deterministic admission on each (reading from the lead's mirror where its own read failed)."""
    if len(record_uids) > max_peers:
        return f"{len(record_uids)} entries, more than num_peers {max_peers}"
    if not record_uids:
        if admitted_uids is None or peer_uids is None:
            return None
        missing = expected_gather(peer_uids, admitted_uids, max_peers)
        return f"no entries, but peers {missing[:8]} were admitted" if missing else None
    if peer_uids is None:
        return "no peer list of the lead's for the window, yet the record has entries"
    off = sorted(set(record_uids) - set(peer_uids))
    if off:
        return f"entries {off[:8]} are not on the lead's peer list"
    if admitted_uids is None:
        return None
    expected = expected_gather(peer_uids, set(admitted_uids) | set(record_uids), max_peers)
    if list(record_uids) != expected:
        left_out = sorted(set(expected) - set(record_uids))
        return f"entries are not the gather set: admitted peers {left_out[:8]} left out"
    return None


def refused_problem(refused: bool, loss_before: float, loss_after: float, *, max_rise: float) -> str | None:
    """Why the record's `refused` disagrees with this node's own guard (None: it agrees, or it is too close
    to the threshold to say: within `REFUSAL_MARGIN` of `max_rise`)."""
    if refused and not step_refused(loss_before, loss_after, max_rise=max_rise * (1 - REFUSAL_MARGIN)):
        return f"refused a step that took the guard loss {loss_before:.4f} -> {loss_after:.4f} (a veto)"
    if not refused and step_refused(loss_before, loss_after, max_rise=max_rise * (1 + REFUSAL_MARGIN)):
        return f"applied a step that took the guard loss {loss_before:.4f} -> {loss_after:.4f}"
    return None


def dropped_problem(dropped: Collection[int], gains: Mapping[int, float], *, loss_before: float,
                    margin: float = DROP_MARGIN) -> str | None:
    """Why the record's `dropped` uids disagree with this node's own guard gains (`gains`: uid -> guard loss
    before - after of that member's own step, every included uid; None: they agree). A member whose own step
    plainly lowered the guard loss must not be dropped, one whose step plainly did not must be; within `margin`
    x |loss_before| of zero the lead's call stands (`gauntlet.progress.no_gain_members` is the lead's rule)."""
    band = margin * abs(loss_before) if math.isfinite(loss_before) else 0.0
    unknown = sorted(set(dropped) - set(gains))
    if unknown:
        return f"dropped uids {unknown[:8]} are not in the step"
    honest = sorted(u for u in dropped if math.isfinite(gains[u]) and gains[u] > band)
    if honest:
        return f"dropped uids {honest[:8]} whose own step lowered the guard loss"
    kept = sorted(u for u, g in gains.items() if u not in set(dropped) and not g >= -band)
    if kept:
        return f"kept uids {kept[:8]} whose own step did not lower the guard loss"
    return None


def stake_share(hotkeys: Collection[str], stake: Mapping[str, float], *, excluding: str | None = None) -> float:
    """The share of the validators' stake (`stake`: hotkey -> stake, the validators only) that `hotkeys`
    hold, `excluding` one hotkey from both sides (0.0 when nobody else holds stake)."""
    total = sum(s for h, s in stake.items() if h != excluding and math.isfinite(s) and s > 0)
    held = sum(stake[h] for h in set(hotkeys) if h in stake and h != excluding and math.isfinite(stake[h])
               and stake[h] > 0)
    return held / total if total > 0 else 0.0


def checkpoint_accepted(fingerprint: str, *, replayed: str | None, attesters: Collection[str],
                        stake: Mapping[str, float]) -> bool:
    """Whether a checkpoint whose weights hash to `fingerprint` may be loaded.

    `replayed`: the fingerprint this node reached for the checkpoint's window by replaying verified records
    from an earlier accepted state (None: it could not). `attesters`: validators whose signed verdict of the
    window attests `fingerprint`. Accepted on an equal replay, or on attesters holding a stake majority (also when
    our replay differs: one node's replay can be wrong - a read that failed, a step it missed - a stake majority's
    agreement is the stronger word; a rogue lead with less than half the stake cannot make one alone)."""
    if replayed is not None and replayed == fingerprint:
        return True
    return stake_share(attesters, stake) > 0.5


def rejected_leads(rejections: Mapping[str, Collection[str]], stake: Mapping[str, float]) -> set[str]:
    """The lead hotkeys to pass over: `rejections` maps a lead's hotkey to the validators that published a
    signed rejection of one of its records or checkpoints; a lead is rejected when those validators (not counting
    itself) hold more than half of the stake of the validators other than it."""
    return {lead for lead, by in rejections.items() if stake_share(by, stake, excluding=lead) > 0.5}
