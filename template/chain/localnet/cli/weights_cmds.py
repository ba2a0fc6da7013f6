"""`weights set`: a hand-made weight vector from the wallet's hotkey (for testing a subnet's rules)."""

from __future__ import annotations

import argparse
import math

from template.chain.localnet.cli import context as ctx
from template.chain.localnet.cli.output import CliError, emit_json


def parse_list(text: str, kind: type, flag: str) -> list:
    """"1,2 3" -> [1, 2, 3]; CliError naming the flag and the bad item."""
    items = [t for t in text.replace(",", " ").split() if t]
    out = []
    for t in items:
        try:
            v = kind(t)
        except ValueError as e:
            raise CliError(f"{flag} must be a list of {'integers' if kind is int else 'numbers'}, got {t!r}") from e
        if kind is float and (not math.isfinite(v) or v < 0):
            raise CliError(f"{flag} values must be finite and >= 0, got {t!r}")
        if kind is int and v < 0:
            raise CliError(f"{flag} values must be >= 0, got {t!r}")
        out.append(v)
    if not out:
        raise CliError(f"{flag} is empty")
    return out


def cmd_set(args: argparse.Namespace) -> int:
    uids = parse_list(" ".join(args.uids), int, "--uids")
    weights = parse_list(" ".join(args.weights), float, "--weights")
    if len(uids) != len(weights):
        raise CliError(f"--uids has {len(uids)} entries and --weights {len(weights)}; give one weight per uid")
    if sum(weights) <= 0:
        raise CliError("--weights are all zero; give at least one positive weight")
    w = ctx.wallet(args, coldkey=False)
    c = ctx.client(args)
    ctx.subnet(c, args.netuid)
    hp = c.hyperparameters(args.netuid)
    committed = bool(hp.get("commit_reveal_weights_enabled"))
    hotkey = ctx.signing_hotkey(args, w)
    res = ctx.check(c.set_weights(hotkey, args.netuid, uids, weights, version_key=args.version_key))
    norm = {u: round(v / sum(weights), 6) for u, v in zip(uids, weights, strict=True)}
    if args.json:
        emit_json({"netuid": args.netuid, "hotkey": hotkey.ss58_address, "block": res.block, "committed": committed,
                   "weights": {str(u): v for u, v in norm.items()}})
        return 0
    shown = ", ".join(f"{u}: {v:.4f}" for u, v in norm.items())
    if committed:
        period = hp.get("commit_reveal_period", 1)
        print(f"weights of {hotkey.ss58_address} on netuid {args.netuid} committed in block {res.block}: "
              f"{{{shown}}}; hidden until the chain reveals them after {period} tempo(s), then they count")
    else:
        print(f"weights of {hotkey.ss58_address} on netuid {args.netuid} set in block {res.block}: {{{shown}}}; "
              f"they count at the next epoch")
    return 0
