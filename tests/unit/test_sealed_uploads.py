"""Sealed uploads (issue 14 item 3): nobody can read a miner's update of window w before w's deadline. The miner
uploads its signed artifact encrypted (AES-256-GCM, `cryptography`) under a per-window key whose sha256 the sealed
manifest signs, and reveals the key after the deadline within `reveal_grace_s`. Real keys, real signed artifacts,
the real miner upload path and validator window over the in-memory buckets of tests/unit/fakes.py."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from gauntlet.aggregate import admit_for_gather
from storage.peers import fetch_record, fetch_uploads
from storage.spool import UploadSpool
from template.node.miner import gather_and_step, honest_upload, plan_window, reveal_key, upload_update
from template.node.sync import ApplyOutcome, GlobalModel, apply_record
from template.node.validator import ensure_peer_lists, run_window
from template.protocol import layout
from template.protocol.artifacts import ArtifactError, read_tensor_artifact
from template.protocol.sealing import BAD_KEY, SealError, open_sealed, reveal_bytes, seal
from tests.unit.fakes import FakeNet, tiny_hparams

GRACE_S = 30.0  # reveal grace; a block is 12 s on the fake chain


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture
def net(tmp_path) -> FakeNet:
    """uid 0 owner, 1 alice (lead), 2 bob, 3 charlie; miners seal."""
    net = FakeNet(tmp_path, hp=tiny_hparams(sealed_uploads=True, reveal_grace_s=GRACE_S))
    net.add("owner", owner=True)
    net.add("alice", stake=10_000.0, permit=True)
    net.add("bob")
    net.add("charlie")
    return net


def sealed_upload(net: FakeNet, name: str, window: int = 0):
    """`name` trains, seals and uploads its window update now (chain time); returns (miner, plaintext)."""
    m = net.miner(name)
    plan = plan_window(m, window)
    plain, _ = honest_upload(m, plan, m.gm.fingerprint())
    assert plain is not None
    upload_update(m, plan, plain)
    return m, plain


def read_all(net: FakeNet, window: int = 0, reveal_by: float | None = None):
    hotkeys = {net.neurons[n].uid: net.hotkey(n) for n in ("bob", "charlie")}
    return fetch_uploads(net.peers(), hotkeys, window, net.hp.max_upload_bytes, reveal_by=reveal_by)


def test_seal_opens_only_with_its_key_hotkey_and_window(net):
    kp = net.neurons["bob"].keypair
    sealed, key = seal(b"the signed artifact", window=3, keypair=kp)
    assert open_sealed(sealed, key, hotkey=kp.ss58_address, window=3, max_bytes=1 << 20) == b"the signed artifact"
    assert b"the signed artifact" not in sealed
    for wrong, code in ((dict(key=os.urandom(32)), BAD_KEY), (dict(window=4), "wrong_window"),
                        (dict(hotkey=net.hotkey("charlie")), "wrong_signer")):
        args = dict(key=key, hotkey=kp.ss58_address, window=3) | wrong
        with pytest.raises(SealError) as e:
            open_sealed(sealed, args.pop("key"), max_bytes=1 << 20, **args)
        assert e.value.code == code
    flipped = bytearray(sealed)
    flipped[-1] ^= 1  # one ciphertext bit: the signed payload digest no longer matches
    with pytest.raises(SealError, match="payload_mismatch"):
        open_sealed(bytes(flipped), key, hotkey=kp.ss58_address, window=3, max_bytes=1 << 20)


def test_nothing_is_readable_before_the_deadline(net):
    """What a copier (copymix) gets inside the window: a sealed object, no key, no tensors."""
    _, plain = sealed_upload(net, "bob")
    raw = net.peers().get(net.hotkey("bob"), layout.gradient_key(0), net.hp.max_upload_bytes)
    assert raw.ok and raw.value != plain and plain[-64:] not in raw.value
    with pytest.raises(ArtifactError) as e:
        read_tensor_artifact(raw.value, kind="gradient", max_bytes=net.hp.max_upload_bytes)
    assert e.value.code == "wrong_kind"
    assert not net.peers().get(net.hotkey("bob"), layout.key_reveal_key(0), 4096).ok
    [bob] = [u for u in read_all(net) if u.hotkey == net.hotkey("bob")]
    assert bob.rejected == "key_missing"


def test_revealed_in_time_is_admitted_late_or_wrong_key_is_rejected(net):
    bob, plain = sealed_upload(net, "bob")
    charlie, _ = sealed_upload(net, "charlie")
    deadline = bob.clock.deadline(0)
    net.chain.advance_to(bob.clock.last_block(0) + 1)  # 12 s after the deadline: inside the grace
    reveal_key(bob, 0)
    net.chain.advance_to(bob.clock.last_block(0) + 3)  # 36 s after: past the grace
    reveal_key(charlie, 0)
    uploads = {u.hotkey: u for u in read_all(net, reveal_by=deadline + GRACE_S)}
    assert uploads[net.hotkey("bob")].rejected is None and uploads[net.hotkey("bob")].data == plain
    assert uploads[net.hotkey("charlie")].rejected == "late_key"
    adm = {u.uid: admit_for_gather(u, window=0, deadline_s=deadline, hparams=net.hp, shapes=bob.gm.shapes(),
                                   base_fingerprint=bob.gm.fingerprint(), num_train=net.heldout_start)
           for u in uploads.values()}
    assert adm[bob.uid].ok and adm[charlie.uid].reason == "late_key"
    net.neurons["charlie"].bucket.put_reveal(0, reveal_bytes(0, os.urandom(32)))  # on time, but not its key
    net.chain.head = bob.clock.last_block(0) + 1
    net.neurons["charlie"].bucket.put_reveal(0, reveal_bytes(0, os.urandom(32)))
    assert {u.hotkey: u.rejected for u in read_all(net, reveal_by=deadline + GRACE_S)}[net.hotkey("charlie")] == BAD_KEY


def test_a_sealed_window_aggregates_records_and_replays(net):
    """The lead's window over sealed uploads: admitted once the keys are out, mirrored as plaintext, and both a
    replaying node (opening the sealed originals) and a miner's own gather reach the record's theta_1."""
    v = net.validator("alice")
    ensure_peer_lists(v, [0], net.chain.metagraph(net.netuid))
    bob, plain_bob = sealed_upload(net, "bob")
    charlie, plain_charlie = sealed_upload(net, "charlie")
    net.chain.advance_to(v.clock.last_block(0) + 1)
    reveal_key(bob, 0)
    reveal_key(charlie, 0)
    row = run_window(v, 0)
    assert row["miners"]["2"]["reason"] is None and row["miners"]["3"]["reason"] is None
    record = fetch_record(net.peers(), net.hotkey("alice"), 0).value
    assert [e.sha256 for e in record.included] == [hashlib.sha256(p).hexdigest() for p in (plain_bob, plain_charlie)]
    assert net.store.objects[("bucket-alice", record.included[0].key)][0] == plain_bob  # the mirror: plaintext
    replayer = GlobalModel.initial(net.hp, torch.device("cpu"))
    assert apply_record(replayer, record, net.peers()) is ApplyOutcome.OK  # from the sealed originals
    assert replayer.fingerprint() == record.next_fingerprint
    assert not any(("bucket-alice", e.key) in net.store.reads for e in record.included)
    miner = net.miner("bob")
    assert gather_and_step(miner, net.chain.metagraph(net.netuid), net.hotkey("alice"), 0, miner.clock.deadline(0)) == 2
    assert miner.gm.fingerprint() == record.next_fingerprint


def test_spooled_fetch_gives_the_same_uploads_one_in_memory_at_a_time(net, tmp_path):
    """Issue 18: `fetch_uploads` into an UploadSpool returns the uploads without their bytes (on disk, a
    sealed one as its opened plaintext); loaded back, each is what the in-memory fetch returns."""
    bob, plain = sealed_upload(net, "bob")
    charlie, _ = sealed_upload(net, "charlie")
    deadline = bob.clock.deadline(0)
    net.chain.advance_to(bob.clock.last_block(0) + 1)
    reveal_key(bob, 0)
    net.chain.advance_to(bob.clock.last_block(0) + 3)
    reveal_key(charlie, 0)  # late
    hotkeys = {net.neurons[n].uid: net.hotkey(n) for n in ("alice", "bob", "charlie")}  # alice uploaded nothing
    args = (net.peers(), hotkeys, 0, net.hp.max_upload_bytes, deadline + GRACE_S)
    spool = UploadSpool(tmp_path / "spool")
    spool.write(99, b"a stale file of an earlier window")
    in_memory, spooled = fetch_uploads(*args), fetch_uploads(*args, spool=spool)
    assert all(u.data is None for u in spooled)
    assert [spool.load(u) for u in spooled] == in_memory
    assert spool.path(bob.uid).read_bytes() == plain
    assert sorted(p.name for p in spool.folder.iterdir()) == [f"{bob.uid}.upload", f"{charlie.uid}.upload"]
    spool.clear()
    assert list(spool.folder.iterdir()) == []
