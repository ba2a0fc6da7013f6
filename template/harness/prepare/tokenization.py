"""Tokenization: training a byte-level BPE, and documents -> token arrays joined with EOS, in batches.

Documents are encoded in batches of about BATCH_CHARS characters because ``tokenizers``' Rust
``encode_batch`` uses every core on a batch; one call per document would use one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from template.harness.prepare.sources import Position

EOS_TOKEN = "<|endoftext|>"
BATCH_CHARS = 8 << 20  # characters tokenized per encode_batch call
TOKENIZER_TRAIN_DOCS = 200_000  # documents a trained tokenizer sees
MIN_VOCAB_SIZE = 257  # the 256 byte tokens and EOS


def train_tokenizer(documents: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (a ``tokenizers.Tokenizer``) with EOS as special token 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def train_tokenizer_streamed(docs: Iterable[str], vocab_size: int, limit: int = TOKENIZER_TRAIN_DOCS) -> Any:
    """`train_tokenizer` on the first `limit` documents of a stream (a sample is enough for the merges,
    and the whole of a large corpus would not fit the trainer's memory)."""
    return train_tokenizer(itertools.islice(docs, limit), vocab_size)


def load_tokenizer(tokenizer_json: bytes) -> Any:
    """The ``tokenizers.Tokenizer`` of a tokenizer.json."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json.decode())


def eos_id(tokenizer: Any) -> int:
    """The id of EOS, which joins documents. Raises ValueError when the tokenizer has none."""
    eos = tokenizer.token_to_id(EOS_TOKEN)
    if eos is None:
        raise ValueError(f"the tokenizer has no {EOS_TOKEN} token to join documents with")
    return int(eos)


def token_dtype(vocab_size: int) -> str:
    """The narrowest unsigned dtype that holds every token id: half the bytes while the vocabulary fits 16 bits."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def token_batches(tokenizer: Any, documents: Iterable[tuple[Position, str]], eos: int,
                  dtype: str) -> Iterator[tuple[Position, list[np.ndarray]]]:
    """For each batch of about BATCH_CHARS characters: the position after its last document and each
    document's tokens followed by EOS. The position is where a resumed run starts again."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # encode_batch on every core
    batch: list[str] = []
    chars = 0
    for pos, doc in documents:
        batch.append(doc)
        chars += len(doc)
        if chars >= BATCH_CHARS:
            yield (pos[0], pos[1] + 1), encode_batch(tokenizer, batch, eos, dtype)
            batch, chars = [], 0
    if batch:
        yield (pos[0], pos[1] + 1), encode_batch(tokenizer, batch, eos, dtype)


def encode_batch(tokenizer: Any, documents: list[str], eos: int, dtype: str) -> list[np.ndarray]:
    """Each document's token ids followed by EOS, as `dtype` arrays."""
    return [np.asarray(encoding.ids + [eos], dtype=dtype) for encoding in tokenizer.encode_batch(documents)]
