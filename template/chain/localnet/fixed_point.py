"""I32F32 fixed point as subtensor's epoch computes it, on Python ints and numpy int64 arrays.

A fixed-point value is a plain integer holding ``value * 2**32`` ("raw"). Multiplication truncates
toward minus infinity (``(a * b) >> 32``), division truncates (``(a << 32) // b`` for the
non-negative operands the epoch uses; by 0 gives 0), conversions to u16 / u64 floor. The numpy
forms split operands so int64 never overflows; `template/chain/localnet/yuma.py` uses both.
"""

from __future__ import annotations

import numpy as np

FRAC_BITS = 32
ONE = 1 << FRAC_BITS  # I32F32 raw value of 1.0
U16_MAX = 65535
I32F32_MAX = (1 << 63) - 1
I32F32_MIN = -(1 << 63)

Matrix = np.ndarray  # (rows, n) int64 raw I32F32 values; rows = uids that can hold entries
Mask = np.ndarray  # (rows, n) bool: entry present in the chain's sparse row


# ---------------------------------------------------------------------------
# Scalar fixed-point helpers (Python ints, raw I32F32)
# ---------------------------------------------------------------------------


def _sat(raw: int) -> int:
    return max(I32F32_MIN, min(I32F32_MAX, raw))


def fx_mul(a: int, b: int) -> int:
    """I32F32 saturating multiply of two raw values."""
    return _sat((a * b) >> FRAC_BITS)


def fx_div(a: int, b: int) -> int:
    """I32F32 safe divide (0 when b == 0) of two raw values; truncates toward zero."""
    if b == 0:
        return 0
    num = a << FRAC_BITS
    q = abs(num) // abs(b)
    return _sat(q if (num >= 0) == (b > 0) else -q)


def fx_from_u16_proportion(x: int) -> int:
    """I32F32(x) / I32F32(65535): the chain's u16 proportion -> fixed conversion."""
    return (x << FRAC_BITS) // U16_MAX


def fx_to_u16_proportion(raw: int) -> int:
    """fixed_proportion_to_u16: floor(x * 65535), saturated to the u16 range."""
    return max(0, min(U16_MAX, (raw * U16_MAX) >> FRAC_BITS))


def fx_round_to_int(raw: int) -> int:
    """Round half away from zero, as I32F32::round() then to_num."""
    if raw >= 0:
        return (raw + (ONE >> 1)) >> FRAC_BITS
    return -((-raw + (ONE >> 1)) >> FRAC_BITS)


def normalize_fx(values: list[int]) -> list[int]:
    """inplace_normalize: divide by the sum unless the sum is 0."""
    total = sum(values)
    if total == 0:
        return list(values)
    return [fx_div(v, total) for v in values]


def float_to_fx(x: float) -> int:
    """A float as I32F32 raw (round to nearest, like substrate_fixed from_num)."""
    return round(x * ONE)


def fx_to_float(raw: int) -> float:
    return raw / ONE


# ---------------------------------------------------------------------------
# Vectorised fixed-point helpers (numpy int64 raw values)
# ---------------------------------------------------------------------------


def np_mul(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Elementwise (a * b) >> 32 without overflowing int64.

    Splits a = ah * 2^16 + al (al in [0, 2^16)); then floor(a*b / 2^32) = (ah*b + ((al*b) >> 16)) >> 16.
    Exact for |a| < 2^47, |b| < 2^33 (all proportions here are <= 1.0 = 2^32).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ah = a >> 16
    al = a & 0xFFFF
    return (ah * b + ((al * b) >> 16)) >> 16


def np_div(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Elementwise floor((a << 32) / b) for a >= 0, b >= 0; 0 where b == 0. Exact for a, b < 2^47."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    safe_b = np.where(b == 0, 1, b)
    num = a << 16
    q1 = num // safe_b
    r1 = num - q1 * safe_b
    q = (q1 << 16) + ((r1 << 16) // safe_b)
    return np.where(b == 0, 0, q)


def col_normalize(values: Matrix) -> Matrix:
    """inplace_col_normalize_sparse: each column divided by its sum (columns summing to 0 untouched)."""
    col_sum = values.sum(axis=0)
    return np.where(col_sum[None, :] == 0, values, np_div(values, col_sum[None, :]))
