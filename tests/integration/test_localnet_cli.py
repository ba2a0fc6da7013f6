"""The localnet CLI as a subnet owner uses it: every command run as a subprocess against one real node.

One node per module (block time 0.2 s). The session test walks a new owner's day: wallets, lock cost,
subnet creation with a confirmation, registration burn, staking with a slippage tolerance, hyperparameters
with current -> new, an epoch paying the owner cut, the owner's income in `metagraph` and `wallet overview`,
weights, and `verify`. Each user mistake must end in exactly one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from template.chain.localnet import hparams
from template.chain.localnet.client import LocalnetClient
from template.chain.localnet.process import LocalnetProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
BLOCK_TIME = 0.2
ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


@dataclass
class Net:
    endpoint: str
    wallets: Path
    db: Path
    tmp: Path

    @property
    def E(self) -> list[str]:  # noqa: N802 - reads like the flag it stands for
        return ["--subtensor.chain_endpoint", self.endpoint]

    def W(self, name: str, *extra: str) -> list[str]:  # noqa: N802
        return ["--wallet.name", name, "--wallet.path", str(self.wallets), *extra]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "template.chain.localnet", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, input=stdin if stdin is not None else "")

    def ok(self, *args: str, stdin: str | None = None) -> str:
        out = self.run(*args, stdin=stdin)
        assert out.returncode == 0, f"{args}: {out.stderr}"
        assert "Traceback" not in out.stderr
        return out.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """Run a mistake: non-zero exit, exactly one line on stderr, no traceback. Returns that line."""
        out = self.run(*args, stdin=stdin)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode != 0, f"{args} succeeded: {out.stdout}"
        assert "Traceback" not in out.stderr and len(lines) == 1, f"{args}: {out.stderr!r}"
        return lines[0]

    def json(self, *args: str) -> dict:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """A node, four wallets (owner, val, miner funded; poor not), and subnet 1 created by the owner."""
    tmp = tmp_path_factory.mktemp("cli")
    node = LocalnetProcess(tmp / "chain.sqlite", block_time=BLOCK_TIME)
    node.start()
    try:
        n = Net(node.endpoint, tmp / "wallets", node.db_path, tmp)
        for name in ("owner", "val", "miner", "poor"):
            n.ok("wallet", "create", *n.W(name))
        for name, amount in (("owner", "5000"), ("val", "3000"), ("miner", "100")):
            n.ok("wallet", "fund", "--amount", amount, *n.W(name), *n.E)
        assert "creating the next subnet locks 1,000.0000 TAO" in n.ok("subnet", "list", *n.E)
        out = n.run("subnet", "create", *n.W("owner"), *n.E, stdin="y\n")  # the confirmation, answered
        assert out.returncode == 0, out.stderr
        assert "locking 1,000.0000 TAO" in out.stderr and "created netuid 1: locked 1,000.0000 TAO" in out.stdout
        yield n
    finally:
        node.stop()


def test_owner_session_costs_stake_hyperparameters_income_and_verify(net: Net) -> None:
    # a second subnet costs about twice as much: the preview says so, and "n" sends nothing
    line = net.fails("subnet", "create", *net.W("owner"), *net.E, stdin="n\n")
    assert "locking 1,99" in line and line.endswith("aborted, nothing was sent")
    assert [s["netuid"] for s in net.json("subnet", "list", *net.E)["subnets"]] == [1]

    reg = net.json("subnet", "register", "--netuid", "1", *net.W("val"), *net.E, "--yes")
    assert reg["uid"] == 1 and 0.0005 <= reg["paid_tao"] <= 1.01
    assert "as uid 2 on netuid 1" in net.ok("subnet", "register", "--netuid", "1", *net.W("miner"), *net.E, "--yes")

    # a young pool: 500 TAO would more than double the price, refused at btcli's default 5% rate tolerance
    line = net.fails("stake", "add", "--netuid", "1", "--amount", "500", *net.W("val"), *net.E, "--yes")
    assert "move the pool price" in line and "--rate-tolerance 0.05" in line
    dry = net.json("stake", "add", "--netuid", "1", "--amount", "500", "--unsafe", "--dry-run", *net.W("val"), *net.E)
    assert dry["dry_run"] and "Stake 500.0000 TAO" in dry["would"]
    staked = net.json("stake", "add", "--netuid", "1", "--amount", "500", "--unsafe", *net.W("val"), *net.E, "-y")
    assert 0.3 < staked["slippage"] < 0.4 and staked["price_move"] > 1.0
    assert staked["bought_exact"] and staked["bought_alpha"] == pytest.approx(staked["expected_alpha"])
    # btcli's --hotkey takes an address too: stake onto the miner's hotkey from val's coldkey, then sell all of it
    miner_hotkey = net.json("wallet", "create", *net.W("miner"))["hotkey"]
    nominated = net.json("stake", "add", "--netuid", "1", "--amount", "1", "--hotkey", miner_hotkey,
                         "--rate-tolerance", "0.05", *net.W("val"), *net.E, "--no-prompt")
    assert nominated["hotkey"] == miner_hotkey and nominated["bought_alpha"] > 0
    sold = net.json("stake", "remove", "--netuid", "1", "--amount", "all", "--hotkey", miner_hotkey, *net.W("val"),
                    *net.E, "-y")
    assert sold["stake_left_alpha"] == 0 and sold["sold_alpha"] >= nominated["bought_alpha"]
    out = net.ok("stake", "list", *net.W("val"), *net.E)
    assert "alpha" in out and "value if sold" in out
    back = net.json("stake", "remove", "--netuid", "1", "--amount", "1", "--tolerance", "0.05", *net.W("val"),
                    *net.E, "--yes")
    assert back["sold_alpha"] == 1.0 and back["received_tao"] > 1.0  # alpha is dearer than TAO after the buy

    # hyperparameters: units and who may set them; root-only ones via the sudo key
    table = net.ok("subnet", "hyperparameters", "--netuid", "1", *net.E)
    assert "360 blocks" in table and "settable by" in table
    rows = net.json("sudo", "get", "--netuid", "1", *net.E)["hyperparameters"]
    assert {r["name"] for r in rows} >= set(hparams.HPARAMS)
    out = net.ok("sudo", "set", "--netuid", "1", "--param", "immunity_period", "--value", "100", *net.W("owner"),
                 *net.E, "--yes")
    assert out.startswith("immunity_period: 5000 blocks") and "-> 100 blocks" in out
    for name, value in (("tempo", "10"), ("weights_rate_limit", "1")):
        out = net.ok("sudo", "set", "--netuid", "1", "--param", name, "--value", value, "--sudo", *net.E, "--yes")
        assert f"-> {value} blocks" in out
    out = net.ok("sudo", "set", "--netuid", "1", "--param", "commit_reveal_enabled", "--value", "false",
                 *net.W("owner"), *net.E, "--yes")
    assert out.startswith("commit_reveal_weights_enabled: true -> false")

    # two epochs: the owner cut is paid, and shows as the owner's income
    c = LocalnetClient(net.endpoint)
    c.connect()
    c.wait_for_block(c.block() + 25, timeout_s=60)
    mg = net.json("subnet", "metagraph", "--netuid", "1", *net.E)
    income = mg["owner_income"]
    assert 0 < income["owner_cut_last_epoch_rao"] <= income["owner_cut_total_rao"]
    assert income["owner_cut_per_epoch_rao"] == pytest.approx(0.18 * 10 * 1e9, rel=0.01)
    assert "owner cut: last epoch" in net.ok("subnet", "metagraph", "--netuid", "1", *net.E)
    over = net.json("wallet", "overview", *net.W("owner"), *net.E)
    assert over["owned_subnets"][0]["owner_cut_total_rao"] >= income["owner_cut_total_rao"]
    assert over["neurons"][0]["uid"] == 0 and over["neurons"][0]["alpha_rao"] >= income["owner_cut_total_rao"]
    assert "owner income" in net.ok("wallet", "overview", *net.W("owner"), *net.E)

    bal = net.json("wallet", "balance", *net.W("val"), *net.E)
    dry = net.ok("wallet", "transfer", "--dest", ALICE, "--amount", "1.5", *net.W("val"), *net.E, "--dry-run")
    assert dry.startswith("dry run, nothing sent: Transfer 1.5000 TAO")
    assert net.json("wallet", "balance", *net.W("val"), *net.E)["free_tao"] == bal["free_tao"]
    sent = net.json("wallet", "transfer", "--dest", ALICE, "--amount", "1.5", *net.W("val"), *net.E, "--yes")
    assert sent["balance_before_tao"] - sent["balance_after_tao"] >= 1.5
    assert sent["balance_before_tao"] == pytest.approx(bal["free_tao"])
    out = net.ok("weights", "set", "--netuid", "1", "--uids", "1", "2", "--weights", "0.25,0.75", *net.W("val"), *net.E)
    assert "{1: 0.2500, 2: 0.7500}" in out and "set in block" in out
    out = net.ok("verify", "--db", str(net.db))
    assert out.startswith("verified") and "matches" in out


def test_stake_receipt_counts_only_what_was_bought_when_an_epoch_pays_in_the_same_block(net: Net) -> None:
    # val has weights set and the subnet's stake: every epoch (tempo 10) pays it dividends onto its stake. Small
    # stakes until one lands across an epoch: the receipt must still say what the TAO bought, and the payout apart.
    for _ in range(40):
        got = net.json("stake", "add", "--netuid", "1", "--amount", "0.5", *net.W("val"), *net.E, "-y")
        if got["epoch_payout_alpha"] > 0:
            break
    else:
        pytest.fail("no stake landed across an epoch in 40 tries")
    assert got["bought_exact"] and got["bought_alpha"] == pytest.approx(got["expected_alpha"], rel=1e-6)
    assert got["stake_change_alpha"] == pytest.approx(got["bought_alpha"] + got["epoch_payout_alpha"], abs=1e-8)
    assert got["epoch_payout_alpha"] > 10 * got["bought_alpha"]  # 0.5 TAO buys ~0.1 alpha; an epoch pays ~4


def test_old_command_names_still_work(net: Net) -> None:
    W = net.W  # noqa: N806
    net.ok("wallet-create", *W("legacy"))
    net.ok("fund", *W("legacy"), "--amount", "3000", *net.E)
    out = net.ok("create-subnet", *W("legacy"), "--no-start", *net.E)
    netuid = out.split("created netuid ")[1].split(":")[0]
    assert f"netuid {netuid} started" in net.ok("start-call", *W("legacy"), "--netuid", netuid, *net.E)
    assert "as uid 1" in net.ok("register", *W("val"), "--netuid", netuid, *net.E)
    assert "staked" in net.ok("stake", *W("val"), "--netuid", netuid, "--amount", "100", *net.E)
    assert "unstaked 1.0000 alpha" in net.ok("stake", *W("val"), "--netuid", netuid, "--amount", "1", "--unstake",
                                              *net.E)
    out = net.ok("set-hparam", *W("legacy"), "--netuid", netuid, "--name", "immunity_period", "--value", "4000",
                 *net.E)
    assert "-> 4000 blocks" in out
    assert f"netuid {netuid} at block" in net.ok("metagraph", "--netuid", netuid, *net.E)
    assert "immunity_period" in net.ok("hyperparameters", "--netuid", netuid, *net.E)
    assert json.loads(net.ok("subnets", "list", *net.E, "--json"))["subnets"][-1]["netuid"] == int(netuid)


MISTAKES = [
    # (arguments with {E} = endpoint flags and {W:name} = wallet flags, expected part of the one line)
    ("sudo set --netuid 1 --param tempo --value abc {W:owner} {E}", "must be an integer (blocks), got 'abc'"),
    ("set-hparam --netuid 1 --name tempo --value abc {W:owner} {E}", "must be an integer"),
    ("sudo set --netuid 1 --param tempo --value 12 {W:owner} {E} --yes", "[360, 50400]"),
    ("sudo set --netuid 1 --param nosuch --value 1 {W:owner} {E} --yes", "UnknownHyperparameter"),
    ("sudo set --netuid 1 --param kappa --value 1 {W:owner} {E} --yes", "BadOrigin: kappa is root-only"),
    ("sudo set --netuid 1 --param immunity_period --value 9 {W:val} {E} --yes", "BadOrigin"),
    ("sudo set --netuid 1 --param yuma3 --value maybe {W:owner} {E} --yes", "true or false"),
    ("wallet overview {W:ghost} {E}", "no wallet 'ghost'"),
    ("create-subnet {W:ghost} {E}", "no wallet 'ghost'"),
    ("subnet register --netuid 1 --wallet.hotkey ghost {W:owner} {E} --yes", "no hotkey 'ghost'"),
    ("verify --db /nonexistent/chain.sqlite", "no node database at /nonexistent/chain.sqlite"),
    ("verify --db {NOTADB}", "is not a localnet node database"),
    ("subnet list --subtensor.chain_endpoint http://127.0.0.1:{PORT}", "no localnet node answers"),
    ("subnet metagraph --netuid 77 {E}", "subnet 77 does not exist"),
    ("subnet hyperparameters --netuid 77 {E}", "subnet 77 does not exist"),
    ("stake add --netuid 77 --amount 1 {W:val} {E} --yes", "subnet 77 does not exist"),
    ("subnet register --netuid 77 {W:val} {E} --yes", "subnet 77 does not exist"),
    ("stake add --netuid 1 --amount abc {W:val} {E}", "must be a number of TAO/alpha, got 'abc'"),
    ("stake add --netuid 1 --amount nan {W:val} {E}", "finite number > 0"),
    ("stake add --netuid 1 --amount 1 --subtensor.network finney {W:val}", "use btcli there"),
    ("weights set --netuid 1 --uids 1 --weights 1 --hotkey " + ALICE + " {W:val} {E}", "is an address"),
    ("stake add --netuid one --amount 1 {W:val} {E}", "must be a subnet number"),
    ("stake remove --netuid 1 --amount 1000000 {W:val} {E} --yes", "NotEnoughStakeToWithdraw"),
    ("wallet transfer --dest not-an-address --amount 1 {W:owner} {E} --yes", "is not an SS58 address"),
    ("wallet transfer --dest " + ALICE + " --amount 1e9 {W:owner} {E} --yes", "InsufficientBalance"),
    ("subnet create {W:poor} {E} --yes", "CannotAffordLockCost"),
    ("subnet create {W:owner} {E}", "pass --yes"),
    ("weights set --netuid 1 --uids 0 1 --weights 1 {W:owner} {E}", "one weight per uid"),
    ("weights set --netuid 1 --uids 0 --weights -1 {W:owner} {E}", "finite and >= 0"),
    ("nosuchcommand", "invalid choice"),
]


@pytest.mark.parametrize(("argv", "expected"), MISTAKES, ids=[m[0].split(" {")[0] for m in MISTAKES])
def test_each_mistake_is_one_line_and_a_nonzero_exit(net: Net, argv: str, expected: str) -> None:
    not_a_db = net.tmp / "notes.txt"
    not_a_db.write_text("not sqlite")
    args = []
    for token in argv.split():
        if token == "{E}":
            args += net.E
        elif token.startswith("{W:"):
            args += net.W(token[3:-1])
        else:
            args.append(token.replace("{NOTADB}", str(not_a_db)).replace("{PORT}", str(free_port())))
    line = net.fails(*args)
    assert expected in line and line.startswith("error: ")


def test_verify_names_the_first_edited_block_and_what_differs(net: Net) -> None:
    copy = net.tmp / "edited.sqlite"
    src = sqlite3.connect(net.db)
    dst = sqlite3.connect(copy)
    src.backup(dst)  # a consistent copy of the live database
    src.close()
    assert net.ok("verify", "--db", str(copy)).startswith("verified")

    block, idx, call = dst.execute("SELECT block, idx, call FROM extrinsics WHERE call = 'transfer' AND ok = 1 "
                                   "ORDER BY block LIMIT 1").fetchone()
    dst.execute("UPDATE extrinsics SET ok = 0, error = 'InsufficientBalance' WHERE block = ? AND idx = ?",
                (block, idx))
    dst.commit()
    out = net.run("verify", "--db", str(copy))
    assert out.returncode == 1
    assert out.stdout.startswith(f"block {block} is the first that differs")
    assert f"extrinsic {idx} ({call} by" in out.stdout
    assert "stored failed InsufficientBalance, replay gives ok" in out.stdout
    report = json.loads(net.run("verify", "--db", str(copy), "--json").stdout)
    assert report["first"]["block"] == block and not report["ok"]

    dst.execute("UPDATE extrinsics SET ok = 1, error = NULL WHERE block = ? AND idx = ?", (block, idx))
    body, = dst.execute("SELECT body FROM state WHERE id = 0").fetchone()
    state = json.loads(body)
    state["balances"][ALICE] += 1
    dst.execute("UPDATE state SET body = ? WHERE id = 0", (json.dumps(state, sort_keys=True, separators=(",", ":")),))
    dst.commit()
    dst.close()
    out = net.run("verify", "--db", str(copy))
    assert out.returncode == 1 and "the stored state at the head" in out.stdout
    assert f"balances.{ALICE}: stored" in out.stdout
