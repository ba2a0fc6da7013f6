"""Data-plane benchmark: startup bytes, bytes per window, assignment time, RSS and data wait vs corpus size.

    python scripts/bench_data.py --corpus-gb 0.25,4
    python scripts/bench_data.py --assign-only --samples 500000000

A thin CLI: the work lives in `template/harness/bench_data.py` (`--help` lists the flags).
"""

import sys

from template.harness.bench_data import main

if __name__ == "__main__":
    sys.exit(main())
