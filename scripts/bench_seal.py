"""What sealing an upload costs (template/protocol/sealing.py), next to encoding it.

On one model preset's parameter shapes: a random pseudo-gradient is encoded (`compress`, error feedback
included) and written as the signed gradient artifact (`write_tensor_artifact`): that is "encode". Sealing is
AES-256-GCM over the artifact plus the signed sealed artifact around it (`seal`); opening is the reader's side
(`open_sealed`: framing, signature, key commitment, decryption). Medians over `--reps` interleaved rounds,
one thread.

    .venv/bin/python scripts/bench_seal.py                    # preset 150M
    .venv/bin/python scripts/bench_seal.py --preset tiny --reps 5

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from bittensor_wallet import Keypair

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from template.protocol.artifacts import write_tensor_artifact  # noqa: E402
from template.protocol.config import HParams  # noqa: E402
from template.protocol.model import build_model  # noqa: E402
from template.protocol.sealing import open_sealed, seal  # noqa: E402
from template.protocol.sparseloco import CodecParams, compress  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="150M", help="model preset (template/protocol/model.py)")
    ap.add_argument("--reps", type=int, default=7, help="interleaved rounds (median reported)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    hp = HParams(model_preset=args.preset)
    model = build_model(hp.model_preset, hp.vocab_size, hp.seq_len, hp.model_seed)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    num_params = sum(p.numel() for p in model.parameters())
    del model
    codec, kp = CodecParams.from_hparams(hp), Keypair.create_from_uri("//Bench")
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"encode_s": [], "seal_s": [], "open_s": []}
    sizes = {}
    for _ in range(args.reps):
        delta = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
        t0 = time.perf_counter()
        wire, _ = compress(delta, None, codec, hp.ef_beta)
        plain = write_tensor_artifact(wire, kind="gradient", window=7, keypair=kp, fields={"uid": 1})
        t1 = time.perf_counter()
        sealed, key = seal(plain, window=7, keypair=kp)
        t2 = time.perf_counter()
        assert open_sealed(sealed, key, hotkey=kp.ss58_address, window=7, max_bytes=1 << 30) == plain
        t3 = time.perf_counter()
        times["encode_s"].append(t1 - t0)
        times["seal_s"].append(t2 - t1)
        times["open_s"].append(t3 - t2)
        sizes = {"artifact_bytes": len(plain), "sealed_bytes": len(sealed)}
    out = {"preset": args.preset, "params": num_params, "reps": args.reps, **sizes,
           **{k: round(statistics.median(v), 4) for k, v in times.items()}}
    out["seal_over_encode"] = round(out["seal_s"] / out["encode_s"], 4)
    print(f"{args.preset}: {num_params / 1e6:.1f}M params, artifact {sizes['artifact_bytes'] / 1e6:.2f} MB "
          f"(+{sizes['sealed_bytes'] - sizes['artifact_bytes']} B sealed); encode {out['encode_s'] * 1e3:.0f} ms, "
          f"seal {out['seal_s'] * 1e3:.1f} ms, open {out['open_s'] * 1e3:.1f} ms")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
