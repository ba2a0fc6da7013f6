"""The stall coalition against the progress defences, in one process (template/harness/progress_attacks.py).

    python scripts/bench_progress.py [--windows 8] [--honest 4] [--stall 3] [--small 5] [--small-from 4]
        [--small-direction random|trained] [--seed 0] [--variants clean,small_growth_only,small_floored]

Last stdout line: JSON {"settings", "variants": {name: {loss_start, loss_end, progress, refused_steps,
stall_members_dropped, honest_members_dropped, honest_applied_mean, honest_applied_last}}}; `progress` is against
the same run's `clean` baseline (no attackers), always run."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from template.harness.progress_attacks import VARIANTS, Setup, measure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--honest", type=int, default=4)
    p.add_argument("--stall", type=int, default=3)
    p.add_argument("--small", type=int, default=5, help="sybils of the small_* variants")
    p.add_argument("--small-from", type=int, default=4, help="the window the sybils join")
    p.add_argument("--small-direction", choices=("random", "trained"), default="random",
                   help="a sybil's update: a random direction, or its trained update scaled down")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (clean always runs)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    setup = Setup(honest=args.honest, stall=args.stall, windows=args.windows, seed=args.seed, small=args.small,
                  small_from=args.small_from, small_direction=args.small_direction)
    try:
        result = measure(setup, tuple(v for v in args.variants.split(",") if v))
    except ValueError as e:
        p.error(str(e))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
