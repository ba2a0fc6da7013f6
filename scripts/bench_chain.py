"""Benchmark the localnet: one Yuma epoch on a 256-uid / 64-validator graph, and signed extrinsics per second
through a real node process (HTTP, signature checks, pool, blocks, SQLite).

Baselines measured in the same run: the 200 extrinsics/s target and raw sr25519 verification speed (what a
node could do if it did nothing but check signatures). The last stdout line is one JSON object.

    .venv/bin/python scripts/bench_chain.py [--extrinsics 2000] [--threads 4] [--block-time 1.0]
    .venv/bin/python scripts/bench_chain.py --copier-epochs 40     # the weight copier, CR off vs on

`--copier-epochs N` instead measures a weight copier (`template.sim.weightcopier`) against an honest
validator on a real node: both staked, the honest one sets drifting weights once per tempo, the copier sets
the honest one's visible row right after; dividends per stake of each, with commit-reveal off and on.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bittensor_wallet import Keypair  # noqa: E402

from template.chain.localnet.client import LocalnetClient  # noqa: E402
from template.chain.localnet.extrinsic import canonical_json  # noqa: E402
from template.chain.localnet.process import start_localnet_process  # noqa: E402
from template.chain.localnet.yuma import NeuronState, YumaParams, yuma_epoch  # noqa: E402
from template.sim.weightcopier import copy_once  # noqa: E402

TARGET_EXTRINSICS_PER_S = 200.0
TARGET_EPOCH_MS = 100.0
DEV = ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve", "//Ferdie")


def random_graph(n: int, num_validators: int, seed: int) -> list[NeuronState]:
    """Validators 0..k-1 with stake, each weighting a random 80% of the miners; bonds prefilled."""
    rng = random.Random(seed)
    neurons = []
    for uid in range(n):
        validator = uid < num_validators
        weights = bonds = []
        if validator:
            miners = rng.sample(range(num_validators, n), int(0.8 * (n - num_validators)))
            weights = [(m, rng.randint(1, 65535)) for m in sorted(miners)]
            bonds = [(m, rng.randint(0, 30000)) for m, _ in weights]
        neurons.append(NeuronState(stake=rng.randint(1000, 100_000) * 10**9 if validator else rng.randint(0, 10**9),
                                   last_update=990, registered_at=rng.randint(0, 500), permit=validator,
                                   weights=weights, bonds=bonds))
    return neurons


def bench_epoch(repeats: int, seed: int) -> dict[str, float]:
    neurons = random_graph(256, 64, seed)
    params = YumaParams(max_validators=64, activity_cutoff=5000)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        yuma_epoch(neurons, block=1000, last_step_block=640, tempo=360, rao_emission=360 * 10**9, params=params,
                   owner_uid=0)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"epoch_ms_256": statistics.median(times), "epoch_ms_256_max": max(times)}


def bench_verify(count: int) -> float:
    """Raw sr25519 verifications per second of a typical extrinsic payload (the node's floor cost)."""
    kp = Keypair.create_from_uri("//Alice")
    payload = canonical_json({"call": "transfer", "args": {"dest": kp.ss58_address, "amount": 1}, "signer":
                              kp.ss58_address, "nonce": 7, "genesis": "0" * 64})
    sig = kp.sign(payload)
    public = Keypair(ss58_address=kp.ss58_address)
    t0 = time.perf_counter()
    for _ in range(count):
        public.verify(payload, sig)
    return count / (time.perf_counter() - t0)


def bench_extrinsics(total: int, num_threads: int, block_time: float, batch: int) -> dict[str, float]:
    """Fire `total` signed transfers from `num_threads` threads (one dev account each) without waiting, then
    wait until every one is in a block. Rate = extrinsics / (first send .. block that holds the last).
    batch = 1: one HTTP request per extrinsic (many independent clients); > 1: POST /extrinsics batches."""
    with tempfile.TemporaryDirectory(prefix="bench_chain_") as tmp, \
            start_localnet_process(Path(tmp) / "chain.sqlite", block_time=block_time) as (endpoint, _):
        client = LocalnetClient(endpoint)
        client.connect()
        sink = Keypair.create_from_uri("//bench-sink").ss58_address
        senders = [Keypair.create_from_uri(DEV[i % len(DEV)]) for i in range(num_threads)]
        per_thread = total // num_threads
        errors: list[str] = []

        def fire(kp: Keypair) -> None:
            args = {"dest": sink, "amount": 1000}
            for start in range(0, per_thread, batch):
                size = min(batch, per_thread - start)
                results = client.submit_batch([(kp, "transfer", args)] * size, wait=False) if batch > 1 else \
                    [client.submit(kp, "transfer", args, wait=False)]
                errors.extend(r.error or "?" for r in results if not r.ok)

        threads = [threading.Thread(target=fire, args=(kp,)) for kp in senders]
        start_block = client.block()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted_s = time.perf_counter() - t0
        expected = per_thread * num_threads - len(errors)
        deadline = time.time() + 120
        while client.account(sink)["balance_rao"] < expected * 1000 and time.time() < deadline:
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        landed = client.account(sink)["balance_rao"] // 1000
        blocks = client.block() - start_block
        client.close()
    return {"extrinsics_per_s": landed / elapsed, "submit_per_s": per_thread * num_threads / submitted_s,
            "extrinsics_landed": landed, "extrinsics_rejected": len(errors), "blocks_used": blocks,
            "extrinsics_wall_s": elapsed}


def _copier_subnet(client: LocalnetClient, num_miners: int, cr: bool, tempo: int) -> tuple[int, dict]:
    alice, owner = Keypair.create_from_uri("//Alice"), Keypair.create_from_uri("//cp-owner")
    client.transfer(alice, owner.ss58_address, 2000.0).raise_for_error()
    netuid = client.register_network(owner, Keypair.create_from_uri("//cp-owner-hk").ss58_address)
    for name, value in {"tempo": tempo, "weights_rate_limit": 1, "commit_reveal_weights_enabled": cr,
                        "commit_reveal_period": 1}.items():
        client.set_hyperparameter(alice, netuid, name, value).raise_for_error()
    client.start_call(owner, netuid).raise_for_error()
    keys = {name: Keypair.create_from_uri(f"//cp-{name}") for name in ("honest", "copier")}
    for i in range(num_miners):
        client.burned_register(Keypair.create_from_uri("//Bob"), Keypair.create_from_uri(f"//cp-m{i}").ss58_address,
                               netuid).raise_for_error()
    for kp in keys.values():
        client.burned_register(alice, kp.ss58_address, netuid).raise_for_error()
        client.add_stake(alice, kp.ss58_address, netuid, 1000.0).raise_for_error()
    return netuid, keys


def bench_copier(epochs: int, warmup: int, cr: bool, block_time: float, seed: int, tempo: int = 10,
                 num_miners: int = 8) -> dict[str, float]:
    """Dividends per stake of an honest validator and a weight copier over `epochs` epochs after `warmup`."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench_copier_") as tmp, \
            start_localnet_process(Path(tmp) / "chain.sqlite", block_time=block_time) as (endpoint, _):
        client = LocalnetClient(endpoint)
        client.connect()
        netuid, keys = _copier_subnet(client, num_miners, cr, tempo)
        mg = client.metagraph(netuid)
        miners = [u for u in mg.uids if mg.hotkeys[u] not in {k.ss58_address for k in keys.values()} and u != 0]
        uid = {name: mg.uid_of(kp.ss58_address) for name, kp in keys.items()}
        quality = [rng.random() for _ in miners]
        per_stake: dict[str, list[float]] = {"honest": [], "copier": []}
        last_epoch = client.subnets()[str(netuid)]["epoch_index"]
        for epoch in range(warmup + epochs):
            quality = [0.5 * q + 0.5 * rng.random() for q in quality]  # miners drift from tempo to tempo
            client.set_weights(keys["honest"], netuid, miners, quality)
            copy_once(client, keys["copier"], netuid)
            while client.subnets()[str(netuid)]["epoch_index"] == last_epoch:
                time.sleep(block_time / 2)
            last_epoch += 1
            mg = client.metagraph(netuid)
            if epoch >= warmup:
                for name, u in uid.items():
                    per_stake[name].append(mg.emission[u] / mg.stake[u] if mg.stake[u] > 0 else 0.0)
        client.close()
    honest, copier = statistics.fmean(per_stake["honest"]), statistics.fmean(per_stake["copier"])
    return {"honest_per_stake": honest, "copier_per_stake": copier, "copier_vs_honest": copier / honest}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extrinsics", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--block-time", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=50, help="extrinsics per POST /extrinsics in the batched run")
    ap.add_argument("--epoch-repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copier-epochs", type=int, default=0,
                    help="measure a weight copier vs an honest validator over this many epochs (CR off and on) "
                         "instead of the throughput run")
    ap.add_argument("--copier-warmup", type=int, default=10, help="epochs before the copier measurement counts")
    args = ap.parse_args(argv)
    if args.copier_epochs:
        result = {f"cr_{'on' if cr else 'off'}": bench_copier(args.copier_epochs, args.copier_warmup, cr, 0.1,
                                                               args.seed) for cr in (False, True)}
        for key, r in result.items():
            print(f"{key}: honest {r['honest_per_stake']:.5f} / copier {r['copier_per_stake']:.5f} alpha per "
                  f"alpha staked per epoch; copier/honest {r['copier_vs_honest']:.3f}")
        print(json.dumps(result))
        return 0
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    epoch = bench_epoch(args.epoch_repeats, args.seed)
    print(f"yuma_epoch 256 uids / 64 validators: median {epoch['epoch_ms_256']:.1f} ms, "
          f"max {epoch['epoch_ms_256_max']:.1f} ms (target < {TARGET_EPOCH_MS:.0f} ms)")
    verify_per_s = bench_verify(2000)
    print(f"raw sr25519 verify: {verify_per_s:.0f}/s")
    ext = bench_extrinsics(args.extrinsics, args.threads, args.block_time, batch=1)
    print(f"node: {ext['extrinsics_landed']} signed transfers, one request each, from {args.threads} threads in "
          f"{ext['extrinsics_wall_s']:.2f} s over {ext['blocks_used']} blocks of {args.block_time} s: "
          f"{ext['extrinsics_per_s']:.0f}/s (submission alone {ext['submit_per_s']:.0f}/s; "
          f"target {TARGET_EXTRINSICS_PER_S:.0f}/s)")
    batched = bench_extrinsics(args.extrinsics, args.threads, args.block_time, batch=args.batch)
    print(f"node: same in batches of {args.batch}: {batched['extrinsics_per_s']:.0f}/s "
          f"over {batched['blocks_used']} blocks")
    result = {**{k: round(v, 3) for k, v in epoch.items()},
              "epoch_vs_target_ratio": round(epoch["epoch_ms_256"] / TARGET_EPOCH_MS, 3),
              **{k: round(v, 2) if isinstance(v, float) else v for k, v in ext.items()},
              "extrinsics_vs_target_ratio": round(ext["extrinsics_per_s"] / TARGET_EXTRINSICS_PER_S, 2),
              "extrinsics_per_s_batched": round(batched["extrinsics_per_s"], 2),
              "batched_landed": batched["extrinsics_landed"],
              "sr25519_verify_per_s": round(verify_per_s),
              "extrinsics_vs_raw_verify_ratio": round(ext["extrinsics_per_s"] / verify_per_s, 4),
              "threads": args.threads, "block_time_s": args.block_time}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
