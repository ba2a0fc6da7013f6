"""The whole network on one machine: chain, SeaweedFS, miners (honest and hostile), validators.

    python scripts/localnet.py --miners 3 --validators 1 --windows 12 \
        --adversaries idle,noise,copycat,replay,lazy,late,malformed,negator --out runs/demo

Starts a SeaweedFS S3 server and the localnet chain node, creates wallets, creates and
starts a subnet tuned for a short run, funds/registers/stakes, prepares the demo dataset,
publishes the run's hparams, launches every neuron as its own process exactly as a user
would, runs K windows (optionally with --chaos restarts), stops everything and writes a
report (report.json, tables, PNG plots) into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bittensor_wallet import Keypair, Wallet
from loguru import logger

from storage.credentials import BucketAccess
from storage.peers import OwnBucket
from storage.s3 import S3Client
from storage.seaweed import SeaweedServer, admin_identity, neuron_identities
from template.chain.localnet.client import LocalnetClient
from template.chain.localnet.process import start_localnet_process
from template.harness.dashboard import serve_dashboard
from template.harness.prepare.pipeline import prepare_dataset
from template.harness.prepare.publish import upload_dataset
from template.harness.progress import Progress, localnet_chain_info
from template.harness.report import build_report, write_report
from template.harness.slots import parse_slots, raise_on_sigterm, save_run_state, slot_names, write_slots
from template.node.logging_setup import setup_logging
from template.node.publish import hparams_bytes, publish_run
from template.protocol import layout
from template.protocol.config import HParams, parse_hparam_overrides
from template.sim.adversaries import DEFAULT_KINDS, STRATEGIES
from template.sim.protocol_attacks import ROGUE_FLAGS

ROOT = Path(__file__).resolve().parents[2]  # the repository root

# Localnet subnet settings for a short run: several epochs within a few windows. Root-only ones (tempo below
# 360, weights_rate_limit) go through the sudo key as on subtensor's localnet; the owner sets only what a
# mainnet owner may. Commit-reveal stays on (mainnet default, reveal period 1 tempo): a validator's weights
# count from the epoch after it commits them.
SUDO_HPARAMS = {"weights_rate_limit": 1}
OWNER_HPARAMS = {
    "activity_cutoff_factor": 50_000,  # 50 tempos without weights before a validator is inactive
    "immunity_period": 5000,
    "min_allowed_weights": 1,
}


# hostile kinds that train a model (CPU-heavy); the window is sized to the number of trainers
TRAINING_ADVERSARIES = {"lazy", "late", "negator", "poisoner", "scaler", "heldout", "timed", "copymix", "nearcopy",
                        "vanisher", "equivocator", "stall", "staleecho"}
ROGUE_LEAD = "roguelead"  # a hostile validator (template/sim/rogue_validator.py): `roguelead` or `roguelead:FLAG`
ROGUE_STAKE = 2500.0  # above every honest validator's (2000 - 100 i): it leads until it is passed over


def rogue_flag(kind: str) -> str | None:
    """The flag of a `roguelead[:FLAG]` kind (default `lr`), None for any other kind."""
    name, _, flag = kind.partition(":")
    return (flag or "lr") if name == ROGUE_LEAD else None


def reveal_blocks(args: argparse.Namespace) -> int:
    """Blocks a window needs on top of training when uploads are sealed: readers wait the reveal grace
    (+1 s) after the deadline before they fetch, and miners gather only then."""
    try:
        overrides = parse_hparam_overrides(args.hparam)
    except ValueError:
        return 0  # reported where the hparams are built
    fields = HParams.model_fields
    sealed = bool(overrides.get("sealed_uploads", fields["sealed_uploads"].default))
    grace = float(overrides.get("reveal_grace_s", fields["reveal_grace_s"].default))
    return math.ceil((grace + 2.0) / args.block_time) if sealed else 0


@dataclass
class Neuron:
    name: str
    role: str  # miner | validator | owner
    kind: str  # honest | idle | ... | validator | owner
    wallet: Wallet
    bucket: str
    creds_file: Path | None = None
    proc: subprocess.Popen | None = None
    restarts: int = 0
    log: Path | None = None
    cmd: list[str] = field(default_factory=list)
    metrics_port: int = 0  # its Prometheus exporter on 127.0.0.1 (0: none)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--miners", type=int, default=3, help="honest miners")
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--windows", type=int, default=None,
                   help="windows to run (default 12; 0: run until Ctrl-C or SIGTERM, then stop and report)")
    p.add_argument("--slots", default="", metavar="miner:N,validator:M",
                   help="neurons you start yourself: wallets, buckets, keys, registration (and stake) are "
                        "prepared and the commands to run written to RUN_DIR/slots.md")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="restart a stopped run's chain, storage and neurons from RUN_DIR and go on "
                        "(--windows: total windows, default 0 = until Ctrl-C)")
    p.add_argument("--adversaries", default=",".join(DEFAULT_KINDS),
                   help=f"comma list of hostile miners, one process each; a kind named twice launches two "
                        f"(default: {','.join(DEFAULT_KINDS)}; \"all\" for one of every kind: "
                        f"{','.join(STRATEGIES)}; \"\" for none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--run-dir", default=None, help="working folder (default: runs/<time>)")
    p.add_argument("--block-time", type=float, default=1.0, help="seconds per localnet block")
    p.add_argument("--blocks-per-window", type=int, default=None,
                   help="window length in blocks (default: 20, or 5 per training process when that is more, "
                        "so that every trainer fits into a window on a 2-core machine)")
    p.add_argument("--tempo", type=int, default=None, help="blocks per epoch (default: 2 windows)")
    p.add_argument("--chaos", action="store_true", help="kill -9 and restart a validator, a miner and SeaweedFS")
    p.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE", help="override a run hparam")
    p.add_argument("--threads", type=int, default=1, help="torch threads per neuron")
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the live dashboard page")
    p.add_argument("--dashboard-port", type=int, default=0, help="dashboard port on 127.0.0.1 (0: a free one)")
    p.add_argument("--metrics-port-base", type=int, default=0,
                   help="serve each neuron's Prometheus metrics on 127.0.0.1 from this port up, and write "
                        "RUN_DIR/prometheus.yml scraping them (0: off)")
    args = p.parse_args(argv)
    kinds = list(STRATEGIES) if args.adversaries == "all" else [k for k in args.adversaries.split(",") if k]
    unknown = [k for k in kinds if k not in STRATEGIES and rogue_flag(k) not in ROGUE_FLAGS]
    if unknown:
        p.error(f"unknown adversaries {unknown}; choose from {sorted(STRATEGIES)} or "
                f"{ROGUE_LEAD}[:{'|'.join(ROGUE_FLAGS)}]")
    args.adversary_kinds = kinds
    try:
        args.slot_counts = parse_slots(args.slots)
    except ValueError as e:
        p.error(str(e))
    if args.windows is None:
        args.windows = 0 if args.resume else 12
    if args.windows < 0:
        p.error(f"--windows must be >= 0, got {args.windows}")
    if args.blocks_per_window is None:
        trainers = args.miners + sum(k in TRAINING_ADVERSARIES for k in kinds) + args.slot_counts["miner"]
        args.blocks_per_window = max(20, 5 * trainers) + reveal_blocks(args)
    if args.miners + len(kinds) + args.slot_counts["miner"] < 1 or args.validators < 1:
        p.error("need at least one miner and one validator")
    return args


def make_wallet(path: Path, name: str) -> Wallet:
    w = Wallet(name=name, hotkey="default", path=str(path))
    if not (w.coldkey_file.exists_on_device() and w.hotkey_file.exists_on_device()):  # --resume: already there
        w.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
    return w


def plan_neurons(args, wallets_dir: Path) -> list[Neuron]:
    neurons = [Neuron("owner", "owner", "owner", make_wallet(wallets_dir, "owner"), "dataset")]
    for i in range(args.validators):
        neurons.append(Neuron(f"validator{i}", "validator", "validator", make_wallet(wallets_dir, f"validator{i}"),
                              f"validator{i}"))
    for i in range(args.miners):
        neurons.append(Neuron(f"miner{i}", "miner", "honest", make_wallet(wallets_dir, f"miner{i}"), f"miner{i}"))
    for i, kind in enumerate(args.adversary_kinds):
        name = f"{kind.replace(':', '-')}{i}"
        role = "validator" if rogue_flag(kind) else "miner"
        neurons.append(Neuron(name, role, kind, make_wallet(wallets_dir, name), name))
    for name, role in slot_names(args.slot_counts):  # started by the user (--slots), never by this script
        neurons.append(Neuron(name, role, "external", make_wallet(wallets_dir, name), name))
    return neurons


def write_credentials(run_dir: Path, neurons: list[Neuron], endpoint: str, idents: dict) -> None:
    for n in neurons:
        write, read = idents[n.bucket]
        n.creds_file = run_dir / "credentials" / f"{n.name}.json"
        n.creds_file.parent.mkdir(parents=True, exist_ok=True)
        n.creds_file.write_text(json.dumps({
            "endpoint": endpoint, "bucket": n.bucket, "write_key_id": write.access_key,
            "write_secret": write.secret_key, "read_key_id": read.access_key, "read_secret": read.secret_key}))
        os.chmod(n.creds_file, 0o600)


def setup_chain(chain: LocalnetClient, neurons: list[Neuron], args) -> int:
    """Fund, create and start the subnet, register everyone, stake validators."""
    alice = Keypair.create_from_uri("//Alice")
    for n in neurons:
        chain.transfer(alice, n.wallet.coldkeypub.ss58_address, 10_000.0).raise_for_error()
    owner = neurons[0]
    netuid = chain.register_network(owner.wallet.coldkey, owner.wallet.hotkey.ss58_address)
    tempo = args.tempo or 2 * args.blocks_per_window
    for name, value in {**SUDO_HPARAMS, "tempo": tempo}.items():
        chain.set_hyperparameter(alice, netuid, name, value).raise_for_error()  # //Alice is the sudo key
    for name, value in OWNER_HPARAMS.items():
        chain.set_hyperparameter(owner.wallet.coldkey, netuid, name, value).raise_for_error()
    chain.start_call(owner.wallet.coldkey, netuid).raise_for_error()
    for n in neurons[1:]:
        chain.burned_register(n.wallet.coldkey, n.wallet.hotkey.ss58_address, netuid).raise_for_error()
    for n in neurons:  # first: stake buys alpha through the pool, whose price rises with each purchase
        if rogue_flag(n.kind):
            chain.add_stake(n.wallet.coldkey, n.wallet.hotkey.ss58_address, netuid, ROGUE_STAKE).raise_for_error()
    for i, n in enumerate(n for n in neurons if n.role == "validator" and not rogue_flag(n.kind)):
        chain.add_stake(n.wallet.coldkey, n.wallet.hotkey.ss58_address, netuid, 2000.0 - 100.0 * i).raise_for_error()
    return netuid


def publish_dataset(chain, seaweed_endpoint, idents, owner: Neuron, netuid, hp: HParams, data_dir, cache_dir):
    write, read = idents["dataset"]
    client = S3Client(seaweed_endpoint, write.access_key, write.secret_key)
    client.ensure_bucket("dataset")
    manifest = prepare_dataset(data_dir, seq_len=hp.seq_len, vocab_size=hp.vocab_size, cache_dir=cache_dir,
                               heldout_fraction=hp.heldout_fraction, samples_per_window=hp.samples_per_window)
    upload_dataset(client, "dataset", data_dir, manifest)
    return manifest


def publish_hparams(chain, seaweed_endpoint, idents, owner: Neuron, netuid, hp: HParams) -> None:
    """hparams.json and the owner commitment, through the same checks and writes an owner runs on a real network
    (`template.node.publish.publish_run`, scripts/publish_run.py)."""
    write, read = idents["dataset"]
    access = BucketAccess(endpoint=seaweed_endpoint, bucket="dataset", access_key_id=read.access_key,
                          secret_access_key=read.secret_key)
    own = OwnBucket(access=access, client=S3Client(seaweed_endpoint, write.access_key, write.secret_key))
    publish_run(chain, owner.wallet.hotkey, netuid, own, hp)


def launch(n: Neuron, args, run_dir: Path, endpoint: str, netuid: int) -> None:
    script = "validator.py" if n.role == "validator" else "miner.py"
    if n.role == "miner" and n.kind != "honest":  # hostile kinds run from the simulation package
        entry = ["-m", "template.sim.hostile_miner", "--mode", n.kind]
    elif (flag := rogue_flag(n.kind)) is not None:
        entry = ["-m", "template.sim.rogue_validator", "--flag", flag]
    else:
        entry = [str(ROOT / "neurons" / script)]
    n.cmd = [sys.executable, *entry, "--wallet.name", n.wallet.name, "--wallet.hotkey",
             "default", "--wallet.path", str(run_dir / "wallets"), "--netuid", str(netuid),
             "--subtensor.network", "local", "--subtensor.chain_endpoint", endpoint,
             "--storage.credentials_file", str(n.creds_file), "--state_dir", str(run_dir / "state"),
             "--metrics_file", str(run_dir / "metrics" / f"{n.name}.jsonl"), "--device", "cpu",
             "--num_threads", str(args.threads)]
    if n.metrics_port:
        n.cmd += ["--metrics.port", str(n.metrics_port)]
    start_process(n, run_dir)


def write_prometheus_config(run_dir: Path, neurons: list[Neuron], base_port: int) -> Path:
    """Give each neuron a metrics port from `base_port` up and write RUN_DIR/prometheus.yml: one job per
    role, a target per neuron labelled with its name, and deploy/prometheus/alerts.yml as the rules."""
    jobs: dict[str, list[dict]] = {}
    for i, n in enumerate(neurons):
        n.metrics_port = base_port + i
        role = "validator" if n.role == "validator" else "miner"
        jobs.setdefault(role, []).append({"targets": [f"127.0.0.1:{n.metrics_port}"], "labels": {"name": n.name}})
    config = {"global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
              "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
              "scrape_configs": [{"job_name": f"sparseloco-{role}", "static_configs": targets}
                                 for role, targets in sorted(jobs.items())]}
    path = run_dir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=1) + "\n")  # JSON is YAML
    logger.info(f"metrics on 127.0.0.1:{base_port}-{base_port + len(neurons) - 1}; scrape config {path}")
    return path


def start_process(n: Neuron, run_dir: Path) -> None:
    n.log = run_dir / "logs" / f"{n.name}.log"
    n.log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    with n.log.open("a") as f:
        n.proc = subprocess.Popen(n.cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stop_all(neurons: list[Neuron], wait_s: float = 20.0) -> None:
    """SIGTERM every neuron at once (each finishes or abandons its window), SIGKILL what is left."""
    live = [(n, n.proc) for n in neurons if n.proc is not None and n.proc.poll() is None]
    for _, proc in live:
        proc.send_signal(signal.SIGTERM)
    deadline = time.time() + wait_s
    for n, proc in live:
        try:
            proc.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            logger.warning(f"{n.name} did not stop within {wait_s:.0f} s; killing it")
            proc.kill()
            proc.wait()


def chaos_events(args, hp: HParams) -> dict[int, str]:
    """window -> what to break in its middle (each thing once, spread over the run)."""
    if not args.chaos or args.windows < 4:
        return {}
    k = args.windows
    return {max(1, k // 4): "kill_miner", max(2, k // 2): "restart_seaweed", max(3, (3 * k) // 4): "kill_validator"}


def run_chaos(event: str, window: int, neurons: list[Neuron], seaweed: SeaweedServer, run_dir: Path,
              log: list[dict]) -> None:
    if event == "restart_seaweed":
        seaweed.restart()
        log.append({"window": window, "event": event, "what": "restarted the SeaweedFS server"})
        return
    role = "miner" if event == "kill_miner" else "validator"
    victim = next(n for n in neurons if n.role == role and n.kind in ("honest", "validator"))
    assert victim.proc is not None  # chaos runs only on started neurons
    victim.proc.kill()  # kill -9: no chance to clean up
    victim.proc.wait()
    time.sleep(2.0)
    start_process(victim, run_dir)
    victim.restarts += 1
    log.append({"window": window, "event": event, "name": victim.name,
                "what": f"kill -9 of {victim.name} mid-window {window}, restarted 2 s later"})


def wait_for_windows(chain, hp: HParams, args, neurons, seaweed, run_dir, events_log) -> None:
    """Run until the validators finished window K-1 (or a generous time limit)."""
    chaos = chaos_events(args, hp)
    window_s = args.block_time * hp.blocks_per_window
    limit = time.time() + (args.windows + 6) * window_s * 3 + 120 if args.windows else float("inf")
    lead_metrics = run_dir / "metrics" / "validator0.jsonl"
    progress = Progress(lead_metrics, args.windows, {n.wallet.hotkey.ss58_address: n.name for n in neurons},
                        window_s=window_s, started=time.time(), status_path=run_dir / "status.json",
                        procs=neurons, chain_info=localnet_chain_info(chain))
    while time.time() < limit:
        progress.poll()
        block = chain.block()
        # mid-window: a neuron killed now loses work in progress, the hard case for a restart
        middle = (block - hp.start_block - hp.blocks_per_window // 2) // hp.blocks_per_window
        for w in [w for w in chaos if w <= middle]:
            run_chaos(chaos.pop(w), w, neurons, seaweed, run_dir, events_log)
        if args.windows and validator_windows_done(lead_metrics) >= args.windows:
            progress.poll()
            return
        dead = [n.name for n in neurons if n.proc is not None and n.proc.poll() not in (None, 0)]
        if dead:
            raise RuntimeError(f"neurons exited with an error: {dead}; see {run_dir / 'logs'}")
        time.sleep(1.0)
    raise TimeoutError(f"the validators did not finish {args.windows} windows in time; see {run_dir / 'logs'}")


def validator_windows_done(path: Path) -> int:
    if not path.exists():
        return 0
    return len({json.loads(line)["window"] for line in path.read_text().splitlines() if line.strip()})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(name="localnet")
    if args.resume:
        from template.harness.slots import resume

        return resume(args)
    raise_on_sigterm()
    run_dir = Path(args.run_dir or ROOT / "runs" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out_dir = Path(args.out).resolve() if args.out else run_dir / "report"
    run_dir.mkdir(parents=True, exist_ok=True)
    dashboard = None if args.no_dashboard else serve_dashboard(run_dir, args.dashboard_port)
    neurons = plan_neurons(args, run_dir / "wallets")
    idents = {n.bucket: neuron_identities(n.bucket) for n in neurons}
    started = time.time()
    events_log: list[dict] = []
    interrupted = False
    with ExitStack() as stack:
        seaweed = stack.enter_context(SeaweedServer(run_dir / "seaweed", [admin_identity()] +
                                                    [i for pair in idents.values() for i in pair]))
        endpoint, _ = stack.enter_context(start_localnet_process(run_dir / "chain.sqlite", block_time=args.block_time,
                                                                  new=True))
        chain = LocalnetClient(endpoint)
        chain.connect()
        write_credentials(run_dir, neurons, seaweed.endpoint, idents)
        for n in neurons:
            w, _ = idents[n.bucket]
            S3Client(seaweed.endpoint, w.access_key, w.secret_key).ensure_bucket(n.bucket)
        netuid = setup_chain(chain, neurons, args)
        logger.info(f"subnet {netuid} created; {len(neurons) - 1} neurons registered")
        baseline = chain.metagraph(netuid)
        overrides = parse_hparam_overrides(args.hparam)
        # validators bought their alpha through the subnet's pool; a permit holder counts as a
        # validator from half the smallest validator stake on (miners hold far less in a short run)
        validator_stake = min(baseline.stake[baseline.hotkeys.index(n.wallet.hotkey.ss58_address)]
                              for n in neurons if n.role == "validator")
        overrides = {"min_validator_stake": round(validator_stake / 2, 3), **overrides}
        # the run trusts upload times from this SeaweedFS only (hostile miners' own endpoints are refused)
        overrides.setdefault("approved_storage_endpoints", [seaweed.endpoint])
        seeds = HParams.model_fields  # --seed shifts the run's own default seeds (--seed 0: the defaults)
        hp = HParams(blocks_per_window=args.blocks_per_window, data_seed=args.seed + seeds["data_seed"].default,
                     model_seed=args.seed + seeds["model_seed"].default, **overrides)
        t0 = time.time()
        manifest = publish_dataset(chain, seaweed.endpoint, idents, neurons[0], netuid, hp, run_dir / "data",
                                   ROOT / "runs" / "cache")
        logger.info(f"dataset ready: {manifest.num_samples} samples in {time.time() - t0:.1f} s")
        # window 0 starts once every process had time to import torch, load the data and build its model (at
        # 25 + 2.5 s per neuron, window 0 of an 11-neuron run was judged 2-7% over one window length late)
        margin_blocks = int((30 + 4 * len(neurons)) / args.block_time)
        hp = hp.model_copy(update={"start_block": chain.block() + margin_blocks})
        publish_hparams(chain, seaweed.endpoint, idents, neurons[0], netuid, hp)
        (run_dir / "hparams.json").write_bytes(hparams_bytes(hp))  # for scripts/whatif.py
        save_run_state(run_dir, argv=sys.argv[1:] if argv is None else argv, netuid=netuid,
                       chain_port=int(endpoint.rsplit(":", 1)[1]), seaweed_ports=seaweed.ports,
                       block_time=args.block_time, baseline=baseline)
        if args.metrics_port_base:
            write_prometheus_config(run_dir, neurons[1:], args.metrics_port_base)
        for n in neurons[1:]:
            if n.kind != "external":
                launch(n, args, run_dir, endpoint, netuid)
        if slots_text := write_slots(run_dir, neurons, endpoint, netuid, hp):
            print(slots_text, flush=True)
        logger.info(f"{sum(n.proc is not None for n in neurons)} neurons launched; window 0 starts at block "
                    f"{hp.start_block}")
        try:
            wait_for_windows(chain, hp, args, neurons, seaweed, run_dir, events_log)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: stopping every process")
        finally:
            stop_all(neurons)
        lead_write = idents["validator0"][0]
        checkpoints = [o.key for o in S3Client(seaweed.endpoint, lead_write.access_key, lead_write.secret_key)
                       .list("validator0", layout.checkpoint_prefix())]
        report = build_report(chain.metagraph(netuid), baseline, neurons, run_dir, args, events_log,
                              checkpoints=checkpoints, wall_s=time.time() - started, interrupted=interrupted)
    write_report(report, out_dir)
    logger.info(f"report written to {out_dir}")
    if dashboard is not None:
        dashboard.stop()
        logger.info(f"dashboard stopped; serve it again with: python scripts/dashboard.py --run {run_dir}")
    return 130 if interrupted and args.windows else 0  # --windows 0 ends by Ctrl-C/SIGTERM by design

