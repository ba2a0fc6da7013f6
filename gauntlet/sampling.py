"""Sampled evaluation (issue 18): which admitted miners a validator loss-evaluates this window, and the
compact index sketch its copy check keeps of every upload.

Rotation. Every window the cheap deterministic checks (gauntlet/checks.py) run on every upload, but
the loss evaluation only on `k` of the admitted ones (`HParams.eval_sample_size`, 0 = all). The k
are drawn in rounds: a round holds every admitted miner once; each window draws its miners uniformly
at random from those not yet evaluated in the round (newcomers, a (uid, hotkey) this validator never
evaluated, first), and when fewer than k are left the round ends and a new one starts with the rest
of the window's draw. So with N admitted miners:

- fair: each is evaluated exactly once per round, a round lasts at most ceil(N/k) windows, and no
  miner waits more than 2 ceil(N/k) - 1 windows between two evaluations;
- newcomers are evaluated in the first window they are admitted (when at most k arrive at once);
- unpredictable and different across validators: the draw is keyed by `seed`, randomness the
  validator draws after the deadline and never publishes (os.urandom), so before the deadline a
  miner cannot tell whether this window is one of its evaluated ones (only in the last window of a
  round is a miner still pending certain to be drawn, and the round's state is private too).

Carry-over rule for a miner that is admitted but not drawn: it is not part of the window's match,
its rating and compliance EMA stay as they are, and for the next peer list it keeps the verdict of
its last evaluation (`Rotation.carried_successes`). Miners whose upload fails the cheap checks
(missing included) are judged by them alone and play every window as failures.

Copy sketch. The copy check among all of a window's uploads compares kept index positions. Keeping
every upload's positions costs 1/64 of the model per upload (19 M int64 positions at 1B), so each
upload keeps only the positions whose keyed hash falls below `rate` (consistent sampling: the same
positions of every upload), about `SKETCH_POSITIONS` of them; shared sampled positions / own sampled
positions estimates the overlap (sd ~0.003 at 8192 positions near the 0.9 threshold). The key is the
window's private seed, so a copier cannot know which of its positions are sampled. The gather set's
copy check (among the peers only, reproduced by every miner) stays exact.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

SKETCH_POSITIONS = 8192  # sampled kept positions per upload the copy check keeps (about; 64 KiB of int64)
_M1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser constants
_M2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class Rotation:
    """The rotation's state, persisted by the validator (`state_dict`).

    done: (uid, hotkey) evaluated in the current round.
    evaluated: uid -> (hotkey, window, success) of its last evaluation (success: the update counted).
    """

    done: frozenset[tuple[int, str]] = frozenset()
    evaluated: Mapping[int, tuple[str, int, bool]] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {"done": sorted([uid, hotkey] for uid, hotkey in self.done),
                "evaluated": {str(uid): list(v) for uid, v in sorted(self.evaluated.items())}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> Rotation:
        state = state or {}
        return cls(done=frozenset((int(u), str(h)) for u, h in state.get("done", [])),
                   evaluated={int(u): (str(v[0]), int(v[1]), bool(v[2]))
                              for u, v in (state.get("evaluated") or {}).items()})

    def is_newcomer(self, uid: int, hotkey: str) -> bool:
        last = self.evaluated.get(uid)
        return last is None or last[0] != hotkey

    def after(self, window: int, results: Mapping[int, tuple[str, bool]]) -> Rotation:
        """This state with `results` (uid -> (hotkey, success)) recorded as evaluated in `window`."""
        evaluated = dict(self.evaluated)
        evaluated.update({uid: (hotkey, window, ok) for uid, (hotkey, ok) in results.items()})
        return Rotation(done=self.done, evaluated=evaluated)

    def carried_successes(self, hotkeys: Mapping[int, str]) -> list[int]:
        """The uids among `hotkeys` (uid -> hotkey) whose last evaluation, under that hotkey, was a success."""
        return sorted(uid for uid, hk in hotkeys.items()
                      if (last := self.evaluated.get(uid)) is not None and last[0] == hk and last[2])


def rounds_bound(num_miners: int, k: int) -> int:
    """ceil(N / k): the most windows a round lasts (1 when everyone is evaluated every window)."""
    if k <= 0 or k >= num_miners:
        return 1
    return math.ceil(num_miners / k)


def draw_sample(candidates: Mapping[int, str], rotation: Rotation, *, k: int, seed: bytes
                ) -> tuple[list[int], Rotation]:
    """(the uids to evaluate, sorted; the rotation with them marked done) among `candidates` (uid -> hotkey).

    `k` <= 0 or >= len(candidates): every candidate, every window. `seed`: the window's private randomness.
    """
    if k < 0:
        raise ValueError(f"eval sample size must be >= 0, got {k}")
    if k == 0 or k >= len(candidates):
        return sorted(candidates), Rotation(done=frozenset(), evaluated=rotation.evaluated)
    rng = random.Random(hashlib.sha256(b"eval-sample:" + seed).digest())
    newcomers = [u for u in sorted(candidates) if rotation.is_newcomer(u, candidates[u])]
    pending = [u for u in sorted(candidates)
               if (u, candidates[u]) not in rotation.done and u not in set(newcomers)]
    rng.shuffle(newcomers)
    rng.shuffle(pending)
    order = newcomers + pending
    chosen = order[:k]
    done = set(rotation.done) | {(u, candidates[u]) for u in chosen}
    if len(order) <= k:  # the round is over: the rest of the draw opens the next one
        taken = set(chosen)
        rest = [u for u in sorted(candidates) if u not in taken]
        rng.shuffle(rest)
        extra = rest[:k - len(chosen)]
        chosen += extra
        done = {(u, candidates[u]) for u in extra}
    return sorted(chosen), Rotation(done=frozenset(done), evaluated=rotation.evaluated)


# -- copy sketch ---------------------------------------------------------------------------------


def expected_kept(shapes: Mapping[str, tuple[int, ...]], *, topk: int, chunk_size: int) -> int:
    """About how many positions an upload keeps: topk of every chunk_size**2 elements."""
    numel = sum(math.prod(s) for s in shapes.values())
    return max(1, round(numel * topk / (chunk_size * chunk_size)))


def sketch_rate(shapes: Mapping[str, tuple[int, ...]], *, topk: int, chunk_size: int,
                positions: int = SKETCH_POSITIONS) -> float:
    """The share of kept positions a sketch keeps (1.0: all, for a model small enough)."""
    return min(1.0, positions / expected_kept(shapes, topk=topk, chunk_size=chunk_size))


def keyed_hash(positions: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of each position xor `salt` (uint64): a keyed, well-mixed hash of int64 positions."""
    x = positions.astype(np.uint64) ^ np.uint64(salt)
    x *= _M1
    x ^= x >> np.uint64(31)
    x *= _M2
    x ^= x >> np.uint64(29)
    return x


def sketch_indices(indices: Mapping[str, torch.Tensor], *, seed: bytes, rate: float) -> dict[str, torch.Tensor]:
    """The kept positions of each tensor whose hash keyed by `seed` falls below `rate` (int64, a copy).

    Consistent: a position is in every upload's sketch or in none, so sketches compare like the full sets
    (`gauntlet.checks.index_overlap` takes them as they are)."""
    if not 0 < rate <= 1:
        raise ValueError(f"sketch rate must be in (0, 1], got {rate}")
    out = {}
    for name, ix in indices.items():
        flat = ix.reshape(-1).to(torch.int64)
        if rate >= 1.0:
            out[name] = flat.clone()
            continue
        salt = int.from_bytes(hashlib.sha256(seed + b"\0" + name.encode()).digest()[:8], "big")
        arr = flat.numpy()
        keep = keyed_hash(arr, salt) < np.uint64(min(int(rate * 2.0**64), 2**64 - 1))
        out[name] = torch.from_numpy(arr[keep].copy())
    return out
