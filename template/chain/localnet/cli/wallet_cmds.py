"""`wallet create|list|balance|overview|transfer` and `fund` (TAO from a dev account)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from template.chain.localnet.cli import context as ctx
from template.chain.localnet.cli import pool
from template.chain.localnet.cli.output import alpha, confirm, emit_json, short, table, tao, units
from template.chain.localnet.client import tao_to_rao


def cmd_create(args: argparse.Namespace) -> int:
    """Create the coldkey (if missing) and the hotkey (if missing), without a password: throwaway local keys."""
    from bittensor_wallet import Wallet

    w = Wallet(name=args.wallet_name, hotkey=args.wallet_hotkey, path=str(ctx.wallet_path(args)))
    made = []
    if not w.coldkey_file.exists_on_device():
        w.create_new_coldkey(use_password=False, overwrite=False, suppress=True)  # no mnemonic on stdout
        made.append("coldkey")
    if not w.hotkey_file.exists_on_device():
        w.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
        made.append("hotkey")
    info = {"wallet": args.wallet_name, "hotkey_name": args.wallet_hotkey, "path": str(ctx.wallet_path(args)),
            "coldkey": ctx.coldkey_ss58(w), "hotkey": ctx.hotkey_ss58(w), "created": made}
    if args.json:
        emit_json(info)
    else:
        print(f"coldkey {info['coldkey']}\nhotkey  {info['hotkey']}")
        print(f"wallet {args.wallet_name!r} in {info['path']}: " + (f"created {' and '.join(made)}" if made
                                                                     else "already existed, unchanged"))
    return 0


def _hotkeys_of(wallet_dir: Path) -> list[str]:
    hk_dir = wallet_dir / "hotkeys"
    return sorted(p.name for p in hk_dir.iterdir() if p.is_file() and not p.name.endswith("pub.txt")) \
        if hk_dir.is_dir() else []


def _wallet_hotkeys(args: argparse.Namespace) -> dict[str, str]:
    """hotkey ss58 -> hotkey name, for every readable hotkey file of the wallet."""
    from bittensor_wallet import Wallet

    out = {}
    for name in _hotkeys_of(ctx.wallet_path(args) / args.wallet_name):
        try:
            out[Wallet(name=args.wallet_name, hotkey=name, path=str(ctx.wallet_path(args))).hotkey.ss58_address] = name
        except Exception:  # noqa: BLE001 - an unreadable hotkey file is skipped in a listing, not fatal
            continue
    return out


def cmd_list(args: argparse.Namespace) -> int:
    """Wallets under --wallet.path with their coldkey address and hotkey names (no chain needed)."""
    from bittensor_wallet import Wallet

    root = ctx.wallet_path(args)
    if not root.is_dir():
        raise ctx.CliError(f"no wallets folder at {root}; create a wallet with `wallet create` or pass --wallet.path")
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        w = Wallet(name=d.name, path=str(root))
        cold = w.coldkeypub.ss58_address if w.coldkeypub_file.exists_on_device() else None
        rows.append({"wallet": d.name, "coldkey": cold, "hotkeys": _hotkeys_of(d)})
    if args.json:
        emit_json(rows)
    else:
        table(["wallet", "coldkey", "hotkeys"], [[r["wallet"], r["coldkey"], ", ".join(r["hotkeys"])] for r in rows],
              title=f"wallets in {root}")
    return 0


def _stake_rows(c, ss58: str, subnets: dict[str, Any]) -> list[dict[str, Any]]:
    """The coldkey's stakes with their TAO value if sold now."""
    rows = []
    for s in c.account(ss58)["stakes"]:
        sub = subnets.get(str(s["netuid"]))
        value = pool.quote_sell(sub, s["alpha_rao"]) if sub else 0
        rows.append({**s, "value_rao": value, "price_tao": pool.price(sub) if sub else 0.0})
    return rows


def _owner_of(args: argparse.Namespace) -> str:
    if getattr(args, "ss58", None):
        return ctx.validate_ss58(args.ss58, "--ss58")
    return ctx.coldkey_ss58(ctx.wallet(args, coldkey=False, hotkey=False))


def cmd_balance(args: argparse.Namespace) -> int:
    """Free TAO, stake valued at the pools, total."""
    ss58 = _owner_of(args)
    c = ctx.client(args)
    acct = c.account(ss58)
    stakes = _stake_rows(c, ss58, c.subnets())
    staked = sum(s["value_rao"] for s in stakes)
    info = {"coldkey": ss58, "free_tao": units(acct["balance_rao"]), "staked_value_tao": units(staked),
            "total_tao": units(acct["balance_rao"] + staked), "free_rao": acct["balance_rao"]}
    if args.json:
        emit_json(info)
    else:
        table(["coldkey", "free", "staked (value if sold)", "total"],
              [[ss58, tao(acct["balance_rao"]), tao(staked), tao(acct["balance_rao"] + staked)]])
    return 0


def cmd_overview(args: argparse.Namespace) -> int:
    """The coldkey's balance, each hotkey's uid, stake and emission, and the owner income of its subnets."""
    w = ctx.wallet(args, coldkey=False, hotkey=False)
    ss58 = ctx.coldkey_ss58(w)
    c = ctx.client(args)
    subnets = c.subnets()
    acct = c.account(ss58)
    names = _wallet_hotkeys(args)
    neurons = _neuron_rows(c, ss58, subnets, names)
    owned = [pool.owner_income(k, s) for k, s in sorted(subnets.items(), key=lambda kv: int(kv[0]))
             if s["owner_coldkey"] == ss58]
    staked = sum(n["value_rao"] for n in neurons)
    if args.json:
        emit_json({"wallet": args.wallet_name, "coldkey": ss58, "free_rao": acct["balance_rao"],
                   "free_tao": units(acct["balance_rao"]), "staked_value_tao": units(staked),
                   "neurons": neurons, "owned_subnets": owned})
        return 0
    print(f"wallet {args.wallet_name!r}  coldkey {ss58}")
    print(f"free {tao(acct['balance_rao'])}   staked (value if sold) {tao(staked)}   "
          f"total {tao(acct['balance_rao'] + staked)}\n")
    if neurons:
        table(["netuid", "hotkey", "uid", "stake (yours)", "value", "emission/epoch", "incentive", "dividends",
               "permit"],
              [[n["netuid"], n["hotkey_name"] or short(n["hotkey"]), n["uid"], alpha(n["alpha_rao"]),
                tao(n["value_rao"]), alpha(n["emission_rao"]) if n["uid"] is not None else "-", n["incentive"],
                n["dividends"], n["validator_permit"]] for n in neurons])
    else:
        print("no registered hotkeys and no stake")
    if owned:
        print()
        print_owner_income(owned)
    return 0


def print_owner_income(owned: list[dict[str, Any]]) -> None:
    table(["netuid", "owner cut last epoch", "owner cut total", "accruing now", "per epoch now", "next epoch in"],
          [[o["netuid"], alpha(o["owner_cut_last_epoch_rao"]), alpha(o["owner_cut_total_rao"]),
            alpha(o["owner_cut_pending_rao"]), alpha(o["owner_cut_per_epoch_rao"]),
            f"{o['blocks_until_next_epoch']} blocks"] for o in owned],
          title="owner income (the owner cut, staked to the owner hotkey at each epoch)")


def _neuron_rows(c, ss58: str, subnets: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """One row per (netuid, hotkey) where the coldkey has stake or one of its wallet's hotkeys has a uid."""
    stakes = {(s["netuid"], s["hotkey"]): s for s in _stake_rows(c, ss58, subnets)}
    rows = []
    for netuid in sorted(int(k) for k in subnets):
        mg = c.read(f"/metagraph/{netuid}")
        keys = [(netuid, hk) for hk, ck in zip(mg["hotkeys"], mg["coldkeys"], strict=True) if hk in names or ck == ss58]
        keys += [k for k in stakes if k[0] == netuid and k not in keys]
        for _, hk in keys:
            uid = mg["hotkeys"].index(hk) if hk in mg["hotkeys"] else None
            s = stakes.get((netuid, hk), {"alpha_rao": 0, "value_rao": 0})
            rows.append({"netuid": netuid, "hotkey": hk, "hotkey_name": names.get(hk), "uid": uid,
                         "alpha_rao": s["alpha_rao"], "value_rao": s["value_rao"],
                         "emission_rao": mg["emission_rao"][uid] if uid is not None else 0,
                         "incentive": mg["incentive_u16"][uid] / 65535 if uid is not None else 0.0,
                         "dividends": mg["dividends_u16"][uid] / 65535 if uid is not None else 0.0,
                         "validator_permit": mg["validator_permit"][uid] if uid is not None else False})
    return rows


def cmd_transfer(args: argparse.Namespace) -> int:
    """Send TAO from the wallet's coldkey; previews and asks unless --yes."""
    w = ctx.wallet(args, hotkey=False)
    dest = ctx.validate_ss58(args.dest, "--dest")
    c = ctx.client(args)
    src = ctx.coldkey_ss58(w)
    before = c.account(src)["balance_rao"]
    amount = tao_to_rao(args.amount)
    if amount > before:
        raise ctx.CliError(f"cannot send {tao(amount)}: the coldkey {src} holds {tao(before)} (InsufficientBalance)")
    confirm(f"Transfer {tao(amount)} from {src} to {dest}?", args.yes, dry_run=args.dry_run)
    res = ctx.check(c.transfer(ctx.coldkey(w), dest, args.amount))
    after = c.account(src)["balance_rao"]
    if args.json:
        emit_json({"from": src, "dest": dest, "amount_tao": units(amount), "block": res.block,
                   "balance_before_tao": units(before), "balance_after_tao": units(after)})
    else:
        print(f"sent {tao(amount)} to {dest} in block {res.block}; balance {tao(before)} -> {tao(after)}")
    return 0


def cmd_fund(args: argparse.Namespace) -> int:
    """Send TAO from a dev account (//Alice by default) to the wallet's coldkey or --dest."""
    from bittensor_wallet import Keypair

    if args.dest:
        dest = ctx.validate_ss58(args.dest, "--dest")
    else:
        dest = ctx.coldkey_ss58(ctx.wallet(args, coldkey=False, hotkey=False))
    try:
        payer = Keypair.create_from_uri(args.from_uri)
    except (ValueError, TypeError) as e:
        raise ctx.CliError(f"--from-uri {args.from_uri!r} is not a key URI such as //Alice") from e
    c = ctx.client(args)
    res = ctx.check(c.transfer(payer, dest, args.amount))
    balance = c.account(dest)["balance_rao"]
    if args.json:
        emit_json({"from": payer.ss58_address, "dest": dest, "amount_tao": args.amount, "block": res.block,
                   "balance_tao": units(balance)})
    else:
        print(f"sent {tao(tao_to_rao(args.amount))} from {args.from_uri} to {dest} in block {res.block}; "
              f"balance {tao(balance)}")
    return 0
