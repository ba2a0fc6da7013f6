"""One miner's upload of a window as a node holds it after the fetch (`storage.peers.fetch_uploads`) and before
its admission (`gauntlet.checks.admit_upload`). Pure data, below both: storage fills it, gauntlet judges it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from template.protocol.reads import ReadStatus


class Payload(StrEnum):
    """Where an upload's bytes are."""

    IN_MEMORY = "in_memory"  # `Upload.data` holds them
    SPOOLED = "spooled"  # on local disk (`storage.spool.UploadSpool`); `load` gives them back in memory
    FAILED = "failed"  # the read failed (`status` says how): there are none


@dataclass(frozen=True)
class Upload:
    """What a node fetched for one uid and window. `payload` says where the bytes are (by default: in memory
    when `data` holds them, else failed); `data` is None unless it is IN_MEMORY."""

    uid: int
    hotkey: str
    key: str
    data: bytes | None
    last_modified: float | None  # storage LastModified, unix seconds (1 s resolution on S3)
    status: ReadStatus
    rejected: str | None = None  # a reason found while fetching (a sealed upload's key: key_missing, late_key...)
    payload: Payload | None = None

    def __post_init__(self) -> None:
        if self.payload is None:
            object.__setattr__(self, "payload", Payload.FAILED if self.data is None else Payload.IN_MEMORY)
        if (self.payload is Payload.IN_MEMORY) != (self.data is not None):
            raise ValueError(f"upload of uid {self.uid}: payload {self.payload} with data "
                             f"{'absent' if self.data is None else 'present'}")
