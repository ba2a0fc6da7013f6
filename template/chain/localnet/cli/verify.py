"""`verify`: replay a node database from genesis and say which block first differs, and in what.

Per block it checks, in order: the header hash and its link to the parent, each extrinsic's body against its
stored hash, each extrinsic's result (re-executed, signatures re-checked) against the stored result, and the
state root. At the head it also compares the stored state snapshot with the replayed state, field by field.
The chain is deterministic, so any difference means a damaged or edited database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from template.chain.localnet.calls import apply_signed
from template.chain.localnet.cli.output import emit_json
from template.chain.localnet.errors import ChainDatabaseError
from template.chain.localnet.extrinsic import extrinsic_hash
from template.chain.localnet.node import block_hash
from template.chain.localnet.state import ChainState, Genesis

MAX_REASONS = 5


def open_db(path: Path) -> sqlite3.Connection:
    """Read-only connection to a node database; ChainDatabaseError (exit 2) when it is missing or not one."""
    if not path.is_file():
        raise ChainDatabaseError(f"no node database at {path} (the --db a `serve` wrote): check the path")
    if path.stat().st_size == 0:
        raise ChainDatabaseError(f"{path} is empty (0 bytes), so it is not a localnet node database: restore it "
                                 f"from a backup")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0]
    except (sqlite3.DatabaseError, TypeError) as e:
        db.close()
        raise ChainDatabaseError(f"{path} is not a localnet node database ({type(e).__name__}: {e}): check --db, "
                                 f"or restore the file from a backup") from e
    try:  # pages the replay never reads (an index) are damage too
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as e:
        problems = [str(e)]
    if problems != ["ok"]:
        db.close()
        found = " ".join(problems[0].replace("*** in database main ***", "").split())[:120]
        raise ChainDatabaseError(f"{path} is damaged (SQLite's integrity check: {found}): restore it from a backup")
    return db


def _block_reasons(db: sqlite3.Connection, state: ChainState, header: tuple, parent: str) -> list[str]:
    """Replay one block on `state`; the differences found, in check order."""
    number, bhash, parent_hash, ts, root, ext_root = header
    reasons = []
    if parent_hash != parent:
        reasons.append(f"parent hash {parent_hash[:12]} does not link to block {number - 1} ({parent[:12]})")
    if block_hash(number, parent_hash, ts, root, ext_root) != bhash:
        reasons.append("header hash does not match its fields (header edited)")
    state.begin_block(ts)
    rows = db.execute("SELECT idx, hash, signer, call, body, ok, error FROM extrinsics WHERE block = ? ORDER BY idx",
                      (number,)).fetchall()
    hashes = []
    for idx, stored_hash, signer, call, body, ok, error in rows:
        ext = json.loads(body)
        hashes.append(extrinsic_hash(ext))
        what = f"extrinsic {idx} ({call} by {signer[:10]}...)"
        if hashes[-1] != stored_hash:
            reasons.append(f"{what}: body does not match its stored hash (extrinsic edited)")
        got = apply_signed(state, ext)
        if got != (bool(ok), error):
            reasons.append(f"{what}: stored {_result(bool(ok), error)}, replay gives {_result(*got)}")
    if rows and hashlib.sha256("".join(hashes).encode()).hexdigest() != ext_root:
        reasons.append("extrinsics root does not match the extrinsics (one added, removed or edited)")
    replayed = state.state_root()
    if replayed != root:
        reasons.append(f"state root: stored {root[:12]}, replay gives {replayed[:12]}")
    return reasons


def _result(ok: bool, error: str | None) -> str:
    return "ok" if ok else f"failed {error}"


def diff_states(stored: Any, replayed: Any, path: str = "", limit: int = MAX_REASONS) -> list[str]:
    """Paths where two JSON-like values differ, e.g. "balances.5Grw...: stored 10, replay gives 9"."""
    out: list[str] = []
    if isinstance(stored, dict) and isinstance(replayed, dict):
        for k in sorted(set(stored) | set(replayed)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in stored or k not in replayed:
                out.append(f"{sub}: {'missing in the snapshot' if k not in stored else 'missing in the replay'}")
            else:
                out += diff_states(stored[k], replayed[k], sub, limit - len(out))
            if len(out) >= limit:
                break
    elif isinstance(stored, list) and isinstance(replayed, list) and len(stored) == len(replayed):
        for i, (a, b) in enumerate(zip(stored, replayed, strict=True)):
            out += diff_states(a, b, f"{path}[{i}]", limit - len(out))
            if len(out) >= limit:
                break
    elif stored != replayed:
        out.append(f"{path}: stored {json.dumps(stored)[:60]}, replay gives {json.dumps(replayed)[:60]}")
    return out[:limit]


def audit(path: Path) -> dict[str, Any]:
    """Replay the database at `path`; {"blocks", "head", "mismatches", "first": {"block", "reasons"} | None,
    "snapshot": [differences between the stored head state and the replay]}."""
    db = open_db(path)
    try:
        db.execute("BEGIN")  # one read snapshot: a running node may commit blocks meanwhile
        genesis = Genesis(**json.loads(db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0]))
        state = ChainState.from_genesis(genesis)
        parent, genesis_root = db.execute("SELECT hash, state_root FROM blocks WHERE number = 0").fetchone()
        headers = db.execute("SELECT number, hash, parent_hash, timestamp, state_root, extrinsics_root FROM blocks "
                             "WHERE number >= 1 ORDER BY number").fetchall()
        mismatches, first, head = [], None, 0
        if state.state_root() != genesis_root:
            mismatches.append(0)
            first = {"block": 0, "reasons": ["the genesis state built from the stored genesis record does not match "
                                             "block 0's state root (record edited, or written by other node code)"]}
        for header in headers:
            reasons = _block_reasons(db, state, header, parent)
            if reasons:
                mismatches.append(header[0])
                first = first or {"block": header[0], "reasons": reasons[:MAX_REASONS]}
            parent, head = header[1], header[0]
        snap = db.execute("SELECT block, body FROM state WHERE id = 0").fetchone()
        # always compared, also when blocks are missing at the end: the replay stops at the last stored block
        if snap is None:
            snapshot = ["no state snapshot: the `state` row is gone"]
        else:
            snapshot = [] if snap[0] == head else [f"the snapshot is at block {snap[0]} but the stored blocks end "
                                                   f"at {head} (blocks missing at the end, or the snapshot edited)"]
            snapshot += diff_states(json.loads(snap[1]), json.loads(state.dump()), limit=MAX_REASONS)
    except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as e:
        raise ChainDatabaseError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
                                 f": restore it from a backup") from e
    finally:
        db.close()
    return {"blocks": len(headers), "head": head, "mismatches": mismatches, "first": first, "snapshot": snapshot}


def cmd_verify(args: argparse.Namespace) -> int:
    report = audit(args.db)
    ok = not report["mismatches"] and not report["snapshot"]
    if args.json:
        emit_json({**report, "ok": ok})
        return 0 if ok else 1
    if ok:
        print(f"verified {report['blocks']} blocks up to {report['head']}: every header, extrinsic result and state "
              f"root matches a replay from genesis")
        return 0
    if report["first"]:
        first = report["first"]
        later = len(report["mismatches"]) - 1
        print(f"block {first['block']} is the first that differs"
              + (f" ({later} later blocks differ too, as a consequence)" if later else "") + ":")
        for reason in first["reasons"]:
            print(f"  {reason}")
    if report["snapshot"]:
        print(f"the stored state at the head (block {report['head']}) differs from the replay:")
        for reason in report["snapshot"]:
            print(f"  {reason}")
    return 1
