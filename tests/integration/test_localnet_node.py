"""The localnet node as a real process: HTTP client calls, concurrent signed extrinsics, kill -9 and restart
on the same database (height and state intact, blocks keep coming). The CLI is tested in test_localnet_cli.py."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from bittensor_wallet import Keypair

from template.chain import make_chain
from template.chain.base import Chain, ChainError
from template.chain.localnet.client import LocalnetClient
from template.chain.localnet.extrinsic import sign_extrinsic
from template.chain.localnet.node import replay_chain
from template.chain.localnet.process import LocalnetProcess, start_localnet_process

ROOT = Path(__file__).resolve().parents[2]
BLOCK_TIME = 0.2


def kp(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//{name}")


def setup_subnet(c: LocalnetClient) -> int:
    alice, owner = kp("Alice"), kp("owner")
    c.transfer(alice, owner.ss58_address, 5000.0).raise_for_error()
    netuid = c.register_network(owner, kp("owner_hk").ss58_address)
    for name, value in {"tempo": 10, "weights_rate_limit": 1}.items():  # root-only: the sudo key
        c.set_hyperparameter(alice, netuid, name, value).raise_for_error()
    c.start_call(owner, netuid).raise_for_error()
    c.burned_register(kp("Bob"), kp("miner").ss58_address, netuid).raise_for_error()
    c.burned_register(kp("Charlie"), kp("validator").ss58_address, netuid).raise_for_error()
    c.add_stake(kp("Charlie"), kp("validator").ss58_address, netuid, 100.0).raise_for_error()
    return netuid


def test_client_calls_and_restart_after_kill_keep_height_and_state(tmp_path: Path) -> None:
    node = LocalnetProcess(tmp_path / "chain.sqlite", block_time=BLOCK_TIME)
    node.start()
    try:
        chain = make_chain("local", node.endpoint)
        assert isinstance(chain, LocalnetClient) and isinstance(chain, Chain)
        chain.connect()
        netuid = setup_subnet(chain)
        res = chain.set_commitment(kp("miner"), netuid, "bucket=miner;" + "k" * 200)
        assert res.ok and res.block is not None
        assert chain.commitments(netuid) == {kp("miner").ss58_address: "bucket=miner;" + "k" * 200}
        assert not chain.set_commitment(kp("stranger"), netuid, "x").ok
        assert chain.is_registered(kp("miner").ss58_address, netuid)
        assert chain.hyperparameters(netuid)["tempo"] == 10
        bad = chain.set_weights(kp("miner"), netuid, [2], [1.0])
        assert (bad.ok, bad.error) == (False, "NeuronNoValidatorPermit")
        assert chain.block_timestamp(2) > chain.block_timestamp(1)
        hashes = {chain.block_hash(1), chain.block_hash(2)}  # the guard batch's seed (gauntlet/progress.py)
        assert len(hashes) == 2 and all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)
        with pytest.raises(ChainError, match="SubnetNotExists"):
            chain.metagraph(77)

        chain.wait_for_block(chain.block() + 3)
        before_mg = chain.metagraph(netuid)
        before_head = httpx.get(f"{node.endpoint}/block").json()
        node.kill()  # kill -9 mid-run
        node.start()
        after = httpx.get(f"{node.endpoint}/block/{before_head['number']}").json()
        assert after["state_root"] == before_head["state_root"] and after["hash"] == before_head["hash"]
        head = chain.block()  # the old client reconnects on its own
        assert head >= before_head["number"]
        mg = chain.metagraph(netuid)
        assert mg.hotkeys == before_mg.hotkeys and mg.stake[2] >= before_mg.stake[2] > 0
        assert chain.commitments(netuid)[kp("miner").ss58_address].startswith("bucket=miner;")
        chain.wait_for_block(head + 3)  # blocks keep coming
        # the old client's cached nonces still work after the restart
        chain.transfer(kp("Alice"), kp("owner").ss58_address, 1.0).raise_for_error()
        chain.close()
        replay = replay_chain(node.db_path)  # the crash left a consistent, fully replayable history
        assert replay["mismatches"] == [] and replay["blocks"] >= head
    finally:
        node.stop()


def test_concurrent_signed_extrinsics_from_threads_all_land(tmp_path: Path) -> None:
    with start_localnet_process(tmp_path / "chain.sqlite", block_time=BLOCK_TIME) as (endpoint, proc):
        c = LocalnetClient(endpoint)
        c.connect()
        dest = kp("sink").ss58_address
        results = []

        def worker(name: str) -> None:
            for _ in range(8):
                results.append(c.transfer(kp(name), dest, 0.5))

        threads = [threading.Thread(target=worker, args=(n,)) for n in ("Alice", "Alice", "Bob", "Dave")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.error for r in results if not r.ok] == []
        assert c.balance(dest) == pytest.approx(32 * 0.5)
        # a replayed signed extrinsic is refused by the pool
        ext = sign_extrinsic(kp("Eve"), "transfer", {"dest": dest, "amount": 1}, 0, c.genesis_hash)
        first = httpx.post(f"{endpoint}/extrinsic", json={"extrinsic": ext}, timeout=30).json()
        replay = httpx.post(f"{endpoint}/extrinsic", json={"extrinsic": ext}, timeout=30).json()
        assert first["ok"] and not replay["ok"] and replay["error"].startswith("Stale")
        batch = c.submit_batch([(kp("Ferdie"), "transfer", {"dest": dest, "amount": 10**9})] * 5
                               + [(kp("Ferdie"), "transfer", {"dest": dest, "amount": 0})])
        assert [r.ok for r in batch] == [True] * 5 + [False] and batch[-1].error == "AmountTooLow"
        assert len({r.block for r in batch}) == 1  # one block holds the whole batch
        assert httpx.post(f"{endpoint}/extrinsic", content=b"{not json", timeout=30).status_code == 400
        assert proc.poll() is None

