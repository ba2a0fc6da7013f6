"""Guard: docs/subnet-owner.md describes the localnet as the code has it.

Section 4's table against the hyperparameter registry the chain checks (names, aliases, units, defaults,
owner and root ranges); section 2b's calls against the chain's argument specs; section 2a's routes against the
node's HTTP app; section 3's command table and old names against the CLI; and every command of the recorded
session parses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from template.chain.localnet import hparams
from template.chain.localnet.api import build_app
from template.chain.localnet.calls import ARG_SPECS
from template.chain.localnet.cli import COMMANDS
from template.chain.localnet.cli.parser import LEGACY, build_parser, rewrite_legacy
from template.chain.localnet.node import LocalnetNode

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "subnet-owner.md"


def section(title_start: str) -> str:
    """The text of the section whose heading starts with `title_start`, up to the next heading."""
    text = GUIDE.read_text()
    start = text.index(title_start)
    nxt = re.search(r"^#{2,3} ", text[start + len(title_start):], flags=re.M)
    return text[start:start + len(title_start) + (nxt.start() if nxt else len(text))]


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row whose first cell is `code`."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def ticked(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def _range(r: tuple[int, int] | None, hp: hparams.HParam) -> str:
    if r is None:
        return "root only"
    if hp.is_bool:
        return "true/false"
    big = {hparams.U64_MAX: "2^64-1", 2**32 - 1: "2^32-1"}
    return f"{r[0]}..{big.get(r[1], r[1])}"


def test_hyperparameter_table_matches_the_registry() -> None:
    rows = {ticked(r[0]).pop(): r for r in table_rows(section("## 4. Subnet hyperparameters"))}
    assert set(rows) == set(hparams.HPARAMS), "docs section 4: one row per registry entry, no others"
    for name, hp in hparams.HPARAMS.items():
        _, aliases, unit, default, owner, root, _ = rows[name]
        assert ticked(aliases) == {hp.sdk_name, *hp.aliases} - {name}, f"{name}: aliases"
        assert unit == hp.unit, f"{name}: unit"
        assert default == (str(hp.default).lower() if hp.is_bool else str(hp.default)), f"{name}: default"
        assert owner == _range(hp.owner_range, hp), f"{name}: owner range"
        assert root == _range(hp.root_range, hp), f"{name}: root range"
    read_only = section("## 4. Subnet hyperparameters").split("Read only", 1)[1]
    assert all(f"`{name}`" in read_only for name in hparams.READ_ONLY)


def test_call_table_matches_the_chain() -> None:
    rows = {ticked(r[0]).pop(): r for r in table_rows(section("### 2b. The calls"))}
    assert set(rows) == set(ARG_SPECS), "docs section 2b: one row per call"
    for call, spec in ARG_SPECS.items():
        args = {a for a in ticked(rows[call][2]) if a.isidentifier()}
        assert args == set(spec), f"{call}: documented args {sorted(args)}, chain takes {sorted(spec)}"


def _params(route: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", route)  # /block/{n} and /block/{number} are the same route


def test_route_table_matches_the_node(tmp_path: Path) -> None:
    node = LocalnetNode(tmp_path / "chain.sqlite", new=True)
    try:
        routes = {_params(f"{sorted(r.methods)[0]} {r.path}") for r in build_app(node).routes
                  if getattr(r, "methods", None) and r.path.startswith("/") and "HEAD" not in r.methods}
    finally:
        node.close()
    documented = {_params(ticked(r[0]).pop()) for r in table_rows(section("### 2a. The node's HTTP API"))}
    assert documented == routes


def test_command_table_and_old_names_match_the_cli() -> None:
    text = section("## 3. The command line")
    documented = set().union(*(ticked(r[0]) for r in table_rows(text)))
    assert documented == {f"{group} {cmd}" for group, cmd in COMMANDS if cmd} | {"verify", "serve"}
    old_names = text.split("still work", 1)[1].split("\n\n", 1)[0]
    assert ticked(old_names) >= set(LEGACY) | {"stake"}


def test_every_command_of_the_recorded_session_parses() -> None:
    transcript = section("### A new owner's session")
    commands = [line.split("$L ", 1)[1].split("#")[0].split() for line in transcript.splitlines()
                if "$ " in line and "$L " in line]
    assert len(commands) >= 20
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(rewrite_legacy(argv))
        except SystemExit:
            pytest.fail(f"the guide's command does not parse: {' '.join(argv)}")
