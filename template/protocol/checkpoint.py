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
  record changed nothing and are not listed.

So parent + records + hparams reproduce ``fingerprint``; the lead signs all of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from template.protocol.artifacts import canonical_json
from template.protocol.config import HParams
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


def checkpoint_fields(hparams: HParams, fingerprint: str, lineage: Lineage) -> dict[str, Any]:
    """The kind-specific manifest fields of a checkpoint of weights with `fingerprint`."""
    return {
        "fingerprint": fingerprint,
        "hparams": hparams.model_dump(mode="json"),
        "hparams_fingerprint": hparams.fingerprint(),
        "parent": None if lineage.parent is None else lineage.parent.to_json(),
        "records": [r.to_json() for r in lineage.records],
    }
