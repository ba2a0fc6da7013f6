"""The chain interface neurons use: block clock, metagraph, commitments, weights, hyperparameters.

Two implementations: `template.chain.localnet.client.LocalnetClient` (our own local chain) and
`template.chain.subtensor.SubtensorChain` (the real network through the bittensor SDK). Neurons only see
`Chain`; constructors do no network I/O, `connect()` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bittensor_wallet import Keypair

from template.protocol.metagraph import Metagraph

__all__ = ["Chain", "ChainError", "Metagraph", "TxResult", "weights_to_u16"]  # Metagraph: re-exported

RAO_PER_TAO = 1_000_000_000
U16_MAX = 65535


class ChainError(RuntimeError):
    """A chain call failed; the message carries the chain's error name when there is one."""


@dataclass(frozen=True)
class TxResult:
    """Outcome of one extrinsic: `ok`, the chain's error name when not, and the block it landed in."""

    ok: bool
    error: str | None = None
    block: int | None = None

    def raise_for_error(self) -> TxResult:
        """Return self when ok, else raise ChainError(error)."""
        if not self.ok:
            raise ChainError(self.error or "extrinsic failed")
        return self


@runtime_checkable
class Chain(Protocol):
    """What a miner or validator needs from the chain, and nothing more."""

    def connect(self) -> None:
        """Open the connection (constructors do no I/O). Raises ChainError when the chain cannot be reached."""
        ...

    def block(self) -> int:
        """The current (best) block number."""
        ...

    def block_timestamp(self, block: int) -> float:
        """Unix time in seconds at which `block` was produced."""
        ...

    def block_hash(self, block: int) -> str:
        """The hash of `block` (hex, no 0x): randomness nobody controls before the block is produced.
        Raises ChainError when the block is not there yet."""
        ...

    def metagraph(self, netuid: int) -> Metagraph:
        """The subnet's metagraph at the current block."""
        ...

    def commitments(self, netuid: int) -> dict[str, str]:
        """hotkey ss58 -> committed string, for every hotkey with a commitment on `netuid`."""
        ...

    def set_commitment(self, hotkey: Keypair, netuid: int, data: str) -> TxResult:
        """Publish `data` (UTF-8) as this hotkey's commitment on `netuid`."""
        ...

    def set_weights(self, hotkey: Keypair, netuid: int, uids: list[int], weights: list[float],
                    version_key: int = 0) -> TxResult:
        """Set this validator's weights (any non-negative scale; normalized to u16 by max-upscaling)."""
        ...

    def hyperparameters(self, netuid: int) -> dict[str, int | float | bool]:
        """Subnet hyperparameters: tempo, weights_version, weights_rate_limit, activity_cutoff, ..."""
        ...

    def is_registered(self, hotkey_ss58: str, netuid: int) -> bool:
        """Whether `hotkey_ss58` holds a uid on `netuid`."""
        ...


def weights_to_u16(uids: list[int], weights: list[float]) -> tuple[list[int], list[int]]:
    """Float weights -> (uids, u16 values), max-upscaled so the largest is 65535, zeros dropped (as the SDK does).

    Raises ValueError on mismatched lengths, negative or non-finite weights.
    """
    if len(uids) != len(weights):
        raise ValueError(f"uids and weights must have the same length, got {len(uids)} and {len(weights)}")
    for w in weights:
        if not (w >= 0.0) or w == float("inf"):
            raise ValueError(f"weights must be finite and >= 0, got {w}")
    top = max(weights, default=0.0)
    if top <= 0.0:
        return [], []
    pairs = [(int(u), int(round(w / top * U16_MAX))) for u, w in zip(uids, weights, strict=True)]
    pairs = [(u, v) for u, v in pairs if v > 0]
    return [u for u, _ in pairs], [v for _, v in pairs]
