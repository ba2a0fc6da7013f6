"""Storage benchmark: our S3Client against raw boto3 on the same local SeaweedFS server.

    python scripts/bench_storage.py [--reps 8] [--sizes-mb 1 8]

Starts its own SeaweedFS server, then for each object size alternates our `S3Client.put/get` with
raw `boto3` `put_object/get_object` (default client config, path-style) on the same bucket, so both
see the same server state. Reports throughput in MB/s (total bytes / total seconds) and the ratios
ours / raw (target >= 0.8). `get_capped` is the validator path: HEAD for the size cap, GET, sha256
check; its raw baseline does the same three steps by hand. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage.s3 import S3Client, Status  # noqa: E402
from storage.seaweed import SeaweedServer, admin_identity  # noqa: E402

BUCKET = "bench"
MB = 1 << 20
KINDS = ("ours_put", "raw_put", "ours_get", "raw_get", "ours_get_capped", "raw_get_capped")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_size(ours: S3Client, raw, size: int, reps: int) -> dict[str, float]:
    """Seconds spent on `reps` operations of each kind for objects of `size` bytes."""
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    totals = dict.fromkeys(KINDS, 0.0)

    def ours_get(key: str, capped: bool) -> None:
        res = ours.get(BUCKET, key, max_bytes=size, sha256=digest) if capped else ours.get(BUCKET, key)
        assert res.status is Status.OK and res.data is not None and len(res.data) == size

    def raw_get(key: str, capped: bool) -> None:
        if capped:  # the same work done by hand: HEAD for the size, GET, sha256
            assert raw.head_object(Bucket=BUCKET, Key=key)["ContentLength"] <= size
        payload = raw.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert len(payload) == size and (not capped or hashlib.sha256(payload).hexdigest() == digest)

    ours.put(BUCKET, f"warm/{size}", data)  # warm connections and volume growth outside the timing
    raw_get(f"warm/{size}", capped=False)
    for rep in range(reps):
        # Alternate who goes first so drift in the server's state does not favour one side.
        order = ("ours", "raw") if rep % 2 == 0 else ("raw", "ours")
        for who in order:
            key = f"{who}/{size}/{rep}"
            if who == "ours":
                totals["ours_put"] += _timed(lambda key=key: ours.put(BUCKET, key, data))
            else:
                totals["raw_put"] += _timed(lambda key=key: raw.put_object(Bucket=BUCKET, Key=key, Body=data))
        for who in order:
            key = f"{who}/{size}/{rep}"
            if who == "ours":
                totals["ours_get"] += _timed(lambda key=key: ours_get(key, capped=False))
                totals["ours_get_capped"] += _timed(lambda key=key: ours_get(key, capped=True))
            else:
                totals["raw_get"] += _timed(lambda key=key: raw_get(key, capped=False))
                totals["raw_get_capped"] += _timed(lambda key=key: raw_get(key, capped=True))
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="S3Client vs raw boto3 throughput on a local SeaweedFS")
    parser.add_argument("--reps", type=int, default=8, help="operations of each kind per size")
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1.0, 8.0], help="object sizes in MiB")
    args = parser.parse_args(argv)

    admin = admin_identity()
    with tempfile.TemporaryDirectory() as tmp, SeaweedServer(Path(tmp), [admin]) as server:
        ours = S3Client(server.endpoint, admin.access_key, admin.secret_key)
        raw = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=admin.access_key,
                           aws_secret_access_key=admin.secret_key, region_name="us-east-1",
                           config=BotoConfig(s3={"addressing_style": "path"}))
        ours.ensure_bucket(BUCKET)
        result: dict[str, object] = {"reps": args.reps, "sizes": {}}
        totals_all = dict.fromkeys(KINDS, 0.0)
        for size_mb in args.sizes_mb:
            size = int(size_mb * MB)
            totals = bench_size(ours, raw, size, args.reps)
            moved = size * args.reps / MB
            per_size = {f"{name}_mb_s": round(moved / seconds, 1) for name, seconds in totals.items()}
            per_size |= {"put_ratio": round(totals["raw_put"] / totals["ours_put"], 3),
                         "get_ratio": round(totals["raw_get"] / totals["ours_get"], 3),
                         "get_capped_ratio": round(totals["raw_get_capped"] / totals["ours_get_capped"], 3)}
            result["sizes"][f"{size_mb:g}MB"] = per_size  # type: ignore[index]
            print(f"{size_mb:g} MB x {args.reps}: " + ", ".join(f"{k} {v}" for k, v in per_size.items()))
            for name, seconds in totals.items():
                # Weight every size equally: time per MB moved.
                totals_all[name] += seconds / moved
        result["put_ratio"] = round(totals_all["raw_put"] / totals_all["ours_put"], 3)
        result["get_ratio"] = round(totals_all["raw_get"] / totals_all["ours_get"], 3)
        result["get_capped_ratio"] = round(totals_all["raw_get_capped"] / totals_all["ours_get_capped"], 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
