"""The checkpoint manifest: a checkpoint names everything needed to rebuild and check it.

A checkpoint (tensor artifact, kind "checkpoint", `layout.checkpoint_key`) holds theta_W in
fp32. Besides the common manifest fields (`artifacts.make_manifest`) its manifest carries:

- ``fingerprint``: `model.model_fingerprint` of the weights it holds;
- ``hparams``: the full run hyperparameters (`HParams.model_dump()`), so the model can be rebuilt
  from the checkpoint alone, and ``hparams_fingerprint`` (`HParams.fingerprint()`);
- ``parent``: the checkpoint these weights descend from, ``{"window", "payload_sha256"}`` (the
  parent artifact's manifest ``payload_sha256``), or null when they descend from theta_0 (the
  seeded initial weights of ``hparams``);
- ``records``: the aggregation records replayed on top of the parent, in window order, each
  ``{"window", "payload_sha256"}`` where ``payload_sha256`` is the sha256 of the canonical JSON
  of the record body (the record artifact's manifest ``payload_sha256``). Windows without a
  record changed nothing and are not listed;
- ``clip_ref``: the per-tensor clip limits of the last outer step before these weights
  ({name: float}, or null when no step was applied yet): the norm history the next outer step
  clamps its limits to (template/protocol/outer_step.py), so a node that starts here aggregates
  exactly as the nodes that never stopped;
- ``clip_history``: per tensor, the clip limits of the last (at most ``CLIP_HISTORY_LEN``) applied outer
  steps, oldest first ({name: [float, ...]}, every tensor the same count; {} when none): the clip floor of
  the next step is taken over it. Absent (a checkpoint from before the floor) reads as {}.

So parent + records + hparams reproduce ``fingerprint``; the lead signs all of it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from template.protocol.artifacts import canonical_json
from template.protocol.config import HParams
from template.protocol.outer_step import CLIP_HISTORY_LEN
from template.protocol.records import AggregationRecord


@dataclass(frozen=True)
class ArtifactRef:
    """A window and the manifest `payload_sha256` of the artifact published for it."""

    window: int
    payload_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"window": self.window, "payload_sha256": self.payload_sha256}


@dataclass(frozen=True)
class Lineage:
    """Where a node's theta came from: a parent checkpoint (None: theta_0) and the records since."""

    parent: ArtifactRef | None = None
    records: tuple[ArtifactRef, ...] = field(default_factory=tuple)

    def after_record(self, record: AggregationRecord) -> Lineage:
        """The lineage once `record` has been applied on top."""
        return replace(self, records=(*self.records, ArtifactRef(record.window, record_digest(record))))


def record_digest(record: AggregationRecord) -> str:
    """sha256 hex of the canonical JSON of the record body: the record artifact's payload_sha256."""
    return hashlib.sha256(canonical_json(record.to_body())).hexdigest()


def parse_clip_ref(value: Any, names: set[str]) -> dict[str, float] | None:
    """A checkpoint's ``clip_ref``: None, or {name: finite float >= 0} over exactly the model's tensors.

    Raises ValueError naming what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != names:
        raise ValueError("checkpoint clip_ref must be null or an object over exactly the model's tensor names")
    for name, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"checkpoint clip_ref[{name!r}] must be a finite number >= 0, got {v!r}")
    return {k: float(v) for k, v in value.items()}


def parse_clip_history(value: Any, names: set[str]) -> dict[str, tuple[float, ...]]:
    """A checkpoint's ``clip_history``: absent (None) or {} for none, else {name: [finite float >= 0, ...]}
    over exactly the model's tensors, each list of the same length, 1 to CLIP_HISTORY_LEN.

    Raises ValueError naming what is wrong (a hostile history could otherwise lift or sink the clip floor)."""
    if value is None or value == {}:
        return {}
    if not isinstance(value, dict) or set(value) != names:
        raise ValueError("checkpoint clip_history must be an object over exactly the model's tensor names")
    lengths = set()
    for name, limits in value.items():
        if not isinstance(limits, list) or not 1 <= len(limits) <= CLIP_HISTORY_LEN:
            raise ValueError(f"checkpoint clip_history[{name!r}] must be a list of 1 to {CLIP_HISTORY_LEN} limits")
        for v in limits:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"checkpoint clip_history[{name!r}] holds {v!r}, not a finite number >= 0")
        lengths.add(len(limits))
    if len(lengths) != 1:
        raise ValueError("checkpoint clip_history lists differ in length (every step appends to every tensor)")
    return {k: tuple(float(v) for v in limits) for k, limits in value.items()}


def clip_state_digest(clip_ref: Any, clip_history: Any) -> str:
    """sha256 of a clip state as a checkpoint's manifest carries it (`clip_ref`, `clip_history`: absent history
    is none): the part of the consensus state the weights' fingerprint does not cover. A follower compares the
    lead's checkpoint's digest with its own verified one; any other shape or value digests differently."""
    history = {} if clip_history is None else clip_history
    try:
        body = canonical_json({"clip_history": history, "clip_ref": clip_ref})
    except (TypeError, ValueError):  # not JSON-able (a hostile manifest): a digest no verified state has
        body = repr((clip_ref, history)).encode()
    return hashlib.sha256(b"clip:" + body).hexdigest()


def clip_state_fields(clip_ref: Mapping[str, float] | None,
                      clip_history: Mapping[str, Sequence[float]] | None) -> dict[str, Any]:
    """`clip_ref` and `clip_history` as a checkpoint's manifest writes them."""
    return {"clip_history": {k: [float(v) for v in limits] for k, limits in sorted((clip_history or {}).items())},
            "clip_ref": None if clip_ref is None else {k: float(v) for k, v in sorted(clip_ref.items())}}


def checkpoint_fields(hparams: HParams, fingerprint: str, lineage: Lineage,
                      clip_ref: dict[str, float] | None = None,
                      clip_history: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """The kind-specific manifest fields of a checkpoint of weights with `fingerprint`."""
    return {
        **clip_state_fields(clip_ref, clip_history),
        "fingerprint": fingerprint,
        "hparams": hparams.model_dump(mode="json"),
        "hparams_fingerprint": hparams.fingerprint(),
        "parent": None if lineage.parent is None else lineage.parent.to_json(),
        "records": [r.to_json() for r in lineage.records],
    }
