"""The issue-15 hostile miners (template/sim/attacks.py) do what they claim, on in-memory fakes."""

from __future__ import annotations

import pytest

from template.node.miner import plan_window
from template.protocol.artifacts import read_tensor_artifact
from template.protocol.data import loss_curve_ids
from template.protocol.outer_step import l2_norm
from template.protocol.sparseloco import decompress
from template.sim import attacks
from template.sim.adversaries import MODEL_LESS, STRATEGIES
from tests.unit.fakes import FakeNet, lead_net

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture
def net(tmp_path) -> FakeNet:
    return lead_net(tmp_path, miners=("bob", "charlie", "dave", "erin"))


def update_norm(m, data: bytes) -> float:
    art = read_tensor_artifact(data, kind="gradient", max_bytes=m.hp.max_upload_bytes)
    update = decompress(art.tensors, m.gm.shapes(), m.gm.codec)
    return sum(l2_norm(t) ** 2 for t in update.values()) ** 0.5


def test_kinds_are_selectable():
    assert {"poisoner", "scaler", "heldout", "timed", "stakejack"} <= set(STRATEGIES)
    assert "stakejack" in MODEL_LESS and "poisoner" not in MODEL_LESS


def test_poisoners_strike_only_when_the_group_holds_half_the_peer_list(net):
    bob, charlie = net.miner("bob"), net.miner("charlie")
    uid = {n: net.neurons[n].uid for n in ("bob", "charlie", "dave", "erin")}
    lead = net.neurons["alice"]
    lead.bucket.put_peer_list(0, [uid["bob"], uid["dave"], uid["erin"]], lead.keypair)
    lead.bucket.put_peer_list(1, [uid["bob"], uid["charlie"], uid["dave"], uid["erin"]], lead.keypair)
    attacks._plan_dir(charlie)  # charlie joins the plan
    assert attacks._group_holds_half(bob, 0) == (False, [uid["bob"]])
    assert attacks._group_holds_half(bob, 1)[0]  # 2 of 4: half the set
    calm, _ = attacks.poisoner(bob, plan_window(bob, 0), bob.gm.fingerprint())
    bob.gm.window = 1
    strike, _ = attacks.poisoner(bob, plan_window(bob, 1), bob.gm.fingerprint())
    assert update_norm(bob, strike) > 100 * update_norm(bob, calm)


def test_heldout_trains_on_the_public_tail_and_timed_alternates(net):
    m = net.miner("bob")
    seen: list[list[int]] = []
    real = attacks.train_inner_steps

    def spy(m_, plan, ids=None):
        seen.append(list(plan.sample_ids if ids is None else ids))
        return real(m_, plan, ids=ids)

    attacks.train_inner_steps = spy
    try:
        attacks.heldout(m, plan_window(m, 0), m.gm.fingerprint())
        tail = set(range(m.num_train, len(m.dataset)))
        assert len(set(seen[-1]) & tail) >= len(seen[-1]) // 2 - 1
        assert set(loss_curve_ids(m.num_train, len(m.dataset))) & set(seen[-1])
        attacks.timed(m, plan_window(m, 1), m.gm.fingerprint())  # odd window: someone else's samples
        assert not set(seen[-1]) & set(plan_window(m, 1).sample_ids)
    finally:
        attacks.train_inner_steps = real
