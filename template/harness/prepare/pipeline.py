"""Preparing a corpus end to end: documents -> tokens -> paged shards -> manifest, resumable.

The steps live in their own modules (sources, readers, tokenization, corpus_writer, shards, checkpoint,
manifest); this one decides their order, what a recipe is (the settings a rerun must match to resume
or reuse), and when to checkpoint.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from loguru import logger

from template.harness.prepare.checkpoint import (
    checkpointed_recipe,
    clear_checkpoint,
    resume_writer,
    save_checkpoint,
)
from template.harness.prepare.corpus_writer import SHUFFLE_SEED, CorpusWriter
from template.harness.prepare.manifest import build_manifest, reusable_manifest, save_finished
from template.harness.prepare.shards import SHARD_BYTES
from template.harness.prepare.sources import DocumentSource, Position
from template.harness.prepare.tokenization import (
    MIN_VOCAB_SIZE,
    eos_id,
    load_tokenizer,
    token_batches,
    token_dtype,
    train_tokenizer_streamed,
)
from template.protocol import layout
from template.protocol.data import DatasetManifest

CHECKPOINT_EVERY_S = 10.0
RECIPE_FORMAT = 2  # the paged corpus with page-digest indexes (manifest v2)


def check_arguments(seq_len: int, heldout_fraction: float, vocab_size: int, tokenizer_file: Path | None) -> None:
    """Raise ValueError on settings no corpus can be made with."""
    if seq_len <= 0 or not 0 < heldout_fraction < 1 or (tokenizer_file is None and vocab_size < MIN_VOCAB_SIZE):
        raise ValueError(f"need seq_len > 0, 0 < heldout_fraction < 1 and vocab_size >= {MIN_VOCAB_SIZE} "
                         f"(bytes + EOS) without --tokenizer; got {seq_len}, {heldout_fraction}, {vocab_size}")


def make_recipe(documents: DocumentSource, given_tokenizer: bytes | None, *, seq_len: int, vocab_size: int,
                heldout_fraction: float, page_samples: int | None, shard_bytes: int,
                samples_per_window: int | None) -> dict[str, Any]:
    """Everything the output depends on (the input's fingerprint, the tokenizer's digest, the settings):
    a rerun resumes or reuses only an output of an equal recipe."""
    source = documents.source
    return {
        "format": RECIPE_FORMAT, "source": source if not Path(source).exists() else f"path:{Path(source).name}",
        "input": documents.fingerprint(), "text_field": documents.text_field, "seq_len": seq_len,
        "vocab_size": vocab_size,
        "tokenizer": hashlib.sha256(given_tokenizer).hexdigest() if given_tokenizer is not None else None,
        "heldout_fraction": heldout_fraction, "page_samples": page_samples, "shard_bytes": shard_bytes,
        "samples_per_window": samples_per_window, "shuffle_seed": SHUFFLE_SEED,
    }


def tokenizer_bytes(out_dir: Path, recipe: dict[str, Any], given: bytes | None, documents: DocumentSource,
                    vocab_size: int) -> bytes:
    """The tokenizer.json to use, saved under out_dir: the given one, the one trained before a kill of
    this recipe (training again could give other merges), or a newly trained one."""
    tokenizer_path = out_dir / layout.tokenizer_key()
    if given is not None:
        tokenizer_json = given
    elif tokenizer_path.is_file() and checkpointed_recipe(out_dir) == recipe:
        tokenizer_json = tokenizer_path.read_bytes()
    else:
        texts = (doc for _, doc in documents.documents())
        tokenizer_json = train_tokenizer_streamed(texts, vocab_size).to_str().encode()
    tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer_path.write_bytes(tokenizer_json)
    return tokenizer_json


def write_tokens(writer: CorpusWriter, tokenizer: Any, eos: int, documents: DocumentSource, position: Position,
                 recipe: dict[str, Any]) -> None:
    """Tokenize the documents from `position` on into `writer`, checkpointing after a batch at most every
    CHECKPOINT_EVERY_S (a checkpoint per batch would cost more than the batches)."""
    last_checkpoint = started = time.monotonic()
    for after, token_arrays in token_batches(tokenizer, documents.documents(position), eos, writer.dtype):
        for tokens in token_arrays:
            writer.add_tokens(tokens)
        if time.monotonic() - last_checkpoint > CHECKPOINT_EVERY_S:
            save_checkpoint(writer, after, recipe)
            last_checkpoint = time.monotonic()
            logger.info(f"{writer.pages_emitted} pages written ({time.monotonic() - started:.0f} s)")


def prepare_corpus(out_dir: Path, seq_len: int, source: str, *, vocab_size: int = 8192,
                   tokenizer_file: Path | None = None, text_field: str = "text", cache_dir: Path | None = None,
                   heldout_fraction: float = 0.05, page_samples: int | None = None,
                   shard_bytes: int = SHARD_BYTES, samples_per_window: int | None = None) -> DatasetManifest:
    """Tokenize `source` into paged shards, their indexes and the manifest under `out_dir` (keys as in the
    bucket); return the manifest. Streams the input, resumes a killed run of the same recipe and reuses
    a finished one. Raises ValueError on bad arguments or a corpus too small for two pages."""
    check_arguments(seq_len, heldout_fraction, vocab_size, tokenizer_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = DocumentSource(source, text_field, Path(cache_dir) if cache_dir is not None else out_dir / "download")
    given = Path(tokenizer_file).read_bytes() if tokenizer_file is not None else None
    recipe = make_recipe(documents, given, seq_len=seq_len, vocab_size=vocab_size, heldout_fraction=heldout_fraction,
                         page_samples=page_samples, shard_bytes=shard_bytes, samples_per_window=samples_per_window)
    existing = reusable_manifest(out_dir, recipe)
    if existing is not None:
        return existing

    tokenizer_json = tokenizer_bytes(out_dir, recipe, given, documents, vocab_size)
    tokenizer = load_tokenizer(tokenizer_json)
    eos, actual_vocab = eos_id(tokenizer), tokenizer.get_vocab_size()
    fresh = CorpusWriter.create(out_dir, seq_len, token_dtype(actual_vocab), heldout_fraction, shard_bytes,
                                page_samples, samples_per_window)
    writer, position = resume_writer(recipe, fresh)
    write_tokens(writer, tokenizer, eos, documents, position, recipe)
    writer.finish()
    manifest = build_manifest(writer, source, recipe, tokenizer_json, eos, actual_vocab)
    save_finished(out_dir, manifest, recipe)
    clear_checkpoint(out_dir)
    return manifest


def prepare_dataset(out_dir: Path, seq_len: int, vocab_size: int, source: str = "shakespeare",
                    cache_dir: Path | None = None, heldout_fraction: float = 0.05,
                    page_samples: int | None = None, samples_per_window: int | None = 32) -> DatasetManifest:
    """`prepare_corpus` with the demo's defaults: a trained tokenizer, pages dividing the default hparams'
    32 samples per window (a small corpus keeps all but a page's worth of its samples). Raises ValueError."""
    return prepare_corpus(out_dir, seq_len, source, vocab_size=vocab_size, cache_dir=cache_dir,
                          heldout_fraction=heldout_fraction, page_samples=page_samples,
                          samples_per_window=samples_per_window)
