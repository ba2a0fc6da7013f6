"""The playground side of scripts/localnet.py: slots for neurons you start yourself, run state, resume.

* `--slots miner:N,validator:M` adds neurons of kind `external`: the script makes their wallets,
  buckets and keys (a credentials file each), funds and registers them (and stakes validators), but
  does not start them. `write_slots` prints the command for each and writes it to RUN_DIR/slots.md.
* `save_run_state` writes RUN_DIR/playground.json after setup: the original flags, the netuid, the
  ports of the chain node and of SeaweedFS, and the metagraph after setup (the report's baseline).
* `resume` (`--resume RUN_DIR`) starts the chain node again on RUN_DIR/chain.sqlite and SeaweedFS on
  RUN_DIR/seaweed with the same ports and keys (bucket commitments, credentials files and the
  run's hparams name the storage endpoint, so the ports must not change), relaunches the run's own
  neurons on their state and goes on until --windows or Ctrl-C/SIGTERM, then writes the report.
"""

from __future__ import annotations

import json
import shlex
import signal
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

RUN_STATE = "playground.json"
SLOT_ROLES = ("miner", "validator")


def parse_slots(text: str) -> dict[str, int]:
    """`miner:2,validator:1` -> {"miner": 2, "validator": 1}. Raises ValueError naming the bad part."""
    slots = {role: 0 for role in SLOT_ROLES}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, _, count = part.partition(":")
        if role not in SLOT_ROLES or not count.isdigit():
            raise ValueError(f"--slots part {part!r} is not ROLE:COUNT with ROLE in {list(SLOT_ROLES)}, "
                             f"e.g. miner:1,validator:1")
        slots[role] += int(count)
    return slots


def slot_names(slots: dict[str, int]) -> list[tuple[str, str]]:
    """(name, role) of each slot; the name is also its wallet and bucket name."""
    return [(f"ext-{role}{i}", role) for role in SLOT_ROLES for i in range(slots.get(role, 0))]


def slot_command(n, run_dir: Path, endpoint: str, netuid: int) -> str:
    """The command a developer runs from their checkout (another terminal) to bring slot `n` up."""
    script = "neurons/validator.py" if n.role == "validator" else "neurons/miner.py"
    args = ["python", script, "--wallet.name", n.wallet.name, "--wallet.hotkey", "default",
            "--wallet.path", str(run_dir / "wallets"), "--netuid", str(netuid), "--subtensor.network", "local",
            "--subtensor.chain_endpoint", endpoint, "--storage.credentials_file", str(n.creds_file),
            "--state_dir", str(run_dir / "state"), "--metrics_file", str(run_dir / "metrics" / f"{n.name}.jsonl")]
    return shlex.join(args)


def write_slots(run_dir: Path, neurons: list, endpoint: str, netuid: int, hp) -> str:
    """Write RUN_DIR/slots.md with one command per external neuron and return its text ("" if none)."""
    slots = [n for n in neurons if n.kind == "external"]
    if not slots:
        return ""
    lines = [f"# Slots of the localnet playground in {run_dir}", "",
             f"Chain {endpoint}, netuid {netuid}; window 0 starts at block {hp.start_block}, "
             f"{hp.blocks_per_window} blocks per window.",
             "Run each command from your checkout of the project (with your changes), in its own terminal;",
             "stop it with Ctrl-C. Its per-window metrics go to the --metrics_file named in the command.", ""]
    for n in slots:
        lines += [f"## {n.name} ({n.role})", "", "```bash", slot_command(n, run_dir, endpoint, netuid), "```", ""]
    text = "\n".join(lines)
    (run_dir / "slots.md").write_text(text)
    return text


def save_run_state(run_dir: Path, *, argv: list[str], netuid: int, chain_port: int, seaweed_ports: dict,
                   block_time: float, baseline) -> None:
    """What `resume` needs that is not already on disk (chain db, SeaweedFS data, wallets, credentials)."""
    state = {"argv": list(argv), "netuid": netuid, "chain_port": chain_port, "seaweed_ports": dict(seaweed_ports),
             "block_time": block_time,
             "baseline": {"hotkeys": list(baseline.hotkeys), "stake": [float(s) for s in baseline.stake]}}
    (run_dir / RUN_STATE).write_text(json.dumps(state, indent=1))


def load_run_state(run_dir: Path) -> dict:
    """RUN_DIR/playground.json; raises ValueError when RUN_DIR is not a run this script can resume."""
    path = run_dir / RUN_STATE
    if not path.exists():
        raise ValueError(f"--resume {run_dir}: no {RUN_STATE} there (not a run started by scripts/localnet.py, "
                         f"or one that stopped before its setup finished)")
    for needed in ("chain.sqlite", "seaweed/identities.json", "hparams.json"):
        if not (run_dir / needed).exists():
            raise ValueError(f"--resume {run_dir}: {needed} is missing")
    return json.loads(path.read_text())


def check_ports_free(ports: list[int]) -> None:
    """Raise RuntimeError naming the first port of the stopped run that something else now holds."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise RuntimeError(f"port {port} of the stopped run is in use (a playground still running, or "
                                   f"another program); stop it and resume again") from None


def raise_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C: everything is stopped and the report written."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def resume(args) -> int:
    """`scripts/localnet.py --resume RUN_DIR [--windows K]`: continue a stopped run (see the module doc)."""
    from loguru import logger

    from storage.s3 import S3Client
    from storage.seaweed import Identity, SeaweedServer
    from template.chain.localnet.client import LocalnetClient
    from template.chain.localnet.process import start_localnet_process
    from template.harness import localnet as ln
    from template.harness.report import build_report, write_report
    from template.protocol import layout
    from template.protocol.config import HParams

    run_dir = Path(args.resume).resolve()
    try:
        state = load_run_state(run_dir)
        check_ports_free([state["chain_port"], *state["seaweed_ports"].values()])
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    saved = ln.parse_args(state["argv"])
    saved.windows, saved.chaos, saved.threads = args.windows or 0, False, args.threads
    out_dir = Path(args.out).resolve() if args.out else run_dir / "report"
    neurons = ln.plan_neurons(saved, run_dir / "wallets")
    for n in neurons:
        n.creds_file = run_dir / "credentials" / f"{n.name}.json"
    idents = [Identity(i["name"], i["credentials"][0]["accessKey"], i["credentials"][0]["secretKey"],
                       tuple(i["actions"]))
              for i in json.loads((run_dir / "seaweed" / "identities.json").read_text())["identities"]]
    hp = HParams(**json.loads((run_dir / "hparams.json").read_text()))
    netuid = state["netuid"]
    baseline = SimpleNamespace(**state["baseline"])
    started, interrupted = time.time(), False
    raise_on_sigterm()
    seaweed = SeaweedServer(run_dir / "seaweed", idents)
    seaweed.ports = dict(state["seaweed_ports"])  # the endpoint named in commitments and credentials
    with seaweed, start_localnet_process(run_dir / "chain.sqlite", block_time=state["block_time"],
                                         port=state["chain_port"], new=False) as (endpoint, _):
        chain = LocalnetClient(endpoint)
        chain.connect()
        logger.info(f"resumed {run_dir}: chain at block {chain.block()} on {endpoint}, storage {seaweed.endpoint}")
        for n in neurons[1:]:
            if n.kind != "external":
                ln.launch(n, saved, run_dir, endpoint, netuid)
        text = write_slots(run_dir, neurons, endpoint, netuid, hp)
        if text:
            print(text, flush=True)
        try:
            ln.wait_for_windows(chain, hp, saved, neurons, seaweed, run_dir, [])
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: stopping every process")
        finally:
            ln.stop_all(neurons)
        lead = json.loads((run_dir / "credentials" / "validator0.json").read_text())
        checkpoints = [o.key for o in S3Client(seaweed.endpoint, lead["write_key_id"], lead["write_secret"])
                       .list("validator0", layout.checkpoint_prefix())]
        report = build_report(chain.metagraph(netuid), baseline, neurons, run_dir, saved, [],
                              checkpoints=checkpoints, wall_s=time.time() - started, interrupted=interrupted)
    write_report(report, out_dir)
    logger.info(f"report written to {out_dir}")
    return 0
