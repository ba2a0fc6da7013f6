"""`Chain` over the real subtensor through the bittensor v11 SDK ("lean SDK": intents and typed reads).

Mapping (SUBTENSOR.md section 8):
* block: `client.block`; block time: `client.timestamp(block)` (the `Timestamp.Now` storage item); block hash:
  `client.block_info(block).hash`.
* metagraph: `client.subnets.metagraph(netuid, commitments=False)` -> our `Metagraph` (alpha units);
  weights from `client.read("weights", netuid=..., mechid=0)` when the read answers.
* commitments: `client.subnets.commitments(netuid)` (hotkey -> `NeuronCommitment.data`); writes go through the
  raw call `bt.calls.Commitments.set_commitment(netuid, info)` because v11 has no commitment intent. The data
  goes as up to three `Raw<len>` fields of <= 128 bytes: the SDK decodes only `Raw*` variants as text (a
  `BigRaw` field reads back as an opaque "bigraw:0x..." string), so longer strings cannot be published.
* set_weights: the `SetWeights` intent (it max-upscales, drops zeros, clips to max_weight_limit and switches
  to a timelocked commit when commit-reveal is on).
* hyperparameters: `client.read("subnet_hyperparameters", netuid=...)`, plus our canonical names.

Errors: every SDK call goes through `_call`, which retries transport failures (a dropped websocket, a timeout)
for `retry_s` seconds with a fresh connection, as the localnet client does, and turns everything else into
`ChainError` (reads) or a failed `TxResult` carrying the chain's error name (writes): no SDK exception reaches
a neuron. A too-soon weight set, which the SDK refuses before signing, is `SettingWeightsTooFast`.

Nothing here is exercised against a live chain in this repository (no chain is reachable from the test
machines); the offline tests cover construction, the conversions and the metagraph mapping from a fake SDK object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bittensor_wallet import Keypair

from template.chain.base import RAO_PER_TAO, U16_MAX, ChainError, Metagraph, TxResult, weights_to_u16

COMMIT_RAW_MAX = 128
COMMIT_MAX_FIELDS = 3
# SDK ErrorCode values -> the chain error name a preflight failure stands for
_CODE_NAMES = {"rate_limited": "SettingWeightsTooFast", "not_registered": "HotKeyNotRegisteredInSubNet",
               "subnet_not_exists": "SubnetNotExists"}

# SDK / chain hyperparameter names -> the names neurons read (first present wins)
HPARAM_ALIASES: dict[str, tuple[str, ...]] = {
    "tempo": ("tempo",),
    "weights_version": ("weights_version", "weights_version_key"),
    "weights_rate_limit": ("weights_rate_limit", "weights_set_rate_limit"),
    "activity_cutoff": ("activity_cutoff",),
    "immunity_period": ("immunity_period",),
    "min_allowed_weights": ("min_allowed_weights",),
    "max_weight_limit": ("max_weight_limit", "max_weights_limit"),
    "max_allowed_uids": ("max_allowed_uids", "max_uids"),
    "max_allowed_validators": ("max_allowed_validators", "max_validators"),
    "kappa": ("kappa",),
    "bonds_moving_average": ("bonds_moving_avg", "bonds_moving_average"),
    "commit_reveal_weights_enabled": ("commit_reveal_weights_enabled", "commit_reveal_enabled"),
    "yuma3_enabled": ("yuma3_enabled", "yuma_version"),
    "liquid_alpha_enabled": ("liquid_alpha_enabled",),
}


def commitment_info(data: str) -> dict[str, Any]:
    """The `CommitmentInfo` argument for `Commitments.set_commitment`: up to three `Raw<len>` fields of <= 128
    bytes each, which the chain stores and the SDK reads back concatenated as UTF-8. Raises ValueError when the
    string is longer than 384 bytes."""
    raw = data.encode()
    if len(raw) > COMMIT_RAW_MAX * COMMIT_MAX_FIELDS:
        raise ValueError(f"commitment is {len(raw)} bytes; at most {COMMIT_RAW_MAX * COMMIT_MAX_FIELDS} fit in "
                         f"{COMMIT_MAX_FIELDS} Raw fields")
    chunks = [raw[i:i + COMMIT_RAW_MAX] for i in range(0, max(len(raw), 1), COMMIT_RAW_MAX)]
    return {"fields": [{f"Raw{len(c)}": "0x" + c.hex()} for c in chunks]}


def _rao(balance: Any) -> int:
    """An SDK Balance (or a plain number of rao) -> int rao."""
    return int(getattr(balance, "rao", balance) or 0)


def metagraph_from_sdk(mg: Any, weights: dict[int, list[tuple[int, float]]] | None = None) -> Metagraph:
    """Map a `bittensor.Metagraph` (v11) onto our `Metagraph`; stake is alpha stake in alpha units."""
    neurons = sorted(mg.neurons, key=lambda n: n.uid)
    return Metagraph(
        netuid=int(mg.netuid), block=int(mg.block), n=len(neurons), uids=[int(n.uid) for n in neurons],
        hotkeys=[n.hotkey for n in neurons], coldkeys=[n.coldkey for n in neurons],
        stake=[_rao(n.alpha_stake) / RAO_PER_TAO for n in neurons],
        validator_permit=[bool(n.validator_permit) for n in neurons],
        incentive=[float(n.incentive) for n in neurons], dividends=[float(n.dividends) for n in neurons],
        consensus=[float(n.consensus) for n in neurons], emission=[_rao(n.emission) / RAO_PER_TAO for n in neurons],
        last_update=[int(n.last_update) for n in neurons], active=[bool(n.active) for n in neurons],
        owner_hotkey=mg.owner_hotkey, owner_coldkey=mg.owner_coldkey, weights=dict(weights or {}))


def weights_from_read(rows: Any) -> dict[int, list[tuple[int, float]]]:
    """The `weights` read -> {uid: [(dest, w in [0, 1])]}, each row scaled so its largest weight is 1 (as the
    chain stores it and the localnet reports it).

    Accepts the v11 SDK's shape {uid: {dest: fraction}} (rows summing to 1) and the raw storage shape
    [(uid, [(dest, u16), ...])] or {uid: [(dest, u16), ...]}.
    """
    items = rows.items() if isinstance(rows, dict) else (rows or [])
    out: dict[int, list[tuple[int, float]]] = {}
    for uid, row in items:
        pairs = [(int(d), float(v)) for d, v in (row.items() if isinstance(row, dict) else row)]
        top = max((v for _, v in pairs), default=0.0)
        out[int(uid)] = [(d, v / top if top > 0 else 0.0) for d, v in pairs]
    return out


def hyperparameters_from_sdk(raw: dict[str, Any]) -> dict[str, int | float | bool]:
    """Flat SDK hyperparameters -> the same dict plus our canonical names (weights_version, ...)."""
    out: dict[str, int | float | bool] = {}
    for k, v in raw.items():
        if isinstance(v, bool | int | float):
            out[k] = v
        elif hasattr(v, "rao"):
            out[k] = int(v.rao)
    for name, candidates in HPARAM_ALIASES.items():
        for c in candidates:
            if c in out:
                out[name] = out[c]
                break
    return out


def error_name(err: BaseException | Any) -> str:
    """The chain's error name for an SDK error: its `.name`, else the name its ErrorCode stands for, else the
    message."""
    name = getattr(err, "name", None)
    if name:
        return str(name)
    code = getattr(getattr(err, "code", None), "value", None)
    if code in _CODE_NAMES:
        return f"{_CODE_NAMES[code]}: {err}"
    return f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err or "failed")


def tx_result(res: Any) -> TxResult:
    """SDK ExtrinsicResult -> TxResult (error = the chain's error name when known)."""
    if res.success:
        ext_id = getattr(res, "extrinsic_id", None)
        block = int(str(ext_id).split("-")[0]) if ext_id else None
        return TxResult(ok=True, block=block)
    err = getattr(res, "error", None)
    return TxResult(ok=False, error=(getattr(err, "name", None) or getattr(res, "message", "") or "failed"))


def is_transient(err: BaseException) -> bool:
    """Transport trouble worth a retry on a fresh connection (dropped websocket, timeout, RPC unreachable);
    not a refusal by the chain."""
    from bittensor.result import ConnectionNotReady, RpcConnectionError

    substrate_errors: tuple[type[BaseException], ...] = ()
    try:
        from bittensor._transport.errors import SubstrateRequestException

        substrate_errors = (SubstrateRequestException,)
    except ImportError:  # pragma: no cover - private module of the SDK
        pass
    if isinstance(err, ConnectionNotReady | RpcConnectionError | OSError | TimeoutError | EOFError):
        return True
    if substrate_errors and isinstance(err, substrate_errors):
        return True
    return type(err).__module__.startswith("websockets")  # ConnectionClosed and friends


class SubtensorChain:
    """`Chain` on finney/test/archive or any ws(s):// endpoint. The constructor does no network I/O."""

    def __init__(self, network: str = "finney", endpoint: str | None = None,
                 client_factory: Callable[[str], Any] | None = None, retry_s: float = 30.0,
                 retry_sleep_s: float = 1.0) -> None:
        """Args: network name; endpoint overrides it with a ws(s):// URL; client_factory(target) builds the SDK
        client (default `bittensor.SyncClient`), a seam for tests; retry_s: how long transport failures are
        retried (the localnet client's policy), retry_sleep_s between attempts."""
        self.network = network
        self.target = endpoint or network
        self.retry_s = retry_s
        self.retry_sleep_s = retry_sleep_s
        self._client_factory = client_factory
        self._client: Any = None

    def connect(self) -> None:
        """Open the SDK client. Raises ChainError when it cannot connect."""
        try:
            self._open()
        except Exception as e:  # the SDK raises several transport types; report one
            raise ChainError(f"cannot connect to subtensor {self.target!r}: {e}") from e

    def _open(self) -> Any:
        if self._client is None:
            if self._client_factory is None:
                import bittensor as bt

                client = bt.SyncClient(self.target)
            else:
                client = self._client_factory(self.target)
            client.connect()
            self._client = client
        return self._client

    @property
    def client(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        close = getattr(client, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                pass

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(client)`; retry transport failures on a fresh connection until `retry_s` has passed.

        Raises ChainError: the chain's error name for a refusal, "Unreachable: ..." when the retries ran out.
        """
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                return fn(self._open())
            except Exception as e:  # noqa: BLE001 - every SDK failure becomes a ChainError here
                if not is_transient(e):
                    raise ChainError(f"{what}: {error_name(e)}") from e
                self._drop_client()
                if time.monotonic() + self.retry_sleep_s > deadline:
                    raise ChainError(f"Unreachable: {what} on {self.target}: {e}") from e
                time.sleep(self.retry_sleep_s)

    def _write(self, what: str, fn: Callable[[Any], Any]) -> TxResult:
        try:
            return tx_result(self._call(what, fn))
        except ChainError as e:
            msg = str(e)
            return TxResult(ok=False, error=msg.split(": ", 1)[1] if msg.startswith(what + ": ") else msg)

    def block(self) -> int:
        return int(self._call("block", lambda c: c.block))

    def block_timestamp(self, block: int) -> float:
        return float(self._call("timestamp", lambda c: c.timestamp(block=block)).timestamp())

    def block_hash(self, block: int) -> str:
        info = self._call("block_info", lambda c: c.block_info(block))
        digest = getattr(info, "hash", None)
        if not isinstance(digest, str) or not digest:
            raise ChainError(f"block {block} has no hash (not produced yet?)")
        return digest.removeprefix("0x")

    def metagraph(self, netuid: int) -> Metagraph:
        mg = self._call("metagraph", lambda c: c.subnets.metagraph(netuid, commitments=False))
        if mg is None:
            raise ChainError("SubnetNotExists")
        try:
            weights = weights_from_read(self._call("weights", lambda c: c.read("weights", netuid=netuid, mechid=0)))
        except (ChainError, TypeError, ValueError):  # weights are optional for neurons: keep the metagraph
            weights = {}
        return metagraph_from_sdk(mg, weights)

    def commitments(self, netuid: int) -> dict[str, str]:
        entries = self._call("commitments", lambda c: c.subnets.commitments(netuid))
        return {hk: c.data for hk, c in entries.items() if c.data}

    def set_commitment(self, hotkey: Keypair, netuid: int, data: str) -> TxResult:
        import bittensor as bt

        try:
            info = commitment_info(data)
        except ValueError as e:
            return TxResult(ok=False, error=f"CommitmentTooLarge: {e}")
        call = bt.calls.Commitments.set_commitment(netuid, info)
        return self._write("set_commitment", lambda c: c.submit_call(call, hotkey))

    def set_weights(self, hotkey: Keypair, netuid: int, uids: list[int], weights: list[float],
                    version_key: int = 0) -> TxResult:
        """The SDK's `SetWeights` intent: a plain set, or a drand-timelocked commit when the subnet has
        commit-reveal on (the chain reveals it after commit_reveal_period tempos)."""
        from bittensor.intents import SetWeights

        try:
            dests, values = weights_to_u16(list(uids), [float(w) for w in weights])
        except (TypeError, ValueError, OverflowError) as e:
            return TxResult(ok=False, error=f"BadArgs: {e}")
        if not dests:
            return TxResult(ok=False, error="WeightVecLengthIsLow: all weights are zero")
        intent = SetWeights(netuid=netuid, uids=dests, weights=[v / U16_MAX for v in values],
                            version_key=int(version_key))
        return self._write("set_weights", lambda c: c.execute(intent, hotkey))

    def hyperparameters(self, netuid: int) -> dict[str, int | float | bool]:
        raw = self._call("hyperparameters", lambda c: c.read("subnet_hyperparameters", netuid=netuid))
        if raw is None:
            raise ChainError("SubnetNotExists")
        return hyperparameters_from_sdk(dict(raw))

    def is_registered(self, hotkey_ss58: str, netuid: int) -> bool:
        uid = self._call("is_registered", lambda c: c.read("uid", netuid=netuid, hotkey_ss58=hotkey_ss58))
        return uid is not None
