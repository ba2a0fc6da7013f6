"""The paged corpus on a real SeaweedFS: prepare -> bucket -> a miner's window, a corrupt page refused and
read again, a throttled endpoint cut at its budget, the page cache under its limit, a verified mirror."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from storage.bounded import FetchBudget
from storage.dataset import DataSource, PagedDataset, fetch_dataset
from storage.s3 import S3Client
from template.harness.prepare.pipeline import prepare_corpus
from template.harness.prepare.publish import mirror_dataset, upload_dataset
from template.node.miner import plan_window, train_inner_steps
from template.protocol.config import HParams
from template.protocol.data import EVAL_MIN_PAGES, DatasetManifest, PageMap, eval_ids_by_page, sample_ids

SEQ = 16


def _texts(n: int) -> list[str]:
    return [f"Row {i}: " + " ".join(f"tok{(i * 5 + j) % 83}" for j in range(400)) for i in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetManifest]:
    """A parquet file the test writes, prepared into pages of 4 samples (one window's slot: 2 pages)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("plane")
    (root / "in").mkdir()
    pq.write_table(pa.table({"content": _texts(40)}), root / "in" / "part-00000.parquet")
    manifest = prepare_corpus(root / "out", SEQ, str(root / "in"), vocab_size=400, text_field="content",
                              heldout_fraction=0.1, page_samples=4, shard_bytes=32 * 4 * (SEQ + 1) * 2)
    return root, manifest


@pytest.fixture(scope="module")
def published(seaweed, corpus) -> tuple[Path, DatasetManifest]:
    root, manifest = corpus
    upload_dataset(seaweed.writer("alice"), "alice", root / "out", manifest)
    return corpus


def test_a_parquet_file_goes_through_prepare_bucket_and_a_miners_window(seaweed, published, tmp_path):
    root, manifest = published
    assert len(manifest.shards) > 2
    _, dataset = fetch_dataset(seaweed.reader("alice"), "alice", tmp_path / "cache")
    hp = HParams(seq_len=SEQ, vocab_size=512, inner_steps=2, batch_size=4)
    from template.node.sync import GlobalModel

    gm = GlobalModel.initial(hp, torch.device("cpu"))
    miner = SimpleNamespace(uid=1, hp=hp, num_train=manifest.num_train, dataset=dataset, gm=gm, trainer=None,
                            device=torch.device("cpu"), clock=SimpleNamespace(last_block=lambda w: 0),
                            optimizer=torch.optim.AdamW(gm.model.parameters(), lr=hp.inner_lr))
    for window in range(3):
        plan = plan_window(miner, window)  # prefetches this window's and the next window's pages
        result = train_inner_steps(miner, plan)
        assert result.tokens == 8 * SEQ and torch.isfinite(torch.tensor(result.mean_loss))
    dataset.close()  # waits for the last prefetch
    stats = dataset.take_stats()
    page_bytes = manifest.page_samples * manifest.sample_bytes
    # the pages of windows 0-3 (the third window prefetched the fourth's), each once, plus their shard indexes
    pages = PageMap(manifest)
    used = {pages.page_of(i) for w in range(4) for i in sample_ids(1, w, hp.data_seed, 8, manifest.num_train)}
    assert stats.fetched_pages == len(used) and stats.refused_pages == 0
    assert len(used) * page_bytes <= stats.fetched_bytes <= len(used) * page_bytes + len(manifest.shards) * 32 * 32


def test_mirror_then_a_corrupt_page_is_refused_and_read_from_the_mirror(seaweed, published, tmp_path):
    root, manifest = published
    mirror_dataset(seaweed.reader("alice"), "alice", seaweed.writer("bob"), "bob")
    # corrupt one page of the owner's copy (the same size: only its digest tells)
    shard = manifest.shards[1]
    data = bytearray((root / "out" / shard.key).read_bytes())
    data[5] ^= 0xFF
    owner = seaweed.writer("alice")
    owner.put("alice", shard.key, bytes(data))
    try:
        mirror = DataSource(seaweed.reader("bob"), "bob", "mirror bob")
        _, dataset = fetch_dataset(seaweed.reader("alice"), "alice", tmp_path / "cache", mirrors=[mirror])
        first = int(PageMap(manifest).first_sample[1])
        rows = dataset.batch([first, first + 5])
        stats = dataset.take_stats()
        assert stats.refused_pages == 1 and "page digest does not match the shard index" in stats.refusals[0]
        assert "owner" in stats.refusals[0] and stats.fetched_pages == 2
        expected = PagedDataset(manifest, [mirror], tmp_path / "direct", 1 << 20)
        assert rows.tolist() == expected.batch([first, first + 5]).tolist()
        dataset.close()
        expected.close()
    finally:
        owner.put("alice", shard.key, (root / "out" / shard.key).read_bytes())


class TrickleProxy:
    """A loopback TCP proxy to `target` whose answers come back `step` bytes every `pause_s` (a throttled
    dataset endpoint)."""

    def __init__(self, target: tuple[str, int], step: int = 16, pause_s: float = 0.3) -> None:
        self.target, self.step, self.pause_s = target, step, pause_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target)

        def forward() -> None:
            try:
                while chunk := client.recv(65536):
                    upstream.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=forward, daemon=True).start()
        try:
            while not self.stopped.is_set() and (chunk := upstream.recv(self.step)):
                client.sendall(chunk)
                time.sleep(self.pause_s)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def trickle(seaweed) -> Iterator[TrickleProxy]:
    host, port = seaweed.endpoint.removeprefix("http://").split(":")
    proxy = TrickleProxy((host, int(port)))
    yield proxy
    proxy.close()


def test_a_throttled_endpoint_ends_in_its_budget_and_the_next_endpoint_serves(seaweed, published, trickle,
                                                                              tmp_path):
    _, manifest = published
    read = seaweed.neurons["alice"][1]
    budget = FetchBudget(total_s=2.0, min_bytes_per_s=64 << 10, startup_s=0.5)
    slow = S3Client(f"http://127.0.0.1:{trickle.port}", read.access_key, read.secret_key, budget=budget,
                    max_attempts=1)
    fast = DataSource(seaweed.reader("alice"), "alice", "direct")
    # indexes come through the direct endpoint first, so only the page reads meet the trickle
    warm = PagedDataset(manifest, [fast], tmp_path / "cache", 1 << 20)
    warm.batch([0])
    warm.close()
    (tmp_path / "cache" / "pages" / "000000-00000000.page").unlink()
    dataset = PagedDataset(manifest, [DataSource(slow, "alice", "throttled"), fast], tmp_path / "cache", 1 << 20,
                           budget=budget)
    assert dataset.batch([0]).shape == (1, SEQ + 1)
    stats = dataset.take_stats()
    assert stats.refused_pages == 1 and "TIMEOUT" in stats.refusals[0] and "throttled" in stats.refusals[0]
    dataset.close()


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.iterdir():
        try:
            total += path.stat().st_size if not path.name.endswith(".part") else 0
        except FileNotFoundError:  # evicted meanwhile
            pass
    return total


def test_the_validators_random_batch_by_page_reads_its_few_pages(seaweed, published, tmp_path):
    """16 random ids outside two judged slots, drawn by page over EVAL_MIN_PAGES pages of 4: 4 page reads
    through the real PagedDataset (drawn per id, the same batch would be about 16)."""
    _, manifest = published
    _, dataset = fetch_dataset(seaweed.reader("alice"), "alice", tmp_path / "cache")
    assert dataset.page_samples == manifest.page_samples == 4
    assigned = {i for uid in range(2) for i in sample_ids(uid, 3, 7, 8, manifest.num_train)}
    ids = eval_ids_by_page(12345, 16, manifest.num_train, assigned, dataset.page_samples, min_pages=EVAL_MIN_PAGES)
    assert len(set(ids)) == 16 and not set(ids) & assigned and max(ids) < manifest.num_train
    batch = dataset.batch(ids)
    dataset.close()
    pages = PageMap(manifest)
    touched = {pages.page_of(i) for i in ids}
    stats = dataset.take_stats()
    assert len(touched) == EVAL_MIN_PAGES == stats.fetched_pages and stats.refused_pages == 0
    assert batch.shape == (16, SEQ + 1)


def test_the_page_cache_stays_under_its_limit(seaweed, published, tmp_path):
    _, manifest = published
    page_bytes = manifest.page_samples * manifest.sample_bytes
    limit = 3 * page_bytes
    dataset = PagedDataset(manifest, [DataSource(seaweed.reader("alice"), "alice", "owner")], tmp_path / "cache",
                           limit)
    folder = tmp_path / "cache" / "pages"
    for start in range(0, manifest.num_train - 8, 8):
        dataset.prefetch(list(range(start + 8, start + 16)))
        dataset.batch(list(range(start, start + 8)))  # 2 pages pinned while read
        # at most the pinned batch (2 pages) and the prefetches landing right now (2) over the limit
        assert _folder_bytes(folder) <= limit + 4 * page_bytes
    dataset.close()
    assert _folder_bytes(folder) <= limit
    assert dataset.cache.used_bytes <= limit
