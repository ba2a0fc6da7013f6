"""Who leads and who mines, read off the metagraph (template/node/neuron.py)."""

from __future__ import annotations

from template.chain.base import Metagraph
from template.node.neuron import lead_validator, miner_uids, validator_uids


def metagraph(stake: list[float], permit: list[bool]) -> Metagraph:
    n = len(stake)
    return Metagraph(netuid=1, block=10, n=n, uids=list(range(n)), hotkeys=[f"hk{u}" for u in range(n)],
                     coldkeys=[f"ck{u}" for u in range(n)], stake=stake, validator_permit=permit,
                     incentive=[0.0] * n, dividends=[0.0] * n, consensus=[0.0] * n, emission=[0.0] * n,
                     last_update=[0] * n, active=[True] * n, owner_hotkey="hk0", owner_coldkey="ck0")


def test_lead_is_highest_permitted_stake_lower_uid_on_ties():
    mg = metagraph([0.0, 500.0, 900.0, 900.0, 0.0], [True, True, False, True, False])
    assert validator_uids(mg, 100.0) == [1, 3]
    assert lead_validator(mg, 100.0) == 3
    assert miner_uids(mg, 100.0) == [2, 4]
    mg = metagraph([0.0, 900.0, 0.0, 900.0], [True, True, False, True])
    assert lead_validator(mg, 100.0) == 1


def test_before_the_first_epoch_staked_uids_lead_but_not_the_owner():
    mg = metagraph([5000.0, 2000.0, 0.0, 1900.0], [False] * 4)
    assert validator_uids(mg, 100.0) == [1, 3]
    assert lead_validator(mg, 100.0) == 1
    assert miner_uids(mg, 100.0) == [2]


def test_miners_with_permits_and_a_little_stake_stay_miners():
    mg = metagraph([0.0, 2000.0, 12.0, 40.0], [True] * 4)
    assert validator_uids(mg, 100.0) == [1]
    assert miner_uids(mg, 100.0) == [2, 3]


def test_no_stake_no_lead():
    mg = metagraph([0.0, 0.0, 0.0], [True, False, False])
    assert lead_validator(mg, 100.0) is None
    assert miner_uids(mg, 100.0) == [1, 2]
