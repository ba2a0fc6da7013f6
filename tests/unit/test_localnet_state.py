"""Localnet state machine: every extrinsic's failure paths (subtensor error names, in subtensor's order),
signatures and nonces, commitments limits, registration/pruning, coinbase + epoch payouts, and the node's
pool and SQLite persistence (in process, no HTTP)."""

from __future__ import annotations

import json
import sqlite3
from functools import cache

import pytest
from bittensor_wallet import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st

from template.chain.localnet import coinbase
from template.chain.localnet.calls import apply_signed, lock_cost
from template.chain.localnet.extrinsic import InvalidTransaction, sign_extrinsic
from template.chain.localnet.node import LocalnetNode, replay_chain
from template.chain.localnet.state import RAO, ChainState, Genesis
from template.chain.localnet.views import commitments_view, metagraph_view


@cache
def key(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//{name}")


ALICE, BOB = key("Alice"), key("Bob")


class Chain:
    """The state plus a signing helper: `tx(key, call, **args) -> error or None`."""

    def __init__(self, **genesis: object) -> None:
        genesis = {"fee_base_rao": 0, "fee_per_byte_rao": 0, **genesis}  # fees have their own tests
        self.state = ChainState.from_genesis(Genesis(timestamp=0.0, **genesis))
        self.genesis = self.state.genesis.genesis_hash()

    def sign(self, kp: Keypair, call: str, nonce: int | None = None, **args: object) -> dict:
        nonce = self.state.nonces.get(kp.ss58_address, 0) if nonce is None else nonce
        return sign_extrinsic(kp, call, dict(args), nonce, self.genesis, birth=self.state.block)

    def tx(self, kp: Keypair, call: str, **args: object) -> str | None:
        ok, err = apply_signed(self.state, self.sign(kp, call, **args))
        assert ok == (err is None)
        return err

    def ok(self, kp: Keypair, call: str, **args: object) -> None:
        err = self.tx(kp, call, **args)
        assert err is None, err

    def advance(self, k: int = 1) -> None:
        for _ in range(k):
            self.state.begin_block(float(self.state.block + 1))

    def sub(self, netuid: int = 1):
        return self.state.subnets[str(netuid)]


def subnet_chain(num_miners: int = 3, tempo: int = 10, start: bool = True, cr: bool = False,
                 **genesis: object) -> Chain:
    """Alice owns netuid 1 (hotkey `owner` = uid 0) and is root; Bob registers miners m0..; validator `v0` is
    Charlie's. Commit-reveal is off unless `cr` (its own tests turn it on)."""
    c = Chain(**genesis)
    root = key(str(genesis.get("sudo_uri", "//Alice")).lstrip("/"))
    c.ok(ALICE, "register_network", hotkey=key("owner").ss58_address)
    c.ok(root, "set_hyperparameter", netuid=1, name="tempo", value=tempo)
    c.ok(root, "set_hyperparameter", netuid=1, name="weights_rate_limit", value=1)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=cr)
    if start:
        c.ok(ALICE, "start_call", netuid=1)
    for i in range(num_miners):
        c.ok(BOB, "burned_register", netuid=1, hotkey=key(f"m{i}").ss58_address)
    c.ok(key("Charlie"), "burned_register", netuid=1, hotkey=key("v0").ss58_address)
    return c


# ---- signatures, nonces, genesis ---------------------------------------------------------------------------------
def test_genesis_funds_dev_accounts_and_state_round_trips() -> None:
    c = Chain()
    assert c.state.balance(ALICE.ss58_address) == 1_000_000 * RAO
    assert c.state.balance(key("Ferdie").ss58_address) == 1_000_000 * RAO
    restored = ChainState.from_dict(json.loads(c.state.dump()))
    assert restored.state_root() == c.state.state_root()
    assert Chain().genesis == c.genesis and Chain(dev_balance_rao=1).genesis != c.genesis


def test_bad_signature_wrong_signer_and_wrong_genesis_are_rejected_without_touching_state() -> None:
    c = Chain()
    ext = c.sign(ALICE, "transfer", dest=BOB.ss58_address, amount=RAO)
    tampered = json.loads(json.dumps(ext))
    tampered["payload"]["args"]["amount"] = 1000 * RAO
    assert apply_signed(c.state, tampered) == (False, "BadProof: signature does not match the signer")
    forged = json.loads(json.dumps(ext))
    forged["payload"]["signer"] = BOB.ss58_address  # Alice's signature claimed as Bob's
    assert apply_signed(c.state, forged)[1].startswith("BadProof")
    other_chain = sign_extrinsic(ALICE, "transfer", {"dest": BOB.ss58_address, "amount": RAO}, 0, "f" * 64)
    assert apply_signed(c.state, other_chain)[1].startswith("BadGenesis")
    assert apply_signed(c.state, {"payload": {"call": "mint"}})[1].startswith("BadFormat")
    assert c.state.nonces == {} and c.state.balance(BOB.ss58_address) == 1_000_000 * RAO


def test_replayed_and_future_nonces_are_rejected_and_failed_calls_still_use_the_nonce() -> None:
    c = Chain()
    ext = c.sign(ALICE, "transfer", dest=BOB.ss58_address, amount=RAO)
    assert apply_signed(c.state, ext) == (True, None)
    ok, err = apply_signed(c.state, ext)  # replay of the same signed bytes
    assert not ok and err.startswith("Stale")
    ok, err = apply_signed(c.state, c.sign(ALICE, "transfer", nonce=5, dest=BOB.ss58_address, amount=RAO))
    assert not ok and err.startswith("Future")
    assert c.tx(ALICE, "transfer", dest=BOB.ss58_address, amount=0) == "AmountTooLow"
    assert c.state.nonces[ALICE.ss58_address] == 2  # as on chain: a dispatched call that fails still counts
    assert c.state.balance(BOB.ss58_address) == 1_000_001 * RAO


def test_malformed_arguments_fail_with_bad_args() -> None:
    c = Chain()
    assert c.tx(ALICE, "transfer", dest=BOB.ss58_address).startswith("BadArgs")
    assert c.tx(ALICE, "transfer", dest=BOB.ss58_address, amount="1").startswith("BadArgs")


# ---- transfer, register_network, start_call -------------------------------------------------------------------
def test_transfer_errors_and_effect() -> None:
    c = Chain()
    poor = key("poor")
    assert c.tx(poor, "transfer", dest=BOB.ss58_address, amount=1) == "InsufficientBalance"
    c.ok(ALICE, "transfer", dest=poor.ss58_address, amount=5 * RAO)
    assert c.state.balance(poor.ss58_address) == 5 * RAO
    assert c.state.balance(ALICE.ss58_address) == 999_995 * RAO


def test_register_network_errors_lock_cost_and_owner_uid_zero() -> None:
    c = Chain(network_rate_limit=5)
    poor = key("poor")
    c.ok(ALICE, "transfer", dest=poor.ss58_address, amount=999 * RAO)
    assert c.tx(poor, "register_network", hotkey=key("h").ss58_address) == "CannotAffordLockCost"
    c.ok(ALICE, "register_network", hotkey=key("owner").ss58_address)
    sub = c.sub()
    assert sub.owner_coldkey == ALICE.ss58_address and sub.neurons[0].hotkey == key("owner").ss58_address
    assert sub.subnet_tao == 1000 * RAO == sub.alpha_in
    assert c.state.balance(ALICE.ss58_address) == (1_000_000 - 999 - 1000) * RAO
    assert c.tx(BOB, "register_network", hotkey=key("owner").ss58_address) == "NonAssociatedColdKey"
    assert c.tx(BOB, "register_network", hotkey=key("h2").ss58_address) == "NetworkTxRateLimitExceeded"
    c.advance(5)
    assert lock_cost(c.state) == 2000 * RAO - (1000 * RAO // 100_800) * 5  # doubled, then decaying
    c.ok(BOB, "register_network", hotkey=key("h2").ss58_address)
    assert set(c.state.subnets) == {"1", "2"}


def test_start_call_errors_and_emission_only_after_it() -> None:
    c = subnet_chain(start=False)
    assert c.tx(ALICE, "start_call", netuid=7) == "SubnetNotExists"
    assert c.tx(BOB, "start_call", netuid=1) == "BadOrigin"
    c.advance(3)
    assert c.sub().pending_server == 0
    c.ok(ALICE, "start_call", netuid=1)
    assert c.tx(ALICE, "start_call", netuid=1) == "FirstEmissionBlockNumberAlreadySet"
    sub = c.sub()
    assert sub.last_epoch_block + 10 > c.state.block + 2  # no epoch drains pending in between
    c.advance(2)
    split = coinbase.split_block_emission(coinbase.block_emission(sub.alpha_in))
    assert (sub.pending_server, sub.pending_validator, sub.pending_owner_cut) == (
        2 * split.server, 2 * split.validator, 2 * split.owner_cut)


def test_subnets_with_registration_disabled_get_no_emission() -> None:
    c = subnet_chain(tempo=100)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="registration_allowed", value=False)
    c.advance(3)
    assert c.sub().pending_server == 0
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="registration_allowed", value=True)
    c.advance(1)
    assert c.sub().pending_server > 0


# ---- burned_register, burn, pruning --------------------------------------------------------------------------
def test_burned_register_errors_in_order() -> None:
    c = subnet_chain(num_miners=1)
    assert c.tx(BOB, "burned_register", netuid=0, hotkey=key("x").ss58_address) == \
        "RegistrationNotPermittedOnRootSubnet"
    assert c.tx(BOB, "burned_register", netuid=9, hotkey=key("x").ss58_address) == "SubnetNotExists"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="registration_allowed", value=False)
    assert c.tx(BOB, "burned_register", netuid=1, hotkey=key("x").ss58_address) == "SubNetRegistrationDisabled"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="registration_allowed", value=True)
    assert c.tx(BOB, "burned_register", netuid=1, hotkey=key("m0").ss58_address) == \
        "HotKeyAlreadyRegisteredInSubNet"
    assert c.tx(key("poor"), "burned_register", netuid=1, hotkey=key("x").ss58_address) == \
        "NotEnoughBalanceToStake"
    assert c.tx(key("Dave"), "burned_register", netuid=1, hotkey=key("v0").ss58_address) == \
        "HotKeyAlreadyRegisteredInSubNet"
    c.ok(ALICE, "register_network", hotkey=key("owner2").ss58_address)
    assert c.tx(key("Dave"), "burned_register", netuid=2, hotkey=key("m0").ss58_address) == \
        "NonAssociatedColdKey"  # m0 belongs to Bob


def test_burn_is_charged_bumped_and_decays() -> None:
    c = subnet_chain(num_miners=0)
    sub = c.sub()
    burn = sub.burn
    before = c.state.balance(BOB.ss58_address)
    c.ok(BOB, "burned_register", netuid=1, hotkey=key("m9").ss58_address)
    assert c.state.balance(BOB.ss58_address) == before - burn
    assert sub.burn == burn * 126 // 100
    bumped = sub.burn
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="burn_half_life", value=10)
    c.advance(10)
    assert bumped // 2 - bumped // 100 <= sub.burn <= bumped // 2  # halves over one half-life


def test_pruning_replaces_the_lowest_emission_and_keeps_the_owner() -> None:
    c = subnet_chain(num_miners=2)  # uids: 0 owner, 1 m0, 2 m1, 3 v0
    sub = c.sub()
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="max_allowed_uids", value=4)
    sub.neurons[1].emission, sub.neurons[2].emission, sub.neurons[3].emission = 50, 10, 30
    sub.neurons[0].emission = 0  # the owner is immortal even with the lowest emission
    sub.neurons[3].weights = [[2, 65535], [1, 100]]
    c.advance(1)
    c.ok(BOB, "burned_register", netuid=1, hotkey=key("late").ss58_address)
    assert sub.neurons[2].hotkey == key("late").ss58_address and sub.neurons[2].registered_at == c.state.block
    assert sub.neurons[0].hotkey == key("owner").ss58_address
    assert sub.neurons[3].weights == [[2, 0], [1, 100]]  # weights to the pruned uid are zeroed


def test_no_neuron_id_available_when_only_the_owner_fits() -> None:
    c = Chain()
    c.ok(ALICE, "register_network", hotkey=key("owner").ss58_address)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="max_allowed_uids", value=1)
    assert c.tx(BOB, "burned_register", netuid=1, hotkey=key("x").ss58_address) == "NoNeuronIdAvailable"


# ---- staking ------------------------------------------------------------------------------------------------
def test_add_and_remove_stake_errors_and_pool_math() -> None:
    c = subnet_chain(start=False)
    hk = key("v0").ss58_address
    assert c.tx(key("Charlie"), "add_stake", netuid=1, hotkey=hk, amount=10 * RAO) == "SubtokenDisabled"
    c.ok(ALICE, "start_call", netuid=1)
    assert c.tx(key("Charlie"), "add_stake", netuid=9, hotkey=hk, amount=10 * RAO) == "SubnetNotExists"
    assert c.tx(key("Charlie"), "add_stake", netuid=1, hotkey=hk, amount=1_000_000) == "AmountTooLow"
    assert c.tx(key("poor"), "add_stake", netuid=1, hotkey=hk, amount=10 * RAO) == "NotEnoughBalanceToStake"
    assert c.tx(key("Charlie"), "add_stake", netuid=1, hotkey=key("nobody").ss58_address, amount=10 * RAO) == \
        "HotKeyAccountNotExists"
    sub = c.sub()
    tao, alpha = sub.subnet_tao, sub.alpha_in
    c.ok(key("Charlie"), "add_stake", netuid=1, hotkey=hk, amount=100 * RAO)
    net = 100 * RAO - 100 * RAO * 33 // 65535
    expected = alpha * net // (tao + net)
    assert c.state.stake_of(1, hk) == expected == c.state.stake_of_coldkey(1, hk, key("Charlie").ss58_address)
    assert c.tx(key("Charlie"), "remove_stake", netuid=1, hotkey=hk, amount=expected + 1) == \
        "NotEnoughStakeToWithdraw"
    assert c.tx(key("Dave"), "remove_stake", netuid=1, hotkey=hk, amount=RAO) == "NotEnoughStakeToWithdraw"
    before = c.state.balance(key("Charlie").ss58_address)
    c.ok(key("Charlie"), "remove_stake", netuid=1, hotkey=hk, amount=expected)
    back = c.state.balance(key("Charlie").ss58_address) - before
    assert 99 * RAO < back < 100 * RAO  # fee both ways
    assert c.state.stake_of(1, hk) == 0


def test_nominators_share_a_hotkey_pool_pro_rata() -> None:
    c = subnet_chain()
    hk = key("v0").ss58_address
    c.ok(key("Charlie"), "add_stake", netuid=1, hotkey=hk, amount=100 * RAO)
    c.ok(key("Dave"), "add_stake", netuid=1, hotkey=hk, amount=100 * RAO)
    charlie = c.state.stake_of_coldkey(1, hk, key("Charlie").ss58_address)
    dave = c.state.stake_of_coldkey(1, hk, key("Dave").ss58_address)
    c.state.stake_to_hotkey(1, hk, 1000)
    assert c.state.stake_of_coldkey(1, hk, key("Charlie").ss58_address) > charlie
    gained = (c.state.stake_of_coldkey(1, hk, key("Charlie").ss58_address) - charlie,
              c.state.stake_of_coldkey(1, hk, key("Dave").ss58_address) - dave)
    assert abs(gained[0] * dave - gained[1] * charlie) <= max(charlie, dave)  # pro rata up to rounding


# ---- set_weights ----------------------------------------------------------------------------------------------
def weights_chain() -> Chain:
    """v0 (uid 4) staked and, after one epoch, holding a permit; m0..m2 are uids 1..3."""
    c = subnet_chain(num_miners=3, tempo=5)
    c.ok(key("Charlie"), "add_stake", netuid=1, hotkey=key("v0").ss58_address, amount=100 * RAO)
    c.advance(6)
    assert c.sub().neurons[4].permit
    return c


def sw(c: Chain, who: str, uids: list[int], weights: list[int], version_key: int = 0, netuid: int = 1) -> str | None:
    return c.tx(key(who), "set_weights", netuid=netuid, uids=uids, weights=weights, version_key=version_key)


def test_set_weights_each_error_name() -> None:
    c = weights_chain()
    assert sw(c, "v0", [1], [1], netuid=0) == "CanNotSetRootNetworkWeights"
    assert sw(c, "v0", [1, 2], [1]) == "WeightVecNotEqualSize"
    assert sw(c, "v0", [1], [1], netuid=42) == "MechanismDoesNotExist"
    assert sw(c, "v0", list(range(6)), [1] * 6) == "UidsLengthExceedUidsInSubNet"
    assert sw(c, "stranger", [1], [1]) == "HotKeyNotRegisteredInSubNet"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="weights_version", value=7)
    assert sw(c, "v0", [1], [1], version_key=6) == "IncorrectWeightVersionKey"
    assert sw(c, "v0", [1], [1], version_key=7) is None
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="weights_rate_limit", value=3)
    assert sw(c, "v0", [1], [1], version_key=7) == "SettingWeightsTooFast"
    c.advance(3)
    assert sw(c, "m0", [2], [1], version_key=7) == "NeuronNoValidatorPermit"
    assert sw(c, "v0", [1, 1], [1, 2], version_key=7) == "DuplicateUids"
    assert sw(c, "v0", [1, 5], [1, 2], version_key=7) == "UidVecContainInvalidOne"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="min_allowed_weights", value=3)
    assert sw(c, "v0", [1, 2], [1, 2], version_key=7) == "WeightVecLengthIsLow"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="max_weight_limit", value=32768)
    assert sw(c, "v0", [1, 2, 3], [10, 1, 1], version_key=7) == "MaxWeightExceeded"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=True)
    assert sw(c, "v0", [1, 2, 3], [1, 1, 1], version_key=7) == "CommitRevealEnabled"


def test_set_weights_first_failing_check_wins() -> None:
    c = weights_chain()
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="weights_version", value=3)
    # wrong version AND duplicates AND an invalid uid: the version check comes first
    assert sw(c, "v0", [1, 1, 9], [1, 1, 1], version_key=1) == "IncorrectWeightVersionKey"
    # no permit AND duplicates: the permit check comes first
    assert sw(c, "m0", [2, 2], [1, 1], version_key=3) == "NeuronNoValidatorPermit"
    # duplicates AND invalid uid: duplicates first
    assert sw(c, "v0", [9, 9], [1, 1], version_key=3) == "DuplicateUids"
    # unequal lengths beat an unregistered signer
    assert sw(c, "stranger", [1, 2], [1], version_key=3) == "WeightVecNotEqualSize"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=True)
    assert sw(c, "v0", [1, 2], [1], version_key=1) == "CommitRevealEnabled"  # before everything


def test_set_weights_stores_a_max_upscaled_row_and_allows_self_weight_without_permit() -> None:
    c = weights_chain()
    assert sw(c, "v0", [1, 2, 3], [100, 50, 0]) is None
    v0 = c.sub().neurons[4]
    assert v0.weights == [[1, 65535], [2, 32768], [3, 0]] and v0.last_update == c.state.block
    assert sw(c, "m0", [1], [5]) is None  # pure self-weight: no permit needed
    assert c.sub().neurons[1].weights == [[1, 65535]]
    assert sw(c, "owner", [2], [1]) is None  # the owner uid needs no permit either


def test_stake_threshold_applies_except_to_the_owner() -> None:
    c = subnet_chain(stake_threshold_rao=10 * RAO)
    c.advance(11)
    assert sw(c, "v0", [1], [1]) == "NotEnoughStakeToSetWeights"
    assert sw(c, "owner", [1], [1]) is None


# ---- commitments -----------------------------------------------------------------------------------------------
def commit(c: Chain, who: str, *fields: tuple[str, bytes], netuid: int = 1) -> str | None:
    return c.tx(key(who), "set_commitment", netuid=netuid, fields=[{k: v.hex()} for k, v in fields])


def test_commitment_size_limits_and_errors() -> None:
    c = subnet_chain()
    assert commit(c, "stranger", ("Raw", b"x")) == "AccountNotAllowedCommit"
    assert commit(c, "m0", ("Raw", b"x"), netuid=5) == "AccountNotAllowedCommit"
    assert commit(c, "m0", *[("Raw", b"x")] * 4) == "TooManyFieldsInCommitmentInfo"
    assert commit(c, "m0", ("Raw", b"x" * 129)) == "RawTooLarge"
    assert commit(c, "m0", ("BigRaw", b"x" * 513)) == "BigRawTooLarge"
    assert commit(c, "m0", ("Raw", b"a" * 128)) is None
    assert commit(c, "m1", ("BigRaw", b"b" * 512), ("Raw", "\u00e9".encode())) is None
    view = commitments_view(c.state, 1)
    assert view[key("m0").ss58_address]["data"] == "a" * 128
    assert view[key("m1").ss58_address]["data"] == "b" * 512 + "\u00e9"


def test_commitment_space_budget_per_epoch() -> None:
    c = subnet_chain(tempo=50)
    for _ in range(6):  # 6 x 512 = 3072 of 3100 bytes
        assert commit(c, "m0", ("BigRaw", b"z" * 512)) is None
    assert commit(c, "m0", ("Raw", b"z")) == "SpaceLimitExceeded"  # a call uses at least 100 bytes
    assert commit(c, "m1", ("Raw", b"z")) is None  # the budget is per hotkey
    c.advance(51)  # the epoch index changed: a fresh budget
    assert commit(c, "m0", ("Raw", b"z")) is None


# ---- hyperparameters ------------------------------------------------------------------------------------------
def test_hyperparameter_errors() -> None:
    c = subnet_chain(owner_hparam_rate_limit_tempos=2, sudo_uri="//Dave")  # Alice is only the owner here
    assert c.tx(ALICE, "set_hyperparameter", netuid=3, name="tempo", value=5) == "SubnetNotExists"
    assert c.tx(BOB, "set_hyperparameter", netuid=1, name="tempo", value=5) == "BadOrigin"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="serving_rate_limit", value=5) == \
        "UnknownHyperparameter"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="activity_cutoff", value=5) == "ReadOnlyHyperparameter"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="bonds_moving_average", value=975_001) == "InvalidValue"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="yuma3_enabled", value=2) == "InvalidValue"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="max_allowed_uids", value=2) == \
        "MaxAllowedUIdsLessThanCurrentUIds"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="alpha_low", value=60000) == "AlphaLowOutOfRange"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="max_allowed_validators", value=300) == "BadOrigin"
    assert c.tx(key("Dave"), "set_hyperparameter", netuid=1, name="max_allowed_validators", value=300) == \
        "MaxValidatorsLargerThanMaxUIds"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="weights_version_key", value=2) is None  # alias
    assert c.sub().hparams["weights_version"] == 2
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="weights_version", value=3) == "TxRateLimitExceeded"
    c.advance(2 * 10)
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="weights_version", value=3) is None


def test_owner_may_not_change_hyperparameters_just_before_an_epoch() -> None:
    c = subnet_chain(tempo=40, sudo_uri="//Dave")
    sub = c.sub()
    c.advance(sub.last_epoch_block + 40 - 10 - c.state.block)  # 10 blocks before the epoch
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="immunity_period", value=300) == \
        "AdminActionProhibitedDuringWeightsWindow"
    assert c.tx(key("Dave"), "set_hyperparameter", netuid=1, name="kappa", value=30000) is None  # root may
    c.advance(11)
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="immunity_period", value=300) is None


def test_set_tempo_restarts_the_cycle() -> None:
    c = subnet_chain(tempo=100)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="tempo", value=7)
    assert c.sub().last_epoch_block == c.state.block
    index = c.sub().epoch_index
    c.advance(6)
    assert c.sub().epoch_index == index
    c.advance(1)
    assert c.sub().epoch_index == index + 1


# ---- epoch and payouts -------------------------------------------------------------------------------------------
def test_epoch_pays_owner_cut_miners_and_validator_and_burns_the_owners_miner() -> None:
    c = subnet_chain(num_miners=2, tempo=5)  # uids: 0 owner, 1 m0, 2 m1, 3 v0
    c.ok(ALICE, "burned_register", netuid=1, hotkey=key("owners_miner").ss58_address)  # uid 4, Alice's
    c.ok(key("Charlie"), "add_stake", netuid=1, hotkey=key("v0").ss58_address, amount=100 * RAO)
    c.advance(6)
    c.advance(1)
    assert sw(c, "v0", [1, 2, 4], [1, 3, 4]) is None
    sub = c.sub()
    c.advance(sub.last_epoch_block + 5 - c.state.block - 1)  # the block before the epoch
    pending = (sub.pending_server, sub.pending_validator, sub.pending_owner_cut)
    split = coinbase.split_block_emission(coinbase.block_emission(sub.alpha_in + sub.alpha_out + sum(pending)))
    stakes = {n: c.state.stake_of(1, key(n).ss58_address) for n in ("owner", "m0", "m1", "v0", "owners_miner")}
    c.advance(1)
    server, validator, owner_cut = (pending[0] + split.server, pending[1] + split.validator,
                                    pending[2] + split.owner_cut)
    gained = {n: c.state.stake_of(1, key(n).ss58_address) - s for n, s in stakes.items()}
    assert gained["owner"] == owner_cut
    assert gained["owners_miner"] == 0  # the owner coldkey's own miner: incentive burned
    assert 0 < gained["m0"] < gained["m1"]
    assert validator - 2 <= gained["v0"] <= validator
    assert gained["m0"] + gained["m1"] < server  # the burned share is not minted
    mg = metagraph_view(c.state, 1)
    assert mg["incentive_u16"][4] > mg["incentive_u16"][2] > mg["incentive_u16"][1] > 0
    assert mg["dividends_u16"][3] == 65535 and mg["validator_permit"][3]


# ---- the node: pool ordering, replays, persistence ---------------------------------------------------------------
def test_node_orders_out_of_order_nonces_rejects_replays_and_resumes_after_reopen(tmp_path) -> None:
    node = LocalnetNode(tmp_path / "chain.sqlite", genesis=Genesis(timestamp=100.0), new=True)
    g = node.genesis_hash
    first = sign_extrinsic(ALICE, "transfer", {"dest": BOB.ss58_address, "amount": RAO}, 0, g)
    second = sign_extrinsic(ALICE, "transfer", {"dest": BOB.ss58_address, "amount": 2 * RAO}, 1, g)
    results = []
    node.submit(second, lambda *r: results.append(("second", *r)))
    assert node.next_nonce(ALICE.ss58_address) == 0  # nonce 1 waits for nonce 0
    node.submit(first, lambda *r: results.append(("first", *r)))
    with pytest.raises(InvalidTransaction, match="AlreadyImported"):
        node.submit(first)
    head = node.produce_block(101.0)
    assert head["number"] == 1 and head["num_extrinsics"] == 2
    assert sorted(results) == [("first", True, None, 1), ("second", True, None, 1)]
    with pytest.raises(InvalidTransaction, match="Stale"):
        node.submit(first)
    info = node.block_info(1)
    assert [e["nonce"] for e in info["extrinsics"]] == [0, 1]
    root = head["state_root"]
    node.close()

    again = LocalnetNode(tmp_path / "chain.sqlite")
    assert again.head["number"] == 1 and again.head["state_root"] == root
    assert again.state.balance(BOB.ss58_address) == 1_000_003 * RAO
    assert again.produce_block(102.0)["parent_hash"] == head["hash"]
    again.close()


def test_replay_from_genesis_reproduces_every_state_root_and_detects_tampering(tmp_path) -> None:
    db = tmp_path / "chain.sqlite"
    node = LocalnetNode(db, genesis=Genesis(timestamp=100.0), new=True)
    g = node.genesis_hash
    nonces: dict[str, int] = {}

    def send(kp: Keypair, call: str, **args: object) -> None:
        nonce = nonces.get(kp.ss58_address, 0)
        nonces[kp.ss58_address] = nonce + 1
        node.submit(sign_extrinsic(kp, call, dict(args), nonce, g))

    send(ALICE, "register_network", hotkey=key("owner").ss58_address)
    send(ALICE, "set_hyperparameter", netuid=1, name="tempo", value=3)
    send(ALICE, "start_call", netuid=1)
    send(BOB, "burned_register", netuid=1, hotkey=key("m0").ss58_address)
    send(BOB, "transfer", dest=ALICE.ss58_address, amount=0)  # a failing call is replayed as failing
    node.produce_block(101.0)
    send(key("Charlie"), "burned_register", netuid=1, hotkey=key("v0").ss58_address)
    send(key("Charlie"), "add_stake", netuid=1, hotkey=key("v0").ss58_address, amount=50 * RAO)
    for i in range(8):  # a few epochs with emission and payouts
        node.produce_block(102.0 + i)
    node.close()

    assert replay_chain(db) == {"blocks": 9, "head": 9, "mismatches": []}
    con = sqlite3.connect(db)
    body = json.loads(con.execute("SELECT body FROM extrinsics WHERE block = 2 AND idx = 1").fetchone()[0])
    body["payload"]["args"]["amount"] = 60 * RAO  # the signature no longer matches
    con.execute("UPDATE extrinsics SET body = ? WHERE block = 2 AND idx = 1", (json.dumps(body),))
    con.commit()
    con.close()
    assert replay_chain(db)["mismatches"][0] == 2


# ---- properties ------------------------------------------------------------------------------------------------
ACTORS = ("Alice", "Bob", "Charlie", "owner", "m0", "v0", "stranger")
CALL_ARGS = {
    "transfer": st.fixed_dictionaries({"dest": st.sampled_from(ACTORS).map(lambda n: key(n).ss58_address),
                                       "amount": st.integers(-1, 2 * 10**15)}),
    "burned_register": st.fixed_dictionaries({"netuid": st.integers(0, 2),
                                              "hotkey": st.sampled_from(ACTORS).map(lambda n: key(n).ss58_address)}),
    "add_stake": st.fixed_dictionaries({"netuid": st.integers(0, 2), "amount": st.integers(0, 10**13),
                                        "hotkey": st.sampled_from(ACTORS).map(lambda n: key(n).ss58_address)}),
    "remove_stake": st.fixed_dictionaries({"netuid": st.integers(0, 2), "amount": st.integers(0, 10**13),
                                           "hotkey": st.sampled_from(ACTORS).map(lambda n: key(n).ss58_address)}),
    "set_weights": st.fixed_dictionaries({"netuid": st.integers(0, 2), "version_key": st.integers(0, 3),
                                          "uids": st.lists(st.integers(0, 6), max_size=4),
                                          "weights": st.lists(st.integers(0, 65535), max_size=4)}),
    "set_commitment": st.fixed_dictionaries({"netuid": st.integers(0, 2), "fields": st.lists(
        st.sampled_from([{"Raw": "61" * 10}, {"Raw": "61" * 129}, {"BigRaw": "62" * 400}]), max_size=4)}),
    "set_hyperparameter": st.fixed_dictionaries({"netuid": st.integers(0, 2), "value": st.integers(-1, 70000),
                                                 "name": st.sampled_from(["tempo", "kappa", "rho", "min_burn",
                                                                          "max_allowed_uids", "alpha_low"])}),
    "start_call": st.fixed_dictionaries({"netuid": st.integers(0, 2)}),
}


@cache
def base_state() -> bytes:
    """A subnet with a staked validator holding a permit, built once (canonical JSON)."""
    return weights_chain().state.dump()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTORS), st.sampled_from(sorted(CALL_ARGS)), st.data()), min_size=1,
                max_size=6))
def test_a_failed_call_changes_nothing_but_the_nonce(steps) -> None:
    c = Chain()
    c.state = ChainState.from_dict(json.loads(base_state()))
    c.genesis = c.state.genesis.genesis_hash()
    for who, call, data in steps:
        args = data.draw(CALL_ARGS[call])
        before = json.loads(c.state.dump())
        err = c.tx(key(who), call, **args)
        if err is not None:
            signer = key(who).ss58_address
            before["nonces"][signer] = before["nonces"].get(signer, 0) + 1
            assert json.loads(c.state.dump()) == before, (call, err)
        c.advance(1)
    for sub in c.state.subnets.values():  # stake accounting stays consistent
        for n in sub.neurons:
            hk = f"{sub.netuid}:{n.hotkey}"
            held = sum(c.state.stake_of_coldkey(sub.netuid, n.hotkey, k.split(":")[2])
                       for k in c.state.shares if k.startswith(hk + ":"))
            assert held <= c.state.stake_of(sub.netuid, n.hotkey)
