"""Storage behaviour against a real SeaweedFS server: round trips, pagination, caps, integrity,
per-bucket rights, bad credentials, restarts, and the dataset upload/fetch path."""

from __future__ import annotations

import hashlib
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from storage.dataset import fetch_dataset
from storage.s3 import S3Client, S3Error, Status
from storage.seaweed import SeaweedServer, admin_identity, neuron_identities
from template.harness.prepare.pipeline import prepare_dataset
from template.harness.prepare.publish import upload_dataset
from template.protocol import layout
from template.protocol.data import DatasetError


def _prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}/"


def _count_calls(client: S3Client, operation: str) -> list[int]:
    """A one-element counter incremented on every `operation` request the client sends."""
    counter = [0]

    def bump(**_: object) -> None:
        counter[0] += 1

    client._client.meta.events.register(f"before-call.s3.{operation}", bump)
    return counter


def test_put_get_head_delete_round_trip(seaweed):
    client, key, data = seaweed.writer("alice"), _prefix() + "obj.bin", b"\x00payload\xff" * 100
    put_info = client.put("alice", key, data)
    assert put_info.size == len(data) and put_info.etag == hashlib.md5(data).hexdigest()

    res = client.get("alice", key)
    assert res.status is Status.OK and res.data == data and res.error is None
    assert res.info is not None and res.info.size == len(data)
    head = client.head("alice", key)
    assert head is not None and head.size == len(data) and head.etag == put_info.etag
    assert abs(head.last_modified - time.time()) < 300  # server clock, seconds since the epoch

    client.delete("alice", key)
    assert client.head("alice", key) is None
    missing = client.get("alice", key, max_bytes=10)
    assert missing.status is Status.NOT_FOUND and missing.data is None
    assert client.get("alice", key).status is Status.NOT_FOUND


def test_missing_bucket_is_not_found(seaweed):
    admin = seaweed.client(seaweed.admin)
    assert admin.get("no-such-bucket-x", "k").status is Status.NOT_FOUND


def test_list_follows_every_page(seaweed):
    client, prefix = seaweed.writer("alice"), _prefix()
    keys = [f"{prefix}{i:03d}" for i in range(7)]
    for key in keys:
        client.put("alice", key, key.encode())
    client.put("alice", _prefix() + "other", b"x")  # outside the prefix
    calls = _count_calls(client, "ListObjectsV2")
    listed = client.list("alice", prefix, page_size=2)
    assert sorted(o.key for o in listed) == keys
    assert calls[0] >= 4  # 7 keys at 2 per page
    assert all(o.size == len(o.key) for o in listed)
    assert client.list("alice", _prefix()) == []


def test_size_cap_refuses_before_download(seaweed):
    client, key = seaweed.writer("alice"), _prefix() + "big"
    client.put("alice", key, b"x" * 1000)
    gets = _count_calls(client, "GetObject")
    res = client.get("alice", key, max_bytes=999)
    assert res.status is Status.TOO_LARGE and res.data is None
    assert res.info is not None and res.info.size == 1000
    assert gets[0] == 0  # refused on the HEAD alone
    # An object that grew between HEAD and GET is refused on the GET's headers, body unread.
    info, data = client._download("alice", key, max_bytes=999)
    assert data is None and info.size == 1000
    assert client.get("alice", key, max_bytes=1000).status is Status.OK


def test_sha256_mismatch_is_refused(seaweed):
    client, key, data = seaweed.writer("alice"), _prefix() + "h", b"integrity"
    client.put("alice", key, data)
    bad = client.get("alice", key, sha256=hashlib.sha256(b"other").hexdigest())
    assert bad.status is Status.ERROR and bad.data is None and "sha256" in (bad.error or "")
    good = client.get("alice", key, sha256=hashlib.sha256(data).hexdigest().upper())
    assert good.status is Status.OK and good.data == data


def test_get_many_reports_each_key(seaweed):
    client, prefix = seaweed.writer("bob"), _prefix()
    for i in range(5):
        client.put("bob", f"{prefix}{i}", bytes([i]) * (i + 1) * 10)
    keys = [f"{prefix}{i}" for i in range(5)] + [f"{prefix}missing"]
    results = seaweed.reader("bob").get_many("bob", keys, max_bytes=30)
    assert set(results) == set(keys)
    assert [results[f"{prefix}{i}"].status for i in range(5)] == [Status.OK] * 3 + [Status.TOO_LARGE] * 2
    assert results[f"{prefix}2"].data == bytes([2]) * 30
    assert results[f"{prefix}missing"].status is Status.NOT_FOUND


def test_write_identity_is_confined_to_its_bucket(seaweed):
    alice, key = seaweed.writer("alice"), _prefix() + "k"
    seaweed.writer("bob").put("bob", key, b"bob's")
    with pytest.raises(S3Error, match="bob"):
        alice.put("bob", key, b"overwrite")
    with pytest.raises(S3Error):
        alice.delete("bob", key)
    assert alice.get("bob", key).status is Status.DENIED
    with pytest.raises(S3Error):
        alice.ensure_bucket("dave-new")
    alice.ensure_bucket("alice")  # exists and is its own: fine
    assert seaweed.reader("bob").get("bob", key).data == b"bob's"


def test_read_identity_cannot_write_or_delete(seaweed):
    key = _prefix() + "k"
    seaweed.writer("carol").put("carol", key, b"v1")
    reader = seaweed.reader("carol")
    with pytest.raises(S3Error):
        reader.put("carol", key, b"v2")
    with pytest.raises(S3Error):
        reader.delete("carol", key)
    with pytest.raises(S3Error):
        reader.put("alice", key, b"v2")
    assert reader.get("alice", key).status is Status.DENIED
    assert reader.get("carol", key).data == b"v1"
    assert [o.key for o in reader.list("carol", key)] == [key]


def test_wrong_credentials_are_refused(seaweed):
    key = _prefix() + "k"
    seaweed.writer("alice").put("alice", key, b"secret")
    write, _ = seaweed.neurons["alice"]
    wrong_secret = S3Client(seaweed.endpoint, write.access_key, write.secret_key + "x")
    unknown_key = S3Client(seaweed.endpoint, "UNKNOWNKEY123", "not-a-secret-at-all")
    for client in (wrong_secret, unknown_key):
        assert client.get("alice", key).status is Status.DENIED
        assert client.get("alice", key, max_bytes=100).status is Status.DENIED
        with pytest.raises(S3Error):
            client.put("alice", key, b"forged")
        with pytest.raises(S3Error):
            client.list("alice")
    assert seaweed.reader("alice").get("alice", key).data == b"secret"


def _own_sockets(server: SeaweedServer) -> list[Path]:
    temp = Path(tempfile.gettempdir())
    return [p for port in server.ports.values() for p in temp.glob(f"seaweedfs-*-{port}.sock")]


def test_restart_and_kill_keep_objects_and_client_recovers(tmp_path, seaweed):
    admin = admin_identity()
    write, read = neuron_identities("chaos")
    server = SeaweedServer(tmp_path / "chaos", [admin, write, read])
    with server:
        assert server.endpoint != seaweed.endpoint  # coexists with the session server
        client = S3Client(server.endpoint, write.access_key, write.secret_key, max_attempts=2, deadline_s=5)
        client.ensure_bucket("chaos")
        stored = {f"w/{i}": bytes([i]) * 4096 for i in range(5)}
        for key, data in stored.items():
            client.put("chaos", key, data)

        server.restart()
        assert {k: client.get("chaos", k).data for k in stored} == stored  # same client object
        client.put("chaos", "after-restart", b"ok")

        server.kill()
        assert not server.running and _own_sockets(server) == []
        assert _own_sockets(seaweed.server) != []  # the other server's sockets are left alone
        dead = client.get("chaos", "w/0")
        assert dead.status is Status.ERROR and dead.data is None
        with pytest.raises(S3Error):
            client.put("chaos", "while-dead", b"x")

        server.start()
        assert {k: client.get("chaos", k).data for k in stored} == stored
        assert client.get("chaos", "after-restart").data == b"ok"
    assert not server.running


def test_dataset_upload_and_fetch(tmp_path, seaweed):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 60)
    manifest = prepare_dataset(tmp_path / "out", seq_len=16, vocab_size=300, source=str(corpus), page_samples=4)
    admin = seaweed.client(seaweed.admin)
    admin.ensure_bucket("dataset-test")
    upload_dataset(admin, "dataset-test", tmp_path / "out", manifest)

    reader = seaweed.client(seaweed.admin)
    fetched, dataset = fetch_dataset(reader, "dataset-test", tmp_path / "cache")
    assert fetched == manifest and len(dataset) == manifest.num_samples
    assert tuple(dataset.batch([0, manifest.num_samples - 1]).shape) == (2, 17)
    dataset.close()

    gets = _count_calls(reader, "GetObject")
    _, again = fetch_dataset(reader, "dataset-test", tmp_path / "cache")
    assert gets[0] == 1  # only the manifest: the verified tokenizer is reused
    assert tuple(again.batch([0]).shape) == (1, 17) and gets[0] == 1  # and the cached page
    again.close()

    shard = manifest.shards[0].key
    admin.put("dataset-test", shard, b"tampered")  # the bucket no longer matches its manifest
    _, fresh = fetch_dataset(reader, "dataset-test", tmp_path / "cache2")
    with pytest.raises(DatasetError, match="could not be read and verified"):
        fresh.batch([0])
    fresh.close()
    assert layout.parse_window(shard) is None
