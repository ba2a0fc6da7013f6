"""`Chain` over the real subtensor through the bittensor v11 SDK ("lean SDK": intents and typed reads).

Mapping (SUBTENSOR.md section 8):
* block: `client.block`; block time: `client.timestamp(block)` (the `Timestamp.Now` storage item).
* metagraph: `client.subnets.metagraph(netuid, commitments=False)` -> our `Metagraph` (alpha units);
  weights from `client.read("weights", netuid=..., mechid=0)` when the read answers.
* commitments: `client.subnets.commitments(netuid)` (hotkey -> `NeuronCommitment.data`); writes go through the
  raw call `bt.calls.Commitments.set_commitment(netuid, info)` because v11 has no commitment intent.
* set_weights: the `SetWeights` intent (it max-upscales, drops zeros, clips to max_weight_limit and switches
  to a timelocked commit when commit-reveal is on).
* hyperparameters: `client.read("subnet_hyperparameters", netuid=...)`, plus our canonical names.

Nothing here is exercised against a live chain in this repository (no chain is reachable from the test
machines); the offline tests cover construction, the conversions and the metagraph mapping from a fake SDK object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bittensor_wallet import Keypair

from template.chain.base import RAO_PER_TAO, U16_MAX, ChainError, Metagraph, TxResult, weights_to_u16

COMMIT_RAW_MAX = 128
COMMIT_BIGRAW_MAX = 512

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
    """The `CommitmentInfo` argument for `Commitments.set_commitment`: one `Raw<len>` field (<= 128 B) or
    `BigRaw` chunks (<= 512 B each, at most 3). Raises ValueError when the string does not fit."""
    raw = data.encode()
    if len(raw) <= COMMIT_RAW_MAX:
        return {"fields": [{f"Raw{len(raw)}": "0x" + raw.hex()}]}
    chunks = [raw[i:i + COMMIT_BIGRAW_MAX] for i in range(0, len(raw), COMMIT_BIGRAW_MAX)]
    if len(chunks) > 3:
        raise ValueError(f"commitment is {len(raw)} bytes; at most {3 * COMMIT_BIGRAW_MAX} fit")
    return {"fields": [{"BigRaw": "0x" + c.hex()} for c in chunks]}


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
    """The `weights` read ([(uid, [(dest, u16), ...]), ...] or {uid: [...]}) -> {uid: [(dest, w in [0,1])]}."""
    items = rows.items() if isinstance(rows, dict) else (rows or [])
    return {int(uid): [(int(d), int(v) / U16_MAX) for d, v in row] for uid, row in items}


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


def tx_result(res: Any) -> TxResult:
    """SDK ExtrinsicResult -> TxResult (error = the chain's error name when known)."""
    if res.success:
        ext_id = getattr(res, "extrinsic_id", None)
        block = int(str(ext_id).split("-")[0]) if ext_id else None
        return TxResult(ok=True, block=block)
    err = getattr(res, "error", None)
    return TxResult(ok=False, error=(getattr(err, "name", None) or getattr(res, "message", "") or "failed"))


class SubtensorChain:
    """`Chain` on finney/test/archive or any ws(s):// endpoint. The constructor does no network I/O."""

    def __init__(self, network: str = "finney", endpoint: str | None = None,
                 client_factory: Callable[[str], Any] | None = None) -> None:
        """Args: network name; endpoint overrides it with a ws(s):// URL; client_factory(target) builds the SDK
        client (default `bittensor.SyncClient`), a seam for tests."""
        self.network = network
        self.target = endpoint or network
        self._client_factory = client_factory
        self._client: Any = None

    def connect(self) -> None:
        if self._client is not None:
            return
        try:
            if self._client_factory is None:
                import bittensor as bt

                self._client = bt.SyncClient(self.target)
            else:
                self._client = self._client_factory(self.target)
            self._client.connect()
        except Exception as e:  # the SDK raises several transport types; report one
            self._client = None
            raise ChainError(f"cannot connect to subtensor {self.target!r}: {e}") from e

    @property
    def client(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    def block(self) -> int:
        return int(self.client.block)

    def block_timestamp(self, block: int) -> float:
        return float(self.client.timestamp(block=block).timestamp())

    def metagraph(self, netuid: int) -> Metagraph:
        mg = self.client.subnets.metagraph(netuid, commitments=False)
        if mg is None:
            raise ChainError("SubnetNotExists")
        try:
            weights = weights_from_read(self.client.read("weights", netuid=netuid, mechid=0))
        except Exception:  # weights are optional for neurons; a read failure must not hide the metagraph
            weights = {}
        return metagraph_from_sdk(mg, weights)

    def commitments(self, netuid: int) -> dict[str, str]:
        return {hk: c.data for hk, c in self.client.subnets.commitments(netuid).items() if c.data}

    def set_commitment(self, hotkey: Keypair, netuid: int, data: str) -> TxResult:
        import bittensor as bt

        try:
            info = commitment_info(data)
        except ValueError as e:
            return TxResult(ok=False, error=f"CommitmentTooLarge: {e}")
        return tx_result(self.client.submit_call(bt.calls.Commitments.set_commitment(netuid, info), hotkey))

    def set_weights(self, hotkey: Keypair, netuid: int, uids: list[int], weights: list[float],
                    version_key: int = 0) -> TxResult:
        from bittensor.intents import SetWeights

        dests, values = weights_to_u16(list(uids), [float(w) for w in weights])
        if not dests:
            return TxResult(ok=False, error="WeightVecLengthIsLow: all weights are zero")
        intent = SetWeights(netuid=netuid, uids=dests, weights=[v / U16_MAX for v in values],
                            version_key=int(version_key))
        return tx_result(self.client.execute(intent, hotkey))

    def hyperparameters(self, netuid: int) -> dict[str, int | float | bool]:
        raw = self.client.read("subnet_hyperparameters", netuid=netuid)
        if raw is None:
            raise ChainError("SubnetNotExists")
        return hyperparameters_from_sdk(dict(raw))

    def is_registered(self, hotkey_ss58: str, netuid: int) -> bool:
        return self.client.read("uid", netuid=netuid, hotkey_ss58=hotkey_ss58) is not None
