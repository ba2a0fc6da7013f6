"""A follower's checkpoint check, header only, against the full read a load makes (template/harness/checkpoint_check.py).

    python scripts/bench_checkpoint_check.py [--preset tiny] [--vocab-size 8192] [--seq-len 128] [--repeats 3]

Last stdout line: JSON {"settings", "variants": {header, full_read: {bytes, seconds}}, "bytes_ratio", "speedup"}:
the header check against the same run's full-read baseline on one honest checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from template.harness.checkpoint_check import measure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(measure(args.preset, args.vocab_size, args.seq_len, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
