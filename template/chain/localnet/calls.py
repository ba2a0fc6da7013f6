"""Extrinsic handlers of the localnet: each validates in subtensor's order, then mutates the state.

Every call's arguments are checked against `ARG_SPECS` (exact keys, types, integer ranges, address format,
list lengths) before anything runs, both when the node admits an extrinsic to its pool and when a block
applies it; a failure is the named error `BadArgs: ...`, never an exception that reaches the block producer.
A handler raises `CallError(<subtensor error name>)` before touching anything, so a failed call leaves the
state as it was (only the signer's nonce moves and its fee is paid, as on a real chain). `apply_payload` is
the single entry point; `apply_signed` also verifies the signature (the node verifies on submission instead).

Spam costs, as on subtensor: coldkey calls pay a fee (base + per byte, burned) and the signer must hold it
when the extrinsic enters the pool; hotkey calls (weights, commitments) are free but only for a hotkey
registered on that subnet; every extrinsic is mortal (`extrinsic.check_era`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from template.chain.localnet import coinbase, hparams
from template.chain.localnet.extrinsic import (
    HOTKEY_CALLS,
    InvalidTransaction,
    check_address,
    check_era,
    extrinsic_size,
    verify_extrinsic,
)
from template.chain.localnet.state import (
    BURN_INCREASE_MULT_PCT,
    COMMIT_FIELD_LIMITS,
    COMMIT_MAX_FIELDS,
    COMMIT_MIN_SPACE,
    COMMIT_SPACE_PER_EPOCH,
    DEFAULT_HPARAMS,
    MAX_UNREVEALED_COMMITS,
    MIN_STAKE_RAO,
    SWAP_FEE_U16,
    U16_MAX,
    CallError,
    ChainState,
    Genesis,
    Subnet,
)

NETWORK_LOCK_REDUCTION_INTERVAL = 100_800
MAX_SUBNETS = 128
MAX_WEIGHT_ENTRIES = 4096
MAX_HPARAM_NAME_CHARS = 64
U64 = 2**64

# ---- argument validation -------------------------------------------------------------------------------------


def _uint(bits: int) -> Callable[[str, Any], Any]:
    def check(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**bits:
            raise ValueError(f"{name} must be an integer in [0, 2**{bits}), got {_show(v)}")
        return v
    return check


def _address(name: str, v: Any) -> str:
    return check_address(v, name)


def _u16_list(name: str, v: Any) -> list[int]:
    if not isinstance(v, list) or len(v) > MAX_WEIGHT_ENTRIES:
        raise ValueError(f"{name} must be a list of at most {MAX_WEIGHT_ENTRIES} integers")
    check = _uint(16)
    return [check(name, x) for x in v]


def _hparam_name(name: str, v: Any) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_HPARAM_NAME_CHARS:
        raise ValueError(f"{name} must be a string of 1..{MAX_HPARAM_NAME_CHARS} characters")
    return v


def _hparam_value(name: str, v: Any) -> int | bool:
    if not isinstance(v, bool) and not (isinstance(v, int) and 0 <= v < U64):
        raise ValueError(f"{name} must be true/false or an integer in [0, 2**64), got {_show(v)}")
    return v


def _commit_fields(name: str, v: Any) -> list[dict[str, str]]:
    if not isinstance(v, list) or len(v) > 2 * COMMIT_MAX_FIELDS:
        raise ValueError(f"{name} must be a list of at most {COMMIT_MAX_FIELDS} fields")
    for f in v:
        if not isinstance(f, dict) or len(f) != 1:
            raise ValueError(f"{name}: each field must be one of {{\"Raw\": hex}} or {{\"BigRaw\": hex}}")
        (kind, data), = f.items()
        if kind not in COMMIT_FIELD_LIMITS or not isinstance(data, str) or len(data) % 2 or \
                len(data) > 2 * max(COMMIT_FIELD_LIMITS.values()) + 2:
            raise ValueError(f"{name}: field kind must be Raw or BigRaw with an even-length hex string")
        try:
            bytes.fromhex(data)
        except ValueError as e:
            raise ValueError(f"{name}: field data is not hex") from e
    return v


def _show(v: Any) -> str:
    return repr(v)[:40]


U16, U64_ARG = _uint(16), _uint(64)
ARG_SPECS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "transfer": {"dest": _address, "amount": U64_ARG},
    "register_network": {"hotkey": _address},
    "start_call": {"netuid": U16},
    "burned_register": {"netuid": U16, "hotkey": _address},
    "add_stake": {"netuid": U16, "hotkey": _address, "amount": U64_ARG},
    "remove_stake": {"netuid": U16, "hotkey": _address, "amount": U64_ARG},
    "set_hyperparameter": {"netuid": U16, "name": _hparam_name, "value": _hparam_value},
    "set_weights": {"netuid": U16, "uids": _u16_list, "weights": _u16_list, "version_key": U64_ARG},
    "commit_weights": {"netuid": U16, "uids": _u16_list, "weights": _u16_list, "version_key": U64_ARG},
    "set_commitment": {"netuid": U16, "fields": _commit_fields},
}


def validate_args(call: str, args: Any) -> None:
    """Raise ValueError("BadArgs: ...") unless `args` has exactly the call's keys with valid values."""
    spec = ARG_SPECS.get(call)
    if spec is None:
        raise ValueError(f"BadArgs: unknown call {call!r}")
    if not isinstance(args, dict) or set(args) != set(spec):
        got = sorted(args)[:10] if isinstance(args, dict) else type(args).__name__
        raise ValueError(f"BadArgs: {call} takes exactly {sorted(spec)}, got {got}")
    for name, check in spec.items():
        try:
            check(name, args[name])
        except ValueError as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(("BadArgs", "BadAddress")) else f"BadArgs: {msg}") from e


# ---- fees and pool admission --------------------------------------------------------------------------------


def extrinsic_fee(genesis: Genesis, call: str, size: int) -> int:
    """Rao a call pays: 0 for hotkey calls (weights, commitments), else base + per byte of the extrinsic."""
    return 0 if call in HOTKEY_CALLS else genesis.fee_base_rao + genesis.fee_per_byte_rao * size


def check_admission(state: ChainState, payload: dict[str, Any], size: int, queued_fees: int,
                    queued_free: QueuedFreeCalls | None = None) -> tuple[int, int]:
    """Pool-entry checks against the current state; returns (fee, commitment space). Raises InvalidTransaction.

    The extrinsic must be includable in the next block (era), its arguments valid, and either its fee payable
    on top of the signer's fees already queued, or (a free hotkey call) its signer registered on the subnet and
    every check the call can fail before dispatch passing in the next block after the signer's queued free
    calls (`check_free_call`): a free call that would fail never enters a block, as on subtensor.
    """
    try:
        check_era(payload, state.block + 1)
        validate_args(payload["call"], payload["args"])
    except ValueError as e:
        raise InvalidTransaction(str(e)) from e
    fee = extrinsic_fee(state.genesis, payload["call"], size)
    signer = payload["signer"]
    if payload["call"] in HOTKEY_CALLS:
        sub = state.subnets.get(str(payload["args"]["netuid"]))
        if sub is None or sub.uid_of(signer) is None:
            raise InvalidTransaction("NotRegistered: hotkey calls are free only for a hotkey registered on "
                                     "that subnet")
        try:
            return fee, check_free_call(state, signer, payload["call"], payload["args"], state.block + 1,
                                        queued_free)
        except CallError as e:
            raise InvalidTransaction(str(e.args[0])) from e
    if state.balance(signer) < queued_fees + fee:
        raise InvalidTransaction(f"Payment: balance {state.balance(signer)} rao cannot pay the fee {fee} rao "
                                 f"(plus {queued_fees} rao queued)")
    return fee, 0


# ---- dispatch ------------------------------------------------------------------------------------------------


def apply_signed(state: ChainState, ext: dict[str, Any]) -> tuple[bool, str | None]:
    """Verify signature/genesis, then `apply_payload`. Invalid transactions come back as (False, reason)."""
    try:
        payload = verify_extrinsic(ext, state.genesis.genesis_hash())
        size = extrinsic_size(ext)
    except InvalidTransaction as e:
        return False, str(e)
    return apply_payload(state, payload, size)


def apply_payload(state: ChainState, payload: dict[str, Any], size: int,
                  args_checked: bool = False) -> tuple[bool, str | None]:
    """Check era and nonce, bump the nonce, charge the fee, validate the arguments, dispatch.

    `args_checked`: the node already ran `validate_args` at pool admission (it depends on nothing but the
    arguments, so the outcome is the same). Returns (ok, error name). Never raises on any payload that
    `verify_extrinsic` accepted.
    """
    signer, nonce = payload["signer"], payload["nonce"]
    try:
        check_era(payload, state.block)
    except InvalidTransaction as e:
        return False, str(e)
    expected = state.nonces.get(signer, 0)
    if nonce != expected:
        return False, f"{'Stale' if nonce < expected else 'Future'}: nonce {nonce}, expected {expected}"
    state.nonces[signer] = expected + 1
    fee = extrinsic_fee(state.genesis, payload["call"], size)
    if state.balance(signer) < fee:
        return False, f"Payment: balance below the fee of {fee} rao"
    if fee:
        state.balances[signer] -= fee
        state.total_issuance -= fee  # fees are burned
    try:
        if not args_checked:
            validate_args(payload["call"], payload["args"])
        CALLS[payload["call"]](state, signer, payload["args"])
    except CallError as e:
        return False, str(e.args[0])
    except ValueError as e:
        return False, str(e)
    return True, None


def _int_arg(args: dict[str, Any], name: str) -> int:
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def transfer(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    dest, amount = str(args["dest"]), _int_arg(args, "amount")
    if amount <= 0:
        raise CallError("AmountTooLow")
    if state.balance(signer) < amount:
        raise CallError("InsufficientBalance")
    state.balances[signer] -= amount
    state.balances[dest] = state.balance(dest) + amount


def lock_cost(state: ChainState) -> int:
    """max(min_lock, m*L - floor(L/I)*(now - last_lock_block)), m = 1 for the first lock, else 2."""
    last = state.network_last_lock
    mult = 1 if last == 0 else 2
    decay = (last // NETWORK_LOCK_REDUCTION_INTERVAL) * (state.block - state.network_last_lock_block)
    return max(state.genesis.min_lock_rao, mult * last - decay)


def register_network(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    hotkey = str(args["hotkey"])
    if state.owner_of.get(hotkey, signer) != signer:
        raise CallError("NonAssociatedColdKey")
    if state.network_last_lock and state.block - state.network_last_lock_block < \
            state.genesis.network_rate_limit:
        raise CallError("NetworkTxRateLimitExceeded")
    if len(state.subnets) >= MAX_SUBNETS:
        raise CallError("SubnetLimitReached")
    cost = lock_cost(state)
    if state.balance(signer) < cost:
        raise CallError("CannotAffordLockCost")
    netuid = next(i for i in range(1, MAX_SUBNETS + 2) if str(i) not in state.subnets)
    state.balances[signer] -= cost
    state.network_last_lock, state.network_last_lock_block = cost, state.block
    state.owner_of.setdefault(hotkey, signer)
    hp = dict(DEFAULT_HPARAMS)
    sub = Subnet(netuid=netuid, owner_coldkey=signer, owner_hotkey=hotkey, registered_at=state.block,
                 hparams=hp, subnet_tao=cost, alpha_in=cost,
                 last_epoch_block=coinbase.initial_last_epoch_block(netuid, int(hp["tempo"]), state.block))
    state.subnets[str(netuid)] = sub
    state.append_or_replace_neuron(sub, hotkey)


def start_call(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    sub = state.subnet(_int_arg(args, "netuid"))
    if sub.owner_coldkey != signer:
        raise CallError("BadOrigin")
    if sub.first_emission_block:
        raise CallError("FirstEmissionBlockNumberAlreadySet")
    sub.first_emission_block = state.block + 1


def burned_register(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    netuid, hotkey = _int_arg(args, "netuid"), str(args["hotkey"])
    if netuid == 0:
        raise CallError("RegistrationNotPermittedOnRootSubnet")
    sub = state.subnet(netuid)
    if not sub.hparams["registration_allowed"]:
        raise CallError("SubNetRegistrationDisabled")
    if sub.uid_of(hotkey) is not None:
        raise CallError("HotKeyAlreadyRegisteredInSubNet")
    if state.balance(signer) < sub.burn:
        raise CallError("NotEnoughBalanceToStake")
    if state.owner_of.get(hotkey, signer) != signer:
        raise CallError("NonAssociatedColdKey")
    if sub.hparams["max_allowed_uids"] <= 0 or (
            len(sub.neurons) >= sub.hparams["max_allowed_uids"] and state.pruning_victim(sub) is None):
        raise CallError("NoNeuronIdAvailable")
    state.balances[signer] -= sub.burn
    state.swap_tao_for_alpha(sub, sub.burn)  # the alpha bought is burned
    state.owner_of.setdefault(hotkey, signer)
    state.append_or_replace_neuron(sub, hotkey)
    sub.burn = state.clamp_burn(sub, sub.burn * BURN_INCREASE_MULT_PCT // 100)


def _stake_checks(state: ChainState, args: dict[str, Any]) -> tuple[Subnet, str, int]:
    sub = state.subnet(_int_arg(args, "netuid"))
    if not sub.first_emission_block:
        raise CallError("SubtokenDisabled")
    return sub, str(args["hotkey"]), _int_arg(args, "amount")


def add_stake(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    sub, hotkey, amount = _stake_checks(state, args)
    if amount < MIN_STAKE_RAO + amount * SWAP_FEE_U16 // U16_MAX:
        raise CallError("AmountTooLow")
    if state.balance(signer) < amount:
        raise CallError("NotEnoughBalanceToStake")
    if hotkey not in state.owner_of:
        raise CallError("HotKeyAccountNotExists")
    bought = state.quote_alpha_for_tao(sub, amount)
    if bought <= 0 or bought >= sub.alpha_in:
        raise CallError("InsufficientLiquidity")
    state.balances[signer] -= amount
    state.swap_tao_for_alpha(sub, amount)
    sub.alpha_out += bought
    state.stake_to(sub.netuid, hotkey, signer, bought)


def remove_stake(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    """Unstake `amount` alpha rao from (hotkey, signer) and sell it to the pool for TAO."""
    sub, hotkey, amount = _stake_checks(state, args)
    if amount < MIN_STAKE_RAO:
        raise CallError("AmountTooLow")
    if hotkey not in state.owner_of:
        raise CallError("HotKeyAccountNotExists")
    if state.stake_of_coldkey(sub.netuid, hotkey, signer) < amount:
        raise CallError("NotEnoughStakeToWithdraw")
    tao = state.quote_tao_for_alpha(sub, amount)
    if tao <= 0 or tao >= sub.subnet_tao:
        raise CallError("InsufficientLiquidity")
    state.unstake_from(sub.netuid, hotkey, signer, amount)
    sub.alpha_out -= amount
    sub.alpha_in += amount
    sub.subnet_tao -= tao
    state.balances[signer] = state.balance(signer) + tao


def _weights_args(args: dict[str, Any]) -> tuple[int, list[int], list[int], int]:
    return _int_arg(args, "netuid"), list(args["uids"]), list(args["weights"]), _int_arg(args, "version_key")


def _check_set_weights(state: ChainState, signer: str, args: dict[str, Any], now: int) -> tuple[Subnet, int]:
    """subtensor's do_set_weights checks, in its order (SUBTENSOR.md section 3); the subnet and the signer's uid."""
    netuid, uids, values, version_key = _weights_args(args)
    sub = state.subnets.get(str(netuid))
    if sub is not None and sub.hparams["commit_reveal_weights_enabled"]:
        raise CallError("CommitRevealEnabled")
    if netuid == 0:
        raise CallError("CanNotSetRootNetworkWeights")
    if len(uids) != len(values):
        raise CallError("WeightVecNotEqualSize")
    if sub is None:
        raise CallError("MechanismDoesNotExist")
    return sub, state.check_weights(sub, signer, uids, values, version_key, now=now)


def set_weights(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    sub, uid = _check_set_weights(state, signer, args, state.block)
    neuron = sub.neurons[uid]
    state.store_weights(neuron, list(args["uids"]), list(args["weights"]), None)
    neuron.last_update = state.block
    # weights set directly supersede any commit still waiting: a later reveal must not overwrite them
    sub.weight_commits = [c for c in sub.weight_commits if c[0] != signer]


def _check_commit_weights(state: ChainState, signer: str, args: dict[str, Any], now: int) -> tuple[Subnet, int]:
    netuid, uids, values, version_key = _weights_args(args)
    sub = state.subnet(netuid)
    if not sub.hparams["commit_reveal_weights_enabled"]:
        raise CallError("CommitRevealDisabled")
    uid = sub.uid_of(signer)
    if uid is None:
        raise CallError("HotKeyNotRegisteredInSubNet")
    neuron = sub.neurons[uid]
    if neuron.last_update != 0 and now - neuron.last_update < sub.hparams["weights_rate_limit"]:
        raise CallError("CommittingWeightsTooFast")
    if sum(1 for c in sub.weight_commits if c[0] == signer) >= MAX_UNREVEALED_COMMITS:
        raise CallError("TooManyUnrevealedCommits")
    state.check_weights(sub, signer, uids, values, version_key, rate_limit=False)
    return sub, uid


def commit_weights(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    """Commit-reveal (CRv4 semantics): store the weights hidden; `ChainState.reveal_commits` applies them at
    the epoch fixed now, commit_reveal_period tempos ahead (a later change of the period does not move it:
    `set_hyperparameter` shifts the pending commits' stored epoch by the change).
    The localnet is its own beacon: the commit is the plaintext row, which no view shows before the reveal.
    The set_weights checks run now (a friendlier early error than mainnet's silent drop at reveal) and again
    at the reveal."""
    sub, uid = _check_commit_weights(state, signer, args, state.block)
    sub.weight_commits.append([signer, sub.epoch_index, state.block, list(args["uids"]), list(args["weights"]),
                               _int_arg(args, "version_key")])
    sub.neurons[uid].last_update = state.block


def _check_set_commitment(state: ChainState, signer: str, args: dict[str, Any]) -> tuple[Subnet, int, int]:
    """Commitments pallet checks; the subnet, the space already used this epoch and the space this one costs."""
    sub = state.subnets.get(str(_int_arg(args, "netuid")))
    if sub is None or sub.uid_of(signer) is None:
        raise CallError("AccountNotAllowedCommit")
    fields_in = args["fields"]
    if len(fields_in) > COMMIT_MAX_FIELDS:
        raise CallError("TooManyFieldsInCommitmentInfo")
    total = 0
    for f in fields_in:
        (kind, hexdata), = f.items()
        size = len(hexdata) // 2
        if size > COMMIT_FIELD_LIMITS[kind]:
            raise CallError(f"{kind}TooLarge")  # the real chain cannot even encode it (BoundedVec)
        total += size
    epoch, used = sub.used_space.get(signer, [sub.epoch_index, 0])
    if epoch != sub.epoch_index:
        used = 0
    cost = max(COMMIT_MIN_SPACE, total)
    if used + cost > COMMIT_SPACE_PER_EPOCH:
        raise CallError("SpaceLimitExceeded")
    return sub, used, cost


def set_commitment(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    """Commitments pallet: fields [{"Raw": hex} | {"BigRaw": hex}], size and per-epoch space limits."""
    sub, used, cost = _check_set_commitment(state, signer, args)
    decoded = [dict([next(iter(f.items()))]) for f in args["fields"]]
    sub.used_space[signer] = [sub.epoch_index, used + cost]
    sub.commitments[signer] = {"fields": decoded, "block": state.block}


@dataclass
class QueuedFreeCalls:
    """What one hotkey's free calls already waiting in the pool will use on one subnet (pool admission)."""

    weights: int = 0  # set_weights and commit_weights
    commits: int = 0  # commit_weights
    space: int = 0  # commitment bytes

    def add(self, call: str, cost: int, sign: int = 1) -> None:
        if call in ("set_weights", "commit_weights"):
            self.weights += sign
        if call == "commit_weights":
            self.commits += sign
        if call == "set_commitment":
            self.space += sign * cost


def check_free_call(state: ChainState, signer: str, call: str, args: dict[str, Any], now: int,
                    queued: QueuedFreeCalls | None = None) -> int:
    """Run every check a free hotkey call can fail before it changes anything, as if dispatched in block `now`
    after the signer's `queued` free calls; returns the commitment space it uses (0 for weights). Raises
    CallError with the chain's error name (subtensor's transaction extensions refuse these in the pool)."""
    queued = queued or QueuedFreeCalls()
    if call == "set_weights":
        sub, _ = _check_set_weights(state, signer, args, now)
        if queued.weights and sub.hparams["weights_rate_limit"]:
            raise CallError("SettingWeightsTooFast")  # the queued weights call sets last_update first
        return 0
    if call == "commit_weights":
        sub, _ = _check_commit_weights(state, signer, args, now)
        if queued.weights and sub.hparams["weights_rate_limit"]:
            raise CallError("CommittingWeightsTooFast")
        if sum(1 for c in sub.weight_commits if c[0] == signer) + queued.commits >= MAX_UNREVEALED_COMMITS:
            raise CallError("TooManyUnrevealedCommits")
        return 0
    _, used, cost = _check_set_commitment(state, signer, args)
    if used + queued.space + cost > COMMIT_SPACE_PER_EPOCH:
        raise CallError("SpaceLimitExceeded")
    return cost


def _blocks_until_next_epoch(state: ChainState, sub: Subnet) -> int:
    return int(sub.hparams["tempo"]) - (state.block - sub.last_epoch_block)


def set_hyperparameter(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    """AdminUtils.sudo_set_* and set_tempo rolled into one call, with mainnet's permissions.

    The subnet owner may set the owner-settable parameters within their owner ranges, subject to the owner
    rate limit and the freeze window before an epoch; root (the genesis sudo key) may set any parameter within
    its codec range, without those limits (`hparams.HPARAMS` lists both).
    """
    sub = state.subnet(_int_arg(args, "netuid"))
    root = bool(state.sudo_key) and signer == state.sudo_key
    if sub.owner_coldkey != signer and not root:
        raise CallError("BadOrigin")
    try:
        hp = hparams.resolve(args["name"])
        value = hparams.check_value(hp, args["value"], root=root)
    except hparams.HParamError as e:
        raise CallError(e.code) from e
    name = hp.name
    if not root:
        tempo, freeze = int(sub.hparams["tempo"]), state.genesis.admin_freeze_window
        if tempo > 2 * freeze and _blocks_until_next_epoch(state, sub) <= freeze:
            raise CallError("AdminActionProhibitedDuringWeightsWindow")
        limit = state.genesis.owner_hparam_rate_limit_tempos * tempo
        if name in sub.hparam_last_set and state.block - sub.hparam_last_set[name] < limit:
            raise CallError("TxRateLimitExceeded")
    _check_hparam_consistency(sub, name, value)
    if name == "commit_reveal_period":  # pending commits keep the reveal epoch they were made with
        shift = int(sub.hparams[name]) - int(value)
        sub.weight_commits = [[c[0], c[1] + shift, *c[2:]] for c in sub.weight_commits]
    sub.hparams[name] = value
    if name == "commit_reveal_weights_enabled" and not value:
        sub.weight_commits = []  # commits still waiting are dropped, never revealed over later direct weights
    if not root:
        sub.hparam_last_set[name] = state.block
    if name == "tempo":
        sub.last_epoch_block, sub.blocks_since_last_step = state.block, 0  # set_tempo restarts the cycle
    if name in ("min_burn", "max_burn"):
        sub.burn = state.clamp_burn(sub, sub.burn)


def _check_hparam_consistency(sub: Subnet, name: str, value: int | bool) -> None:
    hp = sub.hparams
    if name == "max_allowed_uids" and value < len(sub.neurons):
        raise CallError("MaxAllowedUIdsLessThanCurrentUIds")
    if name == "max_allowed_validators" and value > hp["max_allowed_uids"]:
        raise CallError("MaxValidatorsLargerThanMaxUIds")
    if name == "alpha_low" and value > hp["alpha_high"] or name == "alpha_high" and value < hp["alpha_low"]:
        raise CallError("AlphaLowOutOfRange")
    if name == "min_burn" and value > hp["max_burn"] or name == "max_burn" and value < hp["min_burn"]:
        raise CallError("ValueNotInBounds")


CALLS: dict[str, Callable[[ChainState, str, dict[str, Any]], None]] = {
    "transfer": transfer,
    "register_network": register_network,
    "start_call": start_call,
    "burned_register": burned_register,
    "add_stake": add_stake,
    "remove_stake": remove_stake,
    "set_weights": set_weights,
    "commit_weights": commit_weights,
    "set_commitment": set_commitment,
    "set_hyperparameter": set_hyperparameter,
}
