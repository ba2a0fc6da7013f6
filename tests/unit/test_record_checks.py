"""Records can be checked (issue 15, property 6): a node replays a lead record only if every entry passes the
gather's deterministic admission (deadline, signature, fields and receipt, codec, base), so a faulty lead
cannot slip junk into theta. Real signed artifacts over the in-memory buckets of tests/unit/fakes.py."""

from __future__ import annotations

import hashlib

import pytest
import torch

from template.node.neuron import WindowClock
from template.node.sync import ApplyOutcome, GlobalModel, RecordAdmission, SyncStatus, apply_record, catch_up
from template.protocol import layout
from template.protocol.artifacts import write_tensor_artifact
from template.protocol.data import data_receipt, sample_ids
from template.protocol.records import AggregationRecord, RecordEntry
from template.protocol.sparseloco import compress
from tests.unit.fakes import FakeNet, Lead

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def check(net: FakeNet) -> RecordAdmission:
    return RecordAdmission(net.heldout_start, WindowClock(net.chain, net.hp).deadline)


def test_an_admissible_record_replays(net):
    lead = Lead(net)
    record = lead.window(0)
    gm = GlobalModel.initial(net.hp, CPU)
    assert apply_record(gm, record, net.peers(), check(net)) is ApplyOutcome.OK
    assert gm.fingerprint() == record.next_fingerprint


def test_a_late_upload_in_a_record_is_rejected(net):
    lead = Lead(net)
    record = lead.window(0)
    data, _ = net.store.objects[("bucket-bob", layout.gradient_key(0))]
    net.chain.advance_to(WindowClock(net.chain, net.hp).last_block(0) + 5)  # past the deadline
    net.neurons["bob"].bucket.put_update(0, data)  # the same bytes (sha256 as listed), uploaded late
    gm = GlobalModel.initial(net.hp, CPU)
    fp0 = gm.fingerprint()
    assert apply_record(gm, record, net.peers(), check(net)) is ApplyOutcome.INADMISSIBLE
    assert gm.fingerprint() == fp0 and gm.window == 0
    assert apply_record(gm, record, net.peers()) is ApplyOutcome.OK  # without the check it would be applied


@pytest.mark.parametrize("junk", ["wrong_receipt", "other_base", "other_window"])
def test_a_record_listing_junk_is_rejected_and_catch_up_treats_it_as_absent(net, junk):
    lead = Lead(net)
    hp, gm_lead = net.hp, lead.gm
    bob = net.neurons["bob"]
    gen = torch.Generator().manual_seed(5)
    wire, _ = compress({n: torch.randn(s, generator=gen) * 1e-2 for n, s in gm_lead.shapes().items()}, None,
                       gm_lead.codec, hp.ef_beta)
    fields = {"uid": bob.uid, "base_fingerprint": gm_lead.fingerprint(), "data_receipt": "00" * 32,
              "num_inner_steps": hp.inner_steps,
              "codec": {"chunk_size": hp.chunk_size, "topk": hp.topk, "bits": hp.quant_bits}}
    window = 0
    if junk == "other_base":
        fields["base_fingerprint"] = "cd" * 32
    if junk == "other_window":
        window = 1
    if junk != "wrong_receipt":
        fields["data_receipt"] = data_receipt(sample_ids(bob.uid, window, hp.data_seed, hp.samples_per_window,
                                                         net.heldout_start))
    data = write_tensor_artifact(wire, kind="gradient", window=window, keypair=bob.keypair, fields=fields)
    bob.bucket.put_update(0, data)
    record = AggregationRecord(window=0, base_fingerprint=gm_lead.fingerprint(), next_fingerprint="ef" * 32,
                               outer_lr=hp.outer_lr,
                               included=(RecordEntry(uid=bob.uid, hotkey=net.hotkey("bob"),
                                                     key=layout.gradient_key(0),
                                                     sha256=hashlib.sha256(data).hexdigest()),))
    net.neurons["alice"].bucket.put_record(0, record, net.neurons["alice"].keypair)
    gm = GlobalModel.initial(net.hp, CPU)
    fp0 = gm.fingerprint()
    assert apply_record(gm, record, net.peers(), check(net)) is ApplyOutcome.INADMISSIBLE
    assert gm.fingerprint() == fp0
    status = catch_up(gm, 1, net.peers(), net.hotkey("alice"), CPU, check=check(net))
    assert status is SyncStatus.IN_SYNC and gm.window == 1 and gm.fingerprint() == fp0  # rejected: no change
