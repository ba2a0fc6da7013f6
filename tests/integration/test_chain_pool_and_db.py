"""The real localnet node against a hostile pool and damaged databases (issue 30).

A pool flooded from many funded keys (parked extrinsics behind nonce gaps, paid transfers past the pool limit,
free weights calls that would fail) never delays an honest transfer or set_weights by more than two blocks, and
no failing free call reaches a block; commit-reveal keeps a commit's reveal epoch and drops pending commits
when it is turned off; a node started on a missing, empty, foreign or damaged file exits 2 with one line naming
the file, under `python -O` too; `serve --new` is the only way to start a chain."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from bittensor_wallet import Keypair

from template.chain.localnet.client import LocalnetClient
from template.chain.localnet.extrinsic import sign_extrinsic
from template.chain.localnet.process import LocalnetProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
BLOCK_TIME = 0.5
POOL_LIMIT, FUTURE_LIMIT = 400, 64
SPAMMERS = 30


def kp(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//{name}")


def spam_round(http: httpx.Client, genesis: str, head: int, nonces: dict[str, int], miners: list[str]) -> list[dict]:
    """One flood: per spammer 20 paid transfers (past the pool limit together) and 3 parked ones behind a gap
    it never fills; per registered miner 10 set_weights that would fail (no permit). Returns the results."""
    exts = []
    for i in range(SPAMMERS):
        k = kp(f"spam{i}")
        n = nonces[k.ss58_address]
        for j in range(20):
            exts.append(sign_extrinsic(k, "transfer", {"dest": k.ss58_address, "amount": 1}, n + j, genesis,
                                       birth=head))
        for j in range(3):  # nonce n + 20 is never sent
            exts.append(sign_extrinsic(k, "transfer", {"dest": k.ss58_address, "amount": 1}, n + 21 + j, genesis,
                                       birth=head))
    for name in miners:
        k = kp(name)
        for j in range(10):
            exts.append(sign_extrinsic(k, "set_weights", {"netuid": 1, "uids": [0], "weights": [1],
                                                          "version_key": 0}, nonces[k.ss58_address] + j, genesis,
                                       birth=head))
    return http.post("/extrinsics", json={"extrinsics": exts, "wait": False}, timeout=120).json()


def test_a_hostile_pool_never_delays_honest_traffic_and_failing_calls_never_land(tmp_path: Path) -> None:
    node = LocalnetProcess(tmp_path / "chain.sqlite", block_time=BLOCK_TIME,
                           extra_args=["--pool-limit", str(POOL_LIMIT), "--pool-future-limit", str(FUTURE_LIMIT)])
    node.start()
    c = LocalnetClient(node.endpoint)
    try:
        c.connect()
        alice, owner, owner_hk = kp("Alice"), kp("owner"), kp("owner_hk")
        c.transfer(alice, owner.ss58_address, 5000.0).raise_for_error()
        netuid = c.register_network(owner, owner_hk.ss58_address)
        assert netuid == 1
        for name, value in {"tempo": 10, "weights_rate_limit": 1}.items():
            c.set_hyperparameter(alice, netuid, name, value).raise_for_error()
        c.set_hyperparameter(owner, netuid, "commit_reveal_weights_enabled", False).raise_for_error()
        c.start_call(owner, netuid).raise_for_error()
        miners = [f"miner{i}" for i in range(3)]
        for name in miners:
            c.burned_register(kp("Bob"), kp(name).ss58_address, netuid).raise_for_error()
        funded = c.submit_batch([(alice, "transfer", {"dest": kp(f"spam{i}").ss58_address, "amount": 10**11})
                                 for i in range(SPAMMERS)] + [(alice, "transfer", {"dest": kp("honest").ss58_address,
                                                                                   "amount": 10**11})])
        assert all(r.ok for r in funded)
        http = httpx.Client(base_url=node.endpoint)
        genesis = c.genesis_hash
        stop, outcomes = threading.Event(), []

        def flood() -> None:
            while not stop.is_set():
                head = http.get("/block").json()["number"]
                nonces = {k.ss58_address: http.get(f"/nonce/{k.ss58_address}").json()["nonce"]
                          for k in [kp(f"spam{i}") for i in range(SPAMMERS)] + [kp(m) for m in miners]}
                outcomes.extend(spam_round(http, genesis, head, nonces, miners))

        spammer = threading.Thread(target=flood)
        spammer.start()
        delays: dict[str, list[int]] = {"transfer": [], "set_weights": []}
        try:
            c.wait_for_block(c.block() + 2)
            for i in range(8):
                head = c.block()
                res = c.transfer(kp("honest"), kp("sink").ss58_address, 0.001)
                assert res.ok, res.error
                delays["transfer"].append(res.block - head)
                head = c.block()
                res = c.set_weights(owner_hk, netuid, [1, 2, 3], [1.0, 2.0, 3.0 + i])
                assert res.ok, res.error
                delays["set_weights"].append(res.block - head)
        finally:
            stop.set()
            spammer.join(timeout=300)
        errors = [str(o.get("error")) for o in outcomes if not o.get("ok")]
        refused_weights = sum(e.startswith("NeuronNoValidatorPermit") for e in errors)
        print(f"honest delay in blocks: {delays}; spam sent {len(outcomes)}, refused "
              f"{sum(e.startswith('PoolFull') for e in errors)} PoolFull, "
              f"{sum(e.startswith('Future') for e in errors)} Future, {refused_weights} failing set_weights")
        assert max(delays["transfer"] + delays["set_weights"]) <= 2
        assert refused_weights > 0 and any(e.startswith("PoolFull") for e in errors)  # the pool was full
        c.wait_for_block(c.block() + 2)
        with sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True) as db:
            failed = db.execute("SELECT COUNT(*) FROM extrinsics WHERE ok = 0").fetchone()[0]
            stored_weights = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM extrinsics WHERE "
                                        "call = 'set_weights' AND signer != ?", (owner_hk.ss58_address,)).fetchone()
        assert failed == 0 and stored_weights == (0, 0)  # nothing failing reached a block or the table
        http.close()
    finally:
        c.close()
        node.stop()


def test_commit_reveal_is_checked_in_the_pool_keeps_the_reveal_epoch_and_drops_pending_commits(
        tmp_path: Path) -> None:
    node = LocalnetProcess(tmp_path / "chain.sqlite", block_time=0.2)
    node.start()
    c = LocalnetClient(node.endpoint)
    try:
        c.connect()
        alice, owner, hk = kp("Alice"), kp("owner"), kp("owner_hk")
        c.transfer(alice, owner.ss58_address, 5000.0).raise_for_error()
        netuid = c.register_network(owner, hk.ss58_address)
        for name, value in {"tempo": 10, "weights_rate_limit": 0}.items():
            c.set_hyperparameter(alice, netuid, name, value).raise_for_error()
        c.start_call(owner, netuid).raise_for_error()
        c.burned_register(kp("Bob"), kp("miner").ss58_address, netuid).raise_for_error()
        direct = {"netuid": netuid, "uids": [1], "weights": [65535], "version_key": 0}
        res = c.submit(hk, "set_weights", direct)  # commit-reveal is on by default: refused in the pool
        assert (res.ok, res.error, res.block) == (False, "CommitRevealEnabled", None)

        def commit(uid: int) -> None:
            c.submit(hk, "commit_weights", {"netuid": netuid, "uids": [uid], "weights": [65535],
                                            "version_key": 0}).raise_for_error()

        def epoch() -> int:
            return int(c.subnets()[str(netuid)]["epoch_index"])

        def wait_epochs(k: int) -> None:
            target = epoch() + k
            while epoch() < target:
                c.wait_for_block(c.block() + 1)

        def weights() -> list:
            return c.read(f"/metagraph/{netuid}")["weights"].get("0", [])

        c.set_hyperparameter(owner, netuid, "commit_reveal_period", 2).raise_for_error()
        commit(1)
        c.set_hyperparameter(owner, netuid, "commit_reveal_period", 1).raise_for_error()
        wait_epochs(1)
        assert weights() == []  # the period of the commit was 2
        wait_epochs(1)
        assert weights() == [[1, 65535]]
        commit(0)  # pending when commit-reveal goes off: dropped, never revealed over the newer direct weights
        c.set_hyperparameter(owner, netuid, "commit_reveal_weights_enabled", False).raise_for_error()
        assert c.subnets()[str(netuid)]["pending_weight_commits"] == 0
        assert c.submit(hk, "set_weights", direct).ok
        wait_epochs(2)
        assert weights() == [[1, 65535]]
        with sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True) as db:
            assert db.execute("SELECT COUNT(*) FROM extrinsics WHERE ok = 0").fetchone()[0] == 0
    finally:
        c.close()
        node.stop()


# ---- start-up on a damaged or empty history ----------------------------------------------------------------------
def serve(db: Path, *extra: str, optimize: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(["-O"] if optimize else []), "-m", "template.chain.localnet", "serve", "--db", str(db),
           "--port", str(free_port()), "--block-time", "0.2", "--log-level", "WARNING", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def chain_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped node's database, a few dozen blocks with extrinsics in them."""
    db = tmp_path_factory.mktemp("db") / "chain.sqlite"
    node = LocalnetProcess(db, block_time=0.1, new=True)
    node.start()
    c = LocalnetClient(node.endpoint)
    c.connect()
    for _ in range(20):
        c.transfer(kp("Alice"), kp("Bob").ss58_address, 1.0).raise_for_error()
    c.close()
    node.stop()
    return db


def _damage(src: Path, dst: Path, how: str) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if how == "empty":
        dst.touch()
        return dst
    if how == "foreign":
        dst.write_text("meeting notes, not a chain\n")
        return dst
    shutil.copy(src, dst)
    if how == "flipped":
        data = bytearray(dst.read_bytes())
        page = len(data) // 4096 // 2
        data[page * 4096: page * 4096 + 8] = b"\xff" * 8  # a b-tree page header mid-file
        dst.write_bytes(bytes(data))
        return dst
    with sqlite3.connect(dst) as db:
        if how == "no_state":
            db.execute("DELETE FROM state")
        elif how == "edited_state":
            db.execute("UPDATE state SET body = replace(body, '\"total_issuance\":', '\"total_issuance\":1')")
        elif how == "last_block_missing":
            db.execute("DELETE FROM blocks WHERE number = (SELECT MAX(number) FROM blocks)")
    db.close()
    return dst


DAMAGE = [
    ("empty", "is empty (0 bytes), not a chain"),
    ("foreign", "is not a chain database"),
    ("flipped", "is damaged"),
    ("no_state", "has no state snapshot"),
    ("edited_state", "state snapshot does not match"),
    ("last_block_missing", "but the stored blocks end at"),
]


@pytest.mark.parametrize(("how", "expected"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_node_never_starts_on_a_damaged_or_empty_history(chain_file: Path, tmp_path: Path, how: str,
                                                           expected: str) -> None:
    db = _damage(chain_file, tmp_path / how / "chain.sqlite", how)
    before = db.read_bytes()
    for optimize in (False, True):  # python -O strips asserts: the checks are not asserts
        out = serve(db, optimize=optimize)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2, out.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(db) in lines[0] and expected in lines[0]
    assert db.read_bytes() == before  # the file is left exactly as it was
    report = subprocess.run([sys.executable, "-m", "template.chain.localnet", "verify", "--db", str(db)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    if how in ("no_state", "edited_state", "last_block_missing"):  # readable: replayed, the final state compared
        assert report.returncode == 1 and "the stored state at the head" in report.stdout
    else:  # unreadable: one line naming the file, exit 2
        lines = report.stderr.strip().splitlines()
        assert report.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(db) in lines[0]


def test_a_chain_starts_only_with_new_and_new_never_overwrites(chain_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sqlite"
    out = serve(missing)
    assert out.returncode == 2 and out.stderr.strip() == (f"error: no chain database at {missing}: pass --new to "
                                                           f"start a new chain there")
    assert not missing.exists()
    copy = tmp_path / "copy.sqlite"
    shutil.copy(chain_file, copy)
    out = serve(copy, "--new")
    assert out.returncode == 2 and "already exists" in out.stderr and "drop --new" in out.stderr
    out = subprocess.run([sys.executable, "-m", "template.chain.localnet", "verify", "--db", str(tmp_path / "x")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: no node database at")
    node = LocalnetProcess(copy, block_time=0.1)  # resumes: no --new for an existing chain
    node.start()
    try:
        assert httpx.get(f"{node.endpoint}/block").json()["number"] > 20
    finally:
        node.stop()
