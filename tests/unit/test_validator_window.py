"""One validator window on a bare `Validator` over in-memory fakes: admit, evaluate, rate, weigh, record.

Real signed artifacts, real gauntlet decisions, the tiny model on the CPU; only the chain and the
buckets are in memory (tests/unit/fakes.py).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from storage.peers import fetch_peer_list, fetch_record, fetch_verdict
from template.node import lead as lead_module
from template.node.miner import gather_and_step, honest_upload, plan_window, upload_update, verify_records
from template.node.neuron import find_lead
from template.node.sync import ApplyOutcome, GlobalModel, SyncStatus, apply_record
from template.node.validator import ensure_peer_lists, run_window
from template.protocol import layout
from template.protocol.version import VERSION_KEY
from template.sim.adversaries import noise
from tests.unit.fakes import FakeNet, lead_net, tiny_hparams

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture
def net(tmp_path) -> FakeNet:
    """uid 0 owner, 1 alice (the lead validator), 2 bob (honest), 3 charlie (noise), 4 dave (idle)."""
    return lead_net(tmp_path)


def upload(net: FakeNet, name: str, window: int, strategy=honest_upload, *, late: bool = False) -> bytes:
    """The miner `name` makes its window-`window` upload now (chain time) and returns the bytes."""
    m = net.miner(name)
    plan = plan_window(m, window)
    data, _ = strategy(m, plan, m.gm.fingerprint())
    assert data is not None
    head = net.chain.head
    if late:  # after the window's last block: stamped past the deadline (upload_grace_s is 0)
        net.chain.advance_to(m.clock.last_block(window) + 2)
    assert upload_update(m, plan, data, allow_late=late).key == layout.gradient_key(window)
    net.chain.head = head
    return data


def test_lead_window_admits_rates_weighs_and_records(net):
    v = net.validator("alice")
    ensure_peer_lists(v, [0], net.chain.metagraph(net.netuid))
    sent = {2: upload(net, "bob", 0), 3: upload(net, "charlie", 0, noise)}
    theta_0 = v.gm.fingerprint()
    net.chain.advance_to(v.clock.last_block(0) + 1)

    row = run_window(v, 0)

    # admit and evaluate: both well formed; the trained update lowers the loss, the noise does not
    miners = row["miners"]
    assert set(miners) == {"2", "3", "4"}
    assert miners["2"]["reason"] is None and miners["3"]["reason"] is None
    assert miners["4"]["reason"] == "missing"
    assert miners["2"]["improvement_random"] > 0
    assert miners["3"]["improvement_random"] < 0.2 * miners["2"]["improvement_random"]
    assert miners["2"]["improvement_assigned"] > miners["2"]["improvement_random"]  # trained on its own data
    # rate: the honest miner won the window's match
    ordinals = v.state.ratings.ordinals()
    assert ordinals[2] > 0 > ordinals[3]
    assert v.state.ratings.compliance()[2] > v.state.ratings.compliance()[3]
    assert miners["2"]["score"] > 0 and miners["3"]["score"] == 0.0
    # why (issue 31): the honest miner is paid first for its counted gain; each zero names its reason
    assert (miners["2"]["rank"], miners["2"]["compliant"], miners["2"]["counted"], miners["2"]["why"]) == \
        (1, True, True, None)
    assert miners["2"]["contribution"] > 0 and row["pay_score"] == "contribution"
    assert miners["3"]["rank"] is None and miners["3"]["why"] in ("not_compliant", "no_gain")
    assert (miners["4"]["why"], miners["4"]["compliant"], miners["4"]["contribution"]) == ("missing", None, 0.0)
    # weigh: one call, with the code's own version_key (not the chain's weights_version, 7 here: sending
    # that back would leave the owner no upgrade lever); burn to the owner, the rest to the honest miner
    assert row["weights_set"] is True
    [call] = net.chain.weights_calls
    assert call.hotkey == net.hotkey("alice") and call.version_key == VERSION_KEY
    weights = dict(zip(call.uids, call.weights, strict=True))
    assert weights == pytest.approx({0: v.hp.burn_rate, 2: 1 - v.hp.burn_rate})
    assert v.state.last_weights_interval == 0

    # record: the bootstrap peers' admitted uploads, by uid, with the digests of what was uploaded
    assert row["sync/status"] == "lead:2"
    read = fetch_record(net.peers(), net.hotkey("alice"), 0)
    assert read.ok, read.describe()
    record = read.value
    assert [e.uid for e in record.included] == [2, 3]
    assert [e.sha256 for e in record.included] == [hashlib.sha256(sent[u]).hexdigest() for u in (2, 3)]
    # the record points at the lead's content-addressed mirrors, which hold exactly what was uploaded
    assert all(e.key == layout.input_key(0, e.sha256) for e in record.included)
    assert [net.store.objects[("bucket-alice", e.key)][0] for e in record.included] == [sent[u] for u in (2, 3)]
    assert record.base_fingerprint == theta_0 != record.next_fingerprint == v.gm.fingerprint()
    assert v.gm.window == 1 and row["outer/used"] == 2
    # the next peer lists: a bootstrap one for window 1, and the successes of window 0 for window 2
    peers = net.peers()
    assert fetch_peer_list(peers, net.hotkey("alice"), 1).value == [2, 3, 4]
    assert fetch_peer_list(peers, net.hotkey("alice"), 2).value == [2]
    # what survives a restart
    saved = json.loads((v.state_dir / "run_state.json").read_text())
    assert saved["last_window"] == 0 and saved["last_weights_interval"] == 0
    assert len(saved["seen"]) == 2
    assert json.loads((v.state_dir / "ratings.json").read_text())["last_window"] == 0

    # every other node reaches the same theta_1: by replaying the record, or by its own gather
    replayer = GlobalModel.initial(v.hp, torch.device("cpu"))
    assert apply_record(replayer, record, peers) is ApplyOutcome.OK
    assert replayer.fingerprint() == record.next_fingerprint
    bob = net.miner("bob")
    deadline = bob.clock.deadline(0)
    assert gather_and_step(bob, net.chain.metagraph(net.netuid), net.hotkey("alice"), 0, deadline) == 2
    assert bob.gm.fingerprint() == record.next_fingerprint
    assert verify_records(bob, net.hotkey("alice"), 1) == SyncStatus.IN_SYNC and bob.unverified == {}


def test_late_missing_and_uncommitted_uploads_are_scored_not_aggregated(net):
    v = net.validator("alice")
    net.add("erin")  # registered, committed nothing usable
    net.chain._commitments[net.hotkey("erin")] = "not a bucket"
    ensure_peer_lists(v, [0], net.chain.metagraph(net.netuid))
    upload(net, "bob", 0)
    upload(net, "charlie", 0, late=True)
    net.chain.advance_to(v.clock.last_block(0) + 1)

    row = run_window(v, 0)

    reasons = {uid: m["reason"] for uid, m in row["miners"].items()}
    assert reasons == {"2": None, "3": "late", "4": "missing", "5": "no_commitment"}
    record = fetch_record(net.peers(), net.hotkey("alice"), 0).value
    assert [e.uid for e in record.included] == [2]
    assert fetch_peer_list(net.peers(), net.hotkey("alice"), 2).value == [2]
    ordinals = v.state.ratings.ordinals()
    assert all(ordinals[2] > ordinals[u] for u in (3, 4, 5))
    [call] = net.chain.weights_calls
    assert max(zip(call.weights, call.uids, strict=True))[1] == 2 and 3 not in call.uids


def test_follower_validator_replays_the_leads_record_and_publishes_only_its_verdict_and_peer_lists(net):
    net.add("frank", stake=5_000.0, permit=True)  # uid 5: a second validator, less stake than alice
    lead, follower = net.validator("alice"), net.validator("frank")
    ensure_peer_lists(lead, [0], net.chain.metagraph(net.netuid))
    ensure_peer_lists(follower, [0], net.chain.metagraph(net.netuid))  # its own bootstrap list, ready for a hand-over
    upload(net, "bob", 0)
    upload(net, "charlie", 0, noise)
    net.chain.advance_to(lead.clock.last_block(0) + 1)

    assert run_window(lead, 0)["sync/status"] == "lead:2"
    row = run_window(follower, 0)

    assert row["sync/status"] == SyncStatus.IN_SYNC
    assert follower.gm.window == 1 and follower.gm.fingerprint() == lead.gm.fingerprint()
    assert set(row["miners"]) == {"2", "3", "4"}  # validators are not judged as miners
    # the follower checked the record (issue 27) and publishes only its signed verdict attesting it, and its own
    # peer list two windows ahead (in place should it become the lead); no record, no mirrors, no checkpoint
    assert sorted(k for b, k in net.store.objects if b == "bucket-frank") == sorted(
        [layout.verdict_key(0), layout.peers_key(0), layout.peers_key(1), layout.peers_key(2)])
    # the same bootstrap list as the lead's: both seed it from theta_0's fingerprint
    assert fetch_peer_list(net.peers(), net.hotkey("frank"), 0).value == \
        fetch_peer_list(net.peers(), net.hotkey("alice"), 0).value
    verdict = fetch_verdict(net.peers(), net.hotkey("frank"), 0).value
    assert verdict is not None and verdict.valid and verdict.next_fingerprint == lead.gm.fingerprint()
    assert verdict.lead_hotkey == net.hotkey("alice")
    assert [c.hotkey for c in net.chain.weights_calls] == [net.hotkey("alice"), net.hotkey("frank")]


def test_weights_once_per_interval_and_empty_windows_record_no_change(tmp_path):
    net = FakeNet(tmp_path, hp=tiny_hparams(weights_interval=2))
    net.add("owner", owner=True)
    net.add("alice", stake=10_000.0, permit=True)
    net.add("bob")
    v = net.validator("alice")
    ensure_peer_lists(v, [0], net.chain.metagraph(net.netuid))
    theta_0 = v.gm.fingerprint()
    for window in (0, 1):
        net.chain.advance_to(v.clock.last_block(window) + 1)
        row = run_window(v, window)
        assert row["miners"]["2"]["reason"] == "missing"
        record = fetch_record(net.peers(), net.hotkey("alice"), window).value
        assert record.included == () and record.base_fingerprint == record.next_fingerprint == theta_0
    assert v.gm.window == 2 and v.gm.fingerprint() == theta_0
    # interval 0 spans windows 0 and 1: set once; nobody scored, so all weight goes to the owner's uid
    [call] = net.chain.weights_calls
    assert call.uids == [0] and call.weights == [1.0]
    assert v.state.last_window == 1 and v.state.last_weights_interval == 0


@pytest.mark.parametrize("flag", ["lr", "veto"])
def test_a_rogue_leads_record_is_rejected_the_follower_takes_the_honest_step_and_the_lead_is_passed_over(
        net, monkeypatch, flag):
    """roguelead (template/sim/rogue_validator.py): alice, the top-stake lead, signs a wrong record; frank rejects it,
    publishes a signed rejection, takes the honest step itself (what the miners compute) and leads the next window."""
    from template.sim.rogue_validator import rogue_publish_record
    net.add("frank", stake=5_000.0, permit=True)
    rogue, follower = net.validator("alice"), net.validator("frank")
    ensure_peer_lists(rogue, [0], net.chain.metagraph(net.netuid))
    upload(net, "bob", 0)
    upload(net, "charlie", 0)
    net.chain.advance_to(rogue.clock.last_block(0) + 1)
    monkeypatch.setattr(lead_module, "sign_record", rogue_publish_record(flag))
    assert run_window(rogue, 0)["sync/status"] == "lead:2"
    monkeypatch.undo()
    row = run_window(follower, 0)
    verdict = fetch_verdict(net.peers(), net.hotkey("frank"), 0).value
    assert verdict is not None and not verdict.valid and verdict.lead_hotkey == net.hotkey("alice")
    assert follower.gm.window == 1 and row["sync/status"] == SyncStatus.IN_SYNC
    assert follower.gm.fingerprint() == rogue.gm.fingerprint()  # the honest step (the rogue stepped honestly itself)
    mg = net.chain.metagraph(net.netuid)
    assert find_lead(net.peers(), mg, net.hp.min_validator_stake, 1) == net.neurons["frank"].uid
    # the follower keeps its own peer list two windows ahead: after a hand-over the new lead's list is in place
    peer_list = fetch_peer_list(net.peers(), net.hotkey("frank"), 2)
    assert peer_list.ok and set(peer_list.value) <= {net.neurons["bob"].uid, net.neurons["charlie"].uid}
