import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from template.protocol.outer_step import outer_step
from template.protocol.sparseloco import (
    ChunkGroup,
    CodecError,
    CodecParams,
    block_view,
    chunk_plan,
    compress,
    decompress,
    encode_positions,
    flat_positions,
    pack_bits,
    pack_bits_torch,
    pack_fields,
    unpack_bits,
    unpack_bits_torch,
    unpack_fields,
    wire_indices,
)

torch.set_num_threads(1)

CODEC = CodecParams()
SMALL = CodecParams(chunk_size=8, topk=4)
ODD_SHAPES = [(1,), (63,), (65,), (65, 130), (3, 5, 7), (64, 64), (130, 7), (2, 3, 4, 5), ()]
shape_st = st.lists(st.integers(1, 40), min_size=0, max_size=3).map(tuple)


def chunk_view(x2d: torch.Tensor, g: ChunkGroup) -> torch.Tensor:
    """(R, C) -> (num_chunks, chunk_elems): the group's blocks as rows, row-major inside each block."""
    return block_view(x2d, g).reshape(g.num_chunks, g.chunk_elems)


def unchunk_view(chunks: torch.Tensor, g: ChunkGroup, out2d: torch.Tensor) -> None:
    """Inverse of ``chunk_view``: write (num_chunks, chunk_elems) back into the group's area of ``out2d``."""
    blocks = chunks.reshape(g.num_block_rows, g.num_block_cols, g.block_h, g.block_w).permute(0, 2, 1, 3)
    out2d[g.row_start:g.row_start + g.num_block_rows * g.block_h,
          g.col_start:g.col_start + g.num_block_cols * g.block_w] = blocks.reshape(
        g.num_block_rows * g.block_h, g.num_block_cols * g.block_w)


def _delta(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {f"p{i}": torch.randn(s, generator=gen) for i, s in enumerate(shapes)}


def _shapes(delta):
    return {n: tuple(t.shape) for n, t in delta.items()}


# ---------------------------------------------------------------- packing


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=200))
def test_pack_bits_roundtrip(bits):
    b = torch.tensor(bits, dtype=torch.uint8)
    packed = pack_bits(b)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(len(bits) / 8)
    assert torch.equal(unpack_bits(packed, len(bits)), b)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 13), st.lists(st.integers(0, 1 << 13), max_size=50))
def test_fields_roundtrip_and_bit_order(width, values):
    v = torch.tensor(values, dtype=torch.int64) % (1 << width)
    packed = pack_fields(v, width)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(len(values) * width / 8)
    assert torch.equal(unpack_fields(packed, len(values), width), v)
    # the word-based fast path and the bit-by-bit definition give the same LSB-first stream
    bits = [(int(x) >> i) & 1 for x in v for i in range(width)]
    assert torch.equal(packed, pack_bits(torch.tensor(bits, dtype=torch.uint8)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=200))
def test_numpy_and_torch_bit_packers_agree(values):
    """CPU uses numpy's packbits/unpackbits, other devices the torch versions: both must write the same bytes."""
    bits = torch.tensor(values, dtype=torch.uint8)
    packed = pack_bits(bits)
    assert torch.equal(pack_bits_torch(bits), packed)
    assert torch.equal(unpack_bits_torch(packed, len(values)), bits)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=100))
def test_codes_four_per_byte(codes):
    c = torch.tensor(codes, dtype=torch.int64)
    packed = pack_fields(c, 2)
    assert packed.numel() == math.ceil(len(codes) / 4)
    assert torch.equal(unpack_fields(packed, len(codes), 2), c)
    if len(codes) >= 4:
        assert int(packed[0]) == codes[0] | codes[1] << 2 | codes[2] << 4 | codes[3] << 6


# ---------------------------------------------------------------- chunking


@pytest.mark.parametrize("shape", ODD_SHAPES + [(0, 4)])
@pytest.mark.parametrize("codec", [CODEC, SMALL])
def test_chunk_unchunk_identity(shape, codec):
    _check_chunking(shape, codec)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=0, max_size=4).map(tuple), st.integers(1, 9), st.integers(1, 81))
def test_chunk_unchunk_identity_random_shapes(shape, chunk_size, topk):
    _check_chunking(shape, CodecParams(chunk_size=chunk_size, topk=min(topk, chunk_size * chunk_size)))


def _check_chunking(shape, codec):
    x = torch.randn(shape)
    plan = chunk_plan(shape, codec)
    x2d = x.reshape(plan.rows, plan.cols)
    out = torch.full_like(x2d, float("nan"))
    covered = []
    for g in plan.groups:
        chunks = chunk_view(x2d, g)
        assert chunks.shape == (g.num_chunks, g.chunk_elems)
        assert 1 <= g.k <= g.chunk_elems
        unchunk_view(chunks, g, out)
        pos = torch.arange(g.chunk_elems).expand(g.num_chunks, -1)
        flat = flat_positions(pos, g, plan.cols)
        assert torch.equal(x2d.reshape(-1)[flat], chunks)  # flat offsets agree with the chunk layout
        covered.append(flat.reshape(-1))
    assert torch.equal(out, x2d)
    all_flat = torch.cat(covered) if covered else torch.zeros(0, dtype=torch.int64)
    assert torch.equal(torch.sort(all_flat).values, torch.arange(x.numel()))  # every element exactly once


def _reference_elias_fano(positions: list[int], u: int, k: int) -> tuple[list[int], list[int]]:
    """Pure-Python statement of the wire format of one chunk: (high bitmap bits, low bits LSB-first)."""
    low_bits = (u // k).bit_length() - 1
    high = [0] * (k + ((u - 1) >> low_bits) + 1)
    low = []
    for i, p in enumerate(positions):
        high[(p >> low_bits) + i] = 1
        low += [(p >> b) & 1 for b in range(low_bits)]
    return high, low


@pytest.mark.parametrize("shape,codec", [((64, 64), CODEC), ((65, 130), CODEC), ((300,), CODEC), ((20, 9), SMALL)])
def test_index_bytes_match_reference_format(shape, codec):
    """Guard of the cross-node wire format: idx bytes == per-kind [all bitmaps][all low fields], byte aligned."""
    wire, _ = compress({"w": torch.randn(shape, generator=torch.Generator().manual_seed(5))}, None, codec, 0.9)
    plan = chunk_plan(shape, codec)
    kept = set(wire_indices(wire, {"w": shape}, codec)["w"].tolist())
    expected = b""
    for g in plan.groups:
        pos = torch.arange(g.chunk_elems).expand(g.num_chunks, -1)
        flat = flat_positions(pos, g, plan.cols)
        high_bits, low_bits = [], []
        for chunk in range(g.num_chunks):
            chosen = [p for p in range(g.chunk_elems) if int(flat[chunk, p]) in kept]
            assert len(chosen) == g.k
            high, low = _reference_elias_fano(chosen, g.chunk_elems, g.k)
            high_bits += high
            low_bits += low
        for bits in (high_bits, low_bits):
            bits = bits + [0] * (-len(bits) % 8)
            expected += bytes(sum(b << i for i, b in enumerate(bits[j:j + 8])) for j in range(0, len(bits), 8))
    assert wire["w::idx"].numpy().tobytes() == expected


def test_plan_edge_blocks_keep_proportionally_fewer():
    plan = chunk_plan((65, 130), CODEC)
    kinds = [(g.num_chunks, g.block_h, g.block_w, g.k) for g in plan.groups]
    assert kinds == [(2, 64, 64, 64), (1, 64, 2, 2), (2, 1, 64, 1), (1, 1, 2, 1)]
    assert chunk_plan((63,), CODEC).groups[0].k == 1
    one_d = chunk_plan((4096,), CODEC)
    assert [(g.num_chunks, g.chunk_elems, g.k) for g in one_d.groups] == [(64, 64, 1)]


def test_default_codec_bits_per_param():
    plan = chunk_plan((4096, 4096), CODEC)
    g = plan.groups[0]
    assert (g.low_bits, g.high_bits) == (6, 128)
    total_bits = 8 * plan.index_bytes + 2 * plan.num_kept
    assert total_bits / (4096 * 4096) == 0.15625


# ---------------------------------------------------------------- compress / decompress


@settings(max_examples=25, deadline=None)
@given(st.lists(shape_st, min_size=1, max_size=3), st.floats(0.0, 1.0), st.integers(0, 1000),
       st.sampled_from([SMALL, CodecParams(4, 1), CodecParams(5, 25), CodecParams(16, 3), CodecParams(64, 4), CODEC]))
def test_error_feedback_identity(shapes, beta, seed, codec):
    delta = _delta(shapes, seed)
    ef_old = _delta(shapes, seed + 1)
    wire, ef_new = compress(delta, {n: t.clone() for n, t in ef_old.items()}, codec, beta)
    decoded = decompress(wire, _shapes(delta), codec)
    for n in delta:
        acc = torch.add(delta[n], ef_old[n], alpha=beta)  # the accumulation compress does
        torch.testing.assert_close(ef_new[n] + decoded[n], acc, rtol=1e-6, atol=1e-6)
        assert torch.equal(ef_new[n], acc - decoded[n])  # bitwise: the residual is exactly what was not sent
        untouched = decoded[n] == 0
        assert torch.equal(ef_new[n][untouched], acc[untouched])


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_exactly_k_nonzeros_per_chunk(shape):
    delta = {"w": torch.randn(shape)}
    wire, _ = compress(delta, None, CODEC, 0.95)
    assert set(wire) == {"w::idx", "w::codes", "w::table"}
    dense = decompress(wire, {"w": shape}, CODEC)["w"]
    plan = chunk_plan(shape, CODEC)
    for g in plan.groups:
        nonzero = (chunk_view(dense.reshape(plan.rows, plan.cols), g) != 0).sum(dim=1)
        assert torch.equal(nonzero, torch.full((g.num_chunks,), g.k))
    assert wire_indices(wire, {"w": shape}, CODEC)["w"].numel() == plan.num_kept


def test_keeps_largest_magnitudes_and_quantizes_by_sign():
    x = torch.zeros(64, 64)
    big = torch.randperm(4096, generator=torch.Generator().manual_seed(3))[:64]
    x.view(-1)[big] = torch.linspace(-5, 5, 64)
    x.view(-1)[big[torch.linspace(-5, 5, 64) == 0]] = 0.5  # no zero among the planted values
    x += 1e-3 * torch.randn(64, 64)
    wire, _ = compress({"w": x}, None, CODEC, 0.9)
    assert torch.equal(wire_indices(wire, {"w": (64, 64)}, CODEC)["w"], torch.sort(big).values)
    table = wire["w::table"]
    assert table[0] < 0 and table[1] < table[0] and table[2] > 0 and table[3] > table[2]
    dense = decompress(wire, {"w": (64, 64)}, CODEC)["w"]
    assert torch.equal(torch.sign(dense.view(-1)[big]), torch.sign(x.view(-1)[big]))


@pytest.mark.parametrize("shape", [(64, 64), (64,), (512,), (64, 4096)])
def test_compress_never_writes_delta_and_reuses_ef(shape):
    # single-row block grids make the chunk layout a view of the input: it must never be written through
    delta, ef = {"w": torch.randn(shape)}, {"w": torch.randn(shape)}
    before = delta["w"].clone()
    _, ef_none = compress(delta, None, CODEC, 0.95)
    assert torch.equal(delta["w"], before) and ef_none["w"].data_ptr() != delta["w"].data_ptr()
    buffer = ef["w"]
    _, new_ef = compress(delta, ef, CODEC, 0.95)
    assert torch.equal(delta["w"], before)
    assert new_ef["w"].data_ptr() == buffer.data_ptr()  # the fp32 buffer is updated in place


def test_compress_ef_other_dtype_is_not_reused():
    delta, ef = {"w": torch.randn(64, 64)}, {"w": torch.randn(64, 64).double()}
    old = ef["w"].clone()
    _, new_ef = compress(delta, ef, CODEC, 0.5)
    assert torch.equal(ef["w"], old) and new_ef["w"].dtype == torch.float32


def test_all_zero_delta_still_encodes_k_per_chunk():
    wire, ef = compress({"w": torch.zeros(64, 128)}, None, CODEC, 0.95)
    assert wire["w::idx"].numel() == 2 * 64 and wire["w::codes"].numel() == 2 * 16
    assert torch.equal(wire["w::table"], torch.zeros(4))
    assert torch.equal(decompress(wire, {"w": (64, 128)}, CODEC)["w"], torch.zeros(64, 128))
    assert torch.equal(ef["w"], torch.zeros(64, 128))


def test_compress_deterministic_and_wire_dtypes():
    delta = _delta([(65, 130), (300,), (3, 5, 7)], seed=7)
    ef = _delta([(65, 130), (300,), (3, 5, 7)], seed=8)
    w1, e1 = compress(delta, {n: t.clone() for n, t in ef.items()}, CODEC, 0.95)
    w2, e2 = compress(delta, {n: t.clone() for n, t in ef.items()}, CODEC, 0.95)
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]) and w1[k].is_contiguous() and w1[k].device.type == "cpu"
        assert w1[k].dtype in (torch.uint8, torch.float32)
    for n in e1:
        assert torch.equal(e1[n], e2[n]) and e1[n].dtype == torch.float32


def test_compress_bf16_input_and_ef_shape_check():
    delta = {"w": torch.randn(64, 64).bfloat16()}
    wire, ef = compress(delta, None, CODEC, 0.95)
    assert ef["w"].dtype == torch.float32
    with pytest.raises(ValueError, match="ef must hold"):
        compress(delta, {"w": torch.zeros(3)}, CODEC, 0.95)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_compress_rejects_non_finite(bad):
    x = torch.randn(64, 64)
    x[5, 7] = bad
    with pytest.raises(CodecError) as err:
        compress({"w": x}, None, CODEC, 0.95)
    assert err.value.code == "non_finite_input"


def test_codec_params():
    class HP:
        chunk_size, topk, quant_bits = 32, 16, 2

    assert CodecParams.from_hparams(HP) == CodecParams(32, 16, 2)
    for kw in ({"topk": 0}, {"topk": 4097}, {"chunk_size": 0}, {"bits": 3}):
        with pytest.raises(ValueError):
            CodecParams(**kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compress_cuda_matches_cpu_decode():
    delta = {"w": torch.randn(130, 200)}
    wire_gpu, ef_gpu = compress({"w": delta["w"].cuda()}, None, CODEC, 0.95)
    assert ef_gpu["w"].is_cuda and all(t.device.type == "cpu" for t in wire_gpu.values())
    decoded = decompress(wire_gpu, {"w": (130, 200)}, CODEC)["w"]
    torch.testing.assert_close(decoded + ef_gpu["w"].cpu(), delta["w"])


# ---------------------------------------------------------------- malformed payloads


def _wire():
    delta = {"a": torch.randn(64, 64), "b": torch.randn(65, 130), "c": torch.randn(10)}
    wire, _ = compress(delta, None, CODEC, 0.95)
    return wire, _shapes(delta)


def _expect(code, wire, shapes):
    with pytest.raises(CodecError) as err:
        decompress(wire, shapes, CODEC)
    assert err.value.code == code, str(err.value)
    with pytest.raises(CodecError):
        wire_indices(wire, shapes, CODEC)
    assert code in str(err.value)


def _with_positions(pos_row):
    """A wire for one (64, 64) tensor whose single chunk claims the given positions (k = 64 of them)."""
    wire, shapes = _wire()
    g = chunk_plan((64, 64), CODEC).groups[0]
    pos = torch.tensor([pos_row], dtype=torch.int64)
    wire["a::idx"] = encode_positions(pos, g)
    return wire, shapes


def test_valid_wire_decodes():
    wire, shapes = _wire()
    assert set(decompress(wire, shapes, CODEC)) == set(shapes)


@pytest.mark.parametrize("key", ["a::idx", "a::codes", "a::table", "b::idx", "b::codes", "c::idx"])
@pytest.mark.parametrize("change", ["truncate", "extend"])
def test_rejects_wrong_length(key, change):
    wire, shapes = _wire()
    t = wire[key]
    wire[key] = t[:-1] if change == "truncate" else torch.cat([t, t[:1]])
    _expect("bad_length", wire, shapes)


def test_rejects_missing_and_extra():
    wire, shapes = _wire()
    del wire["b::codes"]
    _expect("missing_tensor", wire, shapes)
    wire, shapes = _wire()
    wire["z::idx"] = torch.zeros(3, dtype=torch.uint8)
    _expect("extra_tensor", wire, shapes)
    wire, shapes = _wire()
    _expect("missing_tensor", wire, {**shapes, "d": (4, 4)})


@pytest.mark.parametrize("key,dtype", [("a::idx", torch.int32), ("a::codes", torch.int8),
                                       ("a::table", torch.float16), ("b::table", torch.float64)])
def test_rejects_wrong_dtype(key, dtype):
    wire, shapes = _wire()
    wire[key] = wire[key].to(dtype)
    _expect("bad_dtype", wire, shapes)


@pytest.mark.parametrize("key", ["a::idx", "a::table", "b::codes"])
def test_rejects_wrong_tensor_shape(key):
    wire, shapes = _wire()
    wire[key] = wire[key].reshape(2, -1)
    _expect("bad_shape", wire, shapes)


def test_rejects_wrong_parameter_shape():
    wire, shapes = _wire()
    _expect("bad_length", wire, {**shapes, "a": (64, 128)})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_rejects_non_finite_table(bad):
    wire, shapes = _wire()
    wire["b::table"] = wire["b::table"].clone()
    wire["b::table"][2] = bad
    _expect("non_finite_table", wire, shapes)


def test_rejects_out_of_range_index():
    wire, shapes = _with_positions(list(range(63)) + [4096 + 5])
    _expect("index_out_of_range", wire, shapes)


def test_rejects_duplicate_index():
    wire, shapes = _with_positions(list(range(62)) + [100, 100])
    _expect("duplicate_index", wire, shapes)


def test_rejects_unsorted_index():
    wire, shapes = _with_positions(list(range(62)) + [101, 100])
    _expect("unsorted_index", wire, shapes)


def test_crafted_valid_positions_decode():
    positions = list(range(0, 4096, 64))
    wire, shapes = _with_positions(positions)
    assert wire_indices(wire, shapes, CODEC)["a"].tolist() == positions


@pytest.mark.parametrize("byte", [0, 5, 15])
def test_rejects_flipped_bitmap_bit(byte):
    wire, shapes = _wire()
    idx = wire["a::idx"].clone()
    idx[byte] ^= 1 << 3  # the first 16 bytes are the high bitmap: one more or one fewer index
    wire["a::idx"] = idx
    _expect("wrong_k", wire, shapes)


def test_rejects_nonzero_padding():
    wire, shapes = _wire()
    plan = chunk_plan((65, 130), CODEC)
    corner = plan.groups[-1]  # a 1x2 block keeping 1: 3 bitmap bits, 1 low bit, the last idx segment
    assert (corner.high_bits, corner.low_bits) == (2, 1) and (2 * plan.num_kept) % 8
    for key in ("b::idx", "b::codes"):
        w = dict(wire)
        w[key] = w[key].clone()
        w[key][-1] |= 0x80
        _expect("bad_padding", w, shapes)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 7))
def test_random_bit_flip_never_crashes_uncleanly(where, bit):
    wire, shapes = _wire()
    key = ["a::idx", "b::idx", "c::idx"][where % 3]
    t = wire[key].clone()
    t[where % t.numel()] ^= 1 << bit
    wire[key] = t
    try:
        out = decompress(wire, shapes, CODEC)
    except CodecError:
        return
    assert all(torch.isfinite(v).all() for v in out.values())  # a flip in low bits can stay valid


# ---------------------------------------------------------------- codec + outer step


def test_outer_step_bit_identical_across_runs_and_threads():
    shapes = [(65, 130), (300,), (3, 5, 7)]
    peers = []
    for seed in range(5):
        wire, _ = compress(_delta(shapes, seed), None, CODEC, 0.95)
        peers.append(decompress(wire, {f"p{i}": s for i, s in enumerate(shapes)}, CODEC))
    base = _delta(shapes, 99)
    results = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        params = {n: t.clone() for n, t in base.items()}
        outer_step(params, peers, lr=0.7)
        results.append(params)
    torch.set_num_threads(1)
    for other in results[1:]:
        assert all(torch.equal(results[0][n], other[n]) for n in base)
    assert not torch.equal(results[0]["p0"], base["p0"])
