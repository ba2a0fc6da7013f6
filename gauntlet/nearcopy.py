"""Near-copies across windows (issue 14, item 5): is an update mostly made of earlier revealed updates?

Sealed uploads make copying inside a window impossible, and an exact re-upload is a `replay`. What is
left to a copier is to take updates revealed in earlier windows (other miners' or its own), tweak them
(scale, noise, drop or re-quantize some values, mix several, add a little training of its own) and sign
the result as this window's work. This module scores that.

Sketch. Each admitted update is kept as a count sketch: its kept values (the positions the codec sent)
hashed into `SKETCH_DIM` signed buckets with a key only this validator knows, then scaled to unit
norm. A count sketch is linear and preserves inner products in expectation (sd about 1/sqrt(dim) for
the cosine), so it compares updates like the dense vectors do at 16 KiB per update instead of the
update itself; the private key means a copier cannot aim its tweaks at the sketch's collisions.

Similarity. `explained_fraction` is the share of an update's energy (squared norm) that a combination of
at most `max_terms` earlier updates of other miners accounts for, found greedily (orthogonal matching pursuit: take the
earlier update most aligned with what is still unexplained, re-fit on all taken, repeat). Scaling does
not change it; noise, dropped values and re-quantization lower it only as much as they replace the
copied content (to get under the default threshold 0.2 a copier must make four fifths of its update
something other than the copy); a mix of several updates is explained by their span, up to `max_terms` of them.
Measured on the tiny preset's honest updates (4 miners, 12 windows, the protocol codec, top-256 of
4096): at most 0.09 against the four previous windows (median 0.05; cosine to an earlier update of
another miner at most 0.26); in a 12-window network run at most 0.12 for the honest miners. Its own
earlier updates are not compared (see `find_near_copies`). Copies, re-encoded by the codec as a copier must: one earlier update scaled by 1.3 with
a fifth of its values dropped, 0.72-0.78; the mean of 4 or 8 earlier updates treated the same way, with
or without a quarter of own work, 0.47-0.61 (top-k of a mean keeps only part of each source, most where
the sources agree). What passes: a copy diluted to under a fifth of the update's energy, which is
then mostly the miner's own work.

A considered alternative compares only on the positions the suspect kept (a copy's values match its
source exactly there): it scores copies 0.89-0.98 but honest updates 0.36-0.50 (many earlier sparse
updates fit a few values each), and needs kept values, not a 16 KiB sketch, per earlier update.

Offender. The comparison is only ever against earlier windows, whose uploads were due before this
window opened, so the later uploader by trusted time is always the one judged now. Like `replay`, the
verdict depends on this validator's history (a late joiner has none), so it is a scoring finding, not
part of the gather set every node reproduces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from gauntlet.sampling import keyed_hash
from template.protocol.sparseloco import CodecParams, compress, decompress_with_indices

SKETCH_DIM = 4096  # buckets per sketch: 16 KiB of fp32, cosine error about 1/64
MAX_TERMS = 8  # earlier updates a near-copy may combine
# each window's applied aggregate step joins the history as this pseudo-uid and hotkey (no miner's), and stays
# AGGREGATE_KEEP_WINDOWS windows: it is public (anyone can echo it), one sketch (16 KiB) a window
AGGREGATE_UID = -1
AGGREGATE_HOTKEY = "aggregate"
AGGREGATE_KEEP_WINDOWS = 64


def _salt(key: bytes, name: str) -> int:
    return int.from_bytes(hashlib.sha256(key + b"\0near-copy\0" + name.encode()).digest()[:8], "big")


def sketch_update(update: Mapping[str, torch.Tensor], indices: Mapping[str, torch.Tensor], *, key: bytes,
                  dim: int = SKETCH_DIM) -> torch.Tensor:
    """The unit-norm count sketch (float32, `dim`) of an update's kept values (zeros if it has none).

    `update` is the dense decoded update, `indices` its flat kept positions per tensor (what admission
    returns). Each position of tensor `name` goes to bucket h(pos) mod dim with sign s(pos), both from
    one 64-bit hash keyed by `key` and the name."""
    if dim < 1:
        raise ValueError(f"sketch dim must be >= 1, got {dim}")
    sketch = torch.zeros(dim, dtype=torch.float64)
    for name in sorted(indices):
        pos = indices[name].reshape(-1).to(torch.int64)
        if pos.numel() == 0:
            continue
        values = update[name].reshape(-1)[pos].to(torch.float64)
        h = keyed_hash(pos.numpy(), _salt(key, name))
        bucket = torch.from_numpy((h % np.uint64(dim)).astype(np.int64))
        sign = torch.from_numpy(((h >> np.uint64(63)).astype(np.int64) * 2 - 1).astype(np.float64))
        sketch.index_add_(0, bucket, values * sign)
    norm = sketch.norm()
    if not torch.isfinite(norm) or norm == 0:
        return torch.zeros(dim, dtype=torch.float32)
    unit: torch.Tensor = (sketch / norm).to(torch.float32)
    return unit


def explained_fraction(sketch: torch.Tensor, earlier: torch.Tensor, *, max_terms: int = MAX_TERMS,
                       allowed: torch.Tensor | None = None) -> tuple[float, list[int]]:
    """(share of `sketch`'s energy in the span of at most `max_terms` rows of `earlier`, the rows used).

    `sketch` is one unit-norm sketch, `earlier` a (m, dim) matrix of unit-norm sketches; only rows where
    `allowed` (bool, m) is True are chosen, and never zero rows. Greedy orthogonal matching pursuit, in
    float64; the share is in [0, 1]."""
    s = sketch.to(torch.float64)
    energy = float(s @ s)
    if energy == 0 or earlier.shape[0] == 0:
        return 0.0, []
    rows = earlier.to(torch.float64)
    usable = rows.norm(dim=1) > 0
    if allowed is not None:
        usable &= allowed
    chosen: list[int] = []
    residual = s
    for _ in range(min(max_terms, int(usable.sum()))):
        alignment = (rows @ residual).abs()
        alignment[~usable] = -1.0
        if chosen:
            alignment[chosen] = -1.0
        best = int(alignment.argmax())
        if alignment[best] <= 1e-12:
            break  # nothing earlier is aligned with what is left
        chosen.append(best)
        basis = rows[chosen].T  # (dim, t)
        coef = torch.linalg.lstsq(basis, s.unsqueeze(1)).solution
        residual = s - (basis @ coef).squeeze(1)
    share = 1.0 - float(residual @ residual) / energy
    return min(max(share, 0.0), 1.0), chosen


@dataclass(frozen=True)
class SketchEntry:
    """Where one earlier sketch came from."""

    window: int
    uid: int
    hotkey: str


@dataclass(frozen=True)
class NearCopy:
    """One update's finding: the explained share and the earlier uploads that explain it, most first."""

    explained: float
    sources: tuple[SketchEntry, ...]


@dataclass(frozen=True)
class SketchHistory:
    """The sketches of the admitted updates of earlier windows (`sketches` row i is `entries[i]`)."""

    sketches: torch.Tensor  # (m, dim) float32, unit-norm rows
    entries: tuple[SketchEntry, ...]

    @classmethod
    def empty(cls, dim: int = SKETCH_DIM) -> SketchHistory:
        return cls(sketches=torch.zeros(0, dim, dtype=torch.float32), entries=())

    def __post_init__(self) -> None:
        if self.sketches.ndim != 2 or self.sketches.shape[0] != len(self.entries):
            raise ValueError(f"sketch history: {tuple(self.sketches.shape)} sketches for {len(self.entries)} entries")

    def before(self, window: int, keep_windows: int,
               keep_aggregate_windows: int = AGGREGATE_KEEP_WINDOWS) -> SketchHistory:
        """Only the sketches of windows in [window - keep_windows, window), and the aggregate steps' of windows in
        [window - keep_aggregate_windows, window)."""
        rows = [i for i, e in enumerate(self.entries)
                if window - (keep_aggregate_windows if e.uid == AGGREGATE_UID else keep_windows) <= e.window < window]
        return SketchHistory(sketches=self.sketches[rows], entries=tuple(self.entries[i] for i in rows))

    def with_aggregate(self, window: int, sketch: torch.Tensor) -> SketchHistory:
        """This history plus the sketch of `window`'s applied aggregate step (`aggregate_sketch`)."""
        keep = [i for i, e in enumerate(self.entries) if not (e.window == window and e.uid == AGGREGATE_UID)]
        rows = torch.cat([self.sketches[keep], sketch.to(torch.float32).reshape(1, -1)])
        entries = tuple(self.entries[i] for i in keep) + (SketchEntry(window, AGGREGATE_UID, AGGREGATE_HOTKEY),)
        return SketchHistory(sketches=rows, entries=entries)

    def with_window(self, window: int, sketches: Mapping[int, tuple[str, torch.Tensor]]) -> SketchHistory:
        """This history plus `window`'s sketches (uid -> (hotkey, sketch)), replacing any it held of it (the
        window's aggregate step stays)."""
        keep = [i for i, e in enumerate(self.entries) if e.window != window or e.uid == AGGREGATE_UID]
        uids = sorted(sketches)
        new = [sketches[u][1].to(torch.float32).reshape(1, -1) for u in uids]
        rows = torch.cat([self.sketches[keep], *new]) if new else self.sketches[keep]
        entries = tuple(self.entries[i] for i in keep) + tuple(SketchEntry(window, u, sketches[u][0]) for u in uids)
        return SketchHistory(sketches=rows, entries=entries)


def aggregate_sketch(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], *, lr: float,
                     codec: CodecParams, key: bytes, dim: int = SKETCH_DIM) -> torch.Tensor:
    """The sketch of a window's applied aggregate step as a miner would echo it: (theta_w - theta_{w+1}) / lr (a
    miner's delta), encoded by the protocol codec (no error feedback), over the positions the codec keeps."""
    delta = {n: (before[n].detach().to("cpu", torch.float32) - after[n].detach().to("cpu", torch.float32)) / lr
             for n in before}
    wire, _ = compress(delta, None, codec, 0.0)
    dense, indices = decompress_with_indices(wire, {n: tuple(t.shape) for n, t in delta.items()}, codec)
    return sketch_update(dense, indices, key=key, dim=dim)


def find_near_copies(sketches: Mapping[int, tuple[str, torch.Tensor]], history: SketchHistory, *, threshold: float,
                     max_terms: int = MAX_TERMS) -> tuple[dict[int, NearCopy], dict[int, float]]:
    """(uid -> NearCopy for every update whose explained share by other miners' updates in `history` is at
    least `threshold`, uid -> explained share for every update). `sketches`: uid -> (hotkey, sketch);
    `history` must hold earlier windows only.

    A miner's own earlier updates are left out: an honest miner that skipped a window sends much of its
    error-feedback backlog next time, which resembles what it sent before (measured up to 0.19 in a
    network run), and resending its own work unchanged is a `replay` already."""
    found: dict[int, NearCopy] = {}
    shares: dict[int, float] = {}
    earlier = history.sketches.to(torch.float64)  # once, not per update (explained_fraction works in float64)
    for uid in sorted(sketches):
        hotkey, sketch = sketches[uid]
        others = torch.tensor([not (e.uid == uid and e.hotkey == hotkey) for e in history.entries], dtype=torch.bool)
        share, rows = explained_fraction(sketch, earlier, max_terms=max_terms, allowed=others)
        shares[uid] = share
        if rows and share >= threshold:
            found[uid] = NearCopy(explained=share, sources=tuple(history.entries[i] for i in rows))
    return found, shares
