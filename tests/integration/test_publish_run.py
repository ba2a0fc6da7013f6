"""The owner's publish command (scripts/publish_run.py -> template/node/publish.py) on a real localnet node and
a real SeaweedFS: refusals first (not the owner, endpoint not approved, dataset missing or not fitting), then a
dry run that writes nothing, then the publish, read back through the path every node takes at start
(`peer_buckets` -> `fetch_hparams` and the owner's dataset reader), then a second publish that leaves the
commitment alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from bittensor_wallet import Keypair, Wallet

from storage.dataset import fetch_dataset
from storage.s3 import Status
from template.chain.localnet.client import LocalnetClient
from template.chain.localnet.process import LocalnetProcess
from template.harness.prepare.pipeline import prepare_dataset
from template.harness.prepare.publish import upload_dataset
from template.node.neuron import fetch_run_hparams, peer_buckets
from template.node.publish import main
from template.protocol import layout
from template.protocol.config import HParams, NeuronConfig

if TYPE_CHECKING:
    from tests.conftest import SeaweedFixture

SEQ_LEN, VOCAB = 16, 300


@dataclass
class OwnerNet:
    endpoint: str
    wallets: Path
    netuid: int
    creds: Path  # the dataset bucket's credentials ("alice", holding the dataset)
    empty_creds: Path  # a bucket without a dataset ("bob")
    seaweed: SeaweedFixture

    def argv(self, *extra: str, wallet: str = "owner", creds: Path | None = None) -> list[str]:
        return ["--subtensor.network", "local", "--subtensor.chain_endpoint", self.endpoint, "--netuid",
                str(self.netuid), "--wallet.name", wallet, "--wallet.path", str(self.wallets),
                "--storage.credentials_file", str(creds or self.creds),
                "--hparam", f"seq_len={SEQ_LEN}", "--hparam", f"vocab_size={VOCAB}", *extra]

    @property
    def approved(self) -> list[str]:
        return ["--hparam", f'approved_storage_endpoints=["{self.seaweed.endpoint}"]']


def _creds(path: Path, seaweed: SeaweedFixture, bucket: str) -> Path:
    write, read = seaweed.neurons[bucket]
    path.write_text(json.dumps({"endpoint": seaweed.endpoint, "bucket": bucket, "write_key_id": write.access_key,
                                "write_secret": write.secret_key, "read_key_id": read.access_key,
                                "read_secret": read.secret_key}))
    return path


@pytest.fixture(scope="module")
def owner_net(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedFixture) -> Iterator[OwnerNet]:
    tmp = tmp_path_factory.mktemp("publish")
    corpus = tmp / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 60)
    manifest = prepare_dataset(tmp / "data", seq_len=SEQ_LEN, vocab_size=VOCAB, source=str(corpus))
    upload_dataset(seaweed.writer("alice"), "alice", tmp / "data", manifest)
    # bob is the "no dataset" bucket here; another module of the session may have mirrored one into it
    seaweed.writer("bob").delete("bob", layout.dataset_manifest_key())
    node = LocalnetProcess(tmp / "chain.sqlite", block_time=0.2)
    node.start()
    try:
        chain = LocalnetClient(node.endpoint)
        chain.connect()
        alice = Keypair.create_from_uri("//Alice")
        wallets = {}
        for name in ("owner", "stranger"):
            w = Wallet(name=name, hotkey="default", path=str(tmp / "wallets"))
            w.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
            w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
            chain.transfer(alice, w.coldkeypub.ss58_address, 2000.0).raise_for_error()
            wallets[name] = w
        netuid = chain.register_network(wallets["owner"].coldkey, wallets["owner"].hotkey.ss58_address)
        chain.burned_register(wallets["stranger"].coldkey, wallets["stranger"].hotkey.ss58_address,
                              netuid).raise_for_error()
        yield OwnerNet(node.endpoint, tmp / "wallets", netuid, _creds(tmp / "alice.json", seaweed, "alice"),
                       _creds(tmp / "bob.json", seaweed, "bob"), seaweed)
    finally:
        node.stop()


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_refusal(argv: list[str], capsys, expected: str) -> None:
    rc, _, err = _run(argv, capsys)
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err


def test_publish_refuses_what_nodes_would_refuse_then_publishes_what_they_read(owner_net: OwnerNet, capsys) -> None:
    n = owner_net
    chain = LocalnetClient(n.endpoint)
    chain.connect()
    owner_hotkey = chain.metagraph(n.netuid).owner_hotkey

    _one_line_refusal(n.argv(*n.approved, "-y", wallet="stranger"), capsys, "is not the owner hotkey")
    _one_line_refusal(n.argv("-y"), capsys, "approved_storage_endpoints")  # the default R2/S3 list
    _one_line_refusal(n.argv(*n.approved, "--hparam", "seq_len=32", "-y"), capsys, "does not fit the hparams")
    _one_line_refusal(n.argv(*n.approved, "-y", creds=n.empty_creds), capsys, "dataset manifest bob/")

    rc, out, _ = _run(n.argv(*n.approved, "--dry-run", "--json"), capsys)
    dry = json.loads(out)
    assert rc == 0 and dry["dry_run"] and dry["owner_hotkey"] == owner_hotkey and dry["dataset_objects"] >= 2
    assert owner_hotkey not in chain.commitments(n.netuid)
    assert n.seaweed.reader("alice").get("alice", layout.hparams_key()).status is Status.NOT_FOUND

    rc, out, _ = _run(n.argv(*n.approved, "--start-in-blocks", "50", "-y", "--json"), capsys)
    report = json.loads(out)
    assert rc == 0 and report["hparams_written"] and report["commitment_written"] and report["commitment_block"]
    assert report["start_block"] >= report["commitment_block"] + 40

    # what a node does at start: the owner's commitment -> its bucket -> hparams.json and the dataset
    peers = peer_buckets(chain, n.netuid)
    peers.refresh()
    cfg = NeuronConfig(role="miner", netuid=n.netuid)
    hp = fetch_run_hparams(cfg, peers, owner_hotkey)
    assert hp.fingerprint() == report["hparams_fingerprint"] and hp.start_block == report["start_block"]
    assert hp == HParams(seq_len=SEQ_LEN, vocab_size=VOCAB, approved_storage_endpoints=[n.seaweed.endpoint],
                         start_block=report["start_block"])
    peers.configure(hp)
    found = peers.reader(owner_hotkey)
    assert found is not None
    manifest, dataset = fetch_dataset(found[0], found[1], n.wallets.parent / "node-cache")
    assert manifest.num_samples == report["dataset_samples"] == len(dataset)

    rc, out, _ = _run(n.argv(*n.approved, "--start-in-blocks", "50", "-y"), capsys)
    assert rc == 0 and out.startswith("published: netuid") and "commitment already on chain, unchanged" in out
