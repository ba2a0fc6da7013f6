import json
import struct

import pytest
import torch
from bittensor_wallet import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st

from template.protocol.artifacts import (
    ArtifactError,
    read_json_artifact,
    read_tensor_artifact,
    write_json_artifact,
    write_tensor_artifact,
)

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
CAP = 1 << 20


def _artifact(**kw):
    tensors = {"w.idx": torch.arange(12, dtype=torch.uint8), "w.table": torch.tensor([-1.0, -0.1, 0.1, 1.0])}
    return write_tensor_artifact(tensors, kind="gradient", window=5, keypair=ALICE, fields={"uid": 2}, **kw)


def test_roundtrip():
    art = read_tensor_artifact(_artifact(), kind="gradient", max_bytes=CAP, signer_ss58=ALICE.ss58_address, window=5)
    assert art.manifest["uid"] == 2 and art.manifest["hotkey"] == ALICE.ss58_address
    assert torch.equal(art.tensors["w.idx"], torch.arange(12, dtype=torch.uint8))


def _code(data, **kw):
    args = {"kind": "gradient", "max_bytes": CAP, "signer_ss58": ALICE.ss58_address, "window": 5} | kw
    with pytest.raises(ArtifactError) as e:
        read_tensor_artifact(data, **args)
    return e.value.code


def test_every_payload_byte_is_covered():
    data = bytearray(_artifact())
    (hlen,) = struct.unpack("<Q", data[:8])
    for pos in range(8 + hlen, len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert _code(bytes(bad)) == "payload_mismatch"


def test_manifest_field_tamper_is_bad_signature():
    data = _artifact()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + hlen])
    manifest = json.loads(header["__metadata__"]["manifest"])
    manifest["uid"] = 3
    header["__metadata__"]["manifest"] = json.dumps(manifest)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    forged = struct.pack("<Q", len(raw)) + raw + data[8 + hlen :]
    assert _code(forged) == "bad_signature"


def test_distinct_errors():
    assert _code(_artifact(), signer_ss58=BOB.ss58_address) == "wrong_signer"
    assert _code(_artifact(), kind="checkpoint") == "wrong_kind"
    assert _code(_artifact(), window=6) == "wrong_window"
    assert _code(_artifact(), max_bytes=100) == "too_large"
    assert _code(_artifact()[:-3]) in ("truncated", "malformed")
    assert _code(b"\x80\x04\x95pickle") in ("truncated", "huge_header")
    assert _code(struct.pack("<Q", 1 << 40) + b"{}") == "huge_header"


def test_wrong_protocol(monkeypatch):
    import template.protocol.artifacts as A

    monkeypatch.setattr(A, "PROTOCOL_VERSION", 99)
    data = _artifact()
    monkeypatch.undo()
    assert _code(data) == "wrong_protocol"


def test_unsigned_safetensors_rejected():
    from safetensors.torch import save

    assert _code(save({"x": torch.zeros(3)})) == "unsigned"


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(-1000, 1000), max_size=5), st.integers(0, 10**6))
def test_json_sign_verify_roundtrip(body, window):
    data = write_json_artifact(body, kind="record", window=window, keypair=BOB)
    art = read_json_artifact(data, kind="record", signer_ss58=BOB.ss58_address, window=window)
    assert art.body == body
    doc = json.loads(data)
    doc["body"]["__extra"] = 1
    with pytest.raises(ArtifactError) as e:
        read_json_artifact(json.dumps(doc).encode(), kind="record")
    assert e.value.code == "payload_mismatch"


def test_json_errors():
    with pytest.raises(ArtifactError, match="malformed"):
        read_json_artifact(b"not json", kind="record")
    data = write_json_artifact({"a": 1}, kind="peers", window=1, keypair=BOB)
    with pytest.raises(ArtifactError, match="wrong_kind"):
        read_json_artifact(data, kind="record")
