"""Sealed uploads: nobody can read a miner's update of window w before w's deadline.

The miner encrypts its signed gradient artifact (the plaintext, exactly what an unsealed upload would be)
with AES-256-GCM (the `cryptography` package) under a fresh random key for the window, and uploads a
*sealed* artifact in its place: a tensor artifact of kind "sealed", one uint8 tensor `sealed` holding
nonce (12 bytes) || ciphertext+tag, whose signed manifest carries `key_sha256` = sha256(key) (its
`payload_sha256` already signs the ciphertext). The associated data binds the ciphertext to the protocol,
the window and the miner's hotkey, so it cannot be re-filed under another window or hotkey. After the
deadline, within `reveal_grace_s`, the miner publishes the key (`layout.key_reveal_key`, JSON
`{"window": w, "key": hex}`); the key is accepted only if its sha256 is the one the manifest signed.

Pure: bytes in, bytes out; raises `SealError` with a stable reason code.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
from bittensor_wallet import Keypair
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from template.protocol.artifacts import (
    ArtifactError,
    parse_safetensors_header,
    read_tensor_artifact,
    write_tensor_artifact,
)
from template.protocol.config import PROTOCOL_VERSION

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce
REVEAL_MAX_BYTES = 4096

# reason codes (admission reasons, docs/validator.md)
KEY_MISSING = "key_missing"  # no key revealed (or not readable) for a sealed upload
LATE_KEY = "late_key"  # the key's storage LastModified is after deadline + reveal_grace_s
BAD_KEY = "bad_key"  # the revealed key is malformed, does not match key_sha256, or does not open the seal


class SealError(ValueError):
    """A sealed upload that cannot be opened; `code` is one of the reason codes above or an ArtifactError code."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def _aad(window: int, hotkey: str) -> bytes:
    return f"sparseloco-sealed:v{PROTOCOL_VERSION}:{window}:{hotkey}".encode()


def seal(plain: bytes, *, window: int, keypair: Keypair, key: bytes | None = None) -> tuple[bytes, bytes]:
    """(sealed artifact bytes, key): `plain` encrypted under a fresh 32-byte key (or `key`), signed by `keypair`."""
    key = os.urandom(KEY_BYTES) if key is None else key
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
    nonce = os.urandom(NONCE_BYTES)
    box = nonce + AESGCM(key).encrypt(nonce, plain, _aad(window, keypair.ss58_address))
    tensor = torch.frombuffer(bytearray(box), dtype=torch.uint8)
    sealed = write_tensor_artifact({"sealed": tensor}, kind="sealed", window=window, keypair=keypair,
                                   fields={"key_sha256": hashlib.sha256(key).hexdigest()})
    return sealed, key


def reveal_bytes(window: int, key: bytes) -> bytes:
    """The object a miner publishes after the deadline to open its sealed update of `window`."""
    return json.dumps({"window": window, "key": key.hex()}, sort_keys=True).encode()


def is_sealed(data: bytes, *, max_bytes: int) -> bool:
    """Whether `data` claims to be a sealed artifact (its manifest's kind); nothing is verified here."""
    try:
        meta = parse_safetensors_header(data, max_bytes=max_bytes).get("__metadata__") or {}
        manifest = json.loads(meta["manifest"]) if isinstance(meta, dict) and "manifest" in meta else None
    except (ArtifactError, TypeError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") == "sealed"


def parse_reveal(raw: bytes, *, window: int) -> bytes:
    """The key in a reveal object of `window`; SealError(BAD_KEY) when it is not one."""
    try:
        doc: Any = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("window") != window or not isinstance(doc.get("key"), str):
            raise ValueError("not {window, key}")
        key = bytes.fromhex(doc["key"])
    except (ValueError, UnicodeDecodeError) as e:
        raise SealError(BAD_KEY, f"reveal of window {window} is malformed: {e}") from e
    if len(key) != KEY_BYTES:
        raise SealError(BAD_KEY, f"revealed key has {len(key)} bytes, not {KEY_BYTES}")
    return key


def open_sealed(sealed: bytes, key: bytes, *, hotkey: str, window: int, max_bytes: int) -> bytes:
    """The plaintext artifact of a sealed upload by `hotkey` for `window`, after checking its signature, that
    sha256(key) is the signed `key_sha256` and that AES-GCM authenticates; SealError otherwise."""
    try:
        art = read_tensor_artifact(sealed, kind="sealed", max_bytes=max_bytes, signer_ss58=hotkey, window=window)
    except ArtifactError as e:
        raise SealError(e.code, str(e)) from e
    box = art.tensors.get("sealed")
    if set(art.tensors) != {"sealed"} or box is None or box.dtype != torch.uint8 or box.dim() != 1:
        raise SealError("malformed", "a sealed artifact holds exactly one 1-D uint8 tensor `sealed`")
    if art.manifest.get("key_sha256") != hashlib.sha256(key).hexdigest():
        raise SealError(BAD_KEY, "the revealed key does not match the key_sha256 the manifest signed")
    data = box.numpy().tobytes()
    try:
        return AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(window, hotkey))
    except (InvalidTag, ValueError) as e:
        raise SealError(BAD_KEY, "the key does not open the seal (authentication failed)") from e
