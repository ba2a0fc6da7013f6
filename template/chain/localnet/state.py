"""The localnet's deterministic state: accounts, subnets, neurons, stake pools, and the per-block step.

Everything is integers (rao, u16) and plain containers so the whole state serializes to canonical JSON; its
sha256 is the block's state root. The extrinsic handlers live in `calls.py`; this module owns the data model,
stake accounting, registration/pruning, the block step (burn decay, alpha coinbase, epochs) and the payout of
an epoch's emission, following SUBTENSOR.md sections 2, 4 and 6.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from template.chain.localnet import coinbase, hparams
from template.chain.localnet.yuma import NeuronState, YumaParams, max_upscale_u16, yuma_epoch

RAO = 1_000_000_000
U16_MAX = 65535
DEV_ACCOUNTS = ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve", "//Ferdie")
MIN_NON_IMMUNE_UIDS = 10
IMMUNE_OWNER_UIDS_LIMIT = 1
BURN_INCREASE_MULT_PCT = 126  # burn x1.26 after each registration
SWAP_FEE_U16 = 33  # 0.05% pool fee
MIN_STAKE_RAO = 2_000_000
COMMIT_SPACE_PER_EPOCH = 3100
COMMIT_MIN_SPACE = 100
COMMIT_MAX_FIELDS = 3
COMMIT_FIELD_LIMITS = {"Raw": 128, "BigRaw": 512}

MAX_UNREVEALED_COMMITS = 10  # per hotkey and subnet (subtensor's TooManyUnrevealedCommits)

# Defaults of a newly created subnet (SUBTENSOR.md section 1), commit-reveal on as on mainnet.
DEFAULT_HPARAMS: dict[str, int | bool] = dict(hparams.DEFAULTS)


class CallError(Exception):
    """A dispatched call failed; `args[0]` is the chain's error name (e.g. "SettingWeightsTooFast")."""


@dataclass
class Genesis:
    """Chain-wide constants fixed at genesis (part of the genesis hash)."""

    chain_name: str = "localnet"
    dev_accounts: list[str] = field(default_factory=lambda: list(DEV_ACCOUNTS))
    dev_balance_rao: int = 1_000_000 * RAO
    min_lock_rao: int = 1000 * RAO
    network_rate_limit: int = 0  # blocks between subnet creations (mainnet 7200)
    admin_freeze_window: int = 10  # owner hparams frozen this many blocks before an epoch (if tempo > 2x this)
    owner_hparam_rate_limit_tempos: int = 0  # per-parameter owner rate limit in tempos (mainnet 2)
    stake_threshold_rao: int = 0
    sudo_uri: str = hparams.SUDO_URI  # the root key (root-only hyperparameters); "" for none
    fee_base_rao: int = 100_000  # fee of a paid (coldkey) extrinsic: base + per byte of its canonical JSON
    fee_per_byte_rao: int = 1_000
    timestamp: float = 0.0

    def genesis_hash(self) -> str:
        return hashlib.sha256(canonical(self.__dict__)).hexdigest()


@dataclass
class Neuron:
    """One uid. u16 outputs of the last epoch; `emission` in rao per epoch; rows are [[uid, u16], ...]."""

    hotkey: str
    registered_at: int
    last_update: int
    permit: bool = False
    active: bool = True
    consensus: int = 0
    incentive: int = 0
    dividends: int = 0
    validator_trust: int = 0
    emission: int = 0
    weights: list[list[int]] = field(default_factory=list)
    bonds: list[list[int]] = field(default_factory=list)
    weights_commit_block: int | None = None  # block of the commit a revealed row came from (commit-reveal)


@dataclass
class Subnet:
    """A subnet: ownership, hyperparameters, scheduler, pool, pending emission, neurons, commitments."""

    netuid: int
    owner_coldkey: str
    owner_hotkey: str
    registered_at: int
    hparams: dict[str, int | bool]
    burn: int = RAO
    first_emission_block: int = 0  # 0 until start_call
    last_epoch_block: int = 0
    epoch_index: int = 0
    last_mechanism_step_block: int = 0
    blocks_since_last_step: int = 0
    subnet_tao: int = 0
    alpha_in: int = 0
    alpha_out: int = 0
    pending_server: int = 0
    pending_validator: int = 0
    pending_owner_cut: int = 0
    owner_cut_last_epoch: int = 0  # alpha rao paid to the owner as owner cut at the last epoch
    owner_cut_total: int = 0  # alpha rao paid to the owner as owner cut since the subnet was created
    neurons: list[Neuron] = field(default_factory=list)
    commitments: dict[str, dict[str, Any]] = field(default_factory=dict)  # hotkey -> {fields, block}
    used_space: dict[str, list[int]] = field(default_factory=dict)  # hotkey -> [epoch_index, bytes used]
    hparam_last_set: dict[str, int] = field(default_factory=dict)
    # commit-reveal: [hotkey, base epoch, commit block, uids, u16 values, version_key], revealed at the epoch
    # base + commit_reveal_period, hidden from every view until then. The base is the commit's epoch_index; a
    # change of the period shifts it by the change, so the reveal epoch stays the one fixed at commit time
    # (and a recording made before that rule replays to the same state roots). Dropped when the hotkey sets
    # weights directly or commit-reveal is turned off.
    weight_commits: list[list[Any]] = field(default_factory=list)

    def uid_of(self, hotkey: str) -> int | None:
        for uid, n in enumerate(self.neurons):
            if n.hotkey == hotkey:
                return uid
        return None


def pick_pruning_victim(non_immune: list[tuple[int, int, int]], immune: list[tuple[int, int, int]],
                        max_uids: int) -> int | None:
    """The uid a full subnet of `max_uids` replaces, from (emission, registered_at, uid) keys of its prunable
    neurons: the lowest key of the group chosen.

    Subtensor's floor: above MinNonImmuneUids non-immune uids a non-immune one goes, at or below it an immune
    one first. A subnet with max_allowed_uids <= MinNonImmuneUids + 1 can never rise above that floor, so
    there the floor would refuse every registration once all are past immunity: it takes the lowest non-immune
    uid whenever there is one, and an immune one only when all are immune. None (NoNeuronIdAvailable) only
    when nothing is prunable.
    """
    small = max_uids <= MIN_NON_IMMUNE_UIDS + 1
    if non_immune and (len(non_immune) > MIN_NON_IMMUNE_UIDS or small or not immune):
        return min(non_immune)[2]
    return min(immune)[2] if immune else None


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _shallow(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _burn_decay_q32(half_life: int) -> int:
    """The Q32 factor f with f**half_life <= 1/2 most tightly (bisection), as the chain's burn decay."""
    lo, hi = 0, 1 << 32
    half = 1 << 31
    while hi - lo > 1:
        mid = (lo + hi) // 2
        acc = 1 << 32
        for _ in range(half_life):
            acc = (acc * mid) >> 32
            if acc == 0:
                break
        if acc <= half:
            lo = mid
        else:
            hi = mid
    return lo


_DECAY_CACHE: dict[int, int] = {}


def burn_decay_factor(half_life: int) -> int:
    if half_life not in _DECAY_CACHE:
        _DECAY_CACHE[half_life] = _burn_decay_q32(max(1, half_life))
    return _DECAY_CACHE[half_life]


@dataclass
class ChainState:
    """The whole chain state at one block."""

    genesis: Genesis
    block: int = 0
    timestamp: float = 0.0
    total_issuance: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    nonces: dict[str, int] = field(default_factory=dict)
    owner_of: dict[str, str] = field(default_factory=dict)  # hotkey -> coldkey
    subnets: dict[str, Subnet] = field(default_factory=dict)  # str(netuid) -> Subnet
    hotkey_alpha: dict[str, int] = field(default_factory=dict)  # "netuid:hotkey" -> alpha rao
    hotkey_shares: dict[str, int] = field(default_factory=dict)  # "netuid:hotkey" -> total shares
    shares: dict[str, int] = field(default_factory=dict)  # "netuid:hotkey:coldkey" -> shares
    network_last_lock: int = 0
    network_last_lock_block: int = 0
    sudo_key: str = ""  # ss58 of genesis.sudo_uri

    # ---- construction and serialization -------------------------------------------------------------------
    @classmethod
    def from_genesis(cls, genesis: Genesis) -> ChainState:
        from bittensor_wallet import Keypair

        state = cls(genesis=genesis, timestamp=genesis.timestamp)
        if genesis.sudo_uri:
            state.sudo_key = Keypair.create_from_uri(genesis.sudo_uri).ss58_address
        for uri in genesis.dev_accounts:
            state.balances[Keypair.create_from_uri(uri).ss58_address] = genesis.dev_balance_rao
            state.total_issuance += genesis.dev_balance_rao
        return state

    def to_dict(self) -> dict[str, Any]:
        d = _shallow(self)
        d["genesis"] = _shallow(self.genesis)
        d["subnets"] = {k: {**_shallow(s), "neurons": [_shallow(n) for n in s.neurons]} for k, s in self.subnets.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChainState:
        d = dict(d)
        d["genesis"] = Genesis(**d["genesis"])
        subnets = {}
        for k, s in d["subnets"].items():
            s = dict(s)
            s["neurons"] = [Neuron(**n) for n in s["neurons"]]
            subnets[k] = Subnet(**s)
        d["subnets"] = subnets
        return cls(**d)

    def dump(self) -> bytes:
        """Canonical JSON of the whole state (its sha256 is the state root)."""
        return canonical(self.to_dict())

    def state_root(self) -> str:
        return hashlib.sha256(self.dump()).hexdigest()

    # ---- lookups ------------------------------------------------------------------------------------------
    def subnet(self, netuid: int) -> Subnet:
        sub = self.subnets.get(str(netuid))
        if sub is None:
            raise CallError("SubnetNotExists")
        return sub

    def balance(self, ss58: str) -> int:
        return self.balances.get(ss58, 0)

    def stake_of(self, netuid: int, hotkey: str) -> int:
        return self.hotkey_alpha.get(f"{netuid}:{hotkey}", 0)

    def stake_of_coldkey(self, netuid: int, hotkey: str, coldkey: str) -> int:
        total_shares = self.hotkey_shares.get(f"{netuid}:{hotkey}", 0)
        if total_shares == 0:
            return 0
        return self.stake_of(netuid, hotkey) * self.shares.get(f"{netuid}:{hotkey}:{coldkey}", 0) // total_shares

    # ---- stake share pool ---------------------------------------------------------------------------------
    def stake_to(self, netuid: int, hotkey: str, coldkey: str, alpha: int) -> None:
        """Add alpha for (hotkey, coldkey), minting shares at the current ratio."""
        if alpha <= 0:
            return
        hk = f"{netuid}:{hotkey}"
        total, total_shares = self.hotkey_alpha.get(hk, 0), self.hotkey_shares.get(hk, 0)
        minted = alpha if total == 0 or total_shares == 0 else alpha * total_shares // total
        self.hotkey_alpha[hk] = total + alpha
        self.hotkey_shares[hk] = total_shares + minted
        key = f"{hk}:{coldkey}"
        self.shares[key] = self.shares.get(key, 0) + minted

    def stake_to_hotkey(self, netuid: int, hotkey: str, alpha: int) -> None:
        """Add alpha to the hotkey's pool without minting shares: every nominator gains pro rata."""
        if alpha <= 0:
            return
        hk = f"{netuid}:{hotkey}"
        if self.hotkey_shares.get(hk, 0) == 0:
            self.stake_to(netuid, hotkey, self.owner_of.get(hotkey, hotkey), alpha)
            return
        self.hotkey_alpha[hk] = self.hotkey_alpha.get(hk, 0) + alpha

    def unstake_from(self, netuid: int, hotkey: str, coldkey: str, alpha: int) -> None:
        """Remove `alpha` of (hotkey, coldkey)'s stake (caller checked it is held), burning its shares."""
        hk = f"{netuid}:{hotkey}"
        total, total_shares = self.hotkey_alpha[hk], self.hotkey_shares[hk]
        key = f"{hk}:{coldkey}"
        held = self.stake_of_coldkey(netuid, hotkey, coldkey)
        burned = self.shares[key] if alpha >= held else min(self.shares[key], -(-alpha * total_shares // total))
        self.shares[key] -= burned
        self.hotkey_shares[hk] = total_shares - burned
        self.hotkey_alpha[hk] = total - alpha
        if self.shares[key] == 0:
            del self.shares[key]

    # ---- constant-product pool ----------------------------------------------------------------------------
    @staticmethod
    def swap_tao_for_alpha(sub: Subnet, tao: int) -> int:
        """Buy alpha with `tao` rao (fee stays in the pool). Returns alpha bought; updates reserves."""
        net = tao - tao * SWAP_FEE_U16 // U16_MAX
        bought = sub.alpha_in * net // (sub.subnet_tao + net) if sub.subnet_tao + net > 0 else 0
        sub.subnet_tao += tao
        sub.alpha_in -= bought
        return bought

    @staticmethod
    def quote_alpha_for_tao(sub: Subnet, tao: int) -> int:
        net = tao - tao * SWAP_FEE_U16 // U16_MAX
        return sub.alpha_in * net // (sub.subnet_tao + net) if sub.subnet_tao + net > 0 else 0

    @staticmethod
    def quote_tao_for_alpha(sub: Subnet, alpha: int) -> int:
        gross = sub.subnet_tao * alpha // (sub.alpha_in + alpha) if sub.alpha_in + alpha > 0 else 0
        return gross - gross * SWAP_FEE_U16 // U16_MAX

    # ---- registration -------------------------------------------------------------------------------------
    def append_or_replace_neuron(self, sub: Subnet, hotkey: str) -> int:
        """Give `hotkey` a uid: append when there is room, else prune (SUBTENSOR.md section 6)."""
        if len(sub.neurons) < sub.hparams["max_allowed_uids"]:
            sub.neurons.append(Neuron(hotkey=hotkey, registered_at=self.block, last_update=self.block))
            return len(sub.neurons) - 1
        victim = self.pruning_victim(sub)
        if victim is None:
            raise CallError("NoNeuronIdAvailable")
        old = sub.neurons[victim].hotkey
        sub.weight_commits = [c for c in sub.weight_commits if c[0] != old]
        sub.neurons[victim] = Neuron(hotkey=hotkey, registered_at=self.block, last_update=self.block)
        for n in sub.neurons:
            for pair in n.weights:
                if pair[0] == victim:
                    pair[1] = 0
        return victim

    def pruning_victim(self, sub: Subnet) -> int | None:
        immortal = self._owner_immortal_uids(sub)
        immunity = sub.hparams["immunity_period"]
        non_immune, immune = [], []
        for uid, n in enumerate(sub.neurons):
            if uid in immortal:
                continue
            key = (n.emission, n.registered_at, uid)
            (immune if self.block - n.registered_at < immunity else non_immune).append(key)
        return pick_pruning_victim(non_immune, immune, int(sub.hparams["max_allowed_uids"]))

    def _owner_immortal_uids(self, sub: Subnet) -> set[int]:
        uids = []
        owner_uid = sub.uid_of(sub.owner_hotkey)
        if owner_uid is not None:
            uids.append(owner_uid)
        others = sorted((n.registered_at, uid) for uid, n in enumerate(sub.neurons)
                        if self.owner_of.get(n.hotkey) == sub.owner_coldkey and uid != owner_uid)
        uids += [uid for _, uid in others]
        return set(uids[:IMMUNE_OWNER_UIDS_LIMIT])

    # ---- weights: subtensor's do_set_weights checks, shared by set_weights, commits and reveals ----------------
    def check_weights(self, sub: Subnet, hotkey: str, uids: list[int], values: list[int], version_key: int,
                      rate_limit: bool = True, now: int | None = None) -> int:
        """Run set_weights checks 2-14 (SUBTENSOR.md section 3) for `hotkey` as in block `now` (default: this
        block); return its uid. Raises CallError."""
        if len(uids) != len(values):
            raise CallError("WeightVecNotEqualSize")
        hp, n = sub.hparams, len(sub.neurons)
        if len(uids) > n:
            raise CallError("UidsLengthExceedUidsInSubNet")
        uid = sub.uid_of(hotkey)
        if uid is None:
            raise CallError("HotKeyNotRegisteredInSubNet")
        owner_uid = sub.uid_of(sub.owner_hotkey)
        if uid != owner_uid and self.stake_of(sub.netuid, hotkey) < self.genesis.stake_threshold_rao:
            raise CallError("NotEnoughStakeToSetWeights")
        if hp["weights_version"] != 0 and version_key < hp["weights_version"]:
            raise CallError("IncorrectWeightVersionKey")
        neuron = sub.neurons[uid]
        now = self.block if now is None else now
        if rate_limit and neuron.last_update != 0 and now - neuron.last_update < hp["weights_rate_limit"]:
            raise CallError("SettingWeightsTooFast")
        self_weight = len(uids) == 1 and uids[0] == uid
        if not neuron.permit and uid != owner_uid and not self_weight:
            raise CallError("NeuronNoValidatorPermit")
        if len(set(uids)) != len(uids):
            raise CallError("DuplicateUids")
        if any(u >= n for u in uids):
            raise CallError("UidVecContainInvalidOne")
        if len(uids) < min(n, int(hp["min_allowed_weights"])) and not self_weight:
            raise CallError("WeightVecLengthIsLow")
        limit = int(hp["max_weight_limit"])
        if limit < U16_MAX and not self_weight and max(values, default=0) * U16_MAX > limit * sum(values):
            raise CallError("MaxWeightExceeded")
        return uid

    @staticmethod
    def store_weights(neuron: Neuron, uids: list[int], values: list[int], commit_block: int | None) -> None:
        neuron.weights = [[u, v] for u, v in zip(uids, max_upscale_u16(values), strict=True)]
        neuron.weights_commit_block = commit_block

    def reveal_commits(self, sub: Subnet) -> None:
        """Reveal every commit whose reveal epoch (fixed at commit time, see `Subnet.weight_commits`) has come, in
        commit order; a reveal that fails the set_weights checks is dropped, as the chain drops it."""
        period = int(sub.hparams["commit_reveal_period"])
        due = [c for c in sub.weight_commits if c[1] + period <= sub.epoch_index]
        if not due:
            return
        sub.weight_commits = [c for c in sub.weight_commits if c[1] + period > sub.epoch_index]
        for hotkey, _epoch, block, uids, values, version_key in due:
            try:
                uid = self.check_weights(sub, hotkey, uids, values, version_key, rate_limit=False)
            except CallError:
                continue
            if sub.neurons[uid].registered_at > block:
                continue  # the hotkey was pruned and registered again after it committed
            self.store_weights(sub.neurons[uid], uids, values, block)

    # ---- the block step -----------------------------------------------------------------------------------
    def begin_block(self, timestamp: float) -> None:
        """Advance to the next block: burn decay, alpha coinbase, due epochs. Extrinsics are applied after."""
        self.block += 1
        self.timestamp = timestamp
        for sub in self.subnets.values():
            f = burn_decay_factor(int(sub.hparams["burn_half_life"]))
            sub.burn = self.clamp_burn(sub, (sub.burn * f) >> 32)
            # subtensor emits to subnets that were started and still allow registration
            if sub.first_emission_block and self.block >= sub.first_emission_block and \
                    sub.hparams["registration_allowed"]:
                self._accumulate_emission(sub)
            sub.blocks_since_last_step += 1
            if coinbase.should_run_epoch(int(sub.hparams["tempo"]), self.block, last_epoch_block=sub.last_epoch_block,
                                         blocks_since_last_step=sub.blocks_since_last_step):
                self.run_epoch(sub)

    @staticmethod
    def clamp_burn(sub: Subnet, burn: int) -> int:
        return max(int(sub.hparams["min_burn"]), min(int(sub.hparams["max_burn"]), burn))

    def _accumulate_emission(self, sub: Subnet) -> None:
        issuance = sub.alpha_in + sub.alpha_out + sub.pending_server + sub.pending_validator + sub.pending_owner_cut
        split = coinbase.split_block_emission(coinbase.block_emission(issuance),
                                              owner_cut_enabled=bool(sub.hparams["owner_cut_enabled"]))
        sub.pending_owner_cut += split.owner_cut
        sub.pending_server += split.server
        sub.pending_validator += split.validator

    def run_epoch(self, sub: Subnet) -> None:
        """Drain pending emission, run Yuma, pay incentive/dividends/owner cut as stake (SUBTENSOR.md 4, 5)."""
        pending = coinbase.PendingEmission(server=sub.pending_server, validator=sub.pending_validator,
                                           owner_cut=sub.pending_owner_cut)
        sub.pending_server = sub.pending_validator = sub.pending_owner_cut = 0
        sub.blocks_since_last_step = 0
        sub.last_epoch_block = self.block
        sub.epoch_index += 1
        self.reveal_commits(sub)
        hp = sub.hparams
        owner_uid = sub.uid_of(sub.owner_hotkey)
        states = [NeuronState(stake=self.stake_of(sub.netuid, n.hotkey), last_update=n.last_update,
                              registered_at=n.registered_at, permit=n.permit,
                              weights=[(u, v) for u, v in n.weights], bonds=[(u, v) for u, v in n.bonds])
                  for n in sub.neurons]
        params = YumaParams(kappa=int(hp["kappa"]), bonds_penalty=int(hp["bonds_penalty"]),
                            bonds_moving_average=int(hp["bonds_moving_average"]), yuma3=bool(hp["yuma3_enabled"]),
                            liquid_alpha=bool(hp["liquid_alpha_enabled"]), alpha_low=int(hp["alpha_low"]),
                            alpha_high=int(hp["alpha_high"]),
                            alpha_sigmoid_steepness=int(hp["alpha_sigmoid_steepness"]),
                            max_validators=int(hp["max_allowed_validators"]),
                            activity_cutoff=hparams.activity_cutoff_blocks(int(hp["activity_cutoff_factor"]),
                                                                           int(hp["tempo"])))
        commit_blocks = [n.weights_commit_block for n in sub.neurons]
        result = yuma_epoch(states, block=self.block, last_step_block=sub.last_mechanism_step_block,
                            tempo=int(hp["tempo"]), rao_emission=pending.epoch_emission, params=params,
                            owner_uid=owner_uid, stake_threshold=self.genesis.stake_threshold_rao,
                            commit_blocks=commit_blocks if any(b is not None for b in commit_blocks) else None)
        for uid, n in enumerate(sub.neurons):
            n.incentive, n.dividends = result.incentive[uid], result.dividends[uid]
            n.consensus, n.validator_trust = result.consensus[uid], result.validator_trust[uid]
            n.emission, n.permit, n.active = result.emission[uid], result.permits[uid], result.active[uid]
            n.bonds = [[u, v] for u, v in result.bonds[uid]]
        hotkeys = [n.hotkey for n in sub.neurons]
        payout = coinbase.distribute_epoch(result, hotkeys=hotkeys, hotkey_owners=self.owner_of,
                                           owner_coldkey=sub.owner_coldkey, owner_hotkey=sub.owner_hotkey,
                                           pending=pending)
        for credit in payout.credits:
            if credit.coldkey is None:  # nominator part: raises the hotkey pool's share value
                self.stake_to_hotkey(sub.netuid, credit.hotkey, credit.amount)
            else:
                self.stake_to(sub.netuid, credit.hotkey, credit.coldkey, credit.amount)
        sub.alpha_out += payout.total_credited  # burned alpha is simply never minted
        sub.owner_cut_last_epoch = sum(c.amount for c in payout.credits if c.kind == "owner_cut")
        sub.owner_cut_total += sub.owner_cut_last_epoch
        sub.last_mechanism_step_block = self.block
