"""The statistical cost of the validator's random batch drawn by page: batch-mean spread vs the per-id draw.

    python scripts/bench_eval_pages.py --corpus DIR

A thin CLI: the work lives in `template/harness/bench_eval_pages.py` (`--help` lists the flags).
"""

import sys

from template.harness.bench_eval_pages import main

if __name__ == "__main__":
    sys.exit(main())
