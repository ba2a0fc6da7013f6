"""The pieces of data preparation on their own (template/harness/prepare/): page sizing, input formats,
token dtypes, page routing and the checkpoint round trip. End-to-end preparation is in test_data.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from template.harness.prepare import corpus_writer
from template.harness.prepare.checkpoint import STATE_FILE, clear_checkpoint, resume_writer, save_checkpoint
from template.harness.prepare.corpus_writer import CorpusWriter
from template.harness.prepare.readers import input_files, jsonl_documents, reader_for, text_documents
from template.harness.prepare.shards import PAGE_BYTES, default_page_samples
from template.harness.prepare.tokenization import token_dtype


@given(st.integers(1, 1 << 22), st.one_of(st.none(), st.integers(1, 4096)))
def test_default_page_is_a_power_of_two_within_a_page_dividing_the_slot(sample_bytes, samples_per_window):
    page = default_page_samples(sample_bytes, samples_per_window)
    assert page >= 1 and page & (page - 1) == 0
    assert page == 1 or page * sample_bytes <= PAGE_BYTES
    if samples_per_window:
        assert samples_per_window % page == 0


def test_token_dtype_is_uint16_while_every_id_fits():
    assert token_dtype(1 << 16) == "uint16" and token_dtype((1 << 16) + 1) == "uint32"


def test_inputs_are_chosen_by_format_under_their_compression(tmp_path: Path):
    for name in ("a.jsonl.gz", "b.parquet", "c.txt.zst", "notes.md", "d.csv.gz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in input_files(tmp_path)] == ["a.jsonl.gz", "b.parquet", "c.txt.zst"]
    assert reader_for(tmp_path / "a.jsonl.gz") is jsonl_documents
    assert reader_for(tmp_path / "c.txt.zst") is text_documents
    with pytest.raises(ValueError, match="not one of"):
        input_files(tmp_path / "notes.md")


def test_a_bad_jsonl_line_is_named(tmp_path: Path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok"}\n\nnot json\n')
    with pytest.raises(ValueError, match=r"x.jsonl:3: not JSON"):
        list(jsonl_documents(path, "text"))


def _writer(out_dir: Path) -> CorpusWriter:
    # 2 tokens a sample, 2 samples a page, every 3rd page held out, shards of 2 pages
    return CorpusWriter.create(out_dir, seq_len=1, dtype="uint16", heldout_fraction=1 / 3,
                               shard_bytes=2 * 2 * 2 * 2, page_samples=2)


def test_every_kth_page_is_held_out_and_the_rest_dropped_at_a_page(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(corpus_writer, "CHUNK_PAGES", 1)  # no shuffle across pages: routing alone
    writer = _writer(tmp_path)
    writer.add_tokens(np.arange(4 * 6 + 3, dtype=np.uint16))  # 6 pages and 3 tokens left over
    writer.finish()
    assert writer.pages_emitted == 6
    assert sum(s["num_samples"] for s in writer.heldout.closed) == 2 * 2  # pages 2 and 5
    assert sum(s["num_samples"] for s in writer.train.closed) == 4 * 2


def test_a_checkpoint_resumes_the_same_writer_and_another_recipe_starts_afresh(tmp_path: Path):
    writer = _writer(tmp_path)
    writer.add_tokens(np.arange(4 * 70, dtype=np.uint16))  # a chunk of 64 pages written, 6 pages carried
    save_checkpoint(writer, (2, 5), {"recipe": 1})
    resumed, position = resume_writer({"recipe": 1}, _writer(tmp_path))
    assert position == (2, 5) and resumed.pages_emitted == writer.pages_emitted == 64
    assert np.array_equal(resumed.carry, writer.carry) and resumed.train.state() == writer.train.state()
    fresh, position = resume_writer({"recipe": 2}, _writer(tmp_path))
    assert position == (0, 0) and fresh.pages_emitted == 0 and not list((tmp_path / "shards").rglob("*.bin"))
    clear_checkpoint(tmp_path)
    assert not (tmp_path / STATE_FILE).exists()
