"""The near-copy check in a validator's window (issue 14, item 5): a miner that uploads a tweaked mean of the
previous window's revealed updates (template/sim/storage_attacks.py `nearcopy`) is rejected as `near_copy`
for scoring; honest miners are not. Real signed artifacts, real decisions, in-memory chain and buckets."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from template.node import validator as validator_module
from template.node.miner import gather_and_step, honest_upload, plan_window, upload_update
from template.node.state import load_sketch_history
from template.node.validator import ensure_peer_lists, run_window
from template.sim.storage_attacks import nearcopy
from tests.unit.fakes import FakeNet

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(autouse=True)
def fixed_eval_batches(monkeypatch):
    monkeypatch.setattr(validator_module, "random", SimpleNamespace(Random=lambda _seed: random.Random(20)))


def test_a_tweaked_copy_of_last_windows_updates_is_a_near_copy(tmp_path):
    net = FakeNet(tmp_path)
    net.add("owner", owner=True)
    net.add("alice", stake=10_000.0, permit=True)
    for name in ("bob", "charlie", "dave"):  # uids 2, 3 honest; 4 the copier
        net.add(name)
    v = net.validator("alice")
    miners = {name: net.miner(name) for name in ("bob", "charlie", "dave")}
    ensure_peer_lists(v, [0, 1], net.chain.metagraph(net.netuid))
    for window, copier_strategy in ((0, honest_upload), (1, nearcopy)):
        for name, m in miners.items():
            plan = plan_window(m, window)
            strategy = copier_strategy if name == "dave" else honest_upload
            data, _ = strategy(m, plan, m.gm.fingerprint())
            assert data is not None and upload_update(m, plan, data).on_time
        net.chain.advance_to(v.clock.last_block(window) + 1)
        row = run_window(v, window)
        for m in miners.values():  # every miner follows the lead to theta_{w+1}
            mg = net.chain.metagraph(net.netuid)
            gather_and_step(m, mg, net.hotkey("alice"), window, m.clock.deadline(window))
            assert m.gm.fingerprint() == v.gm.fingerprint()
        shares = {uid: m.get("near_copy") for uid, m in row["miners"].items()}
        reasons = {uid: m["reason"] for uid, m in row["miners"].items()}
        if window == 0:  # nothing earlier to compare with
            assert reasons == {"2": None, "3": None, "4": None} and shares == {"2": 0.0, "3": 0.0, "4": 0.0}
    assert reasons == {"2": None, "3": None, "4": "near_copy"}
    assert shares["4"] >= v.hp.near_copy_threshold > 0.15 > max(shares["2"], shares["3"])
    assert row["miners"]["4"]["evaluated"] is False and row["miners"]["4"]["score"] == 0.0
    # the history a restart reloads: both windows' admitted updates, under this validator's private key
    saved = load_sketch_history(v.state_dir / "near_copy.safetensors")
    assert sorted((e.window, e.uid) for e in saved.entries) == [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
    assert len(v.run_state["near_copy_key"]) == 64
