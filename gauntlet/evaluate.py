"""Loss-based evaluation of one miner's decoded update (DESIGN section 8).

The validator applies the update to theta_w exactly as the outer step would
(`theta <- theta - lr * update`, the update being the pseudo-gradient theta_start - theta_trained),
measures the loss on the miner's assigned samples and on a random held-out batch nobody
was assigned, and restores theta_w bit for bit before the next miner is judged.

improvement = (L_before - L_after) / L_before: positive when the update helps. Relative, so
the assigned and the random batch (whose base losses differ) can be compared for compliance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EvalResult:
    loss_before_random: float
    loss_after_random: float
    loss_before_assigned: float
    loss_after_assigned: float
    improvement_random: float
    improvement_assigned: float


class RestoreError(RuntimeError):
    """theta_w could not be restored exactly after an evaluation (a bug; the validator must stop)."""


def relative_improvement(before: float, after: float) -> float:
    """(before - after) / before; -inf when the update made the loss non-finite."""
    if not math.isfinite(after):
        return -math.inf
    if before <= 0 or not math.isfinite(before):
        return before - after  # a zero base loss leaves nothing to normalise by
    return (before - after) / before


EVAL_MICRO_BATCH = 4  # samples per forward: bounds the fp32 logits (4 x T x V; 4.2 GB at the 1B/8B vocab and T 2048)


def mean_loss(model: torch.nn.Module, batch: torch.Tensor, *, micro_batch: int = EVAL_MICRO_BATCH) -> float:
    """Mean next-token loss of `batch` (n, seq_len + 1): inputs batch[:, :-1], targets batch[:, 1:].

    Runs at most `micro_batch` samples per forward and weighs each part's mean by its counted targets (those
    not -1), so the result is the whole batch's mean (to float rounding) while the logits held at once stay
    micro_batch x seq_len x vocab, whatever n is. NaN when no target counts (as the one-forward mean)."""
    if batch.dim() != 2 or batch.shape[1] < 2:
        raise ValueError(f"batch must be (n, seq_len + 1) token ids, got shape {tuple(batch.shape)}")
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    was_training = model.training
    model.eval()
    total, counted = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, batch.shape[0], micro_batch):
                part = batch[start:start + micro_batch]  # (m, seq_len + 1), m <= micro_batch
                num_targets = int((part[:, 1:] != -1).sum())
                if num_targets == 0:
                    continue
                _, loss = model(part[:, :-1], part[:, 1:])
                total += float(loss) * num_targets  # a Python float: summed in float64
                counted += num_targets
    finally:
        model.train(was_training)
    return total / counted if counted else math.nan


def _apply(params: dict[str, torch.nn.Parameter], update: dict[str, torch.Tensor], lr: float) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.sub_(update[name].to(device=p.device, dtype=p.dtype), alpha=lr)


def _restore(params: dict[str, torch.nn.Parameter], saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])
    bad = [name for name, p in params.items() if not torch.equal(p.detach(), saved[name])]
    if bad:
        raise RestoreError(f"parameters {bad[:4]} differ from theta_w after restore")


def evaluate_update(
    model: torch.nn.Module,
    update: dict[str, torch.Tensor],
    *,
    assigned_batch: torch.Tensor,
    random_batch: torch.Tensor,
    lr: float,
    loss_before_random: float | None = None,
) -> EvalResult:
    """Losses before/after applying `update` with step `lr`; the model is left exactly as found.

    `loss_before_random` may pass in the loss of theta_w on `random_batch` when every miner
    of the window is judged on the same batch (it is the same number for all of them).
    """
    params = dict(model.named_parameters())
    if set(update) != set(params):
        diff = sorted(set(update) ^ set(params))[:4]
        raise ValueError(f"update tensors must match the model's parameters; differing names {diff}")
    before_random = mean_loss(model, random_batch) if loss_before_random is None else loss_before_random
    before_assigned = mean_loss(model, assigned_batch)
    saved = {name: p.detach().clone() for name, p in params.items()}
    try:
        _apply(params, update, lr)
        after_random = mean_loss(model, random_batch)
        after_assigned = mean_loss(model, assigned_batch)
    finally:
        _restore(params, saved)
    return EvalResult(
        loss_before_random=before_random,
        loss_after_random=after_random,
        loss_before_assigned=before_assigned,
        loss_after_assigned=after_assigned,
        improvement_random=relative_improvement(before_random, after_random),
        improvement_assigned=relative_improvement(before_assigned, after_assigned),
    )


def match_scores(uids: list[int], improvement: dict[int, float], *, min_improvement: float = 0.0,
                 min_ratio_to_best: float = 0.0, compliant: dict[int, bool] | None = None
                 ) -> dict[int, float | None]:
    """uid -> score for this window's match: the random-batch improvement, or None (a failure).

    An update counts only if it lowers the loss by more than `min_improvement` (relative) and by
    at least `min_ratio_to_best` of the window's best update. Everything else ranks with the
    failures: noise, a negated or a stale update must never beat a miner who did not upload,
    and a random perturbation that happens to move the loss by a hair earns nothing.

    With `compliant` given, an update that did not pass the compliance test this window
    (`is_compliant`) is a failure too, and does not set the window's best: compliance counts in
    every window's rank, so a miner that skips its assignment every other window loses those
    matches instead of keeping its place on the strength of the windows it did work.
    """
    players = set(uids)
    if compliant is not None:
        players = {u for u in players if compliant.get(u, False)}
    finite = {u: x for u, x in improvement.items() if u in players and math.isfinite(x)}
    best = max(finite.values(), default=0.0)
    floor = max(min_improvement, min_ratio_to_best * best, 0.0)
    return {uid: (finite[uid] if uid in finite and finite[uid] > floor else None) for uid in uids}


def is_compliant(improvement_assigned: float, improvement_random: float, *, margin: float) -> bool:
    """Did the update help the miner's own samples clearly more than unseen ones?

    A miner that trained on its assignment has seen those samples once, so its update lowers
    their loss by a few percent more (relative) than a random batch's; one that trained on
    other data does not. The margin keeps a lazy miner's chance ratio of ~1.0 from passing
    half the time (measured in docs/validator.md).
    """
    if not (math.isfinite(improvement_assigned) and math.isfinite(improvement_random)) or improvement_random <= 0:
        return False
    return improvement_assigned > improvement_random * (1 + margin)
