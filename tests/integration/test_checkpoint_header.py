"""A follower's checkpoint check on real SeaweedFS (issue 27): the signed manifest from two range reads of the
checkpoint's header (`storage.peers.fetch_checkpoint_manifest`), never the weights; a hostile header is a
failed read naming why."""

from __future__ import annotations

import struct

import pytest
import torch
from bittensor_wallet import Keypair

from storage.bounded import FetchBudget
from storage.credentials import BucketAccess
from storage.peers import OwnBucket, PeerBuckets, fetch_checkpoint_manifest
from template.node.sync import GlobalModel, publish_checkpoint
from template.protocol import layout
from template.protocol.config import HParams
from template.protocol.reads import ReadStatus

torch.set_num_threads(1)


def peers_of(seaweed, bucket: str, hotkey: str = "lead") -> PeerBuckets:
    _, read = seaweed.neurons[bucket]
    commitment = BucketAccess(endpoint=seaweed.endpoint, bucket=bucket, access_key_id=read.access_key,
                              secret_access_key=read.secret_key).encode()
    peers = PeerBuckets(commitments=lambda: {hotkey: commitment}, budget=FetchBudget(total_s=10.0))
    peers.refresh()
    return peers


def test_the_manifest_of_a_real_checkpoint_comes_from_its_header_alone(seaweed) -> None:
    keypair = Keypair.create_from_uri("//Alice")
    gm = GlobalModel.initial(HParams(model_preset="tiny", vocab_size=256, seq_len=16), torch.device("cpu"))
    gm.window = 4
    bucket = OwnBucket(access=BucketAccess(endpoint=seaweed.endpoint, bucket="alice", access_key_id="unused-key",
                                           secret_access_key="unused-secret"), client=seaweed.writer("alice"))
    size = publish_checkpoint(gm, bucket, keypair)
    try:
        peers = peers_of(seaweed, "alice", keypair.ss58_address)
        read = fetch_checkpoint_manifest(peers, keypair.ss58_address, 4)
        assert read.ok and read.value is not None, read.describe()
        assert read.value["fingerprint"] == gm.fingerprint() and size > 100 * 1024
        assert fetch_checkpoint_manifest(peers, keypair.ss58_address, 8).status is ReadStatus.NOT_FOUND
        assert fetch_checkpoint_manifest(peers, "5Gnobody", 4).status is ReadStatus.NO_COMMITMENT
    finally:  # the server is the session's: leave the bucket as it was
        seaweed.writer("alice").delete("alice", layout.checkpoint_key(4))


@pytest.mark.parametrize(("body", "statuses"), [
    (struct.pack("<Q", 1 << 40) + b"{}", {ReadStatus.INVALID}),  # a header claiming a terabyte
    (struct.pack("<Q", 1 << 20) + b"{}", {ReadStatus.ERROR}),  # claims more than the object holds
    (b"\x01\x02", {ReadStatus.ERROR}),  # shorter than the length field
    (struct.pack("<Q", 8) + b"not json", {ReadStatus.INVALID}),
])
def test_a_hostile_header_on_real_storage_is_a_failed_read(seaweed, body: bytes, statuses) -> None:
    seaweed.writer("bob").put("bob", layout.checkpoint_key(6), body)
    try:
        read = fetch_checkpoint_manifest(peers_of(seaweed, "bob"), "lead", 6)
        assert read.status in statuses and read.reason, read.describe()
    finally:  # the server is the session's: leave the bucket as it was
        seaweed.writer("bob").delete("bob", layout.checkpoint_key(6))
