"""The token stream cut into samples, shuffled in chunks and routed page by page to the train and
held-out splits (`shards.SplitWriter`).

Samples are shuffled within chunks of CHUNK_PAGES pages (a seeded permutation per chunk, so the output
is the same on every run and memory stays one chunk), and every `heldout_every`-th page goes to the
held-out split, so held-out pages are spread over the whole corpus rather than taken from its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from template.harness.prepare.shards import SplitWriter, default_page_samples

SHUFFLE_SEED = 0
CHUNK_PAGES = 64  # samples are shuffled within chunks of this many pages


@dataclass
class CorpusWriter:
    """Token stream -> samples -> shuffled chunks -> pages routed to train / held-out, checkpointed."""

    out_dir: Path
    seq_len: int
    dtype: str
    page_samples: int
    heldout_every: int  # page p goes to held-out when p % heldout_every == heldout_every - 1
    train: SplitWriter
    heldout: SplitWriter
    carry: np.ndarray  # tokens not yet in a written chunk
    pages_emitted: int = 0
    chunks: int = 0
    held_back: np.ndarray | None = None  # the last page, kept so a tiny corpus still gets a held-out page

    @classmethod
    def create(cls, out_dir: Path, seq_len: int, dtype: str, heldout_fraction: float, shard_bytes: int,
               page_samples: int | None = None, samples_per_window: int | None = None) -> CorpusWriter:
        """A fresh writer: `page_samples` (or the default that divides `samples_per_window`) samples a page,
        shards of about `shard_bytes`, one page in round(1 / heldout_fraction) held out."""
        sample_bytes = (seq_len + 1) * np.dtype(dtype).itemsize
        page = page_samples or default_page_samples(sample_bytes, samples_per_window)
        shard_pages = max(1, shard_bytes // (page * sample_bytes))
        return cls(out_dir, seq_len, dtype, page, max(2, round(1 / heldout_fraction)),
                   SplitWriter(out_dir, "train", shard_pages), SplitWriter(out_dir, "heldout", shard_pages),
                   np.empty(0, dtype=dtype))

    def add_tokens(self, tokens: np.ndarray) -> None:
        """Append tokens to the stream; write every whole chunk they complete."""
        self.carry = np.concatenate([self.carry, tokens.astype(self.dtype)])
        chunk_tokens = CHUNK_PAGES * self.page_samples * (self.seq_len + 1)
        while len(self.carry) >= chunk_tokens:
            self._write_chunk(self.carry[:chunk_tokens])
            self.carry = self.carry[chunk_tokens:]

    def _write_chunk(self, tokens: np.ndarray) -> None:
        samples = tokens.reshape(-1, self.seq_len + 1)  # (n, seq_len + 1)
        order = np.random.Generator(np.random.PCG64([SHUFFLE_SEED, self.chunks])).permutation(len(samples))
        samples = samples[order]
        self.chunks += 1
        for start in range(0, len(samples) - self.page_samples + 1, self.page_samples):
            self._emit(samples[start:start + self.page_samples])

    def _emit(self, page: np.ndarray) -> None:
        """Route the page held back before and hold this one back: the last page is decided in `finish`."""
        if self.held_back is not None:
            self._route(self.held_back, self.pages_emitted - 1)
        self.held_back = page
        self.pages_emitted += 1

    def _route(self, page: np.ndarray, number: int) -> None:
        writer = self.heldout if number % self.heldout_every == self.heldout_every - 1 else self.train
        writer.write(page)

    def finish(self) -> None:
        """Write the whole pages left in the stream (the rest is dropped) and close both splits. The last
        page goes to held-out when no page has yet, so even a tiny corpus has both splits."""
        whole = len(self.carry) // (self.seq_len + 1) // self.page_samples * self.page_samples
        if whole:
            self._write_chunk(self.carry[:whole * (self.seq_len + 1)])
        self.carry = self.carry[:0]
        if self.held_back is not None:
            held_out_yet = self.heldout.closed or self.heldout.open_pages
            if held_out_yet:
                self._route(self.held_back, self.pages_emitted - 1)
            else:
                self.heldout.write(self.held_back)
            self.held_back = None
        self.train.close()
        self.heldout.close()
