"""`stake add|remove|list`: TAO <-> alpha through the subnet's pool, with btcli's rate tolerance.

The rate tolerance is btcli's: a safe stake (the default) is refused when the swap would move the pool price
more than that fraction against you (limit price spot x (1 + tolerance) to buy, x (1 - tolerance) to sell;
btcli passes that limit to subtensor's add_stake_limit / remove_stake_limit, which fail with SlippageTooHigh).
The localnet has no *_limit calls, so the CLI checks the limit on a quote just before sending; the pool can move
between the quote and the block. The receipt counts only what the swap bought: an epoch that pays dividends
onto the same stake in that block is reported apart.
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
from template.chain.localnet.cli.parser import ALL
from template.chain.localnet.client import tao_to_rao

# `stake add --amount all` keeps this much TAO free for the extrinsic fee (100,000 rao plus 1,000 per byte)
FEE_RESERVE_RAO = 1_000_000
# calls that move a subnet's pool reserves (the coinbase and the epoch never do on the localnet)
POOL_CALLS = frozenset({"add_stake", "remove_stake", "burned_register"})


def _target_hotkey(args: argparse.Namespace, w) -> str:
    """--hotkey-ss58 when given (staking to someone else's hotkey), else --hotkey as an address or name."""
    if args.hotkey_ss58:
        return ctx.validate_ss58(args.hotkey_ss58, "--hotkey-ss58")
    return ctx.target_hotkey(args, w)


def _check_tolerance(args: argparse.Namespace, move: float, action: str) -> None:
    if args.unsafe or move <= args.tolerance:
        return
    raise CliError(f"{action} would move the pool price {move:.2%}, above --rate-tolerance {args.tolerance:g} "
                   f"({args.tolerance:.2%}); use a smaller amount, raise --rate-tolerance, or pass --unsafe")


def _held(c, coldkey: str, hotkey: str, netuid: int) -> int:
    return sum(s["alpha_rao"] for s in c.account(coldkey)["stakes"] if s["netuid"] == netuid and s["hotkey"] == hotkey)


def _stake_context(args: argparse.Namespace) -> tuple[Any, str, Any, dict, str]:
    """(wallet, target hotkey, client, subnet info, coldkey ss58) of a stake command."""
    w = ctx.wallet(args, hotkey=not args.hotkey_ss58)
    hotkey = _target_hotkey(args, w)
    c = ctx.client(args)
    return w, hotkey, c, ctx.subnet(c, args.netuid), ctx.coldkey_ss58(w)


def _pool_at_head(c, netuid: int) -> tuple[int, dict[str, Any]]:
    """(head block, the subnet's summary at that head): read again when a block landed in between."""
    for _ in range(5):
        head = c.block()
        sub = ctx.subnet(c, netuid)
        if c.block() == head:
            return head, sub
    return head, sub


def _other_pool_calls(c, after: int, upto: int) -> int:
    """Successful pool-moving extrinsics in blocks after+1 .. upto (any subnet, ours included)."""
    count = 0
    for number in range(after + 1, upto + 1):
        count += sum(1 for e in c.read(f"/block/{number}")["extrinsics"] if e["ok"] and e["call"] in POOL_CALLS)
    return count


def bought_alpha(alpha_in_before: int, alpha_in_after: int, held_delta: int, other_swaps: int, epochs_ran: int,
                 quote: int) -> tuple[int, bool]:
    """Alpha the stake bought, and whether that is exact.

    The pool's alpha reserve moves only by swaps, so with no other swap since the quote its drop is exactly what
    this stake bought. Else, with no epoch since the quote, the stake's own growth is. Else (another swap and an
    epoch paying onto the stake) only the quote at the reserves seen before sending is left: an estimate.
    """
    if other_swaps == 0:
        return alpha_in_before - alpha_in_after, True
    if epochs_ran == 0:
        return held_delta, True
    return quote, False


def cmd_add(args: argparse.Namespace) -> int:
    """add_stake: buy alpha with TAO onto a hotkey (the wallet's own, or another by address)."""
    w, hotkey, c, sub, cold = _stake_context(args)
    balance = c.account(cold)["balance_rao"]
    amount = balance - FEE_RESERVE_RAO if args.amount == ALL else tao_to_rao(args.amount)
    if amount <= 0 or amount > balance:
        raise CliError(f"cannot stake {tao(max(amount, 0))}: the coldkey {cold} holds {tao(balance)} "
                       f"(NotEnoughBalanceToStake)")
    if not sub["first_emission_block"]:
        raise CliError(f"netuid {args.netuid} is not started yet: staking opens after `subnet start` (SubtokenDisabled)")
    head, sub = _pool_at_head(c, args.netuid)
    expected, slip, move = pool.quote_buy(sub, amount), pool.slippage_buy(sub, amount), pool.price_move_buy(sub, amount)
    if not args.json:
        print(f"stake {tao(amount)} on {hotkey} (netuid {args.netuid}): price {pool.price(sub):.6f} TAO/alpha, "
              f"expect {alpha(expected)}, price moves {move:+.2%}, slippage {slip:.2%} (incl. 0.05% pool fee)")
    _check_tolerance(args, move, f"staking {tao(amount)}")
    confirm(f"Stake {tao(amount)} for about {alpha(expected)}?", args.yes, dry_run=args.dry_run)
    held_before = _held(c, cold, hotkey, args.netuid)
    res = ctx.check(c.add_stake(ctx.coldkey(w), hotkey, args.netuid, amount / RAO))
    head_after, sub_after = _pool_at_head(c, args.netuid)
    held_delta = _held(c, cold, hotkey, args.netuid) - held_before
    others = _other_pool_calls(c, head, head_after) - 1
    epochs = int(sub_after["epoch_index"]) - int(sub["epoch_index"])
    bought, exact = bought_alpha(int(sub["alpha_in_rao"]), int(sub_after["alpha_in_rao"]), held_delta, others, epochs,
                                 expected)
    paid_onto = held_delta - bought  # dividends an epoch staked onto this position meanwhile
    hotkey_stake = _hotkey_stake(c, args.netuid, hotkey)
    if args.json:
        emit_json({"netuid": args.netuid, "hotkey": hotkey, "paid_tao": units(amount), "bought_alpha": units(bought),
                   "bought_exact": exact, "received_alpha": units(bought), "expected_alpha": units(expected),
                   "stake_change_alpha": units(held_delta), "epoch_payout_alpha": units(max(paid_onto, 0)),
                   "slippage": slip, "price_move": move, "block": res.block, "hotkey_stake_alpha": units(hotkey_stake)})
        return 0
    print(f"staked {tao(amount)} in block {res.block}: bought {'' if exact else 'about '}{alpha(bought)} "
          f"(effective price {amount / max(bought, 1):.6f} TAO/alpha); hotkey stake {alpha(hotkey_stake)}")
    if epochs and paid_onto > 0:
        print(f"an epoch also paid {alpha(paid_onto)} onto this stake meanwhile (dividends, not bought): your stake "
              f"on this hotkey grew {alpha(held_delta)} in all")
    return 0


def _hotkey_stake(c, netuid: int, hotkey: str) -> int:
    mg = c.read(f"/metagraph/{netuid}")
    return mg["stake_rao"][mg["hotkeys"].index(hotkey)] if hotkey in mg["hotkeys"] else 0


def cmd_remove(args: argparse.Namespace) -> int:
    """remove_stake: sell alpha (--amount, --amount all or --all) for TAO back to the coldkey."""
    w, hotkey, c, sub, cold = _stake_context(args)
    held = _held(c, cold, hotkey, args.netuid)
    amount = held if args.all or args.amount == ALL else tao_to_rao(args.amount)
    if amount <= 0 or amount > held:
        raise CliError(f"cannot unstake {alpha(amount)}: the coldkey holds {alpha(held)} on {hotkey} in netuid "
                       f"{args.netuid} (NotEnoughStakeToWithdraw)")
    expected, slip = pool.quote_sell(sub, amount), pool.slippage_sell(sub, amount)
    move = pool.price_move_sell(sub, amount)
    if not args.json:
        print(f"unstake {alpha(amount)} from {hotkey} (netuid {args.netuid}): price {pool.price(sub):.6f} "
              f"TAO/alpha, expect {tao(expected)}, price moves {-move:+.2%}, slippage {slip:.2%} (incl. 0.05% pool "
              f"fee)")
    _check_tolerance(args, move, f"unstaking {alpha(amount)}")
    confirm(f"Unstake {alpha(amount)} for about {tao(expected)}?", args.yes, dry_run=args.dry_run)
    before = c.account(cold)["balance_rao"]
    res = ctx.check(c.remove_stake(ctx.coldkey(w), hotkey, args.netuid, amount / RAO))
    after = c.account(cold)["balance_rao"]
    left = _held(c, cold, hotkey, args.netuid)
    if args.json:
        emit_json({"netuid": args.netuid, "hotkey": hotkey, "sold_alpha": units(amount),
                   "received_tao": units(after - before), "expected_tao": units(expected), "slippage": slip,
                   "price_move": -move, "block": res.block, "stake_left_alpha": units(left),
                   "balance_tao": units(after)})
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
