"""Miner entry point: `python neurons/miner.py --wallet.name M --wallet.hotkey H --netuid N ...`.

Parses the dotted flags, sets up logging and threads, and hands over to template.node.miner.run.
Several GPUs on one box: `torchrun --nproc-per-node N neurons/miner.py ...` (template.node.distributed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from template.node.distributed import torchrun_env  # noqa: E402
from template.node.miner import run, run_distributed  # noqa: E402
from template.node.neuron import run_neuron  # noqa: E402
from template.protocol.config import parse_neuron_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cfg = parse_neuron_args("miner", argv)
    rank, world_size, _ = torchrun_env()
    suffix = f":rank{rank}" if world_size > 1 else ""
    runner = run if world_size == 1 else run_distributed  # torchrun --nproc-per-node N: FSDP2
    return run_neuron(cfg, "miner", runner, suffix)


if __name__ == "__main__":
    sys.exit(main())
