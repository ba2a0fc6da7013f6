"""SparseLoCo codec variants for the convergence ablations (scripts/bench_convergence.py --quantizer/--dense-1d).

The protocol codec (template/protocol/sparseloco.py) is one fixed scheme; an ablation swaps one of its parts and
keeps the rest: the same error feedback, the same chunk plan and per-chunk top-k, the same outer step. Updates
travel as dense tensors in-process (no wire); the bytes reported are what the variant's wire would hold, with
the same safetensors framing (a header per tensor) as the real codec.

Quantizers of the kept values (M,) of one tensor, each -> the decoded values:

- ``ours``: the protocol's (``sparseloco.quantize``): sign x {below, at or above the lower median of |v|},
  4-entry table of bin means.
- ``tplr``: the paper's reference code (templar ``TopKCompressor._quantize_values``, 2 bits, 6 sigma): centre
  on the mean, bins of width 1.5 sigma around it, ``round(c / (1.5 sigma) + 2)`` clamped to 0..3, table of
  bin means. Bin 2 holds everything within 0.75 sigma of the mean, both signs.
- ``range``: uniform levels over the range, ``max|v| x {-1, -1/3, 1/3, 1}``, nearest level.
- ``fp32``: no quantization (4 bytes per kept value): the ceiling any 2-bit scheme can reach.

``dense_1d``: tensors with fewer than 2 dims (the RMSNorm gains) are sent whole in fp32 and their error
feedback emptied, instead of 1 of every 64 values (the protocol's 1-D rule).

``outer_momentum``: the outer step as Nesterov SGD (DiLoCo's outer optimizer) over the network's clipped mean,
instead of plain SGD; the momentum buffer is state every node would have to keep and agree on.
"""

from __future__ import annotations

import math
from typing import Any

import safetensors.torch
import torch

from template.protocol.baselines import Params, SparseLoCo, WorkerState
from template.protocol.sparseloco import (
    CodecParams,
    accumulate_error,
    chunk_magnitudes,
    chunk_plan,
    flat_positions,
    quantize,
)

QUANTIZERS = ("ours", "tplr", "range", "fp32")


def quantize_tplr(values: torch.Tensor) -> torch.Tensor:
    """The paper's reference 2-bit scheme (mean/std range, bin means): decoded values."""
    shift = values.mean()
    centered = values - shift
    std = centered.norm() / math.sqrt(max(1, centered.numel() - 1))
    scale = 6.0 * std / 4
    if not bool(torch.isfinite(scale)) or float(scale) == 0.0:
        scale = torch.tensor(1.0)
    codes = (centered / scale + 2).round().clamp(0, 3).long()
    counts = torch.bincount(codes, minlength=4)
    sums = torch.bincount(codes, weights=centered.double(), minlength=4)
    table = torch.where(counts > 0, sums / counts.clamp(min=1), 0.0).float() + shift
    return table.index_select(0, codes)


def quantize_range(values: torch.Tensor) -> torch.Tensor:
    """Uniform 2-bit levels max|v| x {-1, -1/3, 1/3, 1}, nearest level: decoded values."""
    top = values.abs().max()
    if float(top) == 0.0:
        return torch.zeros_like(values)
    codes = ((values / top + 1) * 1.5).round().clamp(0, 3)
    return (codes / 1.5 - 1) * top


def quantize_ours(values: torch.Tensor) -> torch.Tensor:
    codes, table = quantize(values)
    return table.index_select(0, codes)


DECODED = {"ours": quantize_ours, "tplr": quantize_tplr, "range": quantize_range, "fp32": lambda v: v.clone()}


def variant_wire_layout(name: str, shape: tuple[int, ...], codec: CodecParams, quantizer: str, dense_1d: bool
                        ) -> dict[str, torch.Tensor]:
    """Zero tensors of the sizes the variant's wire would carry for one tensor (for the byte count)."""
    if dense_1d and len(shape) < 2:
        return {name + "::dense": torch.zeros(max(1, math.prod(shape)), dtype=torch.float32)}
    plan = chunk_plan(shape, codec)
    values = (torch.zeros(plan.num_kept, dtype=torch.float32) if quantizer == "fp32"
              else torch.zeros(-(-2 * plan.num_kept // 8), dtype=torch.uint8))
    out = {name + "::idx": torch.zeros(plan.index_bytes, dtype=torch.uint8), name + "::values": values}
    if quantizer != "fp32":
        out[name + "::table"] = torch.zeros(4, dtype=torch.float32)
    return out


def encode_dense(e: torch.Tensor, codec: CodecParams, quantizer: str, dense_1d: bool) -> torch.Tensor:
    """Send from the error-feedback buffer ``e`` (contiguous fp32, updated in place): the decoded dense update."""
    if dense_1d and e.dim() < 2:
        sent = e.clone()
        e.zero_()
        return sent
    plan = chunk_plan(tuple(e.shape), codec)
    e2d, e_flat = e.view(plan.rows, plan.cols), e.view(-1)
    flat = torch.cat([
        flat_positions(torch.topk(chunk_magnitudes(e2d, g), g.k, dim=1, sorted=False).indices, g, plan.cols)
        .reshape(-1) for g in plan.groups
    ])
    values = e_flat.index_select(0, flat)
    decoded = DECODED[quantizer](values)
    e_flat.index_copy_(0, flat, values - decoded)
    out = torch.zeros_like(e_flat)
    out.index_copy_(0, flat, decoded)
    return out.view(e.shape)


class SparseLoCoVariant(SparseLoCo):
    """The SparseLoCo adapter with one codec part swapped (see module docstring); same EF, top-k and clip."""

    def __init__(self, codec: CodecParams, error_feedback_beta: float, outer_lr: float, *, quantizer: str,
                 dense_1d: bool, clip: str = "history", norm_growth: float = 2.0, outer_momentum: float = 0.0
                 ) -> None:
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
        if not 0.0 <= outer_momentum < 1.0:
            raise ValueError(f"outer_momentum must be in [0, 1), got {outer_momentum}")
        super().__init__(codec, error_feedback_beta, outer_lr, clip=clip, norm_growth=norm_growth)
        self.quantizer, self.dense_1d, self.outer_momentum = quantizer, dense_1d, outer_momentum
        self.wire_bytes: int | None = None
        self.momentum_buffer: Params = {}

    def worker_payload(self, worker_state: WorkerState, update: Params) -> tuple[Any, int]:
        ef = worker_state.setdefault("error_feedback", {})
        sent: Params = {}
        for name in sorted(update):
            d = update[name].detach()
            e = accumulate_error(name, d, ef if name in ef else None, self.error_feedback_beta)
            ef[name] = e
            sent[name] = encode_dense(e, self.codec, self.quantizer, self.dense_1d)
        if self.wire_bytes is None:
            layout: dict[str, torch.Tensor] = {}
            for name in sorted(update):
                layout.update(variant_wire_layout(name, tuple(update[name].shape), self.codec, self.quantizer,
                                                  self.dense_1d))
            self.wire_bytes = len(safetensors.torch.save(layout))
        return sent, self.wire_bytes

    def decode(self, payload: Any, shapes: dict[str, tuple[int, ...]]) -> Params:
        return payload

    @torch.no_grad()
    def apply(self, global_params: Params, payloads: list[Any], lr_scale: float = 1.0) -> dict[str, float]:
        if not self.outer_momentum:
            return super().apply(global_params, payloads, lr_scale)
        before = {name: p.clone() for name, p in global_params.items()}
        stats = super().apply(global_params, payloads, lr_scale)
        # the plain step just taken (outer lr x clipped mean), redone as Nesterov: g + mu * (mu * buf + g)
        for name, param in global_params.items():
            step = before[name] - param
            buf = self.momentum_buffer.get(name)
            buf = step.clone() if buf is None else buf.mul_(self.outer_momentum).add_(step)
            self.momentum_buffer[name] = buf
            param.copy_(before[name] - step - self.outer_momentum * buf)
        return stats
