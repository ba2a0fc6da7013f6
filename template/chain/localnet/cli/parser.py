"""Argument parsing of the localnet CLI: btcli-shaped command groups, their flags, and the old command names.

Groups: `wallet create|list|balance|overview|transfer|fund`, `subnet list|create|start|register|hyperparameters|
metagraph` (also `subnets`), `sudo set|get`, `stake add|remove|list`, `weights set`, plus `serve` and `verify`.
The flat names of earlier versions (`create-subnet`, `set-hparam`, `stake --unstake`, ...) are rewritten to
these before parsing; they never asked for confirmation, so they imply --yes (and `stake` implies --unsafe).
Every parse error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from template.chain.localnet.cli.context import DEFAULT_ENDPOINT, DEFAULT_WALLET_PATH

PROG = "python -m template.chain.localnet"

# old flat name -> (group, command, implies --yes)
LEGACY = {
    "wallet-create": ("wallet", "create", False),
    "fund": ("wallet", "fund", False),
    "create-subnet": ("subnet", "create", True),
    "start-call": ("subnet", "start", False),
    "register": ("subnet", "register", True),
    "set-hparam": ("sudo", "set", True),
    "metagraph": ("subnet", "metagraph", False),
    "hyperparameters": ("subnet", "hyperparameters", False),
}
STAKE_COMMANDS = ("add", "remove", "list")
# btcli's default rate tolerance: the pool price may move 5% against you before a safe stake is refused
DEFAULT_RATE_TOLERANCE = 0.05
SUBTENSOR_NETWORKS = ("finney", "test", "archive")
ALL = "all"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a mistake as one line (`error: ...`) instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def rewrite_legacy(argv: list[str]) -> list[str]:
    """Map the old flat command names onto the command groups (see the module docstring)."""
    if not argv:
        return argv
    head, rest = argv[0], argv[1:]
    if head in LEGACY:
        group, cmd, implies_yes = LEGACY[head]
        return [group, cmd, *rest, *(["--yes"] if implies_yes else [])]
    if head == "stake" and (not rest or rest[0] not in (*STAKE_COMMANDS, "-h", "--help")):
        cmd = "remove" if "--unstake" in rest else "add"
        return ["stake", cmd, *[a for a in rest if a != "--unstake"], "--yes", "--unsafe"]
    return argv


def _parsed(text: str, cast: type, what: str, ok, rule: str) -> Any:
    """`cast(text)` if it parses and `ok` holds, else an argparse error naming `what` was expected or `rule`."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def positive_amount(text: str) -> float:
    """An amount of TAO or alpha: a finite number > 0."""
    return float(_parsed(text, float, "a number of TAO/alpha", lambda v: math.isfinite(v) and v > 0,
                         "a finite number > 0"))


def amount_or_all(text: str) -> float | str:
    """An amount of TAO or alpha, or `all` (btcli's `--amount all`)."""
    return ALL if text.strip().lower() == ALL else positive_amount(text)


def rate_tolerance(text: str) -> float:
    """btcli's rate tolerance: a fraction in [0, 1) (0.05 = the price may move 5%)."""
    return float(_parsed(text, float, "a fraction such as 0.05 (5%)", lambda v: math.isfinite(v) and 0 <= v < 1,
                         "a fraction in [0, 1)"))


def netuid(text: str) -> int:
    return int(_parsed(text, int, "a subnet number", lambda v: 0 <= v <= 65535, "in [0, 65535]"))


def _endpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subtensor.chain_endpoint", "--chain", dest="endpoint", default=None,
                   help=f"URL of the localnet node (default {DEFAULT_ENDPOINT}; 'local' means that)")
    p.add_argument("--subtensor.network", "--network", dest="network", default=None,
                   help="btcli's network: 'local' (the localnet node at the default endpoint) or a node's http(s) URL; "
                        "finney, test and archive are subtensor networks, which this CLI does not drive")


def resolve_endpoint(network: str | None, endpoint: str | None) -> str:
    """The node URL from btcli's two flags: --subtensor.chain_endpoint wins, then --subtensor.network.

    Raises ValueError for a subtensor network (finney, test, archive, a ws(s):// URL): this CLI drives the localnet.
    """
    for value in (endpoint, network):
        if value is None:
            continue
        v = value.strip()
        if v.lower() in ("local", "localnet"):
            return DEFAULT_ENDPOINT
        if v.lower() in SUBTENSOR_NETWORKS or v.startswith(("ws://", "wss://")):
            raise ValueError(f"{value!r} is a subtensor network: this CLI drives the localnet only; use btcli there "
                             "(scripts/publish_run.py publishes a run's hparams and dataset on any network)")
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"network must be local or a localnet node's http(s):// URL, got {value!r}")
        return v
    return DEFAULT_ENDPOINT


def _wallet(p: argparse.ArgumentParser, hotkey: bool = True) -> None:
    p.add_argument("--wallet.name", "--wallet-name", dest="wallet_name", default="default", help="wallet (coldkey) name")
    if hotkey:
        p.add_argument("--wallet.hotkey", "--wallet-hotkey", "--hotkey", dest="wallet_hotkey", default="default",
                       help="hotkey name")
    else:
        p.set_defaults(wallet_hotkey="default")
    p.add_argument("--wallet.path", "--wallet-path", dest="wallet_path", default=DEFAULT_WALLET_PATH,
                   help="wallets folder")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def _yes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", "-y", "--no-prompt", "--no_prompt", dest="yes", action="store_true",
                   help="do not ask for confirmation (btcli's -y / --no-prompt)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="show what would be sent, send nothing (exit 0)")


def _netuid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--netuid", type=netuid, required=True, help="subnet number")


def _cmd(sub, name: str, help_text: str, *, endpoint: bool = True, wallet: str | None = None, json: bool = True,
         yes: bool = False, net: bool = False) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    if endpoint:
        _endpoint(p)
    if wallet:
        _wallet(p, hotkey=wallet == "hotkey")
    if net:
        _netuid(p)
    if json:
        _json(p)
    if yes:
        _yes(p)
    return p


def _group(sub, name: str, help_text: str, aliases: tuple[str, ...] = ()):
    g = sub.add_parser(name, help=help_text, aliases=list(aliases))
    return g.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=OneLineParser)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog=PROG, description="Command line of the localnet chain, shaped like btcli "
                                              "(docs/subnet-owner.md).")
    sub = ap.add_subparsers(dest="group", required=True, metavar="COMMAND", parser_class=OneLineParser)
    _node_commands(sub)
    _wallet_commands(_group(sub, "wallet", "keys, balances, transfers, what a coldkey holds and earns"))
    _subnet_commands(_group(sub, "subnet", "create, list, inspect and join subnets", ("subnets",)))
    _sudo_commands(_group(sub, "sudo", "subnet hyperparameters (the owner's, or root's with --sudo)"))
    _stake_commands(_group(sub, "stake", "TAO <-> alpha through a subnet's pool"))
    w = _group(sub, "weights", "weights of a validator hotkey (for testing)")
    p = _cmd(w, "set", "set_weights from the wallet's hotkey", wallet="hotkey", net=True)
    p.add_argument("--uids", nargs="+", required=True, help="uids, e.g. 1 2 3 or 1,2,3")
    p.add_argument("--weights", nargs="+", required=True, help="one weight >= 0 per uid (normalized by the client)")
    p.add_argument("--version-key", type=int, default=0, help="weights version key (weights_version)")
    return ap


def _node_commands(sub) -> None:
    p = _cmd(sub, "serve", "run a node (blocks on a timer, SQLite-persisted, HTTP on 127.0.0.1)", endpoint=False,
             json=False)
    p.add_argument("--db", type=Path, required=True,
                   help="SQLite file holding the chain; resumed on every start (an empty, foreign or damaged file is "
                        "an error)")
    p.add_argument("--new", action="store_true",
                   help="start a new chain in --db, which must not exist yet (the genesis flags below apply)")
    p.add_argument("--port", type=int, default=int(DEFAULT_ENDPOINT.rsplit(":", 1)[1]))
    p.add_argument("--block-time", type=positive_amount, default=1.0, help="seconds per block (finney: 12)")
    p.add_argument("--dev-balance", type=float, default=1_000_000.0, help="TAO for each //Alice.. dev account")
    p.add_argument("--min-lock", type=float, default=1000.0, help="minimum subnet lock cost in TAO")
    p.add_argument("--network-rate-limit", type=int, default=0, help="blocks between subnet creations")
    p.add_argument("--stake-threshold", type=float, default=0.0, help="alpha needed to set weights")
    p.add_argument("--owner-hparam-rate-limit", type=int, default=0,
                   help="tempos between two owner changes of one hyperparameter (mainnet 2)")
    p.add_argument("--admin-freeze-window", type=int, default=10,
                   help="blocks before an epoch in which owners may not change hyperparameters")
    p.add_argument("--pool-limit", type=int, default=50_000, help="extrinsics the pool holds (substrate's --pool-limit)")
    p.add_argument("--pool-future-limit", type=int, default=2048,
                   help="of those, how many may wait behind a nonce gap (their own budget, oldest evicted first)")
    p.add_argument("--log-level", default="INFO", help="loguru level (DEBUG logs every block with extrinsics)")
    p = _cmd(sub, "verify", "replay a node database from genesis; name the first block that differs and why",
             endpoint=False)
    p.add_argument("--db", type=Path, required=True, help="the node's SQLite file (read only)")


def _wallet_commands(w) -> None:
    # takes the endpoint flag only so that old scripts passing it everywhere keep working; it is not used
    _cmd(w, "create", "create a coldkey and hotkey without a password (local use)", wallet="hotkey")
    _cmd(w, "list", "wallets under --wallet.path", endpoint=False, wallet="coldkey")
    p = _cmd(w, "balance", "free TAO, stake value and total of a coldkey", wallet="coldkey")
    p.add_argument("--ss58", help="any coldkey address instead of the wallet's")
    _cmd(w, "overview", "balance, each hotkey's uid, stake and emission, and the owner income of owned subnets",
         wallet="coldkey")
    p = _cmd(w, "transfer", "send TAO from the wallet's coldkey", wallet="coldkey", yes=True)
    p.add_argument("--dest", required=True, help="SS58 address receiving the TAO")
    p.add_argument("--amount", type=positive_amount, required=True, help="TAO")
    p = _cmd(w, "fund", "send TAO from a dev account (//Alice) to the wallet's coldkey or --dest", wallet="coldkey")
    p.add_argument("--dest", help="SS58 address (default: the wallet's coldkey)")
    p.add_argument("--amount", type=positive_amount, required=True, help="TAO")
    p.add_argument("--from-uri", default="//Alice", help="dev account paying")


def _subnet_commands(s) -> None:
    _cmd(s, "list", "every subnet: owner, uids, tempo, pool, price, burn, owner cut; and the next lock cost")
    p = _cmd(s, "create", "register_network: lock TAO, the wallet's coldkey owns it, its hotkey is uid 0",
             wallet="hotkey", yes=True)
    p.add_argument("--no-start", action="store_true", help="do not call start_call (emission stays off)")
    _cmd(s, "start", "start_call: start emission and staking", wallet="coldkey", net=True)
    _cmd(s, "register", "burned_register the wallet's hotkey (shows the burn first)", wallet="hotkey", net=True,
         yes=True)
    _cmd(s, "hyperparameters", "hyperparameters with units, who may set them, and ranges", net=True)
    _cmd(s, "metagraph", "uids, stake, incentive, dividends, emission, and the owner's income", net=True)


def _sudo_commands(s) -> None:
    p = _cmd(s, "set", "change a hyperparameter: shows current -> new, checks the range first", wallet="coldkey",
             net=True, yes=True)
    p.add_argument("--param", "--name", dest="param", required=True, help="name or alias (`sudo get` lists them)")
    p.add_argument("--value", required=True, help="integer in the parameter's unit, or true/false")
    p.add_argument("--sudo", action="store_true", help="sign with the chain's sudo key (root-only parameters)")
    p.add_argument("--sudo-uri", default="//Alice", help="the sudo key (the localnet's root is //Alice)")
    _cmd(s, "get", "same as `subnet hyperparameters`", net=True)


def _stake_commands(s) -> None:
    for name, what in (("add", "TAO to stake, or `all` (the free balance less a fee reserve)"),
                       ("remove", "alpha to unstake, or `all` (your whole stake on the hotkey)")):
        p = _cmd(s, name, f"{'buy' if name == 'add' else 'sell'} alpha; previews price and slippage", wallet="hotkey",
                 net=True, yes=True)
        amount = p.add_mutually_exclusive_group(required=True)
        amount.add_argument("--amount", type=amount_or_all, help=what)
        if name == "remove":
            amount.add_argument("--all", action="store_true", help="all of your stake on the hotkey")
        p.add_argument("--hotkey-ss58", "--hotkey-ss58-address", dest="hotkey_ss58",
                       help="stake on this hotkey address instead of the wallet's hotkey (--hotkey takes one too)")
        p.add_argument("--rate-tolerance", "--tolerance", "--slippage", "--slippage-tolerance", dest="tolerance",
                       type=rate_tolerance, default=DEFAULT_RATE_TOLERANCE,
                       help="btcli's rate tolerance: refuse when the pool price would move more than this fraction "
                            "against you (default 0.05 = 5%%)")
        p.add_argument("--unsafe", "--no-safe-staking", dest="unsafe", action="store_true",
                       help="send whatever the price move (btcli's --unsafe)")
    p = _cmd(s, "list", "the coldkey's stakes with their value", wallet="coldkey")
    p.add_argument("--ss58", help="any coldkey address instead of the wallet's")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = rewrite_legacy(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.group == "subnets":
        args.group = "subnet"
    if hasattr(args, "network"):
        try:
            args.endpoint = resolve_endpoint(args.network, args.endpoint)
        except ValueError as e:
            parser.error(str(e))
    return args
