"""`subnet hyperparameters` (= `sudo get`) and `sudo set`, over the node's hyperparameter registry.

`sudo set` resolves the name (canonical, SDK name or alias), parses the value for the parameter's unit, checks
it against the caller's range (the owner's, or root's with --sudo) before anything is signed, shows
current -> new, and asks unless --yes. The chain checks the same registry again when the call lands.
"""

from __future__ import annotations

import argparse
from typing import Any

from template.chain.localnet import hparams
from template.chain.localnet.cli import context as ctx
from template.chain.localnet.cli.output import CliError, confirm, emit_json, table

TRUE_WORDS = ("true", "1", "yes", "on")
READ_ONLY_UNITS = {"activity_cutoff": "blocks", "burn": "rao"}  # values the view shows that nobody sets
FALSE_WORDS = ("false", "0", "no", "off")


def explain(unit: str, value: Any, hp_values: dict[str, Any], block_time_s: float) -> str:
    """The value in words: "360 blocks (6.0 min at 1.0 s/block)", "32767 (0.5000)", "500000 rao (0.0005 TAO)"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if unit == "blocks":
        return f"{value} blocks ({_duration(value * block_time_s)} at {block_time_s:g} s/block)"
    if unit == "u16":
        return f"{value} ({value / hparams.U16_MAX:.4f})"
    if unit == "per_million":
        return f"{value} ({value / 1_000_000:.4f})"
    if unit == "per_mille_tempo":
        tempo = int(hp_values.get("tempo", 0))
        return f"{value} ({value / 1000:g} x tempo = {hparams.activity_cutoff_blocks(value, tempo)} blocks)"
    if unit == "rao":
        return f"{value} rao ({value / hparams.RAO:,.4f} TAO)"
    if unit == "epochs":
        return f"{value} epoch{'s' if value != 1 else ''}"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _range(r: tuple[int, int] | None, hp: hparams.HParam) -> str:
    if r is None:
        return "-"
    if hp.is_bool:
        return "true/false"
    return f"{r[0]}..{'u64 max' if r[1] == hparams.U64_MAX else r[1]}"


def unit_of(name: str) -> str:
    hp = hparams.HPARAMS.get(name)
    return hp.unit if hp is not None else READ_ONLY_UNITS.get(name, "")


def cmd_hyperparameters(args: argparse.Namespace) -> int:
    """Every hyperparameter of the subnet: value, value in its unit, who may set it and the range."""
    c = ctx.client(args)
    try:
        values = c.hyperparameters(args.netuid)
    except ctx.ChainError as e:
        ctx.subnet(c, args.netuid)
        raise ctx.chain_error(e) from e
    block_time = float(c.read("/block").get("block_time", 12.0))
    rows = []
    for name, value in values.items():
        if name == "netuid":
            continue
        hp = hparams.HPARAMS.get(name)
        rows.append({"name": name, "value": value, "unit": unit_of(name),
                     "shown": explain(unit_of(name), value, values, block_time),
                     "settable_by": ("owner" if hp.owner_settable else "root") if hp else "read-only",
                     "owner_range": _range(hp.owner_range, hp) if hp else "-",
                     "root_range": _range(hp.root_range, hp) if hp else "-",
                     "aliases": sorted({hp.sdk_name, *hp.aliases} - {name}) if hp else [],
                     "note": hparams.READ_ONLY.get(name, hp.description if hp else "")})
    if args.json:
        emit_json({"netuid": args.netuid, "hyperparameters": rows})
        return 0
    table(["name", "value", "settable by", "owner range", "root range"],
          [[r["name"], r["shown"], r["settable_by"], r["owner_range"], r["root_range"]] for r in rows],
          title=f"hyperparameters of netuid {args.netuid} (`sudo set --param NAME --value V`; root-only needs --sudo)")
    return 0


def parse_value(hp: hparams.HParam, text: str) -> int | bool:
    """The typed value of `--value` for `hp`; CliError naming the expected type and unit."""
    t = text.strip().lower()
    if hp.is_bool:
        if t in TRUE_WORDS or t in FALSE_WORDS:
            return t in TRUE_WORDS
        raise CliError(f"--value for {hp.name} must be true or false, got {text!r}")
    try:
        return int(t.replace("_", ""))
    except ValueError:
        raise CliError(f"--value for {hp.name} must be an integer ({hp.unit}), got {text!r}") from None


def cmd_set(args: argparse.Namespace) -> int:
    """Change one hyperparameter as the subnet owner (or as root with --sudo), showing current -> new."""
    try:
        hp = hparams.resolve(args.param)
    except hparams.HParamError as e:
        raise CliError(str(e)) from e
    value = parse_value(hp, args.value)
    try:
        hparams.check_value(hp, value, root=args.sudo)
    except hparams.HParamError as e:
        wider = not args.sudo and hp.owner_range is not None and hp.root_range != hp.owner_range
        raise CliError(f"{e}" + (f" (root may use {_range(hp.root_range, hp)}: pass --sudo)" if wider else "")) from e
    signer = _signer(args)
    c = ctx.client(args)
    ctx.subnet(c, args.netuid)
    before = c.hyperparameters(args.netuid)
    block_time = float(c.read("/block").get("block_time", 12.0))
    old = before.get(hp.name)
    change = f"{hp.name}: {explain(hp.unit, old, before, block_time)} -> {explain(hp.unit, value, before, block_time)}"
    confirm(f"Set {change} on netuid {args.netuid}{' as root' if args.sudo else ''}?", args.yes, dry_run=args.dry_run)
    res = ctx.check(c.set_hyperparameter(signer, args.netuid, hp.name, value))
    now = c.hyperparameters(args.netuid).get(hp.name)
    if args.json:
        emit_json({"netuid": args.netuid, "name": hp.name, "old": old, "new": now, "block": res.block,
                   "as_root": args.sudo})
    else:
        print(f"{hp.name}: {explain(hp.unit, old, before, block_time)} -> {explain(hp.unit, now, before, block_time)} "
              f"on netuid {args.netuid} in block {res.block}")
    return 0


def _signer(args: argparse.Namespace):
    """The owner's coldkey, or the sudo key with --sudo."""
    if args.sudo:
        from bittensor_wallet import Keypair

        return Keypair.create_from_uri(args.sudo_uri)
    return ctx.coldkey(ctx.wallet(args, hotkey=False))
