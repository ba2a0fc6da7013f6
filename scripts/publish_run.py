"""Publish a run from the subnet owner's hotkey: hparams.json into the dataset bucket and the bucket's read
access as the owner commitment, on any network (finney, test, the localnet).

    python scripts/publish_run.py --subtensor.network finney --netuid 3 --wallet.name owner \
        --storage.credentials_file ~/.sparseloco/dataset.json --hparams run.json --start-in-blocks 300

A thin CLI: the checks and the writes live in `template/node/publish.py` (`--help` lists the flags).
"""

import sys

from template.node.publish import main

if __name__ == "__main__":
    sys.exit(main())
