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

from storage.dataset import fetch_dataset
from storage.s3 import GetResult, ObjectInfo, Status
from template.harness.prepare_data import EOS_TOKEN, prepare_dataset
from template.protocol import layout
from template.protocol.data import (
    DatasetError,
    DatasetManifest,
    TokenDataset,
    data_receipt,
    heldout_ids,
    sample_ids,
)

ROOT = Path(__file__).resolve().parents[2]
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
    assert sample_ids(0, 0, 7, 5, 1000) == [332, 489, 603, 597, 403]
    assert heldout_ids(0, 7, 3, 900, 1000) == [964, 924, 901]
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


# -- shards, manifest, fetch


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetManifest]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(6):
        words = " ".join(f"word{(i * 7 + j) % 97}" for j in range(400))
        (corpus / f"doc{i}.txt").write_text(f"Document number {i}.\n{words}\n")
    manifest = prepare_dataset(root / "out", seq_len=16, vocab_size=400, source=str(corpus), heldout_fraction=0.1)
    return root, manifest


def test_prepared_dataset_is_consistent(prepared):
    root, manifest = prepared
    out = root / "out"
    assert manifest.dtype == "uint16" and manifest.vocab_size <= 400 and manifest.seq_len == 16
    assert 0 < manifest.heldout_start < manifest.num_samples
    assert sum(s.num_samples for s in manifest.shards) == manifest.num_samples
    for shard in manifest.shards:
        data = (out / shard.key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard.sha256 and len(data) == shard.bytes
    tokenizer = json.loads((out / manifest.tokenizer.key).read_text())
    assert tokenizer["added_tokens"][0]["content"] == EOS_TOKEN and manifest.tokenizer.eos_id == 0
    dataset = TokenDataset([out / s.key for s in manifest.shards], manifest.seq_len)
    everything = dataset.batch(list(range(len(dataset))))
    assert everything.dtype == torch.long and tuple(everything.shape) == (manifest.num_samples, 17)
    assert int(everything.max()) < manifest.vocab_size
    assert int((everything == manifest.tokenizer.eos_id).sum()) > 0  # documents are joined with EOS


def test_prepare_is_idempotent(prepared):
    root, manifest = prepared
    shard_path = root / "out" / manifest.shards[0].key
    before = shard_path.stat().st_mtime_ns
    again = prepare_dataset(root / "out", seq_len=16, vocab_size=400, source=str(root / "corpus"),
                            heldout_fraction=0.1)
    assert again == manifest and shard_path.stat().st_mtime_ns == before


def test_batch_maps_global_ids_across_shards(tmp_path):
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


class MemoryStore:
    """In-memory stand-in for S3Client.get (the storage behaviour itself is tested against SeaweedFS)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.gets: list[str] = []

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None) -> GetResult:
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


def _store_from(out: Path, manifest: DatasetManifest) -> MemoryStore:
    keys = [manifest.tokenizer.key] + [s.key for s in manifest.shards]
    objects = {key: (out / key).read_bytes() for key in keys}
    objects[layout.dataset_manifest_key()] = manifest.to_json()
    return MemoryStore(objects)


def test_fetch_downloads_then_reuses_verified_cache(prepared, tmp_path):
    root, manifest = prepared
    store = _store_from(root / "out", manifest)
    fetched, dataset = fetch_dataset(store, "dataset", tmp_path / "cache")
    assert fetched == manifest and len(dataset) == manifest.num_samples
    assert len(store.gets) == 2 + len(manifest.shards)

    store.gets.clear()
    fetch_dataset(store, "dataset", tmp_path / "cache")
    assert store.gets == [layout.dataset_manifest_key()]

    corrupted = tmp_path / "cache" / manifest.shards[-1].key
    corrupted.write_bytes(b"\x00" * manifest.shards[-1].bytes)  # same size, wrong bytes
    store.gets.clear()
    _, dataset = fetch_dataset(store, "dataset", tmp_path / "cache")
    assert store.gets == [layout.dataset_manifest_key(), manifest.shards[-1].key]
    assert hashlib.sha256(corrupted.read_bytes()).hexdigest() == manifest.shards[-1].sha256


def test_fetch_refuses_bad_remote_data(prepared, tmp_path):
    root, manifest = prepared
    store = _store_from(root / "out", manifest)
    shard = manifest.shards[0]
    store.objects[shard.key] = b"\x01" * shard.bytes
    with pytest.raises(DatasetError, match=shard.key):
        fetch_dataset(store, "dataset", tmp_path / "a")
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
