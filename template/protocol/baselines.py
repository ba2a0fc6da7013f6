"""Synchronisation methods SparseLoCo is measured against, behind one small interface.

A ``SyncMethod`` turns what one worker computed into a payload (and says how many bytes it would put on
the wire), then applies the payloads of all workers to the shared global parameters. Four methods:

- ``DataParallelAdamW`` (DDP): every step, average the dense fp32 gradients, one AdamW step.
- ``DiLoCo``: every H inner steps, average the dense fp32 pseudo-gradients, outer Nesterov SGD.
- ``DeMo``: every step, momentum -> DCT per chunk -> top-k per chunk is sent and removed from the
  momentum; the aggregate is the inverse DCT of the averaged components, signed, SGD step.
- ``SparseLoCo``: adapter over ``template.protocol.sparseloco`` (error feedback + chunked top-k + 2-bit values,
  the network's clip with norm history by default, average, outer SGD).

Conventions: the pseudo-gradient is ``delta = theta_start - theta_after_inner_steps`` (so ``theta -= lr
* delta`` moves toward the workers); ``worker_state`` is a per-worker dict the method owns (error
feedback, momentum); global optimizer state (outer momentum, Adam moments) lives on the method object
because every node holds the same copy. All tensor math here is pure torch with no I/O.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Protocol

import safetensors.torch
import torch

from template.protocol.outer_step import history_after, outer_step
from template.protocol.sparseloco import CodecParams, compress, decompress

Params = dict[str, torch.Tensor]
WorkerState = dict[str, Any]


class SyncMethod(Protocol):
    """What the convergence benchmark (and any other driver) needs from a synchronisation method."""

    name: str
    # "step": the worker sends its gradient every step; "outer": its pseudo-gradient every H steps
    sync_every: str

    def worker_payload(self, worker_state: WorkerState, update: Params) -> tuple[Any, int]:
        """Encode one worker's gradient / pseudo-gradient; returns (payload, bytes on the wire)."""
        ...

    def apply(self, global_params: Params, payloads: list[Any], lr_scale: float = 1.0) -> dict[str, float]:
        """Apply all workers' payloads to ``global_params`` in place; returns summary stats."""
        ...


def dense_nbytes(tensors: Params) -> int:
    """Bytes of the tensors sent densely as fp32."""
    return sum(t.numel() * 4 for t in tensors.values())


def average(payloads: list[Params]) -> Params:
    """Coordinate-wise mean of same-keyed tensor dicts, in fp32."""
    if not payloads:
        raise ValueError("need at least one payload to average")
    return {name: torch.stack([p[name].float() for p in payloads]).mean(0) for name in payloads[0]}


# ----------------------------------------------------------------------------------------------- DDP


def adamw_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """One AdamW step in place (the same arithmetic as ``torch.optim.AdamW``); ``step`` starts at 1."""
    beta1, beta2 = betas
    param.mul_(1 - lr * weight_decay)  # decoupled weight decay
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


class DataParallelAdamW:
    """Plain data parallel: all workers' dense fp32 gradients averaged every step, then AdamW."""

    name = "ddp"
    sync_every = "step"

    def __init__(
        self, lr: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0
    ) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.step = 0
        self.exp_avg: Params = {}
        self.exp_avg_sq: Params = {}

    def worker_payload(self, worker_state: WorkerState, update: Params) -> tuple[Params, int]:
        grads = {name: g.detach().float().clone() for name, g in update.items()}
        return grads, dense_nbytes(grads)

    @torch.no_grad()
    def apply(self, global_params: Params, payloads: list[Params], lr_scale: float = 1.0) -> dict[str, float]:
        mean_grad = average(payloads)
        self.step += 1
        for name, param in global_params.items():
            if name not in self.exp_avg:
                self.exp_avg[name] = torch.zeros_like(param, dtype=torch.float32)
                self.exp_avg_sq[name] = torch.zeros_like(param, dtype=torch.float32)
            adamw_step(
                param, mean_grad[name].to(param.device), self.exp_avg[name], self.exp_avg_sq[name],
                self.step, self.lr * lr_scale, self.betas, self.eps, self.weight_decay,
            )
        return {"grad_norm": float(torch.sqrt(sum((g.pow(2).sum() for g in mean_grad.values()), torch.zeros(()))))}


# -------------------------------------------------------------------------------------------- DiLoCo


class DiLoCo:
    """DiLoCo (Douillard et al. 2023): dense fp32 pseudo-gradients averaged, outer Nesterov SGD.

    Outer update with momentum mu: ``m = mu * m + avg; theta -= lr * (avg + mu * m)`` (torch SGD with
    nesterov=True). With mu = 0 it is plain SGD on the averaged pseudo-gradient."""

    name = "diloco"
    sync_every = "outer"

    def __init__(self, outer_lr: float = 0.7, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.outer_lr, self.momentum = outer_lr, momentum
        self.momentum_buffer: Params = {}

    def worker_payload(self, worker_state: WorkerState, update: Params) -> tuple[Params, int]:
        delta = {name: d.detach().float().clone() for name, d in update.items()}
        return delta, dense_nbytes(delta)

    @torch.no_grad()
    def apply(self, global_params: Params, payloads: list[Params], lr_scale: float = 1.0) -> dict[str, float]:
        mean_delta = average(payloads)
        for name, param in global_params.items():
            pseudo_grad = mean_delta[name].to(param.device)
            if self.momentum > 0:
                buffer = self.momentum_buffer.get(name)
                buffer = pseudo_grad.clone() if buffer is None else buffer.mul_(self.momentum).add_(pseudo_grad)
                self.momentum_buffer[name] = buffer
                pseudo_grad = pseudo_grad.add(buffer, alpha=self.momentum)
            param.sub_(pseudo_grad.to(param.dtype), alpha=self.outer_lr * lr_scale)
        return {"delta_norm": float(torch.sqrt(sum((d.pow(2).sum() for d in mean_delta.values()), torch.zeros(()))))}


# ---------------------------------------------------------------------------------------------- DeMo


@functools.lru_cache(maxsize=32)
def dct_matrix(size: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix (size, size): coefficients = D @ x, inverse x = D.T @ coefficients."""
    n = torch.arange(size, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * math.sqrt(2.0 / size)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n that is <= limit (block sides must tile the tensor exactly)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def block_layout(shape: tuple[int, ...], chunk_size: int) -> tuple[int, int, int, int]:
    """(rows, cols, block_rows, block_cols) of the 2-D view DeMo tiles: a 1-D tensor is one row,
    an n-D tensor is (shape[0], rest); each block side is the largest divisor <= chunk_size."""
    rows = shape[0] if len(shape) > 1 else 1
    cols = math.prod(shape) // rows
    return rows, cols, largest_divisor_at_most(rows, chunk_size), largest_divisor_at_most(cols, chunk_size)


def dct_blocks(tensor: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """2-D DCT-II of every block: returns (num_blocks, block_rows * block_cols) coefficients."""
    rows, cols, block_rows, block_cols = block_layout(tuple(tensor.shape), chunk_size)
    blocks = tensor.float().reshape(rows // block_rows, block_rows, cols // block_cols, block_cols)
    row_basis, col_basis = dct_matrix(block_rows), dct_matrix(block_cols)
    coefficients = torch.einsum("ij,ajbk,lk->abil", row_basis, blocks, col_basis)  # (nR, nC, br, bc)
    return coefficients.reshape(-1, block_rows * block_cols)


def idct_blocks(coefficients: torch.Tensor, shape: tuple[int, ...], chunk_size: int) -> torch.Tensor:
    """Inverse of ``dct_blocks``: (num_blocks, block_rows * block_cols) coefficients -> tensor of ``shape``."""
    rows, cols, block_rows, block_cols = block_layout(tuple(shape), chunk_size)
    grid = coefficients.reshape(rows // block_rows, cols // block_cols, block_rows, block_cols)
    row_basis, col_basis = dct_matrix(block_rows), dct_matrix(block_cols)
    blocks = torch.einsum("ji,abjl,lk->aibk", row_basis, grid, col_basis)  # (nR, br, nC, bc)
    return blocks.reshape(shape)


def topk_per_block(coefficients: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (int16) and values (fp32) of the k largest-magnitude coefficients of every block
    (k is capped at the block size, so small tensors are sent whole)."""
    k = min(k, coefficients.shape[-1])
    indices = coefficients.abs().topk(k, dim=-1, sorted=False).indices
    return indices.to(torch.int16), coefficients.gather(-1, indices)


class DeMo:
    """DeMo (Peng, Quesnelle & Kingma 2024), the per-step decoupled-momentum optimizer.

    Per worker and step: ``m = decay * m + g``; 2-D DCT of each block (up to chunk_size x chunk_size)
    of m; send the top-k components of every block and subtract them (inverse DCT) from m. Aggregate:
    mean of the sent components over the workers that sent each one, inverse DCT, sign, then
    ``theta -= lr * sign`` with decoupled weight decay (the reference implementation's defaults:
    chunk 64, top-k 32, decay 0.999). Indices travel as int16 (a block has <= 4096 entries), values fp32."""

    name = "demo"
    sync_every = "step"

    def __init__(
        self, lr: float, chunk_size: int = 64, topk: int = 32, momentum_decay: float = 0.999,
        weight_decay: float = 0.0,
    ) -> None:
        if not 0 < topk <= chunk_size * chunk_size:
            raise ValueError(f"topk must be in [1, chunk_size**2={chunk_size**2}], got {topk}")
        if chunk_size * chunk_size > 2**15:
            raise ValueError(f"chunk_size must be <= 181 so indices fit in int16, got {chunk_size}")
        self.lr, self.chunk_size, self.topk = lr, chunk_size, topk
        self.momentum_decay, self.weight_decay = momentum_decay, weight_decay

    def worker_payload(
        self, worker_state: WorkerState, update: Params
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int]:
        payload: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        nbytes = 0
        for name, grad in update.items():
            momentum = worker_state.get(name)
            grad = grad.detach().float()
            momentum = grad.clone() if momentum is None else momentum.mul_(self.momentum_decay).add_(grad)
            coefficients = dct_blocks(momentum, self.chunk_size)
            indices, values = topk_per_block(coefficients, self.topk)
            sent = torch.zeros_like(coefficients).scatter_(-1, indices.long(), values)
            # what was sent leaves the momentum; the rest keeps accumulating (decoupled momentum)
            worker_state[name] = momentum.sub_(idct_blocks(sent, tuple(momentum.shape), self.chunk_size))
            payload[name] = (indices, values)
            nbytes += indices.numel() * indices.element_size() + values.numel() * values.element_size()
        return payload, nbytes

    def aggregate(
        self, payloads: list[dict[str, tuple[torch.Tensor, torch.Tensor]]], name: str, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """Dense fp32 aggregate of one tensor: inverse DCT of the per-coefficient mean over senders."""
        rows, cols, block_rows, block_cols = block_layout(shape, self.chunk_size)
        num_blocks = (rows // block_rows) * (cols // block_cols)
        sums = torch.zeros(num_blocks, block_rows * block_cols)
        counts = torch.zeros(num_blocks, block_rows * block_cols)
        for payload in payloads:
            indices, values = payload[name]
            sums.scatter_add_(-1, indices.long(), values.float())
            counts.scatter_add_(-1, indices.long(), torch.ones_like(values, dtype=torch.float32))
        return idct_blocks(sums / counts.clamp(min=1), shape, self.chunk_size)

    @torch.no_grad()
    def apply(self, global_params: Params, payloads: list[Any], lr_scale: float = 1.0) -> dict[str, float]:
        lr = self.lr * lr_scale
        for name, param in global_params.items():
            direction = self.aggregate(payloads, name, tuple(param.shape)).sign()
            param.mul_(1 - lr * self.weight_decay).sub_(direction.to(param.device, param.dtype), alpha=lr)
        return {"lr": lr}


# ----------------------------------------------------------------------------------------- SparseLoCo


CLIP_MODES = ("history", "window", "none")


class SparseLoCo:
    """Adapter over ``template.protocol.sparseloco``: error-feedback top-k 2-bit pseudo-gradients, clipped
    average, outer SGD. Bytes are the exact safetensors wire size.

    ``clip`` picks the aggregation: "history" is the network's (``outer_step`` with the previous step's clip
    limits as ``clip_ref``, held within ``norm_growth``, and the clip floor of the applied limits' history: what
    template/node/sync.py does); "window" clips to
    the lower median of the step's own norms only (no history); "none" is the paper's plain mean."""

    name = "sparseloco"
    sync_every = "outer"

    def __init__(self, codec: CodecParams, error_feedback_beta: float, outer_lr: float, clip: str = "history",
                 norm_growth: float = 2.0) -> None:
        if clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {', '.join(CLIP_MODES)}, got {clip!r}")
        self.codec, self.error_feedback_beta, self.outer_lr = codec, error_feedback_beta, outer_lr
        self.clip, self.norm_growth = clip, norm_growth
        self.clip_ref: dict[str, float] | None = None  # the norm history: the previous step's clip limits
        self.clip_history: dict[str, tuple[float, ...]] = {}  # the applied limits the clip floor is taken over

    def worker_payload(self, worker_state: WorkerState, update: Params) -> tuple[Any, int]:
        wire, worker_state["error_feedback"] = compress(
            update, worker_state.get("error_feedback"), self.codec, self.error_feedback_beta
        )
        return wire, len(safetensors.torch.save(wire))

    def decode(self, payload: Any, shapes: dict[str, tuple[int, ...]]) -> Params:
        """One worker's payload -> dense fp32 update (strict wire decoding)."""
        return decompress(payload, shapes, self.codec)

    @torch.no_grad()
    def apply(self, global_params: Params, payloads: list[Any], lr_scale: float = 1.0) -> dict[str, float]:
        shapes = {name: tuple(param.shape) for name, param in global_params.items()}
        updates = [self.decode(payload, shapes) for payload in payloads]
        lr = self.outer_lr * lr_scale
        if self.clip == "none":
            mean_update = average(updates)
            for name, param in global_params.items():
                param.sub_(mean_update[name].to(param.device, param.dtype), alpha=lr)
            return {"used": float(len(updates)), "skipped": 0.0}
        history = self.clip_history if self.clip == "history" else None
        clip_ref = self.clip_ref if self.clip == "history" else None
        stats = outer_step(global_params, updates, lr, clip_ref=clip_ref, norm_growth=self.norm_growth,
                           clip_history=history)
        if stats["clip_norms"]:
            self.clip_ref = dict(stats["clip_norms"])
            self.clip_history = history_after(self.clip_history, stats["clip_norms"])
        return {"used": float(stats["used"]), "skipped": float(stats["skipped"])}

    def unsent(self, worker_states: list[WorkerState]) -> Params:
        """``outer_lr`` x the workers' mean error-feedback buffer: the step the mass still held back would
        make if it were all sent at once (a diagnostic of what a short run leaves unsent)."""
        buffers = [state["error_feedback"] for state in worker_states if "error_feedback" in state]
        if not buffers:
            return {}
        return {name: t * self.outer_lr for name, t in average(buffers).items()}
