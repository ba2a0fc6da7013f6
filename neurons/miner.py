"""Miner entry point: `python neurons/miner.py --wallet.name M --wallet.hotkey H --netuid N ...`.

Parses the dotted flags, sets up logging and threads, and hands over to template.miner.run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from loguru import logger  # noqa: E402

from template.config import parse_neuron_args  # noqa: E402
from template.logging_setup import setup_logging  # noqa: E402
from template.neuron import SetupError, setup_runtime  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cfg = parse_neuron_args("miner", argv)
    setup_logging(debug=cfg.logging.debug, trace=cfg.logging.trace, log_dir=cfg.logging.logging_dir,
                  name=f"miner:{cfg.wallet.name}/{cfg.wallet.hotkey}")
    setup_runtime(cfg)
    if cfg.mode == "honest":
        from template.miner import run

        runner = run
    else:  # incentive tests only: hostile behaviours live outside the honest path
        from template.adversaries import run_hostile

        runner = run_hostile
    try:
        runner(cfg)
    except SetupError as e:
        logger.error(str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
