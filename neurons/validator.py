"""Validator entry point: `python neurons/validator.py --wallet.name V --wallet.hotkey H --netuid N ...`.

Parses the dotted flags, sets up logging and threads, and hands over to template.node.validator.run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from template.node.neuron import run_neuron  # noqa: E402
from template.protocol.config import NeuronConfig, parse_neuron_args  # noqa: E402


def run_validator(cfg: NeuronConfig) -> None:
    from template.node.validator import run  # after setup_runtime: the thread count is set before the model

    run(cfg)


def main(argv: list[str] | None = None) -> int:
    return run_neuron(parse_neuron_args("validator", argv), "validator", run_validator)


if __name__ == "__main__":
    sys.exit(main())
