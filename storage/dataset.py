"""Reading the paged token corpus from the dataset bucket: only the pages a node uses, verified, cached.

The format and the assignment are pure protocol (`template.protocol.data`); this module is the I/O.
At start-up a node reads the manifest and the tokenizer only (their size does not grow with the
corpus). A page is read when a batch or a prefetch names one of its samples: one range GET through the
fetch budget (`PAGE_BUDGET`), streamed to a file in the cache as it arrives, checked against the page
digest of its shard's index object (read once per shard, itself checked against the manifest). A page
that fails is refused with its reason and read again, from the next dataset endpoint when a mirror is
named; after `PAGE_ATTEMPTS` failures the read raises DatasetError. The cache is a folder of page files
with a size limit (`--data.cache_gb`), least recently used out. `prefetch` reads the next window's
pages in background threads while this window trains.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch
from loguru import logger

from storage.bounded import FetchBudget, deadline
from storage.s3 import GetResult, Status
from template.protocol import layout
from template.protocol.data import (
    PAGE_DIGEST_BYTES,
    DatasetError,
    DatasetManifest,
    PageMap,
    load_manifest,
    pages_in,
)

MANIFEST_MAX_BYTES = 16 << 20
TOKENIZER_MAX_BYTES = 64 << 20
# one page (<= a few MiB) or one shard index: an endpoint slower than 256 KiB/s is cut and the page
# read again elsewhere; no page read lasts past total_s
PAGE_BUDGET = FetchBudget(total_s=120.0, min_bytes_per_s=256 << 10, startup_s=10.0)
PAGE_ATTEMPTS = 4  # reads of one page (over the endpoints in turn) before the batch fails
PREFETCH_WORKERS = 4


class ObjectReader(Protocol):
    """The part of `storage.s3.S3Client` (or `IdentityClient`) the dataset reads through."""

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None,
            budget: FetchBudget | None = None) -> GetResult:
        ...

    def get_range(self, bucket: str, key: str, offset: int, length: int, sink: BinaryIO, *,
                  budget: FetchBudget | None = None) -> GetResult:
        ...


@dataclass(frozen=True)
class DataSource:
    """One endpoint serving the corpus: the owner's dataset bucket or a mirror of it."""

    client: ObjectReader
    bucket: str
    name: str


@dataclass
class DataStats:
    """What the data path did since the last `take_stats`."""

    fetched_bytes: int = 0
    fetched_pages: int = 0
    cached_pages: int = 0
    refused_pages: int = 0
    wait_s: float = 0.0  # time `batch` waited for pages
    refusals: list[str] = field(default_factory=list)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{threading.get_ident()}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class PageCache:
    """Page files in one folder, at most `limit_bytes` in all, least recently used out (thread-safe).

    Pages being read right now are pinned and never evicted; the cache may exceed its limit by at most
    the pinned pages (one batch)."""

    def __init__(self, folder: Path, limit_bytes: int) -> None:
        if limit_bytes <= 0:
            raise ValueError(f"cache limit must be > 0 bytes, got {limit_bytes}")
        self.folder, self.limit_bytes = folder, limit_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: OrderedDict[str, int] = OrderedDict()
        self._pins: dict[str, int] = {}
        self.used_bytes = 0
        found = []
        for path in folder.iterdir():
            if path.name.endswith(".part"):
                path.unlink(missing_ok=True)  # an interrupted read
            elif path.is_file():
                stat = path.stat()
                found.append((stat.st_mtime_ns, path.name, stat.st_size))
        for _, name, size in sorted(found):
            self._files[name] = size
            self.used_bytes += size
        self._evict()

    def path(self, name: str) -> Path:
        return self.folder / name

    def has(self, name: str) -> bool:
        with self._lock:
            if name in self._files:
                self._files.move_to_end(name)
                return True
            return False

    def add(self, name: str, size: int) -> None:
        with self._lock:
            if name not in self._files:
                self.used_bytes += size
            self._files[name] = size
            self._files.move_to_end(name)
            self._evict()

    def pin(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self._pins[name] = self._pins.get(name, 0) + 1

    def unpin(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self._pins[name] -= 1
                if not self._pins[name]:
                    del self._pins[name]
            self._evict()

    def _evict(self) -> None:
        for name in list(self._files):
            if self.used_bytes <= self.limit_bytes:
                return
            if name in self._pins:
                continue
            self.used_bytes -= self._files.pop(name)
            self.path(name).unlink(missing_ok=True)


class PagedDataset:
    """The corpus as samples: `batch(ids)` reads the pages holding `ids` (from the cache or the
    endpoints), `prefetch(ids)` starts reading them in the background. Global ids as in the manifest."""

    def __init__(self, manifest: DatasetManifest, sources: list[DataSource], cache_dir: Path, cache_bytes: int,
                 *, budget: FetchBudget = PAGE_BUDGET, prefetch_workers: int = PREFETCH_WORKERS) -> None:
        if not sources:
            raise ValueError("need at least one data source")
        self.manifest, self.sources, self.budget = manifest, sources, budget
        self.seq_len = manifest.seq_len
        self.pages = PageMap(manifest)
        self.cache = PageCache(Path(cache_dir) / "pages", cache_bytes)
        self._index_dir = Path(cache_dir) / "index"
        self._index_dir.mkdir(parents=True, exist_ok=True)
        self._indexes: dict[int, bytes] = {}  # shard -> verified page digests (32 B per page)
        self._dtype = np.dtype(manifest.dtype).newbyteorder("<")
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._inflight: dict[int, Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=prefetch_workers, thread_name_prefix="pages")
        self.stats = DataStats()

    def __len__(self) -> int:
        return self.manifest.num_samples

    @property
    def page_samples(self) -> int:
        """Samples per page: one range GET reads this many."""
        return self.manifest.page_samples

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def take_stats(self) -> DataStats:
        """The counters since the last call, reset."""
        with self._lock:
            stats, self.stats = self.stats, DataStats()
        return stats

    # -- reading

    def prefetch(self, ids: list[int]) -> None:
        """Start reading the pages of `ids` in the background (returns at once; errors surface in `batch`)."""
        for page in sorted({self.pages.page_of(i) for i in ids}):
            self._start(page)

    def batch(self, ids: list[int]) -> torch.Tensor:
        """Samples `ids` as a LongTensor (len(ids), seq_len + 1). Raises IndexError on a bad id and
        DatasetError when a page cannot be read and verified from any endpoint."""
        wanted = [self.pages.page_of(i) for i in ids]
        pages = sorted(set(wanted))
        names = [self._name(p) for p in pages]
        self.cache.pin(names)
        try:
            start = time.perf_counter()
            futures = {page: self._start(page) for page in pages}
            for future in futures.values():
                future.result()
            waited = time.perf_counter() - start
            rows = np.empty((len(ids), self.seq_len + 1), dtype=np.int64)
            loaded = {page: self._load(page) for page in pages}
            for row, (sample_id, page) in enumerate(zip(ids, wanted, strict=True)):
                _, _, first, _ = self.pages.locate(page)
                rows[row] = loaded[page][sample_id - first]
        finally:
            self.cache.unpin(names)
        with self._lock:
            self.stats.wait_s += waited
        return torch.from_numpy(rows)  # (B, seq_len + 1)

    def _name(self, page: int) -> str:
        shard, local, _, _ = self.pages.locate(page)
        return f"{shard:06d}-{local:08d}.page"

    def _load(self, page: int) -> np.ndarray:
        _, _, _, count = self.pages.locate(page)
        data = np.fromfile(self.cache.path(self._name(page)), dtype=self._dtype)
        return data.reshape(count, self.seq_len + 1)

    def _start(self, page: int) -> Future[None]:
        """The read of `page`: done at once if cached, else the one in flight or a new one."""
        with self._lock:
            if page in self._inflight:
                return self._inflight[page]
            if self.cache.has(self._name(page)):
                self.stats.cached_pages += 1
                done: Future[None] = Future()
                done.set_result(None)
                return done
            future = self._pool.submit(self._fetch_page, page)
            self._inflight[page] = future
        future.add_done_callback(lambda _: self._forget(page))
        return future

    def _forget(self, page: int) -> None:
        with self._lock:
            self._inflight.pop(page, None)

    def _digest(self, shard: int, local: int) -> bytes:
        with self._index_lock:  # one read of each shard's index, however many page reads wait on it
            index = self._indexes.get(shard)
            if index is None:
                index = self._indexes[shard] = self._read_index(shard)
        return index[local * PAGE_DIGEST_BYTES:(local + 1) * PAGE_DIGEST_BYTES]

    def _read_index(self, shard: int) -> bytes:
        info = self.manifest.shards[shard]
        size = pages_in(info.num_samples, self.manifest.page_samples) * PAGE_DIGEST_BYTES
        path = self._index_dir / f"{shard:06d}.idx"
        if path.is_file() and path.stat().st_size == size and _sha256_file(path) == info.index_sha256:
            return path.read_bytes()
        reasons = []
        for attempt in range(PAGE_ATTEMPTS):
            source = self.sources[attempt % len(self.sources)]
            res = source.client.get(source.bucket, info.index_key, max_bytes=size, sha256=info.index_sha256,
                                    budget=self.budget)
            if res.status is Status.OK and res.data is not None and len(res.data) == size:
                with self._lock:
                    self.stats.fetched_bytes += size
                _write_atomic(path, res.data)
                return res.data
            got = f"{len(res.data or b'')} bytes, expected {size}"
            reasons.append(f"{source.name}: {res.status.name} ({res.error or got})")
        raise DatasetError(f"shard index {info.index_key} could not be read: {'; '.join(reasons)}")

    def _fetch_page(self, page: int) -> None:
        shard, local, _, _ = self.pages.locate(page)
        key = self.manifest.shards[shard].key
        offset, length = self.pages.byte_range(page)
        expected = self._digest(shard, local)
        name = self._name(page)
        target = self.cache.path(name)
        tmp = target.with_name(f"{name}.{threading.get_ident()}.part")
        reasons = []
        for attempt in range(PAGE_ATTEMPTS):
            source = self.sources[attempt % len(self.sources)]
            with tmp.open("wb+") as sink, deadline(time.monotonic() + self.budget.allowance_s(length), self.budget):
                res = source.client.get_range(source.bucket, key, offset, length, sink, budget=self.budget)
                got = sink.tell()
            with self._lock:
                self.stats.fetched_bytes += got
            if res.status is not Status.OK:
                reason = f"{res.status.name} ({res.error})"
            elif hashlib.sha256(tmp.read_bytes()).digest() != expected:
                reason = "page digest does not match the shard index"
            else:
                os.replace(tmp, target)
                self.cache.add(name, length)
                with self._lock:
                    self.stats.fetched_pages += 1
                return
            why = f"page {local} of {key} from {source.name} refused: {reason}"
            logger.warning(f"{why}; reading it again (attempt {attempt + 2}/{PAGE_ATTEMPTS})"
                           if attempt + 1 < PAGE_ATTEMPTS else why)
            with self._lock:
                self.stats.refused_pages += 1
                self.stats.refusals.append(why)
            reasons.append(why)
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"page {local} of {key} could not be read and verified: {'; '.join(reasons)}")


def read_manifest(client: ObjectReader, bucket: str) -> tuple[DatasetManifest, bytes]:
    """The dataset manifest of `bucket` (parsed, raw). Raises DatasetError."""
    res = client.get(bucket, layout.dataset_manifest_key(), max_bytes=MANIFEST_MAX_BYTES)
    if res.status is not Status.OK or res.data is None:
        raise DatasetError(f"dataset manifest {bucket}/{layout.dataset_manifest_key()}: {res.status.name} "
                           f"({res.error})")
    return load_manifest(res.data), res.data


def fetch_dataset(client: ObjectReader, bucket: str, cache_dir: Path, *, cache_gb: float = 10.0,
                  mirrors: list[DataSource] | None = None) -> tuple[DatasetManifest, PagedDataset]:
    """The manifest and the tokenizer of the dataset bucket (nothing else is read up front), and the
    corpus as a `PagedDataset` caching pages under `cache_dir` (at most `cache_gb`). The manifest always
    comes from the owner's bucket: mirrors only serve pages, each checked against its digests.

    A cache of another corpus (another manifest) is removed. Raises DatasetError."""
    cache_dir = Path(cache_dir)
    manifest, raw = read_manifest(client, bucket)
    corpus_dir = cache_dir / hashlib.sha256(raw).hexdigest()[:16]
    if cache_dir.is_dir():
        for old in cache_dir.iterdir():
            if old.is_dir() and old != corpus_dir:
                shutil.rmtree(old, ignore_errors=True)  # the cache of an older corpus
    tok = manifest.tokenizer
    tok_path = corpus_dir / tok.key
    if not (tok_path.is_file() and tok_path.stat().st_size == tok.bytes and _sha256_file(tok_path) == tok.sha256):
        res = client.get(bucket, tok.key, max_bytes=min(tok.bytes, TOKENIZER_MAX_BYTES), sha256=tok.sha256)
        if res.status is not Status.OK or res.data is None:
            raise DatasetError(f"dataset tokenizer {bucket}/{tok.key}: {res.status.name} ({res.error})")
        _write_atomic(tok_path, res.data)
    _write_atomic(corpus_dir / layout.dataset_manifest_key(), raw)
    sources = [DataSource(client, bucket, "owner")] + list(mirrors or [])
    dataset = PagedDataset(manifest, sources, corpus_dir, max(1, int(cache_gb * (1 << 30))))
    return manifest, dataset
