"""A rogue lead for the simulation: `python -m template.sim.rogue_validator --flag FLAG <validator flags>`.

Runs the honest validator loop (template/node/validator.py) with one thing wrong in what it signs as the lead
(`template.sim.protocol_attacks.ROGUE_FLAGS`): `lr` publishes records with outer_lr inflated to ROGUE_LR, `offlist`
adds an admissible upload of a miner that is not on its own peer list, `veto` refuses every step, `forge`
publishes checkpoints of other (self-consistent) weights. scripts/localnet.py launches it for
`--adversaries roguelead` (flag lr) or `roguelead:FLAG`, staked above every honest validator so that it leads.
"""

from __future__ import annotations

import argparse
import hashlib
import sys

from bittensor_wallet import Keypair
from loguru import logger

from gauntlet.checks import Upload
from template.chain.base import Metagraph
from template.node import lead, validator
from template.node.neuron import run_neuron
from template.node.sync import GlobalModel
from template.protocol.artifacts import write_tensor_artifact
from template.protocol.checkpoint import checkpoint_fields
from template.protocol.config import parse_neuron_args
from template.protocol.records import AggregationRecord, RecordEntry
from template.sim.protocol_attacks import ROGUE_FLAGS, corrupt_record, forged_checkpoint_tensors


def rogue_publish_record(flag: str):
    honest = lead.sign_record

    def publish(v: validator.Validator, window: int, record: AggregationRecord, mg: Metagraph,
                uploads: list[Upload]) -> None:
        extra = None
        if flag == "offlist":
            listed = {e.uid for e in record.included}
            for up in uploads:
                if up.uid not in listed and up.data is not None:
                    extra = RecordEntry(uid=up.uid, hotkey=mg.hotkeys[up.uid], key=v.bucket.put_input(window, up.data),
                                        sha256=hashlib.sha256(up.data).hexdigest())
                    break
        bad = corrupt_record(record, flag, offlist=extra) if flag != "offlist" or extra is not None else record
        if bad != record:
            logger.bind(window=window).warning(f"roguelead: publishing a {flag} record")
        honest(v, window, bad, mg, uploads)

    return publish


def rogue_publish_checkpoint(gm: GlobalModel, bucket, keypair: Keypair) -> int:
    tensors = forged_checkpoint_tensors({n: p.detach().to("cpu") for n, p in gm.model.named_parameters()},
                                        seed=gm.window)
    forged = GlobalModel.initial(gm.hparams, next(gm.model.parameters()).device)
    forged.load_state(tensors, gm.window)
    data = write_tensor_artifact(tensors, kind="checkpoint", window=gm.window, keypair=keypair,
                                 fields=checkpoint_fields(gm.hparams, forged.fingerprint(), gm.lineage, gm.clip_ref,
                                                         gm.clip_history))
    bucket.put_checkpoint(gm.window, data)
    logger.warning(f"roguelead: published a forged checkpoint of window {gm.window}")
    return len(data)


def run_rogue(cfg, flag: str) -> None:
    if flag == "forge":
        lead.publish_checkpoint = rogue_publish_checkpoint
    else:
        lead.sign_record = rogue_publish_record(flag)
    validator.run(cfg)


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--flag", required=True, choices=ROGUE_FLAGS, help="what the rogue lead gets wrong")
    known, rest = pre.parse_known_args(argv)
    return run_neuron(parse_neuron_args("validator", rest), f"roguelead-{known.flag}",
                      lambda cfg: run_rogue(cfg, known.flag))


if __name__ == "__main__":
    sys.exit(main())
