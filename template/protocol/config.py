"""Configuration as data: the run's hyperparameters (shared by every node) and the neuron CLI.

`HParams` holds every value that all nodes of a run must agree on (window length, codec,
scoring). The subnet owner publishes it as JSON next to the dataset; nodes load it with
`load_hparams` and may override leaf fields from the command line (useful for local tuning;
a node that disagrees with the network on a protocol field simply falls out of sync).

`NeuronConfig` is the per-process CLI in Bittensor's dotted style (`--wallet.name`, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from template.protocol.endpoints import PRODUCTION_ENDPOINTS, check_pattern

PROTOCOL_VERSION = 1  # bump on any change to artifact formats, keys or scoring semantics

# Per-preset protocol defaults: a field a run's hparams leave out takes its model preset's value from here,
# else the field's own default. The field defaults are the production codec (64 of 4096 per chunk); the tiny
# CPU demo sends denser updates, chosen from the loss-vs-bytes frontier of scripts/bench_convergence.py
# (docs/benchmarks.md, "Convergence"; docs/subnet-owner.md, "Per-preset codec defaults").
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"topk": 256, "outer_lr": 1.25, "ef_beta": 0.9},
}


class HParams(BaseModel):
    """Run hyperparameters. Every node of a run uses the same values (see `fingerprint`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- model and data
    model_preset: str = Field("tiny", description="model size preset in template.protocol.model.PRESETS")
    vocab_size: int = Field(8192, gt=0, le=1 << 20, description="tokenizer vocabulary size")
    seq_len: int = Field(128, gt=0, le=1 << 16, description="tokens per training sample")
    model_seed: int = Field(1234, description="seed of the deterministic initial weights")
    data_seed: int = Field(7, description="seed of the (uid, window) -> sample ids assignment")
    heldout_fraction: float = Field(
        0.05, gt=0, lt=0.5,
        description="share of samples the dataset's preparation keeps out of training (the public held-out tail: "
                    "the loss curve); nodes read the split from the dataset manifest")

    # -- inner optimisation (miner)
    inner_steps: int = Field(8, gt=0, le=10_000, description="H: AdamW steps per window")
    batch_size: int = Field(4, gt=0, le=4096, description="samples per inner step")
    inner_lr: float = Field(1e-3, gt=0, le=1.0, description="AdamW learning rate of the inner steps")
    inner_weight_decay: float = Field(0.0, ge=0, le=1.0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global grad norm per inner step")

    # -- time (blocks come from the chain)
    start_block: int = Field(0, ge=0, description="block at which window 0 starts")
    blocks_per_window: int = Field(10, gt=0, le=100_000, description="window length in blocks")
    upload_grace_s: float = Field(
        2.0, ge=0, le=3600, description="seconds after the window's last block during which uploads still count"
    )

    # -- codec (SparseLoCo)
    chunk_size: int = Field(64, gt=0, le=1024, description="chunk side: 2-D weights use chunk x chunk blocks")
    topk: int = Field(
        64, gt=0, description="values kept per chunk (64 of 4096 by default; the tiny preset's default is 256)"
    )
    quant_bits: Literal[2] = Field(2, description="bits per kept value (4-entry value table)")
    ef_beta: float = Field(0.95, ge=0, le=1, description="error-feedback decay beta")
    outer_lr: float = Field(1.0, gt=0, le=100, description="alpha_outer of the outer SGD step")
    clip_norm_growth: float = Field(
        2.0, ge=1, le=100,
        description="factor by which a tensor's clip limit may move from one outer step to the next (norm history)",
    )
    max_loss_rise: float = Field(
        0.01, gt=0, le=1,
        description="relative held-out loss rise above which an outer step is refused (the record says so)",
    )
    max_upload_bytes: int = Field(64 << 20, gt=0, description="size cap of one gradient artifact")

    # -- gather and scoring (validator)
    num_peers: int = Field(8, gt=0, le=256, description="peers whose updates form the gather set")
    num_eval_samples: int = Field(
        16, gt=0, le=4096, description="samples per eval batch (assigned and random), chosen from score spread"
    )
    eval_sample_size: int = Field(
        0, ge=0, le=4096,
        description="admitted miners each validator loss-evaluates per window, a private rotating sample "
                    "(gauntlet/sampling.py); 0 = every admitted miner",
    )
    min_improvement: float = Field(
        1e-4, ge=0, lt=1, description="relative loss drop an update must beat to count as a success (noise floor)"
    )
    min_improvement_ratio: float = Field(
        0.05, ge=0, le=1, description="share of the window's best improvement an update must reach to count"
    )
    compliance_alpha: float = Field(
        0.3, gt=0, le=1, description="EMA step of the data-compliance average (assigned beats random)"
    )
    compliance_threshold: float = Field(0.5, ge=0, le=1, description="compliance EMA below which score is 0")
    compliance_margin: float = Field(
        0.02, ge=0, le=10,
        description="a window is compliant when improvement_assigned > improvement_random x (1 + this)",
    )
    copy_overlap_threshold: float = Field(
        0.9, gt=0, le=1, description="index overlap above which a later upload counts as a copy"
    )
    near_copy_threshold: float = Field(
        0.2, gt=0, le=1,
        description="share of an update's energy that earlier windows' updates explain at which it is a near-copy "
                    "(1 disables; honest updates measured <= 0.09)",
    )
    near_copy_windows: int = Field(
        4, ge=0, le=64, description="earlier windows whose revealed updates the near-copy check compares with (0: off)"
    )

    min_validator_stake: float = Field(
        1000.0, ge=0, description="alpha a permit holder needs to count as a validator (miners earn permits too)"
    )

    # -- incentives
    burn_rate: float = Field(0.1, ge=0, le=1, description="share of miner weight sent to the subnet owner's uid")
    top_n_miners: int = Field(8, gt=0, le=4096, description="miners that receive weight, along weight_curve")
    pay_score: Literal["contribution", "rating"] = Field(
        "contribution",
        description="what weights follow (gauntlet/pay.py): contribution = the compliance-gated gain on the private "
                    "random batch averaged over pay_horizon windows; rating = the OpenSkill ordinal (before issue 31)",
    )
    pay_horizon: int = Field(
        8, ge=1, le=10_000,
        description="windows the contribution average spans (EMA step 2 / (horizon + 1)); pay_score=contribution only",
    )
    weight_curve: Literal["linear", "proportional", "softmax", "winner_take_all"] = Field(
        "proportional", description="how the top miners share weight: rank ramp, score ratio, softmax, best only"
    )
    weight_temperature: float = Field(
        1.0, gt=0, le=1e6,
        description="softmax temperature in pay-score units (relative loss drop for contribution, rating units "
                    "for rating); small -> winner-take-all",
    )
    weights_interval: int = Field(2, gt=0, le=10_000, description="windows between weight settings")
    checkpoint_interval: int = Field(4, gt=0, le=10_000, description="windows between signed checkpoints")

    # -- storage (docs/protocol.md, "Storage endpoints and fetch budgets", "Retention")
    approved_storage_endpoints: tuple[str, ...] = Field(
        PRODUCTION_ENDPOINTS, max_length=64,
        description="endpoint patterns (scheme://host[:port], '*' = one DNS label) whose Last-Modified is trusted; "
                    "a commitment naming another endpoint counts as no bucket",
    )
    fetch_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="seconds one read of a peer's object may take at most (all retries)"
    )
    fetch_min_bytes_per_s: int = Field(
        256 << 10, gt=0, description="a peer's object slower than this (after a few seconds' start) is dropped"
    )
    checkpoint_fetch_timeout_s: float = Field(
        600.0, gt=0, le=86_400, description="seconds one checkpoint read may take at most"
    )
    retention_windows: int = Field(
        256, ge=0, le=10_000_000,
        description="windows each node keeps its own objects; 0 keeps all, else >= 2 x checkpoint_interval + 2",
    )
    sealed_uploads: bool = Field(
        True, description="honest miners seal their updates (AES-256-GCM, key revealed after the deadline); "
        "readers then wait for the reveal grace. Sealed uploads are opened whatever this says",
    )
    reveal_grace_s: float = Field(
        6.0, ge=0, le=3600,
        description="seconds after the upload deadline by which a sealed upload's key must be in the miner's "
        "bucket (storage LastModified); a later key: late_key",
    )

    @field_validator("approved_storage_endpoints")
    @classmethod
    def _check_endpoints(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_pattern(p) for p in patterns)

    @model_validator(mode="after")
    def _check_retention(self) -> HParams:
        if self.retention_windows and self.retention_windows < 2 * self.checkpoint_interval + 2:
            raise ValueError(f"retention_windows must be 0 or >= 2 x checkpoint_interval + 2 "
                             f"({2 * self.checkpoint_interval + 2}), got {self.retention_windows}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        """Fill the fields the input leaves out from PRESET_DEFAULTS of its model preset (explicit values win)."""
        if isinstance(data, dict):
            preset = data.get("model_preset", cls.model_fields["model_preset"].default)
            defaults = PRESET_DEFAULTS.get(preset, {}) if isinstance(preset, str) else {}
            if defaults:
                return {**defaults, **data}
        return data

    @model_validator(mode="after")
    def _check_codec(self) -> HParams:
        if self.topk > self.chunk_size * self.chunk_size:
            raise ValueError(f"topk must be <= chunk_size**2 ({self.chunk_size**2}), got {self.topk}")
        return self

    @property
    def samples_per_window(self) -> int:
        return self.inner_steps * self.batch_size

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: nodes compare it to know they run the same protocol."""
        blob = json.dumps({"protocol": PROTOCOL_VERSION, **self.model_dump()}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def format_validation_error(err: ValidationError, what: str) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or what
        value = e.get("input")
        parts.append(f"{field}: {e['msg']} (got {value!r})")
    return f"invalid {what}: " + "; ".join(parts)


def load_hparams(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> HParams:
    """Load hparams from a JSON file (or defaults) and apply overrides; raise ValueError naming the field."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read hparams file {path}: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"hparams file {path} must hold a JSON object")
    data.update(overrides or {})
    try:
        return HParams(**data)
    except ValidationError as e:
        raise ValueError(format_validation_error(e, "hparams")) from e


def parse_hparam_overrides(items: list[str]) -> dict[str, Any]:
    """`["topk=32", "outer_lr=0.5"]` -> dict, values parsed as JSON when they parse, else strings."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--hparam expects name=value, got {item!r}")
        name, raw = item.split("=", 1)
        if name not in HParams.model_fields:
            raise ValueError(f"--hparam: unknown field {name!r}; known: {', '.join(HParams.model_fields)}")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


# ---------------------------------------------------------------------------------------------
# Neuron CLI


class WalletConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("default", min_length=1, description="coldkey wallet name under wallet.path")
    hotkey: str = Field("default", min_length=1, description="hotkey name inside the wallet")
    path: str = Field("~/.bittensor/wallets", description="folder holding wallets (btcli layout)")


class SubtensorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    network: str = Field(
        "local", description="finney | test | local (this project's localnet) | ws:// or http:// endpoint"
    )
    chain_endpoint: str | None = Field(None, description="explicit endpoint; overrides the network's default")


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = Field(None, description="S3 endpoint URL of this neuron's bucket")
    bucket: str | None = Field(None, description="this neuron's bucket")
    region: str = Field("us-east-1", description="S3 region (auto for R2)")
    credentials_file: str | None = Field(
        None, description="JSON file with write and read keys; else env S3_WRITE_KEY_ID etc."
    )


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    debug: bool = Field(False, description="log per-peer detail")
    trace: bool = Field(False, description="log everything")
    logging_dir: str | None = Field(None, description="also write logs to this folder (file: miner-WALLET-HOTKEY.log)")
    rotation: str = Field("100 MB", pattern=r"^\d+(\.\d+)? ?(KB|MB|GB|B|days?|hours?|weeks?)$",
                          description="start a new log file at this size or age (e.g. 100 MB, 1 day)")
    retention: str = Field("14 days", pattern=r"^\d+ ?(days?|hours?|weeks?|months?)$",
                           description="delete rotated log files older than this (e.g. 14 days)")


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = Field(0, ge=0, le=65535, description="serve Prometheus metrics on this TCP port (0: off)")
    host: str = Field("127.0.0.1", min_length=1, description="address the metrics port binds (0.0.0.0: all)")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cache_gb: float = Field(10.0, gt=0, le=1 << 20, description="disk for cached corpus pages (GiB), LRU out")
    mirror_endpoint: str | None = Field(
        None, description="a second dataset endpoint (a verified mirror) read when the owner's fails; keys from "
                          "env DATA_MIRROR_KEY_ID / DATA_MIRROR_SECRET")
    mirror_bucket: str | None = Field(None, description="the mirror's bucket")


class NeuronConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["miner", "validator"]
    netuid: int = Field(1, ge=0, le=65535, description="subnet id")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto | cpu | cuda[:N]")
    num_threads: int = Field(0, ge=0, le=1024, description="torch CPU threads (0: torch's default)")
    state_dir: str = Field("~/.sparseloco", description="where local state (EF buffers, ratings) is kept")
    hparams_file: str | None = Field(None, description="hparams JSON; default: the dataset bucket's hparams.json")
    hparam_overrides: dict[str, Any] = Field(default_factory=dict)
    max_windows: int | None = Field(None, ge=1, description="stop after this many windows (testing)")
    preflight: bool = Field(False, description="run the start-up checks, print one line each and exit "
                                                "(0: all passed, 2: one failed); nothing is published")
    metrics_file: str | None = Field(None, description="append per-window metrics as JSON lines here")
    wallet: WalletConfig = Field(default_factory=WalletConfig)
    subtensor: SubtensorConfig = Field(default_factory=SubtensorConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    data: DataConfig = Field(default_factory=DataConfig)


_DOTTED: dict[str, tuple[str, type, str]] = {}


def _add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str) -> None:
    for name, field in model.model_fields.items():
        if name in ("role", "hparam_overrides"):
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _add_model_flags(parser, ann, f"{prefix}{name}.")
            continue
        flag = f"--{prefix}{name}"
        dest = f"{prefix}{name}".replace(".", "__")
        if ann is bool:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=field.description)
        else:
            parser.add_argument(flag, dest=dest, default=None, help=field.description)


def build_parser(role: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"neurons/{role}.py", description=f"sparseloco subnet {role}")
    _add_model_flags(parser, NeuronConfig, "")
    parser.add_argument(
        "--hparam", action="append", default=[], metavar="NAME=VALUE", help="override one hparam (repeatable)"
    )
    return parser


def parse_neuron_args(role: Literal["miner", "validator"], argv: list[str] | None = None) -> NeuronConfig:
    """Parse dotted flags into a validated NeuronConfig; exit with a message naming the bad field."""
    parser = build_parser(role)
    ns = parser.parse_args(argv)
    tree: dict[str, Any] = {"role": role}
    for dest, value in vars(ns).items():
        if value is None or dest == "hparam":
            continue
        node = tree
        *parents, leaf = dest.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        tree["hparam_overrides"] = parse_hparam_overrides(ns.hparam)
        return NeuronConfig(**tree)
    except ValidationError as e:
        parser.error(format_validation_error(e, f"{role} flags"))
    except ValueError as e:
        parser.error(str(e))
    raise AssertionError("unreachable")
