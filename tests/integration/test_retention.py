"""Retention (issue 14 item 6): each node deletes its own objects past `retention_windows`, on a real SeaweedFS,
keeping what a node joining now needs (the newest checkpoint and everything after it)."""

from __future__ import annotations

import pytest

from storage.credentials import BucketAccess
from storage.peers import OwnBucket, stale_keys
from template.protocol import layout
from template.protocol.config import HParams


def all_keys(windows: range, checkpoint_windows: list[int]) -> list[str]:
    keys = [layout.hparams_key(), "notes/readme.txt"]
    for w in windows:
        keys += [layout.gradient_key(w), layout.record_key(w), layout.peers_key(w)]
    return keys + [layout.checkpoint_key(w) for w in checkpoint_windows]


def own_bucket(seaweed, bucket: str, *, read_only: bool = False) -> OwnBucket:
    write, read = seaweed.neurons[bucket]
    access = BucketAccess(endpoint=seaweed.endpoint, bucket=bucket, access_key_id=read.access_key,
                          secret_access_key=read.secret_key)
    return OwnBucket(access=access, client=seaweed.client(read if read_only else write, max_attempts=1))


def clear(seaweed, bucket: str) -> None:
    client = seaweed.writer(bucket)
    for o in client.list(bucket):
        client.delete(bucket, o.key)


@pytest.mark.parametrize(("checkpoints", "keep_from"), [([0, 4, 8, 12, 16, 20], 10), ([0, 4], 4), ([], 10)])
def test_prune_deletes_only_what_no_node_needs(seaweed, checkpoints: list[int], keep_from: int) -> None:
    clear(seaweed, "carol")
    own = own_bucket(seaweed, "carol")
    keys = all_keys(range(21), checkpoints)
    for key in keys:
        own.put(key, b"x")
    deleted = own.prune(20, retention_windows=10)
    left = {o.key for o in seaweed.writer("carol").list("carol")}
    assert left == set(keys) - set(deleted)
    assert {layout.parse_window(k) for k in deleted} == set(range(keep_from))
    assert {layout.hparams_key(), "notes/readme.txt"} <= left  # keys of no window stay
    if checkpoints:
        assert layout.checkpoint_key(max(checkpoints)) in left  # a joining node's starting point
    assert own.prune(20, retention_windows=10) == []  # nothing more to do
    assert own.prune(20, retention_windows=0) == []  # 0 keeps everything


def test_a_failed_delete_is_left_for_next_time(seaweed) -> None:
    clear(seaweed, "carol")
    seaweed.writer("carol").put("carol", layout.gradient_key(1), b"x")
    assert own_bucket(seaweed, "carol", read_only=True).prune(50, retention_windows=10) == []  # delete refused
    assert [o.key for o in seaweed.writer("carol").list("carol")] == [layout.gradient_key(1)]
    assert own_bucket(seaweed, "carol").prune(50, retention_windows=10) == [layout.gradient_key(1)]


def test_stale_keys_never_touch_recent_windows_or_the_newest_checkpoint() -> None:
    hp = HParams()
    for now in (0, 5, 17, 300, 301):
        for checkpoints in ([], [0], list(range(0, now + 1, hp.checkpoint_interval)), [now + 4]):
            keys = all_keys(range(now + 1), checkpoints)
            stale = stale_keys(keys, now, hp.retention_windows)
            windows = [layout.parse_window(k) for k in stale]
            assert all(w is not None and w < now - hp.retention_windows for w in windows)
            usable = [w for w in checkpoints if w <= now]
            if usable:
                assert not any(layout.parse_window(k) >= max(usable) for k in stale)
