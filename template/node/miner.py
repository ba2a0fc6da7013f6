"""The miner loop (DESIGN section 4): train H inner steps, compress, upload, follow the records.

`run(cfg)` restores, then for each window calls `run_window`, a flat list of named steps.
Hostile behaviours for incentive tests plug in through `UploadStrategy` (template/sim/hostile_miner.py);
the honest path below never branches on them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from loguru import logger
from tqdm import tqdm

from gauntlet.aggregate import admit_for_gather, gather_set
from gauntlet.checks import Admission
from gauntlet.verify import refused_problem
from storage.dataset import PagedDataset
from storage.peers import fetch_peer_list, fetch_record, fetch_uploads
from template.node import state as local_state
from template.node import trust
from template.node.distributed import (
    DistContext,
    TrainingGroup,
    ignore_stop_signals,
    init_distributed,
    shutdown,
    trainer_loop,
)
from template.node.guard import GuardBatch, guard_reader
from template.node.neuron import (
    TRANSIENT_ERRORS,
    NeuronParts,
    StopFlag,
    append_metrics,
    build_node,
    declared_validators,
    find_lead,
    lead_now,
    validator_stake,
)
from template.node.preflight import require_version
from template.node.sync import (
    GlobalModel,
    RecordAdmission,
    SyncStatus,
    log_outer_step,
    record_problem,
    restore_from_lead,
)
from template.protocol.artifacts import write_tensor_artifact
from template.protocol.config import HParams, NeuronConfig
from template.protocol.data import data_receipt, sample_ids
from template.protocol.metagraph import Metagraph
from template.protocol.model import autocast_context
from template.protocol.outer_step import StreamedUpdates, l2_norm
from template.protocol.reads import ReadStatus
from template.protocol.sealing import reveal_bytes, seal
from template.protocol.sparseloco import compress
from template.protocol.uploads import Upload

UNVERIFIED_WINDOWS_KEPT = 3  # a record that has not appeared after this many windows never will


@dataclass(frozen=True)
class WindowPlan:
    window: int
    uid: int
    sample_ids: list[int]
    deadline_block: int


@dataclass(frozen=True)
class TrainResult:
    delta: dict[str, torch.Tensor]
    mean_loss: float
    tokens: int
    seconds: float


@dataclass(frozen=True)
class UploadResult:
    key: str | None
    nbytes: int
    seconds: float
    on_time: bool


@dataclass
class Miner(NeuronParts):
    """Long-lived parts of a running miner. Per-window values travel as arguments."""

    num_train: int
    gm: GlobalModel
    optimizer: torch.optim.Optimizer
    ef: dict[str, torch.Tensor] = field(default_factory=dict)
    stop: StopFlag = field(default_factory=StopFlag)
    # window -> fingerprint of theta_{window+1} as we computed it, until the lead's record confirms it
    unverified: dict[int, str] = field(default_factory=dict)
    trainer: TrainingGroup | None = None  # torchrun rank 0 only: training is sharded over all ranks
    # window -> the key of our sealed upload, revealed after that window's deadline (hp.sealed_uploads)
    sealed_keys: dict[int, bytes] = field(default_factory=dict)

    @property
    def hp(self) -> HParams:
        return self.gm.hparams


# -- start-up ------------------------------------------------------------------------------------


def build_miner(cfg: NeuronConfig, device: torch.device | None = None) -> Miner:
    """Everything a miner needs; `device` overrides --device (torchrun rank 0 keeps theta_w on the CPU)."""
    node = build_node(cfg, device)
    hp = node.hparams
    gm = GlobalModel.initial(hp, node.device)
    opt = torch.optim.AdamW(gm.model.parameters(), lr=hp.inner_lr, weight_decay=hp.inner_weight_decay)
    miner = Miner(cfg=cfg, hotkey=node.hotkey, uid=node.uid, chain=node.chain, clock=node.clock, peers=node.peers,
                  bucket=node.bucket, dataset=node.dataset, num_train=node.manifest.heldout_start, gm=gm,
                  device=node.device, state_dir=node.state_dir, optimizer=opt)
    restore_local_state(miner)
    logger.info(f"miner uid {miner.uid} on netuid {cfg.netuid}, device {miner.device}, "
                f"hparams {hp.fingerprint()[:12]}")
    return miner


def restore_local_state(m: Miner) -> None:
    """Error feedback and inner optimizer state survive restarts (saved after every upload)."""
    ef = local_state.load_tensors(m.state_dir / "ef.safetensors")
    if ef is not None and set(ef) == set(m.gm.shapes()):
        m.ef = {k: v.to(m.device) for k, v in ef.items()}
        logger.info("restored error-feedback buffer")
    if local_state.load_optimizer(m.state_dir / "optimizer.safetensors", m.optimizer):
        logger.info("restored inner optimizer state")


def save_local_state(m: Miner) -> None:
    local_state.save_tensors(m.state_dir / "ef.safetensors", m.ef)
    local_state.save_optimizer(m.state_dir / "optimizer.safetensors", m.optimizer)


# -- the window ---------------------------------------------------------------------------------


def plan_window(m: Miner, window: int) -> WindowPlan:
    ids = sample_ids(m.uid, window, m.hp.data_seed, m.hp.samples_per_window, m.num_train)
    m.dataset.prefetch(ids)  # usually read already, during the previous window
    m.dataset.prefetch(sample_ids(m.uid, window + 1, m.hp.data_seed, m.hp.samples_per_window, m.num_train))
    return WindowPlan(window=window, uid=m.uid, sample_ids=ids, deadline_block=m.clock.last_block(window))


def train_inner_steps(m: Miner, plan: WindowPlan, ids: list[int] | None = None, *,
                      num_steps: int | None = None) -> TrainResult:
    """H AdamW steps (or the first `num_steps` of them) from theta_w on the assigned samples; returns
    delta = theta_w - theta_local."""
    ids = plan.sample_ids if ids is None else ids
    if m.trainer is not None:
        if num_steps is not None:
            raise ValueError("sharded training runs the full H steps")
        return train_sharded(m, plan, ids)
    model, hp = m.gm.model, m.hp
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    losses, start = [], time.perf_counter()
    count = hp.inner_steps if num_steps is None else min(num_steps, hp.inner_steps)
    steps = tqdm(range(count), desc=f"window {plan.window}", leave=False, disable=None)
    for step in steps:
        batch = m.dataset.batch(ids[step * hp.batch_size : (step + 1) * hp.batch_size]).to(m.device)
        with autocast_context(m.device):
            _, loss = model(batch[:, :-1], batch[:, 1:])
        m.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
        m.optimizer.step()
        losses.append(loss.item())
        steps.set_postfix(loss=f"{losses[-1]:.3f}")
    with torch.no_grad():
        delta = {n: (base[n] - p.detach()).float() for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.copy_(base[n])  # back to theta_w: the model only moves through records
    seconds = time.perf_counter() - start
    mean = sum(losses) / len(losses) if losses else math.nan
    return TrainResult(delta=delta, mean_loss=mean, tokens=min(len(ids), count * hp.batch_size) * hp.seq_len,
                       seconds=seconds)


def train_sharded(m: Miner, plan: WindowPlan, ids: list[int]) -> TrainResult:
    """The same H steps, sharded over the torchrun ranks (template.node.distributed); rank 0 reads the
    samples for everyone, since only it has the dataset. theta_w in m.gm is not touched."""
    assert m.trainer is not None, "train_sharded runs on torchrun rank 0, which holds the training group"
    start = time.perf_counter()
    tokens = m.dataset.batch(ids)  # (H * batch_size, seq_len + 1)
    delta, mean = m.trainer.train(plan.window, m.gm.model.state_dict(), tokens)
    return TrainResult(delta=delta, mean_loss=mean, tokens=len(ids) * m.hp.seq_len,
                       seconds=time.perf_counter() - start)


def encode_update(m: Miner, delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    wire, m.ef = compress(delta, m.ef or None, m.gm.codec, m.hp.ef_beta)
    return wire


def build_artifact(m: Miner, plan: WindowPlan, wire: dict[str, torch.Tensor], base_fingerprint: str,
                   receipt_ids: list[int] | None = None) -> bytes:
    return write_tensor_artifact(
        wire, kind="gradient", window=plan.window, keypair=m.hotkey,
        fields={
            "uid": m.uid,
            "base_fingerprint": base_fingerprint,
            "data_receipt": data_receipt(plan.sample_ids if receipt_ids is None else receipt_ids),
            "num_inner_steps": m.hp.inner_steps,
            "codec": m.gm.codec.manifest_field(),
        },
    )


def upload_update(m: Miner, plan: WindowPlan, data: bytes, *, allow_late: bool = False) -> UploadResult:
    """Upload before the deadline; an upload that cannot count is not sent (saves bandwidth).

    The deadline is the protocol's one definition (`WindowClock.deadline`): the chain timestamp of the
    window's last block plus `upload_grace_s`, the same time validators check LastModified against."""
    if not allow_late and not m.clock.accepting_uploads(plan.window):
        logger.bind(window=plan.window).warning("training finished after the upload deadline; not uploading")
        return UploadResult(key=None, nbytes=0, seconds=0.0, on_time=False)
    start = time.perf_counter()
    if m.hp.sealed_uploads:  # nobody can read it before the deadline; the key goes out after it
        data, m.sealed_keys[plan.window] = seal(data, window=plan.window, keypair=m.hotkey)
    key = m.bucket.put_update(plan.window, data)
    return UploadResult(key=key, nbytes=len(data), seconds=time.perf_counter() - start, on_time=True)


def reveal_key(m: Miner, window: int) -> None:
    """After `window`'s deadline: publish the key of our sealed upload of it (nothing when we sealed none)."""
    key = m.sealed_keys.pop(window, None)
    for old in [w for w in m.sealed_keys if w < window]:
        m.sealed_keys.pop(old)  # windows whose reveal we missed (a restart, a stop): too late now
    if key is not None:
        m.bucket.put_reveal(window, reveal_bytes(window, key))


def wait_for_reveals(m: Miner, window: int) -> float:
    """Wait until every key of a sealed window may be out (`WindowClock.wait_past` the reveal deadline;
    nothing to wait for in an unsealed run); returns the reveal deadline keys are checked against."""
    reveal_by = m.clock.reveal_deadline(window)
    if m.hp.sealed_uploads:
        m.clock.wait_past(reveal_by, m.stop)
    return reveal_by


def follow_network(m: Miner, window: int) -> str:
    """After the deadline: check earlier records, then gather window `window` and step to theta_{w+1}.

    Returns the sync status (`SyncStatus`): "in_sync", "resynced" (a record disagreed with us and we
    reloaded the lead's model), "no_lead" (no validator leads: nothing is aggregated) or "stopped".
    """
    deadline = m.clock.wait_past_deadline(window, m.stop)
    if deadline is None:
        return SyncStatus.STOPPED
    reveal_key(m, window)
    m.peers.refresh()
    mg = m.chain.metagraph(m.cfg.netuid)
    lead = find_lead(m.peers, mg, m.hp.min_validator_stake, window)
    if lead is None:
        m.gm.window = window + 1  # no validator: no peer list, so nothing is aggregated
        return SyncStatus.NO_LEAD
    status = verify_records(m, mg.hotkeys[lead], window)
    if m.gm.window != window:
        return status  # could not get back to theta_w; the next window's sync tries again
    num_gathered = gather_and_step(m, mg, mg.hotkeys[lead], window, deadline)
    logger.bind(window=window).debug(f"gathered {num_gathered} updates")
    return status


def verify_records(m: Miner, lead_hotkey: str, window: int) -> str:
    """Compare theta after each earlier gather with the lead's signed record; resync on a mismatch."""
    for w in sorted(x for x in m.unverified if x < window):
        read = fetch_record(m.peers, lead_hotkey, w)
        if not read.ok or read.value is None:
            if read.status is ReadStatus.INVALID:
                logger.bind(window=w).warning(f"the lead's record is invalid: {read.reason}")
            if w < window - UNVERIFIED_WINDOWS_KEPT:
                m.unverified.pop(w)
            continue
        ours = m.unverified.pop(w)
        if read.value.next_fingerprint == ours:
            m.gm.verified[w + 1] = ours  # our own step, and the lead's record agrees: a checkpoint must match it
            continue
        check = miner_check(m)
        why = record_problem(m.gm, read.value, m.peers, check, lead_hotkey)
        if why is None and read.value.refused and w in m.gm.guard_losses:  # a veto of a step our guard took
            why = refused_problem(True, *m.gm.guard_losses[w], max_rise=m.hp.max_loss_rise)
        if why is not None:  # the lead's record is wrong, our own step is the valid one: keep it
            logger.bind(window=w).warning(f"the lead's record is invalid, keeping our own step: {why}")
            m.gm.distrusted.add(lead_hotkey)
            continue
        logger.warning(f"window {w}: our model differs from the lead's record; resyncing")
        m.unverified.clear()
        restore_from_lead(m.gm, window, m.peers, lead_hotkey, m.device, wait_last_s=m.clock.window_s() * 0.2,
                          should_stop=m.stop.is_set, check=check, force_resync=True)
        return SyncStatus.RESYNCED
    return SyncStatus.IN_SYNC


def miner_check(m: Miner) -> RecordAdmission:
    """The checks a miner runs on the lead's records and checkpoints (`trust.record_check`); its verdicts are not
    published (a miner's word carries no stake)."""
    mg = m.chain.metagraph(m.cfg.netuid)
    stake = validator_stake(mg, m.hp.min_validator_stake, declared_validators(m.peers))
    return trust.record_check(m.num_train, m.clock.deadline, m.gm, m.peers, stake, guard_batch=miner_guard(m))


def miner_guard(m: Miner) -> GuardBatch:
    """The window's guard batch as this miner reads it (template/node/guard.py)."""
    return guard_reader(m.clock, m.dataset, m.hp, m.num_train, m.stop)


def gather_and_step(m: Miner, mg: Metagraph, lead_hotkey: str, window: int, deadline: float) -> int:
    """The gather set of `window` (peer list in force x deterministic admission), then the outer step,
    adding one update at a time (`gather_streamed`)."""
    read = fetch_peer_list(m.peers, lead_hotkey, window)
    chosen: list[int] = []
    updates = StreamedUpdates(norms=[], load=lambda _i: {})
    if read.ok and read.value is not None:
        peer_uids = read.value
        hotkeys = {u: mg.hotkeys[u] for u in peer_uids if 0 <= u < mg.n}
        uploads = fetch_uploads(m.peers, hotkeys, window, m.hp.max_upload_bytes,
                                reveal_by=wait_for_reveals(m, window))
        chosen, updates = gather_streamed(m, uploads, peer_uids, window, deadline)
    # the lead's guard, run here too on the same drawn batch: a step the lead refuses is one we refuse ourselves,
    # a member it drops one we drop (no resync). A guard block whose hash we cannot read: the step without the
    # guard (nothing dropped or refused); where the lead's guard dropped or refused, its record disagrees with
    # our fingerprint and `verify_records` corrects us (resync)
    batch = miner_guard(m)(window, chosen) if len(updates) else None
    stats = m.gm.guarded_step(updates, m.hp.outer_lr, batch)
    log_outer_step(window, stats)
    m.gm.window = window + 1
    m.unverified[window] = m.gm.fingerprint()
    return len(chosen)


def gather_streamed(m: Miner, uploads: list[Upload], peer_uids: list[int], window: int, deadline: float
                    ) -> tuple[list[int], StreamedUpdates]:
    """`gauntlet.aggregate.gather_set` over `uploads` (each admitted by `admit_for_gather`), keeping of each
    admitted update only its norms (and its exact kept positions for the copy check): the outer step decodes
    each chosen one again as it adds it, so at most one update is held (the same bits as the whole set)."""
    base_fp = m.gm.fingerprint()  # theta_w: the outer step below changes the model only once all are added

    def admit(up: Upload) -> Admission:
        return admit_for_gather(up, window=window, deadline_s=deadline, hparams=m.hp, shapes=m.gm.shapes(),
                                base_fingerprint=base_fp, num_train=m.num_train)

    norms: dict[int, dict[str, float]] = {}
    compact: dict[int, Admission] = {}
    for up in uploads:
        adm = admit(up)
        if adm.ok and adm.update is not None:
            norms[up.uid] = {name: l2_norm(t) for name, t in adm.update.items()}
        compact[up.uid] = replace(adm, update=None)
        del adm
    chosen = gather_set(compact, uploads, peer_uids=peer_uids, max_peers=m.hp.num_peers,
                        copy_threshold=m.hp.copy_overlap_threshold)
    by_uid = {up.uid: up for up in uploads}

    def load(i: int) -> dict[str, torch.Tensor]:
        update = admit(by_uid[chosen[i]]).update
        assert update is not None, "admitted once, so again"
        return update

    return chosen, StreamedUpdates(norms=[norms[u] for u in chosen], load=load)


UploadStrategy = Callable[[Miner, WindowPlan, str], "tuple[bytes | None, TrainResult | None]"]


def honest_upload(m: Miner, plan: WindowPlan, base_fp: str) -> tuple[bytes | None, TrainResult | None]:
    result = train_inner_steps(m, plan)
    wire = encode_update(m, result.delta)
    return build_artifact(m, plan, wire, base_fp), result


FollowStep = Callable[[Miner, int], str]


def run_window(m: Miner, window: int, strategy: UploadStrategy = honest_upload,
               follow: FollowStep = follow_network) -> dict:
    plan = plan_window(m, window)
    base_fp = m.gm.fingerprint()
    data, result = strategy(m, plan, base_fp)
    upload = upload_update(m, plan, data) if data is not None else UploadResult(None, 0, 0.0, False)
    save_local_state(m)
    m.bucket.prune(window, m.hp.retention_windows)  # own objects past the run's retention
    sync = follow(m, window)
    row = {
        "role": "miner", "uid": m.uid, "hotkey": m.hotkey.ss58_address, "window": window,
        "train/loss": result.mean_loss if result else None,
        "train/tokens_per_s": (result.tokens / result.seconds) if result and result.seconds else None,
        "upload/bytes": upload.nbytes, "upload/s": round(upload.seconds, 3), "upload/on_time": upload.on_time,
        "sync/status": sync, "sync/window": m.gm.window, "sync/fingerprint": m.gm.fingerprint(),
    }
    if isinstance(m.dataset, PagedDataset):  # what the data path read this window (pages, refusals)
        stats = m.dataset.take_stats()
        row |= {"data/bytes": stats.fetched_bytes, "data/pages": stats.fetched_pages,
                "data/refused": stats.refused_pages, "data/wait_s": round(stats.wait_s, 3)}
    log_window(m, row)
    return row


def log_window(m: Miner, row: dict) -> None:
    loss = row["train/loss"]
    tps = row["train/tokens_per_s"]
    logger.bind(window=row["window"], uid=m.uid).info(
        f"window {row['window']} | loss {loss if loss is None else f'{loss:.4f}'} | "
        f"tok/s {tps if tps is None else f'{tps:.0f}'} | upload {row['upload/bytes']} B in {row['upload/s']} s | "
        f"sync {row['sync/status']} (model at window {row['sync/window']})"
        + (f" | data {row['data/bytes']} B, waited {row['data/wait_s']} s" if "data/bytes" in row else "")
    )
    append_metrics(m.cfg.metrics_file, row)


def run(cfg: NeuronConfig, strategy: UploadStrategy = honest_upload, follow: FollowStep = follow_network,
        group: TrainingGroup | None = None) -> None:
    """Restore, sync, then one window after another until stopped. With `group` (torchrun rank 0)
    theta_w stays on the CPU and each window is trained by all ranks."""
    m = build_miner(cfg, None if group is None else torch.device("cpu"))
    if group is not None:
        group.start(m.hp)
        m.trainer = group
    import signal

    signal.signal(signal.SIGTERM, m.stop.set)
    signal.signal(signal.SIGINT, m.stop.set)
    done = 0
    while not m.stop.is_set():
        window = -1
        try:  # storage or chain away for longer than their retries: this window is lost, not the miner
            window = max(m.clock.current_window(), 0)
            require_version(m.chain, cfg.netuid)  # the owner raised weights_version: stop with what to install
            if not m.clock.wait_for_window(window, m.stop):
                break
            sync_to_window(m, window)
            if m.gm.window != window:
                continue  # the window passed while syncing: take the next one
            run_window(m, window, strategy, follow)
        except TRANSIENT_ERRORS as e:
            logger.bind(window=window).error(f"window {window} abandoned: {e}")
            time.sleep(2.0)
            continue
        done += 1
        if cfg.max_windows and done >= cfg.max_windows:
            break
    logger.info("miner stopped cleanly")


def run_distributed(cfg: NeuronConfig) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group, then `run_ranks`."""
    run_ranks(cfg, init_distributed(cfg.device))


def run_ranks(cfg: NeuronConfig, ctx: DistContext) -> None:
    """Rank 0 runs the honest miner with a sharded train step and sends stop however it ends; the
    other ranks train on its commands until then. Leaves the process group on a clean end."""
    if not ctx.is_main:
        ignore_stop_signals()
        trainer_loop(ctx)
        shutdown(ctx)
        return
    group = TrainingGroup(ctx)
    try:
        run(cfg, group=group)
    finally:
        if group.stop():
            shutdown(ctx)


def sync_to_window(m: Miner, window: int) -> None:
    """Bring theta to `window`: gather the one window we missed ourselves, else replay the lead's records."""
    if m.gm.window == window:
        return
    if m.gm.window == window - 1 and m.unverified:
        status = follow_network(m, window - 1)  # its deadline has passed: same gather as everyone's
        logger.info(f"gathered the missed window {window - 1} ({status})")
        return
    _, lead = lead_now(m, m.hp.min_validator_stake, window)
    if lead is None:
        m.gm.window = window
        return
    status = restore_from_lead(m.gm, window, m.peers, lead, m.device,
                               wait_last_s=m.clock.window_s() * 0.3, should_stop=m.stop.is_set,
                               check=miner_check(m), force_resync=m.gm.window > window)
    m.unverified.clear()
    logger.info(f"synced to window {m.gm.window} ({status})")
