"""Steps must make progress (issue 27): the guard batch nobody can predict, the progress test of a gather set,
a clip limit small hostile updates cannot pull down, and sticky exclusion from peer lists.

Why. The step guard refuses a step that raises the loss on a guard batch; it cannot see a step that does
nothing. A coalition on the peer list that sends the negated honest direction (split over disjoint positions so
the copy check sees nothing) cancels the honest work, and, when the guard batch is the public fixed loss-curve
set, adds a delta trained on that batch so the guard loss still falls. The parts here close that:

- `guard_ids`, `window_guard_ids`: the guard batch drawn after the deadline from a seed nobody controls in
  advance (the hash of the first block stamped after the reveal deadline, `template.protocol.windows.
  find_guard_block`) out of the training ids not assigned to the window's gather-set members;
- `no_gain_members`: the members whose own step does not lower the guard loss: measured
  (scripts/bench_progress.py, docs/benchmarks.md) against `opposed_members` (pairwise cosine votes: inert on
  codec-sparse updates, whose cosines are all near 0) and refusing a step whose guard gain is far below its
  members' own gains (never fired: the diluted step still gains); it alone restored the progress;
- the clip floor (template/protocol/outer_step.py `clip_limit`, part of the outer step): the clip limit cannot
  fall below a floor from the history of applied limits, so a coalition of small updates cannot shrink the
  honest ones window after window;
- `Probation`: a miner that failed is off the peer list until it has succeeded `reentry` windows in a row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from template.protocol.data import EVAL_MIN_PAGES, LOSS_CURVE_SAMPLES, eval_ids_by_page, sample_ids

OPPOSED_COSINE = -0.05  # a cosine below this is a vote against (opposed_members)
REENTRY_SUCCESSES = 3  # successes in a row a failed miner needs before it is back on peer lists


def guard_ids(block_hash: str, window: int, n: int, num_train: int, assigned: Collection[int],
              page_samples: int = 1) -> list[int]:
    """The guard batch of `window`: `n` training ids outside the window's assignments, drawn from the hash of a
    block produced after the reveal deadline (unknown to anyone when the updates were made). Drawn by page
    (`eval_ids_by_page`, over at least `EVAL_MIN_PAGES` pages of `page_samples`, the manifest's): every node
    reads a few pages for it, not one page per id."""
    if not block_hash:
        raise ValueError("guard_ids needs the hash of a block after the deadline")
    seed = int.from_bytes(hashlib.sha256(f"guard:{block_hash}:{window}".encode()).digest(), "big")
    return eval_ids_by_page(seed, n, num_train, set(assigned), page_samples, min_pages=EVAL_MIN_PAGES)


def window_guard_ids(block_hash: str, window: int, members: Collection[int], *, data_seed: int,
                     samples_per_window: int, num_train: int, n: int = LOSS_CURVE_SAMPLES,
                     page_samples: int = 1) -> list[int]:
    """The guard batch every node steps `window` with: `guard_ids` from the guard block's hash, outside the ids
    assigned (`sample_ids`) to the window's gather-set `members` (the record's entry uids; the lead's and a
    miner's own `chosen`), at most `num_train` of them.

    Why the members' assignments and not every judged miner's: the members are named in the signed record, so
    the lead, every verifying node and a node replaying the window much later draw the same ids from the record
    alone; the set of judged miners depends on the metagraph at the time, which a late replayer cannot read
    back. Left out so a member is not judged on the samples it trained on. A training range too small to
    leave `n` ids outside the assignments is drawn from whole (the same for everyone)."""
    n = min(n, num_train)
    assigned = {i for uid in sorted(set(members))
                for i in sample_ids(uid, window, data_seed, samples_per_window, num_train)}
    if num_train - len(assigned) < n:
        assigned = set()
    return guard_ids(block_hash, window, n, num_train, assigned, page_samples)


def _flat(update: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([update[n].reshape(-1).to(torch.float64) for n in sorted(update)])


def opposed_members(updates: Sequence[Mapping[str, torch.Tensor]], *, min_cosine: float = OPPOSED_COSINE) -> list[int]:
    """Indices of the updates that point against most of the others: cosine below `min_cosine` with more than
    half of the other updates (fewer than three updates: none).

    Pairwise votes, not the cosine to the sum of the rest: a coalition that cancels the honest sum makes that sum
    point against every honest member too. With votes, a coalition that is a strict minority of the gather set
    is dropped and no honest member is (each honest member opposes only the coalition's members); a near-zero
    cosine (two sparse updates that barely share positions) casts no vote."""
    n = len(updates)
    if n < 3:
        return []
    flats = torch.stack([_flat(u) for u in updates])
    norms = flats.norm(dim=1)
    gram = flats @ flats.T
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gram / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(gram))
    against = (cos < min_cosine).sum(dim=1) - (torch.diagonal(cos) < min_cosine).long()
    return [i for i in range(n) if 2 * int(against[i]) > n - 1]


def no_gain_members(gains: Sequence[float]) -> list[int]:
    """Indices of the members whose own step (alone, at the outer lr) does not lower the guard loss (`gains[i]` =
    guard loss before - after; a non-finite gain counts as none). Measured the progress test that works
    (docs/benchmarks.md, "Steps must make progress"): it drops the cancelling members and no honest one."""
    return [i for i, g in enumerate(gains) if not g > 0]


@dataclass
class Probation:
    """uid -> successes in a row it still needs before it may be on a peer list again."""

    needs: dict[int, int] = field(default_factory=dict)

    def after_window(self, successes: Collection[int], failures: Collection[int],
                     reentry: int = REENTRY_SUCCESSES) -> Probation:
        """The probation after a window: a failure (re)starts it at `reentry`, a success counts one off."""
        needs = dict(self.needs)
        for uid in successes:
            if uid in needs:
                needs[uid] -= 1
                if needs[uid] <= 0:
                    del needs[uid]
        for uid in failures:
            needs[uid] = reentry
        return Probation(needs)

    def eligible(self, successes: Collection[int]) -> list[int]:
        """The successes that may go on the next peer list."""
        return sorted(u for u in successes if u not in self.needs)
