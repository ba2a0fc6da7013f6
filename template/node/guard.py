"""The guard batch of a window as a node reads it (issue 27; docs/protocol.md, "The guard batch").

The outer step's guard (the step refused when it raises the guard loss too far, members whose own step does
not lower it dropped) runs on samples nobody could train on in advance: training ids drawn from the hash of
the window's guard block (the first block stamped after the reveal deadline, `WindowClock.guard_block`),
outside the ids assigned to the window's gather-set members (`gauntlet.progress.window_guard_ids`). The lead,
every verifying validator, every miner and a node replaying the window later read the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from loguru import logger

from gauntlet.progress import window_guard_ids
from template.chain.base import ChainError
from template.protocol.config import HParams
from template.protocol.data import SampleSource

if TYPE_CHECKING:
    from template.node.neuron import StopFlag, WindowClock

# (window, gather-set member uids) -> the window's guard batch, or None when the guard block's hash cannot be
# read (the chain pruned it, the node is cut off) or the node is stopping: the guard-based checks are skipped
GuardBatch = Callable[[int, Sequence[int]], "torch.Tensor | None"]


def guard_reader(clock: WindowClock, dataset: SampleSource, hp: HParams, num_train: int,
                 stop: StopFlag) -> GuardBatch:
    """The node's `GuardBatch`: waits for the window's guard block while the chain has not produced it (a lead
    steps just after the reveal deadline; a follower replays after the lead, so it is there), reads its hash and
    the batch. A ChainError is a warning and None, never a crash: the caller goes on without the guard."""
    hashes: dict[int, str] = {}

    def read(window: int, members: Sequence[int]) -> torch.Tensor | None:
        if window not in hashes:
            try:
                block = clock.wait_for_guard_block(window, stop)
                if block is None:
                    return None
                hashes[window] = clock.chain.block_hash(block)
            except ChainError as e:
                logger.bind(window=window).warning(
                    f"cannot read the guard block of window {window} ({e}): its guard-based checks are skipped")
                return None
            for w in sorted(hashes)[:-8]:
                del hashes[w]
        ids = window_guard_ids(hashes[window], window, members, data_seed=hp.data_seed,
                               samples_per_window=hp.samples_per_window, num_train=num_train,
                               page_samples=dataset.page_samples)  # the manifest's: the same on every node
        return dataset.batch(ids)

    return read
