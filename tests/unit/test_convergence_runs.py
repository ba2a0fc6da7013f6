"""scripts/convergence_runs.py and bench_convergence.py: the results-file key, the outer-momentum ablation, the frontier."""

from __future__ import annotations

import json

import pytest
import torch

from template.harness.convergence_bench import frontier_points, group_by_config, parse_args, specs_for
from template.harness.convergence_runs import Common, RunSpec, cache_key
from template.harness.sparseloco_variants import SparseLoCoVariant
from template.protocol.sparseloco import CodecParams

COMMON = Common(num_workers=4, outer_steps=15, batch_size=4, seq_len=128, vocab_size=8192, inner_lr=0.002,
                warmup_steps=15, heldout_samples=64, tokens="", diloco_momentum=0.9, demo_topk=32)
SPEC = RunSpec("sparseloco", 10, 0, outer_lr=1.0, topk=256, chunk_size=64, ef_beta=0.95)


def test_key_of_a_plain_spec_matches_the_results_files_written_before_outer_momentum():
    # a line of docs/img/convergence-sweep.jsonl, written before RunSpec had outer_momentum
    stored = ('{"batch_size": 4, "chunk_size": 64, "clip": "history", "demo_topk": 32, "dense_1d": false, '
              '"diloco_momentum": 0.9, "ef_beta": 0.95, "heldout_samples": 64, "inner_lr": 0.002, "inner_steps": 10, '
              '"method": "sparseloco", "num_workers": 4, "outer_lr": 1.0, "outer_steps": 15, "quantizer": "ours", '
              '"seed": 0, "seq_len": 128, "tokens": "", "topk": 256, "vocab_size": 8192, "warmup_steps": 15}')
    assert cache_key(SPEC, COMMON) == stored


def test_key_keeps_a_non_default_outer_momentum():
    key = json.loads(cache_key(RunSpec(**{**SPEC.__dict__, "outer_momentum": 0.5}), COMMON))
    assert key["outer_momentum"] == 0.5
    assert cache_key(RunSpec(**{**SPEC.__dict__, "outer_momentum": 0.5}), COMMON) != cache_key(SPEC, COMMON)


def test_outer_momentum_is_nesterov_over_the_plain_steps():
    """Two outer steps with the same payload g: plain SGD moves lr*g each; Nesterov mu moves lr*g*(1+mu), then
    lr*g*(1 + mu*(1+mu))."""
    codec = CodecParams(chunk_size=4, topk=16, bits=2)
    g = {"w": torch.full((4, 4), 0.5)}
    mu, lr = 0.5, 1.0
    method = SparseLoCoVariant(codec, 0.95, lr, quantizer="fp32", dense_1d=False, clip="none", outer_momentum=mu)
    params = {"w": torch.zeros(4, 4)}
    method.apply(params, [g])
    assert torch.allclose(params["w"], torch.full((4, 4), -0.5 * (1 + mu)))
    method.apply(params, [g])
    assert torch.allclose(params["w"], torch.full((4, 4), -0.5 * (1 + mu) - 0.5 * (1 + mu * (1 + mu))))


def test_outer_momentum_out_of_range_is_refused():
    with pytest.raises(ValueError, match="outer_momentum"):
        SparseLoCoVariant(CodecParams(chunk_size=4, topk=4, bits=2), 0.95, 1.0, quantizer="ours", dense_1d=False,
                          outer_momentum=1.0)


def test_frontier_tunes_the_outer_lr_on_common_seeds_and_marks_dominated_points():
    args = parse_args(["--sweep", "--sweep-h", "10", "--sweep-topk", "256", "--sweep-sparseloco-lr", "1,2",
                       "--sweep-diloco-lr", "0.25", "--seeds", "2", "--methods", "sparseloco,diloco"])
    specs = specs_for(args, ["sparseloco", "diloco"])
    assert len(specs) == 6
    losses = {(1.0, 0): 5.9, (1.0, 1): 6.0, (2.0, 0): 5.95, (2.0, 1): 6.1, (0.25, 0): 5.8, (0.25, 1): 5.9}
    results = {s: {"final_loss": losses[(s.outer_lr, s.seed)], "bytes_per_sync": 10 if s.topk else 1000,
                   "bytes_total": 150 if s.topk else 15000, "num_syncs": 15} for s in specs}
    points = frontier_points(group_by_config(results), 10)
    by_method = {p["method"]: p for p in points}
    assert by_method["sparseloco"]["outer_lr"] == 1.0
    assert by_method["sparseloco"]["loss_mean"] == pytest.approx(5.95)
    assert by_method["sparseloco"]["diloco_bytes_x"] == 100.0
    assert by_method["sparseloco"]["on_frontier"] and by_method["diloco"]["on_frontier"]
