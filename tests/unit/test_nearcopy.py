"""Near-copies across windows (gauntlet/nearcopy.py): the count sketch and the explained share, on real codec
output (template/protocol/sparseloco.py) and as hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gauntlet.nearcopy import (
    AGGREGATE_KEEP_WINDOWS,
    AGGREGATE_UID,
    SKETCH_DIM,
    SketchEntry,
    SketchHistory,
    aggregate_sketch,
    explained_fraction,
    find_near_copies,
    sketch_update,
)
from template.node.state import load_sketch_history, save_sketch_history
from template.protocol.config import HParams
from template.protocol.sparseloco import CodecParams, compress, decompress_with_indices

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py

KEY = b"k" * 32
SHAPES = {"a.weight": (128, 256), "b.weight": (256, 64), "norm": (128,)}
CODEC = CodecParams.from_hparams(HParams(model_preset="tiny"))


def encoded(delta: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """What admission hands the check: the dense decoded update and its kept positions."""
    wire, _ = compress(delta, None, CODEC, 0.95)
    return decompress_with_indices(wire, SHAPES, CODEC)


def random_delta(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}


def sketch_of(delta: dict[str, torch.Tensor], key: bytes = KEY) -> torch.Tensor:
    update, indices = encoded(delta)
    return sketch_update(update, indices, key=key)


def flat(update: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([update[n].reshape(-1) for n in sorted(update)])


def test_sketch_is_unit_norm_and_keeps_the_cosine():
    a_up, a_ix = encoded(random_delta(1))
    shared = random_delta(1)
    b_delta = {n: shared[n] + 0.8 * t for n, t in random_delta(2).items()}  # correlated with a
    b_up, b_ix = encoded(b_delta)
    sa, sb = sketch_update(a_up, a_ix, key=KEY), sketch_update(b_up, b_ix, key=KEY)
    assert sa.shape == (SKETCH_DIM,) and math.isclose(float(sa.norm()), 1.0, rel_tol=1e-5)
    exact = float(flat(a_up) @ flat(b_up) / (flat(a_up).norm() * flat(b_up).norm()))
    assert 0.2 < exact < 0.9
    assert abs(float(sa @ sb) - exact) < 0.08  # about 1/sqrt(4096) sd


def test_the_key_decides_the_buckets():
    up, ix = encoded(random_delta(3))
    assert abs(float(sketch_update(up, ix, key=KEY) @ sketch_update(up, ix, key=b"x" * 32))) < 0.1


def test_an_empty_update_sketches_to_zero_and_explains_nothing():
    up = {n: torch.zeros(s) for n, s in SHAPES.items()}
    ix = {n: torch.zeros(0, dtype=torch.int64) for n in SHAPES}
    s = sketch_update(up, ix, key=KEY)
    assert float(s.abs().sum()) == 0
    assert explained_fraction(s, torch.eye(SKETCH_DIM)[:3]) == (0.0, [])


def test_tweaked_copies_and_mixes_are_explained_independent_updates_are_not():
    earlier = [sketch_of(random_delta(seed)) for seed in range(10, 18)]
    history = torch.stack(earlier)
    # independent updates (the honest case): a few percent at most
    for seed in range(30, 34):
        share, _ = explained_fraction(sketch_of(random_delta(seed)), history)
        assert share < 0.05
    # one earlier update, scaled, a fifth of its values dropped, re-encoded by the codec
    victim = random_delta(12)
    gen = torch.Generator().manual_seed(0)
    tweaked = {n: 1.3 * t * (torch.rand(t.shape, generator=gen) >= 0.2) for n, t in victim.items()}
    share, rows = explained_fraction(sketch_of(tweaked), history)
    assert share > 0.5 and rows[0] == 2
    # the mean of two earlier decoded updates, re-encoded (top-k keeps about half of each: independent updates
    # share no positions; honest ones do, which keeps more of each - see the module docstring)
    first, _ = encoded(random_delta(10))
    second, _ = encoded(random_delta(11))
    share, rows = explained_fraction(sketch_of({n: (first[n] + second[n]) / 2 for n in SHAPES}), history)
    assert share > 0.4 and set(rows[:2]) == {0, 1}
    assert float((history @ sketch_of({n: (first[n] + second[n]) / 2 for n in SHAPES})).abs().max()) < 0.75


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.01, 100.0), st.booleans(), st.integers(1, 8))
def test_explained_share_is_scale_free_bounded_and_exact_for_a_span(seed, scale, negate, terms):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(12, 256, generator=gen, dtype=torch.float64)
    rows = (rows / rows.norm(dim=1, keepdim=True)).to(torch.float32)
    coef = torch.randn(terms, generator=gen, dtype=torch.float64) + 0.5
    combo = (coef.unsqueeze(1) * rows[:terms].double()).sum(0)
    combo = (combo / combo.norm()).float()
    share, chosen = explained_fraction(combo, rows, max_terms=8)
    assert share > 0.999 and len(chosen) <= 8
    noise = torch.randn(256, generator=gen)
    noise = noise / noise.norm()
    scaled = (-scale if negate else scale) * noise
    a, _ = explained_fraction(noise, rows)
    b, _ = explained_fraction(scaled / scaled.norm(), rows)
    assert 0.0 <= a <= 1.0 and math.isclose(a, b, abs_tol=1e-6)


def test_history_windows_and_findings_name_their_sources():
    h = SketchHistory.empty(dim=4)
    e = torch.eye(4)
    h = h.with_window(3, {7: ("hk7", e[0]), 8: ("hk8", e[1])}).with_window(4, {7: ("hk7", e[2])})
    assert [(x.window, x.uid) for x in h.before(5, 2).entries] == [(3, 7), (3, 8), (4, 7)]
    assert [(x.window, x.uid) for x in h.before(5, 1).entries] == [(4, 7)]
    assert h.before(4, 4).entries == (SketchEntry(3, 7, "hk7"), SketchEntry(3, 8, "hk8"))
    assert len(h.with_window(3, {9: ("hk9", e[3])}).entries) == 2  # window 3 replaced
    probe = (e[0] + e[1]) / math.sqrt(2)
    found, shares = find_near_copies({1: ("hk1", probe), 2: ("hk2", e[3])}, h.before(5, 4), threshold=0.25)
    assert set(found) == {1} and shares[2] == 0.0
    assert {(s.window, s.uid) for s in found[1].sources} == {(3, 7), (3, 8)}
    assert found[1].explained == pytest.approx(1.0)
    # a miner's own earlier updates are not compared; a new hotkey on the uid is another miner
    found, shares = find_near_copies({7: ("hk7", probe)}, h.before(5, 4), threshold=0.25)
    assert shares[7] == pytest.approx(0.5) and set(found) == {7}
    assert [(s.window, s.uid) for s in found[7].sources] == [(3, 8)]
    _, shares = find_near_copies({8: ("hk8", e[1]), 9: ("other", e[1])}, h.before(5, 4), threshold=0.25)
    assert shares == {8: 0.0, 9: pytest.approx(1.0)}
    _, shares = find_near_copies({7: ("new owner", e[0])}, h.before(5, 4), threshold=0.25)
    assert shares[7] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        SketchHistory(sketches=torch.zeros(2, 4), entries=(SketchEntry(0, 0, "x"),))


def test_history_survives_a_restart_and_a_broken_file_is_named(tmp_path):
    h = SketchHistory.empty(dim=8).with_window(2, {5: ("hk", torch.ones(8) / math.sqrt(8))})
    path = tmp_path / "near_copy.safetensors"
    save_sketch_history(h, path)
    back = load_sketch_history(path)
    assert back.entries == h.entries and torch.equal(back.sketches, h.sketches)
    assert load_sketch_history(tmp_path / "none.safetensors").entries == ()
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="near-copy sketches"):
        load_sketch_history(path)


def test_an_echo_of_an_old_aggregate_step_is_explained_by_the_long_memory_of_public_steps():
    """staleecho: the aggregate step of window w-k (k up to 16) over the outer lr, plus a little own work."""
    lr = 1.25
    before = {n: torch.randn(s, generator=torch.Generator().manual_seed(1)) for n, s in SHAPES.items()}
    step = {n: sum(random_delta(10 + i)[n] for i in range(4)) / 4 for n in SHAPES}  # the mean of four updates
    after = {n: before[n] - lr * step[n] for n in SHAPES}
    history = SketchHistory.empty().with_aggregate(3, aggregate_sketch(before, after, lr=lr, codec=CODEC, key=KEY))
    for w in range(4, 19):  # miners' updates of later windows come and go; the aggregate stays
        history = history.with_window(w, {1: ("hk1", sketch_update(*encoded(random_delta(100 + w)), key=KEY))}
                                      ).before(w + 1, 4)
    assert [e.window for e in history.entries] == [3, 15, 16, 17, 18]
    own = random_delta(999)
    echo = {n: step[n] + 0.3 * own[n] for n in SHAPES}
    suspect = sketch_update(*encoded(echo), key=KEY)
    found, shares = find_near_copies({7: ("hk7", suspect)}, history.before(19, 4), threshold=0.2)
    assert shares[7] >= 0.3 and found[7].sources[0].uid == AGGREGATE_UID
    honest = sketch_update(*encoded(random_delta(5000)), key=KEY)
    _, shares = find_near_copies({8: ("hk8", honest)}, history.before(19, 4), threshold=0.2)
    assert shares[8] < 0.2
    assert [e.uid for e in history.before(19 + AGGREGATE_KEEP_WINDOWS, 4).entries] == []  # gone after its memory
