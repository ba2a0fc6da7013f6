"""gauntlet/sampling.py: the private rotating eval sample (fair, newcomers first, keyed) and the copy sketch,
and a scoring-level simulation of hundreds of synthetic miners through the pure gauntlet functions."""

from __future__ import annotations

import math
import random

import pytest
import torch

from gauntlet.checks import Admission, index_overlap
from gauntlet.evaluate import is_compliant, match_scores
from gauntlet.ratings import Ratings
from gauntlet.sampling import Rotation, draw_sample, rounds_bound, sketch_indices, sketch_rate
from gauntlet.weights import compute_weights, final_scores
from template.protocol.config import HParams


def run_rotation(candidates: dict[int, str], k: int, windows: int, seed: int = 0) -> list[list[int]]:
    rng, rotation, drawn = random.Random(seed), Rotation(), []
    for w in range(windows):
        sample, rotation = draw_sample(candidates, rotation, k=k, seed=rng.randbytes(32))
        rotation = rotation.after(w, {u: (candidates[u], True) for u in sample})
        drawn.append(sample)
    return drawn


def test_zero_or_large_k_evaluates_everyone():
    cands = {u: f"hk{u}" for u in range(5)}
    assert draw_sample(cands, Rotation(), k=0, seed=b"s")[0] == [0, 1, 2, 3, 4]
    assert draw_sample(cands, Rotation(), k=9, seed=b"s")[0] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="eval sample size"):
        draw_sample(cands, Rotation(), k=-1, seed=b"s")


@pytest.mark.parametrize(("n", "k"), [(50, 8), (256, 32), (33, 32), (10, 3)])
def test_rotation_is_fair(n, k):
    """k per window; every miner once per round of at most ceil(N/k) windows; gaps <= 2 ceil(N/k) - 1."""
    cands = {u: f"hk{u}" for u in range(n)}
    bound = rounds_bound(n, k)
    windows = 6 * bound
    drawn = run_rotation(cands, k, windows)
    assert all(len(s) == k == len(set(s)) for s in drawn)
    last: dict[int, int] = {}
    gaps = []
    for w, sample in enumerate(drawn):
        for u in sample:
            gaps.append(w - last.get(u, -1))
            last[u] = w
    assert max(gaps) <= 2 * bound - 1
    assert max(w for w in (last.get(u, -1) for u in cands)) >= windows - bound  # all still drawn recently
    counts = [sum(u in s for s in drawn) for u in cands]
    assert min(counts) >= windows // bound - 1 and min(counts) >= 5
    assert max(counts) - min(counts) <= 2  # nobody is evaluated much more often than the others


def test_newcomers_are_drawn_first_and_a_new_hotkey_is_a_newcomer():
    cands = {u: f"hk{u}" for u in range(40)}
    rng = random.Random(1)
    rotation = Rotation()
    for w in range(13):  # past the first round: every (uid, hotkey) has been evaluated once
        sample, rotation = draw_sample(cands, rotation, k=4, seed=rng.randbytes(32))
        rotation = rotation.after(w, {u: (cands[u], True) for u in sample})
    grown = {**cands, 40: "hk40", 41: "hk41", 7: "hk7-new"}  # two registrations, and uid 7 re-registered
    sample, _ = draw_sample(grown, rotation, k=4, seed=rng.randbytes(32))
    assert {40, 41, 7} <= set(sample)


def test_sample_is_keyed_by_the_private_seed():
    cands = {u: f"hk{u}" for u in range(256)}
    a = draw_sample(cands, Rotation(), k=16, seed=b"validator-a")[0]
    assert draw_sample(cands, Rotation(), k=16, seed=b"validator-a")[0] == a  # reproducible given the seed
    others = [draw_sample(cands, Rotation(), k=16, seed=bytes([i]) * 32)[0] for i in range(20)]
    assert all(o != a for o in others)
    hits = sum(len(set(o) & set(a)) for o in others) / len(others)
    assert hits < 4  # about 16 * 16 / 256 = 1 shared uid by chance: validators draw independently


def test_rotation_state_round_trips():
    rot = Rotation(done=frozenset({(3, "a"), (1, "b")}), evaluated={3: ("a", 7, True), 1: ("b", 6, False)})
    assert Rotation.from_state(rot.state_dict()) == rot
    assert Rotation.from_state(None) == Rotation()
    assert rot.carried_successes({3: "a", 1: "b", 9: "z"}) == [3]
    assert rot.carried_successes({3: "other-hotkey"}) == []


# -- copy sketch ---------------------------------------------------------------------------------


def positions(seed: int, n: int = 60_000, span: int = 2_000_000) -> torch.Tensor:
    return torch.randperm(span, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def adm(uid: int, indices: dict[str, torch.Tensor]) -> Admission:
    return Admission(uid=uid, ok=True, reason=None, update=None, payload_sha256=str(uid), in_sync=True,
                     indices=indices)


def test_sketch_estimates_overlap_and_is_keyed():
    a = positions(1)
    near = torch.cat([a[:57_000], positions(2)[:3_000]])  # 95 % of a's positions
    far = positions(3)
    rate = 8192 / 60_000
    sk = [sketch_indices({"w": x}, seed=b"k1", rate=rate) for x in (a, near, far)]
    assert 6_500 < sk[0]["w"].numel() < 10_000
    ov = index_overlap([adm(i, s) for i, s in enumerate(sk)])
    assert abs(float(ov[1, 0]) - 0.95) < 0.02
    assert float(ov[2, 0]) < 0.1
    other_key = sketch_indices({"w": a}, seed=b"k2", rate=rate)["w"]
    shared = len(set(other_key.tolist()) & set(sk[0]["w"].tolist())) / sk[0]["w"].numel()
    assert shared < 0.3  # another key samples other positions: a copier cannot aim at the sampled ones


def test_sketch_rate_is_one_for_small_models_and_sketch_then_exact():
    hp = HParams()
    assert sketch_rate({"w": (64, 64)}, topk=hp.topk, chunk_size=hp.chunk_size) == 1.0
    big = {"w": (2048, 2048 * 64)}
    kept = 2048 * 2048 * 64 * hp.topk // hp.chunk_size**2  # topk of every chunk_size**2 elements
    assert sketch_rate(big, topk=hp.topk, chunk_size=hp.chunk_size) == pytest.approx(8192 / kept)
    x = positions(4, n=100)
    assert torch.equal(sketch_indices({"w": x}, seed=b"k", rate=1.0)["w"], x)
    with pytest.raises(ValueError, match="sketch rate"):
        sketch_indices({"w": x}, seed=b"k", rate=0.0)


# -- simulation: hundreds of synthetic miners through the pure scoring functions ------------------


KINDS = {"honest": 200, "noise": 25, "lazy": 25, "idle": 25, "timed": 25}


def synthetic_eval(kind: str, window: int, rng: random.Random) -> tuple[float, float]:
    """(improvement_random, improvement_assigned) drawn for one evaluated update of a miner of `kind`."""
    honest = rng.gauss(0.02, 0.004)
    if kind == "noise":
        x = rng.gauss(-0.01, 0.004)
        return x, x
    if kind == "lazy" or (kind == "timed" and window % 2):  # trains on other data: assigned ~ random
        return honest, honest * (1 + rng.gauss(0, 0.01))
    return honest, honest * (1 + rng.uniform(0.05, 0.15))


def simulate(k: int, windows: int, seed: int = 0) -> tuple[dict[int, str], dict[int, float], dict[int, int]]:
    hp = HParams()
    rng = random.Random(seed)
    kinds = [kind for kind, n in KINDS.items() for _ in range(n)]
    rng.shuffle(kinds)
    kind_of = dict(enumerate(kinds))
    hotkeys = {u: f"hk{u}" for u in kind_of}
    ratings, rotation, times = Ratings(alpha=hp.compliance_alpha), Rotation(), dict.fromkeys(kind_of, 0)
    for w in range(windows):
        rejected = [u for u, kind in kind_of.items() if kind == "idle"]  # nothing uploaded: fails the checks
        admitted = {u: hotkeys[u] for u in kind_of if u not in rejected}
        sample, rotation = draw_sample(admitted, rotation, k=k, seed=rng.randbytes(32))
        evals = {u: synthetic_eval(kind_of[u], w, rng) for u in sample}
        compliant = {u: is_compliant(a, r, margin=hp.compliance_margin) for u, (r, a) in evals.items()}
        scores = match_scores(sorted(set(rejected) | set(sample)), {u: r for u, (r, _) in evals.items()},
                              min_improvement=hp.min_improvement, min_ratio_to_best=hp.min_improvement_ratio,
                              compliant=compliant)
        ratings.update(w, scores, hotkeys, compliant=compliant)
        rotation = rotation.after(w, {u: (hotkeys[u], scores[u] is not None) for u in sample})
        for u in sample:
            times[u] += 1
    final = final_scores(ratings.ordinals(), ratings.compliance(), dict.fromkeys(kind_of, True),
                         threshold=hp.compliance_threshold)
    return kind_of, final, times


def test_sampled_scoring_ranks_honest_above_hostile():
    """300 miners (200 honest; noise, lazy, idle and timed - honest every other window - 25 each), 32 of the
    275 that upload evaluated per window: rounds of 9 windows. After 80 windows (about 9 evaluations each)
    every honest miner scores above every hostile one (five seeds checked). After 40 (4-5 evaluations) a timed
    miner that happened to be drawn only in its honest windows can still hold a little weight (one of 64
    winners, 2.6 % of it, at this seed): sampling multiplies the time to find out by about N/k."""
    kind_of, final, times = simulate(k=32, windows=80)
    admitted = [u for u, kind in kind_of.items() if kind != "idle"]
    bound = rounds_bound(len(admitted), 32)
    assert bound == 9
    assert min(times[u] for u in admitted) >= math.floor(80 / bound)
    honest = [final[u] for u, kind in kind_of.items() if kind == "honest"]
    hostile = [final.get(u, 0.0) for u, kind in kind_of.items() if kind != "honest"]
    assert min(honest) > max(hostile)
    assert sum(1 for x in hostile if x > 0) <= 15  # only timed miners keep a compliance gate open at times
    kind_of, final, _ = simulate(k=32, windows=40, seed=1)
    weights = compute_weights(final, n=len(kind_of), owner_uid=0, burn_rate=0.0, top_n=64)
    assert sum(wt for u, wt in enumerate(weights) if kind_of[u] != "honest") < 0.05  # measured 0.026


def test_full_evaluation_ranks_the_same_way():
    """The same population with everyone evaluated every window (k = 0, today's behaviour)."""
    kind_of, final, _ = simulate(k=0, windows=12)
    honest = [final[u] for u, kind in kind_of.items() if kind == "honest"]
    assert min(honest) > max(final.get(u, 0.0) for u, kind in kind_of.items() if kind != "honest")
