"""Benchmark the SparseLoCo codec (template/protocol/sparseloco.py) on a ~50M-parameter transformer's tensor shapes.

Measures, in one run: encode (``compress``, error feedback included) and decode (``decompress``, full
validation) throughput, a baseline of plain chunked ``torch.topk`` over the very same chunks, and the exact wire
size: the bytes of ``safetensors.torch.save(wire)`` (header included) in bits per parameter. Timings are
medians over ``--reps`` rounds that each run baseline, encode and decode once (interleaved, so a change in
machine load hits all three alike); compare ratios, not absolute numbers, on a busy machine.

    .venv/bin/python scripts/bench_codec.py                       # 50M elements, CPU, 2 threads
    .venv/bin/python scripts/bench_codec.py --elements 2000000    # quick run

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from template.protocol.sparseloco import (  # noqa: E402
    CodecParams,
    chunk_magnitudes,
    chunk_plan,
    compress,
    decompress,
    wire_indices,
)

D_MODEL = 512
LAYER_SHAPES = [(3 * D_MODEL, D_MODEL), (D_MODEL, D_MODEL), (4 * D_MODEL, D_MODEL), (D_MODEL, 4 * D_MODEL),
                (D_MODEL,), (D_MODEL,)]


def model_shapes(num_elements: int) -> dict[str, tuple[int, ...]]:
    """An embedding holding about a third of the elements, then transformer layers until the budget is used."""
    shapes: dict[str, tuple[int, ...]] = {"embed": (max(1, num_elements // 3 // D_MODEL), D_MODEL)}
    total = shapes["embed"][0] * D_MODEL
    layer = 0
    while True:
        for i, shape in enumerate(LAYER_SHAPES):
            numel = shape[0] * (shape[1] if len(shape) > 1 else 1)
            if total + numel > num_elements:
                return shapes
            shapes[f"layers.{layer}.{i}"] = shape
            total += numel
        layer += 1


def wall_s(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, reps: int
                        ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Run every fn once per round (after a warm-up round), so load changes hit them alike; median seconds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(wall_s(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}, times


def topk_baseline(tensors: dict[str, torch.Tensor], codec: CodecParams) -> list[torch.Tensor]:
    """Bare top-k by magnitude over the codec's chunks: |x| written in chunk layout (one pass, into one scratch
    buffer reused across tensors, as the encoder does), topk."""
    out = []
    scratch = torch.empty(max(t.numel() for t in tensors.values()), device=next(iter(tensors.values())).device)
    for t in tensors.values():
        plan = chunk_plan(tuple(t.shape), codec)
        x2d = t.reshape(plan.rows, plan.cols)
        for g in plan.groups:
            out.append(torch.topk(chunk_magnitudes(x2d, g, scratch), g.k, dim=1, sorted=False).indices)
    return out


def codec_quality(delta: dict[str, torch.Tensor], wire: dict[str, torch.Tensor],
                  shapes: dict[str, tuple[int, ...]], codec: CodecParams) -> dict[str, float]:
    """On a first window (no error feedback): share of |delta|^2 in the kept positions, and the relative L2
    error of the 2-bit values against the exact kept values (random normal deltas: a pessimistic case)."""
    decoded = decompress(wire, shapes, codec)
    kept_positions = wire_indices(wire, shapes, codec)
    kept_sq = err_sq = total_sq = 0.0
    for name, d in delta.items():
        flat = d.detach().cpu().float().reshape(-1).double()
        exact = flat.index_select(0, kept_positions[name])
        sent = decoded[name].reshape(-1).double().index_select(0, kept_positions[name])
        kept_sq += float(exact.square().sum())
        err_sq += float((sent - exact).square().sum())
        total_sq += float(flat.square().sum())
    return {"energy_kept": round(kept_sq / total_sq, 5), "quant_rel_error": round(math.sqrt(err_sq / kept_sq), 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=50_000_000, help="total parameters to encode")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the deltas live (decode is always CPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--reps", type=int, default=5, help="timed rounds (median)")
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--topk", type=int, default=64)
    ap.add_argument("--beta", type=float, default=0.95)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    codec = CodecParams(chunk_size=args.chunk_size, topk=args.topk)
    shapes = model_shapes(args.elements)
    gen = torch.Generator().manual_seed(0)
    delta = {n: (1e-3 * torch.randn(s, generator=gen)).to(device) for n, s in shapes.items()}
    elements = sum(t.numel() for t in delta.values())
    first_wire, ef = compress(delta, None, codec, args.beta)  # a realistic, non-zero error-feedback state
    quality = codec_quality(delta, first_wire, shapes, codec)

    wire, _ = compress(delta, ef, codec, args.beta)
    medians, times = interleaved_medians({
        "topk": lambda: topk_baseline(delta, codec),
        "encode": lambda: compress(delta, ef, codec, args.beta),
        "decode": lambda: decompress(wire, shapes, codec),
    }, device, args.reps)
    topk_s, encode_s, decode_s = medians["topk"], medians["encode"], medians["decode"]
    per_round_ratio = statistics.median(e / t for e, t in zip(times["encode"], times["topk"], strict=True))

    file_bytes = len(save(wire))
    payload_bytes = sum(t.numel() * t.element_size() for t in wire.values())
    bits_per_param = 8 * file_bytes / elements
    density = codec.topk / codec.chunk_size**2
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "elements": elements,
        "num_tensors": len(shapes),
        "wire_file_bytes": file_bytes,
        "header_bytes": file_bytes - payload_bytes,
        "bits_per_param": round(bits_per_param, 5),
        "compression_vs_fp32": round(32 / bits_per_param, 1),
        "compression_vs_bf16": round(16 / bits_per_param, 1),
        # one byte per 2-bit value plus 12-bit positions, the layout we are to beat
        "naive_u8_value_12bit_idx_bits_per_param": round((8 + 12) * density, 5),
        "encode_s": round(encode_s, 4),
        "decode_s": round(decode_s, 4),
        "topk_s": round(topk_s, 4),
        "encode_melem_s": round(elements / encode_s / 1e6, 2),
        "decode_melem_s": round(elements / decode_s / 1e6, 2),
        "topk_melem_s": round(elements / topk_s / 1e6, 2),
        "topk_baseline_ratio": round(encode_s / topk_s, 3),
        "topk_baseline_ratio_per_round_median": round(per_round_ratio, 3),
        "reps": args.reps,
        "decode_vs_topk_ratio": round(decode_s / topk_s, 3),
        **quality,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
