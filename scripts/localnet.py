"""The whole network on one machine (chain, SeaweedFS, miners, validators) and its report.

    python scripts/localnet.py --miners 3 --validators 1 --windows 12 --adversaries noise,copycat --out runs/demo

A thin CLI: the flags and the work live in `template/harness/localnet.py` (`--help` lists the flags).
"""

import sys

from template.harness.localnet import main

if __name__ == "__main__":
    sys.exit(main())
