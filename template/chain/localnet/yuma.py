"""Yuma Consensus epoch, computed the way subtensor computes it (sparse `epoch_mechanism`, one mechanism).

Subtensor works in I32F32 fixed point (signed, 32 fractional bits). Here every fixed-point value is a plain
integer holding ``value * 2**32`` ("raw"), and the matrix steps run on numpy int64 arrays of raw values, so
every quantity on the chain's u16 / rao outputs comes out bit-identical to the Rust code:

* multiplication truncates toward minus infinity: ``(a * b) >> 32``;
* division truncates: ``(a << 32) // b`` for the non-negative operands the epoch uses; division by 0 gives 0;
* conversions to u16 / u64 floor; stake is normalised in I64F64 and then truncated to I32F32.

The only approximation is the liquid-alpha sigmoid, whose ``exp`` is a float here (the chain uses a fixed-point
series); it changes bonds by at most a few ulps of I32F32.

Units: stake is an integer amount (rao of alpha, as the caller holds it); weights and Yuma2 bonds are the u16
values stored on chain; Yuma3 bonds are stored as floor(bond * 65535) u16 proportions; emissions are rao.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from template.chain.localnet.fixed_point import (
    FRAC_BITS,
    ONE,
    U16_MAX,
    Mask,
    Matrix,
    col_normalize,
    float_to_fx,
    fx_div,
    fx_from_u16_proportion,
    fx_mul,
    fx_round_to_int,
    fx_to_float,
    fx_to_u16_proportion,
    normalize_fx,
    np_div,
    np_mul,
)

# ---------------------------------------------------------------------------
# Public math helpers (also used by set_weights and tests)
# ---------------------------------------------------------------------------


def max_upscale_u16(values: list[int]) -> list[int]:
    """Row normalisation used by set_weights (subtensor's vec_u16_max_upscale_to_u16).

    The largest value becomes 65535 and the others are scaled by the same factor, rounded half away from zero,
    through I32F32 arithmetic exactly as the chain does it (so results match the chain to the unit).
    """
    if not values:
        return []
    raw = [v << FRAC_BITS for v in values]
    max_raw = max(raw)
    u16_max_raw = U16_MAX << FRAC_BITS
    if max_raw == 0:
        return [max(0, min(U16_MAX, fx_mul(r, u16_max_raw) >> FRAC_BITS)) for r in raw]
    if max_raw > (32768 << FRAC_BITS):
        ratio = fx_div(u16_max_raw, max_raw)
        return [max(0, min(U16_MAX, fx_round_to_int(fx_mul(r, ratio)))) for r in raw]
    return [max(0, min(U16_MAX, fx_round_to_int(fx_div(fx_mul(r, u16_max_raw), max_raw)))) for r in raw]


def _weighted_median_fx(
    stake: list[int], score: list[int], minority: int, partition_lo: int, partition_hi: int
) -> int:
    """Stake-weighted kappa-quantile by mid-pivot quickselect (subtensor's `weighted_median`), raw I32F32."""
    idx = list(range(len(score)))
    while True:
        num = len(idx)
        if num == 0:
            return 0
        if num == 1:
            return score[idx[0]]
        pivot = score[idx[num // 2]]
        lo_stake = 0
        hi_stake = 0
        lower: list[int] = []
        upper: list[int] = []
        for k in idx:
            s = score[k]
            if s == pivot:
                continue
            if s < pivot:
                lo_stake += stake[k]
                lower.append(k)
            else:
                hi_stake += stake[k]
                upper.append(k)
        if partition_lo + lo_stake <= minority < partition_hi - hi_stake:
            return pivot
        if minority < partition_lo + lo_stake and lower:
            idx, partition_hi = lower, partition_lo + lo_stake
        elif partition_hi - hi_stake <= minority and upper:
            idx, partition_lo = upper, partition_hi - hi_stake
        else:
            return pivot


def _weighted_median_col_fx(
    active_stake: list[int], weights: Matrix, rows: list[int], majority: int
) -> list[int]:
    """weighted_median_col_sparse: per column over uids with positive stake; missing weights count as 0.

    weights holds the rows of `rows` only; other uids have empty rows (all scores 0).
    """
    num_cols = weights.shape[1]
    stake_rows = [i for i, s in enumerate(active_stake) if s > 0]
    if not stake_rows:
        return [0] * num_cols
    use_stake = normalize_fx([active_stake[i] for i in stake_rows])
    stake_sum = sum(use_stake)
    minority = stake_sum - majority
    row_index = {uid: k for k, uid in enumerate(rows)}
    scores = np.zeros((len(stake_rows), num_cols), dtype=np.int64)
    for k, uid in enumerate(stake_rows):
        if uid in row_index:
            scores[k] = weights[row_index[uid]]
    return [_weighted_median_fx(use_stake, col, minority, 0, stake_sum) for col in scores.T.tolist()]


def weighted_median_col(stake: list[float], weights: list[list[float]], majority: float) -> list[float]:
    """Column-wise stake-weighted median (subtensor's dense `weighted_median_col`), float in / float out.

    Inputs are converted to I32F32; per column only rows with positive stake take part and their stake is
    renormalised. Returns, per column, the largest score c such that the stake at or above c exceeds
    `majority` (ties resolved by the chain's deterministic mid-pivot quickselect).
    """
    stake_fx = [float_to_fx(s) for s in stake]
    num_cols = len(weights[0]) if weights else 0
    zero = 0
    median: list[float] = [0.0] * num_cols
    for c in range(num_cols):
        use_stake = [stake_fx[r] for r in range(len(stake)) if stake_fx[r] > zero]
        use_score = [float_to_fx(weights[r][c]) for r in range(len(stake)) if stake_fx[r] > zero]
        if not use_stake:
            continue
        use_stake = normalize_fx(use_stake)
        stake_sum = sum(use_stake)
        minority = stake_sum - float_to_fx(majority)
        median[c] = fx_to_float(_weighted_median_fx(use_stake, use_score, minority, 0, stake_sum))
    return median


def is_topk_nonzero(values: list[int], k: int) -> list[bool]:
    """Top-k of nonzero entries; ascending stable sort, so on ties the lower uid loses."""
    result = [v != 0 for v in values]
    n = len(values)
    if n < k:
        return result
    order = sorted(range(n), key=lambda i: values[i])
    for i in order[: n - k]:
        result[i] = False
    return result


# ---------------------------------------------------------------------------
# Epoch
# ---------------------------------------------------------------------------


@dataclass
class YumaParams:
    """Subnet hyperparameters the epoch reads, in chain units.

    kappa, bonds_penalty, alpha_low, alpha_high: u16 proportions (x / 65535).
    bonds_moving_average: per-million (900_000 -> EMA alpha 0.1). activity_cutoff: blocks.
    alpha_sigmoid_steepness: i16 (chain default 1000 -> sigmoid slope 10).
    """

    kappa: int = 32767
    bonds_penalty: int = 65535
    bonds_moving_average: int = 900_000
    yuma3: bool = True
    liquid_alpha: bool = False
    alpha_low: int = 45875
    alpha_high: int = 58982
    alpha_sigmoid_steepness: int = 1000
    max_validators: int = 64
    activity_cutoff: int = 5000


@dataclass
class NeuronState:
    """One uid's chain state as the epoch reads it.

    stake: the neuron hotkey's total stake on the subnet as an integer (rao); compared with stake_threshold.
    last_update: block of the last weight set. registered_at: block of the latest registration.
    permit: validator permit from the previous epoch.
    weights: sparse row [(uid, u16 weight)] as stored (row max-upscaled by set_weights).
    bonds: sparse row [(uid, u16)] as stored: Yuma3 floor(bond*65535); Yuma2 column max-upscaled u16.
    """

    stake: int
    last_update: int
    registered_at: int
    permit: bool = False
    weights: list[tuple[int, int]] = field(default_factory=list)
    bonds: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class EpochResult:
    """Epoch outputs per uid. u16 proportions: incentive, dividends, consensus, validator_trust, stake_weight.

    server_emission / validator_emission / emission: rao. bonds: the new stored bond rows (empty for uids
    without a new permit). permits: new validator permits. active: activity mask.
    """

    incentive: list[int]
    dividends: list[int]
    consensus: list[int]
    validator_trust: list[int]
    stake_weight: list[int]
    server_emission: list[int]
    validator_emission: list[int]
    emission: list[int]
    bonds: list[list[tuple[int, int]]]
    permits: list[bool]
    active: list[bool]


def _empty_result() -> EpochResult:
    return EpochResult([], [], [], [], [], [], [], [], [], [], [])


def _stake_weights(neurons: list[NeuronState], owner_uid: int | None, stake_threshold: int) -> list[int]:
    """Filtered stake normalised in I64F64 then truncated to I32F32: floor(s * 2^32 / sum)."""
    filtered = [
        0 if (uid != owner_uid and nrn.stake < stake_threshold) else nrn.stake
        for uid, nrn in enumerate(neurons)
    ]
    total = sum(filtered)
    if total == 0:
        return [0] * len(neurons)
    return [(s << FRAC_BITS) // total for s in filtered]


def _rows_with_entries(neurons: list[NeuronState], permits: list[bool]) -> list[int]:
    """Uids whose weight or bond row can be non-empty; the matrices below only hold these rows."""
    return [i for i, nrn in enumerate(neurons) if (permits[i] and nrn.weights) or nrn.bonds]


def _masked_weights(
    neurons: list[NeuronState],
    rows: list[int],
    permits: list[bool],
    owner_uid: int | None,
    commit_blocks: list[int | None] | None,
) -> tuple[Matrix, Mask]:
    """Stored weights of `rows` after the chain's masks, row-normalised: raw I32F32 values and presence."""
    n = len(neurons)
    weights = np.zeros((len(rows), n), dtype=np.int64)
    present = np.zeros((len(rows), n), dtype=bool)
    registered = np.array([nrn.registered_at for nrn in neurons], dtype=np.int64)
    for k, i in enumerate(rows):
        nrn = neurons[i]
        if not permits[i] or not nrn.weights:
            continue
        pairs = np.asarray(nrn.weights, dtype=np.int64).reshape(-1, 2)
        cols, values = pairs[:, 0], pairs[:, 1]
        keep = (cols < n) & ((cols != i) | (i == owner_uid))
        reg_j = registered[np.where(keep, cols, 0)]
        # A weight set no later than j's registration refers to the previous holder of uid j.
        keep &= nrn.last_update > reg_j
        commit = commit_blocks[i] if commit_blocks is not None else None
        if commit is not None:
            keep &= commit >= reg_j
        cols, values = cols[keep], values[keep]
        row_sum = int(values.sum())
        # Raw weights are integers * 2^32, so the fixed-point division reduces to this exact form.
        weights[k, cols] = (values << FRAC_BITS) // row_sum if row_sum > 0 else values << FRAC_BITS
        present[k, cols] = True
    return weights, present


def _bonds_matrix(
    neurons: list[NeuronState], rows: list[int], yuma3: bool, masked_cols: np.ndarray
) -> tuple[Matrix, Mask]:
    """Stored bonds of `rows` (Yuma3: u16/65535 as fixed; Yuma2: the u16 integer), recent columns dropped."""
    n = len(neurons)
    bonds = np.zeros((len(rows), n), dtype=np.int64)
    present = np.zeros((len(rows), n), dtype=bool)
    for k, i in enumerate(rows):
        if not neurons[i].bonds:
            continue
        pairs = np.asarray(neurons[i].bonds, dtype=np.int64).reshape(-1, 2)
        cols, values = pairs[:, 0], pairs[:, 1]
        keep = cols < n
        keep[keep] = ~masked_cols[cols[keep]]
        cols, values = cols[keep], values[keep]
        bonds[k, cols] = (values << FRAC_BITS) // U16_MAX if yuma3 else values
        present[k, cols] = True
    return bonds, present


def _liquid_alphas(params: YumaParams, weights: Matrix, bonds: Matrix, consensus: list[int]) -> Matrix:
    """Per-entry EMA alpha: alpha_low + sigmoid(steepness * (diff - 1/2)) * (alpha_high - alpha_low), clamped."""
    low = fx_from_u16_proportion(params.alpha_low)
    high = fx_from_u16_proportion(params.alpha_high)
    cons = np.asarray(consensus, dtype=np.int64)[None, :]
    diff_buy = np.clip(weights - cons, 0, ONE)
    diff_sell = np.clip(bonds - weights, 0, ONE)
    combined = np.where(weights >= bonds, diff_buy, diff_sell)
    slope = fx_div(params.alpha_sigmoid_steepness << FRAC_BITS, -100 << FRAC_BITS)
    exponent = np_mul(combined - (ONE >> 1), slope)
    # exp_safe clamps its input to [-20, 20] so the result always fits I32F32.
    exponent = np.clip(exponent, -20 * ONE, 20 * ONE).astype(np.float64) / ONE
    exp_raw = np.floor(np.exp(exponent) * ONE).astype(np.int64)
    # The denominator can exceed the int64-safe range of np_div, so divide with Python ints.
    sigmoid = np.array(
        [(ONE << FRAC_BITS) // (ONE + e) for e in exp_raw.ravel().tolist()], dtype=np.int64
    ).reshape(exp_raw.shape)
    alpha = low + np_mul(sigmoid, high - low)
    return np.clip(alpha, low, high)


def _yuma3_bonds(
    params: YumaParams,
    weights_for_bonds: Matrix,
    wfb_present: Mask,
    bonds: Matrix,
    bonds_present: Mask,
    consensus: list[int],
) -> Matrix:
    """EMA of bonds toward the bond weights; returns raw values, zero meaning 'no entry'."""
    if params.liquid_alpha and any(c != 0 for c in consensus):
        alphas = _liquid_alphas(params, weights_for_bonds, bonds, consensus)
        decayed = np.where(bonds_present, np_mul(ONE - alphas, bonds), 0)
        inc = np.maximum(np_mul(alphas, weights_for_bonds), 0)
        # Only entries present in the new row survive: bonds to unweighted uids are reset.
        ema = np.where(wfb_present, np.minimum(decayed + inc, ONE), 0)
    else:
        alpha = ONE - (((params.bonds_moving_average << 64) // 1_000_000) >> FRAC_BITS)
        ema = np_mul(alpha, weights_for_bonds) + np_mul(ONE - alpha, bonds)
    return np.where(ema > 0, ema, 0)


def yuma_epoch(
    neurons: list[NeuronState],
    *,
    block: int,
    last_step_block: int,
    tempo: int,
    rao_emission: int,
    params: YumaParams,
    owner_uid: int | None = None,
    stake_threshold: int = 0,
    commit_blocks: list[int | None] | None = None,
) -> EpochResult:
    """Run one Yuma Consensus epoch over the subnet's neurons (index = uid).

    Args:
        neurons: chain state per uid.
        block: current block. last_step_block: block of the previous epoch (LastMechansimStepBlock; 0 if none).
        tempo: subnet tempo in blocks. rao_emission: alpha (rao) to split this epoch.
        params: hyperparameters. owner_uid: uid of the subnet owner hotkey if registered (keeps its permit and
            self-weight, exempt from the stake threshold). stake_threshold: min stake (rao) to count.
        commit_blocks: optional per uid earliest live commit-reveal commit block (None = no commit); when
            given, weights to uids registered after that commit are dropped, as with commit-reveal on.
    Returns:
        EpochResult with u16 outputs, rao emissions, new bonds rows (empty for uids without a new permit) and
        the new permits.
    """
    n = len(neurons)
    if n == 0:
        return _empty_result()
    has_owner = owner_uid is not None and 0 <= owner_uid < n

    active = [not (nrn.last_update + params.activity_cutoff < block) for nrn in neurons]
    stake = _stake_weights(neurons, owner_uid, stake_threshold)
    permits = [nrn.permit for nrn in neurons]
    new_permits = is_topk_nonzero(stake, params.max_validators)
    if has_owner:
        permits[owner_uid] = True
        new_permits[owner_uid] = True
    active_stake = normalize_fx([s if (active[i] and permits[i]) else 0 for i, s in enumerate(stake)])

    rows = _rows_with_entries(neurons, permits)
    weights, w_present = _masked_weights(neurons, rows, permits, owner_uid, commit_blocks)
    consensus = _weighted_median_col_fx(active_stake, weights, rows, fx_from_u16_proportion(params.kappa))
    cons = np.asarray(consensus, dtype=np.int64)[None, :]
    # Entries above a zero consensus are dropped; the rest are clipped to the consensus.
    c_present = w_present & ~((weights > cons) & (cons == 0))
    clipped = np.where(c_present, np.minimum(weights, cons), 0)
    validator_trust = [0] * n
    for k, v in zip(rows, clipped.sum(axis=1).tolist(), strict=True):
        validator_trust[k] = v

    a_stake = np.asarray([active_stake[i] for i in rows], dtype=np.int64).reshape(-1, 1)
    incentive = normalize_fx(np_mul(a_stake, clipped).sum(axis=0).tolist())

    last_tempo = max(0, block - tempo) if last_step_block == 0 else last_step_block + 1
    masked_cols = np.array([last_tempo <= nrn.registered_at for nrn in neurons], dtype=bool)
    bonds, b_present = _bonds_matrix(neurons, rows, params.yuma3, masked_cols)
    per_row_dividend, stored = _bonds_and_dividends(
        params, weights, w_present, clipped, c_present, bonds, b_present, consensus, incentive, a_stake
    )
    dividends = [0] * n
    for k, v in zip(rows, per_row_dividend, strict=True):
        dividends[k] = v
    if params.yuma3:
        dividends = [fx_mul(d, s) for d, s in zip(dividends, active_stake, strict=True)]
    dividends = normalize_fx(dividends)

    bonds_rows: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    stored_u16 = np.minimum((stored * U16_MAX) >> FRAC_BITS, U16_MAX)
    for k, i in enumerate(rows):
        if new_permits[i]:
            cols = np.nonzero(stored[k] > 0)[0]
            bonds_rows[i] = list(zip(cols.tolist(), stored_u16[k, cols].tolist(), strict=True))

    return _emission_result(
        incentive=incentive,
        dividends=dividends,
        stake=stake,
        active_stake=active_stake,
        consensus=consensus,
        validator_trust=validator_trust,
        bonds_rows=bonds_rows,
        new_permits=new_permits,
        active=active,
        rao_emission=rao_emission,
    )


def _bonds_and_dividends(
    params: YumaParams,
    weights: Matrix,
    w_present: Mask,
    clipped: Matrix,
    c_present: Mask,
    bonds: Matrix,
    b_present: Mask,
    consensus: list[int],
    incentive: list[int],
    a_stake: np.ndarray,
) -> tuple[list[int], Matrix]:
    """New bonds and each row's unnormalised dividend term; returns (per-row terms, bonds to store as raw).

    Yuma3 terms still need the active-stake product; Yuma2 terms are final before normalisation.
    """
    penalty = fx_from_u16_proportion(params.bonds_penalty)
    if penalty == 0:
        wfb, wfb_present = weights, w_present
    elif penalty == ONE:
        wfb, wfb_present = clipped, c_present
    else:
        wfb = weights + np_mul(penalty, clipped - weights)
        wfb_present = wfb > 0
        wfb = np.where(wfb_present, wfb, 0)
    inc_vec = np.asarray(incentive, dtype=np.int64)[None, :]

    if params.yuma3:
        ema = _yuma3_bonds(params, wfb, wfb_present, bonds, b_present, consensus)
        per_row = np_mul(col_normalize(ema), inc_vec).sum(axis=1).tolist()
        return per_row, ema

    # Yuma2: stored u16 integers column-normalised (integer sums keep the division exact).
    b_sum = bonds.sum(axis=0)
    bonds_norm = np.where(
        b_sum[None, :] == 0, bonds << FRAC_BITS, (bonds << FRAC_BITS) // np.maximum(b_sum, 1)
    )
    delta = col_normalize(np.where(wfb_present, np_mul(wfb, a_stake), 0))
    alpha = ONE - (((params.bonds_moving_average << 64) // 1_000_000) >> FRAC_BITS)
    ema = np_mul(alpha, delta) + np_mul(ONE - alpha, bonds_norm)
    ema = col_normalize(np.where(ema > 0, ema, 0))
    per_row = np_mul(ema, inc_vec).sum(axis=1).tolist()
    # Stored column max-upscaled.
    col_max = ema.max(axis=0) if ema.shape[0] else np.zeros(ema.shape[1], dtype=np.int64)
    stored = np.where(col_max[None, :] == 0, ema, np_div(ema, col_max[None, :]))
    return per_row, stored


def _emission_result(
    *,
    incentive: list[int],
    dividends: list[int],
    stake: list[int],
    active_stake: list[int],
    consensus: list[int],
    validator_trust: list[int],
    bonds_rows: list[list[tuple[int, int]]],
    new_permits: list[bool],
    active: list[bool],
    rao_emission: int,
) -> EpochResult:
    """Split rao_emission into server (incentive) and validator (dividend) parts and build the outputs."""
    combined = [i + d for i, d in zip(incentive, dividends, strict=True)]
    emission_sum = sum(combined)
    server_share = [fx_div(i, emission_sum) for i in incentive] if emission_sum else list(incentive)
    validator_share = [fx_div(d, emission_sum) for d in dividends] if emission_sum else list(dividends)
    combined_share = normalize_fx(combined)
    if emission_sum == 0:
        # No usable weights: emission follows (active) stake.
        fallback = stake if sum(active_stake) == 0 else active_stake
        validator_share = list(fallback)
        combined_share = list(fallback)

    def to_rao(shares: list[int]) -> list[int]:
        return [max(0, (s * rao_emission) >> FRAC_BITS) for s in shares]

    return EpochResult(
        incentive=[fx_to_u16_proportion(x) for x in incentive],
        dividends=[fx_to_u16_proportion(x) for x in dividends],
        consensus=[fx_to_u16_proportion(x) for x in consensus],
        validator_trust=[fx_to_u16_proportion(x) for x in validator_trust],
        stake_weight=[fx_to_u16_proportion(x) for x in stake],
        server_emission=to_rao(server_share),
        validator_emission=to_rao(validator_share),
        emission=to_rao(combined_share),
        bonds=bonds_rows,
        permits=new_permits,
        active=active,
    )
