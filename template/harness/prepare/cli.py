"""Turn text into the subnet's paged token corpus, upload it to the dataset bucket, or mirror a published one.

    python scripts/prepare_data.py --source shakespeare --out data/shakespeare --seq-len 128 --vocab-size 8192
    python scripts/prepare_data.py --source ./corpus --text-field text --tokenizer tokenizer.json \
        --out data/mine --upload --endpoint http://127.0.0.1:8333 --bucket dataset  # keys: $S3_ACCESS_KEY_ID ...
    python scripts/prepare_data.py mirror --from-endpoint URL --from-bucket dataset \
        --endpoint MY_URL --bucket my-dataset   # keys: $MIRROR_FROM_KEY_ID ..., $S3_ACCESS_KEY_ID ...

The flags of `scripts/prepare_data.py` and the calls they make; the work is in the modules beside this
one (docs/data.md, "Publishing a corpus").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from storage.s3 import S3Client
from template.harness.prepare.pipeline import prepare_corpus
from template.harness.prepare.publish import mirror_dataset, upload_dataset
from template.protocol.data import DatasetManifest

GIB = 1 << 30


def client_from_env(parser: argparse.ArgumentParser, endpoint: str | None, key_env: str, secret_env: str,
                    region: str) -> S3Client:
    """An S3 client with keys from the environment (never flags: flags land in shell history)."""
    key_id, secret = os.environ.get(key_env), os.environ.get(secret_env)
    if not (endpoint and key_id and secret):
        parser.error(f"needs an endpoint and ${key_env} / ${secret_env}")
    return S3Client(endpoint, key_id, secret, region)


def own_bucket_client(parser: argparse.ArgumentParser, args: argparse.Namespace, missing_bucket: str
                      ) -> tuple[S3Client, str]:
    """The client and bucket of `--endpoint`/`--bucket` (or $S3_ENDPOINT/$S3_BUCKET), the bucket created."""
    bucket = args.bucket or os.environ.get("S3_BUCKET")
    if not bucket:
        parser.error(missing_bucket)
    client = client_from_env(parser, args.endpoint or os.environ.get("S3_ENDPOINT"), "S3_ACCESS_KEY_ID",
                             "S3_SECRET_ACCESS_KEY", args.region)
    client.ensure_bucket(bucket)
    return client, bucket


def mirror_main(argv: list[str]) -> int:
    """`prepare_data.py mirror`: copy a published corpus into your own bucket."""
    parser = argparse.ArgumentParser(prog="prepare_data.py mirror",
                                     description="copy a published corpus into your own bucket, verifying every page")
    parser.add_argument("--from-endpoint", required=True, help="S3 endpoint of the published dataset bucket")
    parser.add_argument("--from-bucket", required=True, help="the published dataset bucket")
    parser.add_argument("--endpoint", help="your S3 endpoint (or $S3_ENDPOINT)")
    parser.add_argument("--bucket", help="your bucket (or $S3_BUCKET)")
    parser.add_argument("--region", default="us-east-1", help="S3 region of both")
    args = parser.parse_args(argv)
    source = client_from_env(parser, args.from_endpoint, "MIRROR_FROM_KEY_ID", "MIRROR_FROM_SECRET", args.region)
    target, bucket = own_bucket_client(parser, args, "needs --bucket or $S3_BUCKET")
    manifest = mirror_dataset(source, args.from_bucket, target, bucket)
    print(f"mirrored {len(manifest.shards)} shards ({manifest.num_pages} pages verified) into {bucket}")
    return 0


def prepare_parser() -> argparse.ArgumentParser:
    """The flags of preparing (and uploading) a corpus."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--source", default="shakespeare",
                        help="shakespeare | hf:<name> | a file or folder of .parquet/.jsonl/.txt (.gz/.zst)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (mirrors the bucket keys)")
    parser.add_argument("--text-field", default="text", help="the text column (parquet) or field (jsonl)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a HF tokenizer.json (default: train one)")
    parser.add_argument("--seq-len", type=int, default=128, help="model context in tokens")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size of a trained tokenizer")
    parser.add_argument("--heldout-fraction", type=float, default=0.05, help="share of pages never assigned")
    parser.add_argument("--page-samples", type=int, default=None,
                        help="samples per page (default: a power of two of at most 1 MiB dividing "
                             "--samples-per-window)")
    parser.add_argument("--samples-per-window", type=int, default=None,
                        help="the run's inner_steps * batch_size, so one uid's slot is whole pages")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="target shard size in GiB")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache (default <out>/download)")
    parser.add_argument("--upload", action="store_true", help="upload to the dataset bucket afterwards")
    parser.add_argument("--endpoint", help="S3 endpoint URL (or $S3_ENDPOINT)")
    parser.add_argument("--bucket", help="dataset bucket (or $S3_BUCKET)")
    parser.add_argument("--region", default="us-east-1", help="S3 region")
    return parser


def prepare_from_args(args: argparse.Namespace) -> DatasetManifest:
    """`prepare_corpus` with the parsed flags; prints what was written."""
    manifest = prepare_corpus(args.out, args.seq_len, args.source, vocab_size=args.vocab_size,
                              tokenizer_file=args.tokenizer, text_field=args.text_field, cache_dir=args.cache_dir,
                              heldout_fraction=args.heldout_fraction, page_samples=args.page_samples,
                              shard_bytes=max(1, int(args.shard_gb * GIB)),
                              samples_per_window=args.samples_per_window)
    print(f"{manifest.num_samples} samples ({manifest.heldout_start} train) of {manifest.seq_len + 1} tokens, "
          f"vocab {manifest.vocab_size}, {len(manifest.shards)} shards of pages of {manifest.page_samples} "
          f"samples in {args.out}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`prepare_data.py [mirror] ...`: prepare (and upload) a corpus, or mirror one."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mirror"]:
        return mirror_main(argv[1:])
    parser = prepare_parser()
    args = parser.parse_args(argv)
    manifest = prepare_from_args(args)
    if args.upload:
        client, bucket = own_bucket_client(parser, args, "--upload needs --bucket or $S3_BUCKET")
        upload_dataset(client, bucket, args.out, manifest)
        print(f"uploaded to {bucket}")
    return 0
