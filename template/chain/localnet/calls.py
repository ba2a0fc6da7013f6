"""Extrinsic handlers of the localnet: each validates in subtensor's order, then mutates the state.

A handler raises `CallError(<subtensor error name>)` before touching anything, so a failed call leaves the
state as it was (only the signer's nonce moves, as on a real chain). `apply_payload` is the single entry point;
`apply_signed` also verifies the signature (the node verifies on submission instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from template.chain.localnet import coinbase
from template.chain.localnet.extrinsic import InvalidTransaction, verify_extrinsic
from template.chain.localnet.state import (
    BURN_INCREASE_MULT_PCT,
    COMMIT_FIELD_LIMITS,
    COMMIT_MAX_FIELDS,
    COMMIT_MIN_SPACE,
    COMMIT_SPACE_PER_EPOCH,
    DEFAULT_HPARAMS,
    MIN_STAKE_RAO,
    SWAP_FEE_U16,
    U16_MAX,
    CallError,
    ChainState,
    Subnet,
)
from template.chain.localnet.yuma import max_upscale_u16

NETWORK_LOCK_REDUCTION_INTERVAL = 100_800
MAX_SUBNETS = 128

# owner-settable hyperparameters: name -> (min, max); bools are (0, 1). Aliases map SDK names to ours.
HPARAM_RANGES: dict[str, tuple[int, int]] = {
    "tempo": (1, 50400),
    "kappa": (0, U16_MAX),
    "immunity_period": (0, U16_MAX),
    "max_allowed_uids": (1, 4096),
    "max_allowed_validators": (1, 4096),
    "min_allowed_weights": (0, U16_MAX),
    "max_weight_limit": (0, U16_MAX),
    "weights_rate_limit": (0, 2**32 - 1),
    "weights_version": (0, 2**64 - 1),
    "activity_cutoff": (1, U16_MAX),
    "bonds_moving_average": (0, 975_000),
    "bonds_penalty": (0, U16_MAX),
    "alpha_low": (1638, U16_MAX),
    "alpha_high": (1638, U16_MAX),
    "alpha_sigmoid_steepness": (0, 2**15 - 1),
    "min_burn": (0, 2**64 - 1),
    "max_burn": (0, 2**64 - 1),
    "burn_half_life": (1, U16_MAX),
}
BOOL_HPARAMS = ("yuma3_enabled", "liquid_alpha_enabled", "commit_reveal_weights_enabled", "owner_cut_enabled",
                "registration_allowed")
HPARAM_ALIASES = {"weights_version_key": "weights_version", "weights_set_rate_limit": "weights_rate_limit",
                  "max_validators": "max_allowed_validators", "max_uids": "max_allowed_uids",
                  "commit_reveal_enabled": "commit_reveal_weights_enabled", "yuma3": "yuma3_enabled",
                  "liquid_alpha": "liquid_alpha_enabled", "network_registration_allowed": "registration_allowed"}


def apply_signed(state: ChainState, ext: dict[str, Any]) -> tuple[bool, str | None]:
    """Verify signature/genesis, then `apply_payload`. Invalid transactions come back as (False, reason)."""
    try:
        payload = verify_extrinsic(ext, state.genesis.genesis_hash())
    except InvalidTransaction as e:
        return False, str(e)
    return apply_payload(state, payload)


def apply_payload(state: ChainState, payload: dict[str, Any]) -> tuple[bool, str | None]:
    """Check the nonce, bump it, dispatch. Returns (ok, error name)."""
    signer, nonce = payload["signer"], payload["nonce"]
    expected = state.nonces.get(signer, 0)
    if nonce != expected:
        return False, f"{'Stale' if nonce < expected else 'Future'}: nonce {nonce}, expected {expected}"
    state.nonces[signer] = expected + 1
    try:
        CALLS[payload["call"]](state, signer, payload["args"])
    except CallError as e:
        return False, str(e.args[0])
    except (KeyError, TypeError, ValueError) as e:
        return False, f"BadArgs: {type(e).__name__}: {e}"
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
    hparams = dict(DEFAULT_HPARAMS)
    sub = Subnet(netuid=netuid, owner_coldkey=signer, owner_hotkey=hotkey, registered_at=state.block,
                 hparams=hparams, subnet_tao=cost, alpha_in=cost,
                 last_epoch_block=coinbase.initial_last_epoch_block(netuid, int(hparams["tempo"]), state.block))
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


def set_weights(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    """subtensor's do_set_weights checks, in its order (SUBTENSOR.md section 3)."""
    netuid = _int_arg(args, "netuid")
    uids = [int(u) for u in args["uids"]]
    values = [int(v) for v in args["weights"]]
    version_key = _int_arg(args, "version_key")
    if any(v < 0 or v > U16_MAX for v in values) or any(u < 0 or u > U16_MAX for u in uids):
        raise ValueError("uids and weights must be u16")
    sub = state.subnets.get(str(netuid))
    if sub is not None and sub.hparams["commit_reveal_weights_enabled"]:
        raise CallError("CommitRevealEnabled")
    if netuid == 0:
        raise CallError("CanNotSetRootNetworkWeights")
    if len(uids) != len(values):
        raise CallError("WeightVecNotEqualSize")
    if sub is None:
        raise CallError("MechanismDoesNotExist")
    hp, n = sub.hparams, len(sub.neurons)
    if len(uids) > n:
        raise CallError("UidsLengthExceedUidsInSubNet")
    uid = sub.uid_of(signer)
    if uid is None:
        raise CallError("HotKeyNotRegisteredInSubNet")
    owner_uid = sub.uid_of(sub.owner_hotkey)
    if uid != owner_uid and state.stake_of(netuid, signer) < state.genesis.stake_threshold_rao:
        raise CallError("NotEnoughStakeToSetWeights")
    if hp["weights_version"] != 0 and version_key < hp["weights_version"]:
        raise CallError("IncorrectWeightVersionKey")
    neuron = sub.neurons[uid]
    if neuron.last_update != 0 and state.block - neuron.last_update < hp["weights_rate_limit"]:
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
    neuron.weights = [[u, v] for u, v in zip(uids, max_upscale_u16(values), strict=True)]
    neuron.last_update = state.block


def set_commitment(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    """Commitments pallet: fields [{"Raw": hex} | {"BigRaw": hex}], size and per-epoch space limits."""
    sub = state.subnets.get(str(_int_arg(args, "netuid")))
    if sub is None or sub.uid_of(signer) is None:
        raise CallError("AccountNotAllowedCommit")
    fields_in = args["fields"]
    if len(fields_in) > COMMIT_MAX_FIELDS:
        raise CallError("TooManyFieldsInCommitmentInfo")
    decoded: list[dict[str, str]] = []
    total = 0
    for f in fields_in:
        (kind, hexdata), = f.items()
        if kind not in COMMIT_FIELD_LIMITS:
            raise ValueError(f"commitment field kind must be Raw or BigRaw, got {kind!r}")
        size = len(bytes.fromhex(hexdata))
        if size > COMMIT_FIELD_LIMITS[kind]:
            raise CallError(f"{kind}TooLarge")  # the real chain cannot even encode it (BoundedVec)
        total += size
        decoded.append({kind: hexdata})
    epoch, used = sub.used_space.get(signer, [sub.epoch_index, 0])
    if epoch != sub.epoch_index:
        used = 0
    cost = max(COMMIT_MIN_SPACE, total)
    if used + cost > COMMIT_SPACE_PER_EPOCH:
        raise CallError("SpaceLimitExceeded")
    sub.used_space[signer] = [sub.epoch_index, used + cost]
    sub.commitments[signer] = {"fields": decoded, "block": state.block}


def _blocks_until_next_epoch(state: ChainState, sub: Subnet) -> int:
    return int(sub.hparams["tempo"]) - (state.block - sub.last_epoch_block)


def set_hyperparameter(state: ChainState, signer: str, args: dict[str, Any]) -> None:
    """Owner hyperparameter setter (AdminUtils.sudo_set_* and set_tempo rolled into one call)."""
    sub = state.subnet(_int_arg(args, "netuid"))
    if sub.owner_coldkey != signer:
        raise CallError("BadOrigin")
    name = HPARAM_ALIASES.get(str(args["name"]), str(args["name"]))
    value = args["value"]
    if name in BOOL_HPARAMS:
        if not isinstance(value, bool) and value not in (0, 1):
            raise CallError("InvalidValue")
        value = bool(value)
    elif name in HPARAM_RANGES:
        lo, hi = HPARAM_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise CallError("InvalidValue")
    else:
        raise CallError("UnknownHyperparameter")
    tempo, freeze = int(sub.hparams["tempo"]), state.genesis.admin_freeze_window
    if tempo > 2 * freeze and _blocks_until_next_epoch(state, sub) <= freeze:
        raise CallError("AdminActionProhibitedDuringWeightsWindow")
    limit = state.genesis.owner_hparam_rate_limit_tempos * tempo
    if name in sub.hparam_last_set and state.block - sub.hparam_last_set[name] < limit:
        raise CallError("TxRateLimitExceeded")
    _check_hparam_consistency(sub, name, value)
    sub.hparams[name] = value
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
    "set_commitment": set_commitment,
    "set_hyperparameter": set_hyperparameter,
}
