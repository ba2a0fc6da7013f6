"""Token data: the paged corpus format, its manifest, and the deterministic sample assignment.

The corpus is a sequence of fixed-length samples, each `seq_len + 1` tokens (inputs plus the shifted
targets), stored in raw little-endian token shards (`uint16` while the vocabulary fits, else `uint32`)
in the dataset bucket. Every shard is cut into pages of `page_samples` whole samples; one page is one
HTTP range GET, and each shard has an index object holding the sha256 of each of its pages, so a page
read alone is verified (32 bytes per page: 32 MB per TB of tokens at 1 MiB pages). The manifest lists
shards, not samples (about 150 bytes per shard). Global sample ids run over the shards in manifest
order. Samples [0, heldout_start) are the training range assigned to miners; [heldout_start,
num_samples) is the held-out range no miner is ever assigned (the loss curve, held-out checks).

`sample_ids` is the assignment rule every node recomputes to check a miner's data receipt: a pure
function of (uid, window, seed, n, num_train). Its cost does not grow with the corpus: the training
range is cut into slots of `n` consecutive samples, a schedule picks the active span of slots of
window w (every span once per epoch, in a keyed order), and a keyed Feistel permutation of the span
(cycle-walking to its exact size) gives each uid its slot. So a uid's samples are whole pages when
`n` is a multiple of `page_samples`, and any node computes any uid's ids in microseconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:  # torch is imported where a batch is made: the assignment alone stays small (no torch)
    import torch

PAGE_DIGEST_BYTES = 32  # sha256 per page in a shard's index object
SPAN_SLOTS = 4096  # slots of one active span: uids below it never share samples in a window


class DatasetError(RuntimeError):
    """The dataset could not be fetched or does not verify."""


class TokenizerInfo(BaseModel):
    """The tokenizer the shards were made with; its JSON is stored at `key` in the dataset bucket."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(description="human-readable name, e.g. 'bpe-8192-shakespeare'")
    key: str = Field(description="object key of the tokenizers JSON")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the tokenizer JSON bytes")
    bytes: int = Field(gt=0, description="size of the tokenizer JSON in bytes")
    eos_id: int = Field(ge=0, description="token id joining documents")


class ShardInfo(BaseModel):
    """One raw token shard: num_samples rows of seq_len + 1 tokens, and its index of page digests."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str = Field(description="object key, e.g. shards/train/000003.bin")
    num_samples: int = Field(gt=0, description="rows in this shard")
    index_key: str = Field(description="object key of the shard's page index (sha256 of each page, in order)")
    index_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the index object")


class DatasetManifest(BaseModel):
    """Everything a node needs to fetch and verify the dataset (stored at `layout.dataset_manifest_key()`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: Literal[2] = Field(2, description="manifest format version")
    source: str = Field(description="where the text came from (e.g. 'shakespeare')")
    tokenizer: TokenizerInfo
    vocab_size: int = Field(gt=0, le=1 << 32, description="tokenizer vocabulary size; every token id is below it")
    seq_len: int = Field(gt=0, description="model context; each stored sample holds seq_len + 1 tokens")
    dtype: Literal["uint16", "uint32"] = Field(description="token dtype in the shards (little-endian)")
    page_samples: int = Field(gt=0, description="samples per page: one page is one range GET, verified alone")
    num_samples: int = Field(gt=0, description="total samples over all shards")
    heldout_start: int = Field(gt=0, description="samples [heldout_start, num_samples) are never assigned")
    shards: list[ShardInfo] = Field(min_length=1, description="train shards first, then held-out shards")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        if sum(s.num_samples for s in self.shards) != self.num_samples:
            raise ValueError("num_samples must equal the sum of the shards' num_samples")
        if not 0 < self.heldout_start <= self.num_samples:
            raise ValueError(f"heldout_start must be in (0, num_samples], got {self.heldout_start}")
        if self.heldout_start % self.page_samples and self.heldout_start != self.num_samples:
            raise ValueError(f"heldout_start {self.heldout_start} must be a multiple of page_samples "
                             f"{self.page_samples}")
        if any(s.num_samples % self.page_samples for s in self.shards[:-1]):
            raise ValueError(f"every shard but the last must hold whole pages of {self.page_samples} samples")
        keys = [s.key for s in self.shards] + [s.index_key for s in self.shards]
        if len(set(keys)) != len(keys):
            raise ValueError("shard and index keys must be unique")
        if self.dtype == "uint16" and self.vocab_size > 1 << 16:
            raise ValueError(f"vocab_size {self.vocab_size} does not fit dtype uint16")
        return self

    @property
    def num_train(self) -> int:
        """Size of the assignable training range [0, num_train)."""
        return self.heldout_start

    @property
    def sample_bytes(self) -> int:
        """Bytes of one stored sample."""
        return (self.seq_len + 1) * (2 if self.dtype == "uint16" else 4)

    @property
    def num_pages(self) -> int:
        return sum(pages_in(s.num_samples, self.page_samples) for s in self.shards)

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), indent=1, sort_keys=True).encode()


def pages_in(num_samples: int, page_samples: int) -> int:
    """Pages of a shard of `num_samples` samples (the last one may be short)."""
    return -(-num_samples // page_samples)


class PageMap:
    """Where sample ids live: global page number <-> (shard, byte range). Pure; O(shards) memory.

    Pages are numbered globally over the shards in order; shard i's pages start at `first_page[i]`."""

    def __init__(self, manifest: DatasetManifest) -> None:
        self.manifest = manifest
        self.page_samples = manifest.page_samples
        self.sample_bytes = manifest.sample_bytes
        counts = [s.num_samples for s in manifest.shards]
        self.first_sample = np.cumsum([0] + counts)  # (shards + 1,)
        self.first_page = np.cumsum([0] + [pages_in(c, self.page_samples) for c in counts])  # (shards + 1,)

    def page_of(self, sample_id: int) -> int:
        """Global page holding `sample_id`. Raises IndexError outside [0, num_samples)."""
        if not 0 <= sample_id < self.manifest.num_samples:
            raise IndexError(f"sample id {sample_id} out of range [0, {self.manifest.num_samples})")
        shard = int(np.searchsorted(self.first_sample, sample_id, side="right")) - 1
        return int(self.first_page[shard]) + (sample_id - int(self.first_sample[shard])) // self.page_samples

    def locate(self, page: int) -> tuple[int, int, int, int]:
        """(shard index, page number within the shard, first sample id, samples in the page)."""
        if not 0 <= page < int(self.first_page[-1]):
            raise IndexError(f"page {page} out of range [0, {int(self.first_page[-1])})")
        shard = int(np.searchsorted(self.first_page, page, side="right")) - 1
        local = page - int(self.first_page[shard])
        first = int(self.first_sample[shard]) + local * self.page_samples
        count = min(self.page_samples, int(self.first_sample[shard + 1]) - first)
        return shard, local, first, count

    def byte_range(self, page: int) -> tuple[int, int]:
        """(offset, length) of `page` in its shard object."""
        _, local, _, count = self.locate(page)
        return local * self.page_samples * self.sample_bytes, count * self.sample_bytes


def page_digests(index: bytes) -> list[bytes]:
    """The page digests of a shard index object. Raises DatasetError on a malformed index."""
    if len(index) % PAGE_DIGEST_BYTES:
        raise DatasetError(f"shard index of {len(index)} bytes is not whole {PAGE_DIGEST_BYTES}-byte digests")
    return [index[i:i + PAGE_DIGEST_BYTES] for i in range(0, len(index), PAGE_DIGEST_BYTES)]


def page_digest(page: bytes) -> bytes:
    return hashlib.sha256(page).digest()


class SampleSource(Protocol):
    """What training and evaluation read samples from: local shards (`TokenDataset`) or the paged corpus
    fetched from the dataset bucket (`storage.dataset.PagedDataset`)."""

    @property
    def page_samples(self) -> int:
        """Samples per read unit (a page): a batch costs a read per page it touches; 1 where samples are local."""
        ...

    def __len__(self) -> int:
        ...

    def batch(self, ids: list[int]) -> torch.Tensor:
        """Samples `ids` as a LongTensor (len(ids), seq_len + 1)."""
        ...

    def prefetch(self, ids: list[int]) -> None:
        """Start reading samples `ids` in the background (no-op when they are local)."""
        ...


class TokenDataset:
    """Samples from local memory-mapped `.npy` shards (benchmarks, tests); ids are global over the shards."""

    page_samples = 1  # nothing is read by page: any sample costs the same

    def __init__(self, shard_paths: list[Path], seq_len: int) -> None:
        self.seq_len = seq_len
        self._shards = [np.load(path, mmap_mode="r", allow_pickle=False) for path in shard_paths]
        for path, shard in zip(shard_paths, self._shards, strict=True):
            if shard.ndim != 2 or shard.shape[1] != seq_len + 1:
                raise DatasetError(f"shard {path} has shape {shard.shape}, expected (n, {seq_len + 1})")
        # starts[i] = global id of shard i's first row.
        self._starts = np.cumsum([0] + [len(shard) for shard in self._shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def prefetch(self, ids: list[int]) -> None:
        """Nothing to fetch: every shard is local."""

    def batch(self, ids: list[int]) -> torch.Tensor:
        """Samples `ids` as a LongTensor of shape (len(ids), seq_len + 1). Raises IndexError on a bad id."""
        import torch

        rows = np.empty((len(ids), self.seq_len + 1), dtype=np.int64)
        for row, sample_id in enumerate(ids):
            if not 0 <= sample_id < len(self):
                raise IndexError(f"sample id {sample_id} out of range [0, {len(self)})")
            shard = int(np.searchsorted(self._starts, sample_id, side="right")) - 1
            rows[row] = self._shards[shard][sample_id - self._starts[shard]]
        return torch.from_numpy(rows)  # (B, seq_len + 1)


def load_manifest(raw: bytes) -> DatasetManifest:
    """Parse manifest JSON. Raises DatasetError on anything invalid."""
    try:
        return DatasetManifest.model_validate_json(raw)
    except ValidationError as exc:
        raise DatasetError(f"invalid dataset manifest: {exc}") from None


# -- assignment (pure)


def _seed_int(*parts: object) -> int:
    """A 256-bit integer seed from the parts; identical on every machine (no Python hash())."""
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


_ROUNDS = 6
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def _feistel_keys(size: int, key: tuple[object, ...]) -> tuple[int, list[int]]:
    """(bits per half, round keys) of the Feistel permutation of [0, size) under `key`."""
    half = max(1, ((size - 1).bit_length() + 1) // 2)
    seed = _seed_int("feistel", size, *key)
    return half, [((seed >> (64 * (i % 4))) & _MASK64) ^ i for i in range(_ROUNDS)]


def _mix64_int(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _permute_one(position: int, size: int, half: int, keys: list[int]) -> int:
    """`permute` of one position with Python ints (same values as the numpy path)."""
    mask = (1 << half) - 1
    v = position
    while True:
        left, right = v >> half, v & mask
        for k in keys:
            left, right = right, left ^ (_mix64_int(right ^ k) & mask)
        v = (left << half) | right
        if v < size:
            return v


def permute(positions: np.ndarray | list[int], size: int, *key: object) -> np.ndarray:
    """A keyed bijection of [0, size) applied to `positions`: int64 array of the same length.

    A balanced Feistel network on the smallest even-bit domain holding `size` (at most 4 * size),
    cycle-walking values that land outside [0, size) until they are inside. Stateless: O(len(positions))
    time and memory whatever `size` is; the same on every machine. Raises ValueError on a bad input."""
    x = np.asarray(positions, dtype=np.int64)
    if size <= 0 or size > 1 << 62:
        raise ValueError(f"size must be in [1, 2^62], got {size}")
    if x.size and (x.min() < 0 or x.max() >= size):
        raise ValueError(f"positions must be in [0, {size})")
    half, keys = _feistel_keys(size, key)
    if x.size <= 8:  # a few positions (one uid's slot): Python ints beat numpy's per-call overhead
        return np.asarray([_permute_one(int(p), size, half, keys) for p in x], dtype=np.int64)
    mask = np.uint64((1 << half) - 1)
    round_keys = [np.uint64(k) for k in keys]
    out = x.astype(np.uint64)
    todo = np.ones(out.shape, dtype=bool)
    with np.errstate(over="ignore"):
        while todo.any():
            v = out[todo]
            left, right = v >> np.uint64(half), v & mask
            for k in round_keys:
                left, right = right, left ^ (_mix64(right ^ k) & mask)
            v = (left << np.uint64(half)) | right
            out[todo] = v
            todo[todo] = v >= np.uint64(size)  # cycle-walk: permute again until inside
    return out.astype(np.int64)


def active_span(window: int, seed: int, num_slots: int) -> tuple[int, int]:
    """(first slot, slots) of the span of slots active in `window`: the schedule of which part of the
    training range is read. Spans of SPAN_SLOTS (the last absorbs the remainder) are visited once per
    epoch of `num_spans` windows, in an order keyed by (seed, epoch)."""
    span = min(num_slots, SPAN_SLOTS)
    num_spans = num_slots // span
    epoch, turn = divmod(window, num_spans)
    k = int(permute([turn], num_spans, "span", seed, epoch)[0])
    return k * span, span if k < num_spans - 1 else num_slots - k * span


def sample_ids(uid: int, window: int, seed: int, n: int, num_train: int) -> list[int]:
    """The `n` training sample ids assigned to `uid` in `window`, all in [0, num_train).

    The training range is cut into slots of `n` consecutive ids; window w's active span of slots
    (`active_span`) is permuted by a Feistel bijection keyed by (seed, w) and uid gets the slot at
    position uid. So uids below the span size (SPAN_SLOTS, or all slots of a small corpus) never
    overlap; beyond it uids share slots. If n > num_train the ids wrap around the training range.
    """
    if uid < 0 or window < 0 or n < 0 or num_train <= 0:
        raise ValueError(f"need uid >= 0, window >= 0, n >= 0, num_train > 0; got {uid}, {window}, {n}, {num_train}")
    if n == 0:
        return []
    num_slots = num_train // n
    if num_slots == 0:  # fewer training samples than one slot: wrap from a keyed start
        start = int(permute([uid % num_train], num_train, "wrap", seed, window)[0])
        return [(start + j) % num_train for j in range(n)]
    first, size = active_span(window, seed, num_slots)
    slot = first + int(permute([uid % size], size, "slot", seed, window)[0])
    return list(range(slot * n, slot * n + n))


def heldout_ids(window: int, seed: int, n: int, heldout_start: int, num_samples: int) -> list[int]:
    """`min(n, held-out size)` distinct ids drawn from the held-out range [heldout_start, num_samples)."""
    size = num_samples - heldout_start
    if window < 0 or n < 0 or heldout_start < 0 or size <= 0:
        raise ValueError(f"need window >= 0, n >= 0 and 0 <= heldout_start < num_samples; got {window}, {n}, "
                         f"{heldout_start}, {num_samples}")
    picked = permute(np.arange(min(n, size)), size, "heldout", seed, window)
    return [heldout_start + int(i) for i in picked]


LOSS_CURVE_SAMPLES = 32  # the fixed held-out samples of the run's loss curve and of the outer-step guard


def loss_curve_ids(heldout_start: int, num_samples: int, n: int = LOSS_CURVE_SAMPLES) -> list[int]:
    """The first `n` held-out ids: the fixed set of the run's loss curve (and the lead's step guard).

    Public, so nobody scores on it: miners may have trained on it, which only makes the curve optimistic."""
    if not 0 <= heldout_start < num_samples:
        raise ValueError(f"need 0 <= heldout_start < num_samples; got {heldout_start}, {num_samples}")
    return list(range(heldout_start, min(heldout_start + n, num_samples)))


def eval_ids(rng_seed: int, n: int, num_train: int, exclude: set[int]) -> list[int]:
    """`n` distinct training ids in [0, num_train) outside `exclude`, drawn from `rng_seed`.

    The validator's random evaluation batch: `rng_seed` comes from validator-private randomness drawn
    after the upload deadline, `exclude` is every id assigned to a judged miner in the window, so no
    miner can have trained on the batch in advance except by training on the whole training range.
    Each id usually lands on its own page, so on the paged corpus the batch costs a page read per id;
    the validator draws by page (`eval_ids_by_page`). Raises ValueError when fewer than `n` ids are left."""
    if n < 0 or num_train <= 0:
        raise ValueError(f"need n >= 0 and num_train > 0; got {n}, {num_train}")
    free = num_train - len({i for i in exclude if 0 <= i < num_train})
    if free < n:
        raise ValueError(f"only {free} training ids are left outside the window's assignments, need {n}")
    rng = np.random.Generator(np.random.PCG64(_seed_int("eval", rng_seed)))
    picked: list[int] = []
    chosen: set[int] = set()
    while len(picked) < n:
        for i in rng.integers(0, num_train, size=2 * (n - len(picked)) + 8):
            i = int(i)
            if i not in exclude and i not in chosen:
                chosen.add(i)
                picked.append(i)
                if len(picked) == n:
                    break
    return picked


EVAL_MIN_PAGES = 4  # the validator's random batch spans at least this many pages (eval_ids_by_page)


def eval_ids_by_page(rng_seed: int, n: int, num_train: int, exclude: set[int], page_samples: int,
                     min_pages: int = 1) -> list[int]:
    """`n` distinct training ids in [0, num_train) outside `exclude`, drawn by page from `rng_seed`.

    `eval_ids` with a read cost that does not grow with `n`: the training range is cut into pages of
    `page_samples` ids ([k * page_samples, (k + 1) * page_samples), the pages of the paged corpus), pages
    are visited in an order keyed by `rng_seed` (a Feistel permutation, so O(pages visited)) and each
    gives a random subset of its ids outside `exclude`. The batch spans k = max(ceil(n / page_samples),
    min(min_pages, n)) whole free pages, n split evenly over them, plus any partial page (one holding an
    excluded id, or the short last page) on the way, whose free ids count toward n but not toward k. So
    a batch costs k page reads plus the partial pages, never more than k pages with no excluded id.

    Statistics: samples of one page are not adjacent text (the preparer shuffles samples within chunks
    of 64 pages) but come from one region of the source (one file, dump or domain), so a batch of one
    page measures the loss on one region; `min_pages` spreads it over that many regions (the validator
    uses EVAL_MIN_PAGES, so no one region is more than a quarter of the batch). The draw is as private as
    `rng_seed` (validator randomness drawn after the upload deadline): which pages, and which samples in
    them, are unknown to a miner until then. Raises ValueError on a bad argument or when fewer than `n`
    ids are left outside `exclude`."""
    if n < 0 or num_train <= 0 or page_samples <= 0 or min_pages <= 0:
        raise ValueError(f"need n >= 0, num_train > 0, page_samples > 0 and min_pages > 0; got {n}, {num_train}, "
                         f"{page_samples}, {min_pages}")
    excluded: dict[int, set[int]] = {}  # page -> its excluded ids
    for i in exclude:
        if 0 <= i < num_train:
            excluded.setdefault(i // page_samples, set()).add(i)
    free = num_train - sum(len(ids) for ids in excluded.values())
    if free < n:
        raise ValueError(f"only {free} training ids are left outside the window's assignments, need {n}")
    if n == 0:
        return []
    num_pages = pages_in(num_train, page_samples)
    k = max(-(-n // page_samples), min(min_pages, n))
    rows = np.random.Generator(np.random.PCG64(_seed_int("eval-rows", rng_seed)))
    picked: list[int] = []
    rest: list[int] = []  # free ids of visited pages not taken (used only if every page was visited)
    whole = 0  # whole free pages taken so far
    step = 4 * k + 16  # pages permuted at a time
    for start in range(0, num_pages, step):
        for page in permute(np.arange(start, min(start + step, num_pages)), num_pages, "eval-pages", rng_seed):
            first = int(page) * page_samples
            gone = excluded.get(int(page), set())
            ids = [i for i in range(first, min(first + page_samples, num_train)) if i not in gone]
            if not ids:
                continue
            need = n - len(picked)
            take = min(len(ids), -(-need // max(1, k - whole)))  # an even share of what is left over k pages
            order = [ids[int(j)] for j in rows.permutation(len(ids))]
            picked += order[:take]
            rest += order[take:]
            whole += len(ids) == page_samples
            if len(picked) == n:
                return picked
    # only when partial pages fell short: their leftover free ids (no new page), enough since free >= n
    return picked + rest[:n - len(picked)]


def data_receipt(ids: list[int]) -> str:
    """sha256 hex of the sample ids in order (each as a little-endian signed 64-bit integer)."""
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()
