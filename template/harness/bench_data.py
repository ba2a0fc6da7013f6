"""Data-plane benchmark: does what a node reads and holds stay flat as the corpus grows?

    python scripts/bench_data.py --corpus-gb 0.25,4
    python scripts/bench_data.py --assign-only --samples 500000000

For each corpus size a synthetic corpus (random tokens, in the paged format of
`template.protocol.data`, pages and page-digest indexes as template/harness/prepare/ writes them) is uploaded to a real
SeaweedFS this script starts on loopback. Then, in a fresh process per size, the real data paths run
for a few windows: a miner (`fetch_dataset`, `PagedDataset` with prefetch of the next window, reading
its assigned batches step by step) and a validator (its random evaluation batch, a few
picks of each judged uid's assigned samples, the loss-curve samples), twice: drawing the random batch
per id (`eval_ids`, the same-run baseline: a page read per id) and by page (`eval_ids_by_page` with
EVAL_MIN_PAGES, as the validator does). Each inner step's compute is a
fixed STEP_S wait (a GPU-like step time), the data paths are the real ones. The smallest corpus is the
same-run baseline. Last line, JSON:

- startup_bytes: what a node reads before its first batch (manifest + tokenizer);
- bytes_per_window: the miner's bytes read per window in steady state (pages + any new shard index);
- tokens_per_window, token_bytes: what it trains on per window, so the ideal is their product;
- assign_ms: one uid's assignment (`sample_ids`), mean over the 256 uids of each window;
- peak_rss_mb: the peak RSS of the node process running the data paths and the model;
- data_wait_frac: time the training steps waited for data over training time, windows after the first;
- validator_bytes_per_window, validator_random_pages: the validator drawing its random batch per id;
  validator_paged_bytes_per_window, validator_paged_random_pages: drawing it by page (what it does now).

`--assign-only --samples N` prints {"assign_ms", "rss_mb"} of the assignment alone over N samples
(no torch imported: the process's peak RSS).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SEQ_LEN = 1024
VOCAB = 8192  # uint16 tokens (the tiny preset's vocabulary)
BATCH = 8
INNER_STEPS = 8
SAMPLES_PER_WINDOW = BATCH * INNER_STEPS
PAGE_SAMPLES = 64  # one window's slot is one page of 64 * 1025 * 2 B = 131 KB
SHARD_BYTES = 64 << 20
WINDOWS = 6
JUDGED_UIDS = 4
EVAL_SAMPLES = 16  # HParams.num_eval_samples' default
UID = 3
# The inner step's compute is a fixed wait: a GPU-like step (an H100 steps a 1B model over 8 x 1024 tokens
# in well under a second; this machine's shared CPU needs ~25 s for the tiny model, which would hide any
# data wait). A shorter step is the stricter test of the prefetch.
STEP_S = 0.25


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def assign_only(samples: int) -> dict[str, float]:
    from template.protocol.data import sample_ids

    sample_ids(0, 0, 7, SAMPLES_PER_WINDOW, samples)  # warm the imports
    start = time.perf_counter()
    for uid in range(256):
        ids = sample_ids(uid, 123_456, 7, SAMPLES_PER_WINDOW, samples)
        assert len(ids) == SAMPLES_PER_WINDOW
    return {"samples": samples, "assign_ms": round((time.perf_counter() - start) / 256 * 1e3, 4),
            "rss_mb": round(rss_mb(), 1)}


def tokenizer_json() -> bytes:
    """A word-level tokenizer of VOCAB entries (what a node downloads at start, sized like a real one)."""
    from tokenizers import Tokenizer, models

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i for i in range(1, VOCAB)}
    return Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>")).to_str().encode()


def publish_synthetic(client: Any, bucket: str, corpus_gb: float, seed: int) -> Any:
    """Random tokens as a paged corpus in `bucket`, streamed (one chunk of pages in memory); the manifest."""
    from template.protocol import layout
    from template.protocol.data import DatasetManifest, ShardInfo, TokenizerInfo, page_digest

    sample_bytes = (SEQ_LEN + 1) * 2
    page_bytes = PAGE_SAMPLES * sample_bytes
    total_pages = max(40, int(corpus_gb * (1 << 30)) // page_bytes)
    shard_pages = SHARD_BYTES // page_bytes
    heldout_pages = max(1, total_pages // 20)
    rng = np.random.default_rng(seed)
    shards: list[ShardInfo] = []
    client.ensure_bucket(bucket)

    def write_split(split: str, pages: int) -> None:
        for index, first in enumerate(range(0, pages, shard_pages)):
            count = min(shard_pages, pages - first)
            digests: list[bytes] = []

            def chunks(count: int = count, digests: list[bytes] = digests) -> Iterator[bytes]:
                for start in range(0, count, 64):
                    block = rng.integers(0, VOCAB, size=(min(64, count - start), page_bytes // 2), dtype=np.uint16)
                    for page in block:
                        data = page.astype("<u2").tobytes()
                        digests.append(page_digest(data))
                        yield data

            key, index_key = layout.shard_key(split, index), layout.shard_index_key(split, index)
            client.put_multipart(bucket, key, chunks())
            index_bytes = b"".join(digests)
            client.put(bucket, index_key, index_bytes)
            shards.append(ShardInfo(key=key, num_samples=count * PAGE_SAMPLES, index_key=index_key,
                                    index_sha256=hashlib.sha256(index_bytes).hexdigest()))

    write_split("train", total_pages - heldout_pages)
    write_split("heldout", heldout_pages)
    tok = tokenizer_json()
    client.put(bucket, layout.tokenizer_key(), tok)
    num_train = (total_pages - heldout_pages) * PAGE_SAMPLES
    manifest = DatasetManifest(
        source=f"synthetic-{corpus_gb}gb", vocab_size=VOCAB, seq_len=SEQ_LEN, dtype="uint16",
        tokenizer=TokenizerInfo(name="wordlevel-synthetic", key=layout.tokenizer_key(),
                                sha256=hashlib.sha256(tok).hexdigest(), bytes=len(tok), eos_id=0),
        page_samples=PAGE_SAMPLES, num_samples=total_pages * PAGE_SAMPLES, heldout_start=num_train, shards=shards)
    client.put(bucket, layout.dataset_manifest_key(), manifest.to_json())
    return manifest


def node_run(spec: dict[str, Any]) -> dict[str, Any]:
    """The miner's and the validator's data paths over WINDOWS windows (run in a fresh process)."""
    import torch

    from storage.dataset import PAGE_BUDGET, fetch_dataset
    from storage.s3 import S3Client
    from template.protocol.data import EVAL_MIN_PAGES, eval_ids, eval_ids_by_page, loss_curve_ids, sample_ids

    torch.set_num_threads(1)
    client = S3Client(spec["endpoint"], spec["key"], spec["secret"], budget=PAGE_BUDGET)
    work = Path(spec["work"])
    manifest, miner_data = fetch_dataset(client, spec["bucket"], work / "miner", cache_gb=1.0)
    startup = miner_data.take_stats().fetched_bytes + len(manifest.to_json()) + manifest.tokenizer.bytes
    _, validator_data = fetch_dataset(client, spec["bucket"], work / "validator", cache_gb=1.0)
    _, paged_data = fetch_dataset(client, spec["bucket"], work / "validator-paged", cache_gb=1.0)
    seed, num_train = 7, manifest.num_train
    assign_s, windows = [], []
    for window in range(WINDOWS):
        start = time.perf_counter()
        for uid in range(256):  # every uid of the window, as a validator checks receipts
            sample_ids(uid, window, seed, SAMPLES_PER_WINDOW, num_train)
        assign_s.append((time.perf_counter() - start) / 256)
        ids = sample_ids(UID, window, seed, SAMPLES_PER_WINDOW, num_train)
        miner_data.prefetch(ids)  # as plan_window does
        miner_data.prefetch(sample_ids(UID, window + 1, seed, SAMPLES_PER_WINDOW, num_train))
        train_start = time.perf_counter()
        for step in range(INNER_STEPS):
            batch = miner_data.batch(ids[step * BATCH:(step + 1) * BATCH])
            assert batch.shape == (BATCH, SEQ_LEN + 1) and int(batch.max()) < VOCAB
            time.sleep(STEP_S)  # the inner step's compute (see STEP_S)
        train_s = time.perf_counter() - train_start
        # the validator: its random batch outside the judged uids' slots, picks of each judged uid's samples;
        # twice, with the same randomness: the random batch per id (the baseline) and by page
        judged = {uid: sample_ids(uid, window, seed, SAMPLES_PER_WINDOW, num_train) for uid in range(JUDGED_UIDS)}
        exclude = {i for ids_ in judged.values() for i in ids_}
        row = {"window": window}
        for name, data in (("validator", validator_data), ("validator_paged", paged_data)):
            rng = random.Random(window)
            draw_seed = rng.getrandbits(64)
            if name == "validator":
                random_ids = eval_ids(draw_seed, EVAL_SAMPLES, num_train, exclude)
            else:
                random_ids = eval_ids_by_page(draw_seed, EVAL_SAMPLES, num_train, exclude, data.page_samples,
                                              min_pages=EVAL_MIN_PAGES)
            data.batch(random_ids)
            random_read = data.take_stats()
            for assigned in judged.values():
                data.batch(rng.sample(assigned, EVAL_SAMPLES))
            data.batch(loss_curve_ids(num_train, manifest.num_samples))
            row[f"{name}_bytes"] = random_read.fetched_bytes + data.take_stats().fetched_bytes
            row[f"{name}_random_pages"] = random_read.fetched_pages
        miner = miner_data.take_stats()
        windows.append({**row, "miner_bytes": miner.fetched_bytes, "miner_pages": miner.fetched_pages,
                        "wait_s": round(miner.wait_s, 4), "train_s": round(train_s, 3)})
    miner_data.close()
    validator_data.close()
    paged_data.close()
    steady = windows[1:]
    return {
        "startup_bytes": startup,
        "bytes_per_window": round(sum(w["miner_bytes"] for w in steady) / len(steady)),
        "validator_bytes_per_window": round(sum(w["validator_bytes"] for w in steady) / len(steady)),
        "validator_paged_bytes_per_window": round(sum(w["validator_paged_bytes"] for w in steady) / len(steady)),
        "validator_random_pages": round(sum(w["validator_random_pages"] for w in steady) / len(steady), 2),
        "validator_paged_random_pages": round(sum(w["validator_paged_random_pages"] for w in steady) / len(steady),
                                              2),
        "assign_ms": round(sum(assign_s) / len(assign_s) * 1e3, 4),
        "peak_rss_mb": round(rss_mb(), 1),
        "data_wait_frac": round(sum(w["wait_s"] for w in steady) / sum(w["train_s"] for w in steady), 4),
        "first_window_wait_s": windows[0]["wait_s"],
        "windows": windows, "num_samples": manifest.num_samples, "shards": len(manifest.shards),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--corpus-gb", default="0.25,4", help="comma-separated corpus sizes in GiB (first: baseline)")
    parser.add_argument("--assign-only", action="store_true", help="time the assignment alone")
    parser.add_argument("--samples", type=int, default=500_000_000, help="corpus samples for --assign-only")
    parser.add_argument("--node", type=Path, help=argparse.SUPPRESS)  # internal: run node_run on this spec
    args = parser.parse_args(argv)
    if args.assign_only:
        print(json.dumps(assign_only(args.samples)))
        return 0
    if args.node is not None:
        print(json.dumps(node_run(json.loads(args.node.read_text()))))
        return 0

    from storage.s3 import S3Client
    from storage.seaweed import SeaweedServer, admin_identity, neuron_identities

    sizes = [float(x) for x in args.corpus_gb.split(",")]
    admin = admin_identity()
    buckets = {size: f"corpus-{i}" for i, size in enumerate(sizes)}
    readers = {size: neuron_identities(bucket) for size, bucket in buckets.items()}
    identities = [admin] + [x for pair in readers.values() for x in pair]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_data_", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        with SeaweedServer(work / "seaweed", identities) as server:
            owner = S3Client(server.endpoint, admin.access_key, admin.secret_key)
            for size, bucket in buckets.items():
                start = time.perf_counter()
                manifest = publish_synthetic(owner, bucket, size, seed=len(results))
                print(f"corpus {size} GiB: {manifest.num_samples} samples, {len(manifest.shards)} shards, "
                      f"published in {time.perf_counter() - start:.0f} s", flush=True)
                read = readers[size][1]
                spec = {"endpoint": server.endpoint, "bucket": bucket, "key": read.access_key,
                        "secret": read.secret_key, "work": str(work / f"node-{bucket}")}
                spec_path = work / f"{bucket}.json"
                spec_path.write_text(json.dumps(spec))
                done = subprocess.run([sys.executable, "-m", "template.harness.bench_data", "--node", str(spec_path)],
                                      capture_output=True, text=True, check=False, timeout=3600)
                if done.returncode != 0:
                    raise RuntimeError(f"node run for {size} GiB failed: {done.stderr[-2000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results.append({"corpus_gb": size, **result})
                print(json.dumps({k: v for k, v in result.items() if k != "windows"}), flush=True)
                for w in result["windows"]:
                    print(f"  window {w['window']}: miner {w['miner_bytes']} B ({w['miner_pages']} pages), "
                          f"waited {w['wait_s']} s of {w['train_s']} s training; validator {w['validator_bytes']} B "
                          f"(random batch {w['validator_random_pages']} pages) per id, "
                          f"{w['validator_paged_bytes']} B ({w['validator_paged_random_pages']} pages) by page",
                          flush=True)
    tokens_per_window = SAMPLES_PER_WINDOW * (SEQ_LEN + 1)
    base = results[0]
    for r in results[1:]:
        print(f"{r['corpus_gb']} GiB vs {base['corpus_gb']} GiB: startup bytes x"
              f"{r['startup_bytes'] / base['startup_bytes']:.3f}, assign x{r['assign_ms'] / base['assign_ms']:.3f}, "
              f"peak RSS x{r['peak_rss_mb'] / base['peak_rss_mb']:.3f}", flush=True)
    for r in results:
        print(f"{r['corpus_gb']} GiB: bytes/window = {r['bytes_per_window'] / (tokens_per_window * 2):.3f} x "
              f"tokens_per_window x token_bytes; validator bytes/window by page vs per id x"
              f"{r['validator_paged_bytes_per_window'] / r['validator_bytes_per_window']:.3f}", flush=True)
    summary = {
        "corpus_gb": [r["corpus_gb"] for r in results],
        "startup_bytes": [r["startup_bytes"] for r in results],
        "bytes_per_window": [r["bytes_per_window"] for r in results],
        "tokens_per_window": tokens_per_window, "token_bytes": 2,
        "assign_ms": [r["assign_ms"] for r in results],
        "peak_rss_mb": [r["peak_rss_mb"] for r in results],
        "data_wait_frac": [r["data_wait_frac"] for r in results],
        "validator_bytes_per_window": [r["validator_bytes_per_window"] for r in results],
        "validator_paged_bytes_per_window": [r["validator_paged_bytes_per_window"] for r in results],
        "validator_random_pages": [r["validator_random_pages"] for r in results],
        "validator_paged_random_pages": [r["validator_paged_random_pages"] for r in results],
        "eval_samples": EVAL_SAMPLES, "page_samples": PAGE_SAMPLES,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
