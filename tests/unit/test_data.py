"""Data: the deterministic sample assignment, receipts, shards and manifest, fetch with a verified cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.dataset import DataSource, fetch_dataset
from storage.s3 import GetResult, ObjectInfo, Status
from template.harness.prepare import corpus_writer, pipeline, tokenization
from template.harness.prepare.corpus_writer import CorpusWriter
from template.harness.prepare.manifest import verify_local
from template.harness.prepare.pipeline import prepare_corpus
from template.harness.prepare.tokenization import EOS_TOKEN
from template.protocol import layout
from template.protocol.data import (
    SPAN_SLOTS,
    DatasetError,
    DatasetManifest,
    PageMap,
    TokenDataset,
    active_span,
    data_receipt,
    heldout_ids,
    permute,
    sample_ids,
)

ROOT = Path(__file__).resolve().parents[2]
PINNED_PERMUTE = [2, 0, 5, 1]
CASES = [(0, 0, 7, 16, 1000), (5, 123, 7, 8, 100), (2, 99_999, 1234, 40, 50_000), (20, 3, 0, 10, 100)]


def test_sampler_is_identical_in_another_process():
    script = (
        "import json, sys; from template.protocol.data import sample_ids, heldout_ids, data_receipt\n"
        f"cases = {CASES!r}\n"
        "out = [[sample_ids(*c), heldout_ids(c[1], c[2], 5, c[4] - 10, c[4])] for c in cases]\n"
        "print(json.dumps([out, data_receipt(out[0][0])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different hash seed must not matter
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                          check=True, timeout=60)
    here = [[sample_ids(*c), heldout_ids(c[1], c[2], 5, c[4] - 10, c[4])] for c in CASES]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [here, data_receipt(here[0][0])]


def test_assignment_is_pinned():
    # Guard: every node must compute the same ids; changing the rule is a protocol change.
    assert sample_ids(0, 0, 7, 5, 1000) == [915, 916, 917, 918, 919]
    assert heldout_ids(0, 7, 3, 900, 1000) == [995, 986, 939]
    assert permute([0, 1, 2, 3], 10, "pin").tolist() == PINNED_PERMUTE
    assert data_receipt([1, 2, 3]) == hashlib.sha256(np.array([1, 2, 3], "<i8").tobytes()).hexdigest()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 64), st.integers(0, 10**6), st.integers(0, 2**32))
def test_uids_in_one_window_do_not_overlap(num_train, n, window, seed):
    num_uids = min(num_train // n, 40)
    seen: set[int] = set()
    for uid in range(num_uids):
        ids = sample_ids(uid, window, seed, n, num_train)
        assert len(ids) == n and len(set(ids)) == n
        assert all(0 <= i < num_train for i in ids)
        assert seen.isdisjoint(ids)
        seen.update(ids)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 500), st.integers(1, 300), st.integers(1, 300), st.integers(0, 1000))
def test_ids_stay_in_range_beyond_capacity(uid, n, num_train, window):
    ids = sample_ids(uid, window, 7, n, num_train)
    assert len(ids) == n and all(0 <= i < num_train for i in ids)


def test_windows_and_seeds_change_the_assignment():
    base = sample_ids(1, 10, 7, 32, 10_000)
    assert sample_ids(1, 11, 7, 32, 10_000) != base
    assert sample_ids(1, 10, 8, 32, 10_000) != base
    assert sample_ids(2, 10, 7, 32, 10_000) != base
    assert sample_ids(1, 10, 7, 32, 10_000) == base


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 500), st.integers(0, 64), st.integers(0, 10**6))
def test_heldout_range_is_never_assigned(num_train, num_heldout, n, window):
    num_samples = num_train + num_heldout
    for uid in range(3):
        assert all(i < num_train for i in sample_ids(uid, window, 7, max(n, 1), num_train))
    held = heldout_ids(window, 7, n, num_train, num_samples)
    assert len(held) == min(n, num_heldout) and len(set(held)) == len(held)
    assert all(num_train <= i < num_samples for i in held)


def test_bad_sampler_arguments_are_refused():
    with pytest.raises(ValueError):
        sample_ids(-1, 0, 7, 4, 100)
    with pytest.raises(ValueError):
        sample_ids(0, 0, 7, 4, 0)
    with pytest.raises(ValueError):
        heldout_ids(0, 7, 4, 100, 100)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=50), st.integers(0, 49), st.integers(1, 2**20))
def test_receipt_changes_with_ids(ids, position, delta):
    position %= len(ids)
    changed = list(ids)
    changed[position] += delta
    assert data_receipt(changed) != data_receipt(ids)
    assert data_receipt(ids + [0]) != data_receipt(ids)
    if len(set(ids)) > 1:
        assert data_receipt(list(reversed(ids))) != data_receipt(ids) or ids == list(reversed(ids))




# -- the keyed bijection and the schedule


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**64), st.integers(0, 10**6))
def test_permute_is_a_bijection_of_its_range(size, seed, window):
    out = permute(np.arange(size), size, "test", seed, window)
    assert sorted(out.tolist()) == list(range(size))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 2**62), st.lists(st.integers(0, 2**62), min_size=1, max_size=20), st.integers(0, 2**32))
def test_permute_one_position_at_a_time_agrees_with_the_vector(size, raw, seed):
    positions = [p % size for p in raw]
    vector = permute(np.asarray(positions * 3), size, seed).tolist()  # > 8 positions: the numpy path
    one_by_one = [int(permute([p], size, seed)[0]) for p in positions]  # the Python-int path
    assert vector == one_by_one * 3
    assert all(0 <= v < size for v in vector)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10**7), st.integers(0, 10**6), st.integers(0, 2**32))
def test_active_spans_cover_every_slot_once_per_epoch(num_slots, epoch, seed):
    span = min(num_slots, SPAN_SLOTS)
    num_spans = num_slots // span
    if num_spans > 50:
        num_slots, num_spans = 50 * span, 50
    covered = []
    for turn in range(num_spans):
        first, size = active_span(epoch * num_spans + turn, seed, num_slots)
        assert size >= span
        covered.extend(range(first, first + size))
    assert sorted(covered) == list(range(num_slots))


def test_assignment_cost_does_not_grow_with_the_corpus():
    # 5e8 samples: one uid's ids without touching the rest of the range (issue 28: was 3.3 s, 680 MB)
    ids = sample_ids(3, 1234, 7, 32, 500_000_000)
    assert len(ids) == 32 and ids == list(range(ids[0], ids[0] + 32)) and ids[0] % 32 == 0
    assert all(0 <= i < 500_000_000 for i in ids)


def test_a_slot_is_whole_pages_when_pages_divide_it():
    for uid in range(20):
        ids = sample_ids(uid, 5, 7, 64, 1_000_000)
        assert ids[0] % 16 == 0 and len({i // 16 for i in ids}) == 4  # 4 pages of 16 samples


# -- the paged corpus: prepare, manifest, pages


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        words = " ".join(f"word{(i * 7 + j) % 97}" for j in range(400))
        (folder / f"doc{i}.txt").write_text(f"Document number {i}.\n{words}\n")
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetManifest]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data")
    corpus = _corpus(root / "corpus")
    manifest = prepare_corpus(root / "out", 16, str(corpus), vocab_size=400, heldout_fraction=0.1, page_samples=4,
                              shard_bytes=20 * 4 * 34)
    return root, manifest


def _all_samples(out: Path, manifest: DatasetManifest) -> np.ndarray:
    parts = [np.fromfile(out / s.key, dtype="<u2") for s in manifest.shards]
    return np.concatenate(parts).reshape(-1, manifest.seq_len + 1).astype(np.int64)


def test_prepared_corpus_is_paged_and_verified(prepared):
    root, manifest = prepared
    out = root / "out"
    assert manifest.dtype == "uint16" and manifest.vocab_size <= 400 and manifest.seq_len == 16
    assert 0 < manifest.heldout_start < manifest.num_samples and manifest.heldout_start % 4 == 0
    assert len(manifest.shards) > 2 and all(s.num_samples <= 20 * 4 for s in manifest.shards)
    verify_local(out, manifest)  # every page against its index, every index against the manifest
    tokenizer = json.loads((out / manifest.tokenizer.key).read_text())
    assert tokenizer["added_tokens"][0]["content"] == EOS_TOKEN and manifest.tokenizer.eos_id == 0
    everything = _all_samples(out, manifest)
    assert everything.shape == (manifest.num_samples, 17) and int(everything.max()) < manifest.vocab_size
    assert int((everything == manifest.tokenizer.eos_id).sum()) > 0  # documents are joined with EOS


def test_prepare_is_idempotent(prepared):
    root, manifest = prepared
    shard_path = root / "out" / manifest.shards[0].key
    before = shard_path.stat().st_mtime_ns
    again = prepare_corpus(root / "out", 16, str(root / "corpus"), vocab_size=400, heldout_fraction=0.1,
                           page_samples=4, shard_bytes=20 * 4 * 34)
    assert again == manifest and shard_path.stat().st_mtime_ns == before


def test_prepare_resumes_after_a_kill_with_the_same_output(prepared, tmp_path, monkeypatch):
    root, manifest = prepared
    monkeypatch.setattr(tokenization, "BATCH_CHARS", 1)  # a batch (and a checkpoint) per document
    monkeypatch.setattr(pipeline, "CHECKPOINT_EVERY_S", -1.0)
    monkeypatch.setattr(corpus_writer, "CHUNK_PAGES", 2)
    args = dict(vocab_size=400, heldout_fraction=0.1, page_samples=4, shard_bytes=20 * 4 * 34)
    clean = prepare_corpus(tmp_path / "clean", 16, str(root / "corpus"), **args)
    real = CorpusWriter.add_tokens
    calls = []

    def dies_on_the_fourth_document(self, tokens):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(self, tokens)

    monkeypatch.setattr(CorpusWriter, "add_tokens", dies_on_the_fourth_document)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(tmp_path / "killed", 16, str(root / "corpus"), **args)
    assert (tmp_path / "killed" / "prepare_state.json").exists()
    monkeypatch.setattr(CorpusWriter, "add_tokens", real)
    resumed = prepare_corpus(tmp_path / "killed", 16, str(root / "corpus"), **args)
    assert resumed == clean
    for shard in clean.shards:
        assert (tmp_path / "killed" / shard.key).read_bytes() == (tmp_path / "clean" / shard.key).read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst", "parquet", "txt.zst"])
def test_prepare_reads_compressed_and_columnar_inputs(tmp_path, fmt):
    texts = [f"Row {i}: " + " ".join(f"tok{(i * 5 + j) % 61}" for j in range(300)) for i in range(8)]
    folder = tmp_path / "in"
    folder.mkdir()
    if fmt.startswith("jsonl"):
        raw = "".join(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(texts)).encode()
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": texts, "id": list(range(8))}), folder / "part-0.parquet")
    else:
        raw = "\n".join(texts).encode()
    if fmt.endswith(".gz"):
        import gzip

        (folder / f"a.{fmt}").write_bytes(gzip.compress(raw))
    elif fmt.endswith(".zst"):
        import zstandard

        (folder / f"a.{fmt}").write_bytes(zstandard.ZstdCompressor().compress(raw))
    manifest = prepare_corpus(tmp_path / "out", 16, str(folder), vocab_size=300, text_field="body",
                              heldout_fraction=0.2, page_samples=4)
    verify_local(tmp_path / "out", manifest)
    assert manifest.num_samples >= 8
    if fmt != "txt.zst":
        with pytest.raises(ValueError, match="nope"):
            prepare_corpus(tmp_path / "bad", 16, str(folder), vocab_size=300, text_field="nope", page_samples=4)


def test_page_map_locates_every_sample(prepared):
    _, manifest = prepared
    pages = PageMap(manifest)
    seen = 0
    for page in range(manifest.num_pages):
        shard, local, first, count = pages.locate(page)
        assert first == seen and all(pages.page_of(first + j) == page for j in range(count))
        offset, length = pages.byte_range(page)
        assert offset == local * 4 * 34 and length == count * 34
        seen += count
    assert seen == manifest.num_samples
    with pytest.raises(IndexError):
        pages.page_of(manifest.num_samples)


class MemoryStore:
    """In-memory stand-in for S3Client.get / get_range (the storage behaviour itself is tested against
    SeaweedFS in tests/integration/test_data_plane.py)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.gets: list[str] = []

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None,
            budget: object = None) -> GetResult:
        self.gets.append(key)
        data = self.objects.get(key)
        if data is None:
            return GetResult(Status.NOT_FOUND, None, None, "missing")
        info = ObjectInfo(key, len(data), 0.0, "")
        if max_bytes is not None and len(data) > max_bytes:
            return GetResult(Status.TOO_LARGE, None, info, "too large")
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            return GetResult(Status.ERROR, None, info, "sha256 mismatch")
        return GetResult(Status.OK, data, info, None)

    def get_range(self, bucket, key, offset, length, sink, *, budget=None) -> GetResult:
        self.gets.append(f"{key}@{offset}")
        data = self.objects.get(key)
        if data is None:
            return GetResult(Status.NOT_FOUND, None, None, "missing")
        sink.write(data[offset:offset + length])
        return GetResult(Status.OK, None, None, None)


def _store_from(out: Path, manifest: DatasetManifest) -> MemoryStore:
    keys = [manifest.tokenizer.key] + [s.key for s in manifest.shards] + [s.index_key for s in manifest.shards]
    objects = {key: (out / key).read_bytes() for key in keys}
    objects[layout.dataset_manifest_key()] = manifest.to_json()
    return MemoryStore(objects)


def test_fetch_reads_manifest_and_tokenizer_then_only_the_pages_used(prepared, tmp_path):
    root, manifest = prepared
    store = _store_from(root / "out", manifest)
    fetched, dataset = fetch_dataset(store, "dataset", tmp_path / "cache")
    assert fetched == manifest and len(dataset) == manifest.num_samples
    assert store.gets == [layout.dataset_manifest_key(), manifest.tokenizer.key]
    everything = _all_samples(root / "out", manifest)
    ids = [5, 6, manifest.num_samples - 1]
    assert dataset.batch(ids).tolist() == everything[ids].tolist()
    ranges = [g for g in store.gets if "@" in g]
    assert len(ranges) == 2  # pages 1 and the last; ids 5 and 6 share one
    store.gets.clear()
    assert dataset.batch(ids).tolist() == everything[ids].tolist()
    assert store.gets == []  # cached
    dataset.close()


def test_a_corrupt_page_is_refused_and_read_from_the_mirror(prepared, tmp_path):
    root, manifest = prepared
    good = _store_from(root / "out", manifest)
    bad = _store_from(root / "out", manifest)
    key = manifest.shards[0].key
    bad.objects[key] = b"\x01" * len(bad.objects[key])
    _, dataset = fetch_dataset(bad, "dataset", tmp_path / "a", mirrors=[DataSource(good, "dataset", "mirror")])
    assert dataset.batch([0]).tolist() == _all_samples(root / "out", manifest)[[0]].tolist()
    stats = dataset.take_stats()
    assert stats.refused_pages == 1 and "page digest does not match" in stats.refusals[0]
    dataset.close()
    _, alone = fetch_dataset(bad, "dataset", tmp_path / "b")
    with pytest.raises(DatasetError, match="could not be read and verified"):
        alone.batch([0])
    alone.close()


def test_fetch_refuses_a_bad_manifest(prepared, tmp_path):
    root, manifest = prepared
    store = _store_from(root / "out", manifest)
    store.objects[layout.dataset_manifest_key()] = b'{"not": "a manifest"}'
    with pytest.raises(DatasetError, match="manifest"):
        fetch_dataset(store, "dataset", tmp_path / "b")
    del store.objects[layout.dataset_manifest_key()]
    with pytest.raises(DatasetError, match="NOT_FOUND"):
        fetch_dataset(store, "dataset", tmp_path / "c")


def test_manifest_validation_catches_inconsistency(prepared):
    _, manifest = prepared
    raw = manifest.model_dump()
    with pytest.raises(ValueError):
        DatasetManifest.model_validate({**raw, "num_samples": manifest.num_samples + 1})
    with pytest.raises(ValueError):
        DatasetManifest.model_validate({**raw, "heldout_start": manifest.num_samples + 1})
    with pytest.raises(ValueError):
        DatasetManifest.model_validate({**raw, "dtype": "uint16", "vocab_size": 70_000})
    with pytest.raises(ValueError):
        DatasetManifest.model_validate({**raw, "heldout_start": manifest.heldout_start - 1})  # not a page edge


def test_manifest_grows_with_shards_not_samples(prepared):
    _, manifest = prepared
    per_shard = len(manifest.to_json()) / len(manifest.shards)
    bigger = manifest.model_copy(update={"num_samples": manifest.num_samples * 10**6})
    assert per_shard < 400 and len(bigger.to_json()) - len(manifest.to_json()) < 16
    # 100B tokens of uint32 at 1 GiB shards: ~400 shards, ~100 KiB of manifest (cap 16 MiB)
    assert 400 * per_shard < 16 << 20


def test_local_token_dataset_maps_global_ids_across_shards(tmp_path):
    first = np.arange(3 * 5, dtype=np.uint16).reshape(3, 5)
    second = np.arange(100, 100 + 2 * 5, dtype=np.uint16).reshape(2, 5)
    np.save(tmp_path / "a.npy", first)
    np.save(tmp_path / "b.npy", second)
    dataset = TokenDataset([tmp_path / "a.npy", tmp_path / "b.npy"], seq_len=4)
    assert len(dataset) == 5
    assert dataset.batch([4, 0, 3]).tolist() == [second[1].tolist(), first[0].tolist(), second[0].tolist()]
    with pytest.raises(IndexError):
        dataset.batch([5])
    with pytest.raises(DatasetError):
        TokenDataset([tmp_path / "a.npy"], seq_len=5)


def test_prepare_with_a_given_tokenizer_uses_it_as_is(prepared, tmp_path):
    root, manifest = prepared
    given = root / "out" / manifest.tokenizer.key
    out = prepare_corpus(tmp_path / "out", 16, str(root / "corpus"), tokenizer_file=given, page_samples=4)
    assert out.tokenizer.sha256 == manifest.tokenizer.sha256 and out.vocab_size == manifest.vocab_size
    assert (tmp_path / "out" / out.tokenizer.key).read_bytes() == given.read_bytes()
    verify_local(tmp_path / "out", out)
