"""Catch-up (template.node.sync.catch_up) over in-memory buckets: replaying the lead's records from
theta_0, with a record missing, invalid, mismatched or replaying to another model.

The lead is simulated with the runtime's own pieces (GlobalModel.apply_updates, OwnBucket.put_record,
publish_checkpoint) on real signed artifacts; the follower is a fresh GlobalModel at theta_0.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from storage.peers import fetch_record
from template.node.sync import ApplyOutcome, GlobalModel, SyncStatus, apply_record, catch_up
from template.protocol import layout
from template.protocol.artifacts import write_json_artifact
from template.protocol.reads import ReadStatus
from template.protocol.records import AggregationRecord
from tests.unit.fakes import FakeNet, Lead

CPU = torch.device("cpu")
TARGET = 3
OTHER_FP = "ab" * 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def follow(net: FakeNet, target: int = TARGET, **kwargs) -> tuple[GlobalModel, SyncStatus]:
    gm = GlobalModel.initial(net.hp, CPU)
    status = catch_up(gm, target, net.peers(), net.hotkey("alice"), CPU, **kwargs)
    return gm, status


def record_reads(net: FakeNet, window: int) -> int:
    return net.store.reads.get(("bucket-alice", layout.record_key(window)), 0)


# -- every record there -------------------------------------------------------------------------


def test_replays_every_record_to_the_leads_model(net):
    lead = Lead(net)
    lead.run()
    gm, status = follow(net)
    assert status is SyncStatus.IN_SYNC
    assert gm.window == TARGET and gm.fingerprint() == lead.fingerprints[TARGET]
    assert [r.window for r in gm.lineage.records] == [0, 1, 2] and gm.lineage.parent is None
    # every window that kept a member moved the model (the fakes' updates are noise: on the window's drawn guard
    # batch a window may drop them all, and then theta stays, as the record says)
    moved = sum(1 for r in lead.records.values() if len(r.dropped) < len(r.included))
    assert moved >= 1 and len(set(lead.fingerprints)) == moved + 1


def test_a_window_without_a_record_changed_nothing(net):
    lead = Lead(net)
    lead.window(0)
    lead.window(1, miners=(), publish=False)  # the lead aggregated nothing and wrote no record
    lead.window(2)
    assert lead.fingerprints[1] == lead.fingerprints[2]
    gm, status = follow(net)
    assert status is SyncStatus.IN_SYNC
    assert gm.window == TARGET and gm.fingerprint() == lead.fingerprints[TARGET]
    assert [r.window for r in gm.lineage.records] == [0, 2]


# -- a record missing, invalid or mismatched: resync from the lead's checkpoint --------------------


def test_missing_record_resyncs_from_the_checkpoint(net):
    lead = Lead(net)
    lead.run(w1={"publish": False, "checkpoint": True})  # record 1 lost; the checkpoint of theta_2 is there
    gm, status = follow(net)
    assert status is SyncStatus.RESYNCED
    assert gm.window == TARGET and gm.fingerprint() == lead.fingerprints[TARGET]
    assert gm.lineage.parent is not None and gm.lineage.parent.window == 2
    assert [r.window for r in gm.lineage.records] == [2]
    assert gm.clip_history == lead.gm.clip_history and gm.clip_ref == lead.gm.clip_ref  # the checkpoint carried them


def _forged_signature(net: FakeNet, record: AggregationRecord) -> bytes:
    alice = net.neurons["alice"]
    doc = json.loads(write_json_artifact(record.to_body(), kind="record", window=record.window, keypair=alice.keypair))
    sig = doc["manifest"]["signature"]
    doc["manifest"]["signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    return json.dumps(doc).encode()


def _other_signer(net: FakeNet, record: AggregationRecord) -> bytes:
    from bittensor_wallet import Keypair

    return write_json_artifact(record.to_body(), kind="record", window=record.window,
                               keypair=Keypair.create_from_uri("//Mallory"))


def _edited_body(net: FakeNet, record: AggregationRecord) -> bytes:
    alice = net.neurons["alice"]
    doc = json.loads(write_json_artifact(record.to_body(), kind="record", window=record.window, keypair=alice.keypair))
    doc["body"]["included"] = doc["body"]["included"][:1]  # drop an update after signing
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("make", "code"), [(_forged_signature, "bad_signature"), (_other_signer, "wrong_signer"),
                                            (_edited_body, "payload_mismatch"), (lambda n, r: b"{not json", "malformed")])
def test_invalid_record_is_skipped_then_resynced(net, make, code):
    lead = Lead(net)
    lead.run(w1={"checkpoint": True})
    net.neurons["alice"].bucket.put(layout.record_key(1), make(net, lead.records[1]))
    read = fetch_record(net.peers(), net.hotkey("alice"), 1)
    assert read.status is ReadStatus.INVALID and code in read.reason

    gm, status = follow(net)
    assert status is SyncStatus.RESYNCED
    assert gm.window == TARGET and gm.fingerprint() == lead.fingerprints[TARGET]
    assert gm.lineage.parent is not None and gm.lineage.parent.window == 2


def test_invalid_last_record_leaves_the_model_as_it_was(net):
    lead = Lead(net)
    lead.run(windows=1)
    net.neurons["alice"].bucket.put(layout.record_key(0), _forged_signature(net, lead.records[0]))
    gm, status = follow(net, target=1)
    assert status is SyncStatus.IN_SYNC  # nothing later contradicts it: the window counts as empty
    assert gm.window == 1 and gm.fingerprint() == lead.fingerprints[0]


@pytest.mark.parametrize("edit", [{"base_fingerprint": OTHER_FP}, {"next_fingerprint": OTHER_FP}])
def test_mismatched_record_resyncs_from_the_checkpoint(net, edit):
    lead = Lead(net)
    lead.run(w1={"checkpoint": True, **edit})
    gm, status = follow(net)
    assert status is SyncStatus.RESYNCED
    assert gm.window == TARGET and gm.fingerprint() == lead.fingerprints[TARGET]
    assert gm.lineage.parent is not None and gm.lineage.parent.window == 2


def test_record_whose_update_is_gone_resyncs(net):
    lead = Lead(net)
    lead.run(w1={"checkpoint": True})
    net.store.delete("bucket-charlie", layout.gradient_key(1))
    gm, status = follow(net)
    assert status is SyncStatus.RESYNCED
    assert gm.window == TARGET and gm.fingerprint() == lead.fingerprints[TARGET]


# -- diverging: no checkpoint gets us past a record we cannot reproduce ------------------------------


@pytest.mark.parametrize("w1", [{"next_fingerprint": OTHER_FP}, {"publish": False}])
def test_diverges_after_three_reloads_without_a_usable_checkpoint(net, w1):
    lead = Lead(net)
    lead.run(w1=w1)
    gm, status = follow(net)
    assert status is SyncStatus.DIVERGED
    # every attempt restarted from theta_0 (no checkpoint), where the last reload leaves the model
    assert record_reads(net, 0) == 3
    assert gm.window == 0 and gm.fingerprint() == lead.fingerprints[0] and gm.lineage.records == ()


def test_diverged_node_recovers_once_the_lead_publishes_a_checkpoint(net):
    lead = Lead(net)
    lead.run(w1={"next_fingerprint": OTHER_FP})
    gm = GlobalModel.initial(net.hp, CPU)
    peers = net.peers()
    assert catch_up(gm, TARGET, peers, net.hotkey("alice"), CPU) is SyncStatus.DIVERGED
    lead.window(3, checkpoint=True)
    assert catch_up(gm, TARGET + 1, peers, net.hotkey("alice"), CPU) is SyncStatus.RESYNCED
    assert gm.window == TARGET + 1 and gm.fingerprint() == lead.fingerprints[TARGET + 1]


def test_stop_between_windows_is_reported_as_stopped(net):
    lead = Lead(net)
    lead.run()
    calls = []

    def stop_after_first_window() -> bool:
        calls.append(1)
        return len(calls) > 2

    gm, status = follow(net, should_stop=stop_after_first_window)
    assert status is SyncStatus.STOPPED
    assert 0 < gm.window < TARGET and gm.fingerprint() == lead.fingerprints[gm.window]


def test_stop_while_waiting_for_the_last_record_does_not_skip_it(net):
    lead = Lead(net)
    lead.run(windows=2)  # the record of window 2 is not out yet
    gm, status = follow(net, wait_last_s=60.0, should_stop=lambda: record_reads(net, 2) >= 2)
    assert status is SyncStatus.STOPPED
    assert gm.window == 2 and gm.fingerprint() == lead.fingerprints[2]  # window 2 not counted as empty


def test_last_record_is_waited_for_then_counted_as_absent(net):
    lead = Lead(net)
    lead.run(windows=2)
    gm, status = follow(net, wait_last_s=0.6)
    assert status is SyncStatus.IN_SYNC
    assert gm.window == TARGET and gm.fingerprint() == lead.fingerprints[2]
    assert record_reads(net, 2) >= 2 and record_reads(net, 1) == 1  # only the last one is waited for


# -- apply_record, one record at a time -------------------------------------------------------------


def test_apply_record_outcomes(net):
    lead = Lead(net)
    lead.run(windows=2)
    peers = net.peers()
    gm = GlobalModel.initial(net.hp, CPU)
    assert apply_record(gm, lead.records[1], peers) is ApplyOutcome.WRONG_WINDOW  # a record of window 1 at 0
    wrong_base = dataclasses.replace(lead.records[0], base_fingerprint=OTHER_FP)
    assert apply_record(gm, wrong_base, peers) is ApplyOutcome.BASE_MISMATCH
    assert gm.window == 0 and gm.fingerprint() == lead.fingerprints[0]  # untouched
    wrong_next = dataclasses.replace(lead.records[0], next_fingerprint=OTHER_FP)
    assert apply_record(gm, wrong_next, peers) is ApplyOutcome.NEXT_MISMATCH
    assert gm.fingerprint() == lead.fingerprints[1]  # replayed, but not what the record claims
    net.store.delete("bucket-bob", layout.gradient_key(1))
    assert apply_record(gm, lead.records[1], peers) is ApplyOutcome.MISSING_UPDATE
    assert gm.window == 1 and gm.fingerprint() == lead.fingerprints[1]
    swapped = dataclasses.replace(lead.records[0], included=tuple(
        dataclasses.replace(e, sha256="0" * 64) for e in lead.records[0].included))
    fresh = GlobalModel.initial(net.hp, CPU)
    assert apply_record(fresh, swapped, peers) is ApplyOutcome.MISSING_UPDATE  # bytes changed since signing
    assert apply_record(fresh, lead.records[0], peers) is ApplyOutcome.OK
    assert fresh.window == 1 and fresh.fingerprint() == lead.fingerprints[1]


def test_the_fingerprint_is_hashed_once_per_model_state(monkeypatch):
    """Issue 26: theta is hashed once per state (not once per gathered upload); any change of theta, through
    the GlobalModel or in place around it, gives the new state's fingerprint."""
    from template.node import sync
    from template.protocol.model import model_fingerprint
    from tests.unit.fakes import tiny_hparams

    hashed: list[int] = []
    monkeypatch.setattr(sync, "model_fingerprint", lambda model: hashed.append(1) or model_fingerprint(model))
    gm = GlobalModel.initial(tiny_hparams(), torch.device("cpu"))
    first = gm.fingerprint()
    assert gm.fingerprint() == first and len(hashed) == 1
    update = {n: torch.full(s, 1e-3) for n, s in gm.shapes().items()}
    gm.apply_updates([update], 1.0)
    stepped = gm.fingerprint()
    assert stepped != first and stepped == model_fingerprint(gm.model) and len(hashed) == 2
    with torch.no_grad():
        next(gm.model.parameters()).add_(1.0)  # a change made around the GlobalModel
    assert gm.fingerprint() == model_fingerprint(gm.model) != stepped
    fresh = GlobalModel.initial(tiny_hparams(), torch.device("cpu"))
    gm.load_state({n: p.detach() for n, p in fresh.model.named_parameters()}, 0)
    assert gm.fingerprint() == first
