"""Pinned test vectors for the two hashes every node must compute bit for bit (docs/protocol.md).

- `model_fingerprint` (the sync proof: records' base/next fingerprints, gradient manifests'
  `base_fingerprint`, checkpoint manifests' `fingerprint`);
- `tensors_digest` (the `payload_sha256` of tensor artifacts).

Each vector is checked three ways: the literal hex digest, this project's function, and a
from-scratch reference built from `hashlib` and `struct` on plain Python numbers, which is the
recipe a third-party node implements. A change to either hash breaks the network: bump
`PROTOCOL_VERSION` and the literals together.
"""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from torch import nn

from template.protocol.artifacts import tensors_digest
from template.protocol.config import HParams
from template.protocol.model import build_model, model_fingerprint

# name -> (shape, values in row-major order); the order of the entries is named_parameters order
VECTOR_PARAMS: list[tuple[str, tuple[int, ...], list[float]]] = [
    ("w", (2, 3), [0.0, 1.0, -2.0, 0.5, -0.25, 3.0]),
    # held in bf16: hashed as its exact fp32 value, 0.1 in bf16 is 0.10009765625
    ("norm.weight", (2,), [1.0, 0.10009765625]),
]
VECTOR_FINGERPRINT = "0412428f80caba1cddf0e3e2565828e661892485a3affcade7a855e6d487343c"
VECTOR_DIGEST = "882165a06af9231a3c7888c3c586eabdd7bc24a42e74227ab752a4f7e4e96fe8"
# theta_0 of the default hparams (preset tiny, vocab 8192, seq_len 128, model_seed 1234)
THETA0_FINGERPRINT = "21a9b86ea7f20b555a7e71e997711985029dda3b34d159ae8fc4158d260a9885"


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


class VectorModel(nn.Module):
    """Two parameters (one fp32, one bf16) and a buffer, which the fingerprint leaves out."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[0.0, 1.0, -2.0], [0.5, -0.25, 3.0]]))
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.tensor([1.0, 0.1], dtype=torch.bfloat16))
        self.register_buffer("buf", torch.ones(2))


def reference_fingerprint(params: list[tuple[str, tuple[int, ...], list[float]]]) -> str:
    """The spec: per parameter, in order, UTF-8 name + Python tuple repr of the shape + fp32 LE values."""
    h = hashlib.sha256()
    for name, shape, values in params:
        h.update(name.encode("utf-8"))
        h.update(repr(tuple(shape)).encode("ascii"))  # "(2, 3)", "(2,)"; no separators, no lengths
        h.update(struct.pack(f"<{len(values)}f", *values))
    return h.hexdigest()


def reference_digest(tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> str:
    """The spec of `tensors_digest`: sorted names; canonical JSON [name, dtype, shape] + raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        h.update(json.dumps([name, dtype, list(shape)], separators=(",", ":")).encode())
        h.update(raw)
    return h.hexdigest()


def test_fingerprint_vector_matches_literal_and_reference() -> None:
    model = VectorModel()
    assert [n for n, _ in model.named_parameters()] == [name for name, _, _ in VECTOR_PARAMS]
    assert reference_fingerprint(VECTOR_PARAMS) == VECTOR_FINGERPRINT
    assert model_fingerprint(model) == VECTOR_FINGERPRINT


def test_fingerprint_ignores_buffers_and_follows_parameter_order() -> None:
    model = VectorModel()
    model.buf.fill_(7.0)  # buffers (e.g. rotary tables) are not hashed
    assert model_fingerprint(model) == VECTOR_FINGERPRINT
    assert reference_fingerprint(list(reversed(VECTOR_PARAMS))) != VECTOR_FINGERPRINT  # order is not sorted


def test_tensors_digest_vector_matches_literal_and_reference() -> None:
    w = torch.tensor([[0.0, 1.0, -2.0], [0.5, -0.25, 3.0]])
    b = torch.tensor([1, -2], dtype=torch.int32)
    ref = reference_digest({
        "w": ("torch.float32", (2, 3), struct.pack("<6f", *w.flatten().tolist())),
        "b": ("torch.int32", (2,), struct.pack("<2i", 1, -2)),
    })
    assert ref == VECTOR_DIGEST
    assert tensors_digest({"w": w, "b": b}) == VECTOR_DIGEST


def test_theta0_fingerprint_of_default_hparams_is_pinned() -> None:
    """Every node builds theta_0 itself; a torch whose seeded init differs cannot join the run."""
    hp = HParams()
    model = build_model(hp.model_preset, hp.vocab_size, hp.seq_len, hp.model_seed)
    assert model_fingerprint(model) == THETA0_FINGERPRINT
