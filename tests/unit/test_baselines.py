"""Tests for template/protocol/baselines.py: DDP/AdamW, DiLoCo, DeMo and the SparseLoCo adapter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from template.protocol.baselines import (
    DataParallelAdamW,
    DeMo,
    DiLoCo,
    SparseLoCo,
    average,
    block_layout,
    dct_blocks,
    dct_matrix,
    idct_blocks,
    topk_per_block,
)
from template.protocol.sparseloco import CodecParams


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def random_params(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(128, 192, generator=generator),
        "norm": torch.randn(128, generator=generator),
        "odd": torch.randn(5, 7, generator=generator),
    }


def clone(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in params.items()}


# ------------------------------------------------------------------------------------------------ DDP


def test_average_is_coordinate_mean() -> None:
    a, b = random_params(0), random_params(1)
    mean = average([a, b])
    for name in a:
        assert torch.allclose(mean[name], (a[name] + b[name]) / 2)
    with pytest.raises(ValueError):
        average([])


def test_ddp_averages_gradients_and_matches_torch_adamw() -> None:
    params = random_params(0)
    grads = [random_params(10 + i) for i in range(3)]
    reference = {name: torch.nn.Parameter(t.clone()) for name, t in params.items()}
    torch_adamw = torch.optim.AdamW(reference.values(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    method = DataParallelAdamW(lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        payloads = []
        for g in grads:
            payload, nbytes = method.worker_payload({}, g)
            payloads.append(payload)
            assert nbytes == sum(t.numel() * 4 for t in g.values())
        method.apply(params, payloads)
        for name, p in reference.items():
            p.grad = (grads[0][name] + grads[1][name] + grads[2][name]) / 3
        torch_adamw.step()
    for name, p in reference.items():
        assert torch.allclose(params[name], p.detach(), atol=1e-6), name


def test_ddp_payload_is_a_copy() -> None:
    grads = random_params(0)
    payload, _ = DataParallelAdamW(lr=1e-3).worker_payload({}, grads)
    grads["w"].zero_()
    assert payload["w"].abs().sum() > 0


# --------------------------------------------------------------------------------------------- DiLoCo


def test_diloco_one_worker_no_momentum_is_sgd_on_pseudo_gradient() -> None:
    params, delta = random_params(0), random_params(1)
    expected = {name: params[name] - 0.7 * delta[name] for name in params}
    method = DiLoCo(outer_lr=0.7, momentum=0.0)
    payload, nbytes = method.worker_payload({}, delta)
    method.apply(params, [payload])
    assert nbytes == sum(t.numel() * 4 for t in delta.values())
    for name in params:
        assert torch.allclose(params[name], expected[name], atol=1e-6), name


def test_diloco_nesterov_matches_torch_sgd() -> None:
    params = random_params(0)
    reference = {name: torch.nn.Parameter(t.clone()) for name, t in params.items()}
    sgd = torch.optim.SGD(reference.values(), lr=0.7, momentum=0.9, nesterov=True)
    method = DiLoCo(outer_lr=0.7, momentum=0.9)
    for step in range(3):
        deltas = [random_params(100 + 2 * step), random_params(101 + 2 * step)]
        method.apply(params, [method.worker_payload({}, d)[0] for d in deltas])
        for name, p in reference.items():
            p.grad = (deltas[0][name] + deltas[1][name]) / 2
        sgd.step()
    for name, p in reference.items():
        assert torch.allclose(params[name], p.detach(), atol=1e-5), name


def test_diloco_rejects_bad_momentum() -> None:
    with pytest.raises(ValueError, match="momentum"):
        DiLoCo(momentum=1.0)


# ----------------------------------------------------------------------------------------------- DeMo


def test_dct_matrix_is_orthonormal() -> None:
    basis = dct_matrix(64)
    assert torch.allclose(basis @ basis.T, torch.eye(64), atol=1e-5)
    # the first basis vector is the constant (DC) component
    assert torch.allclose(basis[0], torch.full((64,), 64**-0.5))


@settings(max_examples=25, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 300)),
        st.tuples(st.integers(1, 150), st.integers(1, 150)),
        st.tuples(st.integers(1, 20), st.integers(1, 9), st.integers(1, 9)),
    ),
    chunk_size=st.sampled_from([8, 16, 64]),
    seed=st.integers(0, 1000),
)
def test_dct_round_trip_is_identity(shape: tuple[int, ...], chunk_size: int, seed: int) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    coefficients = dct_blocks(x, chunk_size)
    rows, cols, block_rows, block_cols = block_layout(shape, chunk_size)
    assert coefficients.shape == ((rows // block_rows) * (cols // block_cols), block_rows * block_cols)
    assert torch.allclose(idct_blocks(coefficients, shape, chunk_size), x, atol=1e-5)
    # orthonormal: energy is preserved
    assert torch.allclose(coefficients.pow(2).sum(), x.pow(2).sum(), rtol=1e-4)


def test_dct_of_constant_block_is_single_dc_coefficient() -> None:
    coefficients = dct_blocks(torch.full((64, 64), 2.0), 64)
    assert coefficients.shape == (1, 4096)
    assert torch.isclose(coefficients[0, 0], torch.tensor(2.0 * 64))
    assert coefficients[0, 1:].abs().max() < 1e-4


def test_block_layout_uses_largest_divisor() -> None:
    assert block_layout((128, 192), 64) == (128, 192, 64, 64)
    assert block_layout((100,), 64) == (1, 100, 1, 50)
    assert block_layout((7, 13), 64) == (7, 13, 7, 13)
    assert block_layout((4, 3, 5), 64) == (4, 15, 4, 15)


def test_topk_per_block_counts_and_picks_largest() -> None:
    coefficients = torch.randn(6, 4096, generator=torch.Generator().manual_seed(0))
    indices, values = topk_per_block(coefficients, 32)
    assert indices.shape == values.shape == (6, 32) and indices.dtype == torch.int16
    for row in range(6):
        assert len(set(indices[row].tolist())) == 32
        threshold = values[row].abs().min()
        assert (coefficients[row].abs() > threshold).sum() <= 31
        assert torch.equal(coefficients[row, indices[row].long()], values[row])
    small_indices, _ = topk_per_block(torch.randn(2, 5), 32)
    assert small_indices.shape == (2, 5)  # k capped at the block size


def test_demo_payload_removes_sent_components_from_momentum() -> None:
    method = DeMo(lr=0.01, topk=32, momentum_decay=0.999)
    grads = random_params(0)
    state: dict = {}
    payload, nbytes = method.worker_payload(state, grads)
    expected_bytes = 0
    for name, g in grads.items():
        indices, values = payload[name]
        expected_bytes += indices.numel() * 2 + values.numel() * 4
        rows, cols, block_rows, block_cols = block_layout(tuple(g.shape), 64)
        assert indices.shape[1] == min(32, block_rows * block_cols)
        # momentum + what was sent = the first momentum (= the gradient)
        sent = torch.zeros(indices.shape[0], block_rows * block_cols).scatter_(-1, indices.long(), values)
        restored = state[name] + idct_blocks(sent, tuple(g.shape), 64)
        assert torch.allclose(restored, g, atol=1e-5), name
        # the sent coefficients are gone from the residual momentum
        residual = dct_blocks(state[name], 64).gather(-1, indices.long())
        assert residual.abs().max() < 1e-4
    assert nbytes == expected_bytes
    # second step decays the residual and adds the new gradient
    before = clone(state)
    method.worker_payload(state, grads)
    assert not torch.allclose(state["w"], before["w"])


def test_demo_apply_is_signed_step_of_mean_over_senders() -> None:
    method = DeMo(lr=0.5, chunk_size=4, topk=1)
    params = {"v": torch.zeros(4)}
    # two workers send the same DC coefficient with different values -> mean over the two senders
    payload_a = {"v": (torch.tensor([[0]], dtype=torch.int16), torch.tensor([[2.0]]))}
    payload_b = {"v": (torch.tensor([[0]], dtype=torch.int16), torch.tensor([[4.0]]))}
    aggregate = method.aggregate([payload_a, payload_b], "v", (4,))
    assert torch.allclose(aggregate, torch.full((4,), 3.0 / 2.0))  # DC coefficient 3 over 4 entries
    method.apply(params, [payload_a, payload_b])
    assert torch.equal(params["v"], torch.full((4,), -0.5))


def test_demo_one_worker_dense_topk_follows_sign_of_momentum() -> None:
    # with every coefficient sent the update is exactly the sign of the gradient (first step)
    method = DeMo(lr=0.1, chunk_size=8, topk=64)
    params, grads = random_params(0), random_params(1)
    start = clone(params)
    payload, _ = method.worker_payload({}, grads)
    method.apply(params, [payload])
    for name in params:
        assert torch.allclose(params[name], start[name] - 0.1 * grads[name].sign(), atol=1e-6), name


def test_demo_rejects_bad_topk() -> None:
    with pytest.raises(ValueError, match="topk"):
        DeMo(lr=0.1, chunk_size=4, topk=17)


# ----------------------------------------------------------------------------------------- SparseLoCo


def test_sparseloco_adapter_bytes_and_outer_step() -> None:
    import safetensors.torch

    method = SparseLoCo(CodecParams(chunk_size=64, topk=64, bits=2), error_feedback_beta=0.95, outer_lr=1.0)
    params = random_params(0)
    start = clone(params)
    state: dict = {}
    delta = random_params(1)
    wire, nbytes = method.worker_payload(state, delta)
    assert nbytes == len(safetensors.torch.save(wire))
    assert nbytes < sum(t.numel() * 4 for t in delta.values()) / 10
    assert set(state["error_feedback"]) == set(delta)
    stats = method.apply(params, [wire, wire])
    assert stats["used"] == 2.0
    moved = {name: start[name] - params[name] for name in params}
    # the step is sparse and points along the pseudo-gradient where it is non-zero
    nonzero = moved["w"] != 0
    assert 0 < nonzero.float().mean() < 0.1
    assert (moved["w"][nonzero].sign() == delta["w"][nonzero].sign()).float().mean() > 0.95
