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
  runtime's guard before the drawn guard batch).

Reported per variant: the private held-out loss after the windows, and `progress` = (L0 - L) / (L0 - L_clean).
"""

from __future__ import annotations

import copy
import dataclasses
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
from template.protocol.outer_step import outer_step
from template.protocol.sparseloco import CodecParams, compress, decompress
from template.sim.protocol_attacks import STALL_HONEST_GUESS, share_mask

GAIN_FLOOR = 0.25
VARIANTS = ("clean", "stall_public_guard", "stall_random_guard", "stall_drop_opposed", "stall_gain_refusal",
            "stall_drop_no_gain", "stall_public_drop_no_gain")
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
    members = list(range(s.honest)) + ([] if variant == "clean" else list(range(s.honest, s.honest + s.stall)))
    ef: dict[int, dict[str, torch.Tensor]] = {u: {} for u in members}
    clip_ref: dict[str, float] | None = None
    refused = dropped = 0
    honest_dropped = 0
    for w in range(s.windows):
        assigned = {u: sample_ids(u, w, hp.data_seed, hp.samples_per_window, s.num_train) for u in members}
        random_guard = tokens[guard_ids(f"{s.seed}:{w}", w, s.guard_samples, s.num_train,
                                        {i for ids in assigned.values() for i in ids})]
        guard = public_guard if variant in PUBLIC_GUARD else random_guard
        updates = []
        for u in members:
            delta = train(model, tokens[assigned[u]], hp)
            if u >= s.honest:  # a stall member: cancel the honest direction on its share, train on the public guard
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
        if variant == "stall_gain_refusal" or variant in DROP_NO_GAIN:
            for upd in updates:
                with torch.no_grad():
                    for n, p in params.items():
                        p.sub_(upd[n] * hp.outer_lr)
                gains.append(before - mean_loss(model, guard))
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(saved[n])
        if variant in DROP_NO_GAIN:
            drop = set(no_gain_members(gains))
            dropped += sum(1 for i in drop if members[i] >= s.honest)
            honest_dropped += sum(1 for i in drop if members[i] < s.honest)
            updates = [u for i, u in enumerate(updates) if i not in drop]
        cpu = {n: p.detach().clone() for n, p in params.items()}
        stats = outer_step(cpu, updates, hp.outer_lr, clip_ref=clip_ref, norm_growth=hp.clip_norm_growth)
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
    return {"variant": variant, "loss_start": round(l0, 4), "loss_end": round(mean_loss(model, private), 4),
            "refused_steps": refused, "stall_members_dropped": dropped, "honest_members_dropped": honest_dropped}


def measure(s: Setup) -> dict[str, Any]:
    rows = {v: run_variant(v, s) for v in VARIANTS}
    clean_gain = rows["clean"]["loss_start"] - rows["clean"]["loss_end"]
    for r in rows.values():
        r["progress"] = round((r["loss_start"] - r["loss_end"]) / clean_gain, 3) if clean_gain > 0 else None
    return {"settings": dataclasses.asdict(s), "variants": rows}
