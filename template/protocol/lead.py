"""Who leads (DESIGN section 4.1): the validator that signs records, peer lists and checkpoints for a window,
computed by every node from public data alone (the metagraph, the declared roles, the candidates' newest
records). Pure: the node runtime (`template.node.neuron.find_lead`) gathers the inputs."""

from __future__ import annotations

from collections.abc import Collection

from template.protocol.metagraph import Metagraph

LEAD_STALE_WINDOWS = 3  # a lead whose newest record is older than this many windows hands over


def validator_uids(mg: Metagraph, min_stake: float, declared: Collection[str]) -> list[int]:
    """Uids that declared the validator role, hold a validator permit and at least `min_stake` alpha.

    Declaration comes first: stake is anyone's to add (a coldkey can stake onto any hotkey), so
    stake alone must never turn a miner into a validator - it would stop being judged, and as the
    lead it would run no validator code and freeze the model. The stake floor matters too: a young
    subnet gives a permit to every staked uid. Before a new subnet's first epoch (no permit anywhere
    yet), every declared uid staked above the floor except the owner's, since permits go to those.
    """
    staked = [u for u in mg.uids if mg.stake[u] >= min_stake and mg.hotkeys[u] in declared]
    if not any(mg.validator_permit):
        return [u for u in staked if mg.hotkeys[u] != mg.owner_hotkey]
    return [u for u in staked if mg.validator_permit[u]]


def lead_validator(mg: Metagraph, min_stake: float, declared: Collection[str],
                   newest_record: dict[str, int | None] | None = None, window: int = 0,
                   rejected: Collection[str] = ()) -> int | None:
    """The validator that signs records, peer lists and checkpoints for `window`.

    Candidates: `validator_uids`, highest stake first (ties: lower uid). With `newest_record`
    (hotkey -> newest window it published a record for, None if none), the lead is the first
    candidate that published a record of a window >= window - LEAD_STALE_WINDOWS; when none has,
    the candidates take turns, LEAD_STALE_WINDOWS windows each (window // LEAD_STALE_WINDOWS), until
    one publishes. So a lead that stops is handed over after LEAD_STALE_WINDOWS windows, a dead
    candidate's turn passes, and every node computes the same lead from public data. Candidates in
    `rejected` (hotkeys whose records or checkpoints validators holding a stake majority of the others rejected,
    `gauntlet.verify.rejected_leads`) are passed over.
    """
    passed_over = set(rejected)
    vals = sorted((u for u in validator_uids(mg, min_stake, declared) if mg.hotkeys[u] not in passed_over),
                  key=lambda u: (-mg.stake[u], u))
    if not vals:
        return None
    if newest_record is None:
        return vals[0]
    newest = {u: newest_record.get(mg.hotkeys[u]) for u in vals}
    fresh = [u for u in vals if (w := newest[u]) is not None and w >= window - LEAD_STALE_WINDOWS]
    if fresh:
        return fresh[0]
    return vals[(max(window, 0) // LEAD_STALE_WINDOWS) % len(vals)]


def miner_uids(mg: Metagraph, min_stake: float, declared: Collection[str]) -> list[int]:
    vals = set(validator_uids(mg, min_stake, declared))
    return [u for u in mg.uids if u not in vals and mg.hotkeys[u] != mg.owner_hotkey]
