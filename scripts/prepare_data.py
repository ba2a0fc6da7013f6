"""Turn text into the subnet's token shards and (optionally) upload them to the dataset bucket.

    python scripts/prepare_data.py --source shakespeare --out data/shakespeare --seq-len 128 --vocab-size 8192

A thin CLI: the flags and the work live in `template/harness/prepare_data.py` (`--help` lists the flags).
"""

import sys

from template.harness.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
