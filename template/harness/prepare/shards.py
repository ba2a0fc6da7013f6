"""Pages into shard files, each shard with its index of page digests (the format of `template.protocol.data`).

A shard is raw tokens, whole pages appended in order; its index is the sha256 of each page, so a reader
checks any one page (one range GET) on its own. A shard's writer state is small and JSON, so a killed
run resumes from a checkpoint: the open shard is cut back to the bytes the checkpoint counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from template.protocol import layout
from template.protocol.data import page_digest

PAGE_BYTES = 1 << 20  # default page size target: one range GET
SHARD_BYTES = 1 << 30  # default shard size target


def default_page_samples(sample_bytes: int, samples_per_window: int | None = None) -> int:
    """Samples per page: a power of two of at most PAGE_BYTES (at least one sample), dividing
    `samples_per_window` when given, so a uid's slot is whole pages."""
    page = 1
    while page * 2 * sample_bytes <= PAGE_BYTES:
        page *= 2
    if samples_per_window:
        while samples_per_window % page:
            page //= 2
    return page


@dataclass
class SplitWriter:
    """Pages of one split (train or heldout) into shards of `shard_pages` pages, each with its index."""

    out_dir: Path
    split: str
    shard_pages: int
    closed: list[dict[str, Any]] = field(default_factory=list)  # ShardInfo dicts
    open_pages: int = 0
    open_samples: int = 0
    open_digests: list[str] = field(default_factory=list)
    open_bytes: int = 0

    def _paths(self) -> tuple[Path, Path]:
        """The open shard's file and index file."""
        index = len(self.closed)
        return self.out_dir / layout.shard_key(self.split, index), self.out_dir / layout.shard_index_key(self.split, index)

    def write(self, page: np.ndarray) -> None:
        """Append one page (samples, seq_len + 1) to the open shard; close it when it is full."""
        path, _ = self._paths()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.ascontiguousarray(page).tobytes()
        with path.open("ab") as f:
            f.write(data)
        self.open_pages += 1
        self.open_samples += len(page)
        self.open_bytes += len(data)
        self.open_digests.append(page_digest(data).hex())
        if self.open_pages == self.shard_pages:
            self.close()

    def close(self) -> None:
        """Write the open shard's index and record it as closed (a no-op without an open page)."""
        if not self.open_pages:
            return
        path, index_path = self._paths()
        index = b"".join(bytes.fromhex(d) for d in self.open_digests)
        index_path.write_bytes(index)
        self.closed.append({"key": str(path.relative_to(self.out_dir)),
                            "index_key": str(index_path.relative_to(self.out_dir)),
                            "num_samples": self.open_samples, "index_sha256": hashlib.sha256(index).hexdigest()})
        self.open_pages, self.open_samples, self.open_digests, self.open_bytes = 0, 0, [], 0

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this writer (JSON)."""
        return {"closed": self.closed, "open_pages": self.open_pages, "open_samples": self.open_samples,
                "open_digests": self.open_digests, "open_bytes": self.open_bytes}

    @classmethod
    def from_state(cls, out_dir: Path, split: str, shard_pages: int, state: dict[str, Any]) -> SplitWriter:
        """The writer a checkpoint kept, with the files on disk cut back to it."""
        writer = cls(out_dir, split, shard_pages, list(state["closed"]), state["open_pages"], state["open_samples"],
                     list(state["open_digests"]), state["open_bytes"])
        writer._drop_writes_after_checkpoint()
        return writer

    def _drop_writes_after_checkpoint(self) -> None:
        """Truncate the open shard to the checkpoint's bytes and delete shards begun after it: those pages
        are written again from the checkpoint's input position."""
        path, _ = self._paths()
        if path.exists():
            with path.open("r+b") as f:
                f.truncate(self.open_bytes)
        later = len(self.closed) + 1
        while (self.out_dir / layout.shard_key(self.split, later)).exists():
            (self.out_dir / layout.shard_key(self.split, later)).unlink()
            (self.out_dir / layout.shard_index_key(self.split, later)).unlink(missing_ok=True)
            later += 1
