"""Pay fairness study (issue 31): honest spread and hostile pay per weight mapping, in-process.

    python scripts/fairness.py --seeds 40 --windows 24

A thin CLI: the flags and the work live in `template/harness/fairness.py` (`--help` lists the flags).
"""

import sys

from template.harness.fairness import main

if __name__ == "__main__":
    sys.exit(main())
