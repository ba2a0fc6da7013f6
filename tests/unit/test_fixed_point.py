"""The vectorised I32F32 helpers agree with Python big-int arithmetic (template/chain/localnet/fixed_point.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from template.chain.localnet import fixed_point


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(2**40), 2**40), st.integers(-(2**33), 2**33), st.integers(0, 2**46), st.integers(0, 2**46)
)
def test_vectorised_fixed_point_matches_big_int(a: int, b: int, num: int, den: int) -> None:
    # The numpy int64 helpers split operands to avoid overflow; they must equal exact big-int arithmetic.
    assert int(fixed_point.np_mul(np.array([a]), np.array([b]))[0]) == (a * b) >> 32
    expected = (num << 32) // den if den else 0
    assume(expected < 2**62)  # quotients in the epoch are proportions, far below this
    assert int(fixed_point.np_div(np.array([num]), np.array([den]))[0]) == expected
