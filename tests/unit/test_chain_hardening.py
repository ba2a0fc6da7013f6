"""Localnet hardening, in process: no input kills the state machine or the pool, one account per key, spam
costs (fees, size, per-signer pool limits, mortality), commit-reveal weights, and mainnet permissions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template.chain.localnet import hparams
from template.chain.localnet.calls import ARG_SPECS, apply_payload, apply_signed, extrinsic_fee
from template.chain.localnet.extrinsic import (
    MAX_ERA_PERIOD,
    InvalidTransaction,
    canonical_json,
    extrinsic_size,
    parse_json,
    sign_extrinsic,
    verify_extrinsic,
)
from template.chain.localnet.node import MAX_FUTURE_PER_SIGNER, LocalnetNode
from template.chain.localnet.state import RAO, ChainState, Genesis
from template.chain.localnet.views import metagraph_view
from tests.unit.test_localnet_state import ALICE, BOB, Chain, key, subnet_chain, weights_chain

POLKADOT_ALICE = "15oF4uVJwmo4TdGW7VfQxNLavjCXviqxT9S1MgbjMNHr6Sp5"  # //Alice's key under SS58 prefix 0


# ---- what used to kill the node ----------------------------------------------------------------------------------
def test_nan_and_infinity_are_refused_at_parse_and_cannot_be_signed() -> None:
    for text in ('{"uids": [Infinity]}', '[NaN]', '{"a": -Infinity}'):
        with pytest.raises(ValueError):
            parse_json(text)
    with pytest.raises(ValueError):
        canonical_json({"uids": [float("inf")]})
    with pytest.raises(ValueError):
        sign_extrinsic(ALICE, "set_weights", {"netuid": 1, "uids": [float("nan")], "weights": [1],
                                              "version_key": 0}, 0, "0" * 64)
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json("[" * 10_000 + "]" * 10_000)


def test_the_reported_killers_are_named_errors() -> None:
    c = weights_chain()
    before = c.state.nonces.get(key("v0").ss58_address, 0)
    huge = {"netuid": 1, "uids": [10**400], "weights": [1], "version_key": 0}  # what Infinity became
    assert c.tx(key("v0"), "set_weights", **huge).startswith("BadArgs")
    assert c.tx(key("v0"), "set_weights", netuid=1, uids=[1.5], weights=[1], version_key=0).startswith("BadArgs")
    assert c.tx(key("m0"), "set_commitment", netuid=1, fields=["x"]).startswith("BadArgs")
    assert c.tx(key("m0"), "set_commitment", netuid=1, fields=[{"Raw": "zz"}]).startswith("BadArgs")
    assert c.tx(ALICE, "transfer", dest=BOB.ss58_address, amount=2**64).startswith("BadArgs")
    assert c.tx(ALICE, "transfer", dest=BOB.ss58_address, amount=1, extra=1).startswith("BadArgs")
    assert c.state.nonces[key("v0").ss58_address] == before + 2
    c.advance(3)  # and the chain goes on


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _args_for(call: str) -> st.SearchStrategy:
    """Arbitrary JSON under each of the call's keys (sometimes a key dropped or one added)."""
    keys = sorted(ARG_SPECS[call])
    base = st.fixed_dictionaries({k: JSON for k in keys})
    return st.one_of(base, JSON, base.map(lambda d: {**d, "zz": 1}), base.map(lambda d: dict(list(d.items())[1:])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_arbitrary_arguments_to_every_call_never_raise(data) -> None:
    c = Chain()
    c.state = ChainState.from_dict(json.loads(_base_state()))
    c.genesis = c.state.genesis.genesis_hash()
    call = data.draw(st.sampled_from(sorted(ARG_SPECS)))
    args = data.draw(_args_for(call))
    who = data.draw(st.sampled_from(["Alice", "v0", "m0", "owner"]))
    payload = {"call": call, "args": args, "signer": key(who).ss58_address,
               "nonce": c.state.nonces.get(key(who).ss58_address, 0), "genesis": c.genesis, "era": [0, 128]}
    ok, err = apply_payload(c.state, payload, 200)
    assert ok == (err is None) and (err is None or isinstance(err, str))
    c.state.begin_block(1e9)  # the block step after any call still runs


_BASE: list[bytes] = []


def _base_state() -> bytes:
    if not _BASE:
        _BASE.append(weights_chain().state.dump())
    return _BASE[0]


# ---- one account per key ---------------------------------------------------------------------------------------
def test_addresses_must_be_canonical_ss58() -> None:
    c = Chain()
    assert c.tx(ALICE, "transfer", dest="not-an-address", amount=RAO).startswith("BadAddress")
    assert "prefix 0" in c.tx(ALICE, "transfer", dest=POLKADOT_ALICE, amount=RAO)
    assert c.tx(ALICE, "register_network", hotkey="5" * 48).startswith("BadAddress")
    assert "not-an-address" not in c.state.balances and POLKADOT_ALICE not in c.state.balances
    ext = c.sign(ALICE, "transfer", dest=BOB.ss58_address, amount=RAO)
    ext["payload"]["signer"] = POLKADOT_ALICE  # same key, same signature bytes would differ: refused anyway
    assert apply_signed(c.state, ext)[1].startswith("BadAddress")


# ---- spam costs ------------------------------------------------------------------------------------------------
def test_paid_calls_pay_a_fee_even_when_they_fail_and_hotkey_calls_are_free() -> None:
    c = subnet_chain(fee_base_rao=100_000, fee_per_byte_rao=1_000)
    ext = c.sign(ALICE, "transfer", dest=BOB.ss58_address, amount=RAO)
    fee = extrinsic_fee(c.state.genesis, "transfer", extrinsic_size(ext))
    assert fee == 100_000 + 1_000 * extrinsic_size(ext) > 100_000
    alice, bob, issuance = (c.state.balance(ALICE.ss58_address), c.state.balance(BOB.ss58_address),
                            c.state.total_issuance)
    assert apply_signed(c.state, ext) == (True, None)
    assert c.state.balance(ALICE.ss58_address) == alice - RAO - fee
    assert c.state.balance(BOB.ss58_address) == bob + RAO and c.state.total_issuance == issuance - fee  # burned
    alice = c.state.balance(ALICE.ss58_address)
    assert c.tx(ALICE, "transfer", dest=BOB.ss58_address, amount=0) == "AmountTooLow"
    assert c.state.balance(ALICE.ss58_address) < alice  # the failed call still paid
    assert c.tx(key("m0"), "set_commitment", netuid=1, fields=[{"Raw": "61"}]) is None  # m0 holds no TAO
    assert c.tx(key("poor"), "transfer", dest=BOB.ss58_address, amount=1).startswith("Payment")


def test_the_pool_refuses_unfunded_unregistered_oversized_and_far_future_extrinsics(tmp_path: Path) -> None:
    node = LocalnetNode(tmp_path / "chain.sqlite", genesis=Genesis(timestamp=0.0), new=True)
    try:
        g = node.genesis_hash
        with pytest.raises(InvalidTransaction, match="Payment"):
            node.submit(sign_extrinsic(key("poor"), "transfer", {"dest": BOB.ss58_address, "amount": 1}, 0, g))
        commit = {"netuid": 1, "fields": [{"Raw": "61" * 100}]}
        with pytest.raises(InvalidTransaction, match="NotRegistered"):
            node.submit(sign_extrinsic(key("stranger"), "set_commitment", commit, 0, g))
        big = {"netuid": 1, "fields": [{"BigRaw": "62" * 512}] * 200}  # ~200 KB
        with pytest.raises(InvalidTransaction, match="ExhaustsResources"):
            node.submit(sign_extrinsic(ALICE, "set_commitment", big, 0, g))
        with pytest.raises(InvalidTransaction, match="BadArgs"):
            node.submit(sign_extrinsic(ALICE, "transfer", {"dest": BOB.ss58_address, "amount": -1}, 0, g))
        args = {"dest": BOB.ss58_address, "amount": 1}
        for nonce in range(1, MAX_FUTURE_PER_SIGNER + 1):  # a gap at 0: these wait as "future"
            node.submit(sign_extrinsic(ALICE, "transfer", args, nonce, g))
        with pytest.raises(InvalidTransaction, match="Future"):
            node.submit(sign_extrinsic(ALICE, "transfer", args, MAX_FUTURE_PER_SIGNER + 1, g))
        with pytest.raises(InvalidTransaction, match="Future"):
            node.submit(sign_extrinsic(BOB, "transfer", args, 1000, g))
        node.submit(sign_extrinsic(BOB, "transfer", args, 0, g))  # other signers are not affected
        node.submit(sign_extrinsic(ALICE, "transfer", args, 0, g))  # the gap filled: all 17 land
        head = node.produce_block(1.0)
        assert head["num_extrinsics"] == MAX_FUTURE_PER_SIGNER + 2
    finally:
        node.close()


def test_extrinsics_are_mortal(tmp_path: Path) -> None:
    c = Chain()
    args = {"dest": BOB.ss58_address, "amount": RAO}
    c.advance(10)
    with pytest.raises(InvalidTransaction, match="BadEra"):
        verify_extrinsic(sign_extrinsic(ALICE, "transfer", args, 0, c.genesis, period=MAX_ERA_PERIOD + 1),
                         c.genesis)
    late = sign_extrinsic(ALICE, "transfer", args, 0, c.genesis, birth=2, period=4)
    assert apply_signed(c.state, late)[1].startswith("Outdated")
    early = sign_extrinsic(ALICE, "transfer", args, 0, c.genesis, birth=50, period=4)
    assert apply_signed(c.state, early)[1].startswith("BadEra")
    node = LocalnetNode(tmp_path / "chain.sqlite", genesis=Genesis(timestamp=0.0), new=True)
    try:
        parked = sign_extrinsic(ALICE, "transfer", args, 1, node.genesis_hash, birth=0, period=4)
        node.submit(parked)  # waits behind nonce 0, then expires in the pool
        for i in range(6):
            node.produce_block(float(i + 1))
        node.submit(sign_extrinsic(ALICE, "transfer", args, 0, node.genesis_hash, birth=6))
        assert node.produce_block(7.0)["num_extrinsics"] == 1
        assert node.next_nonce(ALICE.ss58_address) == 1  # the parked one is gone
    finally:
        node.close()


# ---- commit-reveal ---------------------------------------------------------------------------------------------
def cr_chain(period: int = 1) -> Chain:
    """weights_chain with commit-reveal on (period tempos); tempo 5."""
    c = weights_chain()
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_weights_enabled", value=True)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_period", value=period)
    return c


def commit(c: Chain, who: str, uids: list[int], weights: list[int]) -> str | None:
    return c.tx(key(who), "commit_weights", netuid=1, uids=uids, weights=weights, version_key=0)


def test_commits_stay_hidden_until_the_reveal_epoch_and_then_count() -> None:
    c = cr_chain(period=1)
    assert c.tx(key("v0"), "set_weights", netuid=1, uids=[1], weights=[1], version_key=0) == "CommitRevealEnabled"
    assert commit(c, "v0", [1, 2], [3, 1]) is None
    sub = c.sub()
    assert metagraph_view(c.state, 1)["weights"] == {} and sub.neurons[4].last_update == c.state.block
    epoch = sub.epoch_index
    while sub.epoch_index == epoch:  # hidden for the rest of this tempo
        assert "4" not in metagraph_view(c.state, 1)["weights"]
        c.advance(1)
    assert metagraph_view(c.state, 1)["weights"]["4"] == [[1, 65535], [2, 21845]]
    assert sub.neurons[1].incentive > sub.neurons[2].incentive > 0  # counted in the epoch that revealed it
    assert sub.weight_commits == []


def test_a_longer_reveal_period_hides_weights_for_that_many_tempos() -> None:
    c = cr_chain(period=2)
    assert commit(c, "v0", [1], [1]) is None
    sub = c.sub()
    start = sub.epoch_index
    while sub.epoch_index < start + 2:
        assert "4" not in metagraph_view(c.state, 1)["weights"]
        c.advance(1)
    assert metagraph_view(c.state, 1)["weights"]["4"] == [[1, 65535]]


def test_commit_errors() -> None:
    c = weights_chain()
    assert commit(c, "v0", [1], [1]) == "CommitRevealDisabled"
    c = cr_chain()
    assert commit(c, "stranger", [1], [1]) == "HotKeyNotRegisteredInSubNet"
    assert commit(c, "m0", [2], [1]) == "NeuronNoValidatorPermit"  # checked now, not silently at the reveal
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="weights_rate_limit", value=2)
    assert commit(c, "v0", [1], [1]) is None
    assert commit(c, "v0", [1], [1]) == "CommittingWeightsTooFast"
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="weights_rate_limit", value=0)
    c.ok(ALICE, "set_hyperparameter", netuid=1, name="commit_reveal_period", value=5)
    for _ in range(9):
        assert commit(c, "v0", [1], [1]) is None
    assert commit(c, "v0", [1], [1]) == "TooManyUnrevealedCommits"


# ---- permissions -----------------------------------------------------------------------------------------------
def test_owner_vs_root_hyperparameters() -> None:
    c = subnet_chain(sudo_uri="//Dave")  # Alice owns netuid 1 but is not root
    dave = key("Dave")
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="kappa", value=30000) == "BadOrigin"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="weights_rate_limit", value=5) == "BadOrigin"
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="tempo", value=100) == "InvalidValue"  # owner 360..
    assert c.tx(ALICE, "set_hyperparameter", netuid=1, name="tempo", value=400) is None
    assert c.tx(dave, "set_hyperparameter", netuid=1, name="tempo", value=10) is None
    assert c.tx(dave, "set_hyperparameter", netuid=1, name="kappa", value=30000) is None
    assert c.tx(BOB, "set_hyperparameter", netuid=1, name="immunity_period", value=1) == "BadOrigin"
    assert c.sub().hparams["kappa"] == 30000 and c.sub().hparams["tempo"] == 10


def test_registry_permissions_match_the_installed_sdk() -> None:
    from bittensor.hyperparams import HYPERPARAMS
    from bittensor.intents.hyperparameters import OWNER_HYPERPARAMETERS

    for hp in hparams.HPARAMS.values():
        assert (hp.sdk_name in OWNER_HYPERPARAMETERS) == hp.owner_settable, hp.name
        if hp.owner_settable:
            assert OWNER_HYPERPARAMETERS[hp.sdk_name][0] == hp.sudo_call, hp.name
        sdk = HYPERPARAMS.get(hp.sdk_name)
        if hp.owner_settable and sdk is not None and sdk.minimum is not None:
            assert hp.owner_range[0] == sdk.minimum, hp.name
            assert sdk.maximum is None or hp.owner_range[1] == sdk.maximum, hp.name
    assert hparams.HPARAMS["commit_reveal_weights_enabled"].default is True
    with pytest.raises(hparams.HParamError, match="ReadOnly"):
        hparams.resolve("activity_cutoff")
