"""Keeping theta_w in step with the network (DESIGN sections 4.1 and 7).

The global model moves only through signed artifacts of the lead validator: a checkpoint
fixes theta_W, and the aggregation record of each later window names the updates whose outer
step gives theta_{w+1}. A window with no record leaves the model as it was. Replaying is
deterministic: updates are decoded and applied on the CPU in fp32 in the record's order, so
every node that replays the same records holds bit-identical weights, whatever its device.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from bittensor_wallet import Keypair
from loguru import logger

from gauntlet.aggregate import parse_peer_list
from gauntlet.checks import Upload
from storage.s3 import S3Client, Status
from template.node.neuron import PeerDirectory
from template.protocol import layout
from template.protocol.artifacts import (
    ArtifactError,
    read_json_artifact,
    read_tensor_artifact,
    write_tensor_artifact,
)
from template.protocol.config import HParams
from template.protocol.model import build_model, model_fingerprint
from template.protocol.outer_step import outer_step
from template.protocol.records import AggregationRecord, RecordEntry
from template.protocol.sparseloco import CodecError, CodecParams, decompress

RECORD_MAX_BYTES = 4 << 20
PEERS_MAX_BYTES = 1 << 20


@dataclass
class GlobalModel:
    """theta_window: the network's model at the start of `window`, as this node holds it."""

    model: torch.nn.Module
    window: int
    hparams: HParams

    @classmethod
    def initial(cls, hparams: HParams, device: torch.device) -> GlobalModel:
        """theta_0: deterministic from the run's model seed, identical on every node."""
        model = build_model(hparams.model_preset, hparams.vocab_size, hparams.seq_len, hparams.model_seed)
        return cls(model=model.to(device), window=0, hparams=hparams)

    @property
    def codec(self) -> CodecParams:
        return CodecParams.from_hparams(self.hparams)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(p.shape) for n, p in self.model.named_parameters()}

    def fingerprint(self) -> str:
        return model_fingerprint(self.model)

    def checkpoint_max_bytes(self) -> int:
        return sum(p.numel() for p in self.model.parameters()) * 4 + (4 << 20)

    def apply_updates(self, updates: list[dict[str, torch.Tensor]], lr: float) -> None:
        """Outer step on CPU fp32 (bit-exact across devices), then back to the model's device."""
        params = dict(self.model.named_parameters())
        cpu = {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in params.items()}
        if updates:
            outer_step(cpu, updates, lr)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(cpu[n])

    def load_state(self, tensors: dict[str, torch.Tensor], window: int) -> None:
        params = dict(self.model.named_parameters())
        if set(tensors) != set(params):
            raise ValueError(f"checkpoint tensors {sorted(set(tensors) ^ set(params))[:4]} do not match the model")
        with torch.no_grad():
            for n, p in params.items():
                if tuple(tensors[n].shape) != tuple(p.shape):
                    raise ValueError(f"checkpoint tensor {n} has shape {tuple(tensors[n].shape)}")
                p.copy_(tensors[n])
        self.window = window


def fetch_record(peers: PeerDirectory, lead_hotkey: str, window: int) -> AggregationRecord | None:
    """The lead's signed record of `window`, or None when absent or invalid (logged)."""
    res = peers.get(lead_hotkey, layout.record_key(window), max_bytes=RECORD_MAX_BYTES)
    if res is None or res.status is not Status.OK:
        return None
    try:
        art = read_json_artifact(res.data, kind="record", signer_ss58=lead_hotkey, window=window)
        return AggregationRecord.from_body(art.body)
    except (ArtifactError, ValueError) as e:
        logger.warning(f"record of window {window} from the lead is invalid: {e}")
        return None


def fetch_peer_list(peers: PeerDirectory, lead_hotkey: str, window: int) -> list[int] | None:
    """The lead's signed peer list in force for `window`, or None when absent or invalid (logged)."""
    res = peers.get(lead_hotkey, layout.peers_key(window), max_bytes=PEERS_MAX_BYTES)
    if res is None or res.status is not Status.OK:
        return None
    try:
        art = read_json_artifact(res.data, kind="peers", signer_ss58=lead_hotkey, window=window)
        return parse_peer_list(art.body, window=window)
    except (ArtifactError, ValueError) as e:
        logger.warning(f"peer list of window {window} from the lead is invalid: {e}")
        return None


def fetch_uploads(peers: PeerDirectory, hotkeys: dict[int, str], window: int, max_bytes: int) -> list[Upload]:
    """The gradient uploads of window `window` of the given uids (uid -> hotkey), one `Upload` each."""
    key = layout.gradient_key(window)
    uploads = []
    for uid, hotkey in sorted(hotkeys.items()):
        res = peers.get(hotkey, key, max_bytes=max_bytes)
        if res is None:
            uploads.append(Upload(uid=uid, hotkey=hotkey, key=key, data=None, last_modified=None,
                                  status="no_commitment"))
            continue
        status = {Status.OK: "ok", Status.NOT_FOUND: "not_found", Status.TOO_LARGE: "too_large"}.get(
            res.status, "error")
        uploads.append(Upload(uid=uid, hotkey=hotkey, key=key, data=res.data,
                              last_modified=res.info.last_modified if res.info else None, status=status))
    return uploads


def fetch_update(
    peers: PeerDirectory, entry: RecordEntry, window: int, shapes: dict, codec: CodecParams, max_bytes: int
) -> dict[str, torch.Tensor] | None:
    """Download one listed artifact, check its sha256 and signature, decode it densely."""
    res = peers.get(entry.hotkey, entry.key, max_bytes=max_bytes)
    if res is None or res.status is not Status.OK:
        logger.warning(f"cannot fetch {entry.key} of uid {entry.uid}: {res.status if res else 'no commitment'}")
        return None
    if hashlib.sha256(res.data).hexdigest() != entry.sha256:
        logger.warning(f"artifact {entry.key} of uid {entry.uid} changed since the record was signed")
        return None
    try:
        art = read_tensor_artifact(res.data, kind="gradient", max_bytes=max_bytes, signer_ss58=entry.hotkey,
                                   window=window)
        return decompress(art.tensors, shapes, codec)
    except (ArtifactError, CodecError) as e:
        logger.warning(f"artifact {entry.key} of uid {entry.uid} is invalid: {e}")
        return None


def apply_record(gm: GlobalModel, record: AggregationRecord, peers: PeerDirectory) -> str:
    """Advance theta_w -> theta_{w+1} by the record; returns "ok" or why it could not."""
    if record.base_fingerprint != gm.fingerprint():
        return "base_mismatch"
    updates = []
    for entry in record.included:
        upd = fetch_update(peers, entry, record.window, gm.shapes(), gm.codec, gm.hparams.max_upload_bytes)
        if upd is None:
            return "missing_update"
        updates.append(upd)
    gm.apply_updates(updates, record.outer_lr)
    gm.window = record.window + 1
    if gm.fingerprint() != record.next_fingerprint:
        return "next_mismatch"
    return "ok"


def newest_checkpoint(peers: PeerDirectory, lead_hotkey: str, max_window: int) -> int | None:
    found = peers.client(lead_hotkey)
    if found is None:
        return None
    client, bucket = found
    windows = [layout.parse_window(o.key) for o in client.list(bucket, layout.checkpoint_prefix())]
    eligible = [w for w in windows if w is not None and w <= max_window]
    return max(eligible) if eligible else None


def load_checkpoint(gm: GlobalModel, peers: PeerDirectory, lead_hotkey: str, window: int) -> bool:
    res = peers.get(lead_hotkey, layout.checkpoint_key(window), max_bytes=gm.checkpoint_max_bytes())
    if res is None or res.status is not Status.OK:
        return False
    try:
        art = read_tensor_artifact(res.data, kind="checkpoint", max_bytes=gm.checkpoint_max_bytes(),
                                   signer_ss58=lead_hotkey, window=window)
        gm.load_state(art.tensors, window)
    except (ArtifactError, ValueError) as e:
        logger.warning(f"checkpoint of window {window} is unusable: {e}")
        return False
    if gm.fingerprint() != art.manifest.get("fingerprint"):
        logger.warning(f"checkpoint of window {window} does not match its own fingerprint")
        return False
    return True


def publish_checkpoint(gm: GlobalModel, client: S3Client, bucket: str, keypair: Keypair) -> int:
    """Sign and upload theta_window as a checkpoint; returns bytes written."""
    tensors = {n: p.detach().to("cpu", torch.float32) for n, p in gm.model.named_parameters()}
    data = write_tensor_artifact(tensors, kind="checkpoint", window=gm.window, keypair=keypair,
                                 fields={"fingerprint": gm.fingerprint(), "hparams": gm.hparams.fingerprint()})
    client.put(bucket, layout.checkpoint_key(gm.window), data)
    return len(data)


def resync(gm: GlobalModel, peers: PeerDirectory, lead_hotkey: str, target: int, device: torch.device) -> None:
    """Start over from the newest usable checkpoint <= target (or theta_0)."""
    ckpt = newest_checkpoint(peers, lead_hotkey, target)
    if ckpt is not None and load_checkpoint(gm, peers, lead_hotkey, ckpt):
        logger.info(f"loaded checkpoint of window {ckpt}")
        return
    fresh = GlobalModel.initial(gm.hparams, device)
    gm.load_state({n: p.detach() for n, p in fresh.model.named_parameters()}, 0)
    logger.info("no usable checkpoint: starting from theta_0")


def catch_up(
    gm: GlobalModel,
    target: int,
    peers: PeerDirectory,
    lead_hotkey: str,
    device: torch.device,
    *,
    wait_last_s: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> str:
    """Replay records until gm.window == target. The last record may be waited for.

    Returns "in_sync", or "resynced" when the node had to reload a checkpoint on the way.
    """
    status = "in_sync"
    for _attempt in range(3):
        while gm.window < target and not should_stop():
            record = fetch_record(peers, lead_hotkey, gm.window)
            deadline = time.time() + (wait_last_s if gm.window == target - 1 else 0.0)
            while record is None and time.time() < deadline and not should_stop():
                time.sleep(0.5)
                record = fetch_record(peers, lead_hotkey, gm.window)
            if record is None:  # no record: the window changed nothing
                gm.window += 1
                continue
            outcome = apply_record(gm, record, peers)
            if outcome != "ok":
                logger.warning(f"window {record.window}: {outcome}; resyncing from a checkpoint")
                break
        else:
            return status
        if should_stop():
            return status
        status = "resynced"
        resync(gm, peers, lead_hotkey, target, device)
    return "diverged"
