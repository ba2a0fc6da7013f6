"""Serve the live dashboard of a localnet run folder, finished or running.

    python scripts/dashboard.py --run runs/demo --port 8765

A thin CLI: the flags and the work live in `template/harness/dashboard.py` (`--help` lists the flags).
"""

import sys

from template.harness.dashboard import main

if __name__ == "__main__":
    sys.exit(main())
