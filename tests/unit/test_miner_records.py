"""The miner's check of its own gathers against the lead's signed records (template.node.miner
verify_records, follow_network) on a bare `Miner` over in-memory fakes: in sync, mismatch -> resync."""

from __future__ import annotations

import json

import pytest
import torch

from template.node.miner import UNVERIFIED_WINDOWS_KEPT, follow_network, verify_records
from template.node.sync import SyncStatus
from template.protocol import layout
from template.protocol.artifacts import write_json_artifact
from tests.unit.fakes import FakeNet, Lead

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def lead_window(net: FakeNet, lead: Lead, window: int, **kwargs):
    """The lead's window with its peer list in force, the chain past the window's deadline."""
    alice = net.neurons["alice"]
    alice.bucket.put_peer_list(window, [net.neurons["bob"].uid, net.neurons["charlie"].uid], alice.keypair)
    net.chain.advance_to(net.chain.head + net.hp.blocks_per_window // 2)  # uploads made inside the window
    record = lead.window(window, **kwargs)
    net.chain.advance_to((window + 1) * net.hp.blocks_per_window)
    return record


def perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        next(iter(model.parameters())).add_(1e-3)


def test_own_gather_matches_the_leads_record(net):
    lead, m = Lead(net), net.miner("bob")
    for window in (0, 1):
        record = lead_window(net, lead, window)
        assert follow_network(m, window) == SyncStatus.IN_SYNC  # checks window-1's gather, then gathers
        assert m.gm.window == window + 1 and m.gm.fingerprint() == record.next_fingerprint
        assert m.unverified == {window: record.next_fingerprint}
    # window 1's gather is confirmed at the next window's check; nothing left to verify
    assert verify_records(m, net.hotkey("alice"), 2) == SyncStatus.IN_SYNC and m.unverified == {}
    assert m.gm.fingerprint() == lead.fingerprints[2]


def test_mismatch_resyncs_to_the_leads_model(net):
    lead, m = Lead(net), net.miner("bob")
    lead_window(net, lead, 0)
    assert follow_network(m, 0) == SyncStatus.IN_SYNC
    perturb(m.gm.model)  # our theta_1 is not the network's (a bug, a bit flip, a missed update)
    m.unverified[0] = m.gm.fingerprint()
    record = lead_window(net, lead, 1)
    # the check before window 1's gather finds it, reloads and replays the lead's records to theta_1
    assert verify_records(m, net.hotkey("alice"), 1) == SyncStatus.RESYNCED
    assert m.gm.window == 1 and m.gm.fingerprint() == lead.fingerprints[1] and m.unverified == {}
    # and the gather that follows lands on the lead's theta_2
    assert follow_network(m, 1) == SyncStatus.IN_SYNC
    assert m.gm.fingerprint() == record.next_fingerprint


def test_mismatch_found_in_a_later_window_of_several(net):
    lead, m = Lead(net), net.miner("bob")
    lead.run(windows=2)
    m.unverified = {0: lead.fingerprints[1], 1: "ab" * 32}
    m.gm.window = 2  # it believes it holds theta_2
    assert verify_records(m, net.hotkey("alice"), 2) == SyncStatus.RESYNCED
    assert m.gm.window == 2 and m.gm.fingerprint() == lead.fingerprints[2] and m.unverified == {}


def test_record_not_out_yet_stays_unverified_until_too_old(net):
    m = net.miner("bob")
    theta_0 = m.gm.fingerprint()
    m.unverified = {0: theta_0}
    for window in range(1, UNVERIFIED_WINDOWS_KEPT + 2):
        assert verify_records(m, net.hotkey("alice"), window) == SyncStatus.IN_SYNC
        assert (0 in m.unverified) is (window <= UNVERIFIED_WINDOWS_KEPT)
    assert m.gm.fingerprint() == theta_0  # never resynced on an absent record


def test_invalid_record_is_neither_a_confirmation_nor_a_mismatch(net):
    lead, m = Lead(net), net.miner("bob")
    lead_window(net, lead, 0)
    assert follow_network(m, 0) == SyncStatus.IN_SYNC
    ours = m.gm.fingerprint()
    # a record claiming another theta_1, signed by someone other than the lead
    from bittensor_wallet import Keypair

    forged = json.loads(write_json_artifact(
        {**lead.records[0].to_body(), "next_fingerprint": "ab" * 32}, kind="record", window=0,
        keypair=Keypair.create_from_uri("//Mallory")))
    net.neurons["alice"].bucket.put(layout.record_key(0), json.dumps(forged).encode())
    assert verify_records(m, net.hotkey("alice"), 1) == SyncStatus.IN_SYNC
    assert m.unverified == {0: ours} and m.gm.fingerprint() == ours and m.gm.window == 1


def test_no_lead_means_nothing_is_aggregated(net):
    net.chain.neurons[net.neurons["alice"].uid].stake = 0.0  # no validator left
    m = net.miner("bob")
    theta_0 = m.gm.fingerprint()
    net.chain.advance_to(net.hp.blocks_per_window)
    assert follow_network(m, 0) == SyncStatus.NO_LEAD
    assert m.gm.window == 1 and m.gm.fingerprint() == theta_0 and m.unverified == {}
