"""Bucket access details a neuron publishes on chain so peers can read its bucket.

`BucketAccess.encode` gives compact JSON that fits the chain's 512-byte commitment; `decode` is the
inverse and treats its input as hostile: anything that is not exactly a valid record raises
`ValueError` (never another exception), so a peer's garbage commitment is simply skipped.
Only READ-ONLY keys are ever published.

A validator also declares its role here (``"o": "v"``): a hotkey counts as a validator only if it
declares it (and holds a permit and the minimum stake, template/node/neuron.py), so stake that
others add to a miner's hotkey cannot change what it is. A miner's commitment has no ``"o"``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_COMMITMENT_BYTES = 384  # three Raw fields of 128 bytes: what the chains (localnet and finney) accept
_FORMAT_VERSION = 1
_FIELDS = {"v": "format version", "e": "endpoint", "b": "bucket", "a": "access_key_id",
           "s": "secret_access_key", "r": "region"}
ROLES = ("miner", "validator")  # "validator" is encoded as "o": "v"; a miner's commitment has no "o"

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ACCESS_KEY = re.compile(r"[A-Za-z0-9_-]{4,128}")
_SECRET_KEY = re.compile(r"[A-Za-z0-9/+=_-]{8,128}")
_REGION = re.compile(r"[a-z0-9-]{1,32}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


def _check_endpoint(endpoint: str) -> None:
    if len(endpoint) > 256 or any(c.isspace() or not c.isascii() or not c.isprintable() for c in endpoint):
        raise ValueError(f"endpoint must be printable ASCII without spaces, <= 256 chars, got {endpoint!r}")
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"endpoint is not a valid URL: {endpoint!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint scheme must be http or https, got {endpoint!r}")
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if not host or "@" in parts.netloc or not _HOST.fullmatch(host):
        raise ValueError(f"endpoint needs a plain host[:port] (no user info), got {endpoint!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"endpoint must not carry a path, query or fragment, got {endpoint!r}")


def _check_bucket(bucket: str) -> None:
    # S3 bucket naming rules: 3-63 chars, lowercase/digits/dots/hyphens, alnum at both ends,
    # no '..', not an IPv4 address.
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket:
        raise ValueError(f"bucket name breaks the S3 naming rules: {bucket!r}")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return
    raise ValueError(f"bucket name must not be an IP address: {bucket!r}")


@dataclass(frozen=True)
class BucketAccess:
    """Where a neuron's bucket is and the (read-only) keys to read it."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    role: str = "miner"  # declared role: "validator" only when the neuron runs the validator

    def __post_init__(self) -> None:
        for name in ("endpoint", "bucket", "access_key_id", "secret_access_key", "region"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        _check_endpoint(self.endpoint)
        _check_bucket(self.bucket)
        if not _ACCESS_KEY.fullmatch(self.access_key_id):
            raise ValueError("access_key_id must be 4-128 chars of [A-Za-z0-9_-]")
        if not _SECRET_KEY.fullmatch(self.secret_access_key):
            raise ValueError("secret_access_key must be 8-128 chars of [A-Za-z0-9/+=_-]")
        if not _REGION.fullmatch(self.region):
            raise ValueError(f"region must be 1-32 chars of [a-z0-9-], got {self.region!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")

    def encode(self) -> str:
        """Compact JSON for the chain commitment. Raises ValueError if over 512 bytes UTF-8."""
        payload = {"v": _FORMAT_VERSION, "e": self.endpoint, "b": self.bucket, "a": self.access_key_id,
                   "s": self.secret_access_key, "r": self.region}
        if self.role == "validator":
            payload["o"] = "v"
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
        if len(text.encode("utf-8")) > MAX_COMMITMENT_BYTES:
            raise ValueError(f"encoded bucket access is {len(text)} bytes, over the {MAX_COMMITMENT_BYTES} limit")
        return text

    @classmethod
    def decode(cls, raw: str | bytes) -> BucketAccess:
        """Parse and validate a commitment. Raises ValueError (only) on anything malformed."""
        if isinstance(raw, (bytes, bytearray, memoryview)):
            raw = bytes(raw)
            if len(raw) > MAX_COMMITMENT_BYTES:
                raise ValueError(f"commitment is {len(raw)} bytes, over the {MAX_COMMITMENT_BYTES} limit")
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("commitment is not valid UTF-8") from None
        if not isinstance(raw, str):
            raise ValueError(f"commitment must be str or bytes, got {type(raw).__name__}")
        # Size check before parsing: bounds json's recursion depth and work.
        if len(raw) > MAX_COMMITMENT_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_COMMITMENT_BYTES:
            raise ValueError(f"commitment is over the {MAX_COMMITMENT_BYTES}-byte limit")
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            raise ValueError("commitment is not JSON") from None
        if not isinstance(payload, dict) or set(payload) - {"o"} != set(_FIELDS):
            raise ValueError(f"commitment must be a JSON object with exactly the keys {sorted(_FIELDS)} "
                             "(and \"o\": \"v\" for a validator)")
        if "o" in payload and payload["o"] != "v":
            raise ValueError(f"commitment role \"o\" must be \"v\" when present, got {payload['o']!r}")
        if type(payload["v"]) is not int or payload["v"] != _FORMAT_VERSION:
            raise ValueError(f"unsupported commitment format version {payload['v']!r}")
        return cls(endpoint=payload["e"], bucket=payload["b"], access_key_id=payload["a"],
                   secret_access_key=payload["s"], region=payload["r"],
                   role="validator" if "o" in payload else "miner")
