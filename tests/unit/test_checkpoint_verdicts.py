"""A forged checkpoint costs the lead its role (issue 27): a following validator judges each checkpoint the lead
publishes of a window whose theta it verified, from the signed manifest in the checkpoint's header alone, and
publishes a signed checkpoint verdict (`verdicts.CheckpointVerdict`); rejections by validators holding a stake
majority of the others pass the lead over, as rejections of its records do. On the in-memory buckets of
tests/unit/fakes.py with real signed artifacts; the forger is template/sim/rogue_validator.py's."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from bittensor_wallet import Keypair
from hypothesis import given
from hypothesis import strategies as st

from storage.peers import fetch_checkpoint_manifest, fetch_checkpoint_verdict, fetch_verdict
from template.node import lead as lead_module
from template.node import trust
from template.node.lead import check_lead_checkpoints, validator_check
from template.node.neuron import find_lead
from template.node.sync import GlobalModel, load_checkpoint, publish_checkpoint
from template.node.validator import ensure_peer_lists, run_window
from template.protocol import layout
from template.protocol.artifacts import (
    MAX_HEADER_BYTES,
    ArtifactError,
    canonical_json,
    header_length,
    make_manifest,
)
from template.protocol.reads import ReadStatus
from template.protocol.verdicts import CheckpointVerdict, Verdict
from template.sim.rogue_validator import rogue_publish_checkpoint
from tests.unit.fakes import FakeNet, lead_net, tiny_hparams
from tests.unit.test_validator_window import upload

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture
def net(tmp_path) -> FakeNet:
    """uid 0 the owner, 1 alice (the lead: 10k), 2 bob, 3 charlie, 4 dave (miners), 5 frank (3k), 6 grace (3k),
    7 henry (4k; never runs): frank or grace alone hold less than half of the others' 10k, the two together more.
    A checkpoint every window."""
    net = lead_net(tmp_path, validators=(("frank", 3_000.0), ("grace", 3_000.0), ("henry", 4_000.0)))
    net.hp = tiny_hparams(checkpoint_interval=1)
    return net


def lead_window_0(net: FakeNet, monkeypatch, *, forge: bool):
    """alice leads window 0 as the runtime does (bob's and charlie's uploads), publishing its checkpoint of
    window 1: the honest one, or (`forge`) the rogue's forged weights."""
    alice = net.validator("alice")
    ensure_peer_lists(alice, [0], net.chain.metagraph(net.netuid))
    upload(net, "bob", 0)
    upload(net, "charlie", 0)
    net.chain.advance_to(alice.clock.last_block(0) + 1)
    if forge:
        monkeypatch.setattr(lead_module, "publish_checkpoint", rogue_publish_checkpoint)
    assert run_window(alice, 0)["sync/status"] == "lead:2"
    monkeypatch.undo()
    return alice


def lead_of(net: FakeNet, window: int) -> int | None:
    return find_lead(net.peers(), net.chain.metagraph(net.netuid), net.hp.min_validator_stake, window)


def test_a_forged_checkpoint_is_rejected_and_the_forger_loses_the_lead(net, monkeypatch):
    """roguelead:forge: alice's record of window 0 is honest, its checkpoint of window 1 holds other weights. frank
    and grace replay the record (attested), judge the checkpoint against the theta_1 they verified and reject it,
    signed; with both rejections (6k of the others' 10k) the lead rule of window 1 passes alice over."""
    alice = lead_window_0(net, monkeypatch, forge=True)
    assert lead_of(net, 1) == alice.uid
    for i, name in enumerate(("frank", "grace")):
        follower = net.validator(name)
        run_window(follower, 0)
        record_verdict = fetch_verdict(net.peers(), net.hotkey(name), 0).value
        assert record_verdict is not None and record_verdict.valid  # the record itself was honest
        verdict = fetch_checkpoint_verdict(net.peers(), net.hotkey(name), 1).value
        assert verdict is not None and not verdict.valid and verdict.lead_hotkey == net.hotkey("alice")
        assert verdict.verified == follower.gm.verified[1] == alice.gm.fingerprint() != verdict.fingerprint
        assert "not the verified theta_1" in verdict.reason
        # one 3k rejection is not a majority of the others' 10k; the second is
        assert (lead_of(net, 1) == alice.uid) is (i == 0)
    assert lead_of(net, 1) not in (alice.uid, None)
    assert lead_of(net, 0) == alice.uid  # counted as a rejection of the record of window 0: from window 1 on
    stake = {net.hotkey(n): s for n, s in (("alice", 1e4), ("frank", 3e3), ("grace", 3e3), ("henry", 4e3))}
    assert trust.rejections(net.peers(), list(stake), 1) == {net.hotkey("alice"): {net.hotkey("frank"),
                                                                                   net.hotkey("grace")}}


def test_an_honest_leads_checkpoint_is_attested_never_rejected(net, monkeypatch):
    alice = lead_window_0(net, monkeypatch, forge=False)
    frank = net.validator("frank")
    run_window(frank, 0)
    verdict = fetch_checkpoint_verdict(net.peers(), net.hotkey("frank"), 1).value
    assert verdict is not None and verdict.valid and verdict.reason == ""
    assert verdict.fingerprint == verdict.verified == alice.gm.fingerprint()
    assert lead_of(net, 1) == alice.uid
    assert check_lead_checkpoints(frank, net.hotkey("alice")) == []  # judged once


def publish_with_tampered_clip_history(gm: GlobalModel, bucket, keypair) -> int:
    """The right weights, signed, with a clip history the records never made (a joiner loading it would clip
    differently from everyone else and fall off the network at its next record)."""
    honest_history = gm.clip_history
    gm.clip_history = {name: (1e-6,) for name in gm.shapes()}
    try:
        return publish_checkpoint(gm, bucket, keypair)
    finally:
        gm.clip_history = honest_history


def test_a_checkpoint_with_the_right_weights_and_a_forged_clip_state_is_rejected(net, monkeypatch):
    """The weights' fingerprint does not cover the clip state a joiner steps on from: a follower compares the
    checkpoint's clip_ref/clip_history with the clip state of the theta it verified, and rejects a forged one."""
    monkeypatch.setattr(lead_module, "maybe_publish_checkpoint", lambda v: None)
    alice = lead_window_0(net, monkeypatch, forge=False)
    frank = net.validator("frank")
    run_window(frank, 0)
    assert frank.gm.verified[1] == alice.gm.fingerprint() and 1 in frank.gm.verified_clip
    publish_with_tampered_clip_history(alice.gm, alice.bucket, alice.hotkey)
    [verdict] = check_lead_checkpoints(frank, net.hotkey("alice"))
    assert not verdict.valid and verdict.fingerprint == verdict.verified  # the weights are right ...
    assert "clip state" in verdict.reason  # ... the clip state is not
    assert CheckpointVerdict.from_body(verdict.to_body(), window=1) == verdict  # a well-formed rejection


def test_a_checkpoint_published_late_is_judged_next_window_and_only_from_its_header(net, monkeypatch):
    """The lead publishes the checkpoint of w + 1 after its record of w: a follower that finds none yet looks
    again the next window (within `CHECKPOINT_CHECK_WINDOWS`), and reads the header, never the weights."""
    monkeypatch.setattr(lead_module, "maybe_publish_checkpoint", lambda v: None)
    alice = lead_window_0(net, monkeypatch, forge=False)
    frank = net.validator("frank")
    run_window(frank, 0)
    assert not fetch_checkpoint_verdict(net.peers(), net.hotkey("frank"), 1).ok  # nothing to judge yet
    assert frank.state.checked_checkpoints == set()
    before = net.store.range_bytes
    rogue_publish_checkpoint(alice.gm, alice.bucket, alice.hotkey)  # forged, published late
    size = len(net.store.objects[(alice.bucket.access.bucket, layout.checkpoint_key(1))][0])
    [verdict] = check_lead_checkpoints(frank, net.hotkey("alice"))
    assert not verdict.valid and verdict.window == 1
    assert net.store.range_bytes - before < size / 20  # the header only
    frank.gm.window += lead_module.CHECKPOINT_CHECK_WINDOWS + 1  # long after: no longer looked for
    frank.state.checked_checkpoints.clear()
    assert check_lead_checkpoints(frank, net.hotkey("alice")) == []


def test_a_validator_that_refuses_a_checkpoint_on_load_rejects_it(net, monkeypatch):
    """sync.load_checkpoint with the validator's check: a checkpoint neither its verified replay nor attested by a
    stake majority is not loaded, and when the validator verified another theta of that window it publishes the
    same signed rejection."""
    alice = lead_window_0(net, monkeypatch, forge=True)
    frank = net.validator("frank")
    frank.gm.verified[1] = alice.gm.fingerprint()  # as after replaying window 0
    check = validator_check(frank, net.chain.metagraph(net.netuid))
    assert not load_checkpoint(frank.gm, net.peers(), net.hotkey("alice"), 1, check.accept_checkpoint,
                               check.on_checkpoint_refused)
    assert frank.gm.window == 0
    verdict = fetch_checkpoint_verdict(net.peers(), net.hotkey("frank"), 1).value
    assert verdict is not None and not verdict.valid and verdict.verified == alice.gm.fingerprint()
    # a node without a verified theta of the window has nothing to hold against the lead: no verdict
    grace = net.validator("grace")
    check = validator_check(grace, net.chain.metagraph(net.netuid))
    assert not load_checkpoint(grace.gm, net.peers(), net.hotkey("alice"), 1, check.accept_checkpoint,
                               check.on_checkpoint_refused)
    assert fetch_checkpoint_verdict(net.peers(), net.hotkey("grace"), 1).status is ReadStatus.NOT_FOUND


def header_object(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


def signed_header(keypair: Keypair, window: int, **fields: object) -> bytes:
    manifest = make_manifest(kind="checkpoint", window=window, keypair=keypair, payload_sha256="ab" * 32,
                             fields={"fingerprint": "cd" * 32, **fields})
    return canonical_json({"__metadata__": {"manifest": canonical_json(manifest).decode()}})


@pytest.mark.parametrize(("make", "reason"), [
    (lambda kp: struct.pack("<Q", 1 << 40), "huge_header"),
    (lambda kp: struct.pack("<Q", 1), "malformed"),
    (lambda kp: b"\x01\x02", "bytes arrived"),
    (lambda kp: struct.pack("<Q", 4096) + b"{}", "bytes arrived"),
    (lambda kp: header_object(b"not json"), "malformed"),
    (lambda kp: header_object(b"[" * 100_000 + b"]" * 100_000), "malformed"),
    (lambda kp: header_object(b"[1]"), "malformed"),
    (lambda kp: header_object(b'{"__metadata__": {}}'), "unsigned"),
    (lambda kp: header_object(b'{"__metadata__": {"manifest": "{"}}'), "bad_manifest"),
    (lambda kp: header_object(signed_header(Keypair.create_from_uri("//Mallory"), 1)), "wrong_signer"),
    (lambda kp: header_object(signed_header(kp, 2)), "wrong_window"),
    (lambda kp: header_object(signed_header(kp, 1).replace(b"cdcd", b"cdce", 1)), "bad_signature"),
])
def test_a_hostile_checkpoint_header_is_a_clear_error(net, make, reason):
    """Untrusted input: a huge, short, malformed, unsigned, foreign-signed or tampered header is a failed read
    naming why (never a crash, never the whole object), and a follower judges no further."""
    alice = net.neurons["alice"]
    alice.bucket.put_checkpoint(1, make(alice.keypair))
    read = fetch_checkpoint_manifest(net.peers(), net.hotkey("alice"), 1)
    assert not read.ok and reason in read.reason
    assert net.store.range_bytes <= 4 << 20
    frank = net.validator("frank")
    frank.gm.verified[1] = "ef" * 32
    frank.gm.window = 1
    assert check_lead_checkpoints(frank, net.hotkey("alice")) == []
    assert not fetch_checkpoint_verdict(net.peers(), net.hotkey("frank"), 1).ok


def test_a_signed_manifest_without_a_fingerprint_is_not_judged(net):
    alice = net.neurons["alice"]
    manifest = make_manifest(kind="checkpoint", window=1, keypair=alice.keypair, payload_sha256="ab" * 32,
                             fields={"fingerprint": "not hex"})
    alice.bucket.put_checkpoint(1, header_object(canonical_json(
        {"__metadata__": {"manifest": canonical_json(manifest).decode()}})))
    read = trust.check_checkpoint(net.peers(), net.hotkey("alice"), 1, "ef" * 32)
    assert read.status is ReadStatus.INVALID and "fingerprint" in read.reason


def test_the_runtime_checkpoint_header_names_the_models_fingerprint(net):
    """The manifest read from the header of a real checkpoint is the one its full read verifies."""
    gm = GlobalModel.initial(net.hp, CPU)
    gm.window = 4
    alice = net.neurons["alice"]
    publish_checkpoint(gm, alice.bucket, alice.keypair)
    manifest = fetch_checkpoint_manifest(net.peers(), net.hotkey("alice"), 4).value
    assert manifest is not None and manifest["fingerprint"] == gm.fingerprint() and manifest["window"] == 4


GOOD = CheckpointVerdict.judge(3, "5Hlead", "ab" * 32, "cd" * 32, "ef" * 32)


@pytest.mark.parametrize("edit", [
    {"subject": "record"}, {"window": 4}, {"window": True}, {"lead_hotkey": ""}, {"lead_hotkey": 7},
    {"fingerprint": "AB" * 32}, {"payload_sha256": "cd"}, {"verified": None}, {"valid": 1}, {"valid": True},
    {"reason": ""}, {"reason": "x" * 301}, {"reason": "caf\u00e9"}, {"extra": 1}, {"valid": True, "reason": ""},
])
def test_the_checkpoint_verdict_parser_rejects_malformed_verdicts(edit):
    body = {**GOOD.to_body(), **edit}
    with pytest.raises(ValueError, match="checkpoint verdict"):
        CheckpointVerdict.from_body(body, window=3)


def test_checkpoint_verdicts_round_trip_and_record_verdicts_stay_as_they_were():
    assert not GOOD.valid and CheckpointVerdict.from_body(json.loads(json.dumps(GOOD.to_body())), window=3) == GOOD
    fine = CheckpointVerdict.judge(3, "5Hlead", "ab" * 32, "cd" * 32, "ab" * 32)
    assert fine.valid and fine.reason == "" and CheckpointVerdict.from_body(fine.to_body(), window=3) == fine
    old = Verdict(3, "5Hlead", "ab" * 32, valid=True)
    assert Verdict.from_body(old.to_body(), window=3) == old  # an old record verdict still parses
    with pytest.raises(ValueError):
        Verdict.from_body(GOOD.to_body(), window=3)  # neither kind of body passes for the other
    with pytest.raises(ValueError):
        CheckpointVerdict.from_body(old.to_body(), window=3)
    assert layout.checkpoint_verdict_key(3) != layout.verdict_key(3)
    assert layout.parse_window(layout.checkpoint_verdict_key(3)) == 3  # pruned with the rest


HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)


@given(window=st.integers(0, 10**6), fingerprint=HEX64, payload=HEX64, verified=HEX64, same=st.booleans())
def test_a_checkpoint_verdict_attests_exactly_the_verified_fingerprint_and_round_trips(window, fingerprint, payload,
                                                                                       verified, same):
    verdict = CheckpointVerdict.judge(window, "5Hlead", fingerprint, payload, fingerprint if same else verified)
    assert verdict.valid is (verdict.fingerprint == verdict.verified) and bool(verdict.reason) is not verdict.valid
    assert CheckpointVerdict.from_body(json.loads(json.dumps(verdict.to_body())), window=window) == verdict


@given(prefix=st.binary(min_size=0, max_size=12))
def test_a_header_length_is_within_the_cap_or_a_clear_error(prefix):
    try:
        assert 2 <= header_length(prefix) <= MAX_HEADER_BYTES
    except ArtifactError as e:
        assert e.code in ("truncated", "huge_header", "malformed")
