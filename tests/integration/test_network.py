"""End to end: the whole network through scripts/localnet.py, on real parts (issues 6 and 8).

Each test starts its own SeaweedFS, localnet node and neuron processes exactly as a user
would, and checks what landed in the buckets and on chain.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from bittensor_wallet import Wallet

from scripts import localnet
from storage import layout
from storage.s3 import S3Client, Status
from template.artifacts import read_json_artifact, read_tensor_artifact
from template.config import HParams
from template.model import build_model, model_fingerprint
from template.records import AggregationRecord
from template.sparseloco import CodecParams, decompress, outer_step

FAST = ["--block-time", "0.5", "--blocks-per-window", "16", "--threads", "1"]


def _read_metrics(run_dir: Path, name: str) -> list[dict]:
    path = run_dir / "metrics" / f"{name}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def test_small_network_rewards_honest_miners(tmp_path):
    """2 honest miners, 3 hostile ones, 1 validator, 6 windows (the CI version of issue 8)."""
    run_dir = tmp_path / "run"
    rc = localnet.main(["--miners", "2", "--validators", "1", "--windows", "6",
                        "--adversaries", "noise,copycat,malformed", "--run-dir", str(run_dir), *FAST])
    assert rc == 0
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["windows"] >= 6
    assert report["loss"][-1] < report["loss"][0]
    miners = [n for n in report["neurons"] if n["role"] == "miner"]
    honest = [n for n in miners if n["kind"] == "honest"]
    hostile = [n for n in miners if n["kind"] != "honest"]
    assert min(n["weight"] for n in honest) > max(n["weight"] for n in hostile)
    assert min(n["emission_alpha"] for n in honest) > max(n["emission_alpha"] for n in hostile)
    assert report["rejections"], "the hostile uploads must have been rejected with reasons"
    assert (run_dir / "report" / "loss.png").exists() and (run_dir / "report" / "emission.png").exists()


@pytest.mark.slow
def test_miner_artifacts_and_replay(tmp_path):
    """One miner, three windows: signed artifacts in its bucket, and the model it ends with equals
    an independent replay of the lead's signed records from theta_0."""
    run_dir = tmp_path / "run"
    assert localnet.main(["--miners", "1", "--validators", "1", "--windows", "3", "--run-dir", str(run_dir),
                          "--hparam", "checkpoint_interval=100", *FAST]) == 0
    creds = {n: json.loads((run_dir / "credentials" / f"{n}.json").read_text())
             for n in ("owner", "miner0", "validator0")}
    readers = {n: S3Client(c["endpoint"], c["read_key_id"], c["read_secret"]) for n, c in creds.items()}
    hp_res = readers["owner"].get("dataset", layout.hparams_key())
    assert hp_res.status is Status.OK
    hp = HParams(**json.loads(hp_res.data))
    miner_hotkey = Wallet(name="miner0", hotkey="default", path=str(run_dir / "wallets")).hotkey.ss58_address
    lead_hotkey = Wallet(name="validator0", hotkey="default", path=str(run_dir / "wallets")).hotkey.ss58_address

    gradient_keys = [o.key for o in readers["miner0"].list("miner0", "v1/gradients/")]
    assert len(gradient_keys) >= 3
    for key in gradient_keys:
        res = readers["miner0"].get("miner0", key, max_bytes=hp.max_upload_bytes)
        art = read_tensor_artifact(res.data, kind="gradient", max_bytes=hp.max_upload_bytes,
                                   signer_ss58=miner_hotkey, window=layout.parse_window(key))
        assert art.manifest["base_fingerprint"]

    model = build_model(hp.model_preset, hp.vocab_size, hp.seq_len, hp.model_seed)
    params = {n: p.detach().clone().float() for n, p in model.named_parameters()}
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    codec = CodecParams.from_hparams(hp)
    last = _read_metrics(run_dir, "miner0")[-1]
    record_keys = sorted(o.key for o in readers["validator0"].list("validator0", "v1/records/")
                         if layout.parse_window(o.key) < last["sync/window"])
    assert record_keys
    applied = 0
    for key in record_keys:
        res = readers["validator0"].get("validator0", key, max_bytes=4 << 20)
        record = AggregationRecord.from_body(read_json_artifact(
            res.data, kind="record", signer_ss58=lead_hotkey, window=layout.parse_window(key)).body)
        assert record.base_fingerprint == _fingerprint(model, params)
        updates = []
        for entry in record.included:
            blob = readers["miner0"].get("miner0", entry.key, max_bytes=hp.max_upload_bytes).data
            assert hashlib.sha256(blob).hexdigest() == entry.sha256
            art = read_tensor_artifact(blob, kind="gradient", max_bytes=hp.max_upload_bytes,
                                       signer_ss58=entry.hotkey, window=record.window)
            updates.append(decompress(art.tensors, shapes, codec))
        if updates:
            outer_step(params, updates, record.outer_lr)
            applied += len(updates)
        assert _fingerprint(model, params) == record.next_fingerprint
    assert applied >= 1, "the honest miner's updates must have been aggregated"
    assert last["sync/status"] in {"in_sync", "resynced"}
    assert last["sync/fingerprint"] == _fingerprint(model, params)


def _fingerprint(model, params: dict) -> str:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    return model_fingerprint(model)
