"""The outer step of DESIGN 4.1: apply the decoded updates of a gather set to theta.

Per tensor, clip each peer's update to a limit, average per coordinate, ``theta <- theta - lr * avg``.
The limit is robust to a gather set that is up to half hostile: the *lower* median of the peers'
norms (with k of n peers hostile, k <= n/2, it is at most the largest honest norm, whatever the
hostile norms), held within a factor ``norm_growth`` of the previous step's limit (the norm history
every node carries from step to step, so a window's peers cannot move the limit by more than that
factor, up or down, however they are mixed), and never below the clip floor: ``CLIP_FLOOR_FRACTION`` x
the median of the tensor's last ``CLIP_HISTORY_LEN`` applied limits (its clip history). The growth clamp
alone lets a standing coalition of tiny updates halve the limit every window, compounding until honest
updates are clipped to nothing; the floor makes it take about half the history's length per halving
(issue 27). It is bit-reproducible on CPU fp32 independent of thread count and
CPU vector width: norms are float64 numpy pairwise sums, and every tensor op rounds once (no fused
multiply-add), so every node that applies the same updates in the same order holds the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NORM_SLICE = 1 << 20  # elements squared per step in l2_norm (bounds its float64 scratch to 8 MiB)
CLIP_HISTORY_LEN = 16  # applied limits per tensor the clip floor is taken over (and a checkpoint carries)
CLIP_FLOOR_FRACTION = 0.5  # the limit stays >= this share of the median of the tensor's clip history

ClipHistory = Mapping[str, tuple[float, ...]]  # tensor name -> its last applied limits, oldest first


def l2_norm(t: torch.Tensor) -> float:
    """L2 norm with a fixed summation order: float64 numpy pairwise sums over fixed 1M-element slices, added in
    order. Unlike torch's reductions it does not depend on the thread count or the CPU's vector width."""
    a = t.detach().to("cpu", torch.float32).contiguous().numpy().reshape(-1)
    scratch = np.empty(min(a.size, NORM_SLICE), dtype=np.float64)
    total = 0.0
    for start in range(0, a.size, NORM_SLICE):
        part = a[start:start + NORM_SLICE]
        squares = np.square(part, out=scratch[:part.size], dtype=np.float64)
        total += float(np.sum(squares))
    return math.sqrt(total)


def median(values: list[float]) -> float:
    """The statistical median (mean of the two middle values for an even count)."""
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def lower_median(values: list[float]) -> float:
    """The lower middle value (``sorted[(n - 1) // 2]``): with at most half the values hostile and large, an honest one."""
    if not values:
        raise ValueError("lower_median of no values")
    return sorted(values)[(len(values) - 1) // 2]


def clip_floor(history: Sequence[float], floor_fraction: float = CLIP_FLOOR_FRACTION) -> float:
    """The lowest clip limit a tensor may get: `floor_fraction` x the median of its clip `history` (0: none
    when the history is empty)."""
    return floor_fraction * median(list(history)) if history else 0.0


def clip_limit(norms: list[float], ref: float | None, growth: float, history: Sequence[float] = ()) -> float:
    """The clip limit of one tensor: the lower median of `norms`, clamped to [ref / growth, ref * growth]
    when the previous step's limit `ref` is known (a finite value > 0), and then raised to the clip floor of
    its `history` (`clip_floor`) when below it."""
    limit = lower_median(norms)
    if ref is not None and math.isfinite(ref) and ref > 0:
        limit = min(max(limit, ref / growth), ref * growth)
    return max(limit, clip_floor(history))


def history_after(history: ClipHistory, limits: Mapping[str, float]) -> dict[str, tuple[float, ...]]:
    """The clip history once a step with `limits` is applied: each tensor's limit appended, the newest
    `CLIP_HISTORY_LEN` kept (a refused step must leave the history as it was: do not call this for it)."""
    return {name: (*history.get(name, ()), float(limit))[-CLIP_HISTORY_LEN:] for name, limit in sorted(limits.items())}


def _history_of(history: ClipHistory | None, name: str) -> tuple[float, ...]:
    return () if history is None else history.get(name, ())


def clip_scale(norm: float, limit: float) -> float:
    return limit / norm if norm > limit else 1.0


def clip_limits(updates: list[dict[str, torch.Tensor]], clip_ref: dict[str, float] | None = None,
                norm_growth: float = 2.0, clip_history: ClipHistory | None = None) -> dict[str, float]:
    """{name: limit} exactly as `outer_step` would clip these updates (all of them used), for scoring an
    update as aggregation will apply it. Empty when there are no updates."""
    if not updates:
        return {}
    return {name: clip_limit([l2_norm(u[name]) for u in updates], None if clip_ref is None else clip_ref.get(name),
                             norm_growth, _history_of(clip_history, name)) for name in sorted(updates[0])}


def clip_update(update: dict[str, torch.Tensor], limits: dict[str, float]) -> dict[str, torch.Tensor]:
    """`update` with each tensor scaled down to its limit (tensors without a limit unchanged): what the
    outer step adds for it, before the average. Scaling an update up therefore buys nothing past the limit."""
    out = {}
    for name, t in update.items():
        scale = clip_scale(l2_norm(t), limits[name]) if name in limits else 1.0
        out[name] = t * scale if scale != 1.0 else t
    return out


def check_step_inputs(params: dict[str, torch.Tensor], norm_growth: float) -> None:
    """ValueError unless `norm_growth` is finite and >= 1 and every parameter is a CPU fp32 tensor (the step
    is defined on CPU fp32 only, so every node gets the same bits)."""
    if not (norm_growth >= 1 and math.isfinite(norm_growth)):
        raise ValueError(f"norm_growth must be a finite number >= 1, got {norm_growth}")
    for name, p in params.items():
        if p.dtype != torch.float32 or p.device.type != "cpu":
            raise ValueError(f"params[{name!r}] must be CPU float32 (got {p.dtype} on {p.device}); "
                             "copy the model to CPU fp32 for the outer step")


def outer_step(params: dict[str, torch.Tensor], updates: list[dict[str, torch.Tensor]], lr: float, *,
               clip_ref: dict[str, float] | None = None, norm_growth: float = 2.0,
               clip_history: ClipHistory | None = None) -> dict[str, Any]:
    """The outer SGD step of DESIGN 4.1, in place on ``params`` (CPU fp32).

    A peer's update is skipped entirely if it lacks a tensor, has a wrong shape or holds a non-finite value.
    Per tensor: each used peer's update is scaled down to the limit (`clip_limit`: the lower median of the
    used peers' L2 norms, within `norm_growth` of ``clip_ref[name]``, the previous step's limit, and at least
    the floor of ``clip_history[name]``), the scaled updates are summed in list order and divided by the peer
    count, and ``p -= lr * avg`` (a tensor whose result is not finite is left untouched). Bit-identical for
    identical inputs, order, `clip_ref` and `clip_history`.

    Returns {"used": n, "skipped": m, "clip_norms": {name: limit} (the next step's `clip_ref`),
    "skipped_tensors": [names]}; the caller appends clip_norms to the history (`history_after`).
    Raises ValueError if a parameter is not a CPU fp32 tensor (the step is defined on CPU fp32 only).
    """
    check_step_inputs(params, norm_growth)
    used: list[dict[str, torch.Tensor]] = []
    for upd in updates:
        ok = all(n in upd and tuple(upd[n].shape) == tuple(p.shape) for n, p in params.items())
        if ok and all(bool(torch.isfinite(upd[n]).all()) for n in params):
            used.append(upd)
    stats: dict[str, Any] = {"used": len(used), "skipped": len(updates) - len(used), "clip_norms": {},
                             "skipped_tensors": []}
    if not used:
        return stats
    for name in sorted(params):
        p = params[name]
        peer_tensors = [u[name].detach().to("cpu", torch.float32) for u in used]
        norms = [l2_norm(t) for t in peer_tensors]
        limit = clip_limit(norms, None if clip_ref is None else clip_ref.get(name), norm_growth,
                           _history_of(clip_history, name))
        stats["clip_norms"][name] = limit
        step = torch.zeros_like(p, dtype=torch.float32)
        for t, norm in zip(peer_tensors, norms, strict=True):
            scale = clip_scale(norm, limit)
            # separate mul and add (one rounding each): no FMA, so every CPU gets the same bits
            step.add_(t * scale if scale != 1.0 else t)
        step.div_(len(used)).mul_(lr)  # (sum / n) * lr
        if not bool(torch.isfinite(step).all()):
            stats["skipped_tensors"].append(name)
            continue
        p.sub_(step)
    return stats


@dataclass(frozen=True)
class StreamedUpdates:
    """A gather set to apply one update at a time (`outer_step_streamed`): `norms[i]` are update i's per-tensor
    `l2_norm`s, `load(i)` gives its tensors (e.g. decoded again from the upload's bytes)."""

    norms: list[dict[str, float]]
    load: Callable[[int], dict[str, torch.Tensor]]

    def __len__(self) -> int:
        return len(self.norms)


def outer_step_streamed(params: dict[str, torch.Tensor], norms: list[dict[str, float]],
                        load: Callable[[int], dict[str, torch.Tensor]], lr: float, *,
                        clip_ref: dict[str, float] | None = None, norm_growth: float = 2.0,
                        clip_history: ClipHistory | None = None) -> dict[str, Any]:
    """`outer_step` over updates loaded one at a time: `load(i)` gives update i (i ascending, each once) and
    `norms[i]` its per-tensor `l2_norm`s, known before (at admission). Holds one update and one step
    accumulator (2 x the model) instead of every update (issue 18: the gather set was num_peers x the model).

    The same result bits and statistics as `outer_step(params, [load(i) for i in ...])`: an update is used
    when its norms name every parameter and are finite (a non-finite value makes its norm non-finite), the
    limits come from the used updates' norms, and each tensor's step adds the scaled updates in list order
    with the same single-rounding ops. Raises ValueError for a used update whose tensors do not match `params`
    (norms claimed a valid update) and for a parameter that is not CPU fp32."""
    check_step_inputs(params, norm_growth)
    used = [i for i, n in enumerate(norms) if all(name in n and math.isfinite(n[name]) for name in params)]
    stats: dict[str, Any] = {"used": len(used), "skipped": len(norms) - len(used), "clip_norms": {},
                             "skipped_tensors": []}
    if not used:
        return stats
    limits = {name: clip_limit([norms[i][name] for i in used], None if clip_ref is None else clip_ref.get(name),
                               norm_growth, _history_of(clip_history, name)) for name in sorted(params)}
    stats["clip_norms"] = limits
    steps = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    for i in used:
        update = load(i)
        for name in sorted(params):
            t = update[name].detach().to("cpu", torch.float32) if name in update else None
            if t is None or tuple(t.shape) != tuple(params[name].shape):
                raise ValueError(f"update {i} does not match params[{name!r}] though its norms say it does")
            scale = clip_scale(norms[i][name], limits[name])
            steps[name].add_(t * scale if scale != 1.0 else t)  # as outer_step: one rounding each, list order
        del update
    for name in sorted(params):
        step = steps.pop(name)
        step.div_(len(used)).mul_(lr)  # (sum / n) * lr
        if not bool(torch.isfinite(step).all()):
            stats["skipped_tensors"].append(name)
            continue
        params[name].sub_(step)
    return stats
