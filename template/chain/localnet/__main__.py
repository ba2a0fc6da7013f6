"""Command line of the localnet, in the spirit of btcli.

    python -m template.chain.localnet serve --db runs/chain.sqlite --port 9946 --block-time 1
    python -m template.chain.localnet wallet-create --wallet.name owner --wallet.hotkey default
    python -m template.chain.localnet fund --wallet.name owner --amount 5000          # from //Alice
    python -m template.chain.localnet create-subnet --wallet.name owner --wallet.hotkey default
    python -m template.chain.localnet register --wallet.name miner0 --netuid 1
    python -m template.chain.localnet stake --wallet.name val0 --netuid 1 --amount 1000
    python -m template.chain.localnet set-hparam --wallet.name owner --netuid 1 --name tempo --value 20
    python -m template.chain.localnet metagraph --netuid 1
    python -m template.chain.localnet verify --db runs/chain.sqlite     # replay from genesis, check state roots
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_ENDPOINT = "http://127.0.0.1:9946"
DEFAULT_WALLET_PATH = "~/.bittensor/wallets"


def _add_common(p: argparse.ArgumentParser, wallet: bool = True) -> None:
    p.add_argument("--subtensor.chain_endpoint", dest="endpoint", default=DEFAULT_ENDPOINT,
                   help="URL of the localnet node")
    if wallet:
        p.add_argument("--wallet.name", dest="wallet_name", default="default", help="wallet (coldkey) name")
        p.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default", help="hotkey name")
        p.add_argument("--wallet.path", dest="wallet_path", default=DEFAULT_WALLET_PATH, help="wallets folder")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m template.chain.localnet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run a node (blocks on a timer, SQLite-persisted, HTTP on 127.0.0.1)")
    p.add_argument("--db", type=Path, required=True, help="SQLite file; reused on restart")
    p.add_argument("--port", type=int, default=9946)
    p.add_argument("--block-time", type=float, default=1.0, help="seconds per block (finney: 12)")
    p.add_argument("--dev-balance", type=float, default=1_000_000.0, help="TAO for each //Alice.. dev account")
    p.add_argument("--min-lock", type=float, default=1000.0, help="minimum subnet lock cost in TAO")
    p.add_argument("--network-rate-limit", type=int, default=0, help="blocks between subnet creations")
    p.add_argument("--stake-threshold", type=float, default=0.0, help="alpha needed to set weights")
    p.add_argument("--owner-hparam-rate-limit", type=int, default=0,
                   help="tempos between two owner changes of one hyperparameter (mainnet 2)")
    p.add_argument("--admin-freeze-window", type=int, default=10,
                   help="blocks before an epoch in which owners may not change hyperparameters")
    p.add_argument("--log-level", default="INFO", help="loguru level (DEBUG logs every block with extrinsics)")

    p = sub.add_parser("verify", help="replay a node database from genesis and check every state root")
    p.add_argument("--db", type=Path, required=True)

    p = sub.add_parser("wallet-create", help="create a wallet coldkey+hotkey without password (local use)")
    _add_common(p)
    p = sub.add_parser("fund", help="transfer TAO to a wallet's coldkey or an address")
    _add_common(p)
    p.add_argument("--dest", help="ss58 address (default: the wallet's coldkey)")
    p.add_argument("--amount", type=float, required=True, help="TAO")
    p.add_argument("--from-uri", default="//Alice", help="dev account paying")
    p = sub.add_parser("create-subnet", help="register a subnet (wallet coldkey owns it, hotkey is uid 0)")
    _add_common(p)
    p.add_argument("--no-start", action="store_true", help="do not call start_call (emission stays off)")
    p = sub.add_parser("start-call", help="start emission and staking on a subnet")
    _add_common(p)
    p.add_argument("--netuid", type=int, required=True)
    p = sub.add_parser("register", help="burned_register the wallet's hotkey")
    _add_common(p)
    p.add_argument("--netuid", type=int, required=True)
    p = sub.add_parser("stake", help="add (or with --unstake remove) stake on the wallet's hotkey")
    _add_common(p)
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--amount", type=float, required=True, help="TAO to stake (alpha to unstake)")
    p.add_argument("--unstake", action="store_true")
    p = sub.add_parser("set-hparam", help="owner: set a subnet hyperparameter")
    _add_common(p)
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--value", required=True, help="JSON value: 20, true, 900000")
    p = sub.add_parser("metagraph", help="print a subnet's metagraph (stake, incentive, dividends, emission)")
    _add_common(p, wallet=False)
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser("hyperparameters", help="print a subnet's hyperparameters")
    _add_common(p, wallet=False)
    p.add_argument("--netuid", type=int, required=True)
    return ap.parse_args(argv)


def _wallet(args: argparse.Namespace):
    from bittensor_wallet import Wallet

    return Wallet(name=args.wallet_name, hotkey=args.wallet_hotkey, path=str(Path(args.wallet_path).expanduser()))


def _client(args: argparse.Namespace):
    from template.chain.localnet.client import LocalnetClient

    client = LocalnetClient(args.endpoint, retry_s=5.0)
    client.connect()
    return client


def print_metagraph(mg, out=sys.stdout) -> None:
    out.write(f"netuid {mg.netuid} at block {mg.block}: {mg.n} uids, owner {mg.owner_hotkey}\n")
    out.write(f"{'uid':>4} {'hotkey':<50} {'stake':>12} {'permit':>6} {'incent.':>8} {'divs':>8} {'cons.':>8} "
              f"{'emission':>12} {'last_upd':>8} {'active':>6}\n")
    for uid in mg.uids:
        out.write(f"{uid:>4} {mg.hotkeys[uid]:<50} {mg.stake[uid]:>12.4f} {str(mg.validator_permit[uid]):>6} "
                  f"{mg.incentive[uid]:>8.4f} {mg.dividends[uid]:>8.4f} {mg.consensus[uid]:>8.4f} "
                  f"{mg.emission[uid]:>12.6f} {mg.last_update[uid]:>8} {str(mg.active[uid]):>6}\n")


def run_command(args: argparse.Namespace) -> int:
    from bittensor_wallet import Keypair

    if args.command == "serve":
        from loguru import logger

        from template.chain.localnet.node import serve

        logger.remove()
        logger.add(sys.stderr, level=args.log_level)
        from template.chain.localnet.state import RAO, Genesis

        genesis = Genesis(dev_balance_rao=int(args.dev_balance * RAO), min_lock_rao=int(args.min_lock * RAO),
                          network_rate_limit=args.network_rate_limit, stake_threshold_rao=int(args.stake_threshold * RAO),
                          owner_hparam_rate_limit_tempos=args.owner_hparam_rate_limit,
                          admin_freeze_window=args.admin_freeze_window, timestamp=time.time())
        serve(args.db, args.port, args.block_time, genesis)
        return 0
    if args.command == "verify":
        from template.chain.localnet.node import replay_chain

        report = replay_chain(args.db)
        print(json.dumps(report))
        return 0 if not report["mismatches"] else 1
    if args.command == "wallet-create":
        w = _wallet(args)
        # no password and no mnemonic on stdout: these are throwaway local keys
        if not w.coldkey_file.exists_on_device():
            w.create_new_coldkey(use_password=False, overwrite=False, suppress=True)
        if not w.hotkey_file.exists_on_device():
            w.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
        print(f"coldkey {w.coldkeypub.ss58_address}\nhotkey  {w.hotkey.ss58_address}")
        return 0
    client = _client(args)
    if args.command == "metagraph":
        mg = client.metagraph(args.netuid)
        print(json.dumps(mg.__dict__, indent=1)) if args.json else print_metagraph(mg)
        return 0
    if args.command == "hyperparameters":
        print(json.dumps(client.hyperparameters(args.netuid), indent=1))
        return 0
    w = _wallet(args)
    if args.command == "fund":
        dest = args.dest or w.coldkeypub.ss58_address
        res = client.transfer(Keypair.create_from_uri(args.from_uri), dest, args.amount).raise_for_error()
        print(f"sent {args.amount} TAO to {dest} in block {res.block}; balance {client.balance(dest):.4f} TAO")
    elif args.command == "create-subnet":
        netuid = client.register_network(w.coldkey, w.hotkey.ss58_address)
        if not args.no_start:
            client.start_call(w.coldkey, netuid).raise_for_error()
        print(f"created netuid {netuid} (owner hotkey {w.hotkey.ss58_address} is uid 0)")
    elif args.command == "start-call":
        res = client.start_call(w.coldkey, args.netuid).raise_for_error()
        print(f"netuid {args.netuid} started in block {res.block}")
    elif args.command == "register":
        res = client.burned_register(w.coldkey, w.hotkey.ss58_address, args.netuid).raise_for_error()
        uid = client.metagraph(args.netuid).uid_of(w.hotkey.ss58_address)
        print(f"registered {w.hotkey.ss58_address} as uid {uid} on netuid {args.netuid} in block {res.block}")
    elif args.command == "stake":
        call = client.remove_stake if args.unstake else client.add_stake
        res = call(w.coldkey, w.hotkey.ss58_address, args.netuid, args.amount).raise_for_error()
        stake = client.metagraph(args.netuid)
        uid = stake.uid_of(w.hotkey.ss58_address)
        total = stake.stake[uid] if uid is not None else 0.0
        print(f"{'unstaked' if args.unstake else 'staked'} in block {res.block}; hotkey stake {total:.4f} alpha")
    elif args.command == "set-hparam":
        value = json.loads(args.value)
        res = client.set_hyperparameter(w.coldkey, args.netuid, args.name, value).raise_for_error()
        print(f"{args.name} = {value!r} on netuid {args.netuid} in block {res.block}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from template.chain.base import ChainError

    args = parse_args(argv)
    try:
        return run_command(args)
    except ChainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
