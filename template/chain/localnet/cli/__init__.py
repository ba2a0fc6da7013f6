"""Command line of the localnet, shaped like btcli (see docs/subnet-owner.md for a full session).

    python -m template.chain.localnet serve --db runs/chain.sqlite --new --port 9946   # a new chain; later starts drop --new
    python -m template.chain.localnet wallet create --wallet.name owner
    python -m template.chain.localnet wallet fund --wallet.name owner --amount 5000        # from //Alice
    python -m template.chain.localnet subnet create --wallet.name owner                    # shows the lock cost
    python -m template.chain.localnet subnet register --wallet.name miner0 --netuid 1      # shows the burn
    python -m template.chain.localnet stake add --wallet.name val0 --netuid 1 --amount 100 # shows slippage
    python -m template.chain.localnet sudo set --wallet.name owner --netuid 1 --param immunity_period --value 100
    python -m template.chain.localnet subnet metagraph --netuid 1                          # owner cut included
    python -m template.chain.localnet wallet overview --wallet.name owner
    python -m template.chain.localnet verify --db runs/chain.sqlite  # replay from genesis, name the first bad block

Every mistake ends in one line on stderr (`error: ...`) and a non-zero exit status: 2 for a command line that
does not parse or a node database that cannot be used (missing, empty, foreign, damaged: the line names the file
and what to do), 1 for anything refused (missing wallet, no node, unknown subnet, a chain error), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys
import time
from collections.abc import Callable

from template.chain.base import ChainError
from template.chain.localnet.cli.context import chain_error
from template.chain.localnet.cli.output import Aborted, CliError, DryRun, emit_json
from template.chain.localnet.cli.parser import parse_args
from template.chain.localnet.errors import ChainDatabaseError


def cmd_serve(args: argparse.Namespace) -> int:
    from loguru import logger

    from template.chain.localnet.api import serve
    from template.chain.localnet.state import RAO, Genesis

    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    genesis = Genesis(dev_balance_rao=int(args.dev_balance * RAO), min_lock_rao=int(args.min_lock * RAO),
                      network_rate_limit=args.network_rate_limit, stake_threshold_rao=int(args.stake_threshold * RAO),
                      owner_hparam_rate_limit_tempos=args.owner_hparam_rate_limit,
                      admin_freeze_window=args.admin_freeze_window, timestamp=time.time())
    serve(args.db, args.port, args.block_time, genesis, new=args.new,
          pool_limits=(args.pool_limit, args.pool_future_limit))
    return 0


# (group, command) -> "module:function" under template.chain.localnet.cli (imported on use: `--help` stays fast)
COMMANDS = {
    ("verify", None): "verify:cmd_verify",
    ("wallet", "create"): "wallet_cmds:cmd_create",
    ("wallet", "list"): "wallet_cmds:cmd_list",
    ("wallet", "balance"): "wallet_cmds:cmd_balance",
    ("wallet", "overview"): "wallet_cmds:cmd_overview",
    ("wallet", "transfer"): "wallet_cmds:cmd_transfer",
    ("wallet", "fund"): "wallet_cmds:cmd_fund",
    ("subnet", "list"): "subnet_cmds:cmd_list",
    ("subnet", "create"): "subnet_cmds:cmd_create",
    ("subnet", "start"): "subnet_cmds:cmd_start",
    ("subnet", "register"): "subnet_cmds:cmd_register",
    ("subnet", "hyperparameters"): "sudo_cmds:cmd_hyperparameters",
    ("subnet", "metagraph"): "subnet_cmds:cmd_metagraph",
    ("sudo", "set"): "sudo_cmds:cmd_set",
    ("sudo", "get"): "sudo_cmds:cmd_hyperparameters",
    ("stake", "add"): "stake_cmds:cmd_add",
    ("stake", "remove"): "stake_cmds:cmd_remove",
    ("stake", "list"): "stake_cmds:cmd_list",
    ("weights", "set"): "weights_cmds:cmd_set",
}


def _handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function running `args.group args.cmd`."""
    if args.group == "serve":
        return cmd_serve
    module, func = COMMANDS[(args.group, getattr(args, "cmd", None))].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), func)


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn every refusal into one line on stderr. Returns the exit status."""
    args = parse_args(argv)
    try:
        return _handler(args)(args)
    except DryRun as e:
        if getattr(args, "json", False):
            emit_json({"dry_run": True, "would": e.question})
        else:
            print(f"dry run, nothing sent: {e.question.rstrip('?')}")
        return 0
    except Aborted as e:
        print(str(e), file=sys.stderr)
        return 1
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ChainError as e:
        print(f"error: {chain_error(e)}", file=sys.stderr)
        return 1
    except ChainDatabaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error, ValueError) as e:
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
