"""Convergence at equal tokens: SparseLoCo against DDP, DiLoCo and DeMo (last line JSON).

    python scripts/bench_convergence.py --seeds 3

A thin CLI: the flags and the work live in `template/harness/convergence_bench.py` (`--help` lists the flags).
"""

import sys

from template.harness.convergence_bench import main

if __name__ == "__main__":
    sys.exit(main())
