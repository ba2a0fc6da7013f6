"""Publishing a prepared corpus to a dataset bucket, and mirroring a published one into another bucket.

Both write the manifest last, so a reader never sees a manifest naming objects that are not there yet,
and both skip a shard already stored with the same size and index, so an interrupted copy goes on.
A mirror checks every page against its shard's index before writing it: a mirror never spreads a
corrupt page.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from loguru import logger

from storage.dataset import PAGE_BUDGET, read_manifest
from storage.s3 import S3Client, Status
from template.protocol import layout
from template.protocol.data import (
    DatasetError,
    DatasetManifest,
    PageMap,
    ShardInfo,
    page_digest,
    page_digests,
    pages_in,
)

UPLOAD_CHUNK_BYTES = 16 << 20  # one multipart part, read from disk at a time


def file_chunks(path: Path, size: int = UPLOAD_CHUNK_BYTES) -> Iterator[bytes]:
    """`path`'s bytes in blocks of `size`, so a shard is uploaded without holding it in memory."""
    with path.open("rb") as f:
        while block := f.read(size):
            yield block


def already_stored(client: S3Client, bucket: str, shard: ShardInfo, size: int) -> bool:
    """Whether `bucket` holds `shard` with `size` bytes and its index with the manifest's digest."""
    stored = client.head(bucket, shard.key)
    index = client.get(bucket, shard.index_key, sha256=shard.index_sha256)
    return stored is not None and stored.size == size and index.status is Status.OK


def upload_dataset(client: S3Client, bucket: str, out_dir: Path, manifest: DatasetManifest) -> None:
    """Upload shards (multipart, streamed from disk), their indexes and the tokenizer, then the manifest
    last (readers never see a manifest naming missing objects). A shard already stored with the same
    size and the same index is skipped. Raises S3Error."""
    out_dir = Path(out_dir)
    for shard in manifest.shards:
        path = out_dir / shard.key
        if already_stored(client, bucket, shard, path.stat().st_size):
            continue
        client.put_multipart(bucket, shard.key, file_chunks(path))
        client.put(bucket, shard.index_key, (out_dir / shard.index_key).read_bytes())
    client.put(bucket, manifest.tokenizer.key, (out_dir / manifest.tokenizer.key).read_bytes())
    client.put(bucket, layout.dataset_manifest_key(), manifest.to_json())


def fetch_checked(client: S3Client, bucket: str, key: str, sha256: str, what: str) -> bytes:
    """The object `key`, whose sha256 the manifest names. Raises DatasetError naming `what` otherwise."""
    got = client.get(bucket, key, sha256=sha256)
    if got.status is not Status.OK or got.data is None:
        raise DatasetError(f"{what} {key}: {got.status.name} ({got.error})")
    return got.data


def verified_pages(client: S3Client, bucket: str, pages: PageMap, shard_number: int, shard: ShardInfo,
                   digests: list[bytes]) -> Iterator[bytes]:
    """The shard's pages, one range GET each, each checked against its digest. Raises DatasetError."""
    for local, digest in enumerate(digests):
        offset, length = pages.byte_range(int(pages.first_page[shard_number]) + local)
        sink = io.BytesIO()
        got = client.get_range(bucket, shard.key, offset, length, sink, budget=PAGE_BUDGET)
        if got.status is not Status.OK:
            raise DatasetError(f"{shard.key} page {local}: {got.status.name} ({got.error})")
        if page_digest(sink.getvalue()) != digest:
            raise DatasetError(f"{shard.key} page {local}: does not match its digest; not mirrored")
        yield sink.getvalue()


def mirror_dataset(source: S3Client, source_bucket: str, target: S3Client, target_bucket: str) -> DatasetManifest:
    """Copy a published corpus into another bucket, reading it page by page (one range GET each) and
    checking every page against its shard's index before it is written; the manifest goes last.
    Shards already mirrored (same size and index) are skipped. Raises DatasetError or S3Error."""
    manifest, raw = read_manifest(source, source_bucket)
    tokenizer = fetch_checked(source, source_bucket, manifest.tokenizer.key, manifest.tokenizer.sha256, "tokenizer")
    pages = PageMap(manifest)
    for number, shard in enumerate(manifest.shards):
        index = fetch_checked(source, source_bucket, shard.index_key, shard.index_sha256, "index")
        digests = page_digests(index)  # a malformed index is refused even for a shard already mirrored
        if already_stored(target, target_bucket, shard, shard.num_samples * manifest.sample_bytes):
            continue
        shard_pages = verified_pages(source, source_bucket, pages, number, shard, digests)
        target.put_multipart(target_bucket, shard.key, shard_pages)
        target.put(target_bucket, shard.index_key, index)
        logger.info(f"mirrored {shard.key} ({pages_in(shard.num_samples, manifest.page_samples)} pages verified)")
    target.put(target_bucket, manifest.tokenizer.key, tokenizer)
    target.put(target_bucket, layout.dataset_manifest_key(), raw)
    return manifest
