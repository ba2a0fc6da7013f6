"""What miners and validators share at run time: wallet, chain, buckets, peers, window clock.

Everything here does I/O at the edges (chain, S3, disk); the decisions it feeds are pure
functions elsewhere. Construction of the pieces is explicit: `build_node(cfg)` connects.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
from bittensor_wallet import Keypair, Wallet
from loguru import logger

from gauntlet.verify import rejected_leads
from storage.credentials import BucketAccess
from storage.dataset import PAGE_BUDGET, DataSource, fetch_dataset
from storage.peers import OwnBucket, PeerBuckets, fetch_hparams, newest_record_before, open_own_bucket
from storage.s3 import S3Client, S3Error
from template.chain import connect
from template.chain.base import Chain, ChainError
from template.node import trust
from template.node.logging_setup import register_secret, setup_logging
from template.node.metrics import JsonlSink, configure_metrics, process_metrics
from template.node.preflight import preflight_main, require_preflight
from template.node.state import STATE_VERSION, open_state_dir
from template.protocol.config import HParams, NeuronConfig, load_hparams
from template.protocol.data import DatasetError, DatasetManifest, SampleSource
from template.protocol.lead import LEAD_STALE_WINDOWS as LEAD_STALE_WINDOWS  # re-exported: the rule is pure
from template.protocol.lead import lead_validator as lead_validator
from template.protocol.lead import miner_uids as miner_uids
from template.protocol.lead import validator_uids as validator_uids
from template.protocol.metagraph import Metagraph
from template.protocol.version import CODE_VERSION
from template.protocol.windows import (
    LAST_MODIFIED_RESOLUTION_S,
    find_guard_block,
    reveal_deadline,
    upload_deadline,
    window_first_block,
    window_last_block,
    window_of_block,
)

# Raised when storage or the chain stays unreachable past their own retries; the window loops
# log them and carry on with the next window (nothing local is lost: state is on disk).
# a corpus page no endpoint serves verified (DatasetError) loses the window, like storage being away
TRANSIENT_ERRORS = (S3Error, ChainError, DatasetError)


class SetupError(RuntimeError):
    """A neuron cannot start; the message says what to do. Exit status 2: run files leave it stopped."""

    exit_status = 2


class ServiceUnreachable(SetupError):
    """Start-up found the chain or the storage unreachable and nothing else wrong: exit status 3, which the
    run files (deploy/) restart, since the service may be back in a minute."""

    exit_status = 3


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
    try:
        access = BucketAccess(endpoint=endpoint, bucket=bucket, access_key_id=read_id, secret_access_key=read_secret,
                              region=cfg.storage.region, role=cfg.role)  # the role is declared on chain with it
    except ValueError as e:  # a short key id, a bad endpoint: what the chain commitment could not carry
        raise SetupError(f"storage credentials ({cfg.storage.credentials_file or 'S3_* variables'}): {e}") from e
    return open_own_bucket(access, write_id, write_secret)


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
    dataset: SampleSource
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
    require_preflight(cfg)  # nothing is published before every check passed
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
    try:  # before anything reads it: a folder from a newer release is refused, an older one migrated
        if migrated := open_state_dir(state_dir, CODE_VERSION):
            logger.info(f"state folder {state_dir} migrated from format {migrated[0]} to {STATE_VERSION}")
    except ValueError as e:
        raise SetupError(str(e)) from e
    found = peers.reader(mg.owner_hotkey)
    if found is None:
        why = peers.refused.get(mg.owner_hotkey, "published no dataset commitment")
        raise SetupError(f"the subnet owner's dataset bucket is not usable ({why}); cannot load data")
    manifest, dataset = fetch_dataset(found[0], found[1], state_dir / "dataset", cache_gb=cfg.data.cache_gb,
                                      mirrors=data_mirrors(cfg))
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


def declared_validators(peers: PeerBuckets) -> set[str]:
    """Hotkeys whose bucket commitment declares the validator role (storage/credentials.py, "o": "v")."""
    return {hotkey for hotkey, acc in peers.access.items() if acc.role == "validator"}


def find_lead(peers: PeerBuckets, mg: Metagraph, min_stake: float, window: int) -> int | None:
    """`lead_validator` for `window` from the declarations in `peers`, the candidates' published records and the
    validators' signed rejections (`trust.rejections`, `gauntlet.verify.rejected_leads`)."""
    declared = declared_validators(peers)
    newest = {mg.hotkeys[uid]: newest_record_before(peers, mg.hotkeys[uid], window)
              for uid in validator_uids(mg, min_stake, declared)}
    stake = validator_stake(mg, min_stake, declared)
    rejected = rejected_leads(trust.rejections(peers, list(stake), window), stake)
    return lead_validator(mg, min_stake, declared, newest, window, rejected)


def lead_now(n: NeuronParts, min_stake: float, window: int) -> tuple[Metagraph, str | None]:
    """The metagraph read now and the hotkey of `window`'s lead (None: no validator leads), the peers' buckets
    refreshed first: where a restarting node takes its records and checkpoints from."""
    n.peers.refresh()
    mg = n.chain.metagraph(n.cfg.netuid)
    lead = find_lead(n.peers, mg, min_stake, window)
    return mg, None if lead is None else mg.hotkeys[lead]


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


GUARD_BLOCKS_KEPT = 64  # windows whose guard block a clock remembers
GUARD_WAIT_BLOCKS = 5  # block times past the reveal deadline a node waits for the guard block at most


@dataclass(frozen=True)
class WindowClock:
    """Chain blocks -> windows for one run, and the node's wall clock (`now`, `sleep`: a test may put its own)."""

    chain: Chain
    hparams: HParams
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    # window -> its guard block, once produced (it never changes after)
    _guard_blocks: dict[int, int] = field(default_factory=dict, init=False, compare=False, repr=False)

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
            head = self.chain.block()
            process_metrics().chain_head(head)  # a live head for the "chain head stalled" alert
            if head >= block:
                return True
            self.sleep(0.5)
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
        return self.now() < self.deadline(window)

    def wait_past_deadline(self, window: int, stop: StopFlag) -> float | None:
        """Wait until the window's last block exists and its grace passed; return the deadline."""
        if not self.wait_for_block(self.last_block(window) + 1, stop):
            return None
        deadline = self.deadline(window)
        return deadline if self.wait_past(deadline, stop) else None

    def reveal_deadline(self, window: int) -> float:
        """Unix time by which the key of a sealed upload of `window` must be out (`reveal_deadline`)."""
        return reveal_deadline(self.deadline(window), self.hparams.reveal_grace_s)

    def guard_block(self, window: int) -> int | None:
        """The block whose hash seeds the window's guard batch (`find_guard_block`: the first block stamped after
        the reveal deadline), None while it is not produced. Raises ChainError when the chain cannot say."""
        if window in self._guard_blocks:
            return self._guard_blocks[window]
        last, head = self.last_block(window), self.chain.block()
        if head <= last:
            return None
        found = find_guard_block(last, self.reveal_deadline(window), self.chain.block_timestamp, head)
        if found is not None:
            self._guard_blocks[window] = found
            for w in sorted(self._guard_blocks)[:-GUARD_BLOCKS_KEPT]:
                del self._guard_blocks[w]
        return found

    def wait_for_guard_block(self, window: int, stop: StopFlag) -> int | None:
        """The window's guard block, waited for (every 0.5 s) until the chain has produced it; None if asked to
        stop first. Raises ChainError when the chain cannot say, or has not produced it GUARD_WAIT_BLOCKS
        block times after the reveal deadline (a node whose chain view lags; never a hang)."""
        until = None
        while not stop.is_set():
            found = self.guard_block(window)
            if found is not None:
                return found
            if until is None:
                until = max(self.now(), self.reveal_deadline(window)) + GUARD_WAIT_BLOCKS * self.block_time_s()
            elif self.now() > until:
                raise ChainError(f"the guard block of window {window} is not produced yet")
            self.sleep(0.5)
        return None

    def wait_past(self, t: float, stop: StopFlag) -> bool:
        """Wait until every storage write stamped on time against `t` is there (`t` plus LastModified's
        resolution); False if asked to stop first."""
        while not stop.is_set() and self.now() < t + LAST_MODIFIED_RESOLUTION_S:
            self.sleep(0.1)
        return not stop.is_set()


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


# What ends a neuron before its loop can run: a SetupError (no wallet, not registered, ...) or the chain or
# storage out of reach past their own retries (the window loops catch these themselves once running).
STARTUP_ERRORS = (SetupError, ChainError, S3Error)


def run_neuron(cfg: NeuronConfig, label: str, runner: Callable[[NeuronConfig], None], suffix: str = "") -> int:
    """What every entry point does once its flags are parsed: logging named `label:wallet/hotkey{suffix}`, the
    process-wide runtime, then `runner(cfg)` (or with --preflight only the checks); an expected start-up
    failure (`STARTUP_ERRORS`: no wallet, not registered, a failed preflight, the chain or storage out of reach)
    is one logged line and exit status 2 (3: the preflight found only the chain or the storage not answering,
    which run files restart), not a traceback."""
    setup_logging(debug=cfg.logging.debug, trace=cfg.logging.trace, log_dir=cfg.logging.logging_dir,
                  rotation=cfg.logging.rotation, retention=cfg.logging.retention,
                  name=f"{label}:{cfg.wallet.name}/{cfg.wallet.hotkey}{suffix}")
    setup_runtime(cfg)
    if cfg.preflight:
        return preflight_main(cfg)
    try:
        runner(cfg)
    except STARTUP_ERRORS as e:
        what = "" if isinstance(e, SetupError) else ("chain: " if isinstance(e, ChainError) else "storage: ")
        logger.error(f"cannot start: {what}{e}".replace("\n", " "))
        return e.exit_status if isinstance(e, SetupError) else 2
    return 0


def data_mirrors(cfg: NeuronConfig) -> list[DataSource]:
    """The second dataset endpoint of --data.mirror_endpoint / --data.mirror_bucket (keys from the env),
    read within the page budget. Raises SetupError when half-configured."""
    endpoint, bucket = cfg.data.mirror_endpoint, cfg.data.mirror_bucket
    if endpoint is None and bucket is None:
        return []
    key_id, secret = os.environ.get("DATA_MIRROR_KEY_ID"), os.environ.get("DATA_MIRROR_SECRET")
    if not (endpoint and bucket and key_id and secret):
        raise SetupError("a dataset mirror needs --data.mirror_endpoint, --data.mirror_bucket and env "
                         "DATA_MIRROR_KEY_ID / DATA_MIRROR_SECRET")
    register_secret(secret)
    client = S3Client(endpoint, key_id, secret, cfg.storage.region, budget=PAGE_BUDGET)
    return [DataSource(client, bucket, f"mirror {endpoint}")]
