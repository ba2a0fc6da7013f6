"""Storage key format (a cross-node contract) and the on-chain bucket access encoding."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.credentials import MAX_COMMITMENT_BYTES, BucketAccess
from template.protocol import layout
from template.protocol.config import PROTOCOL_VERSION

WINDOWS = st.integers(min_value=0, max_value=10**8 - 1)


def test_key_format_is_pinned():
    assert PROTOCOL_VERSION == 1  # bumping the version changes every key below: update this guard too
    assert layout.gradient_key(12) == "v1/gradients/00000012.safetensors"
    assert layout.record_key(12) == "v1/records/00000012.json"
    assert layout.peers_key(12) == "v1/peers/00000012.json"
    assert layout.checkpoint_prefix() == "v1/checkpoints/"
    assert layout.checkpoint_key(12) == "v1/checkpoints/00000012/model.safetensors"
    assert layout.shard_key("train", 3) == "shards/train/000003.bin"
    assert layout.dataset_manifest_key() == "shards/manifest.json"
    assert layout.tokenizer_key() == "shards/tokenizer.json"
    assert layout.hparams_key() == "hparams.json"


@settings(max_examples=100, deadline=None)
@given(WINDOWS)
def test_parse_window_round_trips(window):
    for make_key in (layout.gradient_key, layout.record_key, layout.peers_key, layout.checkpoint_key):
        assert layout.parse_window(make_key(window)) == window


@settings(max_examples=50, deadline=None)
@given(WINDOWS, WINDOWS)
def test_key_order_is_window_order(a, b):
    assert (layout.gradient_key(a) < layout.gradient_key(b)) == (a < b)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parse_window_of_other_text_is_none_or_a_valid_window(text):
    window = layout.parse_window(text)
    assert window is None or text in {layout.gradient_key(window), layout.record_key(window),
                                      layout.peers_key(window)} or text.startswith(layout.checkpoint_prefix())


@pytest.mark.parametrize("key", [
    "v1/gradients/12.safetensors", "v2/gradients/00000012.safetensors", "v1/gradients/00000012.json",
    "v1/records/00000012.json.bak", "v1/checkpoints/00000012/", "shards/train/000003.bin", "hparams.json",
    "v1/gradients/0000001x.safetensors", "", "v1/gradients/000000012.safetensors",
])
def test_parse_window_rejects_foreign_keys(key):
    assert layout.parse_window(key) is None


@pytest.mark.parametrize("window", [-1, 10**8, 1.5, True])
def test_bad_window_is_refused(window):
    with pytest.raises(ValueError, match="window"):
        layout.gradient_key(window)


def test_bad_shard_args_are_refused():
    with pytest.raises(ValueError, match="split"):
        layout.shard_key("../x", 0)
    with pytest.raises(ValueError, match="index"):
        layout.shard_key("train", -1)


# -- BucketAccess

_ALNUM = string.ascii_letters + string.digits
HOSTS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *[st.integers(0, 255)] * 4),
)
ENDPOINTS = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}" + (f":{port}" if port else ""),
    st.sampled_from(["http", "https"]), HOSTS, st.one_of(st.none(), st.integers(1, 65535)),
)
BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9-]{1,40}[a-z0-9]", fullmatch=True).filter(
    lambda b: not b.replace("-", "").isdigit() or "-" in b)
ACCESS = st.builds(BucketAccess, endpoint=ENDPOINTS, bucket=BUCKETS,
                   access_key_id=st.text(_ALNUM + "_-", min_size=4, max_size=64),
                   secret_access_key=st.text(_ALNUM + "/+=_-", min_size=8, max_size=80),
                   region=st.sampled_from(["us-east-1", "auto", "eu-west-3"]))


@settings(max_examples=150, deadline=None)
@given(ACCESS)
def test_bucket_access_round_trips(access):
    encoded = access.encode()
    assert len(encoded.encode()) <= MAX_COMMITMENT_BYTES
    assert BucketAccess.decode(encoded) == access
    assert BucketAccess.decode(encoded.encode()) == access


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=600), st.binary(max_size=600)))
def test_garbage_only_raises_value_error(raw):
    try:
        BucketAccess.decode(raw)
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(ACCESS, st.sampled_from(["v", "e", "b", "a", "s", "r"]),
       st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30), st.lists(st.integers()),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_tampered_fields_only_raise_value_error(access, field, value):
    payload = json.loads(access.encode())
    payload[field] = value
    try:
        decoded = BucketAccess.decode(json.dumps(payload))
    except ValueError:
        return
    assert decoded.encode() == json.dumps(payload, separators=(",", ":"))  # only valid values got through


@pytest.mark.parametrize("change", [
    {"endpoint": "ftp://host"}, {"endpoint": "http://user:pw@host"}, {"endpoint": "http://host/path"},
    {"endpoint": "http://host:99999"}, {"endpoint": "http://"}, {"endpoint": "http://ho st"},
    {"endpoint": "javascript:alert(1)"}, {"endpoint": "http://host?x=1"},
    {"bucket": "UPPER"}, {"bucket": "ab"}, {"bucket": "a..b"}, {"bucket": "-ab"}, {"bucket": "192.168.1.1"},
    {"bucket": "a" * 64}, {"access_key_id": "ab"}, {"access_key_id": "key with space"},
    {"secret_access_key": "short"}, {"secret_access_key": "x" * 129}, {"region": "US EAST"},
])
def test_invalid_fields_are_refused(change):
    fields = {"endpoint": "https://acct.r2.cloudflarestorage.com", "bucket": "miner-0", "access_key_id": "AKIA1234",
              "secret_access_key": "s3cr3t/key+value=", "region": "auto"} | change
    with pytest.raises(ValueError):
        BucketAccess(**fields)


def test_extra_keys_and_versions_are_refused():
    good = json.loads(BucketAccess("http://127.0.0.1:8333", "alice", "KEY1234", "secret-key").encode())
    for payload in ({**good, "x": 1}, {k: v for k, v in good.items() if k != "r"}, {**good, "v": 2},
                    {**good, "v": 1.0}, {**good, "v": True}, [good]):
        with pytest.raises(ValueError):
            BucketAccess.decode(json.dumps(payload))


def test_oversized_encoding_is_refused():
    access = BucketAccess("https://" + "h" * 240 + ".com", "b" * 63, "k" * 128, "s" * 128, "r" * 32)
    with pytest.raises(ValueError, match=str(MAX_COMMITMENT_BYTES)):
        access.encode()
    with pytest.raises(ValueError):
        BucketAccess.decode(b"{" * 100_000)
