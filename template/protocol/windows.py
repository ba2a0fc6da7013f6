"""Block -> window arithmetic (DESIGN section 3). Pure: blocks and timestamps in, numbers out."""

from __future__ import annotations

import math
from collections.abc import Callable


def window_of_block(block: int, start_block: int, blocks_per_window: int) -> int:
    """Window containing `block`; blocks before `start_block` give -1 (the run has not begun)."""
    if blocks_per_window <= 0:
        raise ValueError(f"blocks_per_window must be > 0, got {blocks_per_window}")
    if block < start_block:
        return -1
    return (block - start_block) // blocks_per_window


def window_first_block(window: int, start_block: int, blocks_per_window: int) -> int:
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    return start_block + window * blocks_per_window


def window_last_block(window: int, start_block: int, blocks_per_window: int) -> int:
    return window_first_block(window, start_block, blocks_per_window) + blocks_per_window - 1


def upload_deadline(last_block_timestamp_s: float, upload_grace_s: float) -> float:
    """The one upload deadline of the protocol, used by miners and validators alike: the chain timestamp
    of the window's last block plus the run's grace (unix seconds). An upload counts when the storage's
    LastModified is on time against it (`on_time`)."""
    return last_block_timestamp_s + upload_grace_s


def reveal_deadline(upload_deadline_s: float, reveal_grace_s: float) -> float:
    """The one reveal deadline of a sealed run: a miner's key for its sealed upload counts when the storage's
    LastModified of the key is on time (`on_time`) against the upload deadline plus `reveal_grace_s`."""
    return upload_deadline_s + reveal_grace_s


def find_guard_block(last_block: int, reveal_deadline_s: float, timestamp_of: Callable[[int], float],
                     head: int) -> int | None:
    """The guard block of a window (issue 27): the first block after the window's last block `last_block` whose
    chain timestamp (`timestamp_of(block)`) is strictly after the window's reveal deadline; None while the chain
    (best block `head`) has not produced it. Its hash seeds the window's guard batch: nobody knows it when the
    updates (and, in a sealed run, their keys) are due.

    Chain timestamps never decrease along the chain, so the search gallops forward from `last_block` and then
    halves: O(log distance) timestamp reads, also for a node replaying a window far behind the head."""
    if head <= last_block:
        return None
    lo, step = last_block, 1  # lo: last_block or a block stamped at or before the deadline
    while True:
        probe = min(last_block + step, head)
        if timestamp_of(probe) > reveal_deadline_s:
            hi = probe
            break
        lo = probe
        if probe == head:
            return None
        step *= 2
    while hi - lo > 1:  # the first block after the deadline lies in (lo, hi]
        mid = (lo + hi) // 2
        if timestamp_of(mid) > reveal_deadline_s:
            hi = mid
        else:
            lo = mid
    return hi


# S3 LastModified has one-second resolution: a node waits this long past a deadline before it reads, so every
# write stamped on time is already there
LAST_MODIFIED_RESOLUTION_S = 1.0


def on_time(last_modified_s: float | None, deadline_s: float) -> bool:
    """S3 LastModified has one-second resolution, so its floor is compared (the same on every backend);
    a missing or non-finite time is never on time."""
    if last_modified_s is None or not math.isfinite(last_modified_s):
        return False
    return math.floor(last_modified_s) <= deadline_s
