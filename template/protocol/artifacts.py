"""Signed artifacts (DESIGN section 5): canonical manifests, payload digests, safetensors I/O.

Two containers, one manifest scheme:
- tensor artifacts (gradients, checkpoints) are one safetensors file whose `__metadata__`
  holds the manifest as canonical JSON under the key "manifest";
- JSON artifacts (aggregation records, peer lists) are `{"manifest": {...}, "body": {...}}`.

The manifest names the protocol version, kind, window, author hotkey (SS58) and the sha256
of the payload (the tensors in a canonical order, or the canonical JSON of the body), plus
kind-specific fields, and carries an sr25519 signature by the author's hotkey over the
canonical JSON of every other field. Nothing is ever unpickled.

Every rejection raises `ArtifactError` with a stable `code` (the gauntlet's reason codes).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from bittensor_wallet import Keypair
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from template.protocol.config import PROTOCOL_VERSION

KINDS = ("gradient", "checkpoint", "record", "peers", "sealed", "verdict")
MAX_HEADER_BYTES = 4 << 20  # a safetensors header larger than this is hostile, not a model
ALLOWED_DTYPES = {"U8", "I8", "U16", "I16", "I32", "I64", "F16", "BF16", "F32", "F64", "BOOL"}
REQUIRED_FIELDS = ("protocol", "kind", "window", "hotkey", "payload_sha256", "signature")


class ArtifactError(ValueError):
    """A rejected artifact. `code` is a short stable reason, the message says what and why."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8, finite numbers only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's values in row-major order as held in memory (little-endian on every supported host)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data  # a zero-copy view of the bytes


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """The payload hash of tensor artifacts (a manifest's ``payload_sha256``).

    For each tensor in sorted-name order (by Unicode code point), the hash is fed the canonical
    JSON of ``[name, dtype, shape]`` (dtype as torch names it, e.g. ``"torch.float32"``; shape a
    list of ints) and then the tensor's raw bytes, row-major, in the dtype it is held in.
    It is not the model fingerprint (`model.model_fingerprint`: parameter order, fp32, no JSON).
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(canonical_json([name, str(t.dtype), list(t.shape)]))
        h.update(tensor_bytes(t))
    return h.hexdigest()


def _signing_bytes(manifest: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"})


def make_manifest(
    *, kind: str, window: int, keypair: Keypair, payload_sha256: str, fields: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build and sign a manifest with `keypair` (the author's hotkey)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    extra = dict(fields or {})
    clash = set(extra) & set(REQUIRED_FIELDS)
    if clash:
        raise ValueError(f"fields may not override {sorted(clash)}")
    manifest: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "kind": kind,
        "window": int(window),
        "hotkey": keypair.ss58_address,
        "payload_sha256": payload_sha256,
        **extra,
    }
    manifest["signature"] = keypair.sign(_signing_bytes(manifest)).hex()
    return manifest


def verify_manifest(
    manifest: Any, payload_sha256: str | None, *, kind: str, signer_ss58: str | None = None,
    window: int | None = None
) -> dict[str, Any]:
    """Check a manifest against the payload digest, expected kind/signer/window; return it.

    Order of checks is fixed so one artifact always gets the same reason code. `payload_sha256` None checks
    the signed manifest alone (`read_tensor_manifest`: what the signer claims, without the payload).
    """
    if not isinstance(manifest, dict):
        raise ArtifactError("bad_manifest", f"manifest must be a JSON object, got {type(manifest).__name__}")
    if "signature" not in manifest or not manifest.get("signature"):
        raise ArtifactError("unsigned", "manifest carries no signature")
    missing = [f for f in REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise ArtifactError("bad_manifest", f"manifest lacks fields {missing}")
    if manifest["protocol"] != PROTOCOL_VERSION:
        raise ArtifactError(
            "wrong_protocol", f"protocol version {manifest['protocol']!r}, this node speaks {PROTOCOL_VERSION}"
        )
    if manifest["kind"] != kind:
        raise ArtifactError("wrong_kind", f"expected a {kind} artifact, got kind {manifest['kind']!r}")
    hotkey = manifest["hotkey"]
    if signer_ss58 is not None and hotkey != signer_ss58:
        raise ArtifactError("wrong_signer", f"signed for {hotkey!r}, expected {signer_ss58!r}")
    try:
        signature = bytes.fromhex(manifest["signature"])
        ok = Keypair(ss58_address=hotkey).verify(_signing_bytes(manifest), signature)
    except (ValueError, TypeError) as e:
        raise ArtifactError("bad_signature", f"signature cannot be checked: {e}") from e
    if not ok:
        raise ArtifactError("bad_signature", f"signature does not verify for hotkey {hotkey}")
    if window is not None and manifest["window"] != window:
        raise ArtifactError("wrong_window", f"manifest is for window {manifest['window']!r}, expected {window}")
    if payload_sha256 is not None and manifest["payload_sha256"] != payload_sha256:
        raise ArtifactError(
            "payload_mismatch", f"payload sha256 {payload_sha256[:16]}... != manifest's {str(manifest['payload_sha256'])[:16]}..."
        )
    return manifest


# ---------------------------------------------------------------------------------------------
# tensor artifacts


def write_tensor_artifact(
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    window: int,
    keypair: Keypair,
    fields: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialize tensors + signed manifest into one safetensors blob."""
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    manifest = make_manifest(
        kind=kind, window=window, keypair=keypair, payload_sha256=tensors_digest(contiguous), fields=fields
    )
    return st_save(contiguous, metadata={"manifest": canonical_json(manifest).decode()})


def parse_safetensors_header(data: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Validate the safetensors framing before the library touches it; return the header dict."""
    if len(data) > max_bytes:
        raise ArtifactError("too_large", f"{len(data)} bytes exceeds the cap of {max_bytes}")
    if len(data) < 8:
        raise ArtifactError("truncated", f"{len(data)} bytes is shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:
        raise ArtifactError("huge_header", f"header claims {header_len} bytes (cap {MAX_HEADER_BYTES})")
    if 8 + header_len > len(data):
        raise ArtifactError("truncated", f"header claims {header_len} bytes but the file has {len(data) - 8}")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError("malformed", f"header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise ArtifactError("malformed", "header is not a JSON object")
    data_len = len(data) - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise ArtifactError("malformed", f"tensor {name!r} has a malformed header entry")
        if info["dtype"] not in ALLOWED_DTYPES:
            raise ArtifactError("bad_dtype", f"tensor {name!r} has dtype {info['dtype']!r}")
        begin, end = info["data_offsets"]
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_len):
            raise ArtifactError("truncated", f"tensor {name!r} offsets {info['data_offsets']} outside {data_len} bytes")
    return header


def header_length(prefix: bytes) -> int:
    """The safetensors header length from a file's first 8 bytes, within `MAX_HEADER_BYTES`."""
    if len(prefix) != 8:
        raise ArtifactError("truncated", f"{len(prefix)} bytes is not the 8-byte header length")
    header_len = int(struct.unpack("<Q", prefix)[0])
    if header_len > MAX_HEADER_BYTES:
        raise ArtifactError("huge_header", f"header claims {header_len} bytes (cap {MAX_HEADER_BYTES})")
    if header_len < 2:
        raise ArtifactError("malformed", f"header claims {header_len} bytes, too short for a JSON object")
    return header_len


def read_tensor_manifest(header: bytes, *, kind: str, signer_ss58: str | None = None,
                         window: int | None = None) -> dict[str, Any]:
    """The signed manifest of a tensor artifact from its safetensors header alone (the `header_length` bytes
    after the first 8): checked for kind, signer, window and signature, not against the payload (not read).
    What the signer claims there (e.g. a checkpoint's `fingerprint`) is its signed word either way."""
    if len(header) > MAX_HEADER_BYTES:
        raise ArtifactError("huge_header", f"header of {len(header)} bytes (cap {MAX_HEADER_BYTES})")
    try:
        parsed = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError("malformed", f"header is not JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise ArtifactError("malformed", "header is not a JSON object")
    meta = parsed.get("__metadata__") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("manifest"), str):
        raise ArtifactError("unsigned", "no manifest in the safetensors metadata")
    try:
        manifest = json.loads(meta["manifest"])
    except (json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError("bad_manifest", f"manifest is not JSON: {e}") from e
    return verify_manifest(manifest, None, kind=kind, signer_ss58=signer_ss58, window=window)


@dataclass(frozen=True)
class TensorArtifact:
    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def read_tensor_artifact(
    data: bytes,
    *,
    kind: str,
    max_bytes: int,
    signer_ss58: str | None = None,
    window: int | None = None,
) -> TensorArtifact:
    """Parse and verify a tensor artifact; raise ArtifactError with a reason code on any defect."""
    header = parse_safetensors_header(data, max_bytes=max_bytes)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or "manifest" not in meta:
        raise ArtifactError("unsigned", "no manifest in the safetensors metadata")
    try:
        manifest = json.loads(meta["manifest"])
    except (TypeError, json.JSONDecodeError) as e:
        raise ArtifactError("bad_manifest", f"manifest is not JSON: {e}") from e
    try:
        tensors = st_load(bytes(data))
    except Exception as e:  # the library raises its own error types for framing defects
        raise ArtifactError("malformed", f"safetensors refused the payload: {e}") from e
    verify_manifest(manifest, tensors_digest(tensors), kind=kind, signer_ss58=signer_ss58, window=window)
    return TensorArtifact(manifest=manifest, tensors=tensors)


# ---------------------------------------------------------------------------------------------
# JSON artifacts


def write_json_artifact(body: Mapping[str, Any], *, kind: str, window: int, keypair: Keypair) -> bytes:
    """Sign `body` as a JSON artifact of `kind` for `window`: ``{"manifest": {...}, "body": body}``."""
    payload = hashlib.sha256(canonical_json(body)).hexdigest()
    manifest = make_manifest(kind=kind, window=window, keypair=keypair, payload_sha256=payload)
    return canonical_json({"manifest": manifest, "body": body})


@dataclass(frozen=True)
class JsonArtifact:
    manifest: dict[str, Any]
    body: dict[str, Any]


def read_json_artifact(
    data: bytes,
    *,
    kind: str,
    max_bytes: int = 8 << 20,
    signer_ss58: str | None = None,
    window: int | None = None,
) -> JsonArtifact:
    if len(data) > max_bytes:
        raise ArtifactError("too_large", f"{len(data)} bytes exceeds the cap of {max_bytes}")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError("malformed", f"not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("body"), dict):
        raise ArtifactError("malformed", "expected an object with 'manifest' and 'body'")
    if "manifest" not in doc:
        raise ArtifactError("unsigned", "no manifest")
    try:
        payload = hashlib.sha256(canonical_json(doc["body"])).hexdigest()
    except ValueError as e:  # NaN / Infinity in the body
        raise ArtifactError("malformed", f"body is not canonical JSON: {e}") from e
    manifest = verify_manifest(doc["manifest"], payload, kind=kind, signer_ss58=signer_ss58, window=window)
    return JsonArtifact(manifest=manifest, body=doc["body"])
