"""Publish a run from the subnet owner's hotkey: the run's hparams and the dataset commitment.

Every node starts from two things the owner publishes (template/node/neuron.py, `build_node`): the owner
hotkey's commitment, which names the dataset bucket and its read-only keys, and `hparams.json` in that bucket.
`publish_run` writes both, after checking what a node would check, so a mistake shows here and not as every
node refusing to start:

* the signing hotkey is the subnet's owner hotkey (nodes read the commitment of `metagraph.owner_hotkey`);
* the bucket's endpoint is approved by the hparams' `approved_storage_endpoints` (else nodes refuse it);
* the dataset manifest, tokenizer and shards are readable with the read keys and fit the hparams;
* `hparams.json` reads back identical with the read keys;
* the commitment, once set, reads back from the chain as written (left alone when it already is).

It talks to any `template.chain.base.Chain`: the localnet client and the bittensor adapter (finney, test).
`scripts/publish_run.py` is its command line (`main` below); `scripts/localnet.py` publishes through it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bittensor_wallet import Keypair

from storage.peers import HPARAMS_MAX_BYTES, OwnBucket
from storage.s3 import S3Client, S3Error, Status
from template.chain.base import Chain, ChainError
from template.protocol import layout
from template.protocol.config import HParams, load_hparams, parse_hparam_overrides
from template.protocol.data import DatasetError, DatasetManifest, load_manifest
from template.protocol.endpoints import endpoint_approved

MANIFEST_MAX_BYTES = 1 << 20


class PublishError(RuntimeError):
    """Publishing was refused before or while writing; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class PublishReport:
    """What `publish_run` found and did."""

    netuid: int
    owner_hotkey: str
    endpoint: str
    bucket: str
    hparams_fingerprint: str
    start_block: int
    dataset_samples: int
    dataset_objects: int
    hparams_written: bool
    commitment_written: bool
    commitment_block: int | None
    dry_run: bool


def hparams_bytes(hp: HParams) -> bytes:
    """The hparams.json every node loads (the same layout `scripts/localnet.py` has always written)."""
    return json.dumps(hp.model_dump(), indent=1).encode()


def check_dataset(reader: S3Client, bucket: str, hp: HParams) -> tuple[DatasetManifest, int]:
    """The dataset manifest read with the read keys, and the number of objects it names, all present at their
    size. Raises PublishError naming the first thing a node would fail on."""
    key = layout.dataset_manifest_key()
    res = reader.get(bucket, key, max_bytes=MANIFEST_MAX_BYTES)
    if res.status is not Status.OK or res.data is None:
        raise PublishError(f"the dataset manifest {bucket}/{key} is not readable with the read keys "
                           f"({res.status.name}: {res.error}); upload the dataset first "
                           f"(scripts/prepare_data.py --upload)")
    try:
        manifest = load_manifest(res.data)
    except DatasetError as e:
        raise PublishError(f"{bucket}/{key}: {e}") from e
    if manifest.seq_len != hp.seq_len or manifest.vocab_size > hp.vocab_size:
        raise PublishError(f"the dataset (seq_len {manifest.seq_len}, vocab {manifest.vocab_size}) does not fit the "
                           f"hparams (seq_len {hp.seq_len}, vocab_size {hp.vocab_size}): nodes would refuse it")
    # each shard holds whole samples; its index one sha256 (32 bytes) per page, the last page maybe short
    objects = [(manifest.tokenizer.key, manifest.tokenizer.bytes)]
    for shard in manifest.shards:
        num_pages = -(-shard.num_samples // manifest.page_samples)
        objects += [(shard.key, shard.num_samples * manifest.sample_bytes), (shard.index_key, 32 * num_pages)]
    for obj_key, size in objects:
        try:
            info = reader.head(bucket, obj_key)
        except S3Error as e:
            raise PublishError(f"dataset object {bucket}/{obj_key} is not readable with the read keys: {e}") from e
        if info is None or info.size != size:
            found = "missing" if info is None else f"{info.size} bytes"
            raise PublishError(f"dataset object {bucket}/{obj_key} is {found}, the manifest says {size} bytes; "
                               "upload the dataset again")
    return manifest, len(objects)


def publish_run(chain: Chain, hotkey: Keypair, netuid: int, own: OwnBucket, hp: HParams, *,
                dry_run: bool = False) -> PublishReport:
    """Check, then write hparams.json into the owner's bucket and commit the bucket's read access from the
    owner hotkey (only when the chain does not hold it already). `dry_run`: check everything, write nothing.

    Raises PublishError (refusals, failed writes), ChainError (chain unreachable).
    """
    access = own.access
    mg = chain.metagraph(netuid)
    if mg.owner_hotkey != hotkey.ss58_address:
        raise PublishError(f"hotkey {hotkey.ss58_address} is not the owner hotkey of netuid {netuid} "
                           f"({mg.owner_hotkey}): nodes read the run from the owner hotkey's commitment only")
    if not endpoint_approved(access.endpoint, hp.approved_storage_endpoints):
        raise PublishError(f"the bucket endpoint {access.endpoint} is not in the hparams' approved_storage_endpoints "
                           f"{list(hp.approved_storage_endpoints)}: every node would refuse the dataset bucket")
    reader = S3Client(access.endpoint, access.access_key_id, access.secret_access_key, access.region)
    manifest, objects = check_dataset(reader, access.bucket, hp)
    body = hparams_bytes(hp)
    encoded = access.encode()
    already = chain.commitments(netuid).get(hotkey.ss58_address) == encoded
    if dry_run:
        return PublishReport(netuid, hotkey.ss58_address, access.endpoint, access.bucket, hp.fingerprint(),
                             hp.start_block, manifest.num_samples, objects, False, False, None, True)
    try:
        own.put(layout.hparams_key(), body)
    except S3Error as e:
        raise PublishError(f"writing {access.bucket}/{layout.hparams_key()} failed: {e}") from e
    back = reader.get(access.bucket, layout.hparams_key(), max_bytes=HPARAMS_MAX_BYTES)
    if back.status is not Status.OK or back.data != body:
        raise PublishError(f"{access.bucket}/{layout.hparams_key()} does not read back as written with the read keys "
                           f"({back.status.name}: {back.error}); check the read key's permissions")
    block = None
    if not already:
        res = chain.set_commitment(hotkey, netuid, encoded)
        if not res.ok:
            raise PublishError(f"the chain refused the owner commitment: {res.error}")
        block = res.block
        if chain.commitments(netuid).get(hotkey.ss58_address) != encoded:
            raise PublishError("the owner commitment does not read back from the chain as written")
    return PublishReport(netuid, hotkey.ss58_address, access.endpoint, access.bucket, hp.fingerprint(),
                         hp.start_block, manifest.num_samples, objects, True, not already, block, False)


# ---------------------------------------------------------------------------------------------------------------
# command line: scripts/publish_run.py


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/publish_run.py", description=(
        "Publish a run from the subnet owner's hotkey: hparams.json into the dataset bucket and the bucket's "
        "read access as the owner commitment (docs/subnet-owner.md, section 7)."))
    p.add_argument("--subtensor.network", "--network", dest="network", default="local",
                   help="finney | test | archive | local (the localnet) | a ws(s):// URL (default local)")
    p.add_argument("--subtensor.chain_endpoint", "--chain", dest="chain_endpoint", default=None,
                   help="explicit endpoint; overrides the network's default")
    p.add_argument("--wallet.name", "--wallet-name", dest="wallet_name", default="default")
    p.add_argument("--wallet.hotkey", "--wallet-hotkey", "--hotkey", dest="wallet_hotkey", default="default",
                   help="the owner hotkey's name (it signs the commitment)")
    p.add_argument("--wallet.path", "--wallet-path", dest="wallet_path", default="~/.bittensor/wallets")
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--storage.credentials_file", dest="credentials_file", default=None,
                   help="the dataset bucket's JSON credentials (endpoint, bucket, write and read keys), as a "
                        "neuron's; else $S3_ENDPOINT, $S3_BUCKET, $S3_WRITE_KEY_ID, ...")
    p.add_argument("--storage.endpoint", dest="storage_endpoint", default=None)
    p.add_argument("--storage.bucket", dest="storage_bucket", default=None)
    p.add_argument("--storage.region", dest="storage_region", default="us-east-1")
    p.add_argument("--hparams", type=Path, default=None, help="hparams JSON (default: the field defaults)")
    p.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE", help="override one field")
    p.add_argument("--start-in-blocks", type=int, default=None,
                   help="set start_block to the chain's head plus this many blocks (window 0 starts there)")
    p.add_argument("--yes", "-y", "--no-prompt", dest="yes", action="store_true", help="do not ask")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="check everything, write nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _setup(args: argparse.Namespace):
    """(chain, owner hotkey keypair, own bucket, hparams) from the flags; SetupError/ValueError on a mistake."""
    from template.chain import connect
    from template.node.neuron import load_own_bucket, load_wallet
    from template.protocol.config import NeuronConfig, StorageConfig, SubtensorConfig, WalletConfig

    cfg = NeuronConfig(role="miner", netuid=args.netuid,
                       wallet=WalletConfig(name=args.wallet_name, hotkey=args.wallet_hotkey, path=args.wallet_path),
                       subtensor=SubtensorConfig(network=args.network, chain_endpoint=args.chain_endpoint),
                       storage=StorageConfig(endpoint=args.storage_endpoint, bucket=args.storage_bucket,
                                             region=args.storage_region, credentials_file=args.credentials_file))
    _, hotkey = load_wallet(cfg)
    own = load_own_bucket(cfg)  # role "miner": the owner's commitment declares no validator role
    hp = load_hparams(args.hparams, parse_hparam_overrides(args.hparam))
    chain = connect(args.network, args.chain_endpoint)
    if args.start_in_blocks is not None:
        if args.start_in_blocks < 0:
            raise ValueError(f"--start-in-blocks must be >= 0, got {args.start_in_blocks}")
        hp = hp.model_copy(update={"start_block": chain.block() + args.start_in_blocks})
    return chain, hotkey, own, hp


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        answer = sys.stdin.readline()
        sys.stderr.write(f"{question} [y/N] {answer.strip()}\n")
    else:
        sys.stderr.write(f"{question} [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when published (or a dry run passed), 1 when refused, 2 for a command line that does not
    parse. Every refusal is one line on stderr."""
    from template.node.neuron import SetupError

    args = build_parser().parse_args(argv)
    try:
        chain, hotkey, own, hp = _setup(args)
        check = publish_run(chain, hotkey, args.netuid, own, hp, dry_run=True)
        if not args.dry_run and not args.yes and not _confirm(
                f"Publish hparams {check.hparams_fingerprint[:12]} (start_block {hp.start_block}) and commit "
                f"{check.endpoint}/{check.bucket} from owner hotkey {check.owner_hotkey} on netuid {args.netuid}?"):
            print("aborted, nothing was written", file=sys.stderr)
            return 1
        report = check if args.dry_run else publish_run(chain, hotkey, args.netuid, own, hp)
    except (PublishError, SetupError, ChainError, S3Error, ValueError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(report), sort_keys=True))
        return 0
    what = "checked (dry run, nothing written)" if report.dry_run else "published"
    commit = ("commitment set in block " + str(report.commitment_block) if report.commitment_written
              else "commitment already on chain, unchanged" if not report.dry_run else "commitment not sent")
    print(f"{what}: netuid {report.netuid}, owner hotkey {report.owner_hotkey}; hparams {report.hparams_fingerprint[:12]} "
          f"(start_block {report.start_block}) in {report.endpoint}/{report.bucket}; dataset {report.dataset_samples} "
          f"samples in {report.dataset_objects} objects; {commit}")
    return 0
