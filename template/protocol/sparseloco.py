"""SparseLoCo codec: chunked top-k, 2-bit quantization, error feedback, real bit packing.

What a miner sends for every parameter tensor ``n`` (DESIGN sections 4 and 5), three safetensors entries:

- ``f"{n}::idx"``   uint8 (B,):  the kept in-chunk positions, Elias-Fano coded and bit packed.
- ``f"{n}::codes"`` uint8 (ceil(M/4),): one 2-bit code per kept value, four codes per byte.
- ``f"{n}::table"`` float32 (4,): the value table; a kept value decodes to ``table[code]``. The table *is* the
  quantizer (no separate shift and scale): entry b is the mean of the values put in bin b, kept in fp32 so that
  a large delta can never overflow to inf on the wire.

Chunking. A tensor is viewed as 2-D (R, C): a 2-D weight as is, a tensor with more dims as (first dim, rest),
a 1-D tensor (and a scalar) as (1, numel). 2-D tensors are cut into ``chunk_size x chunk_size`` blocks, 1-D
tensors into runs of ``chunk_size``. When a dimension does not divide, the edge blocks are simply smaller (no
padding, so nothing can point outside the tensor) and keep proportionally fewer values:
``k_chunk = ceil(topk * valid_elems / chunk_size**2)``, which is always in [1, valid_elems]. A 2-D tensor has at
most four kinds of chunk, always in this order on the wire: interior blocks, the right edge column of blocks,
the bottom edge row of blocks, the corner block; within a kind, blocks are in row-major order. A position
inside a chunk is the row-major offset inside that (possibly smaller) block. 1-D runs of ``chunk_size`` keep
``ceil(topk / chunk_size)`` values each (1 of 64 by default), the same density as the 2-D blocks.

Index coding (Elias-Fano, per chunk, fixed size). For a chunk of u elements keeping k sorted distinct positions
p_0 < ... < p_{k-1}, with ``l = floor(log2(u // k))``: the low ``l`` bits of each p_i are stored as fixed-width
fields and the high parts h_i = p_i >> l as a bitmap of ``k + ((u - 1) >> l) + 1`` bits with bit ``h_i + i``
set. For 64 of 4096 that is 64*6 + 128 = 512 bits per chunk (8 bits per index, vs 12 for plain positions and
about 7.4 for the information-theoretic minimum). Per kind of chunk, the idx bytes hold two segments: all
chunks' bitmaps as one bit stream, then all low fields as one bit stream; bit streams are packed LSB-first, each
segment starts on a byte boundary and the unused bits of its last byte are zero (at most 7 bits of padding per
segment). The kinds' segments follow each other in chunk-kind order. Codes are packed the same way, 2 bits
each, in wire order (chunk order, then ascending position inside a chunk).
With the defaults the wire is 80 bytes per 4096 parameters, 0.15625 bits per parameter (204.8x smaller than
fp32) plus the per-tensor table and the safetensors header.

Quantization: among a tensor's kept values v, t = the lower median of |v| (of every s-th value, s chosen so that
at most 16384 are looked at); code = 2*(v >= 0) + (|v| >= t), i.e. 0: small negative, 1: large negative,
2: small positive, 3: large positive; table[b] = mean of the values in bin b (0 for an empty bin).

Error feedback: ``e <- beta * e + delta``; encode the top-k of ``|e|`` per chunk; ``e <- e - decode(wire)``. At
kept positions the residual ``e - table[code]`` is kept, elsewhere e is untouched, so nothing is lost. The
buffers passed to ``compress`` are updated in place (when contiguous fp32 on the delta's device) and returned.
Every parameter is always encoded, k values per chunk, even when its delta is all zeros.

Decoding accepts exactly the canonical encoding and raises ``CodecError(code, message)`` otherwise; codes:
missing_tensor, extra_tensor, bad_dtype, bad_shape, bad_length, bad_padding, wrong_k, index_out_of_range,
duplicate_index, unsorted_index, non_finite_table (and non_finite_input from ``compress``).

The outer step that applies decoded updates lives in template/protocol/outer_step.py.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from template.protocol.config import HParams

IDX_SUFFIX = "::idx"
CODES_SUFFIX = "::codes"
TABLE_SUFFIX = "::table"
WIRE_SUFFIXES = (IDX_SUFFIX, CODES_SUFFIX, TABLE_SUFFIX)
TABLE_SIZE = 4
MEDIAN_SAMPLE = 1 << 14  # kept values sampled (fixed stride) for the quantizer's magnitude split


_HPARAM_FIELDS = HParams.model_fields  # the codec's defaults are the run hparams' defaults, defined once


@dataclass(frozen=True)
class CodecParams:
    """Codec settings every node must agree on (the hparams `chunk_size`, `topk`, `quant_bits`)."""

    chunk_size: int = _HPARAM_FIELDS["chunk_size"].default
    topk: int = _HPARAM_FIELDS["topk"].default
    bits: int = _HPARAM_FIELDS["quant_bits"].default

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {self.chunk_size}")
        if not 1 <= self.topk <= self.chunk_size * self.chunk_size:
            raise ValueError(f"topk must be in [1, chunk_size**2={self.chunk_size ** 2}], got {self.topk}")
        if self.bits != 2:
            raise ValueError(f"bits must be 2 (4-entry value table), got {self.bits}")

    @classmethod
    def from_hparams(cls, hp: HParams) -> CodecParams:
        return cls(chunk_size=hp.chunk_size, topk=hp.topk, bits=hp.quant_bits)

    def manifest_field(self) -> dict[str, int]:
        """The `codec` field of a gradient manifest: what a miner writes and admission compares with the run's."""
        return {"chunk_size": self.chunk_size, "topk": self.topk, "bits": self.bits}


class CodecError(ValueError):
    """A malformed wire payload; ``code`` names the failed check (stable, used in admission results)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------- chunk plan


@dataclass(frozen=True)
class ChunkGroup:
    """One kind of chunk in a tensor's 2-D view: a grid of equal blocks, each keeping ``k`` values."""

    row_start: int
    col_start: int
    num_block_rows: int
    num_block_cols: int
    block_h: int
    block_w: int
    k: int

    @property
    def num_chunks(self) -> int:
        return self.num_block_rows * self.num_block_cols

    @property
    def chunk_elems(self) -> int:
        return self.block_h * self.block_w

    @property
    def low_bits(self) -> int:
        return (self.chunk_elems // self.k).bit_length() - 1

    @property
    def high_bits(self) -> int:
        """Length of the Elias-Fano high-part bitmap of one chunk."""
        return self.k + ((self.chunk_elems - 1) >> self.low_bits) + 1

    @property
    def high_bytes(self) -> int:
        return -(-self.num_chunks * self.high_bits // 8)

    @property
    def low_bytes(self) -> int:
        return -(-self.num_chunks * self.k * self.low_bits // 8)

    @property
    def index_bytes(self) -> int:
        return self.high_bytes + self.low_bytes

    @property
    def num_kept(self) -> int:
        return self.num_chunks * self.k


@dataclass(frozen=True)
class ChunkPlan:
    rows: int
    cols: int
    groups: tuple[ChunkGroup, ...]

    @property
    def index_bytes(self) -> int:
        return sum(g.index_bytes for g in self.groups)

    @property
    def num_kept(self) -> int:
        return sum(g.num_kept for g in self.groups)


def view_2d_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(R, C) a tensor of ``shape`` is chunked as: 2-D as is, >2-D as (first, rest), 1-D/scalar as (1, numel)."""
    if len(shape) >= 2:
        return shape[0], math.prod(shape[1:])
    return 1, math.prod(shape)


@functools.lru_cache(maxsize=4096)
def chunk_plan(shape: tuple[int, ...], codec: CodecParams) -> ChunkPlan:
    """The deterministic chunking of a tensor of ``shape`` (see module docstring)."""
    rows, cols = view_2d_shape(tuple(int(s) for s in shape))
    block_h = codec.chunk_size if len(shape) >= 2 else 1
    block_w = codec.chunk_size
    full_r, rem_r = divmod(rows, block_h)
    full_c, rem_c = divmod(cols, block_w)
    full_elems = codec.chunk_size * codec.chunk_size
    # (row_start, col_start, block rows, block cols, block h, block w): interior, right, bottom, corner
    candidates = [
        (0, 0, full_r, full_c, block_h, block_w),
        (0, full_c * block_w, full_r, 1, block_h, rem_c),
        (full_r * block_h, 0, 1, full_c, rem_r, block_w),
        (full_r * block_h, full_c * block_w, 1, 1, rem_r, rem_c),
    ]
    groups = []
    for r0, c0, nr, nc, h, w in candidates:
        if nr * nc * h * w == 0:
            continue
        k = -(-codec.topk * h * w // full_elems)  # ceil: edge blocks keep proportionally fewer values
        groups.append(ChunkGroup(r0, c0, nr, nc, h, w, k))
    return ChunkPlan(rows, cols, tuple(groups))


def block_view(x2d: torch.Tensor, g: ChunkGroup) -> torch.Tensor:
    """(R, C) -> a strided view (nr, nc, h, w) of the group's blocks (no copy)."""
    sub = x2d[g.row_start:g.row_start + g.num_block_rows * g.block_h,
              g.col_start:g.col_start + g.num_block_cols * g.block_w]
    return sub.view(g.num_block_rows, g.block_h, g.num_block_cols, g.block_w).permute(0, 2, 1, 3)


def chunk_magnitudes(x2d: torch.Tensor, g: ChunkGroup, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """|x| in chunk layout (num_chunks, chunk_elems): one strided read, one contiguous write.

    Written into the front of ``scratch`` (flat, same dtype/device, large enough) when given, so that one buffer
    serves every tensor of a model (fresh memory costs a page fault per 4 KiB on first touch)."""
    numel = g.num_chunks * g.chunk_elems
    if scratch is None:
        scratch = torch.empty(numel, dtype=x2d.dtype, device=x2d.device)
    out = scratch[:numel].view(g.num_block_rows, g.num_block_cols, g.block_h, g.block_w)
    torch.abs(block_view(x2d, g), out=out)
    return out.view(g.num_chunks, g.chunk_elems)


def arange_const(start: int, end: int, step: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached read-only arange (shift tables, ranks): saves a tensor op per use on the per-tensor hot path."""
    return torch.arange(start, end, step, dtype=dtype, device=device)


@functools.lru_cache(maxsize=1024)
def chunk_offsets(g: ChunkGroup, cols: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat offset of each chunk's first element (num_chunks, 1), flat offset of each in-chunk position
    relative to it (chunk_elems,)), cached per group: no division per index on the hot path."""
    chunk_ids = torch.arange(g.num_chunks, device=device)
    row0 = g.row_start + (chunk_ids // g.num_block_cols) * g.block_h
    col0 = g.col_start + (chunk_ids % g.num_block_cols) * g.block_w
    in_chunk = torch.arange(g.chunk_elems, device=device)
    return (row0 * cols + col0)[:, None], (in_chunk // g.block_w) * cols + in_chunk % g.block_w


def flat_positions(pos: torch.Tensor, g: ChunkGroup, cols: int) -> torch.Tensor:
    """In-chunk positions (num_chunks, k) -> flat offsets into the row-major tensor, same shape (int64)."""
    chunk_base, offset_of = chunk_offsets(g, cols, pos.device)
    # index_select/index_copy_ rather than advanced indexing: the latter is many times slower on CPU
    return chunk_base + offset_of.index_select(0, pos.reshape(-1)).view(pos.shape)


# ---------------------------------------------------------------- bit packing


# pack_bits/unpack_bits have a torch version (any device) and a numpy fast path on CPU (np.packbits and
# np.unpackbits are ~10x faster than tensor shifts there); both write the same LSB-first stream (tested).


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """(n,) of 0/1 -> uint8 (ceil(n/8),), LSB-first; the unused high bits of the last byte are zero."""
    if bits.device.type == "cpu":
        return torch.from_numpy(np.packbits(bits.to(torch.uint8).reshape(-1).numpy(), bitorder="little"))
    return pack_bits_torch(bits)


def pack_bits_torch(bits: torch.Tensor) -> torch.Tensor:
    bits = bits.to(torch.uint8).reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    shifts = arange_const(0, 8, 1, torch.uint8, bits.device)
    return (bits.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)  # disjoint bits: sum == or


def unpack_bits(data: torch.Tensor, num_bits: int) -> torch.Tensor:
    """uint8 (m,) -> the first ``num_bits`` (<= 8m) bits as uint8 0/1, LSB-first."""
    if data.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(data.contiguous().numpy(), count=num_bits, bitorder="little"))
    return unpack_bits_torch(data, num_bits)


def unpack_bits_torch(data: torch.Tensor, num_bits: int) -> torch.Tensor:
    shifts = arange_const(0, 8, 1, torch.uint8, data.device)
    return ((data.reshape(-1, 1) >> shifts) & 1).reshape(-1)[:num_bits]


def pack_fields(values: torch.Tensor, width: int) -> torch.Tensor:
    """Non-negative ints (n,) < 2**width -> uint8 (ceil(n * width / 8),): one LSB-first bit stream.

    For width <= 8, eight fields fill exactly ``width`` bytes, so they are assembled in one int64 word and cut
    into bytes (no per-bit tensors; faster than numpy's unpackbits/packbits here); wider fields go bit by bit.
    """
    num_bytes = -(-values.numel() * width // 8)
    if width == 0 or values.numel() == 0:
        return torch.zeros(num_bytes, dtype=torch.uint8, device=values.device)
    v = values.reshape(-1).to(torch.int64)
    if width > 8:
        shifts = arange_const(0, width, 1, torch.int64, v.device)
        return pack_bits((v.reshape(-1, 1) >> shifts) & 1)
    pad = (-v.numel()) % 8
    if pad:
        v = torch.cat([v, v.new_zeros(pad)])
    field_shifts = arange_const(0, 8 * width, width, torch.int64, v.device)
    word = (v.view(-1, 8) << field_shifts).sum(dim=1)  # (G,): eight fields in one 8*width-bit word
    byte_shifts = arange_const(0, 8 * width, 8, torch.int64, v.device)
    return ((word.reshape(-1, 1) >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)[:num_bytes]


def unpack_fields(data: torch.Tensor, num_values: int, width: int) -> torch.Tensor:
    """uint8 (ceil(num_values * width / 8),) -> int64 (num_values,); inverse of ``pack_fields``."""
    if width == 0 or num_values == 0:
        return torch.zeros(num_values, dtype=torch.int64, device=data.device)
    if width > 8:
        weights = torch.tensor([1 << i for i in range(width)], dtype=torch.int64, device=data.device)
        bits = unpack_bits(data, num_values * width).to(torch.int64)
        return (bits.reshape(-1, width) * weights).sum(dim=1)
    b = data.to(torch.int64)
    pad = (-b.numel()) % width
    if pad:
        b = torch.cat([b, b.new_zeros(pad)])
    byte_shifts = arange_const(0, 8 * width, 8, torch.int64, data.device)
    word = (b.view(-1, width) << byte_shifts).sum(dim=1)  # (G,): width bytes -> one word of 8 fields
    field_shifts = arange_const(0, 8 * width, width, torch.int64, data.device)
    return ((word.reshape(-1, 1) >> field_shifts) & ((1 << width) - 1)).reshape(-1)[:num_values]


def concat(parts: list[torch.Tensor], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """torch.cat that does not copy a single part (most tensors have one kind of chunk)."""
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)


def padding_is_zero(data: torch.Tensor, num_bits: int) -> bool:
    """Whether the bits after the first ``num_bits`` of a packed stream are zero (canonical encoding)."""
    spare = 8 * data.numel() - num_bits
    return spare == 0 or int(data[-1]) >> (8 - spare) == 0


def encode_positions(pos: torch.Tensor, g: ChunkGroup) -> torch.Tensor:
    """Sorted distinct positions (num_chunks, k) -> Elias-Fano bytes: high bitmaps, then low fields."""
    ar = arange_const(0, g.k, 1, torch.int64, pos.device)
    high_bitmap = torch.zeros(g.num_chunks, g.high_bits, dtype=torch.uint8, device=pos.device)
    high_bitmap.scatter_(1, (pos >> g.low_bits) + ar, 1)
    low = pos & ((1 << g.low_bits) - 1)
    return torch.cat([pack_bits(high_bitmap), pack_fields(low, g.low_bits)])


def decode_positions(data: torch.Tensor, g: ChunkGroup, key: str) -> torch.Tensor:
    """Elias-Fano bytes -> positions (num_chunks, k), validated: k per chunk, in range, strictly increasing."""
    high_data, low_data = data[:g.high_bytes], data[g.high_bytes:]
    if not (padding_is_zero(high_data, g.num_chunks * g.high_bits)
            and padding_is_zero(low_data, g.num_chunks * g.k * g.low_bits)):
        raise CodecError("bad_padding", f"{key}: the unused bits of a segment's last byte are not zero")
    high_bitmap = unpack_bits(high_data, g.num_chunks * g.high_bits).reshape(g.num_chunks, g.high_bits)
    ones_per_chunk = high_bitmap.sum(dim=1, dtype=torch.int64)
    if not bool((ones_per_chunk == g.k).all()):
        bad = int((ones_per_chunk != g.k).nonzero()[0, 0])
        raise CodecError("wrong_k", f"{key}: chunk {bad} of a {g.block_h}x{g.block_w} group has "
                                    f"{int(ones_per_chunk[bad])} indices, expected {g.k}")
    one_cols = high_bitmap.nonzero()[:, 1].reshape(g.num_chunks, g.k)  # row-major: ascending per chunk
    high = one_cols - arange_const(0, g.k, 1, torch.int64, data.device)
    low = unpack_fields(low_data, g.num_kept, g.low_bits).reshape(g.num_chunks, g.k)
    pos = (high << g.low_bits) | low
    if bool((pos >= g.chunk_elems).any()):
        raise CodecError("index_out_of_range", f"{key}: an index is >= chunk size {g.chunk_elems}")
    if g.k > 1:
        step = pos[:, 1:] - pos[:, :-1]
        if bool((step == 0).any()):
            raise CodecError("duplicate_index", f"{key}: an index repeats inside a chunk")
        if bool((step < 0).any()):
            raise CodecError("unsorted_index", f"{key}: indices inside a chunk are not ascending")
    return pos


# ---------------------------------------------------------------- encode


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Ascending sort of each row of an int64 matrix; on CPU numpy's vectorised sort is far faster than torch's."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def magnitude_split(magnitude: torch.Tensor) -> torch.Tensor | float:
    """Lower median of a fixed-stride sample of at most MEDIAN_SAMPLE magnitudes.

    The split only has to be robust, not exact (the table holds exact bin means), so a sample keeps it cheap."""
    sample = magnitude[:: -(-magnitude.numel() // MEDIAN_SAMPLE)]
    rank = (sample.numel() - 1) // 2
    if sample.device.type == "cpu":  # numpy's introselect is ~3x faster than torch.kthvalue here
        return float(np.partition(sample.numpy(), rank)[rank])
    return sample.kthvalue(rank + 1).values


def quantize(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept values (M,) fp32 -> (codes int64 (M,), table fp32 (4,)): sign x {small, large}, bin means."""
    if values.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=values.device), values.new_zeros(TABLE_SIZE)
    magnitude = values.abs()
    codes = 2 * (values >= 0) + (magnitude >= magnitude_split(magnitude))  # int64 (M,)
    counts = torch.bincount(codes, minlength=TABLE_SIZE)
    if values.device.type == "cpu":
        sums = torch.bincount(codes, weights=values.double(), minlength=TABLE_SIZE)  # sequential: reproducible
    else:  # CUDA bincount adds floats atomically (run-to-run noise); masked sums are reproducible
        sums = torch.stack([torch.where(codes == b, values, 0.0).sum(dtype=torch.float64) for b in range(TABLE_SIZE)])
    table = torch.where(counts > 0, sums / counts.clamp(min=1), 0.0)
    return codes, table.to(torch.float32)


def encode_tensor(name: str, e: torch.Tensor, codec: CodecParams, scratch: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
    """Encode the accumulated error ``e`` (contiguous fp32, any shape); subtract what was sent from it in place.

    ``scratch``: optional flat fp32 buffer of >= e.numel() elements on e's device, reused for |e| in chunks."""
    plan = chunk_plan(tuple(e.shape), codec)
    e2d = e.view(plan.rows, plan.cols)
    e_flat = e.view(-1)
    index_bytes, flat_idx = [], []
    for g in plan.groups:
        top = torch.topk(chunk_magnitudes(e2d, g, scratch), g.k, dim=1, sorted=False).indices  # (chunks, k)
        pos = sort_rows(top)  # (num_chunks, k) ascending
        index_bytes.append(encode_positions(pos, g))
        flat_idx.append(flat_positions(pos, g, plan.cols).reshape(-1))
    flat = concat(flat_idx, torch.int64, e2d.device)
    values = e_flat.index_select(0, flat)
    if not bool(torch.isfinite(values).all()):
        # topk ranks NaN/inf first, so any non-finite entry in a chunk shows up among the kept values
        raise CodecError("non_finite_input", f"{name}: the error-feedback accumulator is not finite")
    codes, table = quantize(values)
    e_flat.index_copy_(0, flat, values - table.index_select(0, codes))  # flat positions are distinct
    idx = concat(index_bytes, torch.uint8, e2d.device)
    return {
        name + IDX_SUFFIX: idx.cpu().contiguous(),
        name + CODES_SUFFIX: pack_fields(codes, 2).cpu().contiguous(),
        name + TABLE_SUFFIX: table.cpu().contiguous(),
    }


def compress(delta: dict[str, torch.Tensor], ef: dict[str, torch.Tensor] | None, codec: CodecParams, beta: float
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Error-feedback top-k compression of a pseudo-gradient.

    Args:
        delta: name -> tensor (any float dtype, CPU or CUDA), the pseudo-gradient theta_w - theta_local.
            Never modified.
        ef: name -> error-feedback buffer of the same shape, or None for zeros. CONSUMED: a buffer that is
            already contiguous fp32 on its delta's device is updated in place and returned as the new buffer
            (like an optimizer's state: no second model-sized allocation); clone it first to keep the old one.
        codec: chunking and top-k settings.
        beta: error-feedback decay in [0, 1].
    Returns:
        (wire, new_ef): wire tensors (CPU, contiguous, uint8/float32) named ``{n}::idx|codes|table``; new_ef
        fp32 on each delta's device.
    Raises:
        ValueError for mismatched ef; CodecError("non_finite_input") if the accumulator is not finite (the
        ef buffers may then be partly updated: the window's update is unusable anyway).
    """
    wire: dict[str, torch.Tensor] = {}
    new_ef: dict[str, torch.Tensor] = {}
    largest = max((t.numel() for t in delta.values()), default=0)
    scratch: dict[torch.device, torch.Tensor] = {}
    for name in sorted(delta):
        d = delta[name].detach()
        if d.device not in scratch:
            scratch[d.device] = torch.empty(largest, dtype=torch.float32, device=d.device)
        e = accumulate_error(name, d, None if ef is None else ef, beta)
        wire.update(encode_tensor(name, e, codec, scratch[d.device]))
        new_ef[name] = e
    return wire, new_ef


def accumulate_error(name: str, d: torch.Tensor, ef: dict[str, torch.Tensor] | None, beta: float) -> torch.Tensor:
    """e = beta * ef[name] + d as contiguous fp32 on d's device; in place in ef[name] when that is possible."""
    d32 = d.to(torch.float32)
    if ef is None:
        return d32.clone(memory_format=torch.contiguous_format) if d32 is d else d32.contiguous()
    if name not in ef or tuple(ef[name].shape) != tuple(d.shape):
        raise ValueError(f"ef must hold a buffer of shape {tuple(d.shape)} for {name!r}")
    buf = ef[name].detach()
    if buf.dtype == torch.float32 and buf.device == d.device and buf.is_contiguous():
        return torch.add(d32, buf, alpha=beta, out=buf)
    return torch.add(d32, buf.to(d.device, torch.float32), alpha=beta).contiguous()


# ---------------------------------------------------------------- decode


def check_wire_tensor(wire: dict[str, torch.Tensor], key: str, dtype: torch.dtype, length: int) -> torch.Tensor:
    if key not in wire:
        raise CodecError("missing_tensor", f"{key} is missing")
    t = wire[key]
    if not isinstance(t, torch.Tensor):
        raise CodecError("bad_dtype", f"{key} is not a tensor")
    if t.dtype != dtype:
        raise CodecError("bad_dtype", f"{key} has dtype {t.dtype}, expected {dtype}")
    if t.dim() != 1:
        raise CodecError("bad_shape", f"{key} has shape {tuple(t.shape)}, expected 1-D")
    if t.numel() != length:
        raise CodecError("bad_length", f"{key} has {t.numel()} elements, expected {length}")
    return t.detach().to("cpu").contiguous()


def check_key_set(wire: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    expected = {n + s for n in shapes for s in WIRE_SUFFIXES}
    extra = sorted(set(wire) - expected)
    if extra:
        raise CodecError("extra_tensor", f"unexpected wire tensors: {extra[:5]}")
    missing = sorted(expected - set(wire))
    if missing:
        raise CodecError("missing_tensor", f"missing wire tensors: {missing[:5]}")


def decode_tensor(name: str, wire: dict[str, torch.Tensor], shape: tuple[int, ...], codec: CodecParams
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated (flat positions int64 (M,), codes int64 (M,), table fp32 (4,)) of one tensor, on CPU."""
    plan = chunk_plan(tuple(shape), codec)
    idx_key, codes_key, table_key = (name + s for s in WIRE_SUFFIXES)
    idx = check_wire_tensor(wire, idx_key, torch.uint8, plan.index_bytes)
    packed_codes = check_wire_tensor(wire, codes_key, torch.uint8, -(-2 * plan.num_kept // 8))
    table = check_wire_tensor(wire, table_key, torch.float32, TABLE_SIZE)
    if not bool(torch.isfinite(table).all()):
        raise CodecError("non_finite_table", f"{table_key} holds a NaN or inf")
    if not padding_is_zero(packed_codes, 2 * plan.num_kept):
        raise CodecError("bad_padding", f"{codes_key}: the unused bits of the last byte are not zero")
    flat_idx, offset = [], 0
    for g in plan.groups:
        pos = decode_positions(idx[offset:offset + g.index_bytes], g, idx_key)
        flat_idx.append(flat_positions(pos, g, plan.cols).reshape(-1))
        offset += g.index_bytes
    flat = concat(flat_idx, torch.int64, torch.device("cpu"))
    return flat, unpack_fields(packed_codes, plan.num_kept, 2), table


def _decode_all(wire: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], codec: CodecParams, *,
                dense: bool, indices: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    check_key_set(wire, shapes)
    dense_out: dict[str, torch.Tensor] = {}
    index_out: dict[str, torch.Tensor] = {}
    for name in sorted(shapes):
        flat, codes, table = decode_tensor(name, wire, tuple(shapes[name]), codec)
        if dense:
            out = torch.zeros(math.prod(shapes[name]), dtype=torch.float32)
            out.index_copy_(0, flat, table.index_select(0, codes))  # flat positions are distinct (validated)
            dense_out[name] = out.view(tuple(shapes[name]))
        if indices:
            index_out[name] = torch.from_numpy(np.sort(flat.numpy()))
    return dense_out, index_out


def decompress_with_indices(wire: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], codec: CodecParams
                            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One validating pass: (dense fp32 CPU tensors of ``shapes``, ascending flat kept positions per tensor).

    Raises CodecError with a distinct code for every failed check (see module docstring).
    """
    return _decode_all(wire, shapes, codec, dense=True, indices=True)


def decompress(wire: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], codec: CodecParams
               ) -> dict[str, torch.Tensor]:
    """Strictly validate a wire dict and decode it to dense fp32 CPU tensors of ``shapes``.

    Raises CodecError with a distinct code for every failed check (see module docstring).
    """
    return _decode_all(wire, shapes, codec, dense=True, indices=False)[0]


def wire_indices(wire: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], codec: CodecParams
                 ) -> dict[str, torch.Tensor]:
    """Validated kept positions per tensor as ascending flat offsets (int64, CPU), for copy detection."""
    return _decode_all(wire, shapes, codec, dense=False, indices=True)[1]
