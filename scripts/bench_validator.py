"""Validator scale benchmark (issue 18): one validator window against N miners' real uploads.

    python scripts/bench_validator.py --miners 8,32,128,256 [--sample 32] [--preset tiny] [--no-baseline]

Starts its own SeaweedFS server (loopback) with one bucket and read identity per synthetic miner, and
puts in each bucket a valid window-0 upload of the preset: a random sparse update on theta_0, compressed
with the run's codec, signed with the miner's own sr25519 key, with the manifest fields every node checks
(uid, receipt of its assigned samples, base fingerprint, codec, inner steps). Then, per N, a fresh Python
process (so peak RSS does not carry over) builds the real `Validator` (template/node/validator.py) on an
in-memory chain (tests/unit/fakes.py `FakeChain`: N miners, the validator as lead) reading the real
buckets through `PeerBuckets`, and runs `run_window` once: fetch (concurrent, within the fetch budget),
checks (admission, replays, copies, gather set), evaluation (the sample), aggregation (outer step,
record, mirrors, peer list). It reports the window's wall time and split, peak RSS and bytes fetched.

Two configurations per N in the same run: `sampled` (eval_sample_size = --sample) and, unless
--no-baseline, `all` (eval_sample_size = 0: every admitted miner evaluated, the behaviour before
issue 18). Ratios N_max / 32 (or the second N given) are printed for both. The last stdout line is
JSON: {"miners", "window_s", "peak_rss_mb", "fetch_s", "checks_s", "eval_s", "aggregate_s",
"bytes_fetched", "baseline": {...}, "ratios": {...}}, lists in the order of --miners.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NETUID = 1
NUM_SAMPLES = 16384  # synthetic token samples (>= 32 assigned per miner at N=256); the tail past HELDOUT_START is held out
HELDOUT_START = 15360


def bench_hparams(preset: str, sample: int, endpoint: str) -> Any:
    from template.protocol.config import HParams
    from template.protocol.model import get_preset

    cfg = get_preset(preset)
    return HParams(model_preset=preset, vocab_size=cfg.vocab_size, seq_len=min(cfg.max_seq_len, 128),
                   upload_grace_s=0.0, weights_interval=1, eval_sample_size=sample,
                   approved_storage_endpoints=(endpoint,))


def miner_keypair(i: int) -> Any:
    from bittensor_wallet import Keypair

    return Keypair.create_from_uri(f"//BenchMiner{i}")


def make_upload(hp: Any, gm: Any, i: int, uid: int) -> bytes:
    """Miner i's valid window-0 upload as uid `uid`: a random sparse update of theta_0, signed."""
    import torch

    from gauntlet.checks import expected_codec_field
    from template.protocol.artifacts import write_tensor_artifact
    from template.protocol.data import data_receipt, sample_ids
    from template.protocol.sparseloco import compress

    gen = torch.Generator().manual_seed(10_000 + i)
    delta = {n: torch.randn(s, generator=gen) * 1e-3 for n, s in gm.shapes().items()}
    wire, _ = compress(delta, None, gm.codec, hp.ef_beta)
    ids = sample_ids(uid, 0, hp.data_seed, hp.samples_per_window, HELDOUT_START)
    return write_tensor_artifact(wire, kind="gradient", window=0, keypair=miner_keypair(i), fields={
        "uid": uid, "base_fingerprint": gm.fingerprint(), "data_receipt": data_receipt(ids),
        "num_inner_steps": hp.inner_steps, "codec": expected_codec_field(hp)})


# -- the parent: server, buckets, uploads, one child per (N, configuration) ----------------------


def prepare(args: argparse.Namespace, work: Path, max_n: int, num_runs: int) -> tuple[Any, dict[str, Any]]:
    """Start SeaweedFS, create the buckets and uploads; returns (server, the spec children read)."""
    from storage.seaweed import SeaweedServer, admin_identity, neuron_identities

    admin = admin_identity()
    miners = {f"miner-{i}": neuron_identities(f"miner-{i}") for i in range(max_n)}
    validators = {f"validator-{r}": neuron_identities(f"validator-{r}") for r in range(num_runs)}
    identities = [admin] + [x for pair in (*miners.values(), *validators.values()) for x in pair]
    server = SeaweedServer(work / "seaweed", identities, extra_args=(f"-volume.max={max(256, 16 * max_n)}",))
    server.start()
    try:
        return server, write_uploads(args, work, server, admin, miners, validators, max_n)
    except BaseException:
        server.stop()
        raise


def write_uploads(args: argparse.Namespace, work: Path, server: Any, admin: Any, miners: dict[str, Any],
                  validators: dict[str, Any], max_n: int) -> dict[str, Any]:
    import torch

    from storage.s3 import S3Client
    from template.node.sync import GlobalModel
    from template.protocol import layout
    from tests.unit.fakes import synthetic_shards

    client = S3Client(server.endpoint, admin.access_key, admin.secret_key)
    for bucket in (*miners, *validators):
        client.ensure_bucket(bucket)
    hp = bench_hparams(args.preset, args.sample, server.endpoint)
    synthetic_shards(work / "data", hp, num_samples=NUM_SAMPLES, per_shard=512)
    gm = GlobalModel.initial(hp, torch.device("cpu"))
    t0 = time.perf_counter()
    sizes = []
    for i in range(max_n):
        data = make_upload(hp, gm, i, uid=2 + i)
        client.put(f"miner-{i}", layout.gradient_key(0), data)
        sizes.append(len(data))
    print(f"# {max_n} uploads of {sum(sizes) / max_n / 1024:.1f} KiB each written in {time.perf_counter() - t0:.1f} s",
          flush=True)
    spec = {"endpoint": server.endpoint, "data": str(work / "data"), "work": str(work), "preset": args.preset,
            "threads": args.threads,
            "miners": {b: [w.access_key, w.secret_key, r.access_key, r.secret_key] for b, (w, r) in miners.items()},
            "validators": {b: [w.access_key, w.secret_key, r.access_key, r.secret_key]
                           for b, (w, r) in validators.items()},
            "deadline": time.time() + 1.0}  # every upload is in; a child's window starts after it
    return spec


def run_child(spec_path: Path, n: int, sample: int, run: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", str(spec_path), "--child-n", str(n),
                          "--sample", str(sample), "--child-run", str(run)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench child (N={n}, sample={sample}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the child: one validator window ------------------------------------------------------------


def child(spec: dict[str, Any], n: int, sample: int, run: int) -> dict[str, Any]:
    import torch
    from loguru import logger

    torch.set_num_threads(spec["threads"])
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from gauntlet.ratings import Ratings
    from storage.credentials import BucketAccess
    from storage.peers import OwnBucket, PeerBuckets
    from storage.s3 import S3Client
    from template.node.neuron import WindowClock
    from template.node.state import ValidatorState
    from template.node.sync import GlobalModel
    from template.node.validator import Validator, ensure_peer_lists, run_window
    from template.protocol.config import NeuronConfig
    from template.protocol.data import TokenDataset
    from tests.unit.fakes import FakeChain

    hp = bench_hparams(spec["preset"], sample, spec["endpoint"])
    last_block = hp.blocks_per_window - 1  # window 0's last block: its timestamp is the deadline
    chain = FakeChain(netuid=NETUID, genesis_s=spec["deadline"] - last_block * 12.0)
    owner = miner_keypair(10**6)
    chain.register(owner.ss58_address, owner=True)
    vkey = miner_keypair(10**6 + 1 + run)
    vbucket = f"validator-{run}"
    vw, vs, vr, vrs = spec["validators"][vbucket]
    uid = chain.register(vkey.ss58_address, stake=10_000.0, permit=True)
    vaccess = BucketAccess(endpoint=spec["endpoint"], bucket=vbucket, access_key_id=vr, secret_access_key=vrs,
                           role="validator")
    chain.set_commitment(vkey, NETUID, vaccess.encode())
    for i in range(n):
        kp = miner_keypair(i)
        chain.register(kp.ss58_address)
        _, _, rk, rs = spec["miners"][f"miner-{i}"]
        chain.set_commitment(kp, NETUID, BucketAccess(endpoint=spec["endpoint"], bucket=f"miner-{i}", access_key_id=rk,
                                                      secret_access_key=rs).encode())
    peers = PeerBuckets(commitments=lambda: chain.commitments(NETUID))
    peers.configure(hp)
    fetched = {"bytes": 0, "objects": 0}
    plain_get = peers.get

    def counting_get(*a: Any, **kw: Any) -> Any:
        read = plain_get(*a, **kw)
        if read.ok and read.value is not None:
            fetched["bytes"] += len(read.value)
            fetched["objects"] += 1
        return read

    peers.get = counting_get  # type: ignore[method-assign]
    dataset = TokenDataset(sorted(Path(spec["data"]).glob("*.npy")), hp.seq_len)
    state_dir = Path(spec["work"]) / f"state-{run}"
    v = Validator(cfg=NeuronConfig(role="validator", netuid=NETUID, device="cpu"), hotkey=vkey, uid=uid,
                  chain=chain, clock=WindowClock(chain, hp), peers=peers,
                  bucket=OwnBucket(access=vaccess, client=S3Client(spec["endpoint"], vw, vs)), dataset=dataset,
                  num_train=HELDOUT_START, num_samples=NUM_SAMPLES,
                  gm=GlobalModel.initial(hp, torch.device("cpu")), device=torch.device("cpu"), state_dir=state_dir,
                  state=ValidatorState(ratings=Ratings(alpha=hp.compliance_alpha)))
    chain.advance_to(last_block + 1)
    ensure_peer_lists(v, [0], chain.metagraph(NETUID))
    stages = watch_stages()
    rss_before = rss_now_mb()
    start = time.perf_counter()
    row = run_window(v, 0)
    window_s = time.perf_counter() - start
    assert row is not None
    admitted = sum(1 for m in row["miners"].values() if m["reason"] is None)
    if admitted != n:
        reasons = sorted({m["reason"] for m in row["miners"].values() if m["reason"]})
        raise SystemExit(f"only {admitted} of {n} uploads admitted ({reasons})")
    return {"n": n, "sample": sample, "window_s": round(window_s, 3), "fetch_s": row["fetch/s"],
            "checks_s": row["time/checks_s"], "eval_s": row["time/eval_s"], "aggregate_s": row["time/aggregate_s"],
            "evaluated": row["eval/sampled"], "admitted": admitted, "bytes_fetched": fetched["bytes"],
            "objects_fetched": fetched["objects"], "rss_before_mb": round(rss_before, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "status": row["sync/status"], "rss_after_mb": stages}


def watch_stages() -> dict[str, float]:
    """RSS (MB) right after each step of the window, recorded by wrapping the steps `run_window` calls."""
    from template.node import validator as vm

    stages: dict[str, float] = {}
    for name in ("fetch_updates", "admit_all", "lead_gather", "score_updates", "apply_outer_step"):
        def wrapped(*a: Any, _step: Any = getattr(vm, name), _name: str = name, **kw: Any) -> Any:
            out = _step(*a, **kw)
            stages[_name] = round(rss_now_mb(), 1)
            return out
        setattr(vm, name, wrapped)
    return stages


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- report -------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title}")
    print("| miners | evaluated | window s | fetch s | checks s | eval s | aggregate s | peak RSS MB "
          "| RSS before MB | fetched MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['evaluated']} | {r['window_s']:.2f} | {r['fetch_s']:.2f} | {r['checks_s']:.2f} | "
              f"{r['eval_s']:.2f} | {r['aggregate_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | "
              f"{r['bytes_fetched'] / 2**20:.2f} |")


def ratio(rows: list[dict[str, Any]], key: str, ref_n: int) -> float | None:
    by_n = {r["n"]: r[key] for r in rows}
    top = max(by_n)
    return round(by_n[top] / by_n[ref_n], 3) if ref_n in by_n and by_n[ref_n] else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--miners", default="8,32,128,256", help="comma-separated miner counts N")
    parser.add_argument("--sample", type=int, default=32, help="eval_sample_size of the sampled configuration")
    parser.add_argument("--preset", default="tiny", help="model preset (template/protocol/model.py PRESETS)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each window process")
    parser.add_argument("--no-baseline", action="store_true", help="skip the evaluate-everyone configuration")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(Path(args.child).read_text()), args.child_n, args.sample, args.child_run)))
        return 0
    try:
        counts = [int(x) for x in args.miners.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--miners must be comma-separated integers, got {args.miners!r}")
    if not counts or min(counts) < 1 or args.sample < 0:
        parser.error("--miners needs counts >= 1 and --sample must be >= 0")
    configs = [("sampled", args.sample)] + ([] if args.no_baseline else [("all", 0)])
    with tempfile.TemporaryDirectory(prefix="bench-validator-") as tmp:
        work = Path(tmp)
        server, spec = prepare(args, work, max(counts), len(counts) * len(configs))
        try:
            spec_path = work / "spec.json"
            spec_path.write_text(json.dumps(spec))
            time.sleep(max(0.0, spec["deadline"] + 1.5 - time.time()))
            results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in configs}
            run = 0
            for n in counts:
                for name, sample in configs:
                    r = run_child(spec_path, n, sample, run)
                    run += 1
                    results[name].append(r)
                    print(f"# N={n} {name}: window {r['window_s']:.2f} s (fetch {r['fetch_s']:.2f}, checks "
                          f"{r['checks_s']:.2f}, eval {r['eval_s']:.2f} for {r['evaluated']}, aggregate "
                          f"{r['aggregate_s']:.2f}), peak RSS {r['peak_rss_mb']:.0f} MB; RSS after each step "
                          f"{r['rss_after_mb']} MB", flush=True)
        finally:
            server.stop()
    ref_n = 32 if 32 in counts else counts[min(1, len(counts) - 1)]
    for name, sample in configs:
        table(results[name], f"{name} (eval_sample_size={sample})")
    ratios = {f"{name}_{key}_{max(counts)}_vs_{ref_n}": ratio(results[name], key, ref_n)
              for name, _ in configs for key in ("window_s", "peak_rss_mb")}
    print("\nratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    sampled = results["sampled"]
    summary: dict[str, Any] = {key: [r[key] for r in sampled] for key in
                               ("window_s", "peak_rss_mb", "fetch_s", "checks_s", "eval_s", "aggregate_s",
                                "bytes_fetched", "evaluated")}
    summary = {"miners": counts, "sample": args.sample, "preset": args.preset, **summary, "ratios": ratios}
    if "all" in results:
        summary["baseline"] = {"eval_sample_size": 0, **{key: [r[key] for r in results["all"]] for key in
                                                         ("window_s", "peak_rss_mb", "eval_s", "evaluated")}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
