"""The validator loop (DESIGN sections 4, 7, 8): fetch, admit, evaluate, rate, weigh, aggregate.

Works on window w after its deadline, while miners train w+1. Every decision is a pure
function in gauntlet/; this module only moves bytes between the chain, the buckets, the
model and those functions, and persists what must survive a restart (`ValidatorState`).
`run_window` is five named phases: judge, score, weigh, lead step or follow (template/node/lead.py),
remember.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from loguru import logger

from gauntlet.aggregate import gather_set
from gauntlet.checks import VANISHED, Admission, Upload
from gauntlet.evaluate import EvalResult, evaluate_update, is_compliant, match_scores, mean_loss
from gauntlet.pay import explain_window, horizon_step, pay_scores
from gauntlet.sampling import draw_sample
from gauntlet.weights import compute_weights, weights_due
from storage.peers import fetch_peer_list, fetch_uploads
from template.node.admission import (
    AdmissionWindow,
    Checked,
    admit_all,
    near_copy_key,
    release_freed_memory,
    remember_aggregate,
    remember_gathered,
    remember_sketches,
    upload_spool,
    vanished_inputs,
)
from template.node.lead import apply_outer_step, ensure_peer_lists, heldout_loss, judged_miners, restore_model
from template.node.metrics import PhaseTimer
from template.node.neuron import (
    TRANSIENT_ERRORS,
    NeuronParts,
    SetupError,
    StopFlag,
    append_metrics,
    build_node,
    find_lead,
)
from template.node.preflight import require_version
from template.node.state import ValidatorState, WindowSeed, load_validator_state, save_validator_state
from template.node.sync import (
    GlobalModel,
    outer_step_metrics,
)
from template.protocol.config import HParams, NeuronConfig
from template.protocol.data import EVAL_MIN_PAGES, SampleSource, eval_ids_by_page, sample_ids
from template.protocol.metagraph import Metagraph
from template.protocol.outer_step import ClipHistory, StreamedUpdates, clip_limit, clip_update
from template.protocol.version import VERSION_KEY


@dataclass
class Validator(NeuronParts):
    """Long-lived parts of a running validator. Per-window values travel as arguments; what it remembers
    from one window to the next is `state`."""

    num_train: int
    num_samples: int
    gm: GlobalModel
    state: ValidatorState
    stop: StopFlag = field(default_factory=StopFlag)
    rng: random.Random = field(default_factory=random.SystemRandom)  # private randomness; tests seed their own

    @property
    def hp(self) -> HParams:
        return self.gm.hparams


def build_validator(cfg: NeuronConfig) -> Validator:
    node = build_node(cfg)
    hp = node.hparams
    try:
        state = load_validator_state(node.state_dir, alpha=hp.compliance_alpha)
    except ValueError as e:
        raise SetupError(str(e)) from e
    v = Validator(cfg=cfg, hotkey=node.hotkey, uid=node.uid, chain=node.chain, clock=node.clock, peers=node.peers,
                  bucket=node.bucket, dataset=node.dataset, num_train=node.manifest.heldout_start,
                  num_samples=node.manifest.num_samples, gm=GlobalModel.initial(hp, node.device),
                  device=node.device, state_dir=node.state_dir, state=state)
    logger.info(f"validator uid {v.uid} on netuid {cfg.netuid}; ratings for {state.restored_ratings} uids restored")
    return v


def save_state(v: Validator) -> None:
    save_validator_state(v.state, v.state_dir)


@dataclass
class JudgedWindow:
    """What judging one window found (the first phase); the later phases read it."""

    aw: AdmissionWindow  # the window, its deadline, theta_w's fingerprint and what uploads are checked against
    mg: Metagraph
    heldout_loss: float  # theta_w on the run's loss-curve samples
    uploads: list[Upload]  # every judged miner's upload (the gathered ones with their bytes: the record's mirrors)
    checked: Checked
    admissions: dict[int, Admission]  # for scoring: `checked.scored` with vanished inputs rejected
    gather: tuple[list[int], StreamedUpdates]  # the gather set and its updates (`lead_gather`)
    sample: list[int]  # the admitted uids evaluated this window
    decode: Callable[[int], dict[str, torch.Tensor]]  # a sampled or gathered upload decoded again

    @property
    def window(self) -> int:
        return self.aw.window


# -- the window: five phases ---------------------------------------------------------------------


def run_window(v: Validator, window: int) -> dict | None:
    deadline = v.clock.wait_past_deadline(window, v.stop)
    if deadline is None:
        return None
    timer = PhaseTimer()
    judged = judge(v, window, deadline, timer)
    with timer.phase("time/eval_s"):
        evals = score(v, judged)
    scores, successes, weights = weigh(v, judged, evals)
    with timer.phase("time/aggregate_s"):
        theta_w = {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in v.gm.model.named_parameters()}
        sync, outer = apply_outer_step(v, judged, successes)
    if v.gm.window == window + 1:  # the public step joins the near-copy history, kept long (issue 27)
        remember_aggregate(v.state, window, theta_w, v.gm.model, lr=v.hp.outer_lr, codec=v.gm.codec,
                           key=near_copy_key(v.state, v.rng))
    del theta_w
    remember(v, judged)
    return report(v, judged, evals, scores, weights, sync, outer, timer)


def judge(v: Validator, window: int, deadline: float, timer: PhaseTimer) -> JudgedWindow:
    """Fetch every judged miner's upload, admit each (deterministic checks, then this validator's history),
    compute the gather set and draw the eval sample."""
    v.peers.refresh()
    mg = v.chain.metagraph(v.cfg.netuid)
    ensure_peer_lists(v, [window + 1], mg)
    aw = AdmissionWindow(window=window, deadline=deadline, base_fingerprint=v.gm.fingerprint(), hparams=v.hp,
                         shapes=v.gm.shapes(), num_train=v.num_train)
    loss = heldout_loss(v)
    with timer.phase("fetch/s"):
        uploads = fetch_updates(v, window, mg)
    with timer.phase("time/checks_s"):
        seed = window_seed(v.state, window, v.rng)
        peer_uids = peers_in_force(v, window, mg)
        spool = upload_spool(v.state_dir)
        checked = admit_all(aw, uploads, spool, v.state, peer_uids=peer_uids, seed=seed,
                            near_copy_key=near_copy_key(v.state, v.rng))
        admissions = dict(checked.scored)
        for uid in vanished_inputs(v.peers, v.state, window, mg, max_upload_bytes=v.hp.max_upload_bytes):
            if uid in admissions:
                admissions[uid] = admissions[uid].reject(VANISHED)
        by_uid = {u.uid: u for u in uploads}

        def decode(uid: int) -> dict[str, torch.Tensor]:
            """A sampled or gathered upload decoded again from the spool (admitted before, so it decodes)."""
            update = aw.admit(spool.load(by_uid[uid])).update
            assert update is not None, "a sampled or gathered upload was admitted, so it decodes"
            return update

        gather = lead_gather(v.hp, uploads, checked, peer_uids, decode)
        sample = draw_eval_sample(v.state, v.hp, mg, admissions, seed)
        uploads = [spool.load(u) if u.uid in set(gather[0]) else u for u in uploads]  # the record's mirrors
        release_freed_memory()
    return JudgedWindow(aw=aw, mg=mg, heldout_loss=loss, uploads=uploads, checked=checked, admissions=admissions,
                        gather=gather, sample=sample, decode=decode)


def score(v: Validator, j: JudgedWindow) -> dict[int, EvalResult]:
    """Loss-evaluate the sampled uploads, each clipped as aggregation would apply it."""
    limits = scoring_limits(v.hp, v.gm.clip_ref, j.gather[1], j.checked.norms, v.gm.clip_history)
    return score_updates(v.gm, v.dataset, v.device, v.rng, j.aw, j.admissions, limits, j.sample, j.decode)


def weigh(v: Validator, j: JudgedWindow, evals: dict[int, EvalResult]
          ) -> tuple[dict[int, float], list[int], list[float] | None]:
    """Rate the window's match; set weights when an interval is due. Returns (scores, the uids eligible for
    the next peer list, the weights set or None)."""
    scores, successes = update_scores(v.state, v.hp, j.window, j.mg, j.admissions, evals)
    return scores, successes, maybe_set_weights(v, j.window, j.mg, scores)


def remember(v: Validator, j: JudgedWindow) -> None:
    """What the next windows need from this one (sketches, the gathered inputs, payload digests), saved; own
    objects past the run's retention and the window's spool go."""
    remember_sketches(v.state, j.window, j.mg, j.checked.sketches, keep_windows=v.hp.near_copy_windows)
    remember_gathered(v.state, j.window, j.mg, [u for u in j.uploads if u.uid in set(j.gather[0])])
    v.state.remember_seen([a.payload_sha256 for a in j.admissions.values() if a.payload_sha256])
    v.state.last_window = j.window
    save_state(v)
    v.bucket.prune(j.window, v.hp.retention_windows)
    upload_spool(v.state_dir).clear()


def report(v: Validator, j: JudgedWindow, evals: dict[int, EvalResult], scores: dict[int, float],
           weights: list[float] | None, sync: str, outer: dict[str, Any], timer: PhaseTimer) -> dict:
    """The window's metrics row, logged as a table and appended to the metrics sinks."""
    row = window_row(v, j.window, j.mg, j.heldout_loss, j.admissions, evals, scores, weights, sync)
    for uid, share in j.checked.near_copy.items():
        row["miners"][str(uid)]["near_copy"] = round(share, 4)
    row["fetch/s"] = timer.seconds["fetch/s"]
    row.update({"time/checks_s": timer.seconds["time/checks_s"], "time/eval_s": timer.seconds["time/eval_s"],
                "time/aggregate_s": timer.seconds["time/aggregate_s"], "eval/sampled": len(evals),
                "eval/admitted": sum(1 for a in j.admissions.values() if a.ok)})
    if outer:
        row.update(outer_step_metrics(outer))
    log_window(v, row)
    return row


# -- judge ---------------------------------------------------------------------------------------


def fetch_updates(v: Validator, window: int, mg: Metagraph) -> list[Upload]:
    """Every judged miner's upload of `window`, sealed ones opened with keys revealed by the reveal deadline
    (in a sealed run, fetched only once that has passed). The bytes are on disk (`upload_spool(...).load`
    reads one back): memory does not hold N miners' uploads at once."""
    hotkeys = {uid: mg.hotkeys[uid] for uid in judged_miners(v, mg)}
    reveal_by = v.clock.reveal_deadline(window)
    if v.hp.sealed_uploads:
        v.clock.wait_past(reveal_by, v.stop)
    return fetch_uploads(v.peers, hotkeys, window, v.hp.max_upload_bytes, reveal_by=reveal_by,
                         spool=upload_spool(v.state_dir))


def window_seed(state: ValidatorState, window: int, rng: random.Random) -> bytes:
    """This validator's private randomness for `window` (the eval sample, the copy sketch): drawn from `rng`
    after the deadline, never published, kept in the state so judging the window again draws the same."""
    if state.sample_seed is not None and state.sample_seed.window == window:
        return state.sample_seed.seed
    state.sample_seed = WindowSeed(window, rng.randbytes(32))
    return state.sample_seed.seed


def peers_in_force(v: Validator, window: int, mg: Metagraph) -> list[int]:
    """The lead's peer list for `window` ([] with no lead or no list: nothing is aggregated)."""
    lead = find_lead(v.peers, mg, v.hp.min_validator_stake, window)
    if lead is None:
        return []
    read = fetch_peer_list(v.peers, mg.hotkeys[lead], window)
    if not read.ok or read.value is None:
        logger.bind(window=window).warning(f"no peer list in force ({read.describe()}): nothing is aggregated")
        return []
    return read.value


def lead_gather(hp: HParams, uploads: list[Upload], checked: Checked, peer_uids: list[int],
                decode: Callable[[int], dict[str, torch.Tensor]]) -> tuple[list[int], StreamedUpdates]:
    """Exactly what every miner computes for the window (`gauntlet.aggregate.gather_set` over the lead's peer
    list and the deterministic admissions `checked.peers`): the uids, and the updates as norms and a loader
    that decodes each again (the outer step adds them one at a time). Every validator computes it: its clip
    limits are the ones scores use."""
    chosen = gather_set(checked.peers, uploads, peer_uids=peer_uids, max_peers=hp.num_peers,
                        copy_threshold=hp.copy_overlap_threshold)
    return chosen, StreamedUpdates(norms=[checked.norms[u] for u in chosen], load=lambda i: decode(chosen[i]))


def draw_eval_sample(state: ValidatorState, hp: HParams, mg: Metagraph, scored: dict[int, Admission],
                     seed: bytes) -> list[int]:
    """The admitted uids this validator loss-evaluates this window (`gauntlet.sampling.draw_sample`)."""
    candidates = {uid: mg.hotkeys[uid] for uid, adm in scored.items() if adm.ok}
    sample, state.rotation = draw_sample(candidates, state.rotation, k=hp.eval_sample_size, seed=seed)
    return sample


# -- score ---------------------------------------------------------------------------------------


def scoring_limits(hp: HParams, clip_ref: dict[str, float] | None, gathered: StreamedUpdates,
                   norms: dict[int, dict[str, float]], clip_history: ClipHistory | None = None) -> dict[str, float]:
    """The clip limits aggregation applies this window (those of the gather set; with no gather set, of
    every admitted update), from the admitted updates' norms, the last step's limits `clip_ref` and the clip
    floor of `clip_history`, so each update is scored as aggregation would apply it."""
    rows = gathered.norms if len(gathered) else [n for _, n in sorted(norms.items())]
    if not rows:
        return {}
    ref, history = clip_ref or {}, clip_history or {}
    return {name: clip_limit([n[name] for n in rows], ref.get(name), hp.clip_norm_growth, history.get(name, ()))
            for name in sorted(rows[0])}


def score_updates(gm: GlobalModel, dataset: SampleSource, device: torch.device, rng: random.Random,
                  aw: AdmissionWindow, admissions: dict[int, Admission], limits: dict[str, float], sample: list[int],
                  decode: Callable[[int], dict[str, torch.Tensor]]) -> dict[int, EvalResult]:
    """uid -> EvalResult for the sampled admitted uploads, each decoded (`decode`) one at a time and clipped
    to `limits` (as aggregation applies it), on theta_w; the model is restored after each.

    The random batch is drawn now, after the deadline, from this validator's private randomness (`rng`), out
    of the training range minus every id assigned to a judged miner this window: nobody could train on it
    in advance, and the public held-out tail (the loss curve) never enters a score. It is drawn by page
    (`eval_ids_by_page`, over at least EVAL_MIN_PAGES pages): a few page reads, whatever its size."""
    hp, window, num_train = aw.hparams, aw.window, aw.num_train
    batches = random.Random(rng.getrandbits(64))  # miners cannot predict the batches
    assigned_all = {i for uid in admissions
                    for i in sample_ids(uid, window, hp.data_seed, hp.samples_per_window, num_train)}
    # by page: the batch costs max(ceil(n / page_samples), EVAL_MIN_PAGES) page reads, not one per id
    random_ids = eval_ids_by_page(batches.getrandbits(64), hp.num_eval_samples, num_train, assigned_all,
                                  dataset.page_samples, min_pages=EVAL_MIN_PAGES)
    random_batch = dataset.batch(random_ids).to(device)
    before_random = mean_loss(gm.model, random_batch)  # theta_w on the shared batch: once per window
    results = {}
    for uid in sorted(sample):
        if not admissions[uid].ok:
            continue
        assigned = sample_ids(uid, window, hp.data_seed, hp.samples_per_window, num_train)
        picked = batches.sample(assigned, min(hp.num_eval_samples, len(assigned)))
        update = {k: t.to(device) for k, t in clip_update(decode(uid), limits).items()}
        results[uid] = evaluate_update(gm.model, update, assigned_batch=dataset.batch(picked).to(device),
                                       random_batch=random_batch, lr=hp.outer_lr, loss_before_random=before_random)
        del update
    return results


# -- weigh ---------------------------------------------------------------------------------------


def update_scores(state: ValidatorState, hp: HParams, window: int, mg: Metagraph, admissions: dict[int, Admission],
                  evals: dict[int, EvalResult]) -> tuple[dict[int, float], list[int]]:
    """Rate the window's match; returns (final score per uid, uids eligible for the next peer list).

    The match: every rejected upload (a failure) and every evaluated one. An admitted miner that was not
    drawn for evaluation sits it out (rating and compliance unchanged) and stays eligible for the peer
    list if its last evaluation was a success (gauntlet/sampling.py, the carry-over rule)."""
    players = sorted({uid for uid, adm in admissions.items() if not adm.ok} | set(evals))
    compliant = {uid: is_compliant(e.improvement_assigned, e.improvement_random, margin=hp.compliance_margin)
                 for uid, e in evals.items()}
    scores = match_scores(players, {uid: e.improvement_random for uid, e in evals.items()},
                          min_improvement=hp.min_improvement, min_ratio_to_best=hp.min_improvement_ratio,
                          compliant=compliant)
    state.ratings.update(window, scores, {u: mg.hotkeys[u] for u in admissions}, compliant=compliant,
                         contribution_step=horizon_step(hp.pay_horizon))
    in_sync = {uid: adm.in_sync for uid, adm in admissions.items()}
    final = pay_scores(hp.pay_score, ordinals=state.ratings.ordinals(), contribution=state.ratings.contribution(),
                       compliance=state.ratings.compliance(), in_sync=in_sync, threshold=hp.compliance_threshold)
    # The peer list takes updates that help (the same floors, compliance aside): one window's compliance
    # test is noisy for honest miners early in training (assigned ~ random), and it decides pay, not
    # whether an update is worth aggregating.
    useful = match_scores(players, {uid: e.improvement_random for uid, e in evals.items()},
                          min_improvement=hp.min_improvement, min_ratio_to_best=hp.min_improvement_ratio)
    state.rotation = state.rotation.after(window, {uid: (mg.hotkeys[uid], useful[uid] is not None) for uid in evals})
    carried = state.rotation.carried_successes({uid: mg.hotkeys[uid] for uid, adm in admissions.items()
                                               if adm.ok and uid not in evals})
    return final, sorted({uid for uid, score in useful.items() if score is not None} | set(carried))


def maybe_set_weights(v: Validator, window: int, mg: Metagraph, scores: dict[int, float]) -> list[float] | None:
    interval = window // v.hp.weights_interval
    if not weights_due(window, v.hp.weights_interval, v.state.last_weights_interval):
        return None
    owner_uid = mg.uid_of(mg.owner_hotkey)
    weights = compute_weights(scores, n=mg.n, owner_uid=owner_uid if owner_uid is not None else 0,
                              burn_rate=v.hp.burn_rate, top_n=v.hp.top_n_miners,
                              curve=v.hp.weight_curve, temperature=v.hp.weight_temperature)
    uids = [u for u, w in enumerate(weights) if w > 0]
    # the code's own version: the owner's weights_version then refuses weights from older releases
    res = v.chain.set_weights(v.hotkey, v.cfg.netuid, uids, [weights[u] for u in uids], version_key=VERSION_KEY)
    if res.ok:
        v.state.last_weights_interval = interval
        save_state(v)  # at once: a restart must not set weights twice for one interval
        logger.info(f"set weights on chain for interval {interval} at block {res.block}")
    else:
        logger.warning(f"set_weights refused: {res.error}")
    return weights


# -- report and the loop -------------------------------------------------------------------------


def window_row(v, window, mg: Metagraph, loss, admissions, evals, scores, weights, sync) -> dict:
    ordinals = v.state.ratings.ordinals()
    why = explain_window(v.hp, v.state.ratings, admissions, evals, scores)
    miners = {}
    for uid, adm in sorted(admissions.items()):
        ev = evals.get(uid)
        miners[str(uid)] = {
            "hotkey": mg.hotkeys[uid], "reason": adm.reason, "score": scores.get(uid, 0.0),
            "rating": ordinals.get(uid), "improvement_random": ev.improvement_random if ev else None,
            "improvement_assigned": ev.improvement_assigned if ev else None, "evaluated": ev is not None,
            "weight": weights[uid] if weights is not None else None, **why[uid],
        }
    return {"role": "validator", "uid": v.uid, "hotkey": v.hotkey.ss58_address, "window": window,
            "eval/heldout_loss": loss, "pay_score": v.hp.pay_score, "sync/status": sync,
            "weights_set": weights is not None,
            # the chain as read at the window's start: head block, block of this validator's last weights
            "chain/block": mg.block,
            "chain/weights_block": mg.last_update[v.uid] if v.uid < len(mg.last_update) else None,
            "weights/interval": window // v.hp.weights_interval, "ratings/restored": v.state.restored_ratings,
            "miners": miners}


def log_window(v: Validator, row: dict) -> None:
    lines = [f"{'uid':>4} {'hotkey':<12} {'score':>8} {'rating':>8} {'weight':>7} {'rank':>4} {'gain':>8} "
             f"{'cmpl':>4}  why"]
    for uid, m in row["miners"].items():
        w = "" if m["weight"] is None else f"{m['weight']:.3f}"
        r = "" if m["rating"] is None else f"{m['rating']:.2f}"
        gain = "" if m["improvement_random"] is None else f"{m['improvement_random']:.4f}"
        ok = {True: "yes", False: "no", None: "-"}[m.get("compliant")]
        lines.append(f"{uid:>4} {m['hotkey'][:12]:<12} {m['score']:>8.4f} {r:>8} {w:>7} {m.get('rank') or '-':>4} "
                     f"{gain:>8} {ok:>4}  {m.get('why') or ''}")
    logger.bind(window=row["window"]).info(
        f"window {row['window']} | heldout loss {row['eval/heldout_loss']:.4f} | {row['sync/status']} | "
        f"weights {'set' if row['weights_set'] else '-'}\n" + "\n".join(lines))
    append_metrics(v.cfg.metrics_file, row)


def run(cfg: NeuronConfig) -> None:
    v = build_validator(cfg)
    signal.signal(signal.SIGTERM, v.stop.set)
    signal.signal(signal.SIGINT, v.stop.set)
    last = v.state.last_window
    # resume where we stopped if those uploads can still be judged, else at the window now open
    window = max(v.clock.current_window(), 0) if last is None else max(last + 1, v.clock.current_window() - 1)
    restore_model(v, window)
    v.peers.refresh()
    open_window = max(v.clock.current_window(), 0)
    ensure_peer_lists(v, [open_window, open_window + 1], v.chain.metagraph(cfg.netuid))
    done = 0
    while not v.stop.is_set():
        try:
            require_version(v.chain, cfg.netuid)  # the owner raised weights_version: stop with what to install
            if v.gm.window != window:
                restore_model(v, window)
            run_window(v, window)
        except TRANSIENT_ERRORS as e:  # storage or chain away past their retries: judge what we can later
            logger.bind(window=window).error(f"window {window} not processed: {e}")
            time.sleep(2.0)
            if v.clock.current_window() <= window + 1:
                continue  # still time to judge this window's uploads: try it again
        window += 1
        done += 1
        if cfg.max_windows and done >= cfg.max_windows:
            break
    save_state(v)
    logger.info("validator stopped cleanly")
