"""A validator's signed verdict on the lead's record of one window (JSON artifact, kind "verdict").

Every validator that replays a record publishes one, in its own bucket: `valid` True attests that the
record checked out and names the theta_{w+1} fingerprint it reached (a node joining late accepts a
checkpoint that validators holding a stake majority attest); `valid` False is a rejection, with the
check that failed (`gauntlet/verify.py`). The lead rule passes over a lead whose record validators
holding a stake majority of the others have rejected (`gauntlet.verify.rejected_leads`).

A validator also judges each checkpoint the lead publishes of a window whose theta it verified itself
(`CheckpointVerdict`, key `layout.checkpoint_verdict_key`, beside the record verdict of the window, which
stays as it was): it attests the checkpoint when the fingerprint its signed manifest names is the one the
validator verified, and rejects it otherwise. A checkpoint rejection counts against its signer in the lead
rule exactly as a record rejection does.
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


CHECKPOINT_SUBJECT = "checkpoint"
_CHECKPOINT_FIELDS = {"subject", "window", "lead_hotkey", "fingerprint", "payload_sha256", "verified", "valid",
                      "reason"}


@dataclass(frozen=True)
class CheckpointVerdict:
    """A validator's signed verdict on the lead's checkpoint of theta_`window` (kind "verdict", its own key)."""

    window: int  # the checkpoint's window (it holds theta_window)
    lead_hotkey: str  # the checkpoint's signer
    fingerprint: str  # the fingerprint the checkpoint's signed manifest names
    payload_sha256: str  # the checkpoint's manifest payload_sha256: which checkpoint this is
    verified: str  # the theta_window fingerprint this validator reached by verified steps
    valid: bool  # True: fingerprint == verified and the clip state is the verified one (attested); False: rejected
    reason: str = ""

    def to_body(self) -> dict[str, Any]:
        return {"subject": CHECKPOINT_SUBJECT, **asdict(self)}

    @classmethod
    def judge(cls, window: int, lead_hotkey: str, fingerprint: str, payload_sha256: str,
              verified: str, clip_problem: str | None = None) -> CheckpointVerdict:
        """The verdict on a checkpoint naming `fingerprint` by a validator that verified `verified`; `clip_problem`:
        why its clip state is not the verified one (weights alone do not make a state a joiner steps on from)."""
        valid = fingerprint == verified and clip_problem is None
        reason = "" if valid else (f"checkpoint fingerprint {fingerprint[:16]}... is not the verified theta_{window} "
                                   f"{verified[:16]}..." if fingerprint != verified else str(clip_problem)[:_MAX_REASON])
        return cls(window=window, lead_hotkey=lead_hotkey, fingerprint=fingerprint, payload_sha256=payload_sha256,
                   verified=verified, valid=valid, reason=reason)

    @classmethod
    def from_body(cls, body: Any, *, window: int) -> CheckpointVerdict:
        """Validate a checkpoint verdict body of `window`; ValueError names the bad field."""
        if not isinstance(body, dict) or set(body) != _CHECKPOINT_FIELDS:
            raise ValueError(f"checkpoint verdict body must have exactly {sorted(_CHECKPOINT_FIELDS)}")
        if body["subject"] != CHECKPOINT_SUBJECT:
            raise ValueError(f"checkpoint verdict subject must be {CHECKPOINT_SUBJECT!r}")
        if body["window"] != window or isinstance(body["window"], bool):
            raise ValueError(f"checkpoint verdict is for window {body['window']!r}, expected {window}")
        if not isinstance(body["lead_hotkey"], str) or not 0 < len(body["lead_hotkey"]) <= 64:
            raise ValueError("checkpoint verdict lead_hotkey must be a non-empty string")
        for name in ("fingerprint", "payload_sha256", "verified"):
            if not isinstance(body[name], str) or not _HEX64.match(body[name]):
                raise ValueError(f"checkpoint verdict {name} must be 64 hex chars")
        if not isinstance(body["valid"], bool):
            raise ValueError("checkpoint verdict valid must be a bool")
        if body["valid"] and body["fingerprint"] != body["verified"]:
            raise ValueError("a checkpoint verdict attests only a fingerprint that is the verified one")
        reason = body["reason"]
        if not isinstance(reason, str) or len(reason) > _MAX_REASON or not reason.isascii():
            raise ValueError(f"checkpoint verdict reason must be an ASCII string of at most {_MAX_REASON} chars")
        if body["valid"] == bool(reason):
            raise ValueError("a valid checkpoint verdict has no reason; a rejection must say why")
        return cls(window=window, lead_hotkey=body["lead_hotkey"], fingerprint=body["fingerprint"],
                   payload_sha256=body["payload_sha256"], verified=body["verified"], valid=body["valid"],
                   reason=reason)
