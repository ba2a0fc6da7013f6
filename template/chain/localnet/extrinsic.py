"""Signed extrinsics for the localnet: canonical JSON payload, sr25519 signature, mortality, verification.

Wire format: {"payload": {"call", "args", "signer", "nonce", "genesis", "era"}, "signature": hex}. The signed
bytes are the canonical JSON of the payload (sorted keys, no spaces, no NaN/Infinity), so any client can
reproduce them exactly. `era` is [birth, period]: the extrinsic is valid in blocks birth .. birth+period
(subtensor's mortal era), so a signed extrinsic cannot be replayed or parked forever.

Addresses are SS58 with subtensor's prefix 42; the same public key under another prefix is refused
(`BadAddress`), so one key is one account.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from bittensor_wallet import Keypair
from bittensor_wallet.utils import get_ss58_format, is_valid_ss58_address

# call name -> who must sign it; the signer is the call's origin
COLDKEY_CALLS = ("transfer", "register_network", "start_call", "burned_register", "add_stake", "remove_stake",
                 "set_hyperparameter")
HOTKEY_CALLS = ("set_weights", "commit_weights", "set_commitment")
ALL_CALLS = COLDKEY_CALLS + HOTKEY_CALLS
SS58_PREFIX = 42
MAX_ADDRESS_CHARS = 64
MAX_EXTRINSIC_BYTES = 64 * 1024  # canonical JSON of {payload, signature}
MIN_ERA_PERIOD = 4
MAX_ERA_PERIOD = 1024
DEFAULT_ERA_PERIOD = 128
MAX_JSON_DEPTH = 32


class InvalidTransaction(ValueError):
    """The extrinsic is malformed, badly signed, replayed or expired; it never reaches the state machine."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range (not a finite float)")
    return value


def parse_json(data: bytes | str) -> Any:
    """Strict JSON: NaN/Infinity and numbers that overflow a float (1e999) refused, nesting bounded. Raises
    ValueError with the reason."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_depth(text)
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as e:  # pragma: no cover - _check_depth stops this first
        raise ValueError("JSON nested too deeply") from e


def _check_depth(text: str) -> None:
    """Raise ValueError when brackets outside strings nest deeper than MAX_JSON_DEPTH."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH}")
        elif ch in "]}":
            depth -= 1


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, ASCII. Raises ValueError on NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def check_address(value: Any, what: str = "address") -> str:
    """`value` as a canonical SS58 (prefix 42) address. Raises ValueError("BadAddress: ...") otherwise."""
    if not isinstance(value, str) or not value or len(value) > MAX_ADDRESS_CHARS or not value.isascii() \
            or not is_valid_ss58_address(value):
        raise ValueError(f"BadAddress: {what} is not an SS58 address: {str(value)[:80]!r}")
    prefix = get_ss58_format(value)
    if prefix != SS58_PREFIX:
        raise ValueError(f"BadAddress: {what} uses SS58 prefix {prefix}; this chain uses {SS58_PREFIX}")
    return value


def sign_extrinsic(keypair: Keypair, call: str, args: dict[str, Any], nonce: int, genesis: str,
                   birth: int = 0, period: int = DEFAULT_ERA_PERIOD) -> dict[str, Any]:
    """Build and sign an extrinsic with `keypair` as its origin, valid in blocks birth .. birth+period.

    Raises ValueError when args hold NaN/Infinity (they cannot be signed).
    """
    payload = {"call": call, "args": args, "signer": keypair.ss58_address, "nonce": int(nonce),
               "genesis": genesis, "era": [int(birth), int(period)]}
    return {"payload": payload, "signature": keypair.sign(canonical_json(payload)).hex()}


def extrinsic_hash(ext: dict[str, Any]) -> str:
    """sha256 hex of the canonical extrinsic (payload and signature)."""
    return hashlib.sha256(canonical_json(ext)).hexdigest()


def extrinsic_size(ext: dict[str, Any]) -> int:
    """Length in bytes of the canonical extrinsic (what fees and the size limit count)."""
    return len(canonical_json(ext))


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64


def verify_extrinsic(ext: Any, genesis: str) -> dict[str, Any]:
    """Check shape, size, genesis, era shape and signature; return the payload. Raises InvalidTransaction."""
    return verify_encoded(ext, genesis)[0]


def verify_encoded(ext: Any, genesis: str) -> tuple[dict[str, Any], bytes]:
    """`verify_extrinsic`, also returning the canonical bytes of the whole extrinsic (for its hash and size)."""
    if not isinstance(ext, dict) or not isinstance(ext.get("payload"), dict) or set(ext) != {"payload",
                                                                                             "signature"}:
        raise InvalidTransaction("BadFormat: expected {payload, signature}")
    payload = ext["payload"]
    if set(payload) != {"call", "args", "signer", "nonce", "genesis", "era"}:
        raise InvalidTransaction("BadFormat: payload needs exactly call, args, signer, nonce, genesis, era")
    call, args, signer, nonce, era = (payload[k] for k in ("call", "args", "signer", "nonce", "era"))
    if not isinstance(call, str) or call not in ALL_CALLS:
        raise InvalidTransaction(f"UnknownCall: {str(call)[:40]!r}")
    if not isinstance(args, dict) or not _is_uint(nonce):
        raise InvalidTransaction("BadFormat: args must be an object, nonce an integer in [0, 2**64)")
    if not isinstance(era, list) or len(era) != 2 or not all(_is_uint(x) for x in era) or \
            not MIN_ERA_PERIOD <= era[1] <= MAX_ERA_PERIOD:
        raise InvalidTransaction(f"BadEra: era must be [birth, period] with period in [{MIN_ERA_PERIOD}, "
                                 f"{MAX_ERA_PERIOD}]")
    if payload["genesis"] != genesis:
        raise InvalidTransaction("BadGenesis: signed for another chain")
    try:
        encoded = canonical_json(ext)
    except ValueError as e:  # e.g. 1e999 in the args: a float JSON cannot carry (NaN or infinite)
        raise InvalidTransaction("BadFormat: the extrinsic holds a number that is not finite (NaN or out of "
                                 "range, e.g. 1e999)") from e
    size = len(encoded)
    try:
        check_address(signer, "signer")
        public = Keypair(ss58_address=signer)
    except ValueError as e:
        raise InvalidTransaction(f"BadSigner: {e}" if "BadAddress" not in str(e) else str(e)) from e
    try:
        signature = bytes.fromhex(ext["signature"]) if isinstance(ext["signature"], str) else b""
    except ValueError:
        signature = b""  # not hex: cannot match, refused below as BadProof
    if size > MAX_EXTRINSIC_BYTES:
        raise InvalidTransaction(f"ExhaustsResources: extrinsic is {size} bytes, limit {MAX_EXTRINSIC_BYTES}")
    if len(signature) != 64 or not public.verify(canonical_json(payload), signature):
        raise InvalidTransaction("BadProof: signature does not match the signer")
    return payload, encoded


def check_era(payload: dict[str, Any], block: int) -> None:
    """Raise InvalidTransaction unless `payload` may be included in block `block` (birth <= block <= birth+period)."""
    birth, period = payload["era"]
    if birth > block:
        raise InvalidTransaction(f"BadEra: birth block {birth} is after block {block}")
    if block > birth + period:
        raise InvalidTransaction(f"Outdated: valid until block {birth + period}, now {block}")
