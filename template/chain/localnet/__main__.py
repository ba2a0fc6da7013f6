"""`python -m template.chain.localnet`: the localnet CLI (template/chain/localnet/cli/)."""

from __future__ import annotations

import sys

from template.chain.localnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
