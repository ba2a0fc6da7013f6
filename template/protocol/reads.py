"""The outcome of reading something from a peer's bucket: a status, the value when ok, and why not.

Every read of a peer's bucket (uploads, records, peer lists, checkpoints, hparams) returns a `Read`,
so callers tell "absent" from "no commitment" from "invalid" without `None` meaning three things.
`ReadStatus` values are plain strings: they travel in metrics rows and admission reasons as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class ReadStatus(StrEnum):
    """Why a read of a peer's object gave what it gave."""

    OK = "ok"
    NOT_FOUND = "not_found"  # the peer's bucket holds no such object
    NO_COMMITMENT = "no_commitment"  # the hotkey published no usable bucket access on chain
    INVALID = "invalid"  # fetched, but fails its signature, format or digest (`reason` says which)
    TOO_LARGE = "too_large"  # over the size cap for its kind; not downloaded
    TIMEOUT = "timeout"  # the peer's server did not deliver within the read budget
    DENIED = "denied"  # the published read keys are refused
    ERROR = "error"  # transport failure after retries


@dataclass(frozen=True)
class Read(Generic[T]):
    """`value` is set exactly when `status` is OK; `reason` explains any other status.

    `last_modified` is the storage's LastModified of the object (unix seconds) when known.
    """

    status: ReadStatus
    value: T | None = None
    reason: str = ""
    last_modified: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is ReadStatus.OK

    @classmethod
    def success(cls, value: T, last_modified: float | None = None) -> Read[T]:
        return cls(ReadStatus.OK, value, "", last_modified)

    @classmethod
    def failure(cls, status: ReadStatus, reason: str = "") -> Read[T]:
        if status is ReadStatus.OK:
            raise ValueError("a failed read needs a status other than OK")
        return cls(status, None, reason or status.value)

    def describe(self) -> str:
        """One phrase for logs: the status, and the reason when it adds something."""
        return self.status.value if self.reason in ("", self.status.value) else f"{self.status.value} ({self.reason})"
