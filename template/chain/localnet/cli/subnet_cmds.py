"""`subnet list|create|start|register|metagraph` (`subnet hyperparameters` lives in sudo_cmds)."""

from __future__ import annotations

import argparse
from typing import Any

from template.chain.localnet.cli import context as ctx
from template.chain.localnet.cli import pool
from template.chain.localnet.cli.output import RAO, alpha, confirm, emit_json, short, table, tao, units


def cmd_list(args: argparse.Namespace) -> int:
    """Every subnet: owner, uids, tempo, pool and price, burn, owner cut; and the next subnet's lock cost."""
    c = ctx.client(args)
    subnets = c.subnets()
    network = c.read("/network")
    rows = []
    for k in sorted(subnets, key=int):
        s = subnets[k]
        n = len(c.read(f"/metagraph/{k}")["hotkeys"])
        rows.append({"netuid": int(k), "owner_coldkey": s["owner_coldkey"], "owner_hotkey": s["owner_hotkey"],
                     "n": n, "tempo": s["tempo"], "started": bool(s["first_emission_block"]),
                     "price_tao_per_alpha": pool.price(s), "pool_tao": units(s["subnet_tao_rao"]),
                     "pool_alpha": units(s["alpha_in_rao"]), "burn_tao": units(s["burn_rao"]),
                     "owner_cut_total_alpha": units(s["owner_cut_total_rao"])})
    if args.json:
        emit_json({"block": network["block"], "lock_cost_tao": units(network["lock_cost_rao"]), "subnets": rows})
        return 0
    table(["netuid", "owner", "uids", "tempo", "started", "price (TAO/alpha)", "pool TAO", "pool alpha",
           "registration burn", "owner cut total"],
          [[r["netuid"], short(r["owner_coldkey"]), r["n"], r["tempo"], r["started"], r["price_tao_per_alpha"],
            tao(r["pool_tao"] * RAO), alpha(r["pool_alpha"] * RAO), tao(r["burn_tao"] * RAO),
            alpha(r["owner_cut_total_alpha"] * RAO)] for r in rows],
          title=f"{len(rows)} subnets at block {network['block']}")
    print(f"creating the next subnet locks {tao(network['lock_cost_rao'])}")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    """register_network with the wallet's coldkey (owner) and hotkey (uid 0), then start_call unless --no-start."""
    w = ctx.wallet(args)
    c = ctx.client(args)
    owner = ctx.coldkey_ss58(w)
    before = c.account(owner)["balance_rao"]
    cost = c.read("/network")["lock_cost_rao"]
    if before < cost:
        raise ctx.CliError(f"creating a subnet locks {tao(cost)} but the coldkey {owner} holds {tao(before)} "
                           f"(CannotAffordLockCost)")
    confirm(f"Create a subnet owned by {owner}, locking {tao(cost)} plus fees (balance {tao(before)} -> about "
            f"{tao(before - cost)})?", args.yes, dry_run=args.dry_run)
    hotkey = ctx.target_hotkey(args, w)
    try:
        netuid = c.register_network(ctx.coldkey(w), hotkey)
    except ctx.ChainError as e:
        raise ctx.chain_error(e) from e
    started = None
    if not args.no_start:
        started = ctx.check(c.start_call(ctx.coldkey(w), netuid)).block
    after = c.account(owner)["balance_rao"]
    if args.json:
        emit_json({"netuid": netuid, "owner_coldkey": owner, "owner_hotkey": hotkey, "lock_cost_tao": units(cost),
                   "fees_tao": units(before - after - cost),
                   "balance_before_tao": units(before), "balance_after_tao": units(after), "started_block": started})
        return 0
    fees = before - after - cost
    print(f"created netuid {netuid}: locked {tao(cost)}" + (f" plus {tao(fees)} in fees" if fees > 0 else "")
          + f", balance {tao(before)} -> {tao(after)}")
    print(f"owner hotkey {hotkey} is uid 0; " + (f"emission and staking start at block {started + 1}" if started
                                                 else "start emission with `subnet start`"))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """start_call: emission and staking begin in the next block."""
    w = ctx.wallet(args, hotkey=False)
    c = ctx.client(args)
    ctx.subnet(c, args.netuid)
    res = ctx.check(c.start_call(ctx.coldkey(w), args.netuid))
    if args.json:
        emit_json({"netuid": args.netuid, "block": res.block})
    else:
        print(f"netuid {args.netuid} started in block {res.block}; emission and staking begin at block {res.block + 1}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    """burned_register of the wallet's hotkey, paid by its coldkey; previews the burn and asks unless --yes."""
    w = ctx.wallet(args)
    c = ctx.client(args)
    sub = ctx.subnet(c, args.netuid)
    payer, hotkey = ctx.coldkey_ss58(w), ctx.target_hotkey(args, w)
    before = c.account(payer)["balance_rao"]
    burn = int(sub["burn_rao"])
    if before < burn:
        raise ctx.CliError(f"registering on netuid {args.netuid} burns {tao(burn)} but the coldkey holds "
                           f"{tao(before)} (NotEnoughBalanceToStake)")
    confirm(f"Register hotkey {hotkey} on netuid {args.netuid}, burning about {tao(burn)} (the burn decays every "
            f"block and rises 26% per registration)?", args.yes, dry_run=args.dry_run)
    res = ctx.check(c.burned_register(ctx.coldkey(w), hotkey, args.netuid))
    uid = c.metagraph(args.netuid).uid_of(hotkey)
    after = c.account(payer)["balance_rao"]
    if args.json:
        emit_json({"netuid": args.netuid, "hotkey": hotkey, "uid": uid, "block": res.block,
                   "paid_tao": units(before - after), "balance_after_tao": units(after)})
    else:
        print(f"registered {hotkey} as uid {uid} on netuid {args.netuid} in block {res.block}; "
              f"paid {tao(before - after)} (burn and fee), balance {tao(after)}")
    return 0


def cmd_metagraph(args: argparse.Namespace) -> int:
    """Per uid: stake, permit, incentive, dividends, consensus, emission; plus the pool and the owner's income."""
    c = ctx.client(args)
    try:
        mg = c.read(f"/metagraph/{args.netuid}")
    except ctx.ChainError as e:
        ctx.subnet(c, args.netuid)  # names the missing subnet, with the ones that exist
        raise ctx.chain_error(e) from e
    income = pool.owner_income(args.netuid, mg)
    if args.json:
        emit_json({**mg, "price_tao_per_alpha": pool.price(mg), "owner_income": income})
        return 0
    print_metagraph(mg, income)
    return 0


def print_metagraph(mg: dict[str, Any], income: dict[str, Any]) -> None:
    owner_uid = mg["hotkeys"].index(mg["owner_hotkey"]) if mg["owner_hotkey"] in mg["hotkeys"] else None
    print(f"netuid {mg['netuid']} at block {mg['block']}: {mg['n']} uids, tempo {mg['tempo']}, next epoch in "
          f"{mg['blocks_until_next_epoch']} blocks, owner {mg['owner_coldkey']}")
    print(f"pool {tao(mg['subnet_tao_rao'])} / {alpha(mg['alpha_in_rao'])} (price {pool.price(mg):.4f} TAO/alpha), "
          f"registration burn {tao(mg['burn_rao'])}")
    print(f"owner cut: last epoch {alpha(income['owner_cut_last_epoch_rao'])}, total "
          f"{alpha(income['owner_cut_total_rao'])}, accruing {alpha(income['owner_cut_pending_rao'])}, "
          f"per epoch now {alpha(income['owner_cut_per_epoch_rao'])}\n")
    rows = []
    for uid in range(mg["n"]):
        rows.append([uid if uid != owner_uid else f"{uid}*", mg["hotkeys"][uid], alpha(mg["stake_rao"][uid]),
                     mg["validator_permit"][uid], mg["incentive_u16"][uid] / 65535, mg["dividends_u16"][uid] / 65535,
                     mg["consensus_u16"][uid] / 65535, alpha(mg["emission_rao"][uid]), mg["last_update"][uid],
                     mg["active"][uid]])
    table(["uid", "hotkey", "stake", "permit", "incentive", "dividends", "consensus", "emission/epoch",
           "last_update", "active"], rows)
    print("* owner hotkey: its incentive is burned; the owner cut above is the owner's income")
