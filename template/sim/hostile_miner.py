"""A hostile miner process for the simulation: `python -m template.sim.hostile_miner --mode KIND <miner flags>`.

Takes the honest miner's dotted flags plus `--mode` (one of `template.sim.adversaries.STRATEGIES`).
scripts/localnet.py starts these; nothing on the honest miner's path (`neurons/miner.py`) knows them.
"""

from __future__ import annotations

import argparse
import sys

from template.node.neuron import run_neuron
from template.protocol.config import parse_neuron_args
from template.sim.adversaries import STRATEGIES, run_hostile


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mode", required=True, choices=sorted(STRATEGIES), help="hostile behaviour")
    known, rest = pre.parse_known_args(argv)
    return run_neuron(parse_neuron_args("miner", rest), f"hostile-{known.mode}",
                      lambda cfg: run_hostile(cfg, known.mode))


if __name__ == "__main__":
    sys.exit(main())
