"""A record's inputs stay fetchable (issue 14 item 4): the lead mirrors each update it aggregates into its own
bucket under a content address and names the mirror in the record, so a `vanisher` that deletes or re-signs its
upload after the lead fetched it cannot make replay fail. Real signed artifacts over tests/unit/fakes.py."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from storage.peers import fetch_record_inputs, stale_keys
from template.node.neuron import WindowClock
from template.node.sync import ApplyOutcome, GlobalModel, RecordAdmission, SyncStatus, apply_record, catch_up
from template.protocol import layout
from tests.unit.fakes import FakeNet, Lead

CPU = torch.device("cpu")
TARGET = 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def follow(net: FakeNet, *, checked: bool) -> tuple[GlobalModel, SyncStatus]:
    gm = GlobalModel.initial(net.hp, CPU)
    check = RecordAdmission(net.heldout_start, WindowClock(net.chain, net.hp).deadline) if checked else None
    return gm, catch_up(gm, TARGET, net.peers(), net.hotkey("alice"), CPU, check=check)


def vanish(net: FakeNet, lead: Lead, how: str) -> None:
    """charlie's update of window 1, after the lead's window: deleted, or replaced by another signed update."""
    if how == "delete":
        net.store.delete("bucket-charlie", layout.gradient_key(1))
    else:
        lead.gm.window = 1  # re-sign a different update for window 1 (a fresh upload, other bytes)
        lead.upload("charlie", 1)
        lead.gm.window = TARGET


@pytest.mark.parametrize("checked", [False, True])
@pytest.mark.parametrize("how", ["delete", "resign"])
def test_vanisher_cannot_break_replay_of_a_mirrored_record(net, how, checked):
    lead = Lead(net)
    before = lead.gm.fingerprint()
    for w in range(TARGET):
        lead.window(w, mirror=True)
    entry = next(e for e in lead.records[1].included if e.hotkey == net.hotkey("charlie"))
    assert entry.key == layout.input_key(1, entry.sha256)  # the record points at the lead's content-addressed copy
    original = net.store.objects[("bucket-charlie", layout.gradient_key(1))][0]
    assert hashlib.sha256(original).hexdigest() == entry.sha256
    vanish(net, lead, how)
    gm, status = follow(net, checked=checked)
    assert status is SyncStatus.IN_SYNC
    assert gm.fingerprint() == lead.fingerprints[TARGET] != before
    assert net.store.reads[("bucket-alice", entry.key)] == 1  # read from the mirror, once


@pytest.mark.parametrize("how", ["delete", "resign"])
def test_without_the_mirror_the_same_vanisher_makes_replay_diverge(net, how):
    lead = Lead(net)
    lead.run(TARGET)  # records name the miners' own keys (no mirror, no checkpoint)
    vanish(net, lead, how)
    gm, status = follow(net, checked=False)
    assert status is SyncStatus.DIVERGED


def test_originals_are_read_first_and_the_mirror_only_when_they_changed(net):
    lead = Lead(net)
    record = lead.window(0, mirror=True)
    reads = fetch_record_inputs(net.peers(), list(record.included), 0, net.hotkey("alice"), 1 << 24)
    assert [mirrored for _, mirrored in reads] == [False, False]  # originals intact: their upload times count
    assert not any(("bucket-alice", e.key) in net.store.reads for e in record.included)


def test_a_mirror_with_other_bytes_is_refused(net):
    lead = Lead(net)
    record = lead.window(0, mirror=True)
    entry = record.included[0]
    miner = next(n for n in net.neurons.values() if n.keypair.ss58_address == entry.hotkey)
    net.store.delete(miner.bucket.access.bucket, layout.gradient_key(0))
    net.store.put("bucket-alice", entry.key, b"not the update the record names")
    gm = GlobalModel.initial(net.hp, CPU)
    assert apply_record(gm, record, net.peers(), lead_hotkey=net.hotkey("alice")) is ApplyOutcome.MISSING_UPDATE
    check = RecordAdmission(net.heldout_start, WindowClock(net.chain, net.hp).deadline)
    assert apply_record(gm, record, net.peers(), check, net.hotkey("alice")) is ApplyOutcome.INADMISSIBLE
    assert gm.window == 0


def test_a_mirrored_entry_still_passes_every_other_admission_check(net):
    """The mirror waives only the upload time (gone with the original): a record naming a mirror of an update
    with another base is still inadmissible."""
    lead = Lead(net)
    lead.window(0, mirror=True)
    record = lead.window(1, mirror=True)
    bad = dataclasses.replace(record, base_fingerprint=lead.fingerprints[0])  # the entries were built on theta_1
    for e in record.included:
        miner = next(n for n in net.neurons.values() if n.keypair.ss58_address == e.hotkey)
        net.store.delete(miner.bucket.access.bucket, layout.gradient_key(1))
    gm = GlobalModel.initial(net.hp, CPU)
    gm.window = 1
    check = RecordAdmission(net.heldout_start, WindowClock(net.chain, net.hp).deadline)
    assert apply_record(gm, bad, net.peers(), check, net.hotkey("alice")) is ApplyOutcome.INADMISSIBLE


def test_retention_prunes_old_mirrors_like_any_object_of_their_window():
    old, kept = layout.input_key(3, "a" * 64), layout.input_key(40, "b" * 64)
    assert stale_keys([old, kept, layout.record_key(3)], now_window=50, retention_windows=20) == sorted(
        [old, layout.record_key(3)])
