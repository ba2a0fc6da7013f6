"""Turn text into the subnet's paged token corpus, upload it, or mirror a published one (docs/data.md).

    python scripts/prepare_data.py --source shakespeare --out data/shakespeare --seq-len 128 --vocab-size 8192
    python scripts/prepare_data.py --source ./parquet_dir --text-field text --tokenizer tokenizer.json \
        --seq-len 2048 --samples-per-window 256 --out data/mine --upload --endpoint URL --bucket dataset
    python scripts/prepare_data.py mirror --from-endpoint URL --from-bucket dataset --endpoint MY_URL --bucket mine

A thin CLI: the flags live in `template/harness/prepare/cli.py`, the work in the modules beside it
(`--help` lists the flags).
"""

import sys

from template.harness.prepare.cli import main

if __name__ == "__main__":
    sys.exit(main())
