"""The simulation's weight copier: whom it copies and what it sets (pure logic over a Metagraph)."""

from __future__ import annotations

from bittensor_wallet import Keypair

from template.chain.base import Metagraph, TxResult
from template.sim.weightcopier import copy_once, copy_target


def metagraph(weights: dict[int, list[tuple[int, float]]], stake: list[float]) -> Metagraph:
    n = len(stake)
    return Metagraph(netuid=1, block=100, n=n, uids=list(range(n)), hotkeys=[f"hk{i}" for i in range(n)],
                     coldkeys=[f"ck{i}" for i in range(n)], stake=stake, validator_permit=[True] * n,
                     incentive=[0.0] * n, dividends=[0.0] * n, consensus=[0.0] * n, emission=[0.0] * n,
                     last_update=[0] * n, active=[True] * n, owner_hotkey="hk0", owner_coldkey="ck0",
                     weights=weights)


def test_copies_the_biggest_other_validator_with_a_visible_row() -> None:
    mg = metagraph({1: [(3, 1.0), (4, 0.5)], 2: [(3, 0.2), (4, 1.0), (5, 0.0)], 5: [(3, 1.0)]},
                   stake=[0.0, 100.0, 500.0, 0.0, 0.0, 900.0])
    assert copy_target(mg, "hk5") == (2, [3, 4], [0.2, 1.0])  # itself excluded, zeros dropped
    assert copy_target(mg, "hk2") == (5, [3], [1.0])
    assert copy_target(metagraph({}, [1.0, 2.0]), "hk1") is None  # nothing revealed yet: nothing to copy
    assert copy_target(metagraph({1: [(0, 0.0)]}, [1.0, 2.0]), "hk0") is None


class RecordingChain:
    def __init__(self, mg: Metagraph) -> None:
        self.mg, self.sets = mg, []

    def metagraph(self, netuid: int) -> Metagraph:
        return self.mg

    def set_weights(self, hotkey: Keypair, netuid: int, uids: list[int], weights: list[float],
                    version_key: int = 0) -> TxResult:
        self.sets.append((netuid, uids, weights))
        return TxResult(ok=True, block=101)


def test_copy_once_sets_the_leaders_row() -> None:
    chain = RecordingChain(metagraph({1: [(2, 1.0), (3, 0.25)]}, [0.0, 10.0, 0.0, 0.0]))
    me = Keypair.create_from_uri("//copier")
    assert copy_once(chain, me, 1) == "copied uid 1 (2 weights): ok"
    assert chain.sets == [(1, [2, 3], [1.0, 0.25])]
