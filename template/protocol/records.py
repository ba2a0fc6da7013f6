"""The aggregation record: which artifacts formed theta_{w+1}, and its fingerprint.

The lead validator signs one per window (JSON artifact, kind "record"). Replaying the records
from a checkpoint reproduces the global model bit for bit; a window without a record leaves
the model unchanged. Parsing is strict: a record that does not validate is ignored, never
half-applied.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RecordEntry:
    uid: int
    hotkey: str
    key: str
    sha256: str  # of the whole artifact file as uploaded


@dataclass(frozen=True)
class AggregationRecord:
    window: int
    base_fingerprint: str  # theta_w
    next_fingerprint: str  # theta_{w+1}
    outer_lr: float
    included: tuple[RecordEntry, ...]
    # the lead refused the step (it raised the held-out loss by more than max_loss_rise): theta_{w+1} = theta_w,
    # and every replaying node leaves the model unchanged; `included` still names the refused gather set
    refused: bool = False
    # issue 27: uids of `included` left out of the step because their own step did not lower the guard loss
    # (`gauntlet.progress.no_gain_members`); every replaying node recomputes and checks them
    # (`gauntlet.verify.dropped_problem`). Sorted; absent in the body when empty (older records stay as signed).
    dropped: tuple[int, ...] = ()

    def to_body(self) -> dict[str, Any]:
        body = asdict(self)
        body["included"] = [asdict(e) for e in self.included]
        if self.dropped:
            body["dropped"] = list(self.dropped)
        else:
            del body["dropped"]
        return body

    @classmethod
    def from_body(cls, body: Any) -> AggregationRecord:
        """Validate a record body; ValueError names the bad field."""
        if not isinstance(body, dict):
            raise ValueError("record body must be an object")
        try:
            window = body["window"]
            base, nxt, lr, inc = body["base_fingerprint"], body["next_fingerprint"], body["outer_lr"], body["included"]
        except KeyError as e:
            raise ValueError(f"record lacks field {e}") from e
        if not isinstance(window, int) or window < 0:
            raise ValueError(f"record window must be an int >= 0, got {window!r}")
        for name, fp in (("base_fingerprint", base), ("next_fingerprint", nxt)):
            if not isinstance(fp, str) or not _HEX64.match(fp):
                raise ValueError(f"record {name} must be 64 hex chars, got {fp!r}")
        if not isinstance(lr, int | float) or not 0 < lr <= 100:
            raise ValueError(f"record outer_lr must be in (0, 100], got {lr!r}")
        if not isinstance(inc, list):
            raise ValueError("record included must be a list")
        entries = []
        for i, item in enumerate(inc):
            if not isinstance(item, dict) or set(item) != {"uid", "hotkey", "key", "sha256"}:
                raise ValueError(f"record included[{i}] must have exactly uid, hotkey, key, sha256")
            if not isinstance(item["uid"], int) or not isinstance(item["hotkey"], str) or not isinstance(item["key"], str):
                raise ValueError(f"record included[{i}] has wrong field types")
            if not isinstance(item["sha256"], str) or not _HEX64.match(item["sha256"]):
                raise ValueError(f"record included[{i}].sha256 must be 64 hex chars")
            entries.append(RecordEntry(**item))
        refused = body.get("refused", False)
        if not isinstance(refused, bool):
            raise ValueError(f"record refused must be a bool, got {refused!r}")
        if refused and nxt != base:
            raise ValueError("a refused record must have next_fingerprint == base_fingerprint")
        uids = [e.uid for e in entries]
        if uids != sorted(set(uids)):
            raise ValueError("record included must be sorted by uid without duplicates")
        dropped = body.get("dropped", [])
        if not isinstance(dropped, list) or not all(isinstance(u, int) and not isinstance(u, bool) for u in dropped):
            raise ValueError(f"record dropped must be a list of uids, got {dropped!r}")
        if dropped != sorted(set(dropped)) or not set(dropped) <= set(uids):
            raise ValueError("record dropped must be sorted uids of included without duplicates")
        return cls(window=window, base_fingerprint=base, next_fingerprint=nxt, outer_lr=float(lr),
                   included=tuple(entries), refused=refused, dropped=tuple(dropped))
