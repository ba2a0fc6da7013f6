"""Signed extrinsics for the localnet: canonical JSON payload, sr25519 signature, verification.

Wire format: {"payload": {"call", "args", "signer", "nonce", "genesis"}, "signature": hex}. The signed bytes are
the canonical JSON of the payload (sorted keys, no spaces), so any client can reproduce them exactly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bittensor_wallet import Keypair

# call name -> who must sign it; the signer is the call's origin
COLDKEY_CALLS = ("transfer", "register_network", "start_call", "burned_register", "add_stake", "remove_stake",
                 "set_hyperparameter")
HOTKEY_CALLS = ("set_weights", "set_commitment")
ALL_CALLS = COLDKEY_CALLS + HOTKEY_CALLS


class InvalidTransaction(ValueError):
    """The extrinsic is malformed, badly signed or replayed; it never reaches the state machine."""


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_extrinsic(keypair: Keypair, call: str, args: dict[str, Any], nonce: int, genesis: str) -> dict[str, Any]:
    """Build and sign an extrinsic with `keypair` as its origin."""
    payload = {"call": call, "args": args, "signer": keypair.ss58_address, "nonce": int(nonce), "genesis": genesis}
    return {"payload": payload, "signature": keypair.sign(canonical_json(payload)).hex()}


def extrinsic_hash(ext: dict[str, Any]) -> str:
    """sha256 hex of the canonical extrinsic (payload and signature)."""
    return hashlib.sha256(canonical_json(ext)).hexdigest()


def verify_extrinsic(ext: dict[str, Any], genesis: str) -> dict[str, Any]:
    """Check shape, genesis and signature; return the payload. Raises InvalidTransaction with the reason."""
    if not isinstance(ext, dict) or not isinstance(ext.get("payload"), dict):
        raise InvalidTransaction("BadFormat: expected {payload, signature}")
    payload = ext["payload"]
    call, args, signer, nonce = (payload.get(k) for k in ("call", "args", "signer", "nonce"))
    if call not in ALL_CALLS:
        raise InvalidTransaction(f"UnknownCall: {call!r}")
    if not isinstance(args, dict) or not isinstance(signer, str) or not isinstance(nonce, int) or nonce < 0:
        raise InvalidTransaction("BadFormat: args must be an object, signer a string, nonce an int >= 0")
    if payload.get("genesis") != genesis:
        raise InvalidTransaction("BadGenesis: signed for another chain")
    try:
        signature = bytes.fromhex(str(ext.get("signature", "")))
        public = Keypair(ss58_address=signer)
    except ValueError as e:
        raise InvalidTransaction(f"BadSigner: {e}") from e
    if len(signature) != 64 or not public.verify(canonical_json(payload), signature):
        raise InvalidTransaction("BadProof: signature does not match the signer")
    return payload
