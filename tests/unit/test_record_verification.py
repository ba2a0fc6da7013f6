"""A lead's record is verified, not trusted (issue 27): each check of gauntlet/verify.py as a replaying node runs it
(template/node/sync.py with `RecordAdmission.verify`), on real signed artifacts over the in-memory buckets of
tests/unit/fakes.py, the rogue lead's corruptions played by template/sim/protocol_attacks.py."""

from __future__ import annotations

import hashlib

import pytest
import torch

from storage.peers import fetch_record, fetch_verdict
from template.node.neuron import WindowClock, find_lead
from template.node.sync import ApplyOutcome, GlobalModel, SyncStatus, apply_record, catch_up, resync
from template.node.trust import record_check
from template.protocol import layout
from template.protocol.artifacts import write_tensor_artifact
from template.protocol.checkpoint import checkpoint_fields
from template.protocol.records import AggregationRecord, RecordEntry
from template.protocol.verdicts import Verdict
from template.sim.protocol_attacks import ROGUE_LR, corrupt_record, forged_checkpoint_tensors
from tests.unit.fakes import FakeNet, Lead, lead_net, node_guard

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture
def net(tmp_path) -> FakeNet:
    """uid 0 the owner, 1 alice (the lead: most stake), 2 bob, 3 charlie, 4 dave (miners), 5 frank (validator)."""
    return lead_net(tmp_path, validators=(("frank", 6_000.0),))


def stake(net: FakeNet) -> dict[str, float]:
    return {net.hotkey("alice"): 10_000.0, net.hotkey("frank"): 6_000.0}


def checker(net: FakeNet, gm: GlobalModel, verdicts: list[Verdict] | None = None,
            admitted: dict[int, list[int]] | None = None):
    return record_check(net.heldout_start, WindowClock(net.chain, net.hp).deadline, gm, net.peers(), stake(net),
                        admitted_of=(admitted or {}).get, guard_batch=node_guard(net),
                        on_verdict=None if verdicts is None else verdicts.append)


def peer_list(net: FakeNet, window: int, names: tuple[str, ...]) -> None:
    alice = net.neurons["alice"]
    alice.bucket.put_peer_list(window, sorted(net.neurons[n].uid for n in names), alice.keypair)


def test_an_honest_record_replays_and_is_attested(net):
    peer_list(net, 0, ("bob", "charlie"))
    record = Lead(net).window(0)
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    check = checker(net, gm, verdicts, {0: [net.neurons["bob"].uid, net.neurons["charlie"].uid]})
    assert apply_record(gm, record, net.peers(), check, net.hotkey("alice")) is ApplyOutcome.OK
    assert gm.fingerprint() == record.next_fingerprint and gm.verified == {1: record.next_fingerprint}
    assert verdicts == [Verdict(0, net.hotkey("alice"), record.next_fingerprint, valid=True)]


def test_an_inflated_outer_lr_is_rejected_and_theta_stays(net):
    peer_list(net, 0, ("bob", "charlie"))
    lead = Lead(net)
    lead.window(0, outer_lr=ROGUE_LR)  # what is published; the lead itself stepped honestly
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    fp0 = gm.fingerprint()
    record = fetch_record(net.peers(), net.hotkey("alice"), 0).value
    assert record is not None and record == corrupt_record(lead.records[0], "lr")
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) \
        is ApplyOutcome.INVALID
    assert gm.fingerprint() == fp0 and gm.window == 0 and net.hotkey("alice") in gm.distrusted
    assert len(verdicts) == 1 and not verdicts[0].valid and "outer_lr" in verdicts[0].reason
    apply_record(gm, record, net.peers(), None, net.hotkey("alice"))
    assert gm.fingerprint() != fp0  # unchecked (before issue 27), the step was taken at outer_lr 100


def test_an_entry_off_the_leads_peer_list_is_rejected(net):
    peer_list(net, 0, ("bob",))  # charlie is not on the list, but its upload is admissible
    record = Lead(net).window(0, miners=("bob", "charlie"))
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) \
        is ApplyOutcome.INVALID
    assert "not on the lead's peer list" in verdicts[0].reason and gm.window == 0


def test_an_admitted_peer_left_out_is_rejected(net):
    peer_list(net, 0, ("bob", "charlie", "dave"))
    lead = Lead(net)
    lead.upload("dave", 0)  # dave uploaded, and this node admitted it; the lead left it out
    record = lead.window(0, miners=("bob", "charlie"))
    uids = sorted(net.neurons[n].uid for n in ("bob", "charlie", "dave"))
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    assert apply_record(gm, record, net.peers(), checker(net, gm, verdicts, {0: uids}), net.hotkey("alice")) \
        is ApplyOutcome.INVALID
    assert "left out" in verdicts[0].reason


def test_a_veto_is_rejected(net):
    peer_list(net, 0, ("bob", "charlie"))
    lead = Lead(net)
    honest = lead.window(0, publish=False)
    vetoed = corrupt_record(honest, "veto")
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    fp0 = gm.fingerprint()
    assert apply_record(gm, vetoed, net.peers(), checker(net, gm, verdicts), net.hotkey("alice")) \
        is ApplyOutcome.INVALID
    assert "veto" in verdicts[0].reason and gm.fingerprint() == fp0 and gm.window == 0


def test_catch_up_skips_a_rogue_record_and_what_builds_on_it_without_resyncing_onto_the_rogue(net):
    for w in range(3):
        peer_list(net, w, ("bob", "charlie"))
    lead = Lead(net)
    lead.window(0)
    lead.window(1, outer_lr=ROGUE_LR)
    lead.window(2, checkpoint=True)  # the rogue's checkpoint of window 3 holds its own (honest-stepped) theta
    gm, verdicts = GlobalModel.initial(net.hp, CPU), []
    status = catch_up(gm, 3, net.peers(), net.hotkey("alice"), CPU, check=checker(net, gm, verdicts))
    assert status is SyncStatus.IN_SYNC and gm.window == 3
    assert gm.fingerprint() == lead.fingerprints[1]  # theta_1: the only valid record applied
    assert [v.valid for v in verdicts] == [True, False]


def forged_checkpoint(net: FakeNet, lead: Lead, window: int) -> str:
    """The rogue's checkpoint of `window`: other weights, self-consistent (its manifest names their fingerprint)."""
    gm = GlobalModel.initial(net.hp, CPU)
    tensors = forged_checkpoint_tensors({n: p.detach() for n, p in lead.gm.model.named_parameters()})
    gm.load_state(tensors, window)
    alice = net.neurons["alice"]
    data = write_tensor_artifact(tensors, kind="checkpoint", window=window, keypair=alice.keypair,
                                 fields=checkpoint_fields(net.hp, gm.fingerprint(), lead.gm.lineage, None))
    alice.bucket.put_checkpoint(window, data)
    return gm.fingerprint()


def test_a_checkpoint_is_loaded_only_on_a_verified_replay_or_a_stake_majority(net):
    for w in range(2):
        peer_list(net, w, ("bob", "charlie"))
    lead = Lead(net)
    lead.run(2)
    forged = forged_checkpoint(net, lead, 2)
    joiner = GlobalModel.initial(net.hp, CPU)
    check = checker(net, joiner)
    resync(joiner, net.peers(), net.hotkey("alice"), 2, CPU, check.accept_checkpoint)
    assert joiner.fingerprint() != forged and joiner.window == 0  # not attested: theta_0, replay from there
    frank = net.neurons["frank"]  # frank attests the true theta_2, not the forged one: no majority for it
    frank.bucket.put_verdict(Verdict(1, net.hotkey("alice"), lead.fingerprints[2], valid=True), frank.keypair)
    resync(joiner, net.peers(), net.hotkey("alice"), 2, CPU, check.accept_checkpoint)
    assert joiner.window == 0
    honest = GlobalModel.initial(net.hp, CPU)  # a node that replayed the verified records itself
    assert catch_up(honest, 2, net.peers(), net.hotkey("alice"), CPU, check=checker(net, honest)) is SyncStatus.IN_SYNC
    assert honest.verified[2] == lead.fingerprints[2] != forged
    assert not checker(net, honest).accept_checkpoint(2, forged)
    assert checker(net, honest).accept_checkpoint(2, lead.fingerprints[2])


def test_an_attested_checkpoint_lets_a_late_joiner_in(net):
    for w in range(2):
        peer_list(net, w, ("bob", "charlie"))
    lead = Lead(net)
    lead.run(2, w1={"checkpoint": True})
    alice = net.neurons["alice"]
    alice.bucket.put_verdict(Verdict(1, net.hotkey("alice"), lead.fingerprints[2], valid=True), alice.keypair)
    joiner = GlobalModel.initial(net.hp, CPU)
    resync(joiner, net.peers(), net.hotkey("alice"), 2, CPU, checker(net, joiner).accept_checkpoint)
    assert joiner.window == 2 and joiner.fingerprint() == lead.fingerprints[2]  # alice holds 10k of 16k


def test_a_rejected_lead_loses_the_lead(net):
    mg = net.chain.metagraph(net.netuid)
    assert find_lead(net.peers(), mg, net.hp.min_validator_stake, 1) == net.neurons["alice"].uid
    frank = net.neurons["frank"]
    frank.bucket.put_verdict(Verdict(0, net.hotkey("alice"), "ab" * 32, valid=False, reason="outer_lr 100.0"),
                             frank.keypair)
    assert find_lead(net.peers(), mg, net.hp.min_validator_stake, 1) == frank.uid
    assert find_lead(net.peers(), mg, net.hp.min_validator_stake, 0) == net.neurons["alice"].uid  # before it
    assert fetch_verdict(net.peers(), net.hotkey("frank"), 0).ok


def test_a_small_validator_cannot_depose_an_honest_lead(net):
    net.add("gina", stake=1_000.0, permit=True)
    gina = net.neurons["gina"]
    gina.bucket.put_verdict(Verdict(0, net.hotkey("alice"), "ab" * 32, valid=False, reason="lies"), gina.keypair)
    mg = net.chain.metagraph(net.netuid)
    assert find_lead(net.peers(), mg, net.hp.min_validator_stake, 1) == net.neurons["alice"].uid  # 1k of 7k


def test_an_off_list_entry_helper_needs_an_entry():
    record = AggregationRecord(window=0, base_fingerprint="ab" * 32, next_fingerprint="cd" * 32, outer_lr=1.0,
                               included=())
    with pytest.raises(ValueError):
        corrupt_record(record, "offlist")
    extra = RecordEntry(uid=9, hotkey="x", key=layout.gradient_key(0), sha256=hashlib.sha256(b"").hexdigest())
    assert corrupt_record(record, "offlist", offlist=extra).included == (extra,)
    with pytest.raises(ValueError):
        corrupt_record(record, "nonsense")


def test_a_deposed_rogues_stake_attests_nothing_so_the_honest_checkpoint_is_accepted(net):
    """alice holds most of the stake and forges; once frank's rejection deposes her, frank's attestation alone
    (all the stake left) lets a joiner load the honest checkpoint, and alice's attestation of her forgery counts
    for nothing."""
    for w in range(2):
        peer_list(net, w, ("bob", "charlie"))
    lead = Lead(net)
    lead.run(2, w1={"checkpoint": True})
    alice, frank = net.neurons["alice"], net.neurons["frank"]
    alice.bucket.put_verdict(Verdict(1, net.hotkey("alice"), "ee" * 32, valid=True), alice.keypair)
    frank.bucket.put_verdict(Verdict(1, net.hotkey("alice"), lead.fingerprints[2], valid=True), frank.keypair)
    joiner = GlobalModel.initial(net.hp, CPU)
    assert not checker(net, joiner).accept_checkpoint(2, lead.fingerprints[2])  # 6k of 16k
    frank.bucket.put_verdict(Verdict(0, net.hotkey("alice"), "ab" * 32, valid=False, reason="outer_lr 100.0"),
                             frank.keypair)
    assert checker(net, joiner).accept_checkpoint(2, lead.fingerprints[2])  # 6k of 6k
    assert not checker(net, joiner).accept_checkpoint(2, "ee" * 32)
