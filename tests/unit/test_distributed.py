"""template/node/distributed.py: the world-size-1 context, the batch rule, and real torchrun runs.

The 2-process test launches this file under `torchrun --nproc-per-node 2` (gloo on CPU): rank 0
trains two windows through the miner's own `train_inner_steps` twice, once sharded over both ranks
and once in-process as the single-process reference, from the same theta_w; rank 1 runs
`trainer_loop`. Before that, a start refused for an indivisible batch must release rank 1;
after it, the miner's real `run_distributed` with a missing wallet must too. Each rank writes
what it saw to a JSON file that the test then checks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from template.node.distributed import (
    DistContext,
    TrainingGroup,
    broadcast_object,
    check_batch_divisible,
    init_distributed,
    rank_rows,
    shutdown,
    trainer_loop,
)
from template.protocol.config import HParams

ROOT = Path(__file__).resolve().parents[2]
LR = 1e-3
NUM_WINDOWS = 2
TORCHRUN_TIMEOUT_S = 150  # one run takes ~15 s on 2 loaded cores


def small_hparams(batch_size: int = 4) -> HParams:
    """tiny preset with a 512-token vocabulary and 32-token samples: a few seconds on a CPU."""
    return HParams(model_preset="tiny", vocab_size=512, seq_len=32, inner_steps=3, batch_size=batch_size,
                   inner_lr=LR, grad_clip=0.5)


def test_single_process_context_is_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert ctx == DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    assert ctx.is_main and ctx.control is None and not dist.is_initialized()
    assert broadcast_object({"window": 3}, ctx) == {"window": 3}  # no group needed, nothing sharded
    shutdown(ctx)


def test_batch_size_must_divide_by_world_size() -> None:
    check_batch_divisible(8, 4)
    with pytest.raises(ValueError, match="batch_size 6 .* divisible .* 4: .*--nproc-per-node"):
        check_batch_divisible(6, 4)


def test_rank_rows_are_contiguous_slices_of_each_step() -> None:
    tokens = torch.arange(12).reshape(12, 1)  # 3 steps x batch 4
    ctx = DistContext(rank=1, world_size=2, device=torch.device("cpu"))
    assert rank_rows(tokens, 1, 4, ctx).flatten().tolist() == [6, 7]


def test_honest_miner_has_no_hostile_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    # hostile kinds live in template.sim.hostile_miner; the honest entry point refuses the flag
    from neurons.miner import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as exc:
        main(["--mode", "noise", "--wallet.name", "m", "--wallet.hotkey", "h"])
    assert exc.value.code == 2
    assert not dist.is_initialized()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(device: str, nproc: int, out: Path) -> dict[int, dict]:
    """This file under torchrun; returns each rank's JSON report. Fails on a hang (timeout) or rc != 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__, device, str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # own session, so that a hang kills torchrun's workers too, not only torchrun
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TORCHRUN_TIMEOUT_S} s (a rank hangs):\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    return {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)}


def test_two_cpu_processes_match_one(tmp_path: Path) -> None:
    reports = run_torchrun("cpu", 2, tmp_path)
    main, worker = reports[0], reports[1]
    assert "--nproc-per-node" in main["bad_batch_error"]
    # stop before start ends the worker's first loop at once; stop after two windows ends the second
    assert worker["windows_trained"] == [0, NUM_WINDOWS]
    assert (main["miner_without_wallet"], worker["miner_without_wallet"]) == ("setup_error", "returned")
    assert len(main["windows"]) == NUM_WINDOWS
    for w in main["windows"]:
        assert w["same_keys"]
        # Each AdamW step moves a weight by at most about LR, so |delta| reaches ~inner_steps * LR
        # (3e-3). The two runs differ only in fp32 summation order (two half-batch gradients
        # averaged by FSDP vs one full batch), which Adam's m / sqrt(v) amplifies for near-zero
        # gradients but keeps far below one step (seen: 1.8e-6 max, 3e-6 relative). We allow 2% of
        # one step per weight and 1e-4 overall; giving both ranks the same slice fails with
        # 6e-3 and 0.9.
        assert w["max_abs_delta"] > LR
        assert w["max_abs_diff"] < 0.02 * LR, w
        assert w["rel_l2_diff"] < 1e-4, w
        assert w["loss_sharded"] == pytest.approx(w["loss_reference"], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL: one GPU per rank)")
def test_two_cuda_processes_agree_with_one(tmp_path: Path) -> None:
    """bf16 on both sides but not the same bf16 (FSDP casts the weights, the single process
    autocasts), so only the direction and the loss are compared."""
    reports = run_torchrun("cuda", 2, tmp_path)
    assert reports[1]["windows_trained"] == [0, NUM_WINDOWS]
    for w in reports[0]["windows"]:
        assert w["same_keys"] and w["cosine"] > 0.9, w
        assert w["loss_sharded"] == pytest.approx(w["loss_reference"], rel=2e-2)


# -- what each rank runs under torchrun --------------------------------------------------------------


class FixedTokens:
    """Stands in for TokenDataset: sample i is row i of a seeded random table."""

    def __init__(self, num_samples: int, seq_len: int, vocab_size: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.rows = torch.randint(0, vocab_size, (num_samples, seq_len + 1), generator=gen)

    def batch(self, ids: list[int]) -> torch.Tensor:
        return self.rows[ids]


def fake_miner(hp: HParams, device: torch.device, dataset: FixedTokens, trainer: TrainingGroup | None):
    """The fields train_inner_steps reads, nothing else."""
    from template.node.sync import GlobalModel

    gm = GlobalModel.initial(hp, device)
    opt = torch.optim.AdamW(gm.model.parameters(), lr=hp.inner_lr, weight_decay=hp.inner_weight_decay)
    return SimpleNamespace(gm=gm, hp=hp, dataset=dataset, device=device, optimizer=opt, trainer=trainer)


def compare(sharded: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict:
    same = set(sharded) == set(reference)
    diff = [(sharded[n] - reference[n].cpu()) for n in reference] if same else []
    flat_s = torch.cat([sharded[n].flatten() for n in reference]) if same else torch.zeros(1)
    flat_r = torch.cat([reference[n].cpu().flatten() for n in reference])
    return {
        "same_keys": same,
        "max_abs_diff": max(d.abs().max().item() for d in diff) if same else float("inf"),
        "max_abs_delta": flat_r.abs().max().item(),
        "rel_l2_diff": ((flat_s - flat_r).norm() / flat_r.norm()).item() if same else float("inf"),
        "cosine": torch.nn.functional.cosine_similarity(flat_s, flat_r, dim=0).item() if same else 0.0,
    }


def main_rank(ctx: DistContext, device: str) -> dict:
    from template.node.miner import WindowPlan, train_inner_steps

    group = TrainingGroup(ctx)
    try:
        group.start(small_hparams(batch_size=3))
    except ValueError as e:
        bad_batch_error = str(e)
    finally:
        group.stop()
    hp = small_hparams()
    dataset = FixedTokens(4 * hp.samples_per_window, hp.seq_len, hp.vocab_size)
    group = TrainingGroup(ctx)
    group.start(hp)
    sharded = fake_miner(hp, torch.device("cpu"), dataset, group)
    reference = fake_miner(hp, torch.device(device), dataset, None)
    windows = []
    for window in range(NUM_WINDOWS):
        ids = list(range(window * hp.samples_per_window, (window + 1) * hp.samples_per_window))[::-1]
        plan = WindowPlan(window=window, uid=0, sample_ids=ids, deadline_block=0)
        got, want = train_inner_steps(sharded, plan), train_inner_steps(reference, plan)
        windows.append({**compare(got.delta, want.delta), "loss_sharded": got.mean_loss,
                        "loss_reference": want.mean_loss})
        with torch.no_grad():  # a stand-in outer step, the same on both: theta_{w+1} = theta_w - delta
            for m in (sharded, reference):
                for n, p in m.gm.model.named_parameters():
                    p.sub_(want.delta[n].to(p.device))
    group.stop()
    return {"bad_batch_error": bad_batch_error, "windows": windows}


def miner_that_cannot_start(ctx: DistContext, device: str, out: Path) -> str:
    """The miner's torchrun path (run_ranks, which ends the process group: run it last) with a
    wallet that does not exist: rank 0 fails in build_miner and must still release the others."""
    from template.node.miner import run_ranks
    from template.node.neuron import SetupError
    from template.protocol.config import NeuronConfig, WalletConfig

    cfg = NeuronConfig(role="miner", device=device, wallet=WalletConfig(name="none", path=str(out)))
    try:
        run_ranks(cfg, ctx)
    except SetupError:
        return "setup_error"
    return "returned"


def worker_main(device: str, out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(device)
    report = main_rank(ctx, device) if ctx.is_main else {"windows_trained": [trainer_loop(ctx), trainer_loop(ctx)]}
    # one process group for the whole run: re-initialising it under torchrun can hang
    report["miner_without_wallet"] = miner_that_cannot_start(ctx, device, out)
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    worker_main(sys.argv[1], Path(sys.argv[2]))
