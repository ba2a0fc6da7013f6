"""Print a finished localnet run's report as Markdown.

    python scripts/localnet_report.py runs/demo/report/report.json

A thin CLI over `template/harness/report.py`.
"""

import sys

from template.harness.report import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
