"""The stall coalition against the progress defences, in one process (template/harness/progress_attacks.py).

    python scripts/bench_progress.py [--windows 8] [--honest 4] [--stall 3] [--seed 0]

Last stdout line: JSON {"settings", "variants": {name: {loss_start, loss_end, progress, refused_steps,
stall_members_dropped}}}; `progress` is against the same run's `clean` baseline (no attackers)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from template.harness.progress_attacks import Setup, measure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--honest", type=int, default=4)
    p.add_argument("--stall", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(measure(Setup(honest=args.honest, stall=args.stall, windows=args.windows, seed=args.seed))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
