"""Replay a finished localnet run under other settings (the engine behind scripts/whatif.py).

What a run leaves behind and what the replay reads from it:
- `chain.sqlite`: every block (timestamp, state root) and every extrinsic, as the node applied them;
- `metrics/<validator>.jsonl`: each validator's per-window row with every miner's final score (the
  gated rating the validator turns into weights) and whether it set weights in that window;
- `hparams.json`: the run's HParams (burn_rate, top_n_miners, weight curve, weights_interval, windows);
- `report/report.json` (or the wallets' public keys): which hotkey is the owner, a validator, an honest
  miner or which hostile kind.

The replay re-executes the chain from genesis with the node's own code (`ChainState.begin_block` runs
the coinbase and Yuma, `calls.apply_payload` every extrinsic). Each validator's weight extrinsics are
replaced by the weights the validator would have sent under the new scoring-to-weight settings: at the
same position in the block when it set weights in that window, otherwise (another weights_interval) at
the window's last block plus the validator's usual delay. Chain settings are forced onto the subnet's
hyperparameters at every block. Emission earned = stake each hotkey gains at the epochs.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from gauntlet.pay import MinerOutcome, PaySettings, rescore
from gauntlet.weights import compute_weights, weights_due
from template.chain.base import weights_to_u16
from template.chain.localnet import calls, coinbase, hparams
from template.chain.localnet.extrinsic import InvalidTransaction, check_era, extrinsic_size
from template.chain.localnet.state import CallError, ChainState, Genesis
from template.protocol.config import HParams, load_hparams
from template.protocol.windows import window_last_block

RAO_PER_ALPHA = 10**9
WEIGHT_CALLS = ("set_weights", "commit_weights")
LATE = 1 << 30  # position of an estimated event: after every extrinsic of its block
DEFAULT_DELAY_BLOCKS = 2  # a validator's delay after a window's last block when none was observed


class RunError(ValueError):
    """The run folder lacks something the replay needs, or the recorded chain cannot be reproduced."""


@dataclass(frozen=True)
class NeuronInfo:
    name: str
    role: str  # owner | validator | miner
    kind: str  # owner | validator | honest | <hostile kind>
    hotkey: str


@dataclass(frozen=True)
class WeightEvent:
    """One validator row: the window it scored, the final scores, and where in the chain it acted."""

    window: int
    scores: dict[int, float]
    block: int
    index: int  # extrinsic index in the block (LATE when estimated)
    matched: bool  # True when the row's weights were found on chain at (block, index)
    outcomes: dict[int, MinerOutcome] = field(default_factory=dict)  # what the scores were derived from


@dataclass
class Run:
    """Everything the replay reads from a run folder."""

    path: Path
    genesis: Genesis
    blocks: list[tuple[int, float, str]]  # (number, timestamp, state_root)
    extrinsics: dict[int, list[dict[str, Any]]]  # block -> extrinsic bodies in order
    hparams: HParams
    neurons: list[NeuronInfo]
    netuid: int
    events: dict[str, list[WeightEvent]]  # validator hotkey -> its rows in order
    weight_positions: set[tuple[int, int]] = field(default_factory=set)  # validators' weight extrinsics
    end_block: int = 1 << 62  # the replay's last block (see match_events)

    @property
    def validator_hotkeys(self) -> list[str]:
        return [n.hotkey for n in self.neurons if n.role == "validator"]


# ---------------------------------------------------------------------------------------------------------
# Loading a run folder
# ---------------------------------------------------------------------------------------------------------


def load_run(run_dir: str | Path) -> Run:
    """Read a finished run folder (see the module docstring). Raises RunError naming what is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"--run {path}: no such folder")
    db_path = path / "chain.sqlite"
    if not db_path.exists():
        raise RunError(f"{db_path} is missing: --run must be a scripts/localnet.py run folder")
    genesis, blocks, extrinsics = read_chain(db_path)
    hp_path = path / "hparams.json"
    if not hp_path.exists():
        raise RunError(f"{hp_path} is missing (runs made before whatif existed do not keep it)")
    hp = read_hparams(hp_path)
    neurons = read_neurons(path)
    netuid = find_netuid(extrinsics, neurons)
    run = Run(path, genesis, blocks, extrinsics, hp, neurons, netuid, {})
    for n in neurons:
        if n.role == "validator":
            rows = read_rows(path / "metrics" / f"{n.name}.jsonl")
            run.events[n.hotkey] = match_events(run, n.hotkey, rows)
    run.blocks = [b for b in blocks if b[0] <= run.end_block]
    if not run.blocks:
        raise RunError(f"{path}: no block to replay before the validators' first unlogged weights")
    run.end_block = run.blocks[-1][0]
    return run


# Scoring-to-weight fields whose default changed (issue 31): a run recorded before a field existed used this
PRE_ISSUE31 = {"pay_score": "rating", "weight_curve": "linear"}


def read_hparams(path: Path) -> HParams:
    """The run's HParams; fields a later version dropped are ignored (they cannot change the replay), fields
    it lacks take the value the run used (PRE_ISSUE31), not today's default."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise RunError(f"{path} must hold a JSON object")
    return load_hparams(None, {**PRE_ISSUE31, **{k: v for k, v in data.items() if k in HParams.model_fields}})


def read_chain(db_path: Path) -> tuple[Genesis, list[tuple[int, float, str]], dict[int, list[dict]]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        genesis = Genesis(**json.loads(db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0]))
        blocks = db.execute("SELECT number, timestamp, state_root FROM blocks WHERE number >= 1 "
                            "ORDER BY number").fetchall()
        extrinsics: dict[int, list[dict]] = defaultdict(list)
        for block, body in db.execute("SELECT block, body FROM extrinsics ORDER BY block, idx"):
            extrinsics[block].append(json.loads(body))
    except (sqlite3.Error, TypeError) as e:
        raise RunError(f"{db_path}: not a localnet database ({e})") from e
    finally:
        db.close()
    return genesis, [tuple(b) for b in blocks], dict(extrinsics)


def read_neurons(path: Path) -> list[NeuronInfo]:
    """Roles from report/report.json (or neurons.json), else from the wallets' public hotkeys."""
    for candidate in (path / "report" / "report.json", path / "neurons.json"):
        if candidate.exists():
            data = json.loads(candidate.read_text())
            return [NeuronInfo(n["name"], n["role"], n["kind"], n["hotkey"]) for n in data["neurons"]]
    wallets = path / "wallets"
    if not wallets.is_dir():
        raise RunError(f"{path}: neither report/report.json nor wallets/ says who is who")
    out = []
    for w in sorted(wallets.iterdir()):
        pub = w / "hotkeys" / "defaultpub.txt"
        if pub.exists():
            role, kind = name_role(w.name)
            out.append(NeuronInfo(w.name, role, kind, json.loads(pub.read_text())["ss58Address"]))
    return out


def name_role(name: str) -> tuple[str, str]:
    """scripts/localnet.py names: owner, validator<i>, miner<i> (honest), <kind><i> (hostile)."""
    base = name.rstrip("0123456789")
    if base in ("owner", "validator"):
        return base, base
    return "miner", "honest" if base == "miner" else base


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise RunError(f"{path} is missing: the validator's per-window scores are needed")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find_netuid(extrinsics: dict[int, list[dict]], neurons: list[NeuronInfo]) -> int:
    validators = {n.hotkey for n in neurons if n.role == "validator"}
    for exts in extrinsics.values():
        for ext in exts:
            p = ext["payload"]
            if p["call"] in WEIGHT_CALLS and p["signer"] in validators:
                return int(p["args"]["netuid"])
            if p["call"] == "burned_register" and p["args"]["hotkey"] in validators:
                return int(p["args"]["netuid"])
    raise RunError("no validator registered on any subnet in this run's chain")


def row_scores(row: dict) -> dict[int, float]:
    """uid -> final score as the validator computed it (uids it did not fetch this window score 0)."""
    return {int(uid): float(m["score"]) for uid, m in row["miners"].items()}


def row_outcomes(row: dict) -> dict[int, MinerOutcome]:
    """uid -> what the validator recorded about the miner. Older rows lack fields: in_sync (a rejection other
    than out_of_sync kept the miner in sync, as `gauntlet.checks` decides) and evaluated (every admitted
    miner was, before the rotating sample)."""
    out = {}
    for uid, m in row["miners"].items():
        reason = m.get("reason")
        out[int(uid)] = MinerOutcome(hotkey=str(m["hotkey"]), reason=reason, evaluated=bool(m.get("evaluated", m.get("improvement_random") is not None)),
                                     improvement_random=m.get("improvement_random"),
                                     improvement_assigned=m.get("improvement_assigned"),
                                     in_sync=bool(m.get("in_sync", reason != "out_of_sync")))
    return out


def row_u16(row: dict, owner_uid: int) -> tuple[list[int], list[int]]:
    """The u16 row the validator sent for a window, rebuilt from the weights it logged for its miners."""
    weights = {int(u): float(m["weight"] or 0.0) for u, m in row["miners"].items()}
    weights[owner_uid] = weights.get(owner_uid, 0.0) + max(0.0, 1.0 - math.fsum(weights.values()))
    uids = sorted(u for u, w in weights.items() if w > 0)
    return weights_to_u16(uids, [weights[u] for u in uids])


def match_events(run: Run, hotkey: str, rows: list[dict]) -> list[WeightEvent]:
    """Pair the rows that set weights with the validator's weight extrinsics (same u16 row), in order.

    Rows without an extrinsic get an estimated block (see `place_estimates`). Extrinsics without a row:
    before the validator's last logged one they stay in every replay as recorded; after it (the window in
    progress when the network was stopped, whose scores were never logged) the replay ends the block before.
    """
    ext_pos = [(b, i, e["payload"]["args"]) for b, exts in sorted(run.extrinsics.items()) for i, e in enumerate(exts)
               if e["payload"]["signer"] == hotkey and e["payload"]["call"] in WEIGHT_CALLS]
    owner_uid = 0  # scripts/localnet.py registers the owner's hotkey first
    found: list[tuple[int, int] | None] = []
    used: list[int] = []
    pointer = 0
    for row in rows:
        hit = None
        if row.get("weights_set"):
            want = row_u16(row, owner_uid)
            for k in range(pointer, min(pointer + 2, len(ext_pos))):  # one lost extrinsic may sit in between
                b, i, args = ext_pos[k]
                if list(args["uids"]) == want[0] and list(args["weights"]) == want[1]:
                    hit, pointer = (b, i), k + 1
                    used.append(k)
                    break
        found.append(hit)
    last_used = used[-1] if used else -1
    for k, (b, i, _) in enumerate(ext_pos):
        if k in used:
            run.weight_positions.add((b, i))
        elif k > last_used:
            run.end_block = min(run.end_block, b - 1)
    blocks = place_estimates(run.hparams, [row["window"] for row in rows], [f[0] if f else None for f in found])
    return [WeightEvent(row["window"], row_scores(row), block, f[1] if f else LATE, f is not None, row_outcomes(row))
            for row, f, block in zip(rows, found, blocks, strict=True)]


def place_estimates(hp: HParams, windows: list[int], blocks: list[int | None]) -> list[int]:
    """Blocks for rows whose weights never reached the chain: between the neighbouring known blocks
    (interpolated by window), else the window's last block plus the validator's median delay, never
    before the block after the previous known one (a validator that lags behind stays behind)."""
    last = [window_last_block(w, hp.start_block, hp.blocks_per_window) for w in windows]
    delays = [b - e for b, e in zip(blocks, last, strict=True) if b is not None]
    delay = int(statistics.median(delays)) if delays else DEFAULT_DELAY_BLOCKS
    known = [k for k, b in enumerate(blocks) if b is not None]
    out = []
    for k, (w, b) in enumerate(zip(windows, blocks, strict=True)):
        if b is not None:
            out.append(b)
            continue
        prev = max((j for j in known if j < k), default=None)
        nxt = min((j for j in known if j > k), default=None)
        guess = last[k] + delay
        if prev is not None and nxt is not None and windows[nxt] != windows[prev]:
            span = blocks[nxt] - blocks[prev]  # type: ignore[operator]
            guess = blocks[prev] + span * (w - windows[prev]) // (windows[nxt] - windows[prev])  # type: ignore
        if prev is not None:  # at least a block later: the chain rate-limits weights per block
            guess = max(guess, blocks[prev] + 1)  # type: ignore[operator]
        if nxt is not None:
            guess = min(guess, blocks[nxt] - 1)  # type: ignore[operator]
        out.append(guess)
    return out


# ---------------------------------------------------------------------------------------------------------
# Settings of one replay
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """One what-if: run HParams for the validators' weights, chain hyperparameter overrides, owner cut."""

    hparams: HParams
    chain: dict[str, int | bool] = field(default_factory=dict)
    owner_cut_u16: int | None = None  # None: the chain's own (18%)
    substitute: bool = True  # False: apply the recorded extrinsics verbatim (what the chain did)


class ReplayState(ChainState):
    """ChainState that records what each epoch pays (and may use another owner cut); same rules otherwise.

    The extra attributes are not dataclass fields, so the state root is computed exactly as the node does.
    """

    def track(self, netuid: int, owner_cut_u16: int | None) -> None:
        self.watch_netuid = netuid
        self.owner_cut_u16 = owner_cut_u16
        self.earned: dict[str, int] = defaultdict(int)
        self.burned = 0
        self.emitted = 0

    def _accumulate_emission(self, sub) -> None:
        if self.owner_cut_u16 is None or sub.netuid != self.watch_netuid:
            super()._accumulate_emission(sub)
            return
        # ChainState._accumulate_emission with the owner cut as a parameter (the chain keeps it global)
        issuance = sub.alpha_in + sub.alpha_out + sub.pending_server + sub.pending_validator + sub.pending_owner_cut
        split = coinbase.split_block_emission(coinbase.block_emission(issuance), owner_cut_u16=self.owner_cut_u16,
                                              owner_cut_enabled=bool(sub.hparams["owner_cut_enabled"]))
        sub.pending_owner_cut += split.owner_cut
        sub.pending_server += split.server
        sub.pending_validator += split.validator

    def run_epoch(self, sub) -> None:
        if sub.netuid != self.watch_netuid:
            super().run_epoch(sub)
            return
        hotkeys = [n.hotkey for n in sub.neurons]
        before = {hk: self.stake_of(sub.netuid, hk) for hk in hotkeys}
        drained = sub.pending_server + sub.pending_validator + sub.pending_owner_cut
        minted_before = sub.alpha_out
        super().run_epoch(sub)
        for hk in hotkeys:
            self.earned[hk] += self.stake_of(sub.netuid, hk) - before[hk]
        self.emitted += drained
        self.burned += drained - (sub.alpha_out - minted_before)


@dataclass
class ReplayResult:
    earned: dict[str, int]  # hotkey -> rao gained at epochs
    burned: int
    emitted: int
    state_root: str
    weight_calls: int  # weight sets/commits dispatched
    weight_refused: int


def dispatch(state: ChainState, signer: str, call: str, args: dict[str, Any]) -> tuple[bool, str | None]:
    """A hotkey call without a signed envelope (hotkey calls pay no fee): the node's argument checks, then
    the handler, as `calls.apply_payload` runs them after the nonce."""
    try:
        calls.validate_args(call, args)
        calls.CALLS[call](state, signer, args)
    except CallError as e:
        return False, str(e.args[0])
    except ValueError as e:
        return False, str(e)
    return True, None


class Replayer:
    """One replay of a run under `settings` (see the module docstring)."""

    def __init__(self, run: Run, settings: Settings) -> None:
        self.run, self.settings = run, settings
        self.state = cast(ReplayState, ReplayState.from_genesis(run.genesis))  # from_genesis is typed for the base
        self.state.track(run.netuid, settings.owner_cut_u16)
        self.last_interval: dict[str, int | None] = {hk: None for hk in run.events}
        self.at_position: dict[tuple[int, int], list[tuple[str, WeightEvent]]] = defaultdict(list)
        self.late: dict[int, list[tuple[str, WeightEvent]]] = defaultdict(list)
        for hk in run.validator_hotkeys:
            for ev in run.events.get(hk, []):
                target = self.late[ev.block] if ev.index == LATE else self.at_position[(ev.block, ev.index)]
                target.append((hk, ev))
        self.weight_calls = self.weight_refused = 0
        self.rescored = rescored_scores(run, settings.hparams)

    def replay(self, verify_roots: bool = False) -> ReplayResult:
        state = self.state
        for number, timestamp, root in self.run.blocks:
            self.force_chain_settings()
            state.begin_block(timestamp)
            for idx, ext in enumerate(self.run.extrinsics.get(number, [])):
                if self.settings.substitute and (number, idx) in self.run.weight_positions:
                    self.consume(ext["payload"])
                    for hk, ev in self.at_position.get((number, idx), []):
                        self.act(hk, ev)
                    continue
                calls.apply_payload(state, ext["payload"], extrinsic_size(ext))
                if ext["payload"]["call"] == "set_hyperparameter":
                    self.force_chain_settings()
            if self.settings.substitute:
                for hk, ev in self.late.get(number, []):
                    self.act(hk, ev)
            if verify_roots and state.state_root() != root:
                raise RunError(f"replaying the recorded chain differs from it at block {number}: the run was "
                               "recorded by another version of the localnet chain; record it again")
        return ReplayResult(dict(state.earned), state.burned, state.emitted, state.state_root(),
                            self.weight_calls, self.weight_refused)

    def force_chain_settings(self) -> None:
        sub = self.state.subnets.get(str(self.run.netuid))
        if sub is not None and self.settings.chain:
            sub.hparams.update(self.settings.chain)

    def consume(self, payload: dict[str, Any]) -> None:
        """A replaced weight extrinsic still uses its nonce, as the validator's submission did."""
        try:
            check_era(payload, self.state.block)
        except InvalidTransaction:
            return
        if self.state.nonces.get(payload["signer"], 0) == payload["nonce"]:
            self.state.nonces[payload["signer"]] = payload["nonce"] + 1

    def act(self, hotkey: str, ev: WeightEvent) -> None:
        """What the validator's maybe_set_weights does for this window, under the replay's settings."""
        hp = self.settings.hparams
        if not weights_due(ev.window, hp.weights_interval, self.last_interval[hotkey]):
            return
        sub = self.state.subnet(self.run.netuid)
        owner_uid = sub.uid_of(sub.owner_hotkey)
        scores = self.rescored[hotkey][ev.window] if self.rescored else ev.scores
        weights = compute_weights(scores, n=len(sub.neurons), owner_uid=owner_uid if owner_uid is not None else 0,
                                  burn_rate=hp.burn_rate, top_n=hp.top_n_miners, curve=hp.weight_curve,
                                  temperature=hp.weight_temperature)
        uids = [u for u, w in enumerate(weights) if w > 0]
        dests, values = weights_to_u16(uids, [weights[u] for u in uids])
        call = "commit_weights" if sub.hparams["commit_reveal_weights_enabled"] else "set_weights"
        args = {"netuid": self.run.netuid, "uids": dests, "weights": values,
                "version_key": int(sub.hparams["weights_version"])}
        ok, _ = dispatch(self.state, hotkey, call, args)
        self.weight_calls += 1
        if ok:
            self.last_interval[hotkey] = ev.window // hp.weights_interval
        else:
            self.weight_refused += 1


def pay_settings(hp: HParams) -> PaySettings:
    return PaySettings(**{f: getattr(hp, f) for f in PaySettings.__dataclass_fields__})


def rescored_scores(run: Run, hp: HParams) -> dict[str, dict[int, dict[int, float]]]:
    """validator hotkey -> window -> final scores under `hp`'s pay settings, re-derived from the recorded
    outcomes (`gauntlet.pay.rescore`); {} when they are the run's own (the recorded scores are used)."""
    if pay_settings(hp) == pay_settings(run.hparams):
        return {}
    out = {}
    for hk, events in run.events.items():
        finals = rescore([(ev.window, ev.outcomes) for ev in events], pay_settings(hp))
        out[hk] = {ev.window: f for ev, f in zip(events, finals, strict=True)}
    return out


def replay(run: Run, settings: Settings, verify_roots: bool = False) -> ReplayResult:
    return Replayer(run, settings).replay(verify_roots=verify_roots)


def recorded(run: Run) -> ReplayResult:
    """What the chain actually paid: the recorded extrinsics verbatim, every block's state root checked."""
    return replay(run, Settings(run.hparams, substitute=False), verify_roots=True)


# ---------------------------------------------------------------------------------------------------------
# Parsing settings
# ---------------------------------------------------------------------------------------------------------

WEIGHT_ALIASES = {"burn": "burn_rate", "top_n": "top_n_miners", "curve": "weight_curve",
                  "temperature": "weight_temperature", "interval": "weights_interval", "horizon": "pay_horizon"}
WEIGHT_KEYS = ("burn_rate", "top_n_miners", "weight_curve", "weight_temperature", "weights_interval", "pay_score",
               "pay_horizon")
DELAY_NAMES = ("commit_reveal_delay", "commit_reveal_period", "reveal_period", "commit_reveal_weights_interval")


def parse_value(raw: str) -> Any:
    low = raw.strip().lower()
    if low in ("true", "on", "yes"):
        return True
    if low in ("false", "off", "no"):
        return False
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw.strip()


def chain_value(name: str, value: Any) -> dict[str, int | bool]:
    """A chain setting in chain units; u16 and per-million parameters also take a fraction (0.5)."""
    if name in DELAY_NAMES:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} takes whole tempos >= 0 (0 = commit-reveal off), got {value!r}")
        if value == 0:
            return {"commit_reveal_weights_enabled": False}
        hp = hparams.HPARAMS["commit_reveal_period"]
        return {"commit_reveal_weights_enabled": True, "commit_reveal_period": _checked(hp, value)}
    try:
        hp = hparams.resolve(name)
    except hparams.HParamError as e:
        raise ValueError(f"unknown setting {name!r}: not a weight setting ({', '.join(WEIGHT_KEYS)}), "
                         f"owner_cut, commit_reveal_delay or a chain hyperparameter") from e
    if isinstance(value, float) and hp.unit in ("u16", "per_million") and 0 <= value <= 1:
        value = round(value * (hparams.U16_MAX if hp.unit == "u16" else 1_000_000))
    return {hp.name: _checked(hp, value)}


def _checked(hp: hparams.HParam, value: Any) -> int | bool:
    try:
        return hparams.check_value(hp, value, root=True)
    except hparams.HParamError as e:
        raise ValueError(str(e)) from e


def build_settings(run: Run, overrides: dict[str, Any]) -> Settings:
    """Settings from name -> value overrides (weight settings, chain hyperparameters, owner_cut)."""
    weight: dict[str, Any] = {}
    chain: dict[str, int | bool] = {}
    owner_cut = None
    for name, value in overrides.items():
        name = WEIGHT_ALIASES.get(name, name)
        if name in WEIGHT_KEYS:
            weight[name] = value
        elif name == "owner_cut":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"owner_cut is a fraction in [0, 1], got {value!r}")
            owner_cut = round(value * hparams.U16_MAX)
        else:
            chain.update(chain_value(name, value))
    try:
        hp = run.hparams.model_validate({**run.hparams.model_dump(), **weight})
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}
        raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from e
    return Settings(hp, chain, owner_cut)


def trim_run(src: str | Path, dst: str | Path) -> Path:
    """Copy what the replay reads from run folder `src` into `dst` (a small fixture: no model data, no keys).

    Writes chain.sqlite (meta, blocks, extrinsics only), hparams.json, metrics/<validator>.jsonl and
    neurons.json. Returns dst.
    """
    src, dst = Path(src), Path(dst)
    neurons = read_neurons(src)
    (dst / "metrics").mkdir(parents=True, exist_ok=True)
    (dst / "hparams.json").write_text((src / "hparams.json").read_text())
    (dst / "neurons.json").write_text(json.dumps({"neurons": [n.__dict__ for n in neurons]}, indent=1))
    for n in neurons:
        if n.role == "validator":
            (dst / "metrics" / f"{n.name}.jsonl").write_text((src / "metrics" / f"{n.name}.jsonl").read_text())
    out = dst / "chain.sqlite"
    out.unlink(missing_ok=True)
    db = sqlite3.connect(out)
    try:
        db.execute("ATTACH DATABASE ? AS src", (str(src / "chain.sqlite"),))
        for table in ("meta", "blocks", "extrinsics"):
            db.execute(f"CREATE TABLE {table} AS SELECT * FROM src.{table}")
        db.commit()
        db.execute("DETACH DATABASE src")
        db.execute("VACUUM")
    finally:
        db.close()
    return dst
