"""Token data: the dataset manifest, memory-mapped shards, and the deterministic sample assignment.

The dataset is a sequence of fixed-length samples, each `seq_len + 1` tokens (inputs plus the
shifted targets), stored in `.npy` shards in the dataset bucket. Global sample ids run over the
shards in manifest order. Samples [0, heldout_start) are the training range assigned to miners;
[heldout_start, num_samples) is the held-out range no miner is ever assigned (validators' random
eval batches).

`sample_ids` is the assignment rule every node recomputes to check a miner's data receipt: it is
a pure function of (uid, window, seed, n, num_train) that gives the same answer on every machine.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_MANIFEST_VERSION = 1


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
    """One `.npy` shard: a (num_samples, seq_len + 1) array."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str = Field(description="object key, e.g. shards/train/000003.npy")
    num_samples: int = Field(gt=0, description="rows in this shard")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the .npy file bytes")
    bytes: int = Field(gt=0, description="size of the .npy file in bytes")


class DatasetManifest(BaseModel):
    """Everything a node needs to fetch and verify the dataset (stored at `layout.dataset_manifest_key()`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: int = Field(_MANIFEST_VERSION, description="manifest format version")
    source: str = Field(description="where the text came from (e.g. 'shakespeare')")
    tokenizer: TokenizerInfo
    vocab_size: int = Field(gt=0, le=1 << 32, description="tokenizer vocabulary size; every token id is below it")
    seq_len: int = Field(gt=0, description="model context; each stored sample holds seq_len + 1 tokens")
    dtype: Literal["uint16", "uint32"] = Field(description="token dtype in the shards")
    num_samples: int = Field(gt=0, description="total samples over all shards")
    heldout_start: int = Field(gt=0, description="samples [heldout_start, num_samples) are never assigned")
    shards: list[ShardInfo] = Field(min_length=1, description="train shards first, then held-out shards")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        if sum(s.num_samples for s in self.shards) != self.num_samples:
            raise ValueError("num_samples must equal the sum of the shards' num_samples")
        if not 0 < self.heldout_start <= self.num_samples:
            raise ValueError(f"heldout_start must be in (0, num_samples], got {self.heldout_start}")
        if len({s.key for s in self.shards}) != len(self.shards):
            raise ValueError("shard keys must be unique")
        if self.dtype == "uint16" and self.vocab_size > 1 << 16:
            raise ValueError(f"vocab_size {self.vocab_size} does not fit dtype uint16")
        return self

    @property
    def num_train(self) -> int:
        """Size of the assignable training range [0, num_train)."""
        return self.heldout_start

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(), indent=1, sort_keys=True).encode()


class TokenDataset:
    """Samples from memory-mapped `.npy` shards; sample ids are global over the shards in order."""

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

    def batch(self, ids: list[int]) -> torch.Tensor:
        """Samples `ids` as a LongTensor of shape (len(ids), seq_len + 1). Raises IndexError on a bad id."""
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


@lru_cache(maxsize=8)
def _window_permutation(window: int, seed: int, num_train: int) -> np.ndarray:
    # Cached: a validator recomputes the assignment of every uid of one window.
    perm = np.random.Generator(np.random.PCG64(_seed_int("assign", seed, window))).permutation(num_train)
    perm.setflags(write=False)
    return perm


def sample_ids(uid: int, window: int, seed: int, n: int, num_train: int) -> list[int]:
    """The `n` training sample ids assigned to `uid` in `window`, all in [0, num_train).

    One permutation of [0, num_train) per (seed, window); uid gets slice [uid*n, (uid+1)*n).
    So uids do not overlap as long as (uid+1)*n <= num_train. Beyond that the slice wraps around
    the permutation cyclically: ids stay valid but overlap other uids' (and repeat if n > num_train).
    """
    if uid < 0 or window < 0 or n < 0 or num_train <= 0:
        raise ValueError(f"need uid >= 0, window >= 0, n >= 0, num_train > 0; got {uid}, {window}, {n}, {num_train}")
    perm = _window_permutation(window, seed, num_train)
    positions = (uid * n + np.arange(n, dtype=np.int64)) % num_train
    return [int(i) for i in perm[positions]]


def heldout_ids(window: int, seed: int, n: int, heldout_start: int, num_samples: int) -> list[int]:
    """`min(n, held-out size)` distinct ids drawn from the held-out range [heldout_start, num_samples)."""
    size = num_samples - heldout_start
    if window < 0 or n < 0 or heldout_start < 0 or size <= 0:
        raise ValueError(f"need window >= 0, n >= 0 and 0 <= heldout_start < num_samples; got {window}, {n}, "
                         f"{heldout_start}, {num_samples}")
    rng = np.random.Generator(np.random.PCG64(_seed_int("heldout", seed, window)))
    picked = rng.choice(size, size=min(n, size), replace=False)
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
    Raises ValueError when fewer than `n` ids are left."""
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


def data_receipt(ids: list[int]) -> str:
    """sha256 hex of the sample ids in order (each as a little-endian signed 64-bit integer)."""
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()
