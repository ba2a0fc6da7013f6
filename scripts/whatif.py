"""The subnet owner's what-if: who would have earned what under other settings.

    python scripts/whatif.py --run runs/demo --grid burn_rate=0.1,0.5 top_n_miners=4,8

A thin CLI: the flags and the work live in `template/harness/whatif.py` (`--help` lists the flags).
"""

import sys

from template.harness.whatif import main

if __name__ == "__main__":
    sys.exit(main())
