"""Several processes on one box (`torchrun --nproc-per-node N neurons/miner.py ...`): FSDP2 sharding.

Rank 0 is the miner: it alone talks to the chain and to storage, holds theta_w and the error
feedback on its CPU, and encodes and uploads. Every window it broadcasts a command (the sample
tokens to train on, or stop) and then trains its shard like the others; the ranks > 0 run
`trainer_loop` and only ever train. A single process (no torchrun) never touches this module.

The sharded window is the single-process `train_inner_steps` split by rows: each rank takes its
contiguous slice of every step's batch, FSDP averages the gradients, so the H AdamW steps match the
single-process ones up to fp32 summation order (tests/unit/test_distributed.py checks it on CPU).
Nothing runs at import.
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from loguru import logger
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from tqdm import tqdm

from template.protocol.config import HParams
from template.protocol.model import Transformer, get_preset, rotary_tables

# Ranks > 0 wait for rank 0's next command through a whole window of chain waits, gathers and
# resyncs (and through storage or chain outages, which rank 0 rides out): the command channel gets
# its own gloo group with a timeout far beyond any window, so no NCCL watchdog fires while idle.
COMMAND_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank of world_size, and the device it trains on."""

    rank: int
    world_size: int
    device: torch.device
    control: Any = field(default=None, repr=False, compare=False)  # gloo group for commands (world > 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) without torchrun."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0"))


def resolve_device(device_name: str, world_size: int, local_rank: int) -> torch.device:
    """--device for this rank: under torchrun each rank owns cuda:LOCAL_RANK. Raises ValueError."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device_name == "auto" else device_name
    if world_size == 1:
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise ValueError(f"--device {device_name} cannot be sharded over {world_size} processes: under torchrun "
                         "each rank uses cuda:LOCAL_RANK, so pass --device cuda, auto or cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device_name: str) -> DistContext:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); world 1: a plain context, no group."""
    rank, world_size, local_rank = torchrun_env()
    device = resolve_device(device_name, world_size, local_rank)
    if world_size == 1:
        return DistContext(rank=0, world_size=1, device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    control = dist.new_group(backend="gloo", timeout=COMMAND_TIMEOUT)
    logger.debug(f"rank {rank} of {world_size} on {device}")
    return DistContext(rank=rank, world_size=world_size, device=device, control=control)


def shutdown(ctx: DistContext) -> None:
    if ctx.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def ignore_stop_signals() -> None:
    """Ranks > 0: Ctrl-C and SIGTERM go to rank 0, which finishes its step and then sends stop;
    a rank that died on the signal would leave rank 0 blocked in the next collective."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank (pickled over the gloo command group); the others pass None."""
    if ctx.world_size == 1:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, group=ctx.control)
    return box[0]


def parallelize_model(model: Transformer, ctx: DistContext) -> Transformer:
    """FSDP2 in place: each block is its own shard unit, then the root (embeddings, norm, output).
    On CUDA the compute runs in bf16 with fp32 gradient reduction (the single process autocasts to
    bf16); on CPU everything stays fp32."""
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if ctx.device.type == "cuda" else MixedPrecisionPolicy())
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def build_sharded_model(hp: HParams, ctx: DistContext) -> Transformer:
    """The run's architecture, sharded, without ever holding the full weights on any rank: built on
    the meta device, then each rank allocates its shard. Weights are garbage until the first
    `load_full_state_dict` (every window loads theta_w)."""
    config = replace(get_preset(hp.model_preset), vocab_size=hp.vocab_size, max_seq_len=hp.seq_len)
    with torch.device("meta"):
        model = Transformer(config)
    parallelize_model(model, ctx)
    model.to_empty(device=ctx.device)
    cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
    with torch.no_grad():  # non-persistent buffers: to_empty left them uninitialised
        model.rope_cos.copy_(cos)
        model.rope_sin.copy_(sin)
    return model


def load_full_state_dict(model: nn.Module, full: dict[str, torch.Tensor], ctx: DistContext) -> None:
    """Copy rank 0's full (CPU) state dict into the shards of every rank; the others pass {}."""
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    # a copy: set_model_state_dict replaces the dict's values with the distributed shards
    set_model_state_dict(model, dict(full) if ctx.is_main else {}, options=options)


def gather_full_params(model: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor]:
    """Full fp32 CPU parameters keyed like named_parameters() (a tied tensor once) on rank 0; {} elsewhere.
    Collective: one all-gather per parameter, so the peak is one full tensor per device."""
    out: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        full = param.detach().full_tensor()  # type: ignore[attr-defined]  # a DTensor once fully_shard ran
        if ctx.is_main:
            out[name] = full.to("cpu", torch.float32)
    return out


def check_batch_divisible(batch_size: int, world_size: int) -> None:
    """Every rank trains an equal slice of each step's batch; raises ValueError otherwise."""
    if batch_size % world_size != 0:
        raise ValueError(f"batch_size {batch_size} (a run hparam) must be divisible by the number of processes "
                         f"{world_size}: start torchrun with a --nproc-per-node that divides {batch_size}")


def rank_rows(tokens: torch.Tensor, step: int, batch_size: int, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous slice of step `step`'s batch: (batch_size / world_size, seq_len + 1)."""
    per_rank = batch_size // ctx.world_size
    first = step * batch_size + ctx.rank * per_rank
    return tokens[first : first + per_rank]


@dataclass
class ShardedTrainer:
    """One rank's part of the training: its shard of the model and of a persistent AdamW."""

    ctx: DistContext
    hp: HParams
    model: Transformer
    optimizer: torch.optim.Optimizer

    @classmethod
    def build(cls, hp: HParams, ctx: DistContext) -> ShardedTrainer:
        check_batch_divisible(hp.batch_size, ctx.world_size)
        model = build_sharded_model(hp, ctx)
        opt = torch.optim.AdamW(model.parameters(), lr=hp.inner_lr, weight_decay=hp.inner_weight_decay)
        return cls(ctx=ctx, hp=hp, model=model, optimizer=opt)

    def train(self, theta_w: dict[str, torch.Tensor], tokens: torch.Tensor,
              window: int = 0) -> tuple[dict[str, torch.Tensor], float]:
        """Collective: H AdamW steps from theta_w (rank 0's full CPU state dict; {} elsewhere) on
        tokens (H * batch_size, seq_len + 1), the window's samples in order, the same on every rank.

        Returns (delta = theta_w - theta_local, full fp32 CPU, and the mean loss over all ranks) on
        rank 0, ({}, mean loss) elsewhere. Raises ValueError when tokens has the wrong number of rows."""
        hp = self.hp
        if tokens.shape[0] != hp.inner_steps * hp.batch_size:
            raise ValueError(f"expected {hp.inner_steps * hp.batch_size} samples, got {tokens.shape[0]}")
        load_full_state_dict(self.model, theta_w, self.ctx)
        self.model.train()
        losses = []
        steps = tqdm(range(hp.inner_steps), desc=f"window {window}", leave=False,
                     disable=None if self.ctx.is_main else True)
        for step in steps:
            batch = rank_rows(tokens, step, hp.batch_size, self.ctx).to(self.ctx.device)  # (B / N, T + 1)
            _, loss = self.model(batch[:, :-1], batch[:, 1:])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # FSDP reduce-scatter: the mean over ranks = the full-batch gradient
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), hp.grad_clip)
            self.optimizer.step()
            losses.append(loss.detach().float())
        mean_loss = self.mean_over_ranks(losses)
        local = gather_full_params(self.model, self.ctx)
        delta = {n: theta_w[n].float() - p for n, p in local.items()}
        return delta, mean_loss

    def mean_over_ranks(self, losses: list[torch.Tensor]) -> float:
        """Mean step loss of the whole batch: equal slices, so the mean of the ranks' means."""
        if not losses:
            return math.nan
        total = torch.stack(losses).sum()
        dist.all_reduce(total)  # SUM: gloo has no AVG
        return total.item() / (len(losses) * self.ctx.world_size)


# -- the command channel: rank 0 speaks, the others listen ---------------------------------------


@dataclass(frozen=True)
class StartCommand:
    hparams: HParams


@dataclass(frozen=True)
class TrainCommand:
    window: int
    tokens: torch.Tensor  # (inner_steps * batch_size, seq_len + 1) int64, CPU


@dataclass(frozen=True)
class StopCommand:
    pass


@dataclass
class TrainingGroup:
    """Rank 0's handle on the training of all ranks: it broadcasts each command, then does its part.

    `stop()` must run however the miner ends (it is in a `finally`), so that no rank waits forever."""

    ctx: DistContext
    trainer: ShardedTrainer | None = None
    in_step: bool = False  # True from a train command until every rank is out of its collectives
    stopped: bool = False

    def start(self, hp: HParams) -> None:
        check_batch_divisible(hp.batch_size, self.ctx.world_size)
        broadcast_object(StartCommand(hp), self.ctx)
        self.trainer = ShardedTrainer.build(hp, self.ctx)
        logger.info(f"training sharded over {self.ctx.world_size} processes on {self.ctx.device.type} (FSDP2); "
                    "theta_w, error feedback and encoding stay on rank 0's CPU")

    def train(self, window: int, theta_w: dict[str, torch.Tensor],
              tokens: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
        """One window on all ranks; see ShardedTrainer.train."""
        assert self.trainer is not None, "TrainingGroup.start() first"
        self.in_step = True
        broadcast_object(TrainCommand(window=window, tokens=tokens), self.ctx)
        result = self.trainer.train(theta_w, tokens, window)
        self.in_step = False
        return result

    def stop(self) -> bool:
        """Send stop once; True if every rank got it. Not sent after a step failed half way: the other
        ranks are inside a collective that will not complete, and torchrun ends them when rank 0 exits."""
        if self.stopped:
            return True
        if self.in_step:
            logger.error("a sharded training step failed; the other ranks are left to torchrun")
            return False
        broadcast_object(StopCommand(), self.ctx)
        self.stopped = True
        return True


def trainer_loop(ctx: DistContext) -> int:
    """Ranks > 0: build the trainer on rank 0's start command, then train each window it sends until
    stop. Returns the number of windows trained (0 when rank 0 stopped before starting)."""
    command = broadcast_object(None, ctx)
    if isinstance(command, StopCommand):
        return 0
    assert isinstance(command, StartCommand), f"unexpected first command {command!r}"
    trainer = ShardedTrainer.build(command.hparams, ctx)
    num_windows = 0
    while True:
        command = broadcast_object(None, ctx)
        if isinstance(command, StopCommand):
            logger.debug(f"rank {ctx.rank}: stop after {num_windows} windows")
            return num_windows
        assert isinstance(command, TrainCommand), f"unexpected command {command!r}"
        trainer.train({}, command.tokens, command.window)
        num_windows += 1
