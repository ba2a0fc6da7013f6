"""A hostile miner process for the simulation: `python -m template.sim.hostile_miner --mode KIND <miner flags>`.

Takes the honest miner's dotted flags plus `--mode` (one of `template.sim.adversaries.STRATEGIES`).
scripts/localnet.py starts these; nothing on the honest miner's path (`neurons/miner.py`) knows them.
"""

from __future__ import annotations

import argparse
import sys

from loguru import logger

from template.node.logging_setup import setup_logging
from template.node.neuron import SetupError, setup_runtime
from template.protocol.config import parse_neuron_args
from template.sim.adversaries import STRATEGIES, run_hostile


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--mode", required=True, choices=sorted(STRATEGIES), help="hostile behaviour")
    known, rest = pre.parse_known_args(argv)
    cfg = parse_neuron_args("miner", rest)
    setup_logging(debug=cfg.logging.debug, trace=cfg.logging.trace, log_dir=cfg.logging.logging_dir,
                  name=f"hostile-{known.mode}:{cfg.wallet.name}/{cfg.wallet.hotkey}")
    setup_runtime(cfg)
    try:
        run_hostile(cfg, known.mode)
    except SetupError as e:
        logger.error(str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
