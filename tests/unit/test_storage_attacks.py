"""copymix against sealed uploads (issue 14): inside the window it reads its peers' uploads; sealed ones give it
nothing to decode, unsealed ones it mixes. Real miner upload path and signed artifacts over tests/unit/fakes.py."""

from __future__ import annotations

import pytest
import torch

from template.node.miner import honest_upload, plan_window, upload_update
from template.sim.storage_attacks import mix, readable_peer_updates
from tests.unit.fakes import FakeNet, tiny_hparams

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def network(tmp_path, sealed: bool) -> FakeNet:
    net = FakeNet(tmp_path, hp=tiny_hparams(sealed_uploads=sealed, reveal_grace_s=30.0))
    net.add("owner", owner=True)
    net.add("alice", stake=10_000.0, permit=True)
    net.add("bob")
    net.add("charlie")
    bob = net.miner("bob")
    plan = plan_window(bob, 0)
    data, _ = honest_upload(bob, plan, bob.gm.fingerprint())
    assert data is not None and upload_update(bob, plan, data).on_time  # before the deadline
    return net


@pytest.mark.parametrize("sealed", [False, True])
def test_copymix_reads_nothing_before_the_deadline_when_uploads_are_sealed(tmp_path, sealed):
    net = network(tmp_path, sealed)
    copier = net.miner("charlie")
    found = readable_peer_updates(copier, 0)
    assert set(found) == (set() if sealed else {net.neurons["bob"].uid})
    if not sealed:  # what it would have uploaded: the victim's update plus a little of its own, scaled
        own = {n: torch.zeros(s) for n, s in copier.gm.shapes().items()}
        mixed = mix(list(found.values()), own)
        name = next(iter(own))
        assert torch.allclose(mixed[name], 1.5 * found[net.neurons["bob"].uid][name])
