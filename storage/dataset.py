"""Fetching the token dataset from the dataset bucket into a local, verified cache.

The manifest format and the sample assignment are pure protocol (`template.protocol.data`); this
module is the I/O: download the manifest, the tokenizer and any missing or changed shards, check each
against the manifest's size and sha256, and reuse files verified before.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from loguru import logger

from storage.bounded import FetchBudget, deadline
from storage.s3 import GetResult, Status
from template.protocol import layout
from template.protocol.data import DatasetError, DatasetManifest, TokenDataset, load_manifest

MANIFEST_MAX_BYTES = 16 << 20
DATASET_BUDGET = FetchBudget(total_s=3600.0, min_bytes_per_s=64 << 10, startup_s=10.0)  # per dataset object


class ObjectReader(Protocol):
    """The part of `storage.s3.S3Client` that fetch_dataset uses."""

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None) -> GetResult:
        ...


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_cached(path: Path, sha256: str, size: int, verified: dict[str, list]) -> bool:
    """True if `path` holds the object with this sha256; a stat match with an earlier check skips rehashing."""
    if not path.is_file() or path.stat().st_size != size:
        return False
    stat = path.stat()
    stamp = [sha256, stat.st_size, stat.st_mtime_ns]
    if verified.get(str(path)) == stamp:
        return True
    if _sha256_file(path) != sha256:
        return False
    verified[str(path)] = stamp
    return True


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fetch_object(client: ObjectReader, bucket: str, key: str, sha256: str, size: int, path: Path) -> None:
    with deadline(time.monotonic() + DATASET_BUDGET.total_s, DATASET_BUDGET):  # shards are big: their own budget
        res = client.get(bucket, key, max_bytes=size, sha256=sha256)
    if res.status is not Status.OK or res.data is None:
        raise DatasetError(f"dataset object {bucket}/{key}: {res.status.name} ({res.error})")
    _write_atomic(path, res.data)


def fetch_dataset(client: ObjectReader, bucket: str, cache_dir: Path, *,
                  max_workers: int = 4) -> tuple[DatasetManifest, TokenDataset]:
    """Download the manifest, tokenizer and any missing or changed shards into `cache_dir`.

    Every object is checked against the manifest's size and sha256; already verified local files
    are reused. Raises DatasetError if anything is missing, denied or corrupt.
    """
    cache_dir = Path(cache_dir)
    res = client.get(bucket, layout.dataset_manifest_key(), max_bytes=MANIFEST_MAX_BYTES)
    if res.status is not Status.OK or res.data is None:
        raise DatasetError(f"dataset manifest {bucket}/{layout.dataset_manifest_key()}: {res.status.name} "
                           f"({res.error})")
    manifest = load_manifest(res.data)
    verified_path = cache_dir / "verified.json"
    try:
        verified: dict[str, list] = json.loads(verified_path.read_text())
    except (OSError, ValueError):
        verified = {}
    wanted = [(manifest.tokenizer.key, manifest.tokenizer.sha256, manifest.tokenizer.bytes)]
    wanted += [(s.key, s.sha256, s.bytes) for s in manifest.shards]
    missing = [w for w in wanted if not _is_cached(cache_dir / w[0], w[1], w[2], verified)]
    if missing:
        logger.info("fetching {} of {} dataset objects from {}", len(missing), len(wanted), bucket)
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            list(pool.map(lambda w: _fetch_object(client, bucket, w[0], w[1], w[2], cache_dir / w[0]), missing))
        for key, sha, size in missing:
            _is_cached(cache_dir / key, sha, size, verified)  # records the stat stamp of the fresh file
    _write_atomic(verified_path, json.dumps(verified).encode())
    _write_atomic(cache_dir / layout.dataset_manifest_key(), manifest.to_json())
    dataset = TokenDataset([cache_dir / s.key for s in manifest.shards], manifest.seq_len)
    if len(dataset) != manifest.num_samples:
        raise DatasetError(f"shards hold {len(dataset)} samples, manifest says {manifest.num_samples}")
    return manifest, dataset
