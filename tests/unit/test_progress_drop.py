"""Steps must make progress (issue 27): a gather-set member whose own step does not lower the guard loss is
dropped by the lead and named in the record (`AggregationRecord.dropped`); every replaying node recomputes the
members' own guard gains and applies the record only when it agrees (`gauntlet.verify.dropped_problem`). On the
in-memory buckets of tests/unit/fakes.py with real signed artifacts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from storage.peers import fetch_peer_list, fetch_record
from template.node.miner import follow_network, verify_records
from template.node.neuron import WindowClock
from template.node.sync import ApplyOutcome, GlobalModel, SyncStatus, apply_record
from template.node.trust import record_check
from template.protocol.data import loss_curve_ids
from template.protocol.records import AggregationRecord
from template.protocol.verdicts import Verdict
from tests.unit.fakes import FakeNet, Lead, lead_net, node_guard

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture
def net(tmp_path) -> FakeNet:
    """uid 0 the owner, 1 alice (the lead), 2 bob (descends the guard loss), 3 charlie, 4 dave (raises it)."""
    return lead_net(tmp_path)


def guard(net: FakeNet) -> torch.Tensor:
    return net.dataset.batch(loss_curve_ids(net.heldout_start, net.num_samples))


def descent(net: FakeNet):
    """An update whose step (theta -= lr * update) descends the guard loss: along its gradient."""
    def delta(gm: GlobalModel) -> dict[str, torch.Tensor]:
        batch = guard(net)
        gm.model.zero_grad()
        _, loss = gm.model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in gm.model.named_parameters() if p.grad is not None}
        gm.model.zero_grad()
        total = torch.sqrt(sum((g * g).sum() for g in grads.values()))
        return {n: 0.05 * g / total for n, g in grads.items()}
    return delta


def wrecking(gm: GlobalModel) -> dict[str, torch.Tensor]:
    """A large random update: its step raises the guard loss (and shares no positions with the descent, so the
    copy check sees nothing)."""
    gen = torch.Generator().manual_seed(99)
    return {n: torch.randn(s, generator=gen) for n, s in gm.shapes().items()}


def lead_with_ascent(net: FakeNet, **published_edits: object) -> tuple[Lead, AggregationRecord]:
    """Window 0: bob descends the guard loss, dave's step raises it."""
    alice = net.neurons["alice"]
    alice.bucket.put_peer_list(0, [net.neurons["bob"].uid, net.neurons["dave"].uid], alice.keypair)
    lead = Lead(net)
    lead.deltas = {"bob": descent(net), "dave": wrecking}
    net.chain.advance_to(net.chain.head + net.hp.blocks_per_window // 2)  # uploads made inside the window
    record = lead.window(0, ("bob", "dave"), **published_edits)
    net.chain.advance_to(net.hp.blocks_per_window)
    return lead, record


def checker(net: FakeNet, gm: GlobalModel, verdicts: list[Verdict]):
    uids = [net.neurons[n].uid for n in ("bob", "dave")]
    return record_check(net.heldout_start, WindowClock(net.chain, net.hp).deadline, gm, net.peers(),
                        {net.hotkey("alice"): 10_000.0}, admitted_of={0: uids}.get, guard_batch=node_guard(net),
                        on_verdict=verdicts.append)


def test_the_lead_drops_a_member_whose_step_raises_the_guard_loss_and_a_follower_agrees(net):
    _, record = lead_with_ascent(net)
    assert record.dropped == (net.neurons["dave"].uid,)
    assert [e.uid for e in record.included] == [2, 4]  # the gather set is still named in full
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    published = fetch_record(net.peers(), net.hotkey("alice"), 0).value
    assert published == record
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) is ApplyOutcome.OK
    assert gm.fingerprint() == record.next_fingerprint
    assert verdicts == [Verdict(0, net.hotkey("alice"), record.next_fingerprint, valid=True)]


def test_a_miners_own_step_drops_the_same_member_and_matches_the_lead(net):
    _, record = lead_with_ascent(net)
    m = net.miner("bob")
    assert follow_network(m, 0) == SyncStatus.IN_SYNC
    assert m.gm.window == 1 and m.gm.fingerprint() == record.next_fingerprint
    assert verify_records(m, net.hotkey("alice"), 1) == SyncStatus.IN_SYNC


def test_a_replay_without_checks_applies_the_kept_members_only(net):
    _, record = lead_with_ascent(net)
    gm = GlobalModel.initial(net.hp, CPU)
    assert apply_record(gm, record, net.peers(), None, net.hotkey("alice")) is ApplyOutcome.OK
    assert gm.fingerprint() == record.next_fingerprint


@pytest.mark.parametrize("dropped", [(), (2, 4), (2,)], ids=["keeps-the-ascent", "drops-honest-too", "wrong-one"])
def test_a_record_whose_drop_set_disagrees_is_rejected(net, dropped):
    lead_with_ascent(net, dropped=dropped)
    record = fetch_record(net.peers(), net.hotkey("alice"), 0).value
    assert record is not None and record.dropped == dropped
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    fp0 = gm.fingerprint()
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) \
        is ApplyOutcome.INVALID
    assert gm.fingerprint() == fp0 and gm.window == 0
    assert len(verdicts) == 1 and not verdicts[0].valid
    assert ("dropped" in verdicts[0].reason) or ("kept" in verdicts[0].reason)


def test_dropped_round_trips_and_old_bodies_stay_valid():
    fp = "ab" * 32
    from template.protocol.records import RecordEntry
    entries = tuple(RecordEntry(uid=u, hotkey="h", key="k", sha256="cd" * 32) for u in (2, 3))
    record = AggregationRecord(window=1, base_fingerprint=fp, next_fingerprint=fp, outer_lr=1.0, included=entries,
                               dropped=(3,))
    assert AggregationRecord.from_body(record.to_body()) == record
    old = dataclasses.replace(record, dropped=())
    assert "dropped" not in old.to_body() and AggregationRecord.from_body(old.to_body()) == old
    for bad in ([4], [3, 2], [3, 3], ["3"], 3, [True]):
        with pytest.raises(ValueError, match="dropped"):
            AggregationRecord.from_body({**record.to_body(), "dropped": bad})


def lead_window_0_dropping_bob(net, monkeypatch):
    """alice leads window 0 over bob's upload with the no-gain rule made to drop every first member (bob): the
    runtime's lead step, record and probation with a drop in them."""
    from template.node import sync as sync_module
    from template.node.validator import ensure_peer_lists, run_window
    from tests.unit.test_validator_window import upload

    monkeypatch.setattr(sync_module, "no_gain_members", lambda gains: [0] if gains else [])
    v = net.validator("alice")
    ensure_peer_lists(v, [0], net.chain.metagraph(net.netuid))
    upload(net, "bob", 0)
    net.chain.advance_to(v.clock.last_block(0) + 1)
    run_window(v, 0)
    return v


def test_the_lead_puts_a_dropped_member_on_probation(net, monkeypatch):
    """The runtime lead (`run_window`): bob's update succeeds in evaluation, but here the progress test is made to
    find no gain in it (as it finds none in a cancelling sybil's): the record drops bob, and bob is off the next
    peer list and on probation."""
    v = lead_window_0_dropping_bob(net, monkeypatch)
    record = fetch_record(net.peers(), net.hotkey("alice"), 0).value
    assert record is not None and [e.uid for e in record.included] == [2] and record.dropped == (2,)
    assert record.next_fingerprint == record.base_fingerprint == v.gm.fingerprint()  # nothing left to step
    assert fetch_peer_list(net.peers(), net.hotkey("alice"), 2).value == []
    assert v.state.probation.needs == {2: 3}


def test_probation_survives_a_restart_of_the_lead(net, monkeypatch):
    """Issue 27: the lead saves its probation with its state (run_state.json); restarted mid-probation, it keeps
    bob, who has since succeeded once, off the next peer list (he needs three successes in a row)."""
    from template.node.state import load_validator_state
    from template.node.validator import run_window, save_state
    from tests.unit.test_validator_window import upload

    v = lead_window_0_dropping_bob(net, monkeypatch)
    assert v.state.probation.needs == {2: 3}
    save_state(v)
    monkeypatch.undo()  # from here on bob's own step counts

    restarted = net.validator("alice")
    restarted.state = load_validator_state(v.state_dir, alpha=net.hp.compliance_alpha)
    assert restarted.state.probation.needs == {2: 3}
    restarted.gm.load_state({n: p.detach().clone() for n, p in v.gm.model.named_parameters()}, v.gm.window)
    upload(net, "bob", 1)
    net.chain.advance_to(restarted.clock.last_block(1) + 1)
    row = run_window(restarted, 1)
    assert row is not None and row["sync/status"] == "lead:1"
    assert restarted.state.probation.needs == {2: 2}  # one success counted off, not a fresh start
    listed = fetch_peer_list(net.peers(), net.hotkey("alice"), 3).value
    assert listed is not None and 2 not in listed
