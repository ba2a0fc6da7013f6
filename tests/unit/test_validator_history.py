"""A validator's findings from its own history (issue 14), in its real window loop: a miner that uploads a
tweaked mean of the previous window's revealed updates (template/sim/storage_attacks.py `nearcopy`) is a
`near_copy`; a miner whose gathered upload of the previous window is gone or changed (the `vanisher`) is
`vanished`; honest miners are neither. Real signed artifacts, real decisions, in-memory chain and buckets."""

from __future__ import annotations

import pytest

from template.node.miner import gather_and_step, honest_upload, plan_window, upload_update
from template.node.state import load_sketch_history
from template.node.validator import ensure_peer_lists, run_window
from template.protocol import layout
from template.sim.storage_attacks import nearcopy
from tests.unit.fakes import FakeNet

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


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
    # the history a restart reloads: both windows' admitted updates and applied aggregate steps (uid -1, kept
    # far longer: gauntlet.nearcopy.AGGREGATE_KEEP_WINDOWS), under this validator's private key
    saved = load_sketch_history(v.state_dir / "near_copy.safetensors")
    assert sorted((e.window, e.uid) for e in saved.entries) == [(0, -1), (0, 2), (0, 3), (0, 4), (1, -1), (1, 2),
                                                                 (1, 3), (1, 4)]
    assert v.state.near_copy_key is not None and len(v.state.near_copy_key) == 32


@pytest.mark.parametrize("how", ["deleted", "resigned"])
def test_a_gathered_upload_withdrawn_after_the_record_costs_the_next_window(tmp_path, how):
    net = FakeNet(tmp_path)
    net.add("owner", owner=True)
    net.add("alice", stake=10_000.0, permit=True)
    for name in ("bob", "charlie"):  # uids 2 (the vanisher), 3
        net.add(name)
    v = net.validator("alice")
    miners = {name: net.miner(name) for name in ("bob", "charlie")}
    ensure_peer_lists(v, [0, 1], net.chain.metagraph(net.netuid))
    for window in (0, 1):
        for m in miners.values():
            plan = plan_window(m, window)
            data, _ = honest_upload(m, plan, m.gm.fingerprint())
            assert data is not None and upload_update(m, plan, data).on_time
        net.chain.advance_to(v.clock.last_block(window) + 1)
        row = run_window(v, window)
        for m in miners.values():
            gather_and_step(m, net.chain.metagraph(net.netuid), net.hotkey("alice"), window, m.clock.deadline(window))
        if window == 0:
            assert {uid: m["reason"] for uid, m in row["miners"].items()} == {"2": None, "3": None}
            assert v.state.gathered is not None and sorted(v.state.gathered.uploads) == [2, 3]
            bob = miners["bob"]  # after the lead's record: what the vanisher does
            if how == "deleted":
                bob.bucket.client.delete(bob.bucket.access.bucket, layout.gradient_key(0))
            else:
                plan = plan_window(bob, 0)
                other, _ = honest_upload(bob, plan, bob.gm.fingerprint())
                bob.bucket.put_update(0, other)
    reasons = {uid: m["reason"] for uid, m in row["miners"].items()}
    assert reasons == {"2": "vanished", "3": None}
    assert row["miners"]["2"]["evaluated"] is False and row["miners"]["2"]["score"] == 0.0
