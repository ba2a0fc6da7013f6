"""Who leads and who mines, read off the metagraph (template/node/neuron.py)."""

from __future__ import annotations

from template.chain.base import Metagraph
from template.node.neuron import LEAD_STALE_WINDOWS, lead_validator, miner_uids, validator_uids

ALL = {f"hk{u}" for u in range(10)}  # every hotkey declared the validator role (the old, stake-only view)


def metagraph(stake: list[float], permit: list[bool]) -> Metagraph:
    n = len(stake)
    return Metagraph(netuid=1, block=10, n=n, uids=list(range(n)), hotkeys=[f"hk{u}" for u in range(n)],
                     coldkeys=[f"ck{u}" for u in range(n)], stake=stake, validator_permit=permit,
                     incentive=[0.0] * n, dividends=[0.0] * n, consensus=[0.0] * n, emission=[0.0] * n,
                     last_update=[0] * n, active=[True] * n, owner_hotkey="hk0", owner_coldkey="ck0")


def test_lead_is_highest_permitted_stake_lower_uid_on_ties():
    mg = metagraph([0.0, 500.0, 900.0, 900.0, 0.0], [True, True, False, True, False])
    assert validator_uids(mg, 100.0, ALL) == [1, 3]
    assert lead_validator(mg, 100.0, ALL) == 3
    assert miner_uids(mg, 100.0, ALL) == [2, 4]
    mg = metagraph([0.0, 900.0, 0.0, 900.0], [True, True, False, True])
    assert lead_validator(mg, 100.0, ALL) == 1


def test_before_the_first_epoch_staked_uids_lead_but_not_the_owner():
    mg = metagraph([5000.0, 2000.0, 0.0, 1900.0], [False] * 4)
    assert validator_uids(mg, 100.0, ALL) == [1, 3]
    assert lead_validator(mg, 100.0, ALL) == 1
    assert miner_uids(mg, 100.0, ALL) == [2]


def test_miners_with_permits_and_a_little_stake_stay_miners():
    mg = metagraph([0.0, 2000.0, 12.0, 40.0], [True] * 4)
    assert validator_uids(mg, 100.0, ALL) == [1]
    assert miner_uids(mg, 100.0, ALL) == [2, 3]


def test_no_stake_no_lead():
    mg = metagraph([0.0, 0.0, 0.0], [True, False, False])
    assert lead_validator(mg, 100.0, ALL) is None
    assert miner_uids(mg, 100.0, ALL) == [1, 2]


def test_stake_added_to_an_undeclared_miner_changes_nothing():
    """The stakejack: 2000 alpha staked onto miner uid 2 by someone else (it even earned a permit)."""
    declared = {"hk1"}
    mg = metagraph([0.0, 1000.0, 3000.0, 0.0], [True, True, True, False])
    assert validator_uids(mg, 100.0, declared) == [1]
    assert lead_validator(mg, 100.0, declared) == 1
    assert miner_uids(mg, 100.0, declared) == [2, 3]  # still judged, still a miner
    assert validator_uids(mg, 100.0, {"hk1", "hk2"}) == [1, 2]  # only its own declaration would change it


def test_declaration_alone_is_not_enough():
    mg = metagraph([0.0, 50.0, 2000.0], [True, True, False])
    assert validator_uids(mg, 100.0, {"hk1", "hk2"}) == []  # hk1 under the floor, hk2 without a permit


def test_lead_hands_over_when_it_stops_publishing():
    declared = {"hk1", "hk2"}
    mg = metagraph([0.0, 2000.0, 1900.0, 0.0], [True, True, True, False])
    w = 20
    fresh = {"hk1": w - 1, "hk2": None}
    assert lead_validator(mg, 100.0, declared, fresh, w) == 1
    assert lead_validator(mg, 100.0, declared, {"hk1": w - LEAD_STALE_WINDOWS, "hk2": None}, w) == 1
    stale = {"hk1": w - LEAD_STALE_WINDOWS - 1, "hk2": w - 1}
    assert lead_validator(mg, 100.0, declared, stale, w) == 2  # the second publishes: it leads
    # nobody published recently: the candidates take turns, LEAD_STALE_WINDOWS windows each
    turns = [lead_validator(mg, 100.0, declared, {"hk1": None, "hk2": None}, x) for x in range(4 * LEAD_STALE_WINDOWS)]
    assert set(turns) == {1, 2}
    assert all(turns[i] == turns[i - i % LEAD_STALE_WINDOWS] for i in range(len(turns)))
    assert lead_validator(mg, 100.0, declared, {"hk1": None, "hk2": None}, 0) == 1  # a new network: top stake


def test_role_is_declared_in_the_commitment_and_fits_the_chain():
    import pytest

    from storage.credentials import BucketAccess
    from template.chain.localnet.client import commitment_fields

    kw = dict(endpoint="https://s3.example-storage.test:8443", bucket="a" * 63, access_key_id="K" * 64,
              secret_access_key="s" * 64)
    val = BucketAccess(**kw, role="validator")
    assert BucketAccess.decode(val.encode()).role == "validator"
    assert BucketAccess.decode(BucketAccess(**{**kw, "access_key_id": "K" * 20, "secret_access_key": "s" * 40})
                               .encode()).role == "miner"
    assert '"o"' not in BucketAccess(**kw).encode()  # a miner's commitment is unchanged
    short = BucketAccess(**{**kw, "access_key_id": "K" * 20, "secret_access_key": "s" * 40}, role="validator")
    assert len(commitment_fields(short.encode())) <= 3  # 3 Raw fields x 128 bytes
    with pytest.raises(ValueError, match="role"):
        BucketAccess(**kw, role="lead")
    with pytest.raises(ValueError, match="role"):
        BucketAccess.decode(short.encode().replace('"o":"v"', '"o":"x"'))
