"""The localnet node: a timer-driven block producer over `ChainState`, persisted in SQLite.

Extrinsics are verified when submitted (size, signature, genesis, era, arguments, fee payable or a free call
by a registered hotkey, nonce not used, per-signer pool limits) and wait in a pool; each block includes every
signer's run of consecutive nonces, applies them after the block step, and commits the block row, its
extrinsics and the full state snapshot in one SQLite transaction. A restart, even after kill -9, resumes at the
last committed block with the same state root. The HTTP API and `serve` are in `api.py`; running a node as a
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

from template.chain.localnet.calls import apply_payload, apply_signed, check_admission
from template.chain.localnet.extrinsic import (
    InvalidTransaction,
    canonical_json,
    check_era,
    verify_encoded,
)
from template.chain.localnet.state import ChainState, Genesis

MAX_EXTRINSICS_PER_BLOCK = 20_000
MAX_POOL = 50_000
MAX_POOL_PER_SIGNER = 1024  # queued extrinsics of one signer
MAX_FUTURE_PER_SIGNER = 16  # of those, how many may wait behind a nonce gap
FUTURE_TX_TTL_BLOCKS = 20  # a nonce gap not filled within this many blocks drops the waiting extrinsic
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
    waiters: list[Any] = field(default_factory=list)  # callables taking (ok, error, block)


def block_hash(number: int, parent: str, timestamp: float, state_root: str, extrinsics_root: str) -> str:
    return hashlib.sha256(canonical_json({"number": number, "parent": parent, "timestamp": timestamp,
                                          "state_root": state_root, "extrinsics_root": extrinsics_root})).hexdigest()


class LocalnetNode:
    """State + pool + SQLite; thread-safe. `produce_block()` makes one block; `run_producer()` loops on a timer."""

    def __init__(self, db_path: Path, block_time: float = 1.0, genesis: Genesis | None = None) -> None:
        if block_time <= 0:
            raise ValueError(f"block_time must be > 0 seconds, got {block_time}")
        self.block_time = block_time
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
        self._db.executescript(SCHEMA)
        self._pool: dict[str, dict[int, PoolEntry]] = {}
        self._pool_size = 0
        # per signer, valid until the next block takes from the pool: fees queued, first free nonce from which
        # to look for the end of the contiguous run (keeps submit O(1) for in-order senders)
        self._queued_fees: dict[str, int] = {}
        self._contiguous: dict[str, int] = {}
        self._seq = itertools.count()
        self._stop = threading.Event()
        self.state, self.head = self._load_or_init(genesis or Genesis(timestamp=time.time()))
        self.genesis_hash = self.state.genesis.genesis_hash()

    # ---- persistence --------------------------------------------------------------------------------------
    def _load_or_init(self, genesis: Genesis) -> tuple[ChainState, dict[str, Any]]:
        row = self._db.execute("SELECT block, body FROM state WHERE id = 0").fetchone()
        if row is not None:
            state = ChainState.from_dict(json.loads(row[1]))
            head = self._block_row(row[0])
            assert head is not None and head["state_root"] == state.state_root(), "state snapshot does not match"
            logger.info(f"localnet resumed at block {state.block} from {self.db_path}: genesis_hash "
                        f"{state.genesis.genesis_hash()}")
            return state, head
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
        signer cannot pay (or, for a free hotkey call, a hotkey not registered on the subnet); a nonce already
        used or queued, or too far ahead; the signer's or the whole pool full.
        """
        payload, encoded = verify_encoded(ext, self.genesis_hash)
        ext_hash, size = hashlib.sha256(encoded).hexdigest(), len(encoded)
        signer, nonce = payload["signer"], payload["nonce"]
        with self._lock:
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
            if nonce > contiguous and (nonce - contiguous > MAX_FUTURE_PER_SIGNER or
                                       sum(n > contiguous for n in queued) >= MAX_FUTURE_PER_SIGNER):
                raise InvalidTransaction(f"Future: nonce {nonce} is too far ahead (next {contiguous})")
            if self._pool_size >= MAX_POOL:
                raise InvalidTransaction("PoolFull: try again in a block")
            fee = check_admission(self.state, payload, size, self._queued_fees.get(signer, 0))
            self._pool.setdefault(signer, {})[nonce] = PoolEntry(payload, ext, ext_hash, next(self._seq),
                                                                 self.state.block, size, fee,
                                                                 [waiter] if waiter else [])
            self._pool_size += 1
            self._queued_fees[signer] = self._queued_fees.get(signer, 0) + fee
        return ext_hash

    def next_nonce(self, ss58: str) -> int:
        """The account nonce after every queued extrinsic that can be included (a client's next nonce)."""
        with self._lock:
            nonce = self.state.nonces.get(ss58, 0)
            queued = self._pool.get(ss58, {})
            while nonce in queued:
                nonce += 1
            return nonce

    def _take_ready(self) -> list[PoolEntry]:
        """Pop each signer's run of consecutive nonces (stopping at an expired era), oldest first; drop
        extrinsics that expired or waited behind a nonce gap for too long."""
        chains: list[list[PoolEntry]] = []
        next_block = self.state.block + 1
        for signer, queued in list(self._pool.items()):
            nonce, run = self.state.nonces.get(signer, 0), []
            while nonce in queued:
                try:
                    check_era(queued[nonce].payload, next_block)
                except InvalidTransaction as e:
                    self._resolve(queued.pop(nonce), False, str(e), None)
                    break
                run.append(queued.pop(nonce))
                nonce += 1
            if run:
                chains.append(run)
            for n in [n for n, e in queued.items() if n < nonce or self.state.block - e.received_block >
                      FUTURE_TX_TTL_BLOCKS]:
                self._resolve(queued.pop(n), False, "Future: nonce gap was never filled", None)
            if not queued:
                del self._pool[signer]
        chains.sort(key=lambda run: run[0].seq)
        ready = [e for run in chains for e in run]
        for e in ready[MAX_EXTRINSICS_PER_BLOCK:]:  # over capacity: back to the pool for the next block
            self._pool.setdefault(e.payload["signer"], {})[e.payload["nonce"]] = e
        self._pool_size = sum(len(q) for q in self._pool.values())
        self._queued_fees = {signer: sum(e.fee for e in q.values()) for signer, q in self._pool.items()}
        self._contiguous.clear()
        return ready[:MAX_EXTRINSICS_PER_BLOCK]

    @staticmethod
    def _resolve(entry: PoolEntry, ok: bool, error: str | None, block: int | None) -> None:
        for waiter in entry.waiters:
            try:
                waiter(ok, error, block)
            except Exception as e:  # a waiter that went away must not stop the chain
                logger.debug(f"extrinsic waiter failed: {e}")

    # ---- blocks -----------------------------------------------------------------------------------------------
    def produce_block(self, timestamp: float | None = None) -> dict[str, Any]:
        """Make, persist and return one block header: block step, then the ready extrinsics in order."""
        with self._lock:
            ts = float(timestamp if timestamp is not None else time.time())
            entries = self._take_ready()
            self.state.begin_block(ts)
            number = self.state.block
            results, rows = [], []
            for idx, e in enumerate(entries):
                ok, error = self._apply(e)
                results.append((e, ok, error))
                rows.append((number, idx, e.hash, e.payload["signer"], e.payload["nonce"], e.payload["call"],
                             json.dumps(e.ext, sort_keys=True), int(ok), error))
            dump = self.state.dump()
            root = hashlib.sha256(dump).hexdigest()
            ext_root = hashlib.sha256("".join(e.hash for e in entries).encode()).hexdigest()
            head = {"number": number, "parent_hash": self.head["hash"], "timestamp": ts, "state_root": root,
                    "extrinsics_root": ext_root, "num_extrinsics": len(entries)}
            head["hash"] = block_hash(number, head["parent_hash"], ts, root, ext_root)
            self._commit(head, rows, dump)
            self.head = head
        for e, ok, error in results:
            self._resolve(e, ok, error, number)
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


