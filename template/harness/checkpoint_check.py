"""What a follower's checkpoint check costs (issue 27, `template/node/lead.py:check_lead_checkpoints`): the signed
manifest read from the checkpoint's safetensors header alone, against the same run's baseline, the full read a
node makes to load it (`read_tensor_artifact`: every byte, the payload digest) plus the model fingerprint.

In memory (no storage round trips): bytes each needs and CPU seconds; `scripts/bench_checkpoint_check.py`."""

from __future__ import annotations

import time
from typing import Any

import torch
from bittensor_wallet import Keypair

from template.protocol.artifacts import (
    header_length,
    read_tensor_artifact,
    read_tensor_manifest,
    write_tensor_artifact,
)
from template.protocol.checkpoint import Lineage, checkpoint_fields
from template.protocol.config import HParams
from template.protocol.model import build_model, model_fingerprint


def measure(preset: str = "tiny", vocab_size: int = 8192, seq_len: int = 128, repeats: int = 3) -> dict[str, Any]:
    """Header-only check vs full read of one honest checkpoint of `preset`; the best of `repeats` timings each."""
    hp = HParams(model_preset=preset, vocab_size=vocab_size, seq_len=seq_len)
    keypair = Keypair.create_from_uri("//Alice")
    model = build_model(preset, vocab_size, seq_len, hp.model_seed)
    fingerprint = model_fingerprint(model)
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    data = write_tensor_artifact(tensors, kind="checkpoint", window=4, keypair=keypair,
                                 fields=checkpoint_fields(hp, fingerprint, Lineage()))
    del tensors

    def header_check() -> tuple[int, str]:
        length = header_length(data[:8])
        manifest = read_tensor_manifest(data[8:8 + length], kind="checkpoint", signer_ss58=keypair.ss58_address,
                                        window=4)
        return 8 + length, manifest["fingerprint"]

    def full_read() -> tuple[int, str]:
        art = read_tensor_artifact(data, kind="checkpoint", max_bytes=len(data), signer_ss58=keypair.ss58_address,
                                   window=4)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(art.tensors[n])
        return len(data), model_fingerprint(model)

    out: dict[str, Any] = {}
    for name, fn in (("header", header_check), ("full_read", full_read)):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            nbytes, fp = fn()
            best = min(best, time.perf_counter() - start)
        assert fp == fingerprint, name
        out[name] = {"bytes": nbytes, "seconds": round(best, 6)}
    return {"settings": {"preset": preset, "vocab_size": vocab_size, "seq_len": seq_len, "repeats": repeats,
                         "checkpoint_bytes": len(data)},
            "variants": out,
            "bytes_ratio": round(out["header"]["bytes"] / out["full_read"]["bytes"], 8),
            "speedup": round(out["full_read"]["seconds"] / max(out["header"]["seconds"], 1e-9), 1)}
