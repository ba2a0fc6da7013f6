"""Preflight: everything a neuron needs, checked before it publishes or registers anything.

`run_preflight(cfg)` gathers facts (wallet, chain, own bucket, the run's hparams and dataset, this
host) and turns each into one `Check` line; the judgements are pure functions (`check_*`) so they
are unit-tested without a chain. Both neurons run it at start-up (`require_preflight`, before the
bucket commitment is published) and alone with `--preflight` (`preflight_main`: exit 0 only when
all pass, else 2). A check that cannot run because an earlier one failed is reported as `skip`
and counts as not passed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from template.protocol.endpoints import endpoint_approved
from template.protocol.version import CODE_VERSION, VERSION_KEY, upgrade_required

MIN_COMPUTE_FILE = Path(__file__).resolve().parents[2] / "min_compute.yml"
MAX_CLOCK_SKEW_S = 3.0  # upload deadlines compare local time with chain timestamps (protocol.md, "Windows")
GIB = 1 << 30


@dataclass(frozen=True)
class Check:
    """One preflight line: `status` is ok, FAIL or skip; `detail` says what was found or what to do."""

    name: str
    status: str
    detail: str
    unreachable: bool = False  # failed because the chain or the storage did not answer (may pass later)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def line(self) -> str:
        return f"preflight {self.status:<4} {self.name:<12} {self.detail}"


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str) -> Check:
    return Check(name, "FAIL", detail)


def skip(name: str, why: str) -> Check:
    return Check(name, "skip", f"not checked: {why}")


# -- pure judgements ------------------------------------------------------------------------------


def check_clock(local_now: float, head_timestamp: float, block_time_s: float,
                max_skew_s: float = MAX_CLOCK_SKEW_S) -> Check:
    """The chain head was produced at most about one block ago: local time may run ahead of its
    timestamp by up to two blocks plus `max_skew_s`, and behind it by `max_skew_s`."""
    lag = local_now - head_timestamp
    if lag < -max_skew_s:
        return fail("clock", f"local clock is {-lag:.1f} s behind the chain head's timestamp (max {max_skew_s:g} s); "
                             "enable NTP (timedatectl set-ntp true)")
    if lag > 2 * block_time_s + max_skew_s:
        return fail("clock", f"local clock is {lag:.1f} s ahead of the chain head's timestamp (blocks every "
                             f"{block_time_s:.1f} s, max {2 * block_time_s + max_skew_s:.1f} s); enable NTP or check "
                             "that the chain endpoint is in sync")
    return ok("clock", f"head {lag:+.1f} s old by the local clock (blocks every {block_time_s:.1f} s)")


def check_registration(role: str, uid: int | None, stake: float, min_stake: float | None, hotkey: str,
                       netuid: int) -> list[Check]:
    """Registered on `netuid`; a validator also holds `min_stake` alpha (None: hparams not read yet)."""
    if uid is None:
        hint = "register and stake" if role == "validator" else "register"
        return [fail("registered", f"hotkey {hotkey} is not registered on netuid {netuid}; {hint} with "
                                   f"`btcli subnet register --netuid {netuid}`"),
                skip("stake", "not registered")]
    out = [ok("registered", f"uid {uid} on netuid {netuid}")]
    if role != "validator":
        out.append(ok("stake", f"{stake:.2f} alpha (a miner needs none)"))
    elif min_stake is None:
        out.append(skip("stake", "the run's hparams were not read"))
    elif stake < min_stake:
        out.append(fail("stake", f"{stake:.2f} alpha staked, the run's validators need {min_stake:g} "
                                 "(min_validator_stake); add stake with `btcli stake add`"))
    else:
        out.append(ok("stake", f"{stake:.2f} alpha >= min_validator_stake {min_stake:g}"))
    return out


def check_version_key(weights_version: int, own_key: int = VERSION_KEY) -> Check:
    """This code's version_key is at least the chain's weights_version (the owner's upgrade lever)."""
    why = upgrade_required(weights_version, own_key)
    if why:
        return fail("version", why)
    return ok("version", f"code {CODE_VERSION} (version_key {own_key}) >= the chain's weights_version {weights_version}")


def check_state_dir(state_dir: Path) -> Check:
    """The local state folder is of a format this code reads (or migrates); read-only, nothing is migrated here."""
    from template.node.state import STATE_VERSION, STATE_VERSION_FILE, plan_state_upgrade, read_json

    try:
        stamp = read_json(state_dir / STATE_VERSION_FILE, default=None)
        found = None if stamp is None else int(stamp["state_version"])
    except (ValueError, KeyError, TypeError) as e:
        return fail("state", f"{state_dir}/{STATE_VERSION_FILE} is unreadable ({e}); move the folder away")
    has_files = state_dir.is_dir() and any(state_dir.iterdir())
    plan = plan_state_upgrade(found, has_files)
    if isinstance(plan, str):
        return fail("state", f"{state_dir}: {plan}")
    what = f"migrates from format {plan[0]} at start" if plan else ("new" if not has_files else "current")
    return ok("state", f"{state_dir} (format {STATE_VERSION}, {what})")


def check_endpoint(endpoint: str, approved: tuple[str, ...]) -> Check:
    if endpoint_approved(endpoint, approved):
        return ok("endpoint", f"{endpoint} is an approved storage provider")
    return fail("endpoint", f"{endpoint} is not in the run's approved_storage_endpoints "
                            f"({', '.join(approved) or 'none'}): peers would ignore this bucket")


def compute_spec(spec: dict[str, Any], role: str, preset: str) -> dict[str, Any] | None:
    """The min_compute.yml entry of `role` and `preset`, or None when the file names none."""
    entry = spec.get("compute_spec", {}).get(role, {}).get(preset)
    return entry if isinstance(entry, dict) else None


@dataclass(frozen=True)
class HostFacts:
    """What this machine has: CPU cores, total RAM and free disk at the state dir (GiB), and GPUs."""

    cpu_cores: int
    ram_gib: float
    disk_free_gib: float
    cuda_devices: int
    vram_gib: float  # of the smallest visible CUDA device; 0 without one
    mps: bool = False


def check_device(requested: str, host: HostFacts, gpu_required: bool) -> Check:
    """The --device exists on this host, and a preset that needs a GPU gets one."""
    if requested.startswith("cuda"):
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if host.cuda_devices == 0:
            return fail("device", f"--device {requested} but no CUDA device is visible (torch.cuda.is_available() "
                                  "is False); use --device cpu, or fix the driver / CUDA_VISIBLE_DEVICES")
        if index >= host.cuda_devices:
            return fail("device", f"--device {requested} but only {host.cuda_devices} CUDA device(s) are visible")
        resolved = requested
    elif requested == "mps":
        if not host.mps:
            return fail("device", "--device mps but MPS is not available on this host")
        resolved = "mps"
    else:
        resolved = "cuda" if requested == "auto" and host.cuda_devices else "cpu"
    if gpu_required and not resolved.startswith("cuda"):
        return fail("device", f"this preset needs a CUDA GPU (min_compute.yml) and --device {requested} gives "
                              f"{resolved}")
    return ok("device", f"--device {requested} -> {resolved}" + (f" ({host.cuda_devices} CUDA device(s), "
                                                                   f"{host.vram_gib:.0f} GiB each)"
                                                                   if resolved.startswith("cuda") else ""))


def check_compute(entry: dict[str, Any] | None, role: str, preset: str, requested_device: str,
                  host: HostFacts) -> list[Check]:
    """Device, CPU cores and memory, and disk against the `min_compute.yml` entry of role and preset."""
    if entry is None:
        return [check_device(requested_device, host, False),
                skip("memory", f"min_compute.yml names no {role} entry for preset {preset!r}"),
                skip("disk", f"min_compute.yml names no {role} entry for preset {preset!r}")]
    gpu = entry.get("gpu") or {}
    device = check_device(requested_device, host, bool(gpu.get("required")))
    if device.ok and gpu.get("required") and host.vram_gib < float(gpu.get("min_vram", 0)):
        device = fail("device", f"{host.vram_gib:.0f} GiB of GPU memory, the {preset} {role} needs "
                                f"{gpu['min_vram']} GiB (min_compute.yml)")
    min_ram = float((entry.get("memory") or {}).get("min_ram", 0))
    min_cores = int((entry.get("cpu") or {}).get("min_cores", 0))
    problems = []
    if host.ram_gib < min_ram:
        problems.append(f"{host.ram_gib:.1f} GiB RAM, needs {min_ram:g}")
    if host.cpu_cores < min_cores:
        problems.append(f"{host.cpu_cores} CPU cores, needs {min_cores}")
    have = f"{host.ram_gib:.1f} GiB RAM, {host.cpu_cores} cores"
    memory = (fail("memory", f"{'; '.join(problems)} for the {preset} {role} (min_compute.yml)") if problems
              else ok("memory", f"{have} (the {preset} {role} needs {min_ram:g} GiB, {min_cores} cores)"))
    min_space = float((entry.get("storage") or {}).get("min_space", 0))
    disk = (fail("disk", f"{host.disk_free_gib:.1f} GiB free at the state dir, the {preset} {role} needs "
                         f"{min_space:g} GiB (min_compute.yml); free space or move --state_dir")
            if host.disk_free_gib < min_space
            else ok("disk", f"{host.disk_free_gib:.1f} GiB free at the state dir (needs {min_space:g})"))
    return [device, memory, disk]


def exit_status(checks: list[Check]) -> int:
    """0 when every check passed, else 2 (the neurons' set-up failure status)."""
    return 0 if checks and all(c.ok for c in checks) else 2


# -- facts (I/O) ----------------------------------------------------------------------------------


def host_facts(state_dir: str) -> HostFacts:
    import torch

    path = Path(state_dir).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    vram = min((torch.cuda.get_device_properties(i).total_memory / GIB for i in range(cuda)), default=0.0)
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB
    return HostFacts(cpu_cores=len(os.sched_getaffinity(0)), ram_gib=ram,
                     disk_free_gib=shutil.disk_usage(path).free / GIB, cuda_devices=cuda, vram_gib=vram,
                     mps=bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()))


def load_min_compute(path: Path = MIN_COMPUTE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _attempt(name: str, fn: Callable[[], Any]) -> tuple[Any, Check | None]:
    """Run one fact-gathering step; any error becomes one FAIL line instead of a traceback."""
    from storage.s3 import S3Error, is_transient
    from template.chain.base import ChainError
    from template.node.neuron import SetupError

    try:
        return fn(), None
    except SetupError as e:
        return None, fail(name, str(e))
    except (ChainError, S3Error) as e:
        # the service did not answer (connection, timeout, 5xx): nothing need be wrong with this node; a refusal
        # (access denied, no such bucket) is a configuration error like any other
        down = isinstance(e, ChainError) or (e.__cause__ is not None and is_transient(e.__cause__))
        return None, Check(name, "FAIL", f"{type(e).__name__}: {e}", unreachable=down)
    except Exception as e:  # a preflight reports every failure as a line; the type names what broke
        return None, fail(name, f"{type(e).__name__}: {e}")


def bucket_round_trip(bucket: Any, hotkey: str) -> str:
    """Write, read back with the READ key that peers get, and delete one small object; raise on a mismatch."""
    import copy

    from storage.s3 import S3Client, Status

    access = bucket.access
    writer = copy.copy(bucket.client)  # the write keys, without the start-up's 15 s of retries on a dead endpoint
    writer.max_attempts, writer.deadline_s = 2, 15.0
    reader = S3Client(access.endpoint, access.access_key_id, access.secret_access_key, access.region, max_attempts=2,
                      connect_timeout_s=3.0, read_timeout_s=10.0, deadline_s=15.0)
    key = f"preflight/{hotkey[:16]}-{secrets.token_hex(4)}"
    body = secrets.token_bytes(64)
    start = time.monotonic()
    writer.put(access.bucket, key, body)
    try:
        got = reader.get(access.bucket, key, max_bytes=1024)
        if got.status is not Status.OK or got.data != body:
            raise RuntimeError(f"read back with the read key gave {got.status.name} ({got.error}); peers could not "
                               "read this bucket")
    finally:
        writer.delete(access.bucket, key)
    return f"{access.bucket} at {access.endpoint}: write, read (read key), delete in {time.monotonic() - start:.2f} s"


def run_preflight(cfg: Any) -> list[Check]:
    """Every check for `cfg` (a NeuronConfig), in order; never raises, never writes to the chain."""
    from storage.dataset import MANIFEST_MAX_BYTES
    from template.chain import connect
    from template.node.neuron import fetch_run_hparams, load_own_bucket, load_wallet, peer_buckets
    from template.protocol import layout
    from template.protocol.data import load_manifest

    checks: list[Check] = []
    pair, bad = _attempt("wallet", lambda: load_wallet(cfg))
    hotkey = pair[1].ss58_address if pair else None
    checks.append(bad or ok("wallet", f"wallet {cfg.wallet.name}, hotkey {cfg.wallet.hotkey} = {hotkey}"))

    if hotkey is not None:
        checks.append(check_state_dir(Path(cfg.state_dir).expanduser() / f"{cfg.role}-{hotkey[:16]}"))
    else:
        checks.append(skip("state", "no hotkey (the folder is named by it)"))

    chain, bad = _attempt("chain", lambda: connect(cfg.subtensor.network, cfg.subtensor.chain_endpoint))
    head = None
    if chain is not None:
        head, bad = _attempt("chain", chain.block)
    checks.append(bad or ok("chain", f"{cfg.subtensor.network} reachable, head block {head}"))
    mg: Any = None
    hparams_chain: Any = None
    if head is not None:
        def clock() -> Check:
            span = min(head, 10)
            block_s = (chain.block_timestamp(head) - chain.block_timestamp(head - span)) / span if span else 12.0
            return check_clock(time.time(), chain.block_timestamp(head), max(block_s, 0.05))
        got, bad = _attempt("clock", clock)
        checks.append(bad or got)
        hparams_chain, bad = _attempt("version", lambda: chain.hyperparameters(cfg.netuid))
        checks.append(bad or check_version_key(int(hparams_chain.get("weights_version", 0))))
        mg, bad = _attempt("registered", lambda: chain.metagraph(cfg.netuid))
        if bad:
            checks.append(bad)
    else:
        checks += [skip("clock", "chain unreachable"), skip("version", "chain unreachable")]

    bucket, bad = _attempt("storage", lambda: load_own_bucket(cfg))
    if bucket is not None:
        got, bad = _attempt("storage", lambda: bucket_round_trip(bucket, hotkey or "unknown"))
    checks.append(bad or ok("storage", got))

    hp: Any = None
    peers: Any = None
    if mg is not None:
        def read_hparams() -> Any:
            peers = peer_buckets(chain, cfg.netuid)
            peers.refresh()
            return peers, fetch_run_hparams(cfg, peers, mg.owner_hotkey)
        got, bad = _attempt("hparams", read_hparams)
        if got:
            peers, hp = got
        checks.append(bad or ok("hparams", f"preset {hp.model_preset}, fingerprint {hp.fingerprint()[:12]}, "
                                          f"{hp.blocks_per_window} blocks a window"))
    else:
        checks.append(skip("hparams", "no metagraph (chain unreachable)"))

    if mg is None or hotkey is None:
        checks += [skip("registered", "chain or wallet not usable"), skip("stake", "chain or wallet not usable")]
    else:
        uid = mg.uid_of(hotkey)
        stake = mg.stake[uid] if uid is not None else 0.0
        checks += check_registration(cfg.role, uid, stake, hp.min_validator_stake if hp else None, hotkey,
                                     cfg.netuid)

    if hp is None:
        checks += [skip("endpoint", "the run's hparams were not read"),
                   skip("dataset", "the run's hparams were not read")]
    else:
        checks.append(check_endpoint(bucket.access.endpoint, hp.approved_storage_endpoints) if bucket is not None
                      else skip("endpoint", "no own bucket"))

        def read_manifest() -> str:
            peers.configure(hp)
            found = peers.reader(mg.owner_hotkey)
            if found is None:
                why = peers.refused.get(mg.owner_hotkey, "published no dataset commitment")
                raise RuntimeError(f"the subnet owner's dataset bucket is not usable ({why})")
            res = found[0].get(found[1], layout.dataset_manifest_key(), max_bytes=MANIFEST_MAX_BYTES)
            if res.data is None:
                raise RuntimeError(f"dataset manifest {found[1]}/{layout.dataset_manifest_key()}: "
                                   f"{res.status.name} ({res.error})")
            manifest = load_manifest(res.data)
            if manifest.seq_len != hp.seq_len or manifest.vocab_size > hp.vocab_size:
                raise RuntimeError(f"dataset (seq_len {manifest.seq_len}, vocab {manifest.vocab_size}) does not "
                                   f"fit the hparams (seq_len {hp.seq_len}, vocab {hp.vocab_size})")
            return (f"{found[1]}: {manifest.num_samples} samples of {manifest.seq_len} tokens in "
                    f"{len(manifest.shards)} shards")
        got, bad = _attempt("dataset", read_manifest)
        checks.append(bad or ok("dataset", got))

    got, bad = _attempt("compute", lambda: (load_min_compute(), host_facts(cfg.state_dir)))
    if bad:
        checks.append(bad)
    elif hp is None:  # the device is checked anyway (--device cuda on a CPU box); sizes need the preset
        checks += [check_device(cfg.device, got[1], gpu_required=False),
                   skip("memory", "the run's hparams (model preset) were not read"),
                   skip("disk", "the run's hparams (model preset) were not read")]
    else:
        spec, host = got
        checks += check_compute(compute_spec(spec, cfg.role, hp.model_preset), cfg.role, hp.model_preset,
                                cfg.device, host)
    return checks


def require_version(chain: Any, netuid: int) -> None:
    """Stop (SetupError, exit 2) with what to install when the owner raised weights_version above this code's
    version_key; the loops call it once a window, so a running neuron stops at the next window."""
    from template.node.neuron import SetupError

    why = upgrade_required(int(chain.hyperparameters(netuid).get("weights_version", 0)))
    if why:
        raise SetupError(why)


def report(checks: list[Check], emit: Callable[[str], None] | None = None) -> int:
    """Log one line per check (failures at error level); return the exit status."""
    for c in checks:
        (emit or (logger.info if c.ok else logger.error))(c.line())
    status = exit_status(checks)
    failed = [c.name for c in checks if not c.ok]
    summary = (f"preflight passed ({len(checks)} checks; code {CODE_VERSION}, version_key {VERSION_KEY})" if status == 0
               else f"preflight failed: {', '.join(failed)}")
    (emit or (logger.info if status == 0 else logger.error))(summary)
    return status


def preflight_main(cfg: Any) -> int:
    """`--preflight`: run every check, print one line each, exit 0 when all passed, else 2."""
    return report(run_preflight(cfg))


def only_unreachable(checks: list[Check]) -> bool:
    """True when every FAIL is a service that did not answer (skips follow from those): worth a restart."""
    failed = [c for c in checks if c.status == "FAIL"]
    return bool(failed) and all(c.unreachable for c in failed)


def require_preflight(cfg: Any) -> None:
    """Start-up: every check must pass before the neuron publishes its commitment. Raises SetupError (exit 2),
    or ServiceUnreachable (exit 3, restarted by the run files) when only the chain or storage did not answer."""
    from template.node.neuron import ServiceUnreachable, SetupError

    start = time.monotonic()
    checks = run_preflight(cfg)
    bad = [c for c in checks if not c.ok]
    if not bad:
        logger.info(f"preflight passed ({len(checks)} checks in {time.monotonic() - start:.1f} s)")
        return
    for c in bad[:-1]:
        logger.error(c.line())
    error = ServiceUnreachable if only_unreachable(checks) else SetupError
    raise error(bad[-1].line() + f" ({len(bad)} of {len(checks)} preflight checks failed; nothing was "
                                 "published; run with --preflight to see all)")
