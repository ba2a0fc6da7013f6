"""Validator entry point: `python neurons/validator.py --wallet.name V --wallet.hotkey H --netuid N ...`.

Parses the dotted flags, sets up logging and threads, and hands over to template.node.validator.run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from loguru import logger  # noqa: E402

from template.node.logging_setup import setup_logging  # noqa: E402
from template.node.neuron import SetupError, setup_runtime  # noqa: E402
from template.protocol.config import parse_neuron_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cfg = parse_neuron_args("validator", argv)
    setup_logging(debug=cfg.logging.debug, trace=cfg.logging.trace, log_dir=cfg.logging.logging_dir,
                  name=f"validator:{cfg.wallet.name}/{cfg.wallet.hotkey}")
    setup_runtime(cfg)
    from template.node.validator import run

    try:
        run(cfg)
    except SetupError as e:
        logger.error(str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
