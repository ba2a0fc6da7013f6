"""Document readers: the documents of one input file, streamed, whatever its format and compression.

A file is ``.parquet`` (the text is a column), ``.jsonl`` (a field of each line's object) or ``.txt``
(the whole file is text, cut at line ends into pieces of about TXT_PIECE_CHARS), each optionally
``.gz`` or ``.zst`` compressed. Reading is a stream so memory stays flat in corpus size.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TextIO, cast

FORMATS = (".parquet", ".jsonl", ".txt")
COMPRESSIONS = (".gz", ".zst")
TXT_PIECE_CHARS = 1 << 20  # a long .txt file is cut into documents of about this size
PARQUET_BATCH_ROWS = 1024  # rows read from a parquet file at a time


def format_name(path: Path) -> str:
    """The file name without its compression suffix: what tells the format."""
    return path.name.removesuffix(".gz").removesuffix(".zst")


def is_supported(path: Path) -> bool:
    """Whether `path` is one of FORMATS, plain or compressed."""
    return format_name(path).endswith(FORMATS)


def input_files(source: Path) -> list[Path]:
    """The readable files of `source` (itself, or every supported file under it, sorted). Raises ValueError."""
    source = Path(source).expanduser()
    if source.is_file():
        if not is_supported(source):
            raise ValueError(f"{source}: not one of {', '.join(FORMATS)} (optionally .gz or .zst)")
        return [source]
    if not source.is_dir():
        raise ValueError(f"source must be 'shakespeare', 'hf:<name>' or an existing file or folder, got {source}")
    files = sorted(p for p in source.rglob("*") if p.is_file() and is_supported(p))
    if not files:
        raise ValueError(f"source folder {source} holds no {', '.join(FORMATS)} files (optionally .gz or .zst)")
    return files


def open_binary(path: Path) -> IO[bytes]:
    """`path`'s bytes, decompressed as its suffix says."""
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.name.endswith(".zst"):
        import zstandard  # only a .zst input needs it

        return zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
    return path.open("rb")


def open_text(path: Path) -> TextIO:
    """`path`'s text, decompressed; bad UTF-8 is replaced rather than refused (web corpora hold some)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace")


def parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    """The non-empty `text_field` column values, a row batch at a time. Raises ValueError on a missing column."""
    import pyarrow.parquet as pq

    with open_binary(path) as raw:
        # pyarrow seeks in a plain file; a compressed one is read whole into memory first
        parquet = pq.ParquetFile(raw if path.suffix == ".parquet" else io.BytesIO(raw.read()))
        if text_field not in parquet.schema_arrow.names:
            raise ValueError(f"{path}: no column {text_field!r} (columns: {parquet.schema_arrow.names})")
        for batch in parquet.iter_batches(columns=[text_field], batch_size=PARQUET_BATCH_ROWS):
            yield from (text for text in batch.column(0).to_pylist() if text)


def jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    """The non-empty string `text_field` of each line's object. Raises ValueError naming the bad line."""
    with open_text(path) as lines:
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


def text_documents(path: Path, text_field: str) -> Iterator[str]:
    """The file's text in pieces of about TXT_PIECE_CHARS cut at line ends (`text_field` is unused), so one
    huge .txt file does not become one huge document."""
    del text_field
    with open_text(path) as text:
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


def reader_for(path: Path) -> Callable[[Path, str], Iterator[str]]:
    """The document reader of `path`'s format (input_files admits only FORMATS)."""
    name = format_name(path)
    if name.endswith(".parquet"):
        return parquet_documents
    if name.endswith(".jsonl"):
        return jsonl_documents
    return text_documents


def file_documents(path: Path, text_field: str) -> Iterator[str]:
    """The documents of one input file, streamed. Raises ValueError on a missing field/column."""
    return reader_for(path)(path, text_field)
