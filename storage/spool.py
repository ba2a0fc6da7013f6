"""A window's fetched uploads on local disk (issue 18): written as each read completes, read back one at a time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from template.protocol.uploads import Payload, Upload


@dataclass(frozen=True)
class UploadSpool:
    """A window's fetched uploads on disk, one file per uid under `folder`, read back one at a time.

    Issue 18: a validator judging N miners held all N uploads' bytes (N x 24.6 MB at the 1B preset) from the
    fetch until its eval draw; with a spool it holds the ones in flight (at most FETCH_WORKERS) and the one
    being admitted. The folder is scratch: `fetch_uploads` empties it first, `clear` after the window."""

    folder: Path

    def path(self, uid: int) -> Path:
        return self.folder / f"{uid}.upload"

    def write(self, uid: int, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path(uid).write_bytes(data)

    def load(self, upload: Upload) -> Upload:
        """`upload` with its bytes read back from disk (as it is when it is not spooled; FAILED when its file
        is gone)."""
        if upload.payload is not Payload.SPOOLED:
            return upload
        if not self.path(upload.uid).exists():
            return replace(upload, payload=Payload.FAILED)
        return replace(upload, data=self.path(upload.uid).read_bytes(), payload=Payload.IN_MEMORY)

    def clear(self) -> None:
        for path in self.folder.glob("*.upload"):
            path.unlink(missing_ok=True)
