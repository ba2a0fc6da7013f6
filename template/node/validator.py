"""The validator loop (DESIGN sections 4, 7, 8): fetch, admit, evaluate, rate, weigh, aggregate.

Works on window w after its deadline, while miners train w+1. Every decision is a pure
function in gauntlet/; this module only moves bytes between the chain, the buckets, the
model and those functions, and persists what must survive a restart.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from loguru import logger

from gauntlet.aggregate import bootstrap_peers, gather_set, reject_copies, select_peers
from gauntlet.checks import VANISHED, Admission, Upload
from gauntlet.evaluate import evaluate_update, is_compliant, match_scores, mean_loss
from gauntlet.nearcopy import SketchHistory
from gauntlet.pay import explain_window, horizon_step, pay_scores
from gauntlet.ratings import Ratings
from gauntlet.sampling import Rotation, draw_sample
from gauntlet.weights import compute_weights, weights_due
from storage.peers import fetch_peer_list, fetch_uploads
from template.chain.base import Metagraph
from template.node import state as local_state
from template.node.admission import (
    Checked,
    admit_all,
    admit_one,
    payload_sha,
    release_freed_memory,
    remember_gathered,
    remember_sketches,
    upload_spool,
    vanished_inputs,
)
from template.node.neuron import (
    TRANSIENT_ERRORS,
    NeuronParts,
    StopFlag,
    append_metrics,
    build_node,
    declared_validators,
    find_lead,
    miner_uids,
)
from template.node.state import load_ratings, load_sketch_history, save_ratings, save_sketch_history
from template.node.sync import (
    GlobalModel,
    RecordAdmission,
    SyncStatus,
    catch_up,
    log_outer_step,
    outer_step_metrics,
    publish_checkpoint,
    restore_from_lead,
)
from template.protocol.config import HParams, NeuronConfig
from template.protocol.data import eval_ids, loss_curve_ids, sample_ids
from template.protocol.outer_step import StreamedUpdates, clip_limit, clip_update
from template.protocol.records import AggregationRecord, RecordEntry

SEEN_PAYLOADS_KEPT = 4096


@dataclass
class Validator(NeuronParts):
    """Long-lived parts of a running validator. Per-window values travel as arguments."""

    num_train: int
    num_samples: int
    gm: GlobalModel
    ratings: Ratings
    run_state: dict = field(default_factory=dict)  # last_window, last_weights_interval, seen
    restored_ratings: int = 0  # uids whose ratings were loaded from disk at start-up
    sketches: SketchHistory = field(default_factory=SketchHistory.empty)  # earlier windows' updates (near-copies)
    stop: StopFlag = field(default_factory=StopFlag)

    @property
    def hp(self) -> HParams:
        return self.gm.hparams


def build_validator(cfg: NeuronConfig) -> Validator:
    node = build_node(cfg)
    hp = node.hparams
    v = Validator(cfg=cfg, hotkey=node.hotkey, uid=node.uid, chain=node.chain, clock=node.clock, peers=node.peers,
                  bucket=node.bucket, dataset=node.dataset, num_train=node.manifest.heldout_start,
                  num_samples=node.manifest.num_samples, gm=GlobalModel.initial(hp, node.device),
                  device=node.device, state_dir=node.state_dir,
                  ratings=load_ratings(node.state_dir / "ratings.json", alpha=hp.compliance_alpha))
    v.run_state = local_state.read_json(node.state_dir / "run_state.json", default={}) or {}
    v.sketches = load_sketch_history(node.state_dir / "near_copy.safetensors")
    v.restored_ratings = len(v.ratings.state_dict()["ratings"])
    logger.info(f"validator uid {v.uid} on netuid {cfg.netuid}; ratings for {v.restored_ratings} uids restored")
    return v


def save_run_state(v: Validator) -> None:
    save_ratings(v.ratings, v.state_dir / "ratings.json")
    save_sketch_history(v.sketches, v.state_dir / "near_copy.safetensors")
    local_state.atomic_write_json(v.state_dir / "run_state.json", v.run_state)


# -- steps ---------------------------------------------------------------------------------------


def judged_miners(v: Validator, mg: Metagraph) -> list[int]:
    """The miner uids this validator fetches, judges and may put on a peer list (never itself)."""
    return [uid for uid in miner_uids(mg, v.hp.min_validator_stake, declared_validators(v.peers)) if uid != v.uid]


def fetch_updates(v: Validator, window: int, mg: Metagraph) -> list[Upload]:
    """Every judged miner's upload of `window`, sealed ones opened with keys revealed by deadline +
    reveal_grace_s (in a sealed run, fetched only once that time has passed). The bytes are on disk
    (`upload_spool(v).load` reads one back): memory does not hold N miners' uploads at once."""
    hotkeys = {uid: mg.hotkeys[uid] for uid in judged_miners(v, mg)}
    reveal_by = v.clock.deadline(window) + v.hp.reveal_grace_s
    while v.hp.sealed_uploads and not v.stop.is_set() and time.time() < reveal_by + 1.0:  # +1 s: LastModified
        time.sleep(0.1)
    return fetch_uploads(v.peers, hotkeys, window, v.hp.max_upload_bytes, reveal_by=reveal_by, spool=upload_spool(v))


def window_seed(v: Validator, window: int) -> bytes:
    """This validator's private randomness for `window` (the eval sample, the copy sketch): drawn after the
    deadline, never published, kept in the run state so judging the window again draws the same."""
    saved = v.run_state.get("sample_seed") or {}
    if saved.get("window") == window:
        return bytes.fromhex(saved["seed"])
    seed = os.urandom(32)
    v.run_state["sample_seed"] = {"window": window, "seed": seed.hex()}
    return seed


def draw_eval_sample(v: Validator, mg: Metagraph, scored: dict[int, Admission], seed: bytes) -> list[int]:
    """The admitted uids this validator loss-evaluates this window (`gauntlet.sampling.draw_sample`)."""
    candidates = {uid: mg.hotkeys[uid] for uid, adm in scored.items() if adm.ok}
    sample, rotation = draw_sample(candidates, Rotation.from_state(v.run_state.get("rotation")),
                                   k=v.hp.eval_sample_size, seed=seed)
    v.run_state["rotation"] = rotation.state_dict()
    return sample


def scoring_limits(v: Validator, gathered: StreamedUpdates, norms: dict[int, dict[str, float]]) -> dict[str, float]:
    """The clip limits aggregation applies this window (those of the gather set; with no gather set, of
    every admitted update), from the admitted updates' norms, so each update is scored as aggregation
    would apply it."""
    rows = gathered.norms if len(gathered) else [n for _, n in sorted(norms.items())]
    if not rows:
        return {}
    ref = v.gm.clip_ref or {}
    return {name: clip_limit([n[name] for n in rows], ref.get(name), v.hp.clip_norm_growth)
            for name in sorted(rows[0])}


def score_updates(v: Validator, window: int, admissions: dict, limits: dict[str, float], sample: list[int],
                  decode: Callable[[int], dict[str, torch.Tensor]]) -> dict:
    """uid -> EvalResult for the sampled admitted uploads, each decoded (`decode`) one at a time and clipped
    to `limits` (as aggregation applies it), on theta_w; the model is restored after each.

    The random batch is drawn now, after the deadline, from this validator's private randomness, out of
    the training range minus every id assigned to a judged miner this window: nobody could train on it
    in advance, and the public held-out tail (the loss curve) never enters a score."""
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))  # miners cannot predict the batches
    assigned_all = {i for uid in admissions
                    for i in sample_ids(uid, window, v.hp.data_seed, v.hp.samples_per_window, v.num_train)}
    random_ids = eval_ids(rng.getrandbits(64), v.hp.num_eval_samples, v.num_train, assigned_all)
    random_batch = v.dataset.batch(random_ids).to(v.device)
    before_random = mean_loss(v.gm.model, random_batch)  # theta_w on the shared batch: once per window
    results = {}
    for uid in sorted(sample):
        if not admissions[uid].ok:
            continue
        assigned = sample_ids(uid, window, v.hp.data_seed, v.hp.samples_per_window, v.num_train)
        picked = rng.sample(assigned, min(v.hp.num_eval_samples, len(assigned)))
        update = {k: t.to(v.device) for k, t in clip_update(decode(uid), limits).items()}
        results[uid] = evaluate_update(v.gm.model, update, assigned_batch=v.dataset.batch(picked).to(v.device),
                                       random_batch=random_batch, lr=v.hp.outer_lr,
                                       loss_before_random=before_random)
        del update
    return results


def update_scores(v: Validator, window: int, mg: Metagraph, admissions: dict, evals: dict) -> tuple[dict[int, float], list[int]]:
    """Rate the window's match; returns (final score per uid, uids eligible for the next peer list).

    The match: every rejected upload (a failure) and every evaluated one. An admitted miner that was not
    drawn for evaluation sits it out (rating and compliance unchanged) and stays eligible for the peer
    list if its last evaluation was a success (gauntlet/sampling.py, the carry-over rule)."""
    players = sorted({uid for uid, adm in admissions.items() if not adm.ok} | set(evals))
    compliant = {uid: is_compliant(e.improvement_assigned, e.improvement_random, margin=v.hp.compliance_margin)
                 for uid, e in evals.items()}
    scores = match_scores(players, {uid: e.improvement_random for uid, e in evals.items()},
                          min_improvement=v.hp.min_improvement, min_ratio_to_best=v.hp.min_improvement_ratio,
                          compliant=compliant)
    v.ratings.update(window, scores, {u: mg.hotkeys[u] for u in admissions}, compliant=compliant,
                     contribution_step=horizon_step(v.hp.pay_horizon))
    in_sync = {uid: adm.in_sync for uid, adm in admissions.items()}
    final = pay_scores(v.hp.pay_score, ordinals=v.ratings.ordinals(), contribution=v.ratings.contribution(),
                       compliance=v.ratings.compliance(), in_sync=in_sync, threshold=v.hp.compliance_threshold)
    # The peer list takes updates that help (the same floors, compliance aside): one window's compliance
    # test is noisy for honest miners early in training (assigned ~ random), and it decides pay, not
    # whether an update is worth aggregating.
    useful = match_scores(players, {uid: e.improvement_random for uid, e in evals.items()},
                          min_improvement=v.hp.min_improvement, min_ratio_to_best=v.hp.min_improvement_ratio)
    rotation = Rotation.from_state(v.run_state.get("rotation")).after(
        window, {uid: (mg.hotkeys[uid], useful[uid] is not None) for uid in evals})
    v.run_state["rotation"] = rotation.state_dict()
    carried = rotation.carried_successes({uid: mg.hotkeys[uid] for uid, adm in admissions.items()
                                         if adm.ok and uid not in evals})
    return final, sorted({uid for uid, score in useful.items() if score is not None} | set(carried))


def maybe_set_weights(v: Validator, window: int, mg: Metagraph, scores: dict[int, float]) -> list[float] | None:
    interval = window // v.hp.weights_interval
    if not weights_due(window, v.hp.weights_interval, v.run_state.get("last_weights_interval")):
        return None
    owner_uid = mg.uid_of(mg.owner_hotkey)
    weights = compute_weights(scores, n=mg.n, owner_uid=owner_uid if owner_uid is not None else 0,
                              burn_rate=v.hp.burn_rate, top_n=v.hp.top_n_miners,
                              curve=v.hp.weight_curve, temperature=v.hp.weight_temperature)
    uids = [u for u, w in enumerate(weights) if w > 0]
    version = int(v.chain.hyperparameters(v.cfg.netuid).get("weights_version", 0))
    res = v.chain.set_weights(v.hotkey, v.cfg.netuid, uids, [weights[u] for u in uids], version_key=version)
    if res.ok:
        v.run_state["last_weights_interval"] = interval
        save_run_state(v)  # at once: a restart must not set weights twice for one interval
        logger.info(f"set weights on chain for interval {interval} at block {res.block}")
    else:
        logger.warning(f"set_weights refused: {res.error}")
    return weights


def apply_outer_step(v: Validator, window: int, mg: Metagraph, uploads: list[Upload], base_fp: str,
                     gather: tuple[list[int], StreamedUpdates], successes: list[int]) -> tuple[str, dict[str, Any]]:
    """Lead: the gather set, the step, the signed record and peer list (and checkpoint). Others follow."""
    lead = find_lead(v.peers, mg, v.hp.min_validator_stake, window)
    if lead != v.uid:
        if lead is None:
            v.gm.window = window + 1
            return SyncStatus.NO_LEAD, {}
        return catch_up(v.gm, window + 1, v.peers, mg.hotkeys[lead], v.device,
                        wait_last_s=v.clock.window_s() * 0.6, should_stop=v.stop.is_set,
                        check=RecordAdmission(v.num_train, v.clock.deadline)), {}
    chosen, updates = gather
    stats = v.gm.guarded_step(updates, v.hp.outer_lr, heldout_batch(v))
    log_outer_step(window, stats)
    if stats["refused"]:
        logger.bind(window=window).warning(
            f"outer step refused: held-out loss {stats['loss_before']:.4f} -> {stats['loss_after']:.4f} "
            f"(over +{v.hp.max_loss_rise:.1%}); theta_{{w+1}} = theta_w, the record says so")
    v.gm.window = window + 1
    by_uid = {u.uid: u for u in uploads}
    record = AggregationRecord(
        window=window, base_fingerprint=base_fp, next_fingerprint=v.gm.fingerprint(), outer_lr=v.hp.outer_lr,
        included=tuple(RecordEntry(uid=u, hotkey=mg.hotkeys[u], key=mirror_input(v, window, by_uid[u]),
                                   sha256=payload_sha(by_uid[u].data)) for u in chosen),
        refused=stats["refused"])
    v.bucket.put_record(window, record, v.hotkey)
    v.gm.lineage = v.gm.lineage.after_record(record)  # the next checkpoint lists it
    miners = set(judged_miners(v, mg))
    v.bucket.put_peer_list(window + 2, select_peers(v.ratings.ordinals(), num_peers=v.hp.num_peers,
                                                    eligible=[u for u in successes if u in miners]), v.hotkey)
    if v.gm.window % v.hp.checkpoint_interval == 0:
        nbytes = publish_checkpoint(v.gm, v.bucket, v.hotkey)
        logger.info(f"published checkpoint of window {v.gm.window} ({nbytes} bytes)")
    return f"lead:{len(chosen)}", stats


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


def lead_gather(v: Validator, uploads: list[Upload], checked: Checked, peer_uids: list[int],
                decode: Callable[[int], dict[str, torch.Tensor]]) -> tuple[list[int], StreamedUpdates]:
    """Exactly what every miner computes for the window: the lead's peer list x deterministic admission
    (`checked.peers`), copies judged among the peers (uids, and the updates as norms and a loader that
    decodes each again: the outer step adds them one at a time). Every validator computes it: its clip
    limits are the ones scores use."""
    if not peer_uids:
        return [], StreamedUpdates(norms=[], load=lambda i: {})
    admissions = reject_copies({u: a for u, a in checked.peers.items() if u in set(peer_uids)}, uploads,
                               threshold=v.hp.copy_overlap_threshold)
    chosen = gather_set(admissions, peer_uids=peer_uids, max_peers=v.hp.num_peers)
    return chosen, StreamedUpdates(norms=[checked.norms[u] for u in chosen], load=lambda i: decode(chosen[i]))


def ensure_peer_lists(v: Validator, windows: list[int], mg: Metagraph) -> None:
    """Lead: open windows (deadline ahead) without a peer list get a bootstrap one from the miners.

    Only windows still open: a list must be in place before miners gather, or nodes disagree.
    """
    if not windows or find_lead(v.peers, mg, v.hp.min_validator_stake, windows[0]) != v.uid:
        return
    for w in windows:
        if not fetch_peer_list(v.peers, v.hotkey.ss58_address, w).ok:
            peer_uids = bootstrap_peers({u: mg.hotkeys[u] for u in judged_miners(v, mg)}, num_peers=v.hp.num_peers,
                                        seed=v.gm.fingerprint())
            v.bucket.put_peer_list(w, peer_uids, v.hotkey)
            logger.info(f"published bootstrap peer list for window {w}: {peer_uids}")


def heldout_batch(v: Validator) -> torch.Tensor:
    """The run's fixed loss-curve samples (public held-out tail; never used for scoring)."""
    return v.dataset.batch(loss_curve_ids(v.num_train, v.num_samples))


def heldout_loss(v: Validator) -> float:
    return mean_loss(v.gm.model, heldout_batch(v).to(v.device))


def run_window(v: Validator, window: int) -> dict | None:
    deadline = v.clock.wait_past_deadline(window, v.stop)
    if deadline is None:
        return None
    v.peers.refresh()
    mg = v.chain.metagraph(v.cfg.netuid)
    ensure_peer_lists(v, [window + 1], mg)
    base_fp = v.gm.fingerprint()
    loss = heldout_loss(v)
    fetch_start = time.perf_counter()
    uploads = fetch_updates(v, window, mg)
    fetch_s = time.perf_counter() - fetch_start
    seed = window_seed(v, window)
    peer_uids = peers_in_force(v, window, mg)
    spool = upload_spool(v)
    checked = admit_all(v, window, uploads, deadline, base_fp, peer_uids=peer_uids, seed=seed)
    admissions = dict(checked.scored)
    for uid in vanished_inputs(v, window, mg):
        if uid in admissions:
            admissions[uid] = admissions[uid].reject(VANISHED)
    by_uid = {u.uid: u for u in uploads}

    def decode(uid: int) -> dict[str, torch.Tensor]:
        """A sampled or gathered upload decoded again from the spool (admitted before, so it decodes)."""
        adm = admit_one(v, window, spool.load(by_uid[uid]), deadline, base_fp)
        assert adm.update is not None, "a sampled or gathered upload was admitted, so it decodes"
        return adm.update

    gather = lead_gather(v, uploads, checked, peer_uids, decode)
    sample = draw_eval_sample(v, mg, admissions, seed)
    uploads = [spool.load(u) if u.uid in set(gather[0]) else u for u in uploads]  # the record's mirrors
    release_freed_memory()
    checks_s = time.perf_counter() - fetch_start - fetch_s

    eval_start = time.perf_counter()
    evals = score_updates(v, window, admissions, scoring_limits(v, gather[1], checked.norms), sample, decode)
    eval_s = time.perf_counter() - eval_start
    scores, successes = update_scores(v, window, mg, admissions, evals)
    weights = maybe_set_weights(v, window, mg, scores)
    agg_start = time.perf_counter()
    sync, outer = apply_outer_step(v, window, mg, uploads, base_fp, gather, successes)
    agg_s = time.perf_counter() - agg_start
    remember_sketches(v, window, mg, checked.sketches)
    remember_gathered(v, window, mg, [u for u in uploads if u.uid in set(gather[0])])
    seen = v.run_state.setdefault("seen", [])
    seen.extend(a.payload_sha256 for a in admissions.values() if a.payload_sha256)
    v.run_state["seen"] = seen[-SEEN_PAYLOADS_KEPT:]
    v.run_state["last_window"] = window
    save_run_state(v)
    v.bucket.prune(window, v.hp.retention_windows)  # own objects past the run's retention
    spool.clear()
    row = window_row(v, window, mg, loss, admissions, evals, scores, weights, sync)
    for uid, share in checked.near_copy.items():
        row["miners"][str(uid)]["near_copy"] = round(share, 4)
    row["fetch/s"] = round(fetch_s, 3)
    row.update({"time/checks_s": round(checks_s, 3), "time/eval_s": round(eval_s, 3),
                "time/aggregate_s": round(agg_s, 3), "eval/sampled": len(evals),
                "eval/admitted": sum(1 for a in admissions.values() if a.ok)})
    if outer:
        row.update(outer_step_metrics(outer))
    log_window(v, row)
    return row


def window_row(v, window, mg: Metagraph, loss, admissions, evals, scores, weights, sync) -> dict:
    ordinals = v.ratings.ordinals()
    why = explain_window(v.hp, v.ratings, admissions, evals, scores)
    miners = {}
    for uid, adm in sorted(admissions.items()):
        ev = evals.get(uid)
        miners[str(uid)] = {
            "hotkey": mg.hotkeys[uid], "reason": adm.reason, "score": scores.get(uid, 0.0),
            "rating": ordinals.get(uid), "improvement_random": ev.improvement_random if ev else None,
            "improvement_assigned": ev.improvement_assigned if ev else None, "evaluated": ev is not None,
            "weight": weights[uid] if weights is not None else None, **why[uid],
        }
    return {"role": "validator", "uid": v.uid, "window": window, "eval/heldout_loss": loss,
            "pay_score": v.hp.pay_score, "sync/status": sync, "weights_set": weights is not None,
            "weights/interval": window // v.hp.weights_interval, "ratings/restored": v.restored_ratings,
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


def restore_model(v: Validator, window: int) -> None:
    """Bring theta to `window`: the lead from its own checkpoints and records, others from the lead's."""
    v.peers.refresh()
    mg = v.chain.metagraph(v.cfg.netuid)
    lead = find_lead(v.peers, mg, v.hp.min_validator_stake, window)
    if lead is None:
        v.gm.window = window
        return
    status = restore_from_lead(v.gm, window, v.peers, mg.hotkeys[lead], v.device, should_stop=v.stop.is_set,
                               check=RecordAdmission(v.num_train, v.clock.deadline))
    logger.info(f"model at window {v.gm.window} ({status})")


def run(cfg: NeuronConfig) -> None:
    v = build_validator(cfg)
    signal.signal(signal.SIGTERM, v.stop.set)
    signal.signal(signal.SIGINT, v.stop.set)
    last = v.run_state.get("last_window")
    # resume where we stopped if those uploads can still be judged, else at the window now open
    window = max(v.clock.current_window(), 0) if last is None else max(last + 1, v.clock.current_window() - 1)
    restore_model(v, window)
    v.peers.refresh()
    open_window = max(v.clock.current_window(), 0)
    ensure_peer_lists(v, [open_window, open_window + 1], v.chain.metagraph(cfg.netuid))
    done = 0
    while not v.stop.is_set():
        try:
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
    save_run_state(v)
    logger.info("validator stopped cleanly")


def mirror_input(v: Validator, window: int, upload: Upload) -> str:
    """Lead: copy an update it aggregates into its own bucket, content-addressed (`layout.input_key`), and
    return that key for the record, so the record's inputs stay fetchable whatever the miner does later."""
    assert upload.data is not None, "an upload in the gather set was admitted, so it has its bytes"
    return v.bucket.put_input(window, upload.data)
