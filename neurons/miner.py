"""Miner entry point: `python neurons/miner.py --wallet.name M --wallet.hotkey H --netuid N ...`.

Parses the dotted flags, sets up logging and threads, and hands over to template.node.miner.run.
Several GPUs on one box: `torchrun --nproc-per-node N neurons/miner.py ...` (template.node.distributed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from loguru import logger  # noqa: E402

from template.node.distributed import torchrun_env  # noqa: E402
from template.node.logging_setup import setup_logging  # noqa: E402
from template.node.miner import run, run_distributed  # noqa: E402
from template.node.neuron import SetupError, setup_runtime  # noqa: E402
from template.protocol.config import parse_neuron_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cfg = parse_neuron_args("miner", argv)
    rank, world_size, _ = torchrun_env()
    suffix = f":rank{rank}" if world_size > 1 else ""
    setup_logging(debug=cfg.logging.debug, trace=cfg.logging.trace, log_dir=cfg.logging.logging_dir,
                  name=f"miner:{cfg.wallet.name}/{cfg.wallet.hotkey}{suffix}")
    setup_runtime(cfg)
    runner = run if world_size == 1 else run_distributed  # torchrun --nproc-per-node N: FSDP2
    try:
        runner(cfg)
    except SetupError as e:
        logger.error(str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
