"""Yuma Consensus epoch: reproduces subtensor's own epoch and math tests (vectors copied from them).

Upstream references (opentensor/subtensor, pallets/subtensor/src/tests/): `epoch.rs` / `epoch/graph_epochs.rs`
(test_10_graph, test_512_graph), `epoch.rs` (test_bonds, Yuma3 edition), `epoch/yuma_3.rs`
(test_yuma_3_* scenarios), `math.rs` (test_vec_u16_max_upscale_to_u16, test_math_weighted_median_col).
"""

from __future__ import annotations

import random

import pytest

from template.chain.localnet.yuma import (
    EpochResult,
    NeuronState,
    YumaParams,
    max_upscale_u16,
    weighted_median_col,
    yuma_epoch,
)

U16_MAX = 65535
RAO_PER_EPOCH = 1_000_000_000


class EpochSim:
    """A minimal stand-in for the chain around `yuma_epoch`: it stores weights as set_weights does
    (max-upscaled, last_update = current block) and writes the epoch's bonds and permits back."""

    def __init__(self, stakes: list[int], params: YumaParams, *, registered_at: int, tempo: int) -> None:
        self.neurons = [
            NeuronState(stake=s, last_update=registered_at, registered_at=registered_at) for s in stakes
        ]
        self.params = params
        self.block = registered_at
        self.tempo = tempo
        self.last_step_block = 0

    def set_weights(self, uid: int, uids: list[int], values: list[int]) -> None:
        self.neurons[uid].weights = list(zip(uids, max_upscale_u16(values), strict=True))
        self.neurons[uid].last_update = self.block

    def epoch(self, *, track_last_step: bool = True) -> EpochResult:
        result = yuma_epoch(
            self.neurons,
            block=self.block,
            last_step_block=self.last_step_block,
            tempo=self.tempo,
            rao_emission=RAO_PER_EPOCH,
            params=self.params,
        )
        for neuron, bonds, permit in zip(self.neurons, result.bonds, result.permits, strict=True):
            neuron.bonds = bonds
            neuron.permit = permit
        if track_last_step:
            self.last_step_block = self.block
        return result

    def bonds(self) -> list[list[int]]:
        n = len(self.neurons)
        dense = [[0] * n for _ in range(n)]
        for i, neuron in enumerate(self.neurons):
            for j, b in neuron.bonds:
                dense[i][j] = b
        return dense


# ---------------------------------------------------------------------------
# math.rs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [  # upstream math.rs::test_vec_u16_max_upscale_to_u16
        ([], []),
        ([0], [0]),
        ([0, 0], [0, 0]),
        ([1], [65535]),
        ([0, 1], [0, 65535]),
        ([65534], [65535]),
        ([65535], [65535]),
        ([65535, 65535], [65535, 65535]),
        ([0, 1, 65534], [0, 1, 65535]),
        ([0, 1, 2, 3, 4, 65533, 65535], [0, 1, 2, 3, 4, 65533, 65535]),
        # rounding half away from zero below the 32768 threshold
        ([1, 2, 3], [21845, 43690, 65535]),
        ([16383, 32767, 49149, 65535], [16383, 32767, 49149, 65535]),
        ([127] * 3, [65535] * 3),
    ],
)
def test_max_upscale_u16(values: list[int], expected: list[int]) -> None:
    assert max_upscale_u16(values) == expected


def test_weighted_median_col_upstream_vectors() -> None:
    # upstream math.rs::test_math_weighted_median_col
    assert weighted_median_col([], [], 0.5) == []
    assert weighted_median_col([0.0, 0.0], [[0.0, 0.0], [0.0, 0.0]], 0.5) == [0.0, 0.0]
    stake = [0.0, 0.75, 0.25, 0.0]
    weights = [[0.0, 0.1, 0.0], [0.0, 0.2, 0.4], [0.0, 0.3, 0.1], [0.0, 0.4, 0.5]]
    for majority, expected in [(0.24, [0.0, 0.3, 0.4]), (0.26, [0.0, 0.2, 0.4]), (0.76, [0.0, 0.2, 0.1])]:
        assert weighted_median_col(stake, weights, majority) == pytest.approx(expected, abs=1e-9)
    stake = [0.0, 0.3, 0.2, 0.5]
    weights = [[0.0, 0.1, 0.0], [0.0, 0.2, 0.4], [0.0, 0.3, 0.1], [0.0, 0.0, 0.5]]
    assert weighted_median_col(stake, weights, 0.51) == pytest.approx([0.0, 0.0, 0.4], abs=1e-9)


# ---------------------------------------------------------------------------
# Graph epochs
# ---------------------------------------------------------------------------


def test_10_graph() -> None:
    # upstream test_10_graph: 10 nodes with 1 stake each and only self-weights -> all weights masked, so the
    # whole emission follows stake: floor(1e9 * I32F32(0.1)) = 99_999_999 each.
    sim = EpochSim([1] * 10, YumaParams(yuma3=False, max_validators=100), registered_at=0, tempo=U16_MAX - 1)
    sim.block = 1
    for uid in range(10):
        sim.set_weights(uid, [uid], [U16_MAX])
    result = sim.epoch(track_last_step=False)
    assert result.consensus == [0] * 10
    assert result.incentive == [0] * 10
    assert result.dividends == [0] * 10
    assert result.emission == [99_999_999] * 10


def _distribute_nodes(num_validators: int, num_nodes: int, interleave: int) -> tuple[list[int], list[int]]:
    """upstream helper distribute_nodes: blockwise, regular or (seeded) random interleaving."""
    if interleave == 0:
        return list(range(num_validators)), list(range(num_validators, num_nodes))
    if interleave == 1:
        step = num_nodes // num_validators
        validators = [i for i in range(num_nodes) if i % step == 0]
        return validators, [i for i in range(num_nodes) if i % step != 0]
    uids = list(range(num_nodes))
    random.Random(1234).shuffle(uids)
    return uids[:num_validators], uids[num_validators:]


@pytest.mark.parametrize("interleave", [0, 1, 2])
@pytest.mark.parametrize("server_self", [False, True])
def test_512_graph(interleave: int, server_self: bool) -> None:
    # upstream test_512_graph (mock default: Yuma2, bonds_penalty 65535): 512 uids, 64 validators with
    # 328_125_000_000_000 stake each weighting every server equally; 3 manual epochs (which leave
    # LastMechansimStepBlock at 0, so every stored bond column is treated as recently registered).
    num_nodes, num_validators = 512, 64
    validators, servers = _distribute_nodes(num_validators, num_nodes, interleave)
    stakes = [328_125_000_000_000 if uid in set(validators) else 0 for uid in range(num_nodes)]
    sim = EpochSim(
        stakes, YumaParams(yuma3=False, max_validators=num_validators), registered_at=0, tempo=65534
    )
    sim.epoch(track_last_step=False)  # issue validator permits
    sim.block = 1
    for uid in validators:
        sim.set_weights(uid, servers, [U16_MAX // num_nodes] * len(servers))
    if server_self:
        for uid in servers:
            sim.set_weights(uid, [uid], [U16_MAX])
    for _ in range(3):
        result = sim.epoch(track_last_step=False)
    bonds = sim.bonds()
    validator, server = validators[0], servers[0]
    for uid in validators:
        assert (result.consensus[uid], result.incentive[uid], result.dividends[uid]) == (0, 0, 1023)
        assert result.emission[uid] == 7_812_500
        assert bonds[uid][validator] == 0
        assert bonds[uid][server] == U16_MAX
    for uid in servers:
        assert (result.consensus[uid], result.incentive[uid], result.dividends[uid]) == (146, 146, 0)
        assert result.emission[uid] == 1_116_071
        assert bonds[uid][validator] == 0
        assert bonds[uid][server] == 0


def test_bonds_yuma3() -> None:
    # upstream epoch.rs::test_bonds (Yuma3 edition, bonds stored as floor(b * 65535)); every asserted value.
    # Epochs there run once per block; here last_step_block follows the previous epoch, which keeps the
    # (older) upstream behaviour of not masking bonds to uids registered before that epoch.
    sim = EpochSim([1, 2, 3, 4, 0, 0, 0, 0], YumaParams(max_validators=8), registered_at=1, tempo=U16_MAX - 1)
    sim.epoch()
    sim.block += 1
    for uid in range(4):
        sim.set_weights(uid, [4, 5, 6, 7], [U16_MAX // 4, U16_MAX // 2, (U16_MAX // 4) * 3, U16_MAX])
    result = sim.epoch()
    assert [sim.bonds()[i][4] for i in range(4)] == [655, 655, 655, 655]
    assert result.emission == [
        49999999, 99999999, 149999999, 199999999, 49998779, 100000610, 149996337, 200004272,
    ]  # fmt: skip

    sim.set_weights(0, [0], [U16_MAX])  # self-weight only on val1
    sim.block += 1
    result = sim.epoch()
    assert result.emission[:4] == [24997137, 105556191, 158334287, 211112383]

    sim.set_weights(1, [1], [U16_MAX])  # self-weight only on val2
    sim.block += 1
    result = sim.epoch()
    assert [sim.bonds()[i][4] for i in range(4)] == [530, 1119, 1774, 1774]
    assert result.emission[:4] == [17448433, 73701431, 175221486, 233628648]

    sim.set_weights(1, [1], [U16_MAX])
    sim.block += 1
    sim.epoch()
    assert [sim.bonds()[i][7] for i in range(4)] == [1909, 4032, 9014, 9014]

    sim.set_weights(2, [7], [U16_MAX])  # val3 -> srv4 only
    sim.block += 1
    result = sim.epoch()
    assert [sim.bonds()[i][7] for i in range(4)] == [1718, 3628, 10734, 10734]
    assert result.emission == [10212913, 43141403, 191419578, 255226104, 0, 0, 0, 500000000]

    for expected in ([1546, 3265, 12282, 12282], [1391, 2938, 13675, 13675]):
        sim.block += 1
        sim.epoch()
        assert [sim.bonds()[i][7] for i in range(4)] == expected


def test_bonds_yuma2() -> None:
    # upstream epoch.rs::test_bonds (Yuma2 edition: stake-weighted bond deltas, bonds stored column
    # max-upscaled); every asserted bond and the traced emissions.
    sim = EpochSim(
        [1, 2, 3, 4, 0, 0, 0, 0], YumaParams(yuma3=False, max_validators=8), registered_at=0, tempo=65534
    )
    sim.epoch()
    sim.block += 1
    for uid in range(4):
        sim.set_weights(uid, [4, 5, 6, 7], [U16_MAX // 4, U16_MAX // 2, (U16_MAX // 4) * 3, U16_MAX])
    sim.epoch()
    assert [sim.bonds()[i][4] for i in range(4)] == [16383, 32767, 49151, 65535]
    steps = [  # (uid setting a self-weight, column checked, expected bonds, expected validator emissions)
        (0, 4, [14582, 32767, 49151, 65535], [44998351, 101110561, 151667215, 202223870]),
        (1, 4, [12603, 28321, 49151, 65535], [40496805, 90999783, 157929636, 210573773]),
        (2, 7, [12602, 28320, 49150, 65535], [99999999, 199999999, 299999999, 399999999]),
    ]
    for uid, column, expected_bonds, expected_emission in steps:
        sim.set_weights(uid, [uid], [U16_MAX])
        sim.block += 1
        result = sim.epoch()
        assert [sim.bonds()[i][column] for i in range(4)] == expected_bonds
        assert result.emission[:4] == expected_emission
    sim.set_weights(2, [7], [U16_MAX])  # val3 -> srv4 only
    for expected in ([10951, 24609, 49150, 65535], [9559, 21482, 49150, 65535], [8376, 18824, 49150, 65535]):
        sim.block += 1
        result = sim.epoch()
        assert [sim.bonds()[i][7] for i in range(4)] == expected
    assert result.emission == [29518068, 66336137, 173203134, 230942659, 0, 0, 0, 500000000]


def test_active_stake_yuma2() -> None:
    # upstream epoch.rs::test_active_stake: validators whose weights are older than the activity cutoff lose
    # their active stake (and so their dividends' bond growth).
    sim = EpochSim([1, 1, 1, 1], YumaParams(yuma3=False, max_validators=4), registered_at=0, tempo=65534)
    sim.epoch()
    sim.block = 1
    for uid in (0, 1):
        sim.set_weights(uid, [2, 3], [U16_MAX // 2] * 2)
    result = sim.epoch()
    assert result.dividends[:2] == [32767, 32767]
    assert result.emission == [250_000_000] * 4
    assert [sim.bonds()[v][2:] for v in (0, 1)] == [[U16_MAX, U16_MAX]] * 2

    sim.block = 5002  # activity cutoff 5000: uid 1's weights (block 1) are now outdated
    sim.set_weights(0, [2, 3], [U16_MAX // 2] * 2)
    result = sim.epoch()
    assert (result.dividends[0], result.emission[0]) == (36044, 274_999_999)
    assert (result.dividends[1], result.emission[1]) == (29490, 224_999_999)
    assert sim.bonds()[0][2:] == [U16_MAX, U16_MAX]
    assert sim.bonds()[1][2:] == [53619, 53619]

    sim.set_weights(1, [2, 3], [U16_MAX // 2] * 2)
    sim.block = 5003
    result = sim.epoch()
    assert (result.dividends[0], result.emission[0]) == (35716, 272_501_132)
    assert (result.dividends[1], result.emission[1]) == (29818, 227_498_866)
    assert sim.bonds()[0][2:] == [U16_MAX, U16_MAX]
    assert sim.bonds()[1][2:] == [54712, 54712]


# ---------------------------------------------------------------------------
# Yuma3 scenarios (upstream tests/epoch/yuma_3.rs)
# ---------------------------------------------------------------------------

M = U16_MAX
H = U16_MAX // 2

# Per scenario: stakes, weight rows per epoch (None = keep), columns weighted, target bonds [validator][k]
# over `bond_cols`, target dividends. Liquid alpha on with alpha in [0.1, 0.3] unless stated.
YUMA3_SCENARIOS = {
    "kappa_moves_first": dict(
        stakes=[8, 1, 1, 0, 0],
        weights={0: [[M, 0]] * 3, 1: [[0, M], [M, 0], [M, 0]], 2: [[0, M], [0, M], [M, 0]], 3: [[0, M]] * 3},
        bonds=[
            [[0.1013, 0.0000], [0.1013, 0.0000], [0.1013, 0.0000]],
            [[0.0908, 0.1013], [0.3697, 0.0000], [0.3697, 0.0000]],
            [[0.0815, 0.1924], [0.3170, 0.1013], [0.5580, 0.0000]],
            [[0.0731, 0.2742], [0.2765, 0.1924], [0.4306, 0.1013]],
            [[0.0656, 0.3478], [0.2435, 0.2742], [0.3589, 0.1924]],
            [[0.0588, 0.4139], [0.2157, 0.3478], [0.3089, 0.2742]],
        ],
        dividends=[
            [0.8000, 0.1000, 0.1000, 0.0, 0.0],
            [1.0000, 0.0000, 0.0000, 0.0, 0.0],
            [0.9382, 0.0618, 0.0000, 0.0, 0.0],
            [0.8819, 0.0773, 0.0407, 0.0, 0.0],
            [0.8564, 0.0844, 0.0592, 0.0, 0.0],
            [0.8418, 0.0884, 0.0697, 0.0, 0.0],
        ],
    ),
    "kappa_moves_second": dict(
        stakes=[8, 1, 1, 0, 0],
        weights={0: [[M, 0]] * 3, 1: [[M, 0], [0, M], [M, 0]], 2: [[0, M], [0, M], [M, 0]], 3: [[0, M]] * 3},
        bonds=[
            [[0.1013, 0.0000], [0.1013, 0.0000], [0.1013, 0.0000]],
            [[0.1924, 0.0000], [0.0908, 0.2987], [0.1924, 0.0000]],
            [[0.1715, 0.1013], [0.0815, 0.3697], [0.4336, 0.0000]],
            [[0.1531, 0.1924], [0.0731, 0.4336], [0.3608, 0.1013]],
            [[0.1369, 0.2742], [0.0656, 0.4910], [0.3103, 0.1924]],
            [[0.1225, 0.3478], [0.0588, 0.5426], [0.2712, 0.2742]],
        ],
        dividends=[
            [0.8000, 0.1000, 0.1000, 0.0, 0.0],
            [0.8446, 0.0498, 0.1056, 0.0, 0.0],
            [0.6868, 0.3132, 0.0000, 0.0, 0.0],
            [0.7421, 0.2090, 0.0489, 0.0, 0.0],
            [0.7625, 0.1706, 0.0669, 0.0, 0.0],
            [0.7730, 0.1508, 0.0762, 0.0, 0.0],
        ],
    ),
    "kappa_moves_last": dict(
        stakes=[8, 1, 1, 0, 0],
        weights={0: [[M, 0]] * 3, 1: [[M, 0], [0, M], [M, 0]], 2: [[M, 0], [0, M], [0, M]], 3: [[0, M]] * 3},
        bonds=[
            [[0.1013, 0.0000], [0.1013, 0.0000], [0.1013, 0.0000]],
            [[0.1924, 0.0000], [0.0908, 0.2987], [0.1924, 0.0000]],
            [[0.2742, 0.0000], [0.0815, 0.5081], [0.1715, 0.2987]],
            [[0.2416, 0.1013], [0.0731, 0.5580], [0.1531, 0.3697]],
            [[0.2141, 0.1924], [0.0656, 0.6028], [0.1369, 0.4336]],
            [[0.1903, 0.2742], [0.0588, 0.6430], [0.1225, 0.4910]],
        ],
        dividends=[
            [0.8000, 0.1000, 0.1000, 0.0, 0.0],
            [0.8446, 0.0498, 0.1056, 0.0, 0.0],
            [0.8966, 0.0333, 0.0701, 0.0, 0.0],
            [0.4663, 0.3210, 0.2127, 0.0, 0.0],
            [0.5976, 0.2340, 0.1683, 0.0, 0.0],
            [0.6592, 0.1932, 0.1475, 0.0, 0.0],
        ],
    ),
    "one_epoch_switch": dict(
        stakes=[33, 33, 34, 0, 0],
        weights={e: ([[M, 0], [M, 0], [0, M]] if e == 2 else [[M, 0]] * 3) for e in range(6)},
        bonds=[
            [[0.1013, 0.0000], [0.1013, 0.0000], [0.1013, 0.0000]],
            [[0.1924, 0.0000], [0.1924, 0.0000], [0.1924, 0.0000]],
            [[0.2742, 0.0000], [0.2742, 0.0000], [0.1715, 0.2987]],
            [[0.3478, 0.0000], [0.3478, 0.0000], [0.2554, 0.2618]],
            [[0.4139, 0.0000], [0.4139, 0.0000], [0.3309, 0.2312]],
            [[0.4733, 0.0000], [0.4733, 0.0000], [0.3987, 0.2051]],
        ],
        dividends=[
            [0.3300, 0.3300, 0.3400, 0.0, 0.0],
            [0.3300, 0.3300, 0.3400, 0.0, 0.0],
            [0.3782, 0.3782, 0.2436, 0.0, 0.0],
            [0.3628, 0.3628, 0.2745, 0.0, 0.0],
            [0.3541, 0.3541, 0.2917, 0.0, 0.0],
            [0.3487, 0.3487, 0.3026, 0.0, 0.0],
        ],
    ),
    "liquid_alpha_disabled": dict(
        stakes=[33, 33, 34, 0, 0],
        liquid_alpha=False,
        weights={e: ([[M, 0], [M, 0], [0, M]] if e == 2 else [[M, 0]] * 3) for e in range(6)},
        # Upstream lists these rows over uids 2..4 (a validator column first); we check uids 3 and 4.
        bonds=[
            [[0.0250, 0.0000], [0.0250, 0.0000], [0.0250, 0.0000]],
            [[0.0494, 0.0000], [0.0494, 0.0000], [0.0494, 0.0000]],
            [[0.0731, 0.0000], [0.0731, 0.0000], [0.0481, 0.0250]],
            [[0.0963, 0.0000], [0.0963, 0.0000], [0.0719, 0.0244]],
            [[0.1189, 0.0000], [0.1189, 0.0000], [0.0951, 0.0238]],
            [[0.1409, 0.0000], [0.1409, 0.0000], [0.1178, 0.0232]],
        ],
        dividends=[
            [0.3300, 0.3300, 0.3400, 0.0, 0.0],
            [0.3300, 0.3300, 0.3400, 0.0, 0.0],
            [0.3734, 0.3734, 0.2532, 0.0, 0.0],
            [0.3611, 0.3611, 0.2779, 0.0, 0.0],
            [0.3541, 0.3541, 0.2919, 0.0, 0.0],
            [0.3495, 0.3495, 0.3009, 0.0, 0.0],
        ],
    ),
    "stable_miner": dict(
        stakes=[8, 1, 1, 0, 0, 0],
        weights={
            0: [[H, 0, H]] * 3,
            1: [[H, 0, H], [0, H, H], [H, 0, H]],
            2: [[0, H, H], [0, H, H], [H, 0, H]],
            3: [[0, H, H]] * 3,
        },
        bonds=[
            [[0.0507, 0.0000, 0.0507], [0.0507, 0.0000, 0.0507], [0.0507, 0.0000, 0.0507]],
            [[0.0962, 0.0000, 0.0962], [0.0455, 0.1000, 0.0962], [0.0962, 0.0000, 0.0962]],
            [[0.0863, 0.0507, 0.1371], [0.0408, 0.1405, 0.1371], [0.1770, 0.0000, 0.1371]],
            [[0.0774, 0.0962, 0.1739], [0.0367, 0.1770, 0.1739], [0.1579, 0.0507, 0.1739]],
            [[0.0694, 0.1371, 0.2069], [0.0329, 0.2097, 0.2069], [0.1411, 0.0962, 0.2069]],
            [[0.0623, 0.1739, 0.2366], [0.0296, 0.2391, 0.2366], [0.1263, 0.1371, 0.2366]],
        ],
        dividends=[
            [0.8000, 0.1000, 0.1000, 0.0, 0.0, 0.0],
            [0.8226, 0.0745, 0.1028, 0.0, 0.0, 0.0],
            [0.7750, 0.1685, 0.0565, 0.0, 0.0, 0.0],
            [0.7864, 0.1372, 0.0764, 0.0, 0.0, 0.0],
            [0.7912, 0.1241, 0.0847, 0.0, 0.0, 0.0],
            [0.7937, 0.1173, 0.0890, 0.0, 0.0, 0.0],
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(YUMA3_SCENARIOS))
def test_yuma_3_scenario(name: str) -> None:
    # upstream setup_yuma_3_scenario: tempo 1, bonds_penalty 0, bonds_moving_average 975_000, kappa 32767,
    # liquid alpha on with set_alpha_values_32(0.1, 0.3) = (6553, 19660), steepness 1000, 3 validators.
    scenario = YUMA3_SCENARIOS[name]
    params = YumaParams(
        kappa=U16_MAX // 2,
        bonds_penalty=0,
        bonds_moving_average=975_000,
        yuma3=True,
        liquid_alpha=scenario.get("liquid_alpha", True),
        alpha_low=6553,
        alpha_high=19660,
        alpha_sigmoid_steepness=1000,
        max_validators=3,
    )
    stakes = scenario["stakes"]
    servers = [uid for uid, s in enumerate(stakes) if s == 0]
    sim = EpochSim(stakes, params, registered_at=1, tempo=1)
    sim.block += 1
    sim.epoch()  # issue validator permits
    for epoch, (target_bonds, target_dividends) in enumerate(
        zip(scenario["bonds"], scenario["dividends"], strict=True)
    ):
        rows = scenario["weights"].get(epoch)
        if rows is not None:
            for uid, row in enumerate(rows):
                sim.set_weights(uid, servers, row)
        sim.block += 1
        result = sim.epoch()
        bonds = sim.bonds()
        for validator, row in enumerate(target_bonds):
            got = [bonds[validator][uid] / U16_MAX for uid in servers]
            assert got == pytest.approx(row, abs=1e-3), (epoch, validator)
        got_dividends = [d / U16_MAX for d in result.dividends]
        assert got_dividends == pytest.approx(target_dividends, abs=1e-3), epoch


def test_yuma_3_bonds_reset() -> None:
    # upstream yuma_3.rs::test_yuma_3_bonds_reset ("big vali moves late, then late"): at epoch 20 the bonds
    # column of uid 3 is reset (do_reset_bonds, done here by dropping that column from every stored row).
    params = YumaParams(
        kappa=U16_MAX // 2,
        bonds_penalty=0,
        bonds_moving_average=975_000,
        liquid_alpha=True,
        alpha_low=6553,
        alpha_high=19660,
        max_validators=3,
    )
    targets = {  # epoch: (bonds [validator][uid 3, uid 4], dividends of the 3 validators)
        0: ([[0.1013, 0.0], [0.1013, 0.0], [0.1013, 0.0]], [0.8000, 0.1000, 0.1000]),
        1: ([[0.1924, 0.0], [0.0908, 0.2987], [0.0908, 0.2987]], [0.8944, 0.0528, 0.0528]),
        2: ([[0.1715, 0.1013], [0.0815, 0.3697], [0.0815, 0.3697]], [0.5230, 0.2385, 0.2385]),
        19: ([[0.0269, 0.8539], [0.0131, 0.8975], [0.0131, 0.8975]], [0.7919, 0.1040, 0.1040]),
        20: ([[0.0000, 0.8687], [0.0000, 0.9079], [0.0000, 0.9079]], [0.7928, 0.1036, 0.1036]),
        21: ([[0.0000, 0.8820], [0.2987, 0.6386], [0.2987, 0.6386]], [0.8467, 0.0766, 0.0766]),
        40: ([[0.8687, 0.0578], [0.9079, 0.0523], [0.9079, 0.0523]], [0.7928, 0.1036, 0.1036]),
    }
    sim = EpochSim([8, 1, 1, 0, 0], params, registered_at=1, tempo=1)
    sim.block += 1
    sim.epoch()
    for epoch in range(41):
        if epoch == 0:
            rows = [[M, 0]] * 3
        elif epoch == 1:
            rows = [[M, 0], [0, M], [0, M]]
        elif epoch <= 20:
            rows = [[0, M]] * 3
        elif epoch == 21:
            rows = [[0, M], [M, 0], [M, 0]]
        else:
            rows = [[M, 0]] * 3
        for uid, row in enumerate(rows):
            sim.set_weights(uid, [3, 4], row)
        if epoch == 20:
            for neuron in sim.neurons:
                neuron.bonds = [(j, b) for j, b in neuron.bonds if j != 3]
        sim.block += 1
        result = sim.epoch()
        if epoch in targets:
            target_bonds, target_dividends = targets[epoch]
            bonds = sim.bonds()
            for validator, row in enumerate(target_bonds):
                assert [bonds[validator][3] / U16_MAX, bonds[validator][4] / U16_MAX] == pytest.approx(
                    row, abs=1e-3
                )
            assert [d / U16_MAX for d in result.dividends[:3]] == pytest.approx(target_dividends, abs=1e-3)
