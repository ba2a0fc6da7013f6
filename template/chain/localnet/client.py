"""HTTP client of the localnet node: the `Chain` protocol plus the admin calls the localnet tools use.

Every write is a signed extrinsic (sr25519, the signer is the origin). Nonces are fetched once per account and
then assigned locally under a per-account lock, so threads can submit concurrently; the node's pool orders them.
Connection errors are retried for `retry_s` seconds because the node may be restarting; a resent extrinsic
whose first copy did land is recognised by its hash. Extrinsics are mortal: each is signed with the last head
the client saw as its era's birth, and re-signed (fresh nonce and head) when the node calls it outdated.
With commit-reveal on for the subnet, `set_weights` commits (the chain reveals the row later), exactly as the
SDK's `SetWeights` intent does on subtensor.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from bittensor_wallet import Keypair

from template.chain.base import RAO_PER_TAO, U16_MAX, ChainError, Metagraph, TxResult, weights_to_u16
from template.chain.localnet.extrinsic import DEFAULT_ERA_PERIOD, extrinsic_hash, sign_extrinsic

COMMIT_RAW_MAX = 128
COMMIT_MAX_FIELDS = 3
# errors after which a fresh nonce and era fix the extrinsic: re-sign and send again
RESIGN_ERRORS = ("Stale", "Future", "AlreadyImported", "Outdated", "BadEra")


def tao_to_rao(amount: float) -> int:
    return int(round(float(amount) * RAO_PER_TAO))


def commitment_fields(data: str) -> list[dict[str, str]]:
    """UTF-8 bytes -> up to three Raw fields of <= 128 bytes (what subtensor's commitments pallet stores and
    the SDK decodes as text). Raises ValueError when longer than 384 bytes."""
    raw = data.encode()
    if len(raw) > COMMIT_RAW_MAX * COMMIT_MAX_FIELDS:
        raise ValueError(f"commitment is {len(raw)} bytes; at most {COMMIT_RAW_MAX * COMMIT_MAX_FIELDS} fit in "
                         f"{COMMIT_MAX_FIELDS} Raw fields")
    return [{"Raw": raw[i:i + COMMIT_RAW_MAX].hex()} for i in range(0, max(len(raw), 1), COMMIT_RAW_MAX)]


class LocalnetClient:
    """`Chain` over a localnet node's HTTP API. The constructor does no I/O; call `connect()`."""

    def __init__(self, endpoint: str, timeout_s: float = 120.0, retry_s: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.genesis_hash: str | None = None
        self._http: httpx.Client | None = None
        self._nonces: dict[str, int] = {}
        self._nonce_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._timestamps: dict[int, float] = {}
        self._head = 0  # the highest block number seen; the birth of the next extrinsic's era

    # ---- transport ---------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Reach the node and learn its genesis hash. Raises ChainError after `retry_s` seconds of failures."""
        if self._http is None:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
            self._http = httpx.Client(base_url=self.endpoint, timeout=self.timeout_s, limits=limits)
        head = self._request("GET", "/block")
        self.genesis_hash = head["genesis_hash"]
        self._saw_head(int(head["number"]))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._http is None:
            self.connect()
        deadline = time.time() + self.retry_s
        while True:
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if time.time() > deadline:
                    raise ChainError(f"localnet at {self.endpoint} unreachable: {e}") from e
                time.sleep(0.2)
                continue
            if resp.status_code in (400, 404, 413, 422):
                raise ChainError(_detail(resp, path))
            if resp.status_code >= 400:
                raise ChainError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:300]}")
            return resp.json()

    def _saw_head(self, number: int) -> None:
        self._head = max(self._head, number)

    def _nonce_lock(self, ss58: str) -> threading.Lock:
        with self._locks_guard:
            return self._nonce_locks.setdefault(ss58, threading.Lock())

    def _next_nonce(self, ss58: str, refresh: bool = False) -> int:
        with self._nonce_lock(ss58):
            if refresh or ss58 not in self._nonces:
                self._nonces[ss58] = int(self._request("GET", f"/nonce/{ss58}")["nonce"])
            nonce = self._nonces[ss58]
            self._nonces[ss58] = nonce + 1
            return nonce

    def submit(self, keypair: Keypair, call: str, args: dict[str, Any], wait: bool = True) -> TxResult:
        """Sign and send one extrinsic; with `wait`, return once it is in a block (TxResult.block)."""
        if self.genesis_hash is None:
            self.connect()
        refresh = False
        for _ in range(3):
            if refresh:
                self.block()  # a fresh head for the era
            ext = sign_extrinsic(keypair, call, args, self._next_nonce(keypair.ss58_address, refresh),
                                 self.genesis_hash, birth=self._head, period=DEFAULT_ERA_PERIOD)
            res = self._post_extrinsic(ext, wait)
            if res.ok or not res.error or not res.error.startswith(RESIGN_ERRORS):
                return res
            refresh = True  # another client used this account, the node restarted, or the era ran out
        return res

    def submit_batch(self, calls: list[tuple[Keypair, str, dict[str, Any]]], wait: bool = True) -> list[TxResult]:
        """Sign and send many extrinsics in one HTTP request (nonces assigned in list order per signer).

        No resend on connection errors: a failed batch comes back as Unreachable results.
        """
        if self.genesis_hash is None:
            self.connect()
        exts = [sign_extrinsic(kp, call, args, self._next_nonce(kp.ss58_address), self.genesis_hash,
                               birth=self._head) for kp, call, args in calls]
        try:
            assert self._http is not None
            resp = self._http.post("/extrinsics", json={"extrinsics": exts, "wait": wait})
        except httpx.TransportError as e:
            for kp in {kp.ss58_address for kp, _, _ in calls}:
                self._nonces.pop(kp, None)  # unknown what landed: resync on next use
            return [TxResult(ok=False, error=f"Unreachable: {e}")] * len(calls)
        if resp.status_code >= 400:
            for kp in {kp.ss58_address for kp, _, _ in calls}:
                self._nonces.pop(kp, None)
            return [TxResult(ok=False, error=_detail(resp, "/extrinsics"))] * len(calls)
        out = resp.json()
        for r in out:
            self._saw_head(int(r.get("head") or 0))
        return [TxResult(ok=bool(r["ok"]), error=r.get("error"), block=r.get("block")) for r in out]

    def _post_extrinsic(self, ext: dict[str, Any], wait: bool) -> TxResult:
        resent = False
        deadline = time.time() + self.retry_s
        while True:
            try:
                assert self._http is not None
                resp = self._http.post("/extrinsic", json={"extrinsic": ext, "wait": wait})
                if resp.status_code >= 400:
                    return TxResult(ok=False, error=_detail(resp, "/extrinsic"))
                out = resp.json()
                self._saw_head(int(out.get("head") or 0))
                break
            except httpx.TransportError as e:
                if time.time() > deadline:
                    return TxResult(ok=False, error=f"Unreachable: {e}")
                resent = True
                time.sleep(0.2)
        if resent and not out["ok"] and str(out.get("error", "")).startswith(("Stale", "AlreadyImported")):
            landed = self._request("GET", f"/extrinsic/{extrinsic_hash(ext)}")
            if landed.get("block") is not None:  # the first copy did land before the connection broke
                return TxResult(ok=bool(landed["ok"]), error=landed["error"], block=landed["block"])
        return TxResult(ok=bool(out["ok"]), error=out.get("error"), block=out.get("block"))

    # ---- Chain protocol ----------------------------------------------------------------------------------------
    def block(self) -> int:
        number = int(self._request("GET", "/block")["number"])
        self._saw_head(number)
        return number

    def block_timestamp(self, block: int) -> float:
        if block not in self._timestamps:
            info = self._request("GET", f"/block/{int(block)}", params={"extrinsics": False})
            self._timestamps[block] = float(info["timestamp"])
        return self._timestamps[block]

    def block_hash(self, block: int) -> str:
        info = self._request("GET", f"/block/{int(block)}", params={"extrinsics": False})
        digest = info.get("hash")
        if not isinstance(digest, str) or not digest:
            raise ChainError(f"block {block} has no hash")
        return digest.removeprefix("0x")

    def metagraph(self, netuid: int) -> Metagraph:
        d = self._request("GET", f"/metagraph/{int(netuid)}")
        n = d["n"]
        return Metagraph(
            netuid=netuid, block=d["block"], n=n, uids=list(range(n)), hotkeys=d["hotkeys"], coldkeys=d["coldkeys"],
            stake=[s / RAO_PER_TAO for s in d["stake_rao"]], validator_permit=d["validator_permit"],
            incentive=[v / U16_MAX for v in d["incentive_u16"]], dividends=[v / U16_MAX for v in d["dividends_u16"]],
            consensus=[v / U16_MAX for v in d["consensus_u16"]], emission=[e / RAO_PER_TAO for e in d["emission_rao"]],
            last_update=d["last_update"], active=d["active"], owner_hotkey=d["owner_hotkey"],
            owner_coldkey=d["owner_coldkey"],
            weights={int(uid): [(int(u), v / U16_MAX) for u, v in row] for uid, row in d["weights"].items()})

    def commitments(self, netuid: int) -> dict[str, str]:
        return {hk: e["data"] for hk, e in self._request("GET", f"/commitments/{int(netuid)}").items()}

    def set_commitment(self, hotkey: Keypair, netuid: int, data: str) -> TxResult:
        try:
            fields = commitment_fields(data)
        except ValueError as e:
            return TxResult(ok=False, error=f"CommitmentTooLarge: {e}")
        return self.submit(hotkey, "set_commitment", {"netuid": int(netuid), "fields": fields})

    def set_weights(self, hotkey: Keypair, netuid: int, uids: list[int], weights: list[float],
                    version_key: int = 0) -> TxResult:
        """Set weights; when the subnet has commit-reveal on, commit them instead (the chain reveals them after
        commit_reveal_period tempos). Bad input (non-finite or negative weights) comes back as BadArgs."""
        try:
            dests, values = weights_to_u16(list(uids), [float(w) for w in weights])
        except (TypeError, ValueError, OverflowError) as e:
            return TxResult(ok=False, error=f"BadArgs: {e}")
        try:
            cr = bool(self.hyperparameters(int(netuid))["commit_reveal_weights_enabled"])
        except ChainError as e:
            return TxResult(ok=False, error=str(e))
        return self.submit(hotkey, "commit_weights" if cr else "set_weights",
                           {"netuid": int(netuid), "uids": dests, "weights": values, "version_key": int(version_key)})

    def hyperparameters(self, netuid: int) -> dict[str, int | float | bool]:
        return self._request("GET", f"/hyperparameters/{int(netuid)}")

    def is_registered(self, hotkey_ss58: str, netuid: int) -> bool:
        return hotkey_ss58 in self._request("GET", f"/metagraph/{int(netuid)}")["hotkeys"]

    # ---- admin helpers (scripts/localnet.py, the CLI) -----------------------------------------------------------
    def transfer(self, keypair: Keypair, dest_ss58: str, amount_tao: float) -> TxResult:
        return self.submit(keypair, "transfer", {"dest": dest_ss58, "amount": tao_to_rao(amount_tao)})

    def register_network(self, coldkey: Keypair, hotkey_ss58: str) -> int:
        """Create a subnet owned by `coldkey` with `hotkey_ss58` as uid 0; returns its netuid. Raises ChainError."""
        res = self.submit(coldkey, "register_network", {"hotkey": hotkey_ss58}).raise_for_error()
        for netuid, sub in self._request("GET", "/subnets").items():
            if sub["owner_hotkey"] == hotkey_ss58 and sub["registered_at"] == res.block:
                return int(netuid)
        raise ChainError(f"subnet registered in block {res.block} but not found")

    def start_call(self, coldkey: Keypair, netuid: int) -> TxResult:
        return self.submit(coldkey, "start_call", {"netuid": int(netuid)})

    def burned_register(self, coldkey: Keypair, hotkey_ss58: str, netuid: int) -> TxResult:
        return self.submit(coldkey, "burned_register", {"netuid": int(netuid), "hotkey": hotkey_ss58})

    def add_stake(self, coldkey: Keypair, hotkey_ss58: str, netuid: int, amount_tao: float) -> TxResult:
        return self.submit(coldkey, "add_stake", {"netuid": int(netuid), "hotkey": hotkey_ss58,
                                                  "amount": tao_to_rao(amount_tao)})

    def remove_stake(self, coldkey: Keypair, hotkey_ss58: str, netuid: int, amount_alpha: float) -> TxResult:
        return self.submit(coldkey, "remove_stake", {"netuid": int(netuid), "hotkey": hotkey_ss58,
                                                     "amount": tao_to_rao(amount_alpha)})

    def set_hyperparameter(self, coldkey: Keypair, netuid: int, name: str, value: int | bool) -> TxResult:
        return self.submit(coldkey, "set_hyperparameter", {"netuid": int(netuid), "name": name, "value": value})

    def balance(self, ss58: str) -> float:
        """Free TAO of an account."""
        return self._request("GET", f"/account/{ss58}")["balance_rao"] / RAO_PER_TAO

    def account(self, ss58: str) -> dict[str, Any]:
        """Balance, nonce and stakes (rao) of an account."""
        return self._request("GET", f"/account/{ss58}")

    def subnets(self) -> dict[str, Any]:
        return self._request("GET", "/subnets")

    def read(self, path: str) -> Any:
        """GET any node route as JSON (e.g. "/metagraph/1", "/network"). Raises ChainError (404: the chain's error)."""
        return self._request("GET", path)

    def wait_for_block(self, number: int, timeout_s: float = 60.0) -> int:
        """Poll until the head is at least `number`; returns the head. Raises ChainError on timeout."""
        deadline = time.time() + timeout_s
        while True:
            head = self.block()
            if head >= number:
                return head
            if time.time() > deadline:
                raise ChainError(f"block {number} not reached within {timeout_s} s (head {head})")
            time.sleep(0.1)


def _detail(resp: httpx.Response, path: str) -> str:
    """The node's error text of a 4xx/5xx answer (its JSON "detail", else the body)."""
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = None
    return str(detail) if detail else f"{path} -> HTTP {resp.status_code}: {resp.text[:300]}"
