"""The hostile corpus: real signed uploads, each broken in one way, each rejected with its exact reason.

Built from the real codec (`template.protocol.sparseloco.compress`) and real sr25519 signatures over a
small fake parameter set, so no model is needed.
"""

from __future__ import annotations

import itertools
import json
import pickle
import random
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from bittensor_wallet import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

import gauntlet.checks as checks
from gauntlet.checks import Admission, Upload, admit_upload, check_decoded, detect_copies
from template.protocol.artifacts import canonical_json, tensors_digest, write_tensor_artifact
from template.protocol.config import PROTOCOL_VERSION, HParams
from template.protocol.data import data_receipt
from template.protocol.reads import ReadStatus
from template.protocol.sparseloco import CodecParams, compress, decompress
from template.protocol.windows import on_time

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
CHARLIE = Keypair.create_from_uri("//Charlie")
UIDS = {ALICE.ss58_address: 1, BOB.ss58_address: 2, CHARLIE.ss58_address: 3}

SHAPES = {"w": (64, 128), "b": (64,)}
WINDOW = 5
DEADLINE = 1000.0
ON_TIME = 990.0
HP = HParams(topk=64)  # the production codec (64 of 4096): the wire surgery below is written for it
# every ArtifactError code of template/protocol/artifacts.py, each of which the corpus must provoke
ARTIFACT_CODES = (
    "bad_manifest", "unsigned", "wrong_protocol", "wrong_kind", "wrong_signer", "bad_signature",
    "wrong_window", "payload_mismatch", "too_large", "truncated", "huge_header", "malformed", "bad_dtype",
)
CODEC = CodecParams.from_hparams(HP)
BASE_FP = "ab" * 32
RECEIPTS = {uid: data_receipt([uid * 10 + i for i in range(4)]) for uid in (1, 2, 3)}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def make_wire(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    delta = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    wire, _ = compress(delta, None, CODEC, HP.ef_beta)
    return wire


def good_fields(author_uid: int = 1, **over) -> dict:
    fields = {
        "uid": author_uid,
        "base_fingerprint": BASE_FP,
        "data_receipt": RECEIPTS[author_uid],
        "num_inner_steps": HP.inner_steps,
        "codec": {"chunk_size": HP.chunk_size, "topk": HP.topk, "bits": HP.quant_bits},
    }
    fields.update(over)
    return fields


def artifact(wire: dict | None = None, *, keypair: Keypair = ALICE, window: int = WINDOW, kind: str = "gradient",
             fields: dict | None = None) -> bytes:
    uid = UIDS[keypair.ss58_address]
    return write_tensor_artifact(make_wire(uid) if wire is None else wire, kind=kind, window=window,
                                 keypair=keypair, fields=good_fields(uid) if fields is None else fields)


def forged(manifest_over: dict, *, signer: Keypair = ALICE, drop: tuple = (), wire: dict | None = None) -> bytes:
    """A safetensors blob whose manifest is built by hand: any field, signed by `signer`."""
    wire = make_wire(1) if wire is None else wire
    manifest = {"protocol": PROTOCOL_VERSION, "kind": "gradient", "window": WINDOW, "hotkey": ALICE.ss58_address,
                "payload_sha256": tensors_digest(wire), **good_fields(1), **manifest_over}
    for key in drop:
        manifest.pop(key, None)
    manifest["signature"] = signer.sign(canonical_json(manifest)).hex()
    return st_save(wire, metadata={"manifest": canonical_json(manifest).decode()})


def with_manifest(data: bytes, edit: Callable[[dict], None]) -> bytes:
    """Re-frame a valid artifact with its manifest edited (signature untouched)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    manifest = json.loads(header["__metadata__"]["manifest"])
    edit(manifest)
    header["__metadata__"]["manifest"] = canonical_json(manifest).decode()
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def edited_wire(edit: Callable[[dict], None], seed: int = 1) -> dict[str, torch.Tensor]:
    wire = make_wire(seed)
    edit(wire)
    return wire


def upload(data: bytes | None, *, keypair: Keypair = ALICE, last_modified: float | None = ON_TIME,
           status: str = "ok") -> Upload:
    return Upload(uid=UIDS[keypair.ss58_address], hotkey=keypair.ss58_address, key="v1/gradients/00000005.safetensors",
                  data=data, last_modified=last_modified, status=status)


def admit(up: Upload, **over) -> Admission:
    kwargs = dict(window=WINDOW, deadline_s=DEADLINE, hparams=HP, shapes=SHAPES, expected_receipt=RECEIPTS[up.uid],
                  base_fingerprint=BASE_FP, seen_payloads=set())
    kwargs.update(over)
    return admit_upload(up, **kwargs)


# -- wire surgery used by the corpus ------------------------------------------------------------


def set_(key: str, value: torch.Tensor) -> Callable[[dict], None]:
    return lambda wire: wire.__setitem__(key, value)


def drop_(key: str) -> Callable[[dict], None]:
    return lambda wire: wire.pop(key)


def pack_lsb(bits: torch.Tensor) -> torch.Tensor:
    """0/1 bits -> uint8, LSB-first (the codec's bit order), zero padded to a whole byte."""
    bits = torch.cat([bits.to(torch.uint8), torch.zeros(-bits.numel() % 8, dtype=torch.uint8)]).view(-1, 8)
    return (bits.to(torch.int64) << torch.arange(8)).sum(dim=1).to(torch.uint8)


def fields_lsb(values: torch.Tensor, width: int) -> torch.Tensor:
    return ((values.reshape(-1, 1) >> torch.arange(width)) & 1).reshape(-1)


def duplicate_indices(wire: dict) -> None:
    # 'w' is two 64x64 chunks keeping 64 each: 128-bit Elias-Fano high bitmaps, then 6-bit lows.
    # All high parts 0 and all lows 0: every index of a chunk is position 0.
    high = torch.zeros(2, 128, dtype=torch.uint8)
    high[:, :64] = 1
    wire["w::idx"] = torch.cat([pack_lsb(high.reshape(-1)), torch.zeros(2 * 64 * 6 // 8, dtype=torch.uint8)])


def unsorted_indices(wire: dict) -> None:
    high = torch.zeros(2, 128, dtype=torch.uint8)
    high[:, :64] = 1
    lows = torch.arange(63, -1, -1).repeat(2)  # distinct but descending inside each chunk
    wire["w::idx"] = torch.cat([pack_lsb(high.reshape(-1)), pack_lsb(fields_lsb(lows, 6))])


def high_index_for_b(wire: dict) -> None:
    # 'b' is one run of 64 keeping 1: a 2-bit high bitmap, then a 6-bit low field. Bit 1 set means
    # high part 1, i.e. position 64 + low: one past the run.
    idx = torch.zeros_like(wire["b::idx"])
    idx[0] = 0b10
    wire["b::idx"] = idx


def bump_table_byte(data: bytes) -> bytes:
    out = bytearray(data)
    out[-1] ^= 0x01  # the last tensor in the data section: flips one payload bit
    return bytes(out)


@dataclass
class Case:
    name: str
    build: Callable[[], Upload]
    reason: str
    admit_kwargs: dict = field(default_factory=dict)


def _late_alice() -> Upload:
    return upload(artifact(), last_modified=DEADLINE + 1)


CORPUS: list[Case] = [
    # fetch outcomes
    Case("not_found", lambda: upload(None, status="not_found"), "missing"),
    Case("too_large_status", lambda: upload(None, status="too_large"), "too_large"),
    Case("fetch_error", lambda: upload(None, status="error"), "fetch_error"),
    Case("unknown_status", lambda: upload(None, status="weird"), "fetch_error"),
    Case("no_commitment", lambda: upload(None, status="no_commitment"), "no_commitment"),
    Case("ok_without_bytes", lambda: upload(None), "fetch_error"),
    Case("late", _late_alice, "late"),
    Case("no_timestamp", lambda: upload(artifact(), last_modified=None), "late"),
    Case("nan_timestamp", lambda: upload(artifact(), last_modified=float("nan")), "late"),
    # framing
    Case("empty_bytes", lambda: upload(b""), "truncated"),
    Case("random_bytes", lambda: upload(random.Random(0).randbytes(4096)), "huge_header"),
    Case("truncated_file", lambda: upload(artifact()[:-10]), "truncated"),
    Case("truncated_header", lambda: upload(artifact()[:40]), "truncated"),
    Case("pickle_payload", lambda: upload(pickle.dumps({"w": [1.0] * 100})), "huge_header"),
    Case("huge_header", lambda: upload(struct.pack("<Q", 64 << 20) + b"{}" * 100), "huge_header"),
    Case("header_not_json", lambda: upload(struct.pack("<Q", 8) + b"not json" + b"\0" * 16), "malformed"),
    Case("header_not_object", lambda: upload(struct.pack("<Q", 2) + b"[]"), "malformed"),
    Case("too_large_bytes", lambda: upload(artifact()), "too_large",
         {"hparams": HParams(topk=64, max_upload_bytes=1000)}),
    Case("fp8_dtype", lambda: upload(artifact(edited_wire(set_("b::table", torch.zeros(4).to(torch.float8_e4m3fn))))),
         "bad_dtype"),
    # manifest and signature
    Case("unsigned_no_manifest", lambda: upload(st_save(make_wire(1))), "unsigned"),
    Case("manifest_not_json", lambda: upload(st_save(make_wire(1), metadata={"manifest": "{oops"})), "bad_manifest"),
    Case("manifest_not_object", lambda: upload(st_save(make_wire(1), metadata={"manifest": "[1]"})), "bad_manifest"),
    Case("empty_signature", lambda: upload(with_manifest(artifact(), lambda m: m.update(signature=""))), "unsigned"),
    Case("manifest_missing_window", lambda: upload(forged({}, drop=("window",))), "bad_manifest"),
    Case("wrong_protocol", lambda: upload(forged({"protocol": PROTOCOL_VERSION + 1})), "wrong_protocol"),
    Case("wrong_kind", lambda: upload(artifact(kind="checkpoint")), "wrong_kind"),
    Case("wrong_signer", lambda: upload(artifact(keypair=BOB), keypair=ALICE), "wrong_signer"),
    Case("signed_by_other_key", lambda: upload(forged({}, signer=BOB)), "bad_signature"),
    Case("signature_not_hex", lambda: upload(with_manifest(artifact(), lambda m: m.update(signature="zz"))),
         "bad_signature"),
    Case("tampered_manifest", lambda: upload(with_manifest(artifact(), lambda m: m.update(uid=3))), "bad_signature"),
    Case("wrong_window", lambda: upload(artifact(window=WINDOW - 1)), "wrong_window"),
    Case("tampered_payload_byte", lambda: upload(bump_table_byte(artifact())), "payload_mismatch"),
    Case("forged_payload_digest", lambda: upload(forged({"payload_sha256": "00" * 32})), "payload_mismatch"),
    # gradient manifest fields
    Case("missing_fields", lambda: upload(forged({}, drop=("base_fingerprint",))), "bad_fields"),
    Case("wrong_uid", lambda: upload(artifact(fields=good_fields(1, uid=2))), "wrong_uid"),
    Case("uid_as_string", lambda: upload(artifact(fields=good_fields(1, uid="1"))), "wrong_uid"),
    Case("uid_as_bool", lambda: upload(artifact(fields=good_fields(1, uid=True))), "wrong_uid"),
    Case("wrong_codec_topk", lambda: upload(artifact(fields=good_fields(
        1, codec={"chunk_size": 64, "topk": 32, "bits": 2}))), "wrong_codec"),
    Case("codec_extra_key", lambda: upload(artifact(fields=good_fields(
        1, codec={"chunk_size": 64, "topk": 64, "bits": 2, "x": 1}))), "wrong_codec"),
    Case("codec_not_dict", lambda: upload(artifact(fields=good_fields(1, codec="sparseloco"))), "wrong_codec"),
    Case("wrong_inner_steps", lambda: upload(artifact(fields=good_fields(1, num_inner_steps=1))), "wrong_inner_steps"),
    Case("wrong_receipt", lambda: upload(artifact(fields=good_fields(1, data_receipt=RECEIPTS[2]))), "wrong_receipt"),
    Case("base_not_string", lambda: upload(artifact(fields=good_fields(1, base_fingerprint=7))), "bad_fields"),
    Case("replayed_window", lambda: upload(artifact()), "replay",
         {"seen_payloads": {tensors_digest(make_wire(1))}}),
    # payload (codec)
    Case("nan_in_table", lambda: upload(artifact(edited_wire(set_("w::table", torch.tensor([0.0, 1, float("nan"), 2]))))),
         "codec_non_finite_table"),
    Case("inf_in_table", lambda: upload(artifact(edited_wire(set_("b::table", torch.tensor([0.0, 1, 2, float("inf")]))))),
         "codec_non_finite_table"),
    Case("index_out_of_range", lambda: upload(artifact(edited_wire(high_index_for_b))), "codec_index_out_of_range"),
    Case("wrong_k_no_indices", lambda: upload(artifact(edited_wire(set_("w::idx", torch.zeros(128, dtype=torch.uint8))))),
         "codec_wrong_k"),
    Case("wrong_k_all_ones", lambda: upload(artifact(edited_wire(set_("w::idx", torch.full((128,), 255, dtype=torch.uint8))))),
         "codec_wrong_k"),
    Case("duplicate_indices", lambda: upload(artifact(edited_wire(duplicate_indices))), "codec_duplicate_index"),
    Case("unsorted_indices", lambda: upload(artifact(edited_wire(unsorted_indices))), "codec_unsorted_index"),
    Case("missing_tensor", lambda: upload(artifact(edited_wire(drop_("b::table")))), "codec_missing_tensor"),
    Case("missing_parameter", lambda: upload(artifact(edited_wire(
        lambda w: [w.pop(k) for k in ("b::idx", "b::codes", "b::table")]))), "codec_missing_tensor"),
    Case("extra_tensor", lambda: upload(artifact(edited_wire(set_("c::idx", torch.zeros(4, dtype=torch.uint8))))),
         "codec_extra_tensor"),
    Case("table_float64", lambda: upload(artifact(edited_wire(set_("w::table", torch.zeros(4, dtype=torch.float64))))),
         "codec_bad_dtype"),
    Case("idx_int32", lambda: upload(artifact(edited_wire(set_("w::idx", torch.zeros(32, dtype=torch.int32))))),
         "codec_bad_dtype"),
    Case("table_2d", lambda: upload(artifact(edited_wire(set_("w::table", torch.zeros(2, 2))))), "codec_bad_shape"),
    Case("codes_short", lambda: upload(artifact(edited_wire(lambda w: w.__setitem__("w::codes", w["w::codes"][:-1])))),
         "codec_bad_length"),
    Case("zero_length_tensors", lambda: upload(artifact(edited_wire(
        lambda w: [w.__setitem__(k, w[k][:0]) for k in list(w)]))), "codec_bad_length"),
    Case("dirty_padding", lambda: upload(artifact(edited_wire(set_("b::codes", torch.tensor([255], dtype=torch.uint8))))),
         "codec_bad_padding"),
    Case("wrong_shape_set", lambda: upload(artifact()), "codec_missing_tensor",
         {"shapes": {"w": (64, 128), "b": (64,), "c": (8,)}}),
    Case("wrong_shape_dims", lambda: upload(artifact()), "codec_bad_length", {"shapes": {"w": (128, 128), "b": (64,)}}),
    # sync
    Case("out_of_sync", lambda: upload(artifact(fields=good_fields(1, base_fingerprint="cd" * 32))), "out_of_sync"),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_upload_rejected_with_its_reason(case: Case):
    up = case.build()
    adm = admit(up, **case.admit_kwargs)
    assert not adm.ok
    assert adm.reason == case.reason, f"{case.name}: got {adm.reason}"
    assert adm.update is None and adm.indices is None
    assert adm.uid == up.uid


def test_corpus_is_large_and_covers_every_reason():
    assert len(CORPUS) >= 30
    reasons = {c.reason for c in CORPUS}
    assert set(ARTIFACT_CODES) <= reasons
    assert {"missing", "late", "no_commitment", "fetch_error", "wrong_uid", "wrong_codec", "wrong_receipt",
            "replay", "out_of_sync", "wrong_inner_steps", "bad_fields"} <= reasons
    codec_codes = {"missing_tensor", "extra_tensor", "bad_dtype", "bad_shape", "bad_length", "bad_padding", "wrong_k",
                   "index_out_of_range", "duplicate_index", "unsorted_index", "non_finite_table"}
    assert {checks.CODEC_PREFIX + c for c in codec_codes} <= reasons


def test_valid_upload_is_admitted():
    wire = make_wire(1)
    up = upload(artifact(wire))
    adm = admit(up)
    assert adm.ok and adm.reason is None and adm.in_sync
    assert adm.payload_sha256 == tensors_digest(wire)
    expected = decompress(wire, SHAPES, CODEC)
    assert set(adm.update) == set(SHAPES)
    for name in SHAPES:
        assert torch.equal(adm.update[name], expected[name])
        assert adm.indices[name].numel() == (128 if name == "w" else 1)
    # another payload in the seen set does not matter
    assert admit(up, seen_payloads={"00" * 32}).ok


def test_payload_hash_kept_after_manifest_verified():
    wire = make_wire(1)
    adm = admit(upload(artifact(wire, fields=good_fields(1, data_receipt="x"))))
    assert adm.reason == "wrong_receipt" and adm.payload_sha256 == tensors_digest(wire)
    early = admit(upload(b""))
    assert early.payload_sha256 is None and early.in_sync


def test_out_of_sync_marks_in_sync_false_even_when_rejected_for_another_reason():
    adm = admit(upload(artifact(fields=good_fields(1, base_fingerprint="cd" * 32, data_receipt="x"))))
    assert adm.reason == "wrong_receipt" and adm.in_sync is False


def test_deadline_compares_whole_seconds():
    data = artifact()
    assert on_time(1000.999, 1000.0) and not on_time(1001.0, 1000.0)
    assert on_time(1000.5, 1000.5) and not on_time(float("inf"), 1000.0)
    assert admit(upload(data, last_modified=DEADLINE + 0.999)).ok
    assert admit(upload(data, last_modified=DEADLINE + 1.0)).reason == "late"


def test_unexpected_exception_becomes_malformed(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(checks, "decompress_with_indices", boom)
    adm = admit(upload(artifact()))
    assert not adm.ok and adm.reason == "malformed"


def test_check_decoded():
    good = {"w": torch.zeros(64, 128), "b": torch.zeros(64)}
    assert check_decoded(good, SHAPES) is None
    assert check_decoded({**good, "b": torch.tensor([float("nan")] * 64)}, SHAPES) == "non_finite"
    assert check_decoded({**good, "b": torch.zeros(63)}, SHAPES) == "bad_update"
    assert check_decoded({"w": good["w"]}, SHAPES) == "bad_update"
    assert check_decoded({**good, "b": torch.zeros(64, dtype=torch.int64)}, SHAPES) == "bad_update"


def test_reject_keeps_identity():
    adm = admit(upload(artifact()))
    rejected = adm.reject("copy")
    assert (rejected.uid, rejected.ok, rejected.reason, rejected.update) == (1, False, "copy", None)
    assert rejected.payload_sha256 == adm.payload_sha256 and rejected.in_sync


# -- copies --------------------------------------------------------------------------------------


def admitted_pair(bob_wire: dict, *, alice_t: float = 990.0, bob_t: float = 991.0):
    uploads = [upload(artifact(make_wire(1)), last_modified=alice_t),
               upload(artifact(bob_wire, keypair=BOB), keypair=BOB, last_modified=bob_t)]
    admissions = [admit(u) for u in uploads]
    assert all(a.ok for a in admissions)
    return admissions, uploads


def test_identical_payload_later_upload_is_the_copy():
    admissions, uploads = admitted_pair(make_wire(1))
    assert detect_copies(admissions, uploads, threshold=0.9) == {2: "copy"}
    admissions, uploads = admitted_pair(make_wire(1), alice_t=995.0, bob_t=991.0)
    assert detect_copies(admissions, uploads, threshold=0.9) == {1: "copy"}
    admissions, uploads = admitted_pair(make_wire(1), alice_t=991.0, bob_t=991.0)  # same second: both out
    assert detect_copies(admissions, uploads, threshold=0.9) == {1: "copy", 2: "copy"}
    admissions, uploads = admitted_pair(make_wire(1), alice_t=991.9, bob_t=991.1)  # whole seconds compared
    assert detect_copies(admissions, uploads, threshold=0.9) == {1: "copy", 2: "copy"}
    admissions, uploads = admitted_pair(make_wire(1), alice_t=990.9, bob_t=991.1)
    assert detect_copies(admissions, uploads, threshold=0.9) == {2: "copy"}


def test_identical_payload_is_a_copy_even_at_threshold_one():
    admissions, uploads = admitted_pair(make_wire(1))
    assert detect_copies(admissions, uploads, threshold=1.0) == {2: "copy"}


def test_near_copy_same_indices_other_values():
    near = edited_wire(set_("w::table", torch.tensor([-0.5, -0.1, 0.1, 0.5])))
    near["b::table"] = torch.tensor([-0.3, -0.2, 0.2, 0.3])
    admissions, uploads = admitted_pair(near)
    assert admissions[0].payload_sha256 != admissions[1].payload_sha256
    assert detect_copies(admissions, uploads, threshold=0.9) == {2: "copy"}


def test_partial_overlap_respects_threshold():
    gen = torch.Generator().manual_seed(99)
    alice = {n: torch.randn(s, generator=torch.Generator().manual_seed(0)) for n, s in SHAPES.items()}
    bob = {"w": alice["w"].clone(), "b": torch.randn(64, generator=gen)}
    bob["w"][:, 64:] = torch.randn(64, 64, generator=gen)  # second chunk independent
    uploads = [upload(artifact(compress(alice, None, CODEC, 0.0)[0]), last_modified=990.0),
               upload(artifact(compress(bob, None, CODEC, 0.0)[0], keypair=BOB), keypair=BOB, last_modified=991.0)]
    admissions = [admit(u) for u in uploads]
    assert all(a.ok for a in admissions)
    assert detect_copies(admissions, uploads, threshold=0.9) == {}
    assert detect_copies(admissions, uploads, threshold=0.4) == {2: "copy"}
    overlap = checks.index_overlap(admissions)
    assert 0.45 < float(overlap[1, 0]) < 0.6 and float(overlap[0, 0]) == 1.0


def test_independent_uploads_are_not_copies():
    uploads = [upload(artifact(), last_modified=990.0),
               upload(artifact(keypair=BOB), keypair=BOB, last_modified=990.0),
               upload(artifact(keypair=CHARLIE), keypair=CHARLIE, last_modified=989.0)]
    admissions = [admit(u) for u in uploads]
    assert all(a.ok for a in admissions)
    assert detect_copies(admissions, uploads, threshold=0.5) == {}


def test_copy_of_a_rejected_upload_is_judged_alone():
    wire = make_wire(1)
    original = upload(artifact(wire), last_modified=DEADLINE + 5)  # late: rejected
    copy = upload(artifact(wire, keypair=BOB), keypair=BOB, last_modified=990.0)
    admissions = [admit(original), admit(copy)]
    assert [a.ok for a in admissions] == [False, True]
    assert detect_copies(admissions, [original, copy], threshold=0.9) == {}


def test_detect_copies_empty():
    assert detect_copies([], [], threshold=0.9) == {}
    assert checks.index_overlap([]).shape == (0, 0)


def test_missing_base_field_is_bad_fields_not_out_of_sync():
    adm = admit(upload(forged({}, drop=("base_fingerprint",))))
    assert adm.reason == "bad_fields" and adm.in_sync


VALID = artifact(make_wire(1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=4),
       st.integers(0, len(VALID)))
def test_mutated_bytes_never_raise(flips, cut):
    data = bytearray(VALID[:max(cut, 1)] if cut < 64 else VALID)
    for pos, xor in flips:
        if pos < len(data):
            data[pos] ^= xor
    adm = admit(upload(bytes(data)))
    assert isinstance(adm, Admission)
    assert adm.ok or isinstance(adm.reason, str)
    if adm.ok:  # only a flip inside JSON whitespace can leave an admissible file
        assert adm.payload_sha256 == tensors_digest(make_wire(1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sets(st.integers(0, 50), max_size=20), st.sets(st.integers(0, 9), max_size=5)),
                min_size=1, max_size=5))
def test_index_overlap_matches_set_intersection(sets):
    fake = [Admission(uid=i, ok=True, reason=None, update=None, payload_sha256=str(i), in_sync=True,
                      indices={"a": torch.tensor(sorted(a), dtype=torch.int64),
                               "b": torch.tensor(sorted(b), dtype=torch.int64)})
            for i, (a, b) in enumerate(sets)]
    overlap = checks.index_overlap(fake)
    for i, (ai, bi) in enumerate(sets):
        for j, (aj, bj) in enumerate(sets):
            shared = len(ai & aj) + len(bi & bj)
            assert float(overlap[i, j]) == pytest.approx(shared / max(len(ai) + len(bi), 1))


def sparse_product_overlap(admissions: list[Admission]) -> torch.Tensor:
    """index_overlap as it was before issue 18: a sparse incidence matrix times its transpose."""
    n = len(admissions)
    names = sorted(admissions[0].indices or {})
    span = {nm: 1 + max((int(a.indices[nm].max()) for a in admissions if a.indices[nm].numel()), default=0)
            for nm in names}
    offsets = dict(zip(names, itertools.accumulate([0] + [span[nm] for nm in names[:-1]]), strict=True))
    rows, cols = [], []
    for i, a in enumerate(admissions):
        flat = torch.unique(torch.cat([a.indices[nm].reshape(-1) + offsets[nm] for nm in names]))
        rows.append(torch.full_like(flat, i))
        cols.append(flat)
    idx = torch.stack([torch.cat(rows), torch.cat(cols)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inc = torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1], dtype=torch.float64),
                                      (n, max(sum(span.values()), 1)))
        shared = torch.sparse.mm(inc, inc.t()).to_dense()
    return shared / shared.diagonal().clamp(min=1).unsqueeze(1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 30), max_size=25), st.lists(st.integers(0, 6), max_size=8)),
                min_size=1, max_size=12))
def test_index_overlap_is_bit_identical_to_the_sparse_product(rows):
    """The pair counting that replaced the sparse product (issue 18: it held ~280 MB at 256 sketches) gives
    the same float64 bits, duplicates within a row and empty rows included: the gather set's copy check
    runs on every node and must not change."""
    fake = [Admission(uid=i, ok=True, reason=None, update=None, payload_sha256=str(i), in_sync=True,
                      indices={"a": torch.tensor(a, dtype=torch.int64), "b": torch.tensor(b, dtype=torch.int64)})
            for i, (a, b) in enumerate(rows)]
    got, want = checks.index_overlap(fake), sparse_product_overlap(fake)
    assert got.dtype == torch.float64 and torch.equal(got, want)


def test_an_uploads_payload_state_says_where_its_bytes_are():
    from template.protocol.uploads import Payload

    def make(data: bytes | None, status: ReadStatus = ReadStatus.OK, **kw: object) -> Upload:
        return Upload(uid=1, hotkey="h", key="k", data=data, last_modified=1.0, status=status, **kw)  # type: ignore[arg-type]

    assert make(b"x").payload is Payload.IN_MEMORY
    assert make(None, ReadStatus.NOT_FOUND).payload is Payload.FAILED
    assert make(None, payload=Payload.SPOOLED).payload is Payload.SPOOLED
    with pytest.raises(ValueError):
        make(b"x", payload=Payload.SPOOLED)  # bytes in memory are not spooled
    with pytest.raises(ValueError):
        make(None, payload=Payload.IN_MEMORY)
    spooled = make(None, payload=Payload.SPOOLED)
    hp = HParams()
    adm = admit_upload(spooled, window=0, deadline_s=10.0, hparams=hp, shapes={}, expected_receipt="r",
                       base_fingerprint="b", seen_payloads=set())
    assert adm.reason == "fetch_error"  # a spooled upload must be loaded before it is judged
