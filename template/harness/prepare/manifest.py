"""The manifest of a finished corpus, and checking a local corpus against it page by page.

The manifest (`template.protocol.data.DatasetManifest`) is written last, so a folder with a manifest
holds every object it names. Beside it the recipe file records the settings that made the corpus, so a
rerun with the same recipe reuses it, after every page has been checked again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from template.harness.prepare.corpus_writer import CorpusWriter
from template.protocol import layout
from template.protocol.data import (
    DatasetError,
    DatasetManifest,
    PageMap,
    ShardInfo,
    TokenizerInfo,
    load_manifest,
    page_digest,
    page_digests,
)

RECIPE_FILE = "prepare.json"


def build_manifest(writer: CorpusWriter, source: str, recipe: dict[str, Any], tokenizer_json: bytes,
                   eos: int, vocab_size: int) -> DatasetManifest:
    """The manifest of the shards a finished `writer` closed: train shards first, then held-out. Raises
    ValueError when the corpus gave too few pages for a page of each split."""
    train = [ShardInfo(**s) for s in writer.train.closed]
    heldout = [ShardInfo(**s) for s in writer.heldout.closed]
    if not train or not heldout:
        raise ValueError(f"corpus gives {writer.pages_emitted} pages of {writer.page_samples} samples of "
                         f"{writer.seq_len + 1} tokens: too few for a train and a held-out page "
                         f"(smaller --page-samples?)")
    heldout_start = sum(s.num_samples for s in train)
    tokenizer = TokenizerInfo(name=f"bpe-{vocab_size}-{Path(source).name or source}", key=layout.tokenizer_key(),
                              sha256=hashlib.sha256(tokenizer_json).hexdigest(), bytes=len(tokenizer_json),
                              eos_id=eos)
    return DatasetManifest(
        source=recipe["source"], tokenizer=tokenizer, vocab_size=vocab_size, seq_len=writer.seq_len,
        dtype=writer.dtype, page_samples=writer.page_samples,
        num_samples=heldout_start + sum(s.num_samples for s in heldout), heldout_start=heldout_start,
        shards=train + heldout,
    )


def save_finished(out_dir: Path, manifest: DatasetManifest, recipe: dict[str, Any]) -> None:
    """Write the manifest, then the recipe that made it (what `reusable_manifest` compares)."""
    (out_dir / layout.dataset_manifest_key()).write_bytes(manifest.to_json())
    (out_dir / RECIPE_FILE).write_text(json.dumps(recipe, indent=1))


def reusable_manifest(out_dir: Path, recipe: dict[str, Any]) -> DatasetManifest | None:
    """The existing manifest if out_dir was made from the same recipe and every shard still verifies."""
    try:
        if json.loads((out_dir / RECIPE_FILE).read_text()) != recipe:
            return None
        manifest = load_manifest((out_dir / layout.dataset_manifest_key()).read_bytes())
    except (OSError, ValueError, DatasetError):
        return None
    try:
        verify_local(out_dir, manifest)
    except (OSError, DatasetError):
        return None
    return manifest


def verify_local(out_dir: Path, manifest: DatasetManifest) -> None:
    """Check every local shard, page by page, against its index. Raises DatasetError."""
    tok = out_dir / manifest.tokenizer.key
    if hashlib.sha256(tok.read_bytes()).hexdigest() != manifest.tokenizer.sha256:
        raise DatasetError(f"{tok}: tokenizer sha256 mismatch")
    pages = PageMap(manifest)
    for number, shard in enumerate(manifest.shards):
        index = (out_dir / shard.index_key).read_bytes()
        if hashlib.sha256(index).hexdigest() != shard.index_sha256:
            raise DatasetError(f"{shard.index_key}: index sha256 mismatch")
        with (out_dir / shard.key).open("rb") as f:
            for local, digest in enumerate(page_digests(index)):
                _, length = pages.byte_range(int(pages.first_page[number]) + local)
                if page_digest(f.read(length)) != digest:
                    raise DatasetError(f"{shard.key}: page {local} does not match its digest")
