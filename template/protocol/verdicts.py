"""A validator's signed verdict on the lead's record of one window (JSON artifact, kind "verdict").

Every validator that replays a record publishes one, in its own bucket: `valid` True attests that the
record checked out and names the theta_{w+1} fingerprint it reached (a node joining late accepts a
checkpoint that validators holding a stake majority attest); `valid` False is a rejection, with the
check that failed (`gauntlet/verify.py`). The lead rule passes over a lead whose record validators
holding a stake majority of the others have rejected (`gauntlet.verify.rejected_leads`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_REASON = 300


@dataclass(frozen=True)
class Verdict:
    window: int
    lead_hotkey: str  # the record's signer
    next_fingerprint: str  # the theta_{w+1} the record names (on `valid`: the one this validator reached)
    valid: bool
    reason: str = ""  # which check failed ("" when valid)

    def to_body(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_body(cls, body: Any, *, window: int) -> Verdict:
        """Validate a verdict body of `window`; ValueError names the bad field."""
        if not isinstance(body, dict) or set(body) != {"window", "lead_hotkey", "next_fingerprint", "valid",
                                                       "reason"}:
            raise ValueError("verdict body must have exactly window, lead_hotkey, next_fingerprint, valid, reason")
        if body["window"] != window or isinstance(body["window"], bool):
            raise ValueError(f"verdict is for window {body['window']!r}, expected {window}")
        if not isinstance(body["lead_hotkey"], str) or not 0 < len(body["lead_hotkey"]) <= 64:
            raise ValueError("verdict lead_hotkey must be a non-empty string")
        if not isinstance(body["next_fingerprint"], str) or not _HEX64.match(body["next_fingerprint"]):
            raise ValueError("verdict next_fingerprint must be 64 hex chars")
        if not isinstance(body["valid"], bool):
            raise ValueError("verdict valid must be a bool")
        reason = body["reason"]
        if not isinstance(reason, str) or len(reason) > _MAX_REASON or not reason.isascii():
            raise ValueError(f"verdict reason must be an ASCII string of at most {_MAX_REASON} chars")
        if body["valid"] == bool(reason):
            raise ValueError("a valid verdict has no reason; a rejection must say why")
        return cls(window=window, lead_hotkey=body["lead_hotkey"], next_fingerprint=body["next_fingerprint"],
                   valid=body["valid"], reason=reason)
