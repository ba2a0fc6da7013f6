"""Which storage endpoints a run trusts for upload times (hparams `approved_storage_endpoints`).

Upload deadlines are judged by the storage's own `Last-Modified`. A miner that runs its own
endpoint could write any time there, so a commitment counts only when its endpoint is run by a
provider the subnet owner approves (R2, S3, the localnet's SeaweedFS). Pure functions only.

Pattern grammar: `scheme://host[:port]`, scheme `http` or `https`; the host is DNS labels joined
by dots, where a label `*` matches exactly one label of the endpoint (`[a-z0-9-]+`, never a dot);
without a port the endpoint must use the scheme's default port. Examples:
`https://*.r2.cloudflarestorage.com`, `https://s3.*.amazonaws.com`, `http://127.0.0.1:8333`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Production providers whose servers, not the uploader, set Last-Modified (documented in docs/protocol.md).
PRODUCTION_ENDPOINTS = (
    "https://*.r2.cloudflarestorage.com",
    "https://*.eu.r2.cloudflarestorage.com",
    "https://s3.amazonaws.com",
    "https://s3.*.amazonaws.com",
)


def _split(url: str, what: str) -> tuple[str, list[str], int]:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} is not a URL of the form scheme://host[:port]: {url!r}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{what} must be http(s)://host[:port], got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{what} must not carry a path, query or fragment, got {url!r}")
    return parts.scheme, parts.hostname.lower().split("."), _DEFAULT_PORTS[parts.scheme] if port is None else port


def check_pattern(pattern: str) -> str:
    """`pattern` if it follows the grammar above; raises ValueError naming it otherwise."""
    if not isinstance(pattern, str):
        raise ValueError(f"an endpoint pattern must be a string, got {type(pattern).__name__}")
    _, labels, _ = _split(pattern, "endpoint pattern")
    if not all(label == "*" or _LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"endpoint pattern host must be DNS labels or '*', got {pattern!r}")
    if labels[-1] == "*":
        raise ValueError(f"endpoint pattern must end in a fixed top-level label, got {pattern!r}")
    return pattern


def endpoint_approved(endpoint: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when `endpoint` matches one of `patterns` (scheme, every host label, port)."""
    try:
        scheme, labels, port = _split(endpoint, "endpoint")
    except ValueError:
        return False
    for pattern in patterns:
        p_scheme, p_labels, p_port = _split(pattern, "endpoint pattern")
        if (p_scheme, p_port, len(p_labels)) != (scheme, port, len(labels)):
            continue
        if all(p == "*" and _LABEL.fullmatch(h) or p == h for p, h in zip(p_labels, labels, strict=True)):
            return True
    return False
