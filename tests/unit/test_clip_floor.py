"""The clip floor (issue 27, item 3): the outer step's clip limit never falls below `CLIP_FLOOR_FRACTION` x
the median of the tensor's last `CLIP_HISTORY_LEN` applied limits, so a standing coalition of tiny updates on
the peer list cannot halve the limit (and so every honest update) window after window. The history is part
of consensus: it travels in checkpoints, is restored with theta, and the validator scores with it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gauntlet.evaluate import mean_loss
from template.harness.progress_attacks import Setup, run_variant
from template.node.sync import GlobalModel, load_checkpoint, publish_checkpoint, resync
from template.node.validator import scoring_limits
from template.protocol.artifacts import write_tensor_artifact
from template.protocol.checkpoint import Lineage, checkpoint_fields, parse_clip_history
from template.protocol.outer_step import (
    CLIP_FLOOR_FRACTION,
    CLIP_HISTORY_LEN,
    StreamedUpdates,
    clip_floor,
    clip_limit,
    history_after,
    l2_norm,
    median,
    outer_step,
)
from tests.unit.fakes import tiny_hparams

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py

norm_values = st.floats(1e-6, 1e3)
histories = st.lists(norm_values, max_size=CLIP_HISTORY_LEN)
refs = st.one_of(st.none(), norm_values)


# -- the rule -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(norms=st.lists(norm_values, min_size=1, max_size=9), ref=refs, history=histories)
def test_the_limit_is_never_below_the_floor(norms, ref, history):
    assert clip_limit(norms, ref, 2.0, history) >= clip_floor(history)
    if history:
        assert clip_floor(history) == CLIP_FLOOR_FRACTION * median(history)
    else:
        assert clip_floor(history) == 0.0


@settings(max_examples=200, deadline=None)
@given(norms=st.lists(norm_values, min_size=1, max_size=9), ref=refs, history=histories)
def test_the_limit_is_the_old_one_where_the_floor_does_not_bind(norms, ref, history):
    old = clip_limit(norms, ref, 2.0)
    new = clip_limit(norms, ref, 2.0, history)
    assert new == max(old, clip_floor(history))
    if old >= clip_floor(history):
        assert new == old


@settings(max_examples=200, deadline=None)
@given(norms=st.lists(norm_values, min_size=1, max_size=9), ref=refs, history=histories, data=st.data())
def test_the_limit_is_monotone_in_the_history(norms, ref, history, data):
    raised = [h + data.draw(st.floats(0.0, 1e3), label="raise") for h in history]
    assert clip_limit(norms, ref, 2.0, raised) >= clip_limit(norms, ref, 2.0, history)


@settings(max_examples=100, deadline=None)
@given(limits=st.lists(norm_values, min_size=1, max_size=3 * CLIP_HISTORY_LEN))
def test_the_history_keeps_the_newest_limits_in_order(limits):
    history: dict[str, tuple[float, ...]] = {}
    for x in limits:
        history = history_after(history, {"a": x, "b": 2 * x})
    assert history["a"] == tuple(limits[-CLIP_HISTORY_LEN:])
    assert history["b"] == tuple(2 * x for x in limits[-CLIP_HISTORY_LEN:])


def test_small_hostile_norms_cannot_pull_the_limit_below_the_floor():
    honest, tiny = [1.0, 1.1, 0.9, 1.2], [1e-4] * 5
    assert clip_limit(honest + tiny, None, 2.0) == pytest.approx(1e-4)  # the lower median alone: shrunk
    assert clip_limit(honest + tiny, None, 2.0, [1.0, 1.0, 1.1]) == pytest.approx(0.5)
    assert clip_limit(honest, None, 2.0, [1.0, 1.0, 1.1]) == pytest.approx(1.0)


# -- a standing coalition of tiny updates, window after window -----------------------------------


def random_update(shapes: dict[str, tuple[int, ...]], seed: int, norm: float) -> dict[str, torch.Tensor]:
    """A random direction per tensor, scaled to L2 norm `norm`."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen)
        out[name] = t * (norm / max(l2_norm(t), 1e-12))
    return out


def small_model() -> GlobalModel:
    """A GlobalModel over a two-tensor model (the outer step does not care what the model is)."""
    return GlobalModel(model=torch.nn.Linear(32, 16), window=0, hparams=tiny_hparams())


def applied_honest_norms(gm: GlobalModel, windows: int, *, honest: int = 3, tiny: int = 5,
                         calm: int = CLIP_HISTORY_LEN,
                         floor: bool = True) -> list[float]:
    """Honest updates of norm 1 per tensor; after `calm` honest-only windows, `tiny` updates of norm 1e-4 beside
    them (a majority of the gather set) every window. Returns, per attacked window, the smallest norm any
    tensor of an honest update was applied with (its clip limit: honest norms are all 1)."""
    shapes = gm.shapes()
    good = [random_update(shapes, i, 1.0) for i in range(honest)]
    small = [random_update(shapes, 100 + i, 1e-4) for i in range(tiny)]
    out = []
    for w in range(calm + windows):
        if not floor:
            gm.clip_history = {}
        stats = gm.apply_updates(good + (small if w >= calm else []), 1e-3)
        if w >= calm:
            out.append(min(min(limit, 1.0) for limit in stats["clip_norms"].values()))
    return out


def test_a_coalition_of_tiny_updates_cannot_shrink_honest_updates_below_the_floor():
    windows = 3 * CLIP_HISTORY_LEN
    floored = applied_honest_norms(small_model(), windows)
    growth_only = applied_honest_norms(small_model(), windows, floor=False)
    half = CLIP_HISTORY_LEN // 2
    # the growth clamp alone: halved every window, down to the coalition's own norm
    assert growth_only[0] == pytest.approx(0.5) and growth_only[10] < 1e-3
    # the floor: at least half the honest norm while the attack is under half the history's length, then halved
    # at most once per half-history (the median of the history moves no faster)
    assert min(floored[:half]) >= CLIP_FLOOR_FRACTION * (1 - 1e-6)
    for w, applied in enumerate(floored):
        assert applied >= CLIP_FLOOR_FRACTION ** (1 + (w + 1) / half) * (1 - 1e-6), (w, applied)
    assert floored[-1] > 100 * growth_only[-1]


# -- the history is consensus: checkpoints, restores, replay ---------------------------------------


@settings(max_examples=50, deadline=None)
@given(length=st.integers(0, CLIP_HISTORY_LEN), data=st.data())
def test_the_history_round_trips_through_the_checkpoint_manifest(length, data):
    names = {"a.weight", "b.bias"}
    history = {n: tuple(data.draw(st.lists(norm_values, min_size=length, max_size=length), label=n)) for n in names}
    if length == 0:
        history = {}
    fields = checkpoint_fields(tiny_hparams(), "22" * 32, Lineage(), None, history)
    assert parse_clip_history(json.loads(json.dumps(fields))["clip_history"], names) == history


def test_an_old_checkpoint_without_a_history_reads_as_none():
    assert parse_clip_history(None, {"a"}) == {}
    assert parse_clip_history({}, {"a"}) == {}


@pytest.mark.parametrize(("value", "match"), [
    ({"a": [1.0], "zz": [1.0]}, "exactly the model's tensor names"),
    ({"a": [1.0]}, "exactly the model's tensor names"),
    ([1.0, 2.0], "exactly the model's tensor names"),
    ({"a": [1.0], "b": []}, "1 to 16 limits"),
    ({"a": [1.0] * 17, "b": [1.0] * 17}, "1 to 16 limits"),
    ({"a": 1.0, "b": [1.0]}, "1 to 16 limits"),
    ({"a": [float("nan")], "b": [1.0]}, "finite number >= 0"),
    ({"a": [float("inf")], "b": [1.0]}, "finite number >= 0"),
    ({"a": [-1.0], "b": [1.0]}, "finite number >= 0"),
    ({"a": [True], "b": [1.0]}, "finite number >= 0"),
    ({"a": ["1.0"], "b": [1.0]}, "finite number >= 0"),
    ({"a": [1.0, 2.0], "b": [1.0]}, "differ in length"),
])
def test_a_hostile_history_is_refused_with_a_clear_error(value, match):
    with pytest.raises(ValueError, match=match):
        parse_clip_history(value, {"a", "b"})


def window_updates(shapes: dict[str, tuple[int, ...]], w: int) -> list[dict[str, torch.Tensor]]:
    """Three honest updates; from window 4 on, five tiny ones beside them (the floor binds from window 5)."""
    honest = [random_update(shapes, 10 * w + i, 1.0 + 0.1 * i) for i in range(3)]
    return honest + ([random_update(shapes, 10 * w + 5 + i, 1e-4) for i in range(5)] if w >= 4 else [])


def test_a_node_restored_from_a_checkpoint_midway_steps_bit_identically(net):
    lead, alice = GlobalModel.initial(net.hp, CPU), net.neurons["alice"]
    for w in range(6):
        lead.apply_updates(window_updates(lead.shapes(), w), 1e-3)
        lead.window = w + 1
    publish_checkpoint(lead, alice.bucket, alice.keypair)
    joiner, forgetful = GlobalModel.initial(net.hp, CPU), GlobalModel.initial(net.hp, CPU)
    assert load_checkpoint(joiner, net.peers(), net.hotkey("alice"), 6)
    assert load_checkpoint(forgetful, net.peers(), net.hotkey("alice"), 6)
    assert joiner.clip_history == lead.clip_history and all(len(h) == 6 for h in lead.clip_history.values())
    forgetful.clip_history = {}  # what a checkpoint without the history would give
    for w in range(6, 10):
        updates = window_updates(lead.shapes(), w)
        stats = lead.apply_updates(updates, 1e-3)
        joiner.apply_updates(StreamedUpdates([{n: l2_norm(t) for n, t in u.items()} for u in updates],
                                             lambda i, u=updates: u[i]), 1e-3)  # the streamed path: same bits
        forgetful.apply_updates(updates, 1e-3)
        assert stats["clip_norms"] == joiner.clip_ref
        assert joiner.fingerprint() == lead.fingerprint() and joiner.clip_history == lead.clip_history
    assert forgetful.fingerprint() != lead.fingerprint()  # the floor bound: without the history, other bits


def test_a_checkpoint_with_a_hostile_history_is_not_loaded(net):
    gm, alice = GlobalModel.initial(net.hp, CPU), net.neurons["alice"]
    tensors = {n: p.detach().clone() for n, p in gm.model.named_parameters()}
    fields = checkpoint_fields(net.hp, gm.fingerprint(), Lineage(), None, {n: (1.0,) for n in tensors})
    fields["clip_history"] = {n: [1.0, -1e30] for n in tensors}  # a floor of its choosing, or none
    alice.bucket.put_checkpoint(3, write_tensor_artifact(tensors, kind="checkpoint", window=3,
                                                         keypair=alice.keypair, fields=fields))
    follower = GlobalModel.initial(net.hp, CPU)
    follower.clip_history = before = {n: (2.0,) for n in tensors}
    assert not load_checkpoint(follower, net.peers(), net.hotkey("alice"), 3)
    assert follower.clip_history is before and follower.window == 0


def test_resync_to_theta_0_forgets_the_history(net):
    gm = GlobalModel.initial(net.hp, CPU)
    gm.apply_updates(window_updates(gm.shapes(), 0), 1e-3)
    assert gm.clip_history
    resync(gm, net.peers(), net.hotkey("alice"), 5, CPU)  # no checkpoint published: theta_0
    assert gm.clip_history == {} and gm.clip_ref is None and gm.window == 0


def test_trial_steps_leave_the_history_as_it_was(net):
    gm = GlobalModel.initial(net.hp, CPU)
    gm.apply_updates(window_updates(gm.shapes(), 0), 1e-3)
    history, ref = gm.clip_history, gm.clip_ref
    batch = net.dataset.batch(list(range(160, 168)))
    gm.own_gains(window_updates(gm.shapes(), 5), 1e-3, batch, mean_loss(gm.model, batch))
    assert gm.clip_history is history and gm.clip_ref is ref
    # a step the guard refuses (a huge rise): theta and the history restored
    fp = gm.fingerprint()
    stats = gm.guarded_step(window_updates(gm.shapes(), 6)[:3], 100.0, batch, drop_no_gain=False)
    assert stats["refused"] and gm.fingerprint() == fp
    assert gm.clip_history is history and gm.clip_ref is ref


def test_the_validator_scores_with_the_floored_limits():
    shapes = {"w": (8, 4), "b": (4,)}
    updates = window_updates(shapes, 7)
    norms = [{n: l2_norm(t) for n, t in u.items()} for u in updates]
    history = {"w": (1.0, 1.2, 0.9), "b": (1.0, 1.1, 1.3)}
    ref = {"w": 0.9, "b": 1.0}  # the growth clamp alone: 0.45 and 0.5; the floors: 0.5 and 0.55
    stats = outer_step({n: torch.zeros(s) for n, s in shapes.items()}, updates, 1.0, clip_ref=ref,
                       clip_history=history)
    gathered = StreamedUpdates(norms, lambda i: updates[i])
    limits = scoring_limits(tiny_hparams(), ref, gathered, {}, history)
    assert limits == stats["clip_norms"]
    assert all(math.isclose(limits[n], CLIP_FLOOR_FRACTION * median(list(history[n]))) for n in shapes)


@pytest.mark.slow  # about 20 s: real inner training and the codec, two variants
def test_the_benchmarks_sybils_shrink_honest_updates_less_with_the_floor():
    """scripts/bench_progress.py's small variants, in miniature: sybils whose tiny updates pass the no-gain drop
    hold the lower median; with the floor the honest updates keep more of their norm."""
    setup = Setup(honest=2, small=3, small_from=1, small_direction="trained", windows=4, inner_steps=2, batch_size=2,
                  seq_len=8, vocab=32, num_train=512, num_heldout=48, guard_samples=8)
    growth_only = run_variant("small_growth_only", setup)
    floored = run_variant("small_floored", setup)
    assert growth_only["honest_applied_last"] < 0.2
    assert floored["honest_applied_last"] > 1.5 * growth_only["honest_applied_last"]
