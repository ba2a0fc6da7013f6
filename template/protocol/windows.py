"""Block -> window arithmetic (DESIGN section 3). Pure: blocks and timestamps in, numbers out."""

from __future__ import annotations


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
    """Unix time after which an upload for the window no longer counts (storage LastModified)."""
    return last_block_timestamp_s + upload_grace_s


def uploaded_in_time(last_modified_s: float, deadline_s: float) -> bool:
    """LastModified has one-second resolution, so compare at that resolution: floor both."""
    return int(last_modified_s) <= int(deadline_s)
