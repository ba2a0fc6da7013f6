"""The guard batch drawn after the deadline (issue 27): window w's guard block is the first block stamped after
its reveal deadline (`find_guard_block`, `WindowClock.guard_block`), its hash draws the guard ids out of the
training ids not assigned to the window's gather-set members (`gauntlet.progress.window_guard_ids`), and the
lead, every verifying node, a miner and a late replayer read the same batch (template/node/guard.py). On the
fake chain and in-memory buckets of tests/unit/fakes.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gauntlet.evaluate import mean_loss
from gauntlet.progress import window_guard_ids
from storage.peers import fetch_record
from template.node.guard import guard_reader
from template.node.miner import follow_network, verify_records
from template.node.neuron import StopFlag, WindowClock
from template.node.sync import ApplyOutcome, GlobalModel, SyncStatus, apply_record
from template.node.trust import record_check
from template.protocol.data import EVAL_MIN_PAGES, loss_curve_ids, sample_ids
from template.protocol.verdicts import Verdict
from template.protocol.windows import find_guard_block
from tests.unit.fakes import FakeNet, Lead, fake_guard_block, fake_guard_ids, lead_net, node_guard

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


# -- the guard block -------------------------------------------------------------------------------------------


@given(st.lists(st.floats(0, 30), min_size=1, max_size=60), st.floats(0, 2000), st.integers(0, 59),
       st.integers(0, 80))
def test_the_guard_block_is_the_first_block_stamped_after_the_deadline(steps, deadline, last, head):
    stamps = [sum(steps[: i + 1]) for i in range(len(steps))]  # non-decreasing, as chain timestamps are
    last = min(last, len(stamps) - 1)
    head = min(head, len(stamps) - 1)
    reads: list[int] = []

    def stamp(b: int) -> float:
        assert last < b <= head, "only produced blocks after the window are read"
        reads.append(b)
        return stamps[b]

    found = find_guard_block(last, deadline, stamp, head)
    after = [b for b in range(last + 1, head + 1) if stamps[b] > deadline]
    assert found == (after[0] if after else None)
    assert len(reads) <= 2 * max(1, (head - last)).bit_length() + 2  # a galloping search, not a walk


@pytest.fixture
def net(tmp_path) -> FakeNet:
    """uid 0 the owner, 1 alice (the lead), 2 bob, 3 charlie, 4 dave."""
    return lead_net(tmp_path)


def test_the_clock_finds_the_guard_block_once_it_is_produced(net):
    clock = WindowClock(net.chain, net.hp)
    deadline = clock.reveal_deadline(2)
    assert clock.guard_block(2) is None  # window 2 has not even begun
    net.chain.advance_to(clock.last_block(2))
    assert clock.guard_block(2) is None
    net.chain.advance_to(clock.last_block(2) + 5)
    block = clock.guard_block(2)
    assert block is not None and net.chain.block_timestamp(block) > deadline >= net.chain.block_timestamp(block - 1)
    assert block == fake_guard_block(net, 2)
    stopped = StopFlag()
    stopped.set()
    assert WindowClock(net.chain, net.hp).wait_for_guard_block(3, stopped) is None


def test_a_long_reveal_grace_moves_the_guard_block_past_the_first_block_after_the_window(tmp_path):
    from tests.unit.fakes import tiny_hparams
    net = FakeNet(tmp_path, hp=tiny_hparams(reveal_grace_s=30.0))  # 12 s blocks: the third block after the window
    clock = WindowClock(net.chain, net.hp)
    net.chain.advance_to(100)
    assert clock.guard_block(0) == clock.last_block(0) + 3


# -- the guard ids ---------------------------------------------------------------------------------------------


def test_lead_follower_and_late_replayer_read_the_same_guard_batch(net):
    members = [2, 4]
    block = fake_guard_block(net, 1)
    net.chain.advance_to(block)  # the lead reads it as soon as the block is out
    lead = guard_reader(WindowClock(net.chain, net.hp), net.dataset, net.hp, net.heldout_start, StopFlag())(1, members)
    net.chain.advance_to(block + 3)  # a verifying validator, a little later
    follower = node_guard(net)(1, members)
    net.chain.advance_to(block + 5_000)  # a node replaying the record much later, with a fresh clock
    late = guard_reader(WindowClock(net.chain, net.hp), net.dataset, net.hp, net.heldout_start, StopFlag())(1, members)
    assert lead is not None and follower is not None and late is not None
    assert torch.equal(lead, follower) and torch.equal(lead, late)
    ids = fake_guard_ids(net, 1, members)
    assert torch.equal(lead, net.dataset.batch(ids))
    assigned = {i for u in members for i in sample_ids(u, 1, net.hp.data_seed, net.hp.samples_per_window,
                                                       net.heldout_start)}
    assert not set(ids) & assigned and all(0 <= i < net.heldout_start for i in ids)
    assert not set(ids) & set(loss_curve_ids(net.heldout_start, net.num_samples))
    assert ids != fake_guard_ids(net, 2, members)  # a new draw each window


def test_the_guard_ids_follow_the_members_hash_and_window():
    kw = dict(data_seed=7, samples_per_window=16, num_train=400)
    a = window_guard_ids("aa" * 32, 3, [2, 4], **kw)
    assert a == window_guard_ids("aa" * 32, 3, [4, 2, 2], **kw)  # a set of members: order and repeats do not count
    assert len(a) == 32 == len(set(a))
    assert a != window_guard_ids("bb" * 32, 3, [2, 4], **kw)
    assert window_guard_ids("aa" * 32, 3, [2], **kw) != a
    tiny = window_guard_ids("aa" * 32, 3, [0, 1, 2], data_seed=7, samples_per_window=16, num_train=40)
    assert len(tiny) == 32 and all(0 <= i < 40 for i in tiny)  # too few ids left outside: the whole range


def test_the_guard_batch_is_drawn_by_page_a_few_page_reads_not_one_per_id():
    kw = dict(data_seed=7, samples_per_window=64, num_train=64 * 1000)
    ids = window_guard_ids("cc" * 32, 5, [1, 2, 3], page_samples=64, **kw)
    assigned = {i for u in (1, 2, 3) for i in sample_ids(u, 5, 7, 64, 64 * 1000)}
    assert len(ids) == 32 == len(set(ids)) and not set(ids) & assigned
    assert len({i // 64 for i in ids}) == EVAL_MIN_PAGES  # whole free pages (slots are whole pages): 4 reads
    per_id = window_guard_ids("cc" * 32, 5, [1, 2, 3], **kw)  # one id per read unit: about one page per id
    assert len({i // 64 for i in per_id}) > 2 * EVAL_MIN_PAGES


def test_an_unreadable_guard_block_is_a_warning_not_a_crash(net):
    net.chain.advance_to(net.hp.blocks_per_window + 2)
    net.chain.pruned.add(fake_guard_block(net, 0))
    assert node_guard(net)(0, [2, 3]) is None


# -- checks on the drawn batch ---------------------------------------------------------------------------------


def public_batch(net: FakeNet) -> torch.Tensor:
    return net.dataset.batch(loss_curve_ids(net.heldout_start, net.num_samples))


def grad(gm: GlobalModel, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    gm.model.zero_grad()
    _, loss = gm.model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    out = {n: p.grad.detach().clone() for n, p in gm.model.named_parameters() if p.grad is not None}
    gm.model.zero_grad()
    return out


def public_only(net: FakeNet, members: list[int]):
    """What a member that trained on the public loss-curve set sends, made to be as bad as it can be on the drawn
    guard: the step descends the public batch's loss and climbs the drawn guard's (the gradient of the public
    batch without its part along the guard's, minus the guard's)."""
    def delta(gm: GlobalModel) -> dict[str, torch.Tensor]:
        g_pub, g_guard = grad(gm, public_batch(net)), grad(gm, net.dataset.batch(fake_guard_ids(net, 0, members)))
        dot = sum((g_pub[n] * g_guard[n]).sum() for n in g_pub)
        sq = sum((g_guard[n] * g_guard[n]).sum() for n in g_guard)
        perp = {n: g_pub[n] - dot / sq * g_guard[n] for n in g_pub}
        out = {n: 4.0 * perp[n] - 0.5 * g_guard[n] for n in g_pub}
        total = torch.sqrt(sum((t * t).sum() for t in out.values()))
        return {n: 0.05 * t / total for n, t in out.items()}
    return delta


class PublicGuardLead(Lead):
    """A lead of the code before the drawn guard: its guard batch is the public loss-curve set."""

    def guard_batch(self, window: int, members: list[int]) -> torch.Tensor:
        return public_batch(self.net)


def public_window(net: FakeNet, lead: Lead):
    alice = net.neurons["alice"]
    alice.bucket.put_peer_list(0, [2, 3], alice.keypair)
    lead.deltas = {"bob": public_only(net, [2, 3])}
    net.chain.advance_to(net.hp.blocks_per_window // 2)  # uploads inside the window
    record = lead.window(0, ("bob", "charlie"))
    net.chain.advance_to(net.hp.blocks_per_window)  # the window's guard block is out
    return record


def loss_change(net: FakeNet, batch: torch.Tensor, delta) -> float:
    """The loss change on `batch` of theta_0's step by `delta`'s update alone at the outer lr."""
    gm = GlobalModel.initial(net.hp, CPU)
    before = mean_loss(gm.model, batch)
    upd = delta(gm)
    with torch.no_grad():
        for n, p in gm.model.named_parameters():
            p.sub_(net.hp.outer_lr * upd[n])
    return mean_loss(gm.model, batch) - before


def test_a_member_trained_on_the_public_set_gains_there_and_not_on_the_drawn_guard(net):
    delta = public_only(net, [2, 3])
    assert loss_change(net, public_batch(net), delta) < 0
    assert loss_change(net, net.dataset.batch(fake_guard_ids(net, 0, [2, 3])), delta) > 0


def checker(net: FakeNet, gm: GlobalModel, verdicts: list[Verdict]):
    return record_check(net.heldout_start, WindowClock(net.chain, net.hp).deadline, gm, net.peers(),
                        {net.hotkey("alice"): 10_000.0}, admitted_of={0: [2, 3]}.get, guard_batch=node_guard(net),
                        on_verdict=verdicts.append)


def test_a_drop_set_computed_on_the_public_batch_is_checked_on_the_drawn_one(net):
    """A lead guarding on the public set keeps bob (its step lowers the public loss); every verifying node
    guards on the drawn batch, where bob's step raises the loss, so the record's drop set is wrong."""
    record = public_window(net, PublicGuardLead(net))
    assert record.dropped == ()
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    fp0 = gm.fingerprint()
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) \
        is ApplyOutcome.INVALID
    assert gm.fingerprint() == fp0 and len(verdicts) == 1 and not verdicts[0].valid
    assert verdicts[0].reason == "kept uids [2] whose own step did not lower the guard loss"


def test_the_lead_on_the_drawn_guard_drops_it_and_followers_agree(net):
    record = public_window(net, Lead(net))
    assert record.dropped == (2,)
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) is ApplyOutcome.OK
    assert gm.fingerprint() == record.next_fingerprint and verdicts[0].valid
    m = net.miner("charlie")  # a miner's own guarded step draws the same batch and drops the same member
    assert follow_network(m, 0) == SyncStatus.IN_SYNC
    assert m.gm.fingerprint() == record.next_fingerprint


def test_a_node_that_cannot_read_the_guard_block_skips_the_guard_checks_only(net):
    record = public_window(net, Lead(net))
    net.chain.pruned.add(fake_guard_block(net, 0))
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) is ApplyOutcome.OK
    assert gm.fingerprint() == record.next_fingerprint  # the record's drop set taken as signed
    wrong = fetch_record(net.peers(), net.hotkey("alice"), 0).value
    assert wrong is not None
    gm2 = GlobalModel.initial(net.hp, CPU)
    assert apply_record(gm2, dataclasses.replace(wrong, outer_lr=100.0), net.peers(), checker(net, gm2, []),
                        net.hotkey("alice")) is ApplyOutcome.INVALID  # the other checks still run


def test_a_miner_that_cannot_read_the_guard_block_steps_unguarded_and_the_record_corrects_it(net):
    record = public_window(net, Lead(net))
    net.chain.pruned.add(fake_guard_block(net, 0))
    m = net.miner("charlie")
    follow_network(m, 0)
    assert m.gm.window == 1 and m.gm.fingerprint() != record.next_fingerprint  # bob kept: no guard to drop it
    net.chain.advance_to(2 * net.hp.blocks_per_window)
    assert verify_records(m, net.hotkey("alice"), 1) == SyncStatus.RESYNCED
    assert m.gm.window == 1 and m.gm.fingerprint() == record.next_fingerprint


def test_an_empty_record_replays_under_the_full_check(net):
    """No entries, no guard batch needed: the record replays (regression: the guard batch was unbound)."""
    alice = net.neurons["alice"]
    alice.bucket.put_peer_list(0, [], alice.keypair)
    record = Lead(net).window(0, ())
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    check = record_check(net.heldout_start, WindowClock(net.chain, net.hp).deadline, gm, net.peers(),
                         {net.hotkey("alice"): 10_000.0}, admitted_of={0: []}.get, guard_batch=node_guard(net),
                         on_verdict=verdicts.append)
    assert apply_record(gm, record, net.peers(), check, net.hotkey("alice")) is ApplyOutcome.OK
    assert gm.window == 1 and verdicts[0].valid
