"""The localnet pool as subtensor's (issue 30), in process on the real node class: free hotkey calls that would
fail are refused at admission and left out of blocks; parked extrinsics have their own budget and give way;
a full pool makes room for a sender holding little; blocks take senders round-robin; expired extrinsics are
dropped and banned. Also commit-reveal fidelity, pruning in small subnets, and the start-up checks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from template.chain.localnet import node as node_mod
from template.chain.localnet.cli.verify import audit
from template.chain.localnet.errors import ChainDatabaseError
from template.chain.localnet.extrinsic import InvalidTransaction, parse_json, sign_extrinsic, verify_extrinsic
from template.chain.localnet.node import LocalnetNode
from template.chain.localnet.state import MIN_NON_IMMUNE_UIDS, RAO, Genesis, pick_pruning_victim
from template.chain.localnet.views import metagraph_view
from tests.unit.test_chain_hardening import commit, cr_chain
from tests.unit.test_localnet_state import ALICE, BOB, Chain, key, subnet_chain, weights_chain


class Pool:
    """A node (fees off) whose state is a test chain's: `send(name, call, nonce=None, **args)`."""

    def __init__(self, tmp_path: Path, chain: Chain, **limits: int) -> None:
        self.chain = chain
        self.node = LocalnetNode(tmp_path / "chain.sqlite", genesis=chain.state.genesis, new=True, **limits)
        self.node.state = chain.state
        self.outcomes: dict[str, tuple[bool, str | None, int | None]] = {}

    def sign(self, who: str, call: str, nonce: int | None = None, birth: int | None = None, period: int = 128,
             **args: object) -> dict:
        kp = key(who)
        nonce = self.node.next_nonce(kp.ss58_address) if nonce is None else nonce
        birth = self.node.state.block if birth is None else birth
        return sign_extrinsic(kp, call, dict(args), nonce, self.node.genesis_hash, birth=birth, period=period)

    def send(self, who: str, call: str, nonce: int | None = None, **args: object) -> str:
        ext_hash = self.node.submit(self.sign(who, call, nonce, **args), self._waiter(who, call, nonce))
        return ext_hash

    def _waiter(self, who: str, call: str, nonce: int | None):
        name = f"{who}:{call}:{nonce}"
        return lambda ok, error, block: self.outcomes.__setitem__(name, (ok, error, block))

    def transfer(self, who: str, nonce: int | None = None) -> str:
        return self.send(who, "transfer", nonce, dest=BOB.ss58_address, amount=1)

    def rows(self) -> list[tuple]:
        return self.node._db.execute("SELECT block, signer, call, ok, error FROM extrinsics ORDER BY block, idx"
                                     ).fetchall()


def weights(pool: Pool, who: str, uids: list[int], values: list[int], nonce: int | None = None) -> str:
    return pool.send(who, "set_weights", nonce, netuid=1, uids=uids, weights=values, version_key=0)


# ---- free calls: refused before they can fail --------------------------------------------------------------------
def test_free_calls_that_would_fail_are_refused_at_admission_and_never_stored(tmp_path: Path) -> None:
    c = weights_chain()
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="weights_rate_limit", value=3)
    pool = Pool(tmp_path, c)
    weights(pool, "v0", [1], [1])
    with pytest.raises(InvalidTransaction, match="^SettingWeightsTooFast"):  # the queued one sets last_update
        weights(pool, "v0", [1], [1])
    with pytest.raises(InvalidTransaction, match="^NeuronNoValidatorPermit"):
        weights(pool, "m0", [2], [1])
    with pytest.raises(InvalidTransaction, match="^UidVecContainInvalidOne"):
        weights(pool, "owner", [1, 99], [1, 1])
    pool.node.produce_block(1e6)
    with pytest.raises(InvalidTransaction, match="^SettingWeightsTooFast"):  # rate limit from the state now
        weights(pool, "v0", [2], [1])
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=True)
    with pytest.raises(InvalidTransaction, match="^CommitRevealEnabled"):
        weights(pool, "v0", [2], [1])
    for _ in range(3):
        pool.node.produce_block(1e6)
    pool.send("v0", "commit_weights", netuid=1, uids=[1], weights=[1], version_key=0)
    with pytest.raises(InvalidTransaction, match="^CommittingWeightsTooFast"):
        pool.send("v0", "commit_weights", netuid=1, uids=[1], weights=[1], version_key=0)
    big = [{"BigRaw": "61" * 512}] * 3
    for _ in range(2):  # 2 x 1536 of the 3100 bytes an epoch allows
        pool.send("m0", "set_commitment", netuid=1, fields=big)
    with pytest.raises(InvalidTransaction, match="^SpaceLimitExceeded"):
        pool.send("m0", "set_commitment", netuid=1, fields=big)
    pool.node.produce_block(1e6)
    assert [r[2:] for r in pool.rows()] == [("set_weights", 1, None), ("commit_weights", 1, None),
                                            ("set_commitment", 1, None), ("set_commitment", 1, None)]
    pool.node.close()


def test_a_free_call_with_an_unhashable_netuid_is_bad_args_not_a_crash(tmp_path: Path) -> None:
    pool = Pool(tmp_path, weights_chain())
    with pytest.raises(InvalidTransaction, match="^BadArgs"):
        pool.send("v0", "set_commitment", netuid=[], fields=None)
    pool.node.close()


def test_a_free_call_the_block_itself_makes_fail_is_left_out_with_its_signers_later_extrinsics(
        tmp_path: Path) -> None:
    c = weights_chain()
    pool = Pool(tmp_path, c)
    pool.send("Alice", "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=True)
    first = pool.node.next_nonce(key("v0").ss58_address)
    weights(pool, "v0", [1], [1], nonce=first)  # fine now; Alice's call runs first in the block
    pool.send("v0", "set_commitment", nonce=first + 1, netuid=1, fields=[{"Raw": "61"}])
    head = pool.node.produce_block(1e6)
    assert head["num_extrinsics"] == 1 and [r[2] for r in pool.rows()] == ["set_hyperparameter"]
    assert pool.outcomes[f"v0:set_weights:{first}"] == (False, "CommitRevealEnabled", None)
    assert pool.outcomes[f"v0:set_commitment:{first + 1}"][1].startswith("Future")
    assert pool.node.next_nonce(key("v0").ss58_address) == first  # its nonces were never used
    pool.node.close()


# ---- room in the pool ----------------------------------------------------------------------------------------
def test_parked_extrinsics_have_their_own_budget_and_the_oldest_gives_way(tmp_path: Path) -> None:
    pool = Pool(tmp_path, Chain(), max_pool=30, max_future=8)
    spammers = ["Charlie", "Dave", "Eve", "Ferdie"]
    for who in spammers:  # a nonce gap at 0: each waits "parked", reserving its fee for nothing
        for nonce in range(1, 5):
            pool.transfer(who, nonce)
    assert len(pool.node._parked) == 8
    dropped = [k for k, v in pool.outcomes.items() if v[1] and v[1].startswith("Dropped")]
    assert sorted(dropped) == sorted(f"{w}:transfer:{n}" for w in spammers[:2] for n in range(1, 5))  # oldest
    for nonce in range(25):  # ready extrinsics never compete with the parked budget
        pool.transfer("Alice", nonce)
    pool.transfer("Bob")
    assert pool.node.produce_block(1e6)["num_extrinsics"] == 26
    pool.node.close()


def test_a_full_pool_makes_room_for_a_sender_holding_little(tmp_path: Path) -> None:
    pool = Pool(tmp_path, Chain(), max_pool=20, max_future=5)
    pool.transfer("Charlie", 1)  # parked behind a gap
    for _ in range(19):
        pool.transfer("Alice")
    pool.transfer("Bob")  # the parked one goes first
    assert pool.outcomes["Charlie:transfer:1"][1].startswith("Dropped")
    pool.transfer("Dave")  # then the tail of the signer holding the most
    assert pool.outcomes["Alice:transfer:None"][1].startswith("Dropped") and \
        pool.node.next_nonce(ALICE.ss58_address) == 18
    with pytest.raises(InvalidTransaction, match="^PoolFull"):
        pool.transfer("Alice")  # the hog itself gets no room
    head = pool.node.produce_block(1e6)
    assert head["num_extrinsics"] == 20 and pool.node.next_nonce(ALICE.ss58_address) == 18
    pool.node.close()


def test_blocks_take_senders_round_robin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_mod, "MAX_EXTRINSICS_PER_BLOCK", 4)
    pool = Pool(tmp_path, Chain())
    for _ in range(10):
        pool.transfer("Alice")
    pool.transfer("Bob")  # arrives last, lands in the next block
    pool.node.produce_block(1e6)
    assert [r[1] for r in pool.rows()] == [ALICE.ss58_address, BOB.ss58_address] + [ALICE.ss58_address] * 2
    pool.node.produce_block(1e6 + 1)
    pool.node.produce_block(1e6 + 2)
    assert len(pool.rows()) == 11 and all(r[3] == 1 for r in pool.rows())
    pool.node.close()


def test_expired_parked_extrinsics_are_dropped_not_parked_again_and_banned(tmp_path: Path) -> None:
    pool = Pool(tmp_path, Chain())
    short = pool.sign("Alice", "transfer", nonce=1, period=4, dest=BOB.ss58_address, amount=1)
    long = pool.sign("Alice", "transfer", nonce=2, dest=BOB.ss58_address, amount=1)
    pool.node.submit(short)  # both wait behind the nonce gap at 0
    pool.node.submit(long)
    for i in range(5):  # `short` is valid until block 4
        pool.node.produce_block(float(i + 1))
    assert list(pool.node._pool[ALICE.ss58_address]) == [2]
    with pytest.raises(InvalidTransaction, match="^TemporarilyBanned"):
        pool.node.submit(short)
    for i in range(5, 5 + node_mod.FUTURE_TX_TTL_BLOCKS):  # the gap is never filled
        pool.node.produce_block(float(i + 1))
    assert ALICE.ss58_address not in pool.node._pool and not pool.node._parked
    with pytest.raises(InvalidTransaction, match="^TemporarilyBanned"):
        pool.node.submit(long)  # still inside its era, but it had its turn
    pool.node.close()


# ---- commit-reveal fidelity -----------------------------------------------------------------------------------
def test_a_commits_reveal_epoch_is_fixed_when_it_is_made() -> None:
    c = cr_chain(period=2)
    assert commit(c, "v0", [1], [1]) is None
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_period", value=1)
    sub = c.sub()
    start = sub.epoch_index
    while sub.epoch_index < start + 2:  # still hidden after one epoch: the period of the commit was 2
        assert "4" not in metagraph_view(c.state, 1)["weights"]
        c.advance(1)
    assert metagraph_view(c.state, 1)["weights"]["4"] == [[1, 65535]]


def test_pending_commits_are_dropped_when_commit_reveal_is_turned_off_and_weights_set_directly() -> None:
    c = cr_chain(period=1)
    assert commit(c, "v0", [1], [1]) is None
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=False)
    assert c.sub().weight_commits == []
    c.advance(1)
    assert c.tx(key("v0"), "set_weights", netuid=1, uids=[2], weights=[1], version_key=0) is None
    sub, epoch = c.sub(), c.sub().epoch_index
    while sub.epoch_index < epoch + 2:
        c.advance(1)
    assert metagraph_view(c.state, 1)["weights"]["4"] == [[2, 65535]]  # the newer direct weights stand
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=True)
    c.advance(2)
    assert commit(c, "v0", [3], [1]) is None
    sub.hparams["commit_reveal_weights_enabled"] = False  # a direct set_weights drops the hotkey's commits too
    c.advance(2)
    assert c.tx(key("v0"), "set_weights", netuid=1, uids=[1], weights=[1], version_key=0) is None
    assert sub.weight_commits == []


# ---- registration into a full subnet ----------------------------------------------------------------------------
KEYS = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50)), max_size=14)


@given(KEYS, KEYS, st.integers(1, 256))
def test_pruning_victim_rule(non_immune_raw: list[tuple[int, int]], immune_raw: list[tuple[int, int]],
                             max_uids: int) -> None:
    non_immune = [(e, r, uid) for uid, (e, r) in enumerate(non_immune_raw)]
    immune = [(e, r, 100 + uid) for uid, (e, r) in enumerate(immune_raw)]
    victim = pick_pruning_victim(non_immune, immune, max_uids)
    if not non_immune and not immune:
        assert victim is None
    elif non_immune and (len(non_immune) > MIN_NON_IMMUNE_UIDS or max_uids <= MIN_NON_IMMUNE_UIDS + 1
                         or not immune):
        assert victim == min(non_immune)[2]  # lowest emission, then earliest registration, then lowest uid
    else:
        assert victim == min(immune)[2]  # at or below the floor an immune uid goes, as on subtensor


def test_a_small_full_subnet_keeps_taking_registrations() -> None:
    c = subnet_chain(num_miners=3)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="max_allowed_uids", value=5)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="immunity_period", value=2)
    c.advance(3)  # everyone past immunity: no immune uid to take instead
    assert len(c.sub().neurons) == 5
    assert c.tx(BOB, "burned_register", netuid=1, hotkey=key("late").ss58_address) is None
    hotkeys = [n.hotkey for n in c.sub().neurons]
    assert key("late").ss58_address in hotkeys and key("owner").ss58_address == hotkeys[0]
    assert key("m0").ss58_address not in hotkeys  # lowest emission, earliest registered, lowest uid
    assert c.tx(BOB, "burned_register", netuid=1, hotkey=key("later").ss58_address) is None
    hotkeys = [n.hotkey for n in c.sub().neurons]  # m1 went, not the immune newcomer `late`
    assert key("late").ss58_address in hotkeys and key("m1").ss58_address not in hotkeys
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="immunity_period", value=1000)
    for i in range(3):  # all immune now but the owner (never pruned): subtensor's rule, the lowest immune goes
        assert c.tx(BOB, "burned_register", netuid=1, hotkey=key(f"new{i}").ss58_address) is None
    assert c.sub().neurons[0].hotkey == key("owner").ss58_address


# ---- named errors ---------------------------------------------------------------------------------------------
def test_an_out_of_range_number_is_bad_format_not_bad_signer() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_json('{"amount": 1e999}')
    c = Chain()
    ext = c.sign(ALICE, "transfer", dest=BOB.ss58_address, amount=RAO)
    ext["payload"]["args"]["amount"] = float("inf")  # what 1e999 became before parse_json refused it
    with pytest.raises(InvalidTransaction, match="^BadFormat: .*not finite"):
        verify_extrinsic(ext, c.genesis)


# ---- start-up and verify ---------------------------------------------------------------------------------------
def _made(tmp_path: Path, blocks: int = 3) -> Path:
    db = tmp_path / "chain.sqlite"
    node = LocalnetNode(db, genesis=Genesis(timestamp=0.0), new=True)
    node.submit(sign_extrinsic(ALICE, "transfer", {"dest": BOB.ss58_address, "amount": RAO}, 0, node.genesis_hash))
    for i in range(blocks):
        node.produce_block(float(i + 1))
    node.close()
    return db


def test_a_node_starts_a_chain_only_when_told_and_never_on_an_empty_or_foreign_file(tmp_path: Path) -> None:
    db = tmp_path / "chain.sqlite"
    with pytest.raises(ChainDatabaseError, match=f"no chain database at {db}: pass --new"):
        LocalnetNode(db)
    db.touch()
    with pytest.raises(ChainDatabaseError, match=r"is empty \(0 bytes\)"):
        LocalnetNode(db)
    assert db.stat().st_size == 0  # nothing written to it
    with pytest.raises(ChainDatabaseError, match="already exists"):
        LocalnetNode(db, new=True)
    db.write_text("notes, not a chain")
    with pytest.raises(ChainDatabaseError, match="not a chain database"):
        LocalnetNode(db)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ChainDatabaseError, match="no table"):
        LocalnetNode(other)


def test_a_damaged_history_is_refused_at_start_up(tmp_path: Path) -> None:
    db = _made(tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM state")
    with pytest.raises(ChainDatabaseError, match="no state snapshot"):
        LocalnetNode(db)
    db = _made(tmp_path / "b")
    with sqlite3.connect(db) as con:
        body = json.loads(con.execute("SELECT body FROM state").fetchone()[0])
        body["total_issuance"] += 1
        con.execute("UPDATE state SET body = ?", (json.dumps(body),))
    with pytest.raises(ChainDatabaseError, match="does not match block 3's state root"):
        LocalnetNode(db)
    db = _made(tmp_path / "c")
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM blocks WHERE number = 3")
    with pytest.raises(ChainDatabaseError, match="snapshot is at block 3 but the stored blocks end at 2"):
        LocalnetNode(db)


def test_verify_compares_the_final_state_even_when_the_last_block_is_missing(tmp_path: Path) -> None:
    db = _made(tmp_path)
    assert audit(db)["snapshot"] == []
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM blocks WHERE number = 3")
    report = audit(db)
    assert report["head"] == 2 and report["snapshot"][0].startswith("the snapshot is at block 3")
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM state")
    assert audit(db)["snapshot"] == ["no state snapshot: the `state` row is gone"]
