"""bench_eval_pages.measure sees the cost of drawing by page where samples of a page are alike."""

from __future__ import annotations

import numpy as np

from template.harness.bench_eval_pages import measure


def test_page_clustered_losses_make_one_page_batches_noisier_and_four_pages_less_so():
    page_samples, pages = 32, 200
    rng = np.random.default_rng(0)
    losses = np.repeat(rng.normal(size=pages), page_samples) + rng.normal(size=pages * page_samples)  # ICC 0.5
    out = measure(losses, pages * page_samples, page_samples, n=16, samples_per_window=32, seeds=300)
    assert out["per_id"]["design_effect"] == 1.0 and out["per_id"]["pages"] > 12
    assert out["by_page_1"]["pages"] == 1.0 and out["by_page_4"]["pages"] == 4.0
    # 1 + (m - 1) * ICC with m samples per page: about 8.5 for one page of 16, 2.5 for four pages of 4
    assert out["by_page_1"]["design_effect"] > 5 > out["by_page_4"]["design_effect"] > 1.5
