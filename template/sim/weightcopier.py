"""A weight-copying validator for the simulation: it never evaluates a miner, it sets the weights that the
biggest other validator has visibly on chain.

    python -m template.sim.weightcopier --wallet.name copier --wallet.hotkey default --wallet.path W \
        --netuid 1 --subtensor.network local --subtensor.chain_endpoint URL [--interval_blocks N]

Other neuron flags (storage, state dirs, ...) are accepted and ignored, so scripts/localnet.py can launch it
with a validator's command line. With commit-reveal on, what it sees is the leader's last *revealed* row, one
reveal period old; with it off, it sees the leader's current row. `scripts/bench_chain.py --copier-epochs`
measures what that difference does to its dividends per stake.
"""

from __future__ import annotations

import argparse
import sys
import time

from bittensor_wallet import Keypair
from loguru import logger

from template.chain import make_chain
from template.chain.base import Chain, ChainError, Metagraph


def copy_target(mg: Metagraph, my_hotkey: str) -> tuple[int, list[int], list[float]] | None:
    """(leader uid, uids, weights) of the highest-stake validator other than `my_hotkey` that has a visible
    weight row with a positive entry; None when there is none."""
    candidates = [uid for uid in mg.uids if mg.hotkeys[uid] != my_hotkey and mg.weights.get(uid)
                  and any(w > 0 for _, w in mg.weights[uid])]
    if not candidates:
        return None
    leader = max(candidates, key=lambda uid: (mg.stake[uid], -uid))
    row = [(u, w) for u, w in mg.weights[leader] if w > 0]
    return leader, [u for u, _ in row], [w for _, w in row]


def copy_once(chain: Chain, hotkey: Keypair, netuid: int) -> str:
    """Read the metagraph and set the leader's visible row as our weights; returns what happened (for logs)."""
    mg = chain.metagraph(netuid)
    target = copy_target(mg, hotkey.ss58_address)
    if target is None:
        return "nothing visible to copy"
    leader, uids, weights = target
    res = chain.set_weights(hotkey, netuid, uids, weights)
    return f"copied uid {leader} ({len(uids)} weights): {'ok' if res.ok else res.error}"


def run(chain: Chain, hotkey: Keypair, netuid: int, interval_blocks: int, poll_s: float = 1.0) -> None:
    """Copy every `interval_blocks` blocks until interrupted; chain errors are logged and retried next time."""
    last = -interval_blocks
    while True:
        try:
            block = chain.block()
            if block - last >= interval_blocks:
                logger.info(f"block {block}: {copy_once(chain, hotkey, netuid)}")
                last = block
        except ChainError as e:
            logger.warning(f"chain unavailable, retrying: {e}")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wallet.name", dest="wallet_name", required=True)
    ap.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default")
    ap.add_argument("--wallet.path", dest="wallet_path", default="~/.bittensor/wallets")
    ap.add_argument("--netuid", type=int, required=True)
    ap.add_argument("--subtensor.network", dest="network", default="local")
    ap.add_argument("--subtensor.chain_endpoint", dest="endpoint", default=None)
    ap.add_argument("--interval_blocks", type=int, default=10, help="blocks between two copies")
    args, _ignored = ap.parse_known_args(argv)
    from bittensor_wallet import Wallet

    hotkey = Wallet(name=args.wallet_name, hotkey=args.wallet_hotkey, path=args.wallet_path).hotkey
    chain = make_chain(args.network, args.endpoint)
    try:
        chain.connect()
        run(chain, hotkey, args.netuid, args.interval_blocks)
    except ChainError as e:
        logger.error(f"weightcopier: {e}")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
