"""The endpoint-owning hostile kinds (template/sim/adversaries.py `tarpit`, `backdater`) as a real attacker
runs them: their own HTTP server on 127.0.0.1, committed on chain; read through the real S3 client path.
The chain and the honest miner's bucket are the in-memory fakes of tests/unit/fakes.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from storage.bounded import FetchBudget
from storage.credentials import BucketAccess
from storage.peers import PeerBuckets
from template.node.miner import plan_window
from template.protocol import layout
from template.protocol.reads import ReadStatus
from template.sim import adversaries
from tests.unit.fakes import FakeNet, Lead

torch.set_num_threads(1)
BUDGET = FetchBudget(total_s=2.0, min_bytes_per_s=1000, startup_s=1.0)


@pytest.fixture
def net(tmp_path: Path):
    net = FakeNet(tmp_path)
    net.add("alice", stake=2000.0, permit=True)
    for name in ("bob", "mallory"):
        net.add(name)
    adversaries._memory.clear()
    yield net
    srv = adversaries._memory.pop("endpoint", None)
    if srv is not None:
        srv.stop()


def real_reader(net: FakeNet) -> PeerBuckets:
    """What another node sees: the chain's commitments, real S3 clients (the fake store is not used)."""
    peers = PeerBuckets(commitments=lambda: net.chain.commitments(net.netuid), budget=BUDGET)
    peers.refresh()
    return peers


def test_tarpit_commits_its_own_endpoint_and_is_cut_off(net: FakeNet) -> None:
    m = net.miner("mallory")
    assert adversaries.tarpit(m, plan_window(m, 0), m.gm.fingerprint()) == (None, None)
    srv = adversaries._memory["endpoint"]
    committed = BucketAccess.decode(net.chain.commitments(net.netuid)[net.hotkey("mallory")])
    assert committed.endpoint == srv.endpoint and (m.bucket.access.bucket, layout.gradient_key(0)) in srv.objects
    peers = real_reader(net)
    read = peers.get(net.hotkey("mallory"), layout.gradient_key(0), max_bytes=net.hp.max_upload_bytes)
    assert read.status is ReadStatus.TIMEOUT and srv.body_bytes_sent < len(srv.objects[
        (m.bucket.access.bucket, layout.gradient_key(0))].data)
    peers.configure(net.hp.model_copy(update={"approved_storage_endpoints": ("https://*.r2.cloudflarestorage.com",)}))
    assert peers.get(net.hotkey("mallory"), layout.gradient_key(0), 1 << 20).status is ReadStatus.NO_COMMITMENT


def test_backdater_serves_a_copy_dated_before_the_deadline_unless_its_endpoint_is_refused(net: FakeNet) -> None:
    lead = Lead(net)
    honest = lead.upload("bob", 0)
    m = net.miner("mallory")
    net.chain.advance_to(m.clock.last_block(0) + 1)  # the deadline has passed
    deadline = m.clock.deadline(0)
    assert adversaries.backdater(m, plan_window(m, 0), m.gm.fingerprint()) == (None, None)
    peers = real_reader(net)
    read = peers.get(net.hotkey("mallory"), layout.gradient_key(0), max_bytes=net.hp.max_upload_bytes)
    # the attack, were its endpoint trusted: bob's tensors under mallory's name, dated 5 s before the deadline
    assert read.ok and read.value != honest and read.last_modified == math.floor(deadline - 5.0)
    peers.configure(net.hp)  # the run's approved providers only (R2, S3)
    assert peers.get(net.hotkey("mallory"), layout.gradient_key(0), 1 << 20).status is ReadStatus.NO_COMMITMENT
