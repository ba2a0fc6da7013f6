"""The localnet node: a timer-driven block producer over `ChainState`, persisted in SQLite.

Extrinsics are verified when submitted (size, signature, genesis, era, arguments, fee payable, or a free
hotkey call that passes every check it could fail before dispatch, nonce not used, pool limits with a separate
budget for extrinsics behind a nonce gap) and wait in a pool; each block takes every signer's run of
consecutive nonces round-robin across signers, applies them after the block step, and commits the block row,
its extrinsics and the full state snapshot in one SQLite transaction. A restart, even after kill -9, resumes at
the last committed block with the same state root; a node starts a chain only when told to (`new=True`, the
CLI's `--new`) and never on an empty, foreign or damaged file (`open_chain_db`, `LocalnetNode._load`). The HTTP API and `serve` are in `api.py`; running a node as a
subprocess (`start_localnet_process`) in `process.py`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from template.chain.localnet.calls import (
    QueuedFreeCalls,
    apply_payload,
    apply_signed,
    check_admission,
    check_free_call,
)
from template.chain.localnet.errors import ChainDatabaseError
from template.chain.localnet.extrinsic import (
    HOTKEY_CALLS,
    InvalidTransaction,
    canonical_json,
    check_era,
    verify_encoded,
)
from template.chain.localnet.state import CallError, ChainState, Genesis

MAX_EXTRINSICS_PER_BLOCK = 20_000
MAX_POOL = 50_000  # ready and parked extrinsics together
MAX_POOL_PER_SIGNER = 1024  # queued extrinsics of one signer
MAX_FUTURE_PER_SIGNER = 16  # of those, how many may wait behind a nonce gap ("parked")
MAX_FUTURE = 2048  # parked extrinsics of all signers: their own budget, oldest evicted first
FUTURE_TX_TTL_BLOCKS = 20  # a nonce gap not filled within this many blocks drops the waiting extrinsic
BAN_BLOCKS = 64  # a parked extrinsic dropped as expired is refused this long if sent again
SQLITE_HEADER = b"SQLite format 3\x00"
MAX_BODY_BYTES = 256 * 1024  # POST /extrinsic
MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024  # POST /extrinsics
MAX_BATCH = 5000  # extrinsics per POST /extrinsics
MAX_BLOCK_NUMBER = 2**63 - 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL, parent_hash TEXT NOT NULL,
    timestamp REAL NOT NULL, state_root TEXT NOT NULL, extrinsics_root TEXT NOT NULL, num_extrinsics INTEGER);
CREATE TABLE IF NOT EXISTS extrinsics (block INTEGER NOT NULL, idx INTEGER NOT NULL, hash TEXT NOT NULL,
    signer TEXT NOT NULL, nonce INTEGER NOT NULL, call TEXT NOT NULL, body TEXT NOT NULL, ok INTEGER NOT NULL,
    error TEXT, PRIMARY KEY (block, idx));
CREATE INDEX IF NOT EXISTS extrinsics_by_hash ON extrinsics (hash);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 0), block INTEGER NOT NULL, body BLOB);
"""


@dataclass
class PoolEntry:
    payload: dict[str, Any]
    ext: dict[str, Any]
    hash: str
    seq: int
    received_block: int
    size: int
    fee: int
    space: int = 0  # commitment bytes a set_commitment will use (pool admission of free calls)
    waiters: list[Any] = field(default_factory=list)  # callables taking (ok, error, block)


def block_hash(number: int, parent: str, timestamp: float, state_root: str, extrinsics_root: str) -> str:
    return hashlib.sha256(canonical_json({"number": number, "parent": parent, "timestamp": timestamp,
                                          "state_root": state_root, "extrinsics_root": extrinsics_root})).hexdigest()


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0][:200] if text else type(e).__name__


def open_chain_db(path: Path, new: bool) -> sqlite3.Connection:
    """Open a node database for writing. `new`: the file must not exist (a chain is created in it); otherwise it
    must exist, be a SQLite file and pass SQLite's quick_check. Raises ChainDatabaseError, one line naming the
    file and what to do: an empty or foreign file is never taken for a fresh chain."""
    if new:
        if path.exists():
            raise ChainDatabaseError(f"{path} already exists ({path.stat().st_size} bytes): drop --new to resume "
                                     f"the chain in it, or move it away to start a new chain there")
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        if not path.is_file():
            raise ChainDatabaseError(f"no chain database at {path}: pass --new to start a new chain there")
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
        if not header:
            raise ChainDatabaseError(f"{path} is empty (0 bytes), not a chain: restore it from a backup, or "
                                     f"delete it and pass --new to start a new chain")
        if header != SQLITE_HEADER:
            raise ChainDatabaseError(f"{path} is not a chain database (not a SQLite file): check --db, or move "
                                     f"it away and pass --new to start a new chain")
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as e:
        raise ChainDatabaseError(f"cannot open {path} ({_first_line(e)}): check the path and its "
                                 f"permissions") from e
    try:
        if not new:
            problems = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                found = " ".join(problems[0].replace("*** in database main ***", "").split())[:120]
                raise ChainDatabaseError(f"{path} is damaged (SQLite's integrity check: {found}): restore "
                                         f"it from a backup; the node does not run on a damaged history")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = sorted({"meta", "blocks", "extrinsics", "state"} - tables)
            if missing:
                raise ChainDatabaseError(f"{path} is not a chain database (no table {', '.join(missing)}): check "
                                         f"--db, or restore the file from a backup")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
    except sqlite3.Error as e:
        db.close()
        raise ChainDatabaseError(f"{path} is damaged ({_first_line(e)}): restore it from a backup; the node "
                                 f"does not run on a damaged history") from e
    except ChainDatabaseError:
        db.close()
        raise
    return db


class LocalnetNode:
    """State + pool + SQLite; thread-safe. `produce_block()` makes one block; `run_producer()` loops on a timer.

    `new=True` starts a chain in a file that must not exist yet; otherwise the file must hold a chain that
    passes the start-up checks (`open_chain_db`). Raises ChainDatabaseError, one line naming the file.
    """

    def __init__(self, db_path: Path, block_time: float = 1.0, genesis: Genesis | None = None,
                 new: bool = False, max_pool: int = MAX_POOL, max_future: int = MAX_FUTURE) -> None:
        if block_time <= 0:
            raise ValueError(f"block_time must be > 0 seconds, got {block_time}")
        if max_pool < 1 or not 0 <= max_future <= max_pool:
            raise ValueError(f"pool limits must satisfy 1 <= max_pool and 0 <= max_future <= max_pool, got "
                             f"{max_pool} and {max_future}")
        self.block_time = block_time
        self.max_pool, self.max_future = max_pool, max_future
        self.db_path = Path(db_path)
        self._lock = threading.RLock()
        self._db = open_chain_db(self.db_path, new)
        self._pool: dict[str, dict[int, PoolEntry]] = {}
        self._pool_size = 0
        # per signer, valid until the next block takes from the pool: fees queued, first free nonce from which
        # to look for the end of the contiguous run (keeps submit O(1) for in-order senders)
        self._queued_fees: dict[str, int] = {}
        self._contiguous: dict[str, int] = {}
        self._parked: dict[tuple[str, int], None] = {}  # (signer, nonce) behind a nonce gap, oldest first
        self._queued_free: dict[tuple[str, int], QueuedFreeCalls] = {}  # (hotkey, netuid) -> free calls queued
        self._banned: dict[str, int] = {}  # extrinsic hash -> last block it is refused
        self._seq = itertools.count()
        self._stop = threading.Event()
        try:
            if new:
                self.state, self.head = self._init(genesis or Genesis(timestamp=time.time()))
            else:
                self.state, self.head = self._load()
        except BaseException:
            self._db.close()
            raise
        self.genesis_hash = self.state.genesis.genesis_hash()

    # ---- persistence --------------------------------------------------------------------------------------
    def _load(self) -> tuple[ChainState, dict[str, Any]]:
        """The state snapshot and head block, checked against each other (not an assert: it must hold under -O)."""
        path = self.db_path
        try:
            row = self._db.execute("SELECT block, body FROM state WHERE id = 0").fetchone()
            if row is None:
                raise ChainDatabaseError(f"{path} has no state snapshot (the `state` row is gone): restore the "
                                         f"file from a backup; `verify --db {path}` replays what is left")
            top = self._db.execute("SELECT MAX(number) FROM blocks").fetchone()[0]
            head = self._block_row(row[0])
            if head is None or top != row[0]:
                raise ChainDatabaseError(f"{path}: the state snapshot is at block {row[0]} but the stored blocks "
                                         f"end at {top}: restore the file from a backup; `verify --db {path}` "
                                         f"names what differs")
            state = ChainState.from_dict(json.loads(row[1]))
            if self._db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone() is None:
                raise ChainDatabaseError(f"{path} holds no genesis record: restore the file from a backup")
        except (sqlite3.Error, ValueError, TypeError, KeyError) as e:
            raise ChainDatabaseError(f"{path} is damaged ({type(e).__name__}: {_first_line(e)}): restore it from "
                                     f"a backup; `verify --db {path}` names the first damaged block") from e
        if head["state_root"] != state.state_root():
            raise ChainDatabaseError(f"{path}: the state snapshot does not match block {row[0]}'s state root "
                                     f"(edited or damaged): restore the file from a backup; `verify --db {path}` "
                                     f"names what differs")
        logger.info(f"localnet resumed at block {state.block} from {path}: genesis_hash "
                    f"{state.genesis.genesis_hash()}")
        return state, head

    def _init(self, genesis: Genesis) -> tuple[ChainState, dict[str, Any]]:
        self._db.executescript(SCHEMA)
        state = ChainState.from_genesis(genesis)
        dump = state.dump()
        root = hashlib.sha256(dump).hexdigest()
        head = {"number": 0, "parent_hash": "0" * 64, "timestamp": genesis.timestamp, "state_root": root,
                "extrinsics_root": hashlib.sha256(b"").hexdigest(), "num_extrinsics": 0}
        head["hash"] = block_hash(0, head["parent_hash"], genesis.timestamp, root, head["extrinsics_root"])
        self._commit(head, [], dump, meta={"genesis": json.dumps(genesis.__dict__, sort_keys=True)})
        # one value is called the genesis hash: the one extrinsics sign and GET /block reports (block 0 has its own)
        logger.info(f"localnet created in {self.db_path}: genesis_hash {genesis.genesis_hash()}")
        return state, head

    def _commit(self, head: dict[str, Any], rows: list[tuple], dump: bytes, meta: dict[str, str] | None = None) -> None:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for k, v in (meta or {}).items():
                cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
            cur.execute("INSERT INTO blocks (number, hash, parent_hash, timestamp, state_root, extrinsics_root, "
                        "num_extrinsics) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (head["number"], head["hash"], head["parent_hash"], head["timestamp"], head["state_root"],
                         head["extrinsics_root"], head["num_extrinsics"]))
            cur.executemany("INSERT INTO extrinsics (block, idx, hash, signer, nonce, call, body, ok, error) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            cur.execute("INSERT OR REPLACE INTO state (id, block, body) VALUES (0, ?, ?)", (head["number"], dump))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _block_row(self, number: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT number, hash, parent_hash, timestamp, state_root, extrinsics_root, "
                               "num_extrinsics FROM blocks WHERE number = ?", (number,)).fetchone()
        if row is None:
            return None
        keys = ("number", "hash", "parent_hash", "timestamp", "state_root", "extrinsics_root", "num_extrinsics")
        return dict(zip(keys, row, strict=True))

    def block_info(self, number: int | None = None, with_extrinsics: bool = True) -> dict[str, Any] | None:
        """Header of block `number` (default: head), plus its extrinsics when a number is given."""
        with self._lock:
            if number is None:
                return {**self.head, "genesis_hash": self.genesis_hash, "block_time": self.block_time}
            info = self._block_row(number)
            if info is None or not with_extrinsics:
                return info
            rows = self._db.execute("SELECT idx, hash, signer, nonce, call, ok, error FROM extrinsics "
                                    "WHERE block = ? ORDER BY idx", (number,)).fetchall()
        keys = ("index", "hash", "signer", "nonce", "call", "ok", "error")
        info["extrinsics"] = [dict(zip(keys, r, strict=True)) for r in rows]
        return info

    def extrinsic_status(self, ext_hash: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT block, ok, error FROM extrinsics WHERE hash = ?", (ext_hash,)).fetchone()
        if row is None:
            return {"hash": ext_hash, "block": None, "ok": False, "error": None}
        return {"hash": ext_hash, "block": row[0], "ok": bool(row[1]), "error": row[2]}

    # ---- the pool ---------------------------------------------------------------------------------------------
    def submit(self, ext: Any, waiter: Any = None) -> str:
        """Verify and queue an extrinsic; returns its hash. `waiter(ok, error, block)` is called on inclusion.

        Raises InvalidTransaction: bad shape, size, signature, genesis or era; invalid arguments; a fee the
        signer cannot pay; a free hotkey call whose signer is not registered or that would fail a check before
        dispatch (rate limit, commit-reveal state, permit, ...: the chain's error name); a nonce already used
        or queued, or too far ahead; an extrinsic that expired in the pool sent again; the pool full.

        Room, as a substrate pool makes it: extrinsics behind a nonce gap ("parked") have their own budget
        (max_future, MAX_FUTURE_PER_SIGNER), the oldest parked one giving way to a newer one; when the whole
        pool is full a ready extrinsic takes the place of the oldest parked one, else of the last extrinsic of
        the signer holding the most, so a sender with little queued always gets in.
        """
        payload, encoded = verify_encoded(ext, self.genesis_hash)
        ext_hash, size = hashlib.sha256(encoded).hexdigest(), len(encoded)
        signer, nonce = payload["signer"], payload["nonce"]
        with self._lock:
            if self._banned.get(ext_hash, -1) >= self.state.block:
                raise InvalidTransaction("TemporarilyBanned: this extrinsic expired in the pool; sign it again "
                                         "with the current nonce and era")
            account_nonce = self.state.nonces.get(signer, 0)
            if nonce < account_nonce:
                raise InvalidTransaction(f"Stale: nonce {nonce} already used (next {account_nonce})")
            queued = self._pool.get(signer, {})
            if nonce in queued:
                raise InvalidTransaction(f"AlreadyImported: nonce {nonce} of {signer} is already queued")
            if len(queued) >= MAX_POOL_PER_SIGNER:
                raise InvalidTransaction(f"PoolFull: {MAX_POOL_PER_SIGNER} extrinsics of this signer are queued")
            contiguous = max(account_nonce, self._contiguous.get(signer, account_nonce))
            while contiguous in queued:
                contiguous += 1
            self._contiguous[signer] = contiguous
            parked = nonce > contiguous
            if parked and (nonce - contiguous > MAX_FUTURE_PER_SIGNER or
                           sum(n > contiguous for n in queued) >= MAX_FUTURE_PER_SIGNER):
                raise InvalidTransaction(f"Future: nonce {nonce} is too far ahead (next {contiguous})")
            netuid = payload["args"].get("netuid")  # checked by check_admission; before that maybe not hashable
            free_key = (signer, netuid) if payload["call"] in HOTKEY_CALLS and type(netuid) is int else None
            fee, space = check_admission(self.state, payload, size, self._queued_fees.get(signer, 0),
                                         self._queued_free.get(free_key) if free_key else None)
            self._make_room(signer, parked)
            entry = PoolEntry(payload, ext, ext_hash, next(self._seq), self.state.block, size, fee, space,
                              [waiter] if waiter else [])
            self._pool.setdefault(signer, {})[nonce] = entry
            self._pool_size += 1
            self._queued_fees[signer] = self._queued_fees.get(signer, 0) + fee
            if free_key:
                self._queued_free.setdefault(free_key, QueuedFreeCalls()).add(payload["call"], space)
            if parked:
                self._parked[(signer, nonce)] = None
            elif nonce == contiguous:  # the gap closed: what waited right behind it is ready now
                after = nonce + 1
                while after in queued:
                    self._parked.pop((signer, after), None)
                    after += 1
                self._contiguous[signer] = after
        return ext_hash

    def _make_room(self, signer: str, parked: bool) -> None:
        """Evict what must go for one more extrinsic of `signer` (parked or ready); PoolFull when nothing may."""
        if parked and not self.max_future:
            raise InvalidTransaction("Future: this node keeps no extrinsics behind a nonce gap")
        if parked and len(self._parked) >= self.max_future:
            self._evict(*next(iter(self._parked)), "Dropped: the pool's budget for extrinsics behind a nonce gap "
                                                   "is full and this one was the oldest")
        if self._pool_size < self.max_pool:
            return
        if parked:
            raise InvalidTransaction("PoolFull: try again in a block")
        if self._parked:
            self._evict(*next(iter(self._parked)), "Dropped: the pool is full and ready extrinsics come before "
                                                   "the oldest one waiting behind a nonce gap")
            return
        hog = max(self._pool, key=lambda s: len(self._pool[s]))
        if len(self._pool[hog]) <= len(self._pool.get(signer, {})) + 1:
            raise InvalidTransaction("PoolFull: try again in a block")
        self._evict(hog, max(self._pool[hog]), "Dropped: the pool is full and this signer held the most "
                                               "extrinsics in it")

    def _evict(self, signer: str, nonce: int, reason: str) -> None:
        queued = self._pool[signer]
        e = queued.pop(nonce)
        if not queued:
            del self._pool[signer]
        self._pool_size -= 1
        self._queued_fees[signer] = self._queued_fees.get(signer, 0) - e.fee
        self._parked.pop((signer, nonce), None)
        if e.payload["call"] in HOTKEY_CALLS:
            self._queued_free[(signer, e.payload["args"]["netuid"])].add(e.payload["call"], e.space, -1)
        if signer in self._contiguous:
            self._contiguous[signer] = min(self._contiguous[signer], nonce)
        self._resolve(e, False, reason, None)

    def next_nonce(self, ss58: str) -> int:
        """The account nonce after every queued extrinsic that can be included (a client's next nonce)."""
        with self._lock:
            nonce = self.state.nonces.get(ss58, 0)
            queued = self._pool.get(ss58, {})
            while nonce in queued:
                nonce += 1
            return nonce

    def _drop(self, e: PoolEntry, reason: str) -> None:
        """Resolve an extrinsic that expired in the pool and refuse the same bytes for BAN_BLOCKS."""
        self._banned[e.hash] = self.state.block + BAN_BLOCKS
        self._resolve(e, False, reason, None)

    def _take_ready(self) -> list[PoolEntry]:
        """Pop each signer's run of consecutive nonces, round-robin across signers (one extrinsic of each, in
        order of arrival, then the next of each...) so that many senders cannot crowd one out; drop what expired
        (its era, or a nonce gap not filled within FUTURE_TX_TTL_BLOCKS) and everything of its signer behind it,
        never to be parked again."""
        chains: list[list[PoolEntry]] = []
        next_block = self.state.block + 1
        self._banned = {h: until for h, until in self._banned.items() if until >= self.state.block}
        for signer, queued in list(self._pool.items()):
            nonce, run = self.state.nonces.get(signer, 0), []
            while nonce in queued:
                try:
                    check_era(queued[nonce].payload, next_block)
                except InvalidTransaction as e:
                    self._drop(queued.pop(nonce), str(e))
                    for n in sorted(n for n in queued if n > nonce):
                        self._drop(queued.pop(n), f"Future: nonce {nonce} of this signer expired before it")
                    break
                run.append(queued.pop(nonce))
                nonce += 1
            if run:
                chains.append(run)
            for n in sorted(queued):
                e = queued[n]
                if n < nonce:
                    self._resolve(queued.pop(n), False, f"Stale: nonce {n} already used", None)
                    continue
                try:
                    check_era(e.payload, next_block)
                except InvalidTransaction as err:
                    self._drop(queued.pop(n), str(err))
                    continue
                if self.state.block - e.received_block > FUTURE_TX_TTL_BLOCKS:
                    self._drop(queued.pop(n), "Future: nonce gap was never filled")
            if not queued:
                del self._pool[signer]
        order = sorted(((depth, run[0].seq, e) for run in chains for depth, e in enumerate(run)),
                       key=lambda t: (t[0], t[1]))
        ready = [e for _, _, e in order]
        for e in ready[MAX_EXTRINSICS_PER_BLOCK:]:  # over capacity: each signer's tail waits for the next block
            self._pool.setdefault(e.payload["signer"], {})[e.payload["nonce"]] = e
        return ready[:MAX_EXTRINSICS_PER_BLOCK]

    def _reindex_pool(self) -> None:
        """Recompute the pool's bookkeeping from what it holds against the new state (after a block)."""
        self._pool_size = sum(len(q) for q in self._pool.values())
        self._queued_fees = {signer: sum(e.fee for e in q.values()) for signer, q in self._pool.items()}
        self._contiguous.clear()
        parked: list[tuple[int, str, int]] = []
        self._queued_free = {}
        for signer, queued in self._pool.items():
            nonce = self.state.nonces.get(signer, 0)
            while nonce in queued:
                nonce += 1
            parked += [(e.seq, signer, n) for n, e in queued.items() if n > nonce]
            for e in queued.values():
                if e.payload["call"] in HOTKEY_CALLS:
                    key = (signer, e.payload["args"]["netuid"])
                    self._queued_free.setdefault(key, QueuedFreeCalls()).add(e.payload["call"], e.space)
        self._parked = {(signer, n): None for _, signer, n in sorted(parked)}

    @staticmethod
    def _resolve(entry: PoolEntry, ok: bool, error: str | None, block: int | None) -> None:
        for waiter in entry.waiters:
            try:
                waiter(ok, error, block)
            except Exception as e:  # a waiter that went away must not stop the chain
                logger.debug(f"extrinsic waiter failed: {e}")

    # ---- blocks -----------------------------------------------------------------------------------------------
    def produce_block(self, timestamp: float | None = None) -> dict[str, Any]:
        """Make, persist and return one block header: block step, then the ready extrinsics in order.

        A free hotkey call is checked again against the state it would run on (an epoch or an earlier
        extrinsic of the block may have changed it): one that would fail is left out of the block, not stored,
        and the rest of its signer's extrinsics in this block with it (their nonces no longer follow).
        """
        with self._lock:
            ts = float(timestamp if timestamp is not None else time.time())
            entries = self._take_ready()
            self.state.begin_block(ts)
            number = self.state.block
            results: list[tuple[PoolEntry, bool, str | None]] = []
            refused: list[tuple[PoolEntry, str]] = []
            included, rows = [], []
            blocked: dict[str, str] = {}
            for e in entries:
                signer, call = e.payload["signer"], e.payload["call"]
                if signer in blocked:
                    refused.append((e, f"Future: an earlier extrinsic of this signer was refused ({blocked[signer]})"))
                    continue
                if call in HOTKEY_CALLS:
                    try:
                        check_free_call(self.state, signer, call, e.payload["args"], number)
                    except CallError as err:
                        refused.append((e, str(err.args[0])))
                        blocked[signer] = str(err.args[0])
                        continue
                ok, error = self._apply(e)
                results.append((e, ok, error))
                rows.append((number, len(included), e.hash, signer, e.payload["nonce"], call,
                             json.dumps(e.ext, sort_keys=True), int(ok), error))
                included.append(e)
            dump = self.state.dump()
            root = hashlib.sha256(dump).hexdigest()
            ext_root = hashlib.sha256("".join(e.hash for e in included).encode()).hexdigest()
            head = {"number": number, "parent_hash": self.head["hash"], "timestamp": ts, "state_root": root,
                    "extrinsics_root": ext_root, "num_extrinsics": len(included)}
            head["hash"] = block_hash(number, head["parent_hash"], ts, root, ext_root)
            self._commit(head, rows, dump)
            self.head = head
            self._reindex_pool()
        for e, ok, error in results:
            self._resolve(e, ok, error, number)
        for e, reason in refused:
            self._resolve(e, False, reason, None)
        return head

    def _apply(self, e: PoolEntry) -> tuple[bool, str | None]:
        try:
            return apply_payload(self.state, e.payload, e.size, args_checked=True)  # checked at admission
        except Exception as exc:  # a bug must cost one extrinsic, never the block producer
            logger.exception(f"extrinsic {e.hash[:16]} ({e.payload['call']}) raised")
            return False, f"InternalError: {type(exc).__name__}"

    def run_producer(self) -> None:
        """Produce a block every `block_time` seconds until `stop()`; never bursts to catch up."""
        next_at = max(time.time(), float(self.head["timestamp"]) + self.block_time)
        while not self._stop.wait(max(0.0, next_at - time.time())):
            started = time.time()
            head = self.produce_block(started)
            if head["num_extrinsics"]:
                logger.debug(f"block {head['number']}: {head['num_extrinsics']} extrinsics in "
                             f"{(time.time() - started) * 1e3:.0f} ms")
            next_at += self.block_time
            if next_at < time.time():
                next_at = time.time() + self.block_time

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        with self._lock:
            for queued in self._pool.values():
                for e in queued.values():
                    self._resolve(e, False, "NodeShuttingDown", None)
            self._pool.clear()
            self._pool_size = 0
            self._queued_fees.clear()
            self._contiguous.clear()
            self._parked.clear()
            self._queued_free.clear()
            self._db.close()

    def read(self, fn, *args) -> Any:
        """Run a view function on the state under the lock."""
        with self._lock:
            return fn(self.state, *args)


def replay_chain(db_path: Path, upto: int | None = None) -> dict[str, Any]:
    """Re-execute a node's database from genesis (signatures re-checked) and compare every state root.

    Proves the chain is deterministic and the stored blocks are complete. Returns {"blocks": n checked,
    "head": last block, "mismatches": [block numbers whose recomputed root or extrinsic result differs]}.
    """
    db = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True)
    try:
        genesis = Genesis(**json.loads(db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0]))
        state = ChainState.from_genesis(genesis)
        headers = db.execute("SELECT number, timestamp, state_root FROM blocks WHERE number >= 1 AND number <= ? "
                             "ORDER BY number", (upto if upto is not None else 2**62,)).fetchall()
        mismatches, head = [], 0
        for number, timestamp, root in headers:
            state.begin_block(timestamp)
            rows = db.execute("SELECT body, ok, error FROM extrinsics WHERE block = ? ORDER BY idx",
                              (number,)).fetchall()
            same = True
            for body, ok, error in rows:
                same &= apply_signed(state, json.loads(body)) == (bool(ok), error)
            if not same or state.state_root() != root:
                mismatches.append(number)
            head = number
    finally:
        db.close()
    return {"blocks": len(headers), "head": head, "mismatches": mismatches}


