"""The localnet node's HTTP API (FastAPI on 127.0.0.1 only) and `serve`, which runs it beside the block producer.

GET /block, /block/{n}, /metagraph/{netuid}, /commitments/{netuid}, /hyperparameters/{netuid}, /account/{ss58},
/nonce/{ss58}, /subnets, /network; POST /extrinsic(s). Bodies are strict JSON (no NaN/Infinity, bounded
nesting): garbage gets 400, a body over the cap 413, a missing block or subnet 404; nothing reaches a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from loguru import logger

from template.chain.localnet import views
from template.chain.localnet.extrinsic import InvalidTransaction, parse_json
from template.chain.localnet.node import (
    MAX_BATCH,
    MAX_BATCH_BODY_BYTES,
    MAX_BLOCK_NUMBER,
    MAX_BODY_BYTES,
    MAX_FUTURE,
    MAX_POOL,
    LocalnetNode,
)
from template.chain.localnet.state import CallError, Genesis


def build_app(node: LocalnetNode):
    """The FastAPI app over `node`. Chain errors map to 404 (missing subnet/block) or 400 (bad input)."""
    app = FastAPI(title="localnet", docs_url=None, redoc_url=None)

    def view(fn, *args) -> Any:
        try:
            return node.read(fn, *args)
        except CallError as e:
            raise HTTPException(status_code=404, detail=str(e.args[0])) from e

    @app.get("/block")
    def head() -> dict[str, Any]:
        return node.block_info()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(f"{request.method} {request.url.path} raised")
        return JSONResponse({"detail": f"InternalError: {type(exc).__name__}"}, status_code=500)

    @app.get("/block/{number}")
    def block(number: int, extrinsics: bool = True) -> dict[str, Any]:
        if not 0 <= number <= MAX_BLOCK_NUMBER:
            raise HTTPException(status_code=404, detail=f"BlockNotFound: {number}")
        info = node.block_info(number, with_extrinsics=extrinsics)
        if info is None:
            raise HTTPException(status_code=404, detail=f"BlockNotFound: {number}")
        return info

    @app.get("/extrinsic/{ext_hash}")
    def extrinsic_status(ext_hash: str) -> dict[str, Any]:
        """Where an extrinsic landed: {block, ok, error}; block None when it was never included."""
        return node.extrinsic_status(ext_hash)

    @app.get("/metagraph/{netuid}")
    def metagraph(netuid: int) -> dict[str, Any]:
        return view(views.metagraph_view, netuid)

    @app.get("/commitments/{netuid}")
    def commitments(netuid: int) -> dict[str, Any]:
        return view(views.commitments_view, netuid)

    @app.get("/hyperparameters/{netuid}")
    def hyperparameters(netuid: int) -> dict[str, Any]:
        return view(views.hyperparameters_view, netuid)

    @app.get("/subnets")
    def subnets() -> dict[str, Any]:
        return view(lambda s: {k: views.subnet_summary(s, sub) | {"owner_coldkey": sub.owner_coldkey,
                                                                 "owner_hotkey": sub.owner_hotkey,
                                                                 "registered_at": sub.registered_at}
                               for k, sub in s.subnets.items()})

    @app.get("/network")
    def network() -> dict[str, Any]:
        """Lock cost of the next subnet (rao) and the rules behind it."""
        return view(views.network_view)

    @app.get("/account/{ss58}")
    def account(ss58: str) -> dict[str, Any]:
        return view(views.account_view, ss58)

    @app.get("/nonce/{ss58}")
    def nonce(ss58: str) -> dict[str, Any]:
        return {"ss58": ss58, "nonce": node.next_nonce(ss58)}

    async def submit_and_wait(ext: Any, wait: bool) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future | None = loop.create_future() if wait else None

        def waiter(ok: bool, error: str | None, number: int | None) -> None:
            def settle() -> None:
                if fut is not None and not fut.done():
                    fut.set_result((ok, error, number))
            loop.call_soon_threadsafe(settle)

        try:
            ext_hash = node.submit(ext, waiter if fut is not None else None)
        except InvalidTransaction as e:
            return {"ok": False, "error": str(e), "block": None, "invalid": True, "head": node.head["number"]}
        if fut is None:
            return {"ok": True, "error": None, "block": None, "hash": ext_hash, "head": node.head["number"]}
        ok, error, number = await fut
        return {"ok": ok, "error": error, "block": number, "hash": ext_hash, "head": node.head["number"]}

    async def json_body(request: Request, cap: int) -> Any:
        """The request body as strict JSON: 413 over `cap` bytes, 400 for anything that is not JSON."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise HTTPException(status_code=413, detail=f"PayloadTooLarge: body over {cap} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise HTTPException(status_code=413, detail=f"PayloadTooLarge: body over {cap} bytes")
            chunks.append(chunk)
        try:
            return parse_json(b"".join(chunks))  # plain json: FastAPI's body validation costs ~2x here
        except ValueError as e:  # includes bad UTF-8, NaN/Infinity, nesting, over-long integers
            raise HTTPException(status_code=400, detail=f"BadFormat: {str(e)[:200]}") from e

    def wait_flag(body: dict[str, Any]) -> bool:
        wait = body.get("wait", True)
        if not isinstance(wait, bool):
            raise HTTPException(status_code=400, detail="BadFormat: wait must be true or false")
        return wait

    @app.post("/extrinsic")
    async def extrinsic(request: Request) -> dict[str, Any]:
        """Body {"extrinsic": {...}, "wait": bool}. Returns ok/error/block (block None when not waiting)."""
        body = await json_body(request, MAX_BODY_BYTES)
        if not isinstance(body, dict) or "extrinsic" not in body:
            raise HTTPException(status_code=400, detail="BadFormat: expected {extrinsic, wait}")
        return await submit_and_wait(body["extrinsic"], wait_flag(body))

    @app.post("/extrinsics")
    async def extrinsics(request: Request) -> list[dict[str, Any]]:
        """Batch: body {"extrinsics": [...], "wait": bool}; one result per extrinsic, in order."""
        body = await json_body(request, MAX_BATCH_BODY_BYTES)
        if not isinstance(body, dict) or not isinstance(body.get("extrinsics"), list):
            raise HTTPException(status_code=400, detail="BadFormat: expected {extrinsics: [...]}")
        if len(body["extrinsics"]) > MAX_BATCH:
            raise HTTPException(status_code=413, detail=f"PayloadTooLarge: at most {MAX_BATCH} extrinsics")
        wait = wait_flag(body)
        return list(await asyncio.gather(*(submit_and_wait(e, wait) for e in body["extrinsics"])))

    return app


def serve(db_path: Path, port: int, block_time: float, genesis: Genesis | None = None, new: bool = False,
          pool_limits: tuple[int, int] = (MAX_POOL, MAX_FUTURE)) -> None:
    """Run a node until SIGTERM/SIGINT: block producer thread + uvicorn on 127.0.0.1:`port`. `new`: start a
    chain in `db_path` (which must not exist) instead of resuming the one in it; `pool_limits`: (extrinsics in the
    pool, of those behind a nonce gap). Raises ChainDatabaseError."""
    import uvicorn

    node = LocalnetNode(db_path, block_time=block_time, genesis=genesis, new=new, max_pool=pool_limits[0],
                        max_future=pool_limits[1])

    def produce() -> None:
        try:
            node.run_producer()
        except sqlite3.Error as e:  # disk full, file removed or damaged under the node: one line, exit 2
            logger.error(f"error: database {db_path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         f"; the node stopped at block {node.head['number']}: fix the disk or file and start it "
                         f"again (it resumes from the last committed block; `verify --db {db_path}` checks it)")
            os._exit(2)
        except Exception:
            # memory may now be ahead of the database: die, so that a restart resumes from the last commit
            logger.exception("block production failed; exiting")
            os._exit(70)

    producer = threading.Thread(target=produce, name="block-producer", daemon=True)
    producer.start()
    config = uvicorn.Config(build_app(node), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    logger.info(f"localnet serving on http://127.0.0.1:{port}, block time {block_time} s, db {db_path}")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # our handlers: stop serving, then close the db cleanly
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        node.stop()
        producer.join(timeout=5 * block_time + 5)
        node.close()
        logger.info("localnet stopped")
