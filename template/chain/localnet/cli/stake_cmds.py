"""`stake add|remove|list`: TAO <-> alpha through the subnet's pool, with a slippage estimate and a tolerance.

The tolerance is checked on the quote just before sending (the localnet has no `add_stake_limit`): the pool can
move between the quote and the block, so the receipt prints what was actually received.
"""

from __future__ import annotations

import argparse
from typing import Any

from template.chain.localnet.cli import context as ctx
from template.chain.localnet.cli import pool
from template.chain.localnet.cli.output import (
    RAO,
    CliError,
    alpha,
    confirm,
    emit_json,
    short,
    table,
    tao,
    units,
)
from template.chain.localnet.client import tao_to_rao


def _target_hotkey(args: argparse.Namespace, w) -> str:
    """--hotkey-ss58 when given (staking to someone else's hotkey), else the wallet's hotkey."""
    if args.hotkey_ss58:
        return ctx.validate_ss58(args.hotkey_ss58, "--hotkey-ss58")
    return ctx.hotkey_ss58(w)


def _check_tolerance(args: argparse.Namespace, slippage: float, action: str) -> None:
    if args.unsafe or slippage <= args.tolerance:
        return
    raise CliError(f"{action} would lose {slippage:.2%} to slippage, above --tolerance {args.tolerance:g} "
                   f"({args.tolerance:.2%}); use a smaller amount, raise --tolerance, or pass --unsafe")


def _held(c, coldkey: str, hotkey: str, netuid: int) -> int:
    return sum(s["alpha_rao"] for s in c.account(coldkey)["stakes"] if s["netuid"] == netuid and s["hotkey"] == hotkey)


def _stake_context(args: argparse.Namespace) -> tuple[Any, str, Any, dict, str]:
    """(wallet, target hotkey, client, subnet info, coldkey ss58) of a stake command."""
    w = ctx.wallet(args, hotkey=not args.hotkey_ss58)
    hotkey = _target_hotkey(args, w)
    c = ctx.client(args)
    return w, hotkey, c, ctx.subnet(c, args.netuid), ctx.coldkey_ss58(w)


def cmd_add(args: argparse.Namespace) -> int:
    """add_stake: buy alpha with TAO onto a hotkey (the wallet's own, or --hotkey-ss58 to nominate)."""
    w, hotkey, c, sub, cold = _stake_context(args)
    amount = tao_to_rao(args.amount)
    balance = c.account(cold)["balance_rao"]
    if amount > balance:
        raise CliError(f"cannot stake {tao(amount)}: the coldkey {cold} holds {tao(balance)} (NotEnoughBalanceToStake)")
    if not sub["first_emission_block"]:
        raise CliError(f"netuid {args.netuid} is not started yet: staking opens after `subnet start` (SubtokenDisabled)")
    expected, slip = pool.quote_buy(sub, amount), pool.slippage_buy(sub, amount)
    if not args.json:
        print(f"stake {tao(amount)} on {hotkey} (netuid {args.netuid}): price {pool.price(sub):.6f} TAO/alpha, "
              f"expect {alpha(expected)}, slippage {slip:.2%} (incl. 0.05% pool fee)")
    _check_tolerance(args, slip, f"staking {tao(amount)}")
    confirm(f"Stake {tao(amount)} for about {alpha(expected)}?", args.yes)
    held_before = _held(c, cold, hotkey, args.netuid)
    res = ctx.check(c.add_stake(ctx.coldkey(w), hotkey, args.netuid, args.amount))
    received = _held(c, cold, hotkey, args.netuid) - held_before
    hotkey_stake = _hotkey_stake(c, args.netuid, hotkey)
    if args.json:
        emit_json({"netuid": args.netuid, "hotkey": hotkey, "paid_tao": units(amount),
                   "received_alpha": units(received), "expected_alpha": units(expected), "slippage": slip,
                   "block": res.block, "hotkey_stake_alpha": units(hotkey_stake)})
    else:
        print(f"staked {tao(amount)} in block {res.block}: received {alpha(received)} "
              f"(effective price {amount / max(received, 1):.6f} TAO/alpha); hotkey stake {alpha(hotkey_stake)}")
    return 0


def _hotkey_stake(c, netuid: int, hotkey: str) -> int:
    mg = c.read(f"/metagraph/{netuid}")
    return mg["stake_rao"][mg["hotkeys"].index(hotkey)] if hotkey in mg["hotkeys"] else 0


def cmd_remove(args: argparse.Namespace) -> int:
    """remove_stake: sell alpha (--amount, or --all) for TAO back to the coldkey."""
    w, hotkey, c, sub, cold = _stake_context(args)
    held = _held(c, cold, hotkey, args.netuid)
    amount = held if args.all else tao_to_rao(args.amount)
    if amount <= 0 or amount > held:
        raise CliError(f"cannot unstake {alpha(amount)}: the coldkey holds {alpha(held)} on {hotkey} in netuid "
                       f"{args.netuid} (NotEnoughStakeToWithdraw)")
    expected, slip = pool.quote_sell(sub, amount), pool.slippage_sell(sub, amount)
    if not args.json:
        print(f"unstake {alpha(amount)} from {hotkey} (netuid {args.netuid}): price {pool.price(sub):.6f} "
              f"TAO/alpha, expect {tao(expected)}, slippage {slip:.2%} (incl. 0.05% pool fee)")
    _check_tolerance(args, slip, f"unstaking {alpha(amount)}")
    confirm(f"Unstake {alpha(amount)} for about {tao(expected)}?", args.yes)
    before = c.account(cold)["balance_rao"]
    res = ctx.check(c.remove_stake(ctx.coldkey(w), hotkey, args.netuid, amount / RAO))
    after = c.account(cold)["balance_rao"]
    left = _held(c, cold, hotkey, args.netuid)
    if args.json:
        emit_json({"netuid": args.netuid, "hotkey": hotkey, "sold_alpha": units(amount),
                   "received_tao": units(after - before), "expected_tao": units(expected), "slippage": slip,
                   "block": res.block, "stake_left_alpha": units(left), "balance_tao": units(after)})
    else:
        print(f"unstaked {alpha(amount)} in block {res.block}: received {tao(after - before)} (net of the "
              f"transaction fee); balance {tao(after)}, your stake left on this hotkey {alpha(left)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """The coldkey's stakes: per netuid and hotkey, alpha held, price, value if sold now."""
    ss58 = ctx.validate_ss58(args.ss58, "--ss58") if args.ss58 else \
        ctx.coldkey_ss58(ctx.wallet(args, coldkey=False, hotkey=False))
    c = ctx.client(args)
    subnets = c.subnets()
    rows = []
    for s in c.account(ss58)["stakes"]:
        sub = subnets[str(s["netuid"])]
        rows.append({"netuid": s["netuid"], "hotkey": s["hotkey"], "alpha": units(s["alpha_rao"]),
                     "price_tao_per_alpha": pool.price(sub), "value_tao": units(pool.quote_sell(sub, s["alpha_rao"]))})
    if args.json:
        emit_json({"coldkey": ss58, "stakes": rows})
        return 0
    table(["netuid", "hotkey", "stake", "price (TAO/alpha)", "value if sold"],
          [[r["netuid"], short(r["hotkey"], 12), alpha(r["alpha"] * RAO), r["price_tao_per_alpha"],
            tao(r["value_tao"] * RAO)] for r in rows], title=f"stakes of {ss58}")
    total = sum(r["value_tao"] for r in rows)
    print(f"total value {tao(total * RAO)}")
    return 0
