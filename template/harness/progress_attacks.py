"""In-process measurement of the stall coalition against the progress defences (issue 27, Build 3).

One process plays a network of honest miners and a `stall` coalition (template/sim/protocol_attacks.py) on the
`tiny` preset over a synthetic bigram source, with the protocol's own codec (`sparseloco.compress`, error
feedback per miner), outer step (`outer_step`, clip history) and guard (`step_refused`). Variants:

- clean: honest miners only (the progress every variant is compared with);
- stall_public_guard: the coalition joins; the guard batch is the public fixed loss-curve set, which the
  coalition trains on (the defences before issue 27);
- stall_random_guard: the guard batch drawn per window from unassigned ids (`gauntlet.progress.guard_ids`);
- stall_drop_opposed: random guard, and members that point against most of the others dropped
  (`gauntlet.progress.opposed_members`);
- stall_gain_refusal: random guard, and a step refused when its guard gain is below `GAIN_FLOOR` x the mean of
  its members' own guard gains;
- stall_drop_no_gain: random guard, and members whose own step (alone, at the outer lr) does not lower the
  guard loss dropped before the step (the runtime's guard since the guard batch is drawn from a block hash);
- stall_public_drop_no_gain: the same drop, on the public loss-curve guard the coalition trains on (the
  runtime's guard before the drawn guard batch);
- small_growth_only: no stall coalition; from window `small_from` on, `small` sybils on the peer list beside the
  honest miners, each sending a random direction of `small_norm` x the norm of the update it trained (per
  tensor; `small_direction` "trained": its trained update scaled down, which lowers the guard loss and so passes
  the no-gain drop), against the network's defences (random guard, no-gain drop) with the clip held by the growth clamp
  alone (the outer step before the clip floor): the lower median of the norms is a sybil's, so the limit, and
  every honest update, halves each window;
- small_floored: the same with the clip floor (`outer_step`'s `clip_history`, as every node steps);
- small_absent: the same defences and no sybils (the small variants' baseline).

Every variant but small_growth_only steps with the clip floor. Reported per variant: the private held-out loss
after the windows, `progress` = (L0 - L) / (L0 - L_clean), and `honest_applied` = the mean share of an honest
update's norm the step applied (min(1, limit / norm) per tensor), over the windows the sybils were there (all
windows for the others) and in the last window. The small variants also report the loss when the sybils join
(`loss_at_join`) and `progress_attacked` = (L_join - L) / (L_join - L) of small_absent: the progress of the
attacked windows against the same windows without sybils.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
from typing import Any

import numpy as np
import torch

from gauntlet.aggregate import step_refused
from gauntlet.evaluate import mean_loss
from gauntlet.progress import guard_ids, no_gain_members, opposed_members
from template.protocol.config import HParams
from template.protocol.data import sample_ids
from template.protocol.model import build_model
from template.protocol.outer_step import history_after, l2_norm, outer_step
from template.protocol.sparseloco import CodecParams, compress, decompress
from template.sim.protocol_attacks import STALL_HONEST_GUESS, share_mask

GAIN_FLOOR = 0.25
VARIANTS = ("clean", "stall_public_guard", "stall_random_guard", "stall_drop_opposed", "stall_gain_refusal",
            "stall_drop_no_gain", "stall_public_drop_no_gain", "small_growth_only", "small_floored", "small_absent")
PUBLIC_GUARD = ("clean", "stall_public_guard", "stall_public_drop_no_gain")  # variants guarded on the public set
DROP_NO_GAIN = ("stall_drop_no_gain", "stall_public_drop_no_gain")


@dataclasses.dataclass(frozen=True)
class Setup:
    honest: int = 4
    stall: int = 3
    windows: int = 8
    inner_steps: int = 8
    batch_size: int = 4
    seq_len: int = 32
    vocab: int = 128
    num_train: int = 4096
    num_heldout: int = 256
    guard_samples: int = 32
    seed: int = 0
    small: int = 5  # sybils of the small variants (a majority beside 4 honest: theirs is the lower median)
    small_from: int = 4  # the window they join (the clip history is the honest one's by then)
    small_norm: float = 1e-3  # a sybil's norm, as a share of its trained update's (per tensor)
    small_direction: str = "random"  # "random", or "trained": its trained update scaled down (passes the no-gain drop)


def bigram_tokens(s: Setup) -> torch.Tensor:
    """(num_train + num_heldout, seq_len + 1) tokens of a random sparse bigram source: learnable, not at once."""
    rng = np.random.default_rng(s.seed)
    succ = rng.integers(0, s.vocab, size=(s.vocab, 4))
    n = s.num_train + s.num_heldout
    out = np.empty((n, s.seq_len + 1), dtype=np.int64)
    out[:, 0] = rng.integers(0, s.vocab, size=n)
    for t in range(1, s.seq_len + 1):
        out[:, t] = succ[out[:, t - 1], rng.integers(0, 4, size=n)]
    return torch.from_numpy(out)


def train(model: torch.nn.Module, batch: torch.Tensor, hp: HParams) -> dict[str, torch.Tensor]:
    """H AdamW steps from the model's weights on `batch` (H x batch_size samples); delta = theta - theta_local."""
    local = copy.deepcopy(model)
    local.train()
    opt = torch.optim.AdamW(local.parameters(), lr=hp.inner_lr, weight_decay=hp.inner_weight_decay)
    for step in range(hp.inner_steps):
        part = batch[step * hp.batch_size:(step + 1) * hp.batch_size]
        _, loss = local(part[:, :-1], part[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    base = dict(model.named_parameters())
    return {n: (base[n] - p).detach() for n, p in local.named_parameters()}


def run_variant(variant: str, s: Setup) -> dict[str, Any]:
    torch.manual_seed(s.seed)
    hp = HParams(model_preset="tiny", vocab_size=s.vocab, seq_len=s.seq_len, inner_steps=s.inner_steps,
                 batch_size=s.batch_size)
    codec = CodecParams.from_hparams(hp)
    tokens = bigram_tokens(s)
    heldout = tokens[s.num_train:]
    public_guard = heldout[:s.guard_samples]  # the loss-curve samples: public, fixed
    private = heldout[s.guard_samples:]  # what the benchmark measures progress on
    model = build_model("tiny", s.vocab, s.seq_len, hp.model_seed)
    params = dict(model.named_parameters())
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    l0 = mean_loss(model, private)
    small = variant.startswith("small_")
    hostile = list(range(s.honest, s.honest + (0 if variant == "small_absent" else s.small if small else s.stall)))
    loss_at_join = None
    everyone = list(range(s.honest)) + ([] if variant == "clean" else hostile)
    ef: dict[int, dict[str, torch.Tensor]] = {u: {} for u in everyone}
    clip_ref: dict[str, float] | None = None
    clip_history: dict[str, tuple[float, ...]] = {}
    refused = dropped = 0
    honest_dropped = 0
    applied: list[float] = []  # per measured window: the mean share of an honest update's norm applied
    gen = torch.Generator().manual_seed(s.seed)
    for w in range(s.windows):
        members = [u for u in everyone if not (small and u >= s.honest and w < s.small_from)]
        if small and w == s.small_from:
            loss_at_join = round(mean_loss(model, private), 4)
        assigned = {u: sample_ids(u, w, hp.data_seed, hp.samples_per_window, s.num_train) for u in members}
        random_guard = tokens[guard_ids(f"{s.seed}:{w}", w, s.guard_samples, s.num_train,
                                        {i for ids in assigned.values() for i in ids})]
        guard = public_guard if variant in PUBLIC_GUARD else random_guard
        updates = []
        for u in members:
            delta = train(model, tokens[assigned[u]], hp)
            if u >= s.honest and small and s.small_direction == "trained":  # a sybil: its update, scaled down
                delta = {n: d * s.small_norm for n, d in delta.items()}
            elif u >= s.honest and small:  # a sybil: a random direction, a tiny share of its trained update's norm
                delta = {n: torch.randn(d.shape, generator=gen) * (s.small_norm * l2_norm(d)
                                                                   / math.sqrt(d.numel())) for n, d in delta.items()}
            elif u >= s.honest:  # a stall member: cancel the honest direction on its share, train on the public guard
                pg = train(model, public_guard[:hp.samples_per_window].repeat(2, 1)[:hp.samples_per_window], hp)
                member = (u - s.honest) % s.stall
                delta = {n: -d * STALL_HONEST_GUESS * share_mask(tuple(d.shape), hp.chunk_size, member, s.stall)
                         + pg[n] for n, d in delta.items()}
            wire, ef[u] = compress(delta, ef[u] or None, codec, hp.ef_beta)
            updates.append(decompress(wire, shapes, codec))
        if variant == "stall_drop_opposed":
            drop = set(opposed_members(updates))
            dropped += sum(1 for i in drop if members[i] >= s.honest)
            honest_dropped += sum(1 for i in drop if members[i] < s.honest)
            updates = [u for i, u in enumerate(updates) if i not in drop]
        saved = {n: p.detach().clone() for n, p in params.items()}
        before = mean_loss(model, guard)
        gains = []
        if variant == "stall_gain_refusal" or variant in DROP_NO_GAIN or small:
            for upd in updates:
                with torch.no_grad():
                    for n, p in params.items():
                        p.sub_(upd[n] * hp.outer_lr)
                gains.append(before - mean_loss(model, guard))
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(saved[n])
        kept = members
        if variant in DROP_NO_GAIN or small:
            drop = set(no_gain_members(gains))
            dropped += sum(1 for i in drop if members[i] >= s.honest)
            honest_dropped += sum(1 for i in drop if members[i] < s.honest)
            updates = [u for i, u in enumerate(updates) if i not in drop]
            kept = [m for i, m in enumerate(members) if i not in drop]
        cpu = {n: p.detach().clone() for n, p in params.items()}
        stats = outer_step(cpu, updates, hp.outer_lr, clip_ref=clip_ref, norm_growth=hp.clip_norm_growth,
                           clip_history=None if variant == "small_growth_only" else clip_history)
        if stats["used"] and (not small or w >= s.small_from):
            shares = [min(1.0, stats["clip_norms"][n] / norm) if norm > 0 else 1.0
                      for u, m in zip(updates, kept, strict=True) if m < s.honest
                      for n, norm in ((n, l2_norm(t)) for n, t in u.items())]
            if shares:
                applied.append(statistics.mean(shares))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(cpu[n])
        after = mean_loss(model, guard)
        refuse = step_refused(before, after, max_rise=hp.max_loss_rise)
        positive = [g for g in gains if g > 0]
        if variant == "stall_gain_refusal" and positive and before - after < GAIN_FLOOR * statistics.mean(positive):
            refuse = True
        if refuse:
            refused += 1
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(saved[n])
        elif stats["used"]:
            clip_ref = dict(stats["clip_norms"])
            clip_history = history_after(clip_history, stats["clip_norms"])
    return {"variant": variant, "loss_start": round(l0, 4), "loss_end": round(mean_loss(model, private), 4),
            "loss_at_join": loss_at_join,
            "refused_steps": refused, "stall_members_dropped": dropped, "honest_members_dropped": honest_dropped,
            "honest_applied_mean": round(statistics.mean(applied), 4) if applied else None,
            "honest_applied_last": round(applied[-1], 6) if applied else None}


def measure(s: Setup, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Every variant in `variants` (clean always: it is the baseline) on setup `s`."""
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    rows = {v: run_variant(v, s) for v in VARIANTS if v == "clean" or v in variants}
    clean_gain = rows["clean"]["loss_start"] - rows["clean"]["loss_end"]
    for r in rows.values():
        r["progress"] = round((r["loss_start"] - r["loss_end"]) / clean_gain, 3) if clean_gain > 0 else None
    absent = rows.get("small_absent")
    for r in rows.values():
        if absent is not None and r["loss_at_join"] is not None and absent["loss_at_join"] is not None:
            gain = absent["loss_at_join"] - absent["loss_end"]
            r["progress_attacked"] = round((r["loss_at_join"] - r["loss_end"]) / gain, 3) if gain > 0 else None
    return {"settings": dataclasses.asdict(s), "variants": rows}
