"""In-memory stand-ins for the chain and the buckets, for unit tests of the node loops only.

`FakeChain` implements `template.chain.base.Chain` with a block clock the test advances by hand;
`FakeStore` has the methods of `storage.s3.S3Client` that `storage.peers` uses (get, put, list,
head, delete), with S3's one-second LastModified taken from the chain's clock. `FakeNet` wires
them to real keys (`Keypair.create_from_uri`), real signed artifacts and a tiny synthetic
dataset, and builds bare `Miner` and `Validator` dataclasses over them (the way torchtitan's
unit tests build a bare trainer). Storage and chain behaviour themselves are tested against the
real SeaweedFS server and the real localnet node, never against these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from bittensor_wallet import Keypair
from safetensors.torch import load as load_tensors

from gauntlet.checks import expected_codec_field
from gauntlet.evaluate import mean_loss
from gauntlet.progress import no_gain_members, window_guard_ids
from storage.credentials import BucketAccess
from storage.peers import OwnBucket, PeerBuckets
from storage.s3 import GetResult, ObjectInfo, Status
from template.chain.base import ChainError, Metagraph, TxResult, weights_to_u16
from template.node.guard import GuardBatch, guard_reader
from template.node.miner import Miner
from template.node.neuron import StopFlag, WindowClock
from template.node.state import ValidatorState
from template.node.sync import GlobalModel, publish_checkpoint
from template.node.validator import Validator
from template.protocol import layout
from template.protocol.artifacts import write_tensor_artifact
from template.protocol.config import HParams, NeuronConfig
from template.protocol.data import TokenDataset, data_receipt, sample_ids
from template.protocol.records import AggregationRecord, RecordEntry
from template.protocol.sparseloco import compress, decompress
from template.protocol.windows import find_guard_block

FAKE_ENDPOINT = "http://fake-store.invalid"


# -- the buckets ---------------------------------------------------------------------------------


class FakeStore:
    """Every bucket of every neuron in one dict; `now()` stamps LastModified (whole seconds, as S3).

    `reads` counts get (and get_range) calls per (bucket, key), so a test can tell what a loop fetched.
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self.objects: dict[tuple[str, str], tuple[bytes, float]] = {}
        self.reads: dict[tuple[str, str], int] = {}
        self.range_bytes = 0  # bytes read by get_range (a header read, not the object)

    def _info(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self.objects.get((bucket, key))
        if found is None:
            return None
        data, stamp = found
        return ObjectInfo(key=key, size=len(data), last_modified=stamp, etag=hashlib.md5(data).hexdigest())

    def put(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        self.objects[(bucket, key)] = (bytes(data), float(math.floor(self.now())))
        info = self._info(bucket, key)
        assert info is not None
        return info

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        return self._info(bucket, key)

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None) -> GetResult:
        self.reads[(bucket, key)] = self.reads.get((bucket, key), 0) + 1
        info = self._info(bucket, key)
        if info is None:
            return GetResult(Status.NOT_FOUND, None, None, f"get {bucket}/{key}: NoSuchKey")
        if max_bytes is not None and info.size > max_bytes:
            return GetResult(Status.TOO_LARGE, None, info, f"{bucket}/{key} is {info.size} bytes > cap {max_bytes}")
        data = self.objects[(bucket, key)][0]
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
            return GetResult(Status.ERROR, None, info, f"{bucket}/{key}: sha256 mismatch (expected {sha256})")
        return GetResult(Status.OK, data, info, None)

    def get_range(self, bucket: str, key: str, offset: int, length: int, sink: BinaryIO, *,
                  budget: object = None) -> GetResult:
        """`S3Client.get_range`: bytes [offset, offset + length) into `sink`; a shorter object is ERROR."""
        self.reads[(bucket, key)] = self.reads.get((bucket, key), 0) + 1
        found = self.objects.get((bucket, key))
        if found is None:
            return GetResult(Status.NOT_FOUND, None, None, f"get {bucket}/{key}: NoSuchKey")
        part = found[0][offset:offset + length]
        sink.write(part)
        self.range_bytes += len(part)
        if len(part) != length:
            return GetResult(Status.ERROR, None, None, f"{bucket}/{key}: {len(part)} bytes arrived, expected {length}")
        return GetResult(Status.OK, None, None, None)

    def list(self, bucket: str, prefix: str = "", *, page_size: int | None = None) -> list[ObjectInfo]:
        keys = sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))
        return [info for k in keys if (info := self._info(bucket, k)) is not None]


# -- the chain -----------------------------------------------------------------------------------


@dataclass
class WeightsCall:
    hotkey: str
    uids: list[int]
    weights: list[float]
    version_key: int
    block: int


@dataclass
class FakeNeuron:
    hotkey: str
    coldkey: str
    stake: float
    permit: bool


class FakeChain:
    """One subnet; blocks advance only when the test says so. Block b was produced at
    `genesis_s + b * block_time_s` (genesis far in the past, so every deadline has passed in wall time)."""

    def __init__(self, netuid: int = 1, block_time_s: float = 12.0, genesis_s: float | None = None) -> None:
        self.netuid = netuid
        self.block_time_s = block_time_s
        self.genesis_s = time.time() - 1e6 if genesis_s is None else genesis_s
        self.head = 0
        self.pruned: set[int] = set()  # blocks whose hash this chain no longer answers (a pruned node)
        self.neurons: list[FakeNeuron] = []
        self.owner_hotkey = ""
        self._commitments: dict[str, str] = {}
        self.weights_calls: list[WeightsCall] = []
        self.hparams: dict[str, int | float | bool] = {"tempo": 360, "weights_version": 7,
                                                       "weights_rate_limit": 0, "activity_cutoff": 5000}

    # test controls
    def advance_to(self, block: int) -> None:
        if block < self.head:
            raise ValueError(f"the chain does not go back: head {self.head}, asked {block}")
        self.head = block

    def register(self, hotkey: str, *, stake: float = 0.0, permit: bool = False, owner: bool = False) -> int:
        self.neurons.append(FakeNeuron(hotkey=hotkey, coldkey=f"cold-{hotkey[:8]}", stake=stake, permit=permit))
        if owner:
            self.owner_hotkey = hotkey
        return len(self.neurons) - 1

    def now(self) -> float:
        """Chain time: the timestamp of the head block (what the fake store stamps uploads with)."""
        return self.block_timestamp(self.head)

    # the Chain protocol
    def connect(self) -> None:
        return None

    def block(self) -> int:
        return self.head

    def block_hash(self, block: int) -> str:
        if block > self.head:
            raise ChainError(f"block {block} is not produced yet")
        if block in self.pruned:
            raise ChainError(f"block {block} is pruned")
        return self.hash_of(block)

    def hash_of(self, block: int) -> str:
        """The hash block `block` has (or will have): deterministic per block, so every node reads the same."""
        return hashlib.sha256(f"fake-block:{self.netuid}:{block}".encode()).hexdigest()

    def block_timestamp(self, block: int) -> float:
        return self.genesis_s + block * self.block_time_s

    def metagraph(self, netuid: int) -> Metagraph:
        self._check(netuid)
        n = len(self.neurons)
        zeros = [0.0] * n
        owner = next((x for x in self.neurons if x.hotkey == self.owner_hotkey), None)
        return Metagraph(
            netuid=netuid, block=self.head, n=n, uids=list(range(n)), hotkeys=[x.hotkey for x in self.neurons],
            coldkeys=[x.coldkey for x in self.neurons], stake=[x.stake for x in self.neurons],
            validator_permit=[x.permit for x in self.neurons], incentive=list(zeros), dividends=list(zeros),
            consensus=list(zeros), emission=list(zeros), last_update=[0] * n, active=[True] * n,
            owner_hotkey=self.owner_hotkey, owner_coldkey=owner.coldkey if owner else "")

    def commitments(self, netuid: int) -> dict[str, str]:
        self._check(netuid)
        return dict(self._commitments)

    def set_commitment(self, hotkey: Keypair, netuid: int, data: str) -> TxResult:
        self._check(netuid)
        if not self.is_registered(hotkey.ss58_address, netuid):
            return TxResult(ok=False, error="HotKeyNotRegisteredInSubNet")
        self._commitments[hotkey.ss58_address] = data
        return TxResult(ok=True, block=self.head)

    def set_weights(self, hotkey: Keypair, netuid: int, uids: list[int], weights: list[float],
                    version_key: int = 0) -> TxResult:
        self._check(netuid)
        if not self.is_registered(hotkey.ss58_address, netuid):
            return TxResult(ok=False, error="HotKeyNotRegisteredInSubNet")
        required = int(self.hparams["weights_version"])
        if required and version_key < required:  # subtensor: a key below the subnet's weights_version is refused
            return TxResult(ok=False, error="IncorrectWeightVersionKey")
        weights_to_u16(uids, weights)  # the chain's own checks: lengths, finite and >= 0
        self.weights_calls.append(WeightsCall(hotkey.ss58_address, list(uids), list(weights), version_key,
                                              self.head))
        return TxResult(ok=True, block=self.head)

    def hyperparameters(self, netuid: int) -> dict[str, int | float | bool]:
        self._check(netuid)
        return dict(self.hparams)

    def is_registered(self, hotkey_ss58: str, netuid: int) -> bool:
        return netuid == self.netuid and any(x.hotkey == hotkey_ss58 for x in self.neurons)

    def _check(self, netuid: int) -> None:
        if netuid != self.netuid:
            raise ValueError(f"the fake chain holds netuid {self.netuid} only, got {netuid}")


# -- a whole tiny network ------------------------------------------------------------------------


def tiny_hparams(**overrides: object) -> HParams:
    """The `tiny` preset on a small vocabulary and context: a window runs in well under a second on one thread."""
    base: dict[str, object] = dict(
        model_preset="tiny", vocab_size=256, seq_len=16, inner_steps=4, batch_size=4, inner_lr=3e-3,
        blocks_per_window=10, upload_grace_s=0.0, num_eval_samples=8, weights_interval=1,
        checkpoint_interval=16,
        # the loop tests upload plain artifacts; the sealed path has its own tests (test_sealed_uploads.py)
        sealed_uploads=False)
    base.update(overrides)
    return HParams(**base)  # type: ignore[arg-type]


def synthetic_shards(folder: Path, hp: HParams, *, num_samples: int = 192, per_shard: int = 64,
                     seed: int = 0) -> list[Path]:
    """`.npy` token shards (num_samples, seq_len + 1) with learnable structure: each sample counts up
    from a random start by a random small step (mod 64), so a few inner steps lower the loss everywhere."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 64, size=(num_samples, 1))
    step = rng.integers(1, 4, size=(num_samples, 1))
    tokens = ((start + step * np.arange(hp.seq_len + 1)) % 64).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, num_samples, per_shard):
        path = folder / f"{i // per_shard:06d}.npy"
        np.save(path, tokens[i : i + per_shard])
        paths.append(path)
    return paths


@dataclass
class Neuron:
    keypair: Keypair
    uid: int
    bucket: OwnBucket


@dataclass
class FakeNet:
    """A chain, a store, neurons with buckets and commitments, and the dataset every node reads."""

    root: Path
    hp: HParams = field(default_factory=tiny_hparams)
    num_samples: int = 192
    heldout_start: int = 160
    chain: FakeChain = field(default_factory=FakeChain)
    store: FakeStore = field(init=False)
    dataset: TokenDataset = field(init=False)
    neurons: dict[str, Neuron] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = FakeStore(now=self.chain.now)
        self.dataset = TokenDataset(synthetic_shards(self.root / "data", self.hp, num_samples=self.num_samples),
                                    self.hp.seq_len)

    @property
    def netuid(self) -> int:
        return self.chain.netuid

    def add(self, name: str, *, stake: float = 0.0, permit: bool = False, owner: bool = False,
            role: str | None = None) -> Neuron:
        """Register `//Name` (e.g. "alice"), give it a bucket and commit the bucket's read access with its
        declared role (default: "validator" for a permit holder, else "miner")."""
        keypair = Keypair.create_from_uri(f"//{name.capitalize()}")
        uid = self.chain.register(keypair.ss58_address, stake=stake, permit=permit, owner=owner)
        access = BucketAccess(endpoint=FAKE_ENDPOINT, bucket=f"bucket-{name}", access_key_id=f"read-{name}",
                              secret_access_key=f"secret-{name}-read",
                              role=role or ("validator" if permit else "miner"))
        bucket = OwnBucket(access=access, client=self.store)  # type: ignore[arg-type]
        self.chain.set_commitment(keypair, self.netuid, access.encode()).raise_for_error()
        self.neurons[name] = Neuron(keypair=keypair, uid=uid, bucket=bucket)
        return self.neurons[name]

    def peers(self) -> PeerBuckets:
        peers = PeerBuckets(commitments=lambda: self.chain.commitments(self.netuid),
                            client_factory=lambda _access: self.store)  # type: ignore[arg-type,return-value]
        peers.refresh()
        return peers

    def hotkey(self, name: str) -> str:
        return self.neurons[name].keypair.ss58_address

    def cfg(self, role: str) -> NeuronConfig:
        return NeuronConfig(role=role, netuid=self.netuid, device="cpu")  # type: ignore[arg-type]

    def miner(self, name: str) -> Miner:
        node = self.neurons[name]
        gm = GlobalModel.initial(self.hp, torch.device("cpu"))
        opt = torch.optim.AdamW(gm.model.parameters(), lr=self.hp.inner_lr, weight_decay=self.hp.inner_weight_decay)
        return Miner(cfg=self.cfg("miner"), hotkey=node.keypair, uid=node.uid, chain=self.chain,
                     clock=WindowClock(self.chain, self.hp), peers=self.peers(), bucket=node.bucket,
                     dataset=self.dataset, num_train=self.heldout_start, gm=gm, device=torch.device("cpu"),
                     state_dir=self.root / f"miner-{name}", optimizer=opt)

    def validator(self, name: str, *, seed: int = 20) -> Validator:
        """A validator whose private randomness (eval batches, sample seeds, sketch keys) is `random.Random(seed)`,
        so a test run is reproducible."""
        from gauntlet.ratings import Ratings

        node = self.neurons[name]
        return Validator(cfg=self.cfg("validator"), hotkey=node.keypair, uid=node.uid, chain=self.chain,
                         clock=WindowClock(self.chain, self.hp), peers=self.peers(), bucket=node.bucket,
                         dataset=self.dataset, num_train=self.heldout_start, num_samples=self.num_samples,
                         gm=GlobalModel.initial(self.hp, torch.device("cpu")), device=torch.device("cpu"),
                         state_dir=self.root / f"validator-{name}",
                         state=ValidatorState(ratings=Ratings(alpha=self.hp.compliance_alpha)),
                         rng=random.Random(seed))



def lead_net(tmp_path: Path, miners: tuple[str, ...] = ("bob", "charlie", "dave"),
             validators: tuple[tuple[str, float], ...] = ()) -> FakeNet:
    """The usual small net: uid 0 the owner, 1 alice (the lead: 10,000 staked, a permit), then `miners`,
    then each (name, stake) of `validators` with a permit."""
    net = FakeNet(tmp_path)
    net.add("owner", owner=True)
    net.add("alice", stake=10_000.0, permit=True)
    for name in miners:
        net.add(name)
    for name, stake in validators:
        net.add(name, stake=stake, permit=True)
    return net


def fake_guard_block(net: FakeNet, window: int) -> int:
    """The guard block of `window` on the fake chain (whose timestamps are known for every block)."""
    clock = WindowClock(net.chain, net.hp)
    found = find_guard_block(clock.last_block(window), clock.reveal_deadline(window), net.chain.block_timestamp,
                             clock.last_block(window) + 10_000)
    assert found is not None
    return found


def node_guard(net: FakeNet) -> GuardBatch:
    """The guard batch as a node of `net` reads it (template/node/guard.py, over the fake chain); while the node
    waits for a guard block the chain has not produced yet, the chain goes on (one block per wait)."""
    def produce(_s: float) -> None:
        net.chain.advance_to(net.chain.head + 1)
    clock = WindowClock(net.chain, net.hp, now=net.chain.now, sleep=produce)
    return guard_reader(clock, net.dataset, net.hp, net.heldout_start, StopFlag())


def fake_guard_ids(net: FakeNet, window: int, members: list[int]) -> list[int]:
    """The guard ids of `window` over the gather set `members`, as every node reads them once the block is out."""
    return window_guard_ids(net.chain.hash_of(fake_guard_block(net, window)), window, members,
                            data_seed=net.hp.data_seed, samples_per_window=net.hp.samples_per_window,
                            num_train=net.heldout_start, page_samples=net.dataset.page_samples)


class Lead:
    """The lead validator's side of windows 0, 1, ... without evaluation: each window, miners upload
    random sparse updates (signed, with the manifest fields every node checks), the lead applies them
    with the runtime's own outer step and signs the record (and optionally a checkpoint)."""

    def __init__(self, net: FakeNet, name: str = "alice") -> None:
        self.net = net
        self.lead = net.neurons[name]
        self.gm = GlobalModel.initial(net.hp, torch.device("cpu"))
        self.records: dict[int, AggregationRecord] = {}
        self.fingerprints = [self.gm.fingerprint()]  # theta_0, theta_1, ...
        # name -> its update on the lead's theta_window instead of a random one (e.g. one along the guard gradient)
        self.deltas: dict[str, Callable[[GlobalModel], dict[str, torch.Tensor]]] = {}

    def guard_ids(self, window: int, members: list[int]) -> list[int]:
        """The guard ids of `window` every node steps with (`gauntlet.progress.window_guard_ids` from the hash of
        the window's guard block, `find_guard_block`), known here before the chain produced the block."""
        return fake_guard_ids(self.net, window, members)

    def guard_batch(self, window: int, members: list[int]) -> torch.Tensor:
        return self.net.dataset.batch(self.guard_ids(window, members))

    def upload(self, name: str, window: int) -> bytes:
        """Miner `name`'s update of `window` on the lead's theta_window, put in its bucket."""
        node, hp = self.net.neurons[name], self.net.hp
        gen = torch.Generator().manual_seed(1000 * window + node.uid)
        delta = {n: torch.randn(s, generator=gen) * 1e-2 for n, s in self.gm.shapes().items()}
        if name in self.deltas:
            delta = self.deltas[name](self.gm)
        wire, _ = compress(delta, None, self.gm.codec, hp.ef_beta)
        ids = sample_ids(node.uid, window, hp.data_seed, hp.samples_per_window, self.net.heldout_start)
        data = write_tensor_artifact(wire, kind="gradient", window=window, keypair=node.keypair, fields={
            "uid": node.uid, "base_fingerprint": self.gm.fingerprint(), "data_receipt": data_receipt(ids),
            "num_inner_steps": hp.inner_steps, "codec": expected_codec_field(hp)})
        node.bucket.put_update(window, data)
        return data

    def window(self, window: int, miners: tuple[str, ...] = ("bob", "charlie"), *, publish: bool = True,
               checkpoint: bool = False, mirror: bool = False, **published_edits: object) -> AggregationRecord:
        """Aggregate fresh uploads of `miners` into theta_{window+1}; sign and publish the record, with
        `published_edits` applied to what is published (a wrong record); optionally a checkpoint after.
        `mirror`: copy each update into the lead's bucket and name the mirror in the record, as the runtime's
        lead does (`OwnBucket.put_input`)."""
        assert self.gm.window == window
        base = self.gm.fingerprint()
        names = sorted(miners, key=lambda name: self.net.neurons[name].uid)  # records list uids in order
        if publish and (self.lead.bucket.access.bucket, layout.peers_key(window)) not in self.net.store.objects:
            # the peer list in force, as the lead published it two windows before: replaying nodes check the
            # record's entries against it (issue 27)
            self.lead.bucket.put_peer_list(window, [self.net.neurons[n].uid for n in names], self.lead.keypair)
        sent = [self.upload(name, window) for name in names]
        entries = tuple(RecordEntry(uid=self.net.neurons[name].uid, hotkey=self.net.hotkey(name),
                                    key=self.lead.bucket.put_input(window, data) if mirror else layout.gradient_key(window),
                                    sha256=hashlib.sha256(data).hexdigest())
                        for name, data in zip(names, sent, strict=True))
        updates = [decompress(load_tensors(data), self.gm.shapes(), self.gm.codec) for data in sent]
        # as the runtime's lead (`GlobalModel.guarded_step`): members whose own step does not lower the guard
        # loss (the window's guard batch drawn from its guard block) are dropped, and the record names them
        guard = self.guard_batch(window, [e.uid for e in entries])
        gains = self.gm.own_gains(updates, self.net.hp.outer_lr, guard, mean_loss(self.gm.model, guard))
        dropped = no_gain_members(gains)
        self.gm.apply_updates([u for i, u in enumerate(updates) if i not in dropped], self.net.hp.outer_lr)
        self.gm.window = window + 1
        record = AggregationRecord(window=window, base_fingerprint=base, next_fingerprint=self.gm.fingerprint(),
                                   outer_lr=self.net.hp.outer_lr, included=entries,
                                   dropped=tuple(entries[i].uid for i in dropped))
        self.gm.lineage = self.gm.lineage.after_record(record)
        self.records[window] = record
        self.fingerprints.append(self.gm.fingerprint())
        if publish:
            self.lead.bucket.put_record(window, dataclasses.replace(record, **published_edits),  # type: ignore[arg-type]
                                        self.lead.keypair)
        if checkpoint:
            publish_checkpoint(self.gm, self.lead.bucket, self.lead.keypair)
        return record

    def run(self, windows: int = 3, **per_window: dict) -> None:
        """Windows 0 .. windows-1; `w1={...}` passes keyword arguments to `window(1, ...)`."""
        for w in range(windows):
            self.window(w, **per_window.get(f"w{w}", {}))
