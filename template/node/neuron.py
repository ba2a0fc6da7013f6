"""What miners and validators share at run time: wallet, chain, buckets, peers, window clock.

Everything here does I/O at the edges (chain, S3, disk); the decisions it feeds are pure
functions elsewhere. Construction of the pieces is explicit: `build_runtime(cfg)` connects.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from bittensor_wallet import Keypair, Wallet
from loguru import logger

from gauntlet.verify import rejected_leads
from storage.credentials import BucketAccess
from storage.dataset import fetch_dataset
from storage.peers import OWN_WRITE_ATTEMPTS, OwnBucket, PeerBuckets, fetch_hparams
from storage.s3 import S3Client, S3Error
from template.chain import connect
from template.chain.base import Chain, ChainError, Metagraph
from template.node import trust
from template.node.logging_setup import register_secret, setup_logging
from template.node.metrics import JsonlSink, configure_metrics, process_metrics
from template.protocol import layout
from template.protocol.config import HParams, NeuronConfig, load_hparams
from template.protocol.data import DatasetManifest, TokenDataset
from template.protocol.windows import upload_deadline, window_first_block, window_last_block, window_of_block

# Raised when storage or the chain stays unreachable past their own retries; the window loops
# log them and carry on with the next window (nothing local is lost: state is on disk).
TRANSIENT_ERRORS = (S3Error, ChainError)


class SetupError(RuntimeError):
    """A neuron cannot start; the message says what to do."""


def load_wallet(cfg: NeuronConfig) -> tuple[Wallet, Keypair]:
    wallet = Wallet(name=cfg.wallet.name, hotkey=cfg.wallet.hotkey, path=cfg.wallet.path)
    hk_path = Path(cfg.wallet.path).expanduser() / cfg.wallet.name / "hotkeys" / cfg.wallet.hotkey
    if not hk_path.exists():
        raise SetupError(
            f"hotkey {cfg.wallet.hotkey!r} of wallet {cfg.wallet.name!r} not found at {hk_path}. Create it with "
            f"`btcli wallet new_hotkey --wallet.name {cfg.wallet.name} --wallet.hotkey {cfg.wallet.hotkey}` "
            "(or bittensor_wallet.Wallet(...).create_new_hotkey())"
        )
    try:
        hotkey = wallet.get_hotkey()
    except Exception as e:  # the wallet library raises its own types for locked or corrupt keyfiles
        raise SetupError(f"cannot open hotkey {hk_path}: {e}") from e
    return wallet, hotkey


def load_own_bucket(cfg: NeuronConfig) -> OwnBucket:
    """Credentials from --storage.credentials_file (JSON) or env S3_* variables."""
    creds: dict[str, str] = {}
    if cfg.storage.credentials_file:
        path = Path(cfg.storage.credentials_file).expanduser()
        try:
            creds = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SetupError(f"cannot read --storage.credentials_file {path}: {e}") from e

    def pick(key: str, env: str) -> str:
        value = creds.get(key) or os.environ.get(env)
        if not value:
            raise SetupError(f"missing storage credential {key!r}: set it in --storage.credentials_file or ${env}")
        return str(value)
    endpoint = cfg.storage.endpoint or pick("endpoint", "S3_ENDPOINT")
    bucket = cfg.storage.bucket or pick("bucket", "S3_BUCKET")
    write_id, write_secret = pick("write_key_id", "S3_WRITE_KEY_ID"), pick("write_secret", "S3_WRITE_SECRET")
    read_id, read_secret = pick("read_key_id", "S3_READ_KEY_ID"), pick("read_secret", "S3_READ_SECRET")
    for s in (write_secret, read_secret):
        register_secret(s)
    access = BucketAccess(endpoint=endpoint, bucket=bucket, access_key_id=read_id, secret_access_key=read_secret,
                          region=cfg.storage.region, role=cfg.role)  # the role is declared on chain with it
    # own writes retry for ~15 s (backoff 0.25 s doubling to 4 s): a storage restart must not cost a window
    client = S3Client(endpoint, write_id, write_secret, cfg.storage.region, max_attempts=OWN_WRITE_ATTEMPTS)
    return OwnBucket(access=access, client=client)


def peer_buckets(chain: Chain, netuid: int) -> PeerBuckets:
    """Peers' buckets as their commitments on `netuid` name them (read secrets kept out of the logs)."""
    return PeerBuckets(commitments=lambda: chain.commitments(netuid), on_secret=register_secret)


@dataclass
class NeuronParts:
    """The long-lived parts every running neuron holds (`Miner` and `Validator` extend it)."""

    cfg: NeuronConfig
    hotkey: Keypair
    uid: int
    chain: Chain
    clock: WindowClock
    peers: PeerBuckets
    bucket: OwnBucket
    dataset: TokenDataset
    state_dir: Path
    device: torch.device


@dataclass
class NodeBase(NeuronParts):
    """What a miner and a validator both start from: the parts, the run hparams and the dataset manifest."""

    hparams: HParams
    manifest: DatasetManifest


def build_node(cfg: NeuronConfig, device: torch.device | None = None) -> NodeBase:
    """The shared build path: wallet, chain, registration, own bucket and its commitment, peers, the
    run's hparams and the dataset. `device` overrides --device (torchrun rank 0 keeps theta on the CPU).

    Raises SetupError with what to do when any piece is missing.
    """
    _, hotkey = load_wallet(cfg)
    chain = connect(cfg.subtensor.network, cfg.subtensor.chain_endpoint)
    mg = chain.metagraph(cfg.netuid)
    uid = mg.uid_of(hotkey.ss58_address)
    if uid is None:
        hint = "register and stake" if cfg.role == "validator" else "register it"
        raise SetupError(
            f"hotkey {hotkey.ss58_address} is not registered on netuid {cfg.netuid}; {hint} with "
            f"`btcli subnet register --netuid {cfg.netuid} --wallet.name {cfg.wallet.name} "
            f"--wallet.hotkey {cfg.wallet.hotkey}` (localnet: python -m template.chain.localnet register)"
        )
    bucket = load_own_bucket(cfg)
    publish_commitment(chain, hotkey, cfg.netuid, bucket.access)
    peers = peer_buckets(chain, cfg.netuid)
    peers.refresh()
    hp = fetch_run_hparams(cfg, peers, mg.owner_hotkey)
    peers.configure(hp)  # from here on: approved storage endpoints only, reads within the fetch budget
    state_dir = Path(cfg.state_dir).expanduser() / f"{cfg.role}-{hotkey.ss58_address[:16]}"
    found = peers.reader(mg.owner_hotkey)
    if found is None:
        why = peers.refused.get(mg.owner_hotkey, "published no dataset commitment")
        raise SetupError(f"the subnet owner's dataset bucket is not usable ({why}); cannot load data")
    manifest, dataset = fetch_dataset(found[0], found[1], state_dir / "dataset")
    if manifest.seq_len != hp.seq_len or manifest.vocab_size > hp.vocab_size:
        raise SetupError(f"dataset (seq_len {manifest.seq_len}, vocab {manifest.vocab_size}) does not fit hparams")
    return NodeBase(cfg=cfg, hotkey=hotkey, uid=uid, chain=chain, clock=WindowClock(chain, hp), peers=peers,
                    bucket=bucket, hparams=hp, manifest=manifest, dataset=dataset, state_dir=state_dir,
                    device=pick_device(cfg.device) if device is None else device)


def publish_commitment(chain: Chain, hotkey: Keypair, netuid: int, access: BucketAccess) -> bool:
    """Commit the bucket read access when it differs from what is on chain; True if it wrote."""
    encoded = access.encode()
    if chain.commitments(netuid).get(hotkey.ss58_address) == encoded:
        return False
    res = chain.set_commitment(hotkey, netuid, encoded)
    if not res.ok:
        raise SetupError(f"could not publish bucket commitment: {res.error}")
    logger.info(f"published bucket commitment for {access.bucket} at {access.endpoint}")
    return True


LEAD_STALE_WINDOWS = 3  # a lead whose newest record is older than this many windows hands over


def declared_validators(peers: PeerBuckets) -> set[str]:
    """Hotkeys whose bucket commitment declares the validator role (storage/credentials.py, "o": "v")."""
    return {hotkey for hotkey, acc in peers.access.items() if acc.role == "validator"}


def validator_uids(mg: Metagraph, min_stake: float, declared: Collection[str]) -> list[int]:
    """Uids that declared the validator role, hold a validator permit and at least `min_stake` alpha.

    Declaration comes first: stake is anyone's to add (a coldkey can stake onto any hotkey), so
    stake alone must never turn a miner into a validator - it would stop being judged, and as the
    lead it would run no validator code and freeze the model. The stake floor matters too: a young
    subnet gives a permit to every staked uid. Before a new subnet's first epoch (no permit anywhere
    yet), every declared uid staked above the floor except the owner's, since permits go to those.
    """
    staked = [u for u in mg.uids if mg.stake[u] >= min_stake and mg.hotkeys[u] in declared]
    if not any(mg.validator_permit):
        return [u for u in staked if mg.hotkeys[u] != mg.owner_hotkey]
    return [u for u in staked if mg.validator_permit[u]]


def lead_validator(mg: Metagraph, min_stake: float, declared: Collection[str],
                   newest_record: dict[str, int | None] | None = None, window: int = 0,
                   rejected: Collection[str] = ()) -> int | None:
    """The validator that signs records, peer lists and checkpoints for `window`.

    Candidates: `validator_uids`, highest stake first (ties: lower uid). With `newest_record`
    (hotkey -> newest window it published a record for, None if none), the lead is the first
    candidate that published a record of a window >= window - LEAD_STALE_WINDOWS; when none has,
    the candidates take turns, LEAD_STALE_WINDOWS windows each (window // LEAD_STALE_WINDOWS), until
    one publishes. So a lead that stops is handed over after LEAD_STALE_WINDOWS windows, a dead
    candidate's turn passes, and every node computes the same lead from public data. Candidates in
    `rejected` (hotkeys whose records validators holding a stake majority rejected,
    `gauntlet.verify.rejected_leads`) are passed over.
    """
    vals = sorted((u for u in validator_uids(mg, min_stake, declared) if mg.hotkeys[u] not in set(rejected)),
                  key=lambda u: (-mg.stake[u], u))
    if not vals:
        return None
    if newest_record is None:
        return vals[0]
    newest = {u: newest_record.get(mg.hotkeys[u]) for u in vals}
    fresh = [u for u in vals if (w := newest[u]) is not None and w >= window - LEAD_STALE_WINDOWS]
    if fresh:
        return fresh[0]
    return vals[(max(window, 0) // LEAD_STALE_WINDOWS) % len(vals)]


def miner_uids(mg: Metagraph, min_stake: float, declared: Collection[str]) -> list[int]:
    vals = set(validator_uids(mg, min_stake, declared))
    return [u for u in mg.uids if u not in vals and mg.hotkeys[u] != mg.owner_hotkey]


def find_lead(peers: PeerBuckets, mg: Metagraph, min_stake: float, window: int) -> int | None:
    """`lead_validator` for `window` from the declarations in `peers` and the candidates' published records."""
    declared = declared_validators(peers)
    newest = {}
    vals = validator_uids(mg, min_stake, declared)
    for uid in vals:
        hotkey = mg.hotkeys[uid]
        windows = peers.list_windows(hotkey, layout.record_key(0).rsplit("/", 1)[0] + "/")
        newest[hotkey] = max((w for w in windows if w < window), default=None)
    stake = validator_stake(mg, min_stake, declared)
    rejected = rejected_leads(trust.rejections(peers, list(stake), window), stake)
    return lead_validator(mg, min_stake, declared, newest, window, rejected)


def validator_stake(mg: Metagraph, min_stake: float, declared: Collection[str]) -> dict[str, float]:
    """hotkey -> stake of the validators (`validator_uids`): whose verdicts count, and by how much."""
    return {mg.hotkeys[u]: mg.stake[u] for u in validator_uids(mg, min_stake, declared)}


def fetch_run_hparams(cfg: NeuronConfig, peers: PeerBuckets, owner_hotkey: str) -> HParams:
    """Hparams: a local file if given, else hparams.json from the owner's dataset bucket."""
    if cfg.hparams_file:
        return load_hparams(cfg.hparams_file, cfg.hparam_overrides)
    read = fetch_hparams(peers, owner_hotkey)
    if not read.ok or read.value is None:
        raise SetupError(f"cannot read the subnet owner's hparams.json ({read.describe()}); pass --hparams_file")
    return load_hparams_bytes(read.value, cfg.hparam_overrides)


def load_hparams_bytes(data: bytes, overrides: dict) -> HParams:
    import tempfile

    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(data)
    try:
        return load_hparams(f.name, overrides)
    finally:
        os.unlink(f.name)


@dataclass(frozen=True)
class WindowClock:
    """Chain blocks -> windows for one run."""

    chain: Chain
    hparams: HParams

    def current_window(self) -> int:
        return window_of_block(self.chain.block(), self.hparams.start_block, self.hparams.blocks_per_window)

    def first_block(self, window: int) -> int:
        return window_first_block(window, self.hparams.start_block, self.hparams.blocks_per_window)

    def last_block(self, window: int) -> int:
        return window_last_block(window, self.hparams.start_block, self.hparams.blocks_per_window)

    def wait_for_window(self, window: int, stop: StopFlag) -> bool:
        """Block until `window` has begun; False if asked to stop first."""
        return self.wait_for_block(self.first_block(window), stop)

    def wait_for_block(self, block: int, stop: StopFlag) -> bool:
        while not stop.is_set():
            if self.chain.block() >= block:
                return True
            time.sleep(0.5)
        return False

    def block_time_s(self) -> float:
        """Seconds per block, measured from the chain's own timestamps (localnet 1 s, finney 12 s)."""
        head = self.chain.block()
        span = min(head, 10)
        if span <= 0:
            return 1.0
        dt = self.chain.block_timestamp(head) - self.chain.block_timestamp(head - span)
        return max(dt / span, 0.05)

    def window_s(self) -> float:
        return self.block_time_s() * self.hparams.blocks_per_window

    def deadline(self, window: int) -> float:
        """Unix time after which uploads of `window` no longer count (`upload_deadline`: the chain
        timestamp of the window's last block + upload_grace_s). The last block must exist."""
        return upload_deadline(self.chain.block_timestamp(self.last_block(window)), self.hparams.upload_grace_s)

    def accepting_uploads(self, window: int) -> bool:
        """Whether an upload for `window` made now can still count: before the window's last block is
        produced always, after it until the deadline (miners check this before they send)."""
        if self.chain.block() <= self.last_block(window):
            return True
        return time.time() < self.deadline(window)

    def wait_past_deadline(self, window: int, stop: StopFlag) -> float | None:
        """Wait until the window's last block exists and its grace passed; return the deadline."""
        if not self.wait_for_block(self.last_block(window) + 1, stop):
            return None
        deadline = self.deadline(window)
        while not stop.is_set() and time.time() < deadline + 1.0:  # +1 s: LastModified resolution
            time.sleep(0.1)
        return None if stop.is_set() else deadline


class StopFlag:
    """Set by SIGINT/SIGTERM; loops check it between steps so a window ends cleanly."""

    def __init__(self) -> None:
        self._set = False

    def set(self, *_: object) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def append_metrics(path: str | None, row: dict) -> None:
    """One JSON line per window in `path` (plots, the localnet report and dashboard), and the same row
    to the process's other metrics sinks (Prometheus with --metrics.port; template/node/metrics.py)."""
    process_metrics().log(row)
    if path:
        JsonlSink(path).log(row)


def setup_runtime(cfg: NeuronConfig) -> None:
    """Process-wide settings, done by the entry point (nothing runs at import)."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 alone serves the metrics port
        try:
            configure_metrics(cfg)
        except OSError as e:
            raise SystemExit(f"cannot serve --metrics.port {cfg.metrics.port} on {cfg.metrics.host}: {e}") from e


def run_neuron(cfg: NeuronConfig, label: str, runner: Callable[[NeuronConfig], None], suffix: str = "") -> int:
    """What every entry point does once its flags are parsed: logging named `label:wallet/hotkey{suffix}`, the
    process-wide runtime, then `runner(cfg)`; a SetupError (no wallet, not registered, ...) is one
    logged line and exit status 2, not a traceback."""
    setup_logging(debug=cfg.logging.debug, trace=cfg.logging.trace, log_dir=cfg.logging.logging_dir,
                  name=f"{label}:{cfg.wallet.name}/{cfg.wallet.hotkey}{suffix}")
    setup_runtime(cfg)
    try:
        runner(cfg)
    except SetupError as e:
        logger.error(str(e))
        return 2
    return 0
