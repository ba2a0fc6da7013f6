"""The checkpoint manifest is self-describing: full hparams, parent checkpoint, records since."""

from __future__ import annotations

import pytest
import torch
from bittensor_wallet import Keypair

from template.node.sync import GlobalModel, publish_checkpoint
from template.protocol.artifacts import read_json_artifact, read_tensor_artifact, write_json_artifact
from template.protocol.checkpoint import ArtifactRef, Lineage, checkpoint_fields, record_digest
from template.protocol.config import HParams
from template.protocol.records import AggregationRecord, RecordEntry

LEAD = Keypair.create_from_uri("//Alice")
HP = HParams(vocab_size=64, seq_len=16)
CAP = 64 << 20


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def record(window: int, uids: tuple[int, ...] = (3,)) -> AggregationRecord:
    return AggregationRecord(
        window=window, base_fingerprint="ab" * 32, next_fingerprint="cd" * 32, outer_lr=HP.outer_lr,
        included=tuple(RecordEntry(uid=u, hotkey=f"hk{u}", key=f"v1/gradients/{window:08d}.safetensors",
                                   sha256="ef" * 32) for u in uids))


class MemoryBucket:
    """The one method `publish_checkpoint` uses of the node's own bucket."""

    def __init__(self) -> None:
        self.checkpoints: dict[int, bytes] = {}

    def put_checkpoint(self, window: int, data: bytes) -> None:
        self.checkpoints[window] = data


def test_record_digest_is_the_record_artifacts_payload_sha256() -> None:
    rec = record(7, uids=(1, 4))
    blob = write_json_artifact(rec.to_body(), kind="record", window=7, keypair=LEAD)
    art = read_json_artifact(blob, kind="record", signer_ss58=LEAD.ss58_address, window=7)
    assert record_digest(rec) == art.manifest["payload_sha256"]
    assert record_digest(AggregationRecord.from_body(art.body)) == record_digest(rec)  # survives a round trip
    assert record_digest(record(7, uids=(1,))) != record_digest(rec)


def test_lineage_lists_records_in_order_and_is_immutable() -> None:
    start = Lineage(parent=ArtifactRef(4, "11" * 32))
    later = start.after_record(record(4)).after_record(record(6))
    assert start.records == ()
    assert [r.window for r in later.records] == [4, 6] and later.parent == start.parent


def test_checkpoint_fields_carry_full_hparams_parent_and_records() -> None:
    lineage = Lineage(parent=ArtifactRef(4, "11" * 32)).after_record(record(4))
    fields = checkpoint_fields(HP, "22" * 32, lineage)
    assert HParams(**fields["hparams"]) == HP  # the model can be rebuilt from the checkpoint alone
    assert fields["hparams_fingerprint"] == HP.fingerprint()
    assert fields["parent"] == {"window": 4, "payload_sha256": "11" * 32}
    assert fields["records"] == [{"window": 4, "payload_sha256": record_digest(record(4))}]
    assert checkpoint_fields(HP, "22" * 32, Lineage())["parent"] is None  # descends from theta_0


def test_published_checkpoints_chain_to_their_parent() -> None:
    gm = GlobalModel.initial(HP, torch.device("cpu"))
    gm.lineage = gm.lineage.after_record(record(0)).after_record(record(2))
    gm.window = 4
    bucket = MemoryBucket()
    publish_checkpoint(gm, bucket, LEAD)  # type: ignore[arg-type]
    first = read_tensor_artifact(bucket.checkpoints[4], kind="checkpoint", max_bytes=CAP,
                                 signer_ss58=LEAD.ss58_address, window=4).manifest
    assert first["parent"] is None and [r["window"] for r in first["records"]] == [0, 2]
    assert first["fingerprint"] == gm.fingerprint() and HParams(**first["hparams"]) == HP

    gm.lineage = gm.lineage.after_record(record(5))
    gm.window = 8
    publish_checkpoint(gm, bucket, LEAD)  # type: ignore[arg-type]
    second = read_tensor_artifact(bucket.checkpoints[8], kind="checkpoint", max_bytes=CAP,
                                  signer_ss58=LEAD.ss58_address, window=8).manifest
    assert second["parent"] == {"window": 4, "payload_sha256": first["payload_sha256"]}
    assert second["records"] == [{"window": 5, "payload_sha256": record_digest(record(5))}]
