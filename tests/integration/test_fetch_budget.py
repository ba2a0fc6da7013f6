"""Peers' storage cannot stall or fool a node (issue 14): real hostile HTTP servers on 127.0.0.1 and real
SeaweedFS, read through the real path (PeerBuckets -> S3Client -> boto -> storage.bounded)."""

from __future__ import annotations

import time

import pytest
import torch

from gauntlet.checks import FETCH_TIMEOUT, LATE, NO_COMMITMENT, admit_upload
from storage.bounded import FetchBudget
from storage.credentials import BucketAccess
from storage.peers import PeerBuckets, fetch_checkpoint, fetch_record_updates, fetch_uploads
from storage.spool import UploadSpool
from template.protocol import layout
from template.protocol.config import HParams
from template.protocol.reads import ReadStatus
from template.protocol.records import RecordEntry
from template.protocol.sparseloco import CodecParams
from template.sim.hostile_s3 import HostileS3

torch.set_num_threads(1)

BODY = b"x" * 40
BUDGET = FetchBudget(total_s=2.0, min_bytes_per_s=1000, startup_s=1.0)
KEY = layout.gradient_key(3)


def access(endpoint: str, bucket: str, key_id: str = "readkey1", secret: str = "readsecret1") -> str:
    return BucketAccess(endpoint=endpoint, bucket=bucket, access_key_id=key_id, secret_access_key=secret).encode()


def peers_of(commitments: dict[str, str], **kwargs: object) -> PeerBuckets:
    peers = PeerBuckets(commitments=lambda: commitments, budget=BUDGET, **kwargs)  # type: ignore[arg-type]
    peers.refresh()
    return peers


@pytest.mark.parametrize("mode", ["trickle", "drip", "silent"])
def test_slow_or_silent_peer_ends_as_timeout(mode: str) -> None:
    # 40 bytes at 1 byte / 0.5 s would take 20 s: the read is dropped on its budget instead
    with HostileS3(mode, trickle_s=0.5) as srv:
        srv.put("tarpit", KEY, BODY)
        peers = peers_of({"hk": access(srv.endpoint, "tarpit")})
        read = peers.get("hk", KEY, max_bytes=1 << 20)
        assert read.status is ReadStatus.TIMEOUT, read.describe()
        assert ("GET", f"/tarpit/{KEY}") in srv.requests
        assert srv.body_bytes_sent < len(BODY)  # the reader hung up long before the end


def test_timeout_is_its_own_admission_reason() -> None:
    with HostileS3("silent") as srv:
        srv.put("tarpit", KEY, BODY)
        peers = peers_of({"hk": access(srv.endpoint, "tarpit")})
        (upload,) = fetch_uploads(peers, {5: "hk"}, 3, max_bytes=1 << 20)
    adm = admit_upload(upload, window=3, deadline_s=time.time(), hparams=HParams(), shapes={}, expected_receipt="",
                       base_fingerprint="", seen_payloads=set())
    assert (upload.status, adm.reason) == (ReadStatus.TIMEOUT, FETCH_TIMEOUT)


@pytest.mark.parametrize("spooled", [False, True])
def test_window_fetches_run_at_once_and_honest_peers_still_arrive(seaweed, tmp_path, spooled: bool) -> None:
    """Two silent peers and one honest one: the silent reads are in flight together, the honest one is ok;
    the same when each upload goes to disk as it arrives (the validator's `UploadSpool`)."""
    _, read = seaweed.neurons["alice"]
    seaweed.writer("alice").put("alice", KEY, BODY)
    spool = UploadSpool(tmp_path / "spool") if spooled else None
    with HostileS3("silent") as srv:
        srv.put("tarpit-a", KEY, BODY)
        srv.put("tarpit-b", KEY, BODY)
        peers = peers_of({"honest": access(seaweed.endpoint, "alice", read.access_key, read.secret_key),
                          "slow-a": access(srv.endpoint, "tarpit-a"), "slow-b": access(srv.endpoint, "tarpit-b")})
        uploads = fetch_uploads(peers, {1: "honest", 2: "slow-a", 3: "slow-b"}, 3, max_bytes=1 << 20, spool=spool)
        assert srv.max_in_flight == 2  # both silent reads waited at the same time, not one after the other
    if spool is not None:
        uploads = [spool.load(u) for u in uploads]
    by_uid = {u.uid: u for u in uploads}
    assert by_uid[1].status is ReadStatus.OK and by_uid[1].data == BODY and by_uid[1].last_modified is not None
    assert by_uid[2].status is ReadStatus.TIMEOUT and by_uid[3].status is ReadStatus.TIMEOUT


def test_honest_seaweed_reads_keep_their_statuses_through_the_bounded_transport(seaweed) -> None:
    _, read = seaweed.neurons["bob"]
    seaweed.writer("bob").put("bob", "v1/big.bin", b"y" * (3 << 20))
    peers = peers_of({"bob": access(seaweed.endpoint, "bob", read.access_key, read.secret_key),
                      "wrong": access(seaweed.endpoint, "bob", read.access_key, "not-the-secret")})
    ok = peers.get("bob", "v1/big.bin", max_bytes=4 << 20)
    assert ok.ok and ok.value == b"y" * (3 << 20)
    assert peers.get("bob", "v1/nothing", max_bytes=10).status is ReadStatus.NOT_FOUND
    assert peers.get("bob", "v1/big.bin", max_bytes=10).status is ReadStatus.TOO_LARGE
    assert peers.get("wrong", "v1/big.bin", max_bytes=4 << 20).status is ReadStatus.DENIED
    assert peers.list_windows("bob", "v1/") == []


def test_catch_up_and_checkpoint_reads_are_bounded_too() -> None:
    with HostileS3("trickle", trickle_s=0.5) as srv:
        srv.put("tarpit", KEY, BODY)
        srv.put("tarpit", layout.checkpoint_key(4), BODY)
        peers = peers_of({"hk": access(srv.endpoint, "tarpit")}, checkpoint_budget=BUDGET)
        entry = RecordEntry(uid=1, hotkey="hk", key=KEY, sha256="0" * 64)
        (update,) = fetch_record_updates(peers, [entry], 3, {}, CodecParams.from_hparams(HParams()), 1 << 20)
        assert update.status is ReadStatus.TIMEOUT
        assert fetch_checkpoint(peers, "hk", 4, 1 << 20).status is ReadStatus.TIMEOUT


def test_unapproved_endpoint_counts_as_no_bucket() -> None:
    """A backdater's own server could claim any Last-Modified: the run never reads it."""
    with HostileS3("backdate", forged_time=0.0) as srv:
        srv.put("forger", KEY, BODY)
        peers = peers_of({"hk": access(srv.endpoint, "forger")})
        peers.configure(HParams(approved_storage_endpoints=("http://127.0.0.1:1",)))
        (upload,) = fetch_uploads(peers, {7: "hk"}, 3, max_bytes=1 << 20)
        assert srv.requests == []  # not even asked
    assert upload.status is ReadStatus.NO_COMMITMENT and "not an approved storage provider" in (
        peers.get("hk", KEY, 10).reason)
    adm = admit_upload(upload, window=3, deadline_s=time.time(), hparams=HParams(), shapes={}, expected_receipt="",
                       base_fingerprint="", seen_payloads=set())
    assert adm.reason == NO_COMMITMENT


def test_missing_last_modified_is_never_on_time() -> None:
    with HostileS3("backdate", forged_time=None) as srv:
        srv.put("forger", KEY, BODY)
        peers = peers_of({"hk": access(srv.endpoint, "forger")})
        (upload,) = fetch_uploads(peers, {7: "hk"}, 3, max_bytes=1 << 20)
    assert upload.status is ReadStatus.OK and upload.last_modified is None
    adm = admit_upload(upload, window=3, deadline_s=time.time() + 3600, hparams=HParams(), shapes={},
                       expected_receipt="", base_fingerprint="", seen_payloads=set())
    assert adm.reason == LATE


def test_every_peer_is_read_through_one_client_each_read_signed_with_its_own_keys(seaweed) -> None:
    """Issue 18: one botocore client signs for every peer (a client per peer held ~0.5 MB each); reads in
    flight at once keep their own keys: carol's keys on alice's bucket are refused, on her own accepted."""
    key = layout.gradient_key(5)
    for name in ("alice", "carol"):
        seaweed.writer(name).put(name, key, name.encode() * 10)
    (_, alice), (_, carol) = seaweed.neurons["alice"], seaweed.neurons["carol"]
    peers = peers_of({"alice": access(seaweed.endpoint, "alice", alice.access_key, alice.secret_key),
                      "carol": access(seaweed.endpoint, "carol", carol.access_key, carol.secret_key),
                      "mixed": access(seaweed.endpoint, "alice", carol.access_key, carol.secret_key)})
    uploads = fetch_uploads(peers, {1: "alice", 2: "carol", 3: "mixed"} | {10 + i: "alice" for i in range(8)},
                            5, max_bytes=1 << 20)
    by_uid = {u.uid: u for u in uploads}
    assert by_uid[1].data == b"alice" * 10 and by_uid[2].data == b"carol" * 10
    assert all(by_uid[10 + i].data == b"alice" * 10 for i in range(8))
    assert by_uid[3].status is ReadStatus.DENIED
    readers = [found[0] for hotkey in ("alice", "carol", "mixed") if (found := peers.reader(hotkey))]
    assert len({id(r.shared) for r in readers}) == 1  # type: ignore[attr-defined]
    assert peers.list_windows("carol", "v1/gradients/") == [5]
