"""What drawing the validator's random batch by page costs in statistics, on a real prepared corpus.

    python scripts/bench_eval_pages.py --corpus DIR   # DIR/shards/manifest.json, as prepare_data writes it

Samples of one page come from one region of the source, so a batch of a few pages is noisier than one
of ids drawn one by one. This measures it with a model anyone can fit in a second: a unigram model of
the training range (add-one smoothed), whose loss on a sample says how ordinary its words are (the part
of the loss that depends on the region: vocabulary, play, topic). For many private seeds it draws the
random batch per id (`eval_ids`, the baseline) and by page (`eval_ids_by_page` with min_pages 1 and
EVAL_MIN_PAGES), outside a few judged slots, and reports the spread (std over seeds) of the batch's mean
loss, the design effect (variance over the per-id draw's) and the pages each batch reads. Last line, JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from template.protocol.data import EVAL_MIN_PAGES, eval_ids, eval_ids_by_page, load_manifest, sample_ids

SEEDS = 2000
JUDGED_UIDS = 4


def unigram_losses(corpus: Path) -> tuple[np.ndarray, int, int]:
    """(per-sample unigram loss over the training range, num_train, page_samples)."""
    manifest = load_manifest((corpus / "shards" / "manifest.json").read_bytes())
    dtype = np.dtype(manifest.dtype).newbyteorder("<")
    rows = np.concatenate([np.fromfile(corpus / s.key, dtype=dtype).reshape(-1, manifest.seq_len + 1)
                           for s in manifest.shards])[:manifest.num_train].astype(np.int64)  # (num_train, seq + 1)
    counts = np.bincount(rows.ravel(), minlength=manifest.vocab_size) + 1
    nll = -np.log(counts / counts.sum())  # (vocab,)
    return nll[rows].mean(axis=1), manifest.num_train, manifest.page_samples


def measure(losses: np.ndarray, num_train: int, page_samples: int, n: int, samples_per_window: int,
            seeds: int = SEEDS) -> dict[str, dict[str, float]]:
    draws = {
        "per_id": lambda s, ex: eval_ids(s, n, num_train, ex),
        "by_page_1": lambda s, ex: eval_ids_by_page(s, n, num_train, ex, page_samples),
        f"by_page_{EVAL_MIN_PAGES}": lambda s, ex: eval_ids_by_page(s, n, num_train, ex, page_samples,
                                                                    min_pages=EVAL_MIN_PAGES),
    }
    out: dict[str, dict[str, float]] = {}
    for name, draw in draws.items():
        means, pages = [], []
        for seed in range(seeds):
            exclude = {i for uid in range(JUDGED_UIDS) for i in sample_ids(uid, seed, 7, samples_per_window, num_train)}
            ids = draw(seed, exclude)
            means.append(float(losses[ids].mean()))
            pages.append(len({i // page_samples for i in ids}))
        out[name] = {"std": float(np.std(means)), "pages": float(np.mean(pages))}
    base = out["per_id"]["std"] ** 2
    for row in out.values():
        row["design_effect"] = row["std"] ** 2 / base
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a prepared corpus (DIR/shards/manifest.json)")
    parser.add_argument("--n", type=int, default=16, help="random batch size (num_eval_samples)")
    parser.add_argument("--samples-per-window", type=int, default=32, help="a judged slot's size")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    args = parser.parse_args(argv)
    losses, num_train, page_samples = unigram_losses(args.corpus)
    print(f"{num_train} training samples, pages of {page_samples}; per-sample unigram loss mean "
          f"{losses.mean():.3f}, std {losses.std():.3f}", flush=True)
    out = measure(losses, num_train, page_samples, args.n, args.samples_per_window, args.seeds)
    for name, row in out.items():
        print(f"{name}: batch-mean std {row['std']:.4f} (design effect x{row['design_effect']:.2f}), "
              f"{row['pages']:.2f} pages read", flush=True)
    print(json.dumps({"n": args.n, "page_samples": page_samples, "num_train": num_train,
                      "sample_std": round(float(losses.std()), 4),
                      **{name: {k: round(v, 4) for k, v in row.items()} for name, row in out.items()}}))
    return 0
