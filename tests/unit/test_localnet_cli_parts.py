"""Pure parts of the localnet CLI (template/chain/localnet/cli/) and the owner-cut bookkeeping it reads.

The CLI against a real node is tested in tests/integration/test_localnet_cli.py.
"""

from __future__ import annotations

import io

import pytest
from bittensor_wallet import Keypair

from template.chain.localnet import coinbase, hparams
from template.chain.localnet.calls import apply_signed
from template.chain.localnet.cli import pool
from template.chain.localnet.cli.output import Aborted, CliError, confirm, table
from template.chain.localnet.cli.parser import parse_args, rewrite_legacy
from template.chain.localnet.cli.sudo_cmds import explain, parse_value
from template.chain.localnet.cli.verify import diff_states
from template.chain.localnet.extrinsic import sign_extrinsic
from template.chain.localnet.state import RAO, ChainState, Genesis
from template.chain.localnet.views import subnet_summary


@pytest.mark.parametrize(("old", "new"), [
    (["create-subnet", "--wallet.name", "o"], ["subnet", "create", "--wallet.name", "o", "--yes"]),
    (["set-hparam", "--name", "tempo"], ["sudo", "set", "--name", "tempo", "--yes"]),
    (["metagraph", "--netuid", "1"], ["subnet", "metagraph", "--netuid", "1"]),
    (["stake", "--netuid", "1", "--amount", "5"], ["stake", "add", "--netuid", "1", "--amount", "5", "--yes", "--unsafe"]),
    (["stake", "--unstake", "--amount", "5"], ["stake", "remove", "--amount", "5", "--yes", "--unsafe"]),
    (["stake", "list"], ["stake", "list"]),
    (["subnet", "list"], ["subnet", "list"]),
])
def test_old_command_names_map_onto_the_groups(old: list[str], new: list[str]) -> None:
    assert rewrite_legacy(old) == new


def test_parse_args_accepts_btcli_spellings_and_refuses_bad_amounts_in_one_line(capsys) -> None:
    args = parse_args(["subnets", "list", "--network", "local"])
    assert (args.group, args.cmd, args.endpoint) == ("subnet", "list", "http://127.0.0.1:9946")
    args = parse_args(["stake", "add", "--netuid", "1", "--amount", "2", "--wallet-name", "v", "--hotkey", "h"])
    assert (args.wallet_name, args.wallet_hotkey, args.tolerance, args.unsafe) == ("v", "h", 0.05, False)
    for bad in (["stake", "add", "--netuid", "1", "--amount", "-1"], ["wallet", "fund", "--amount", "inf"]):
        with pytest.raises(SystemExit) as e:
            parse_args(bad)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: argument --amount")


def test_btcli_flags_parse_with_btcli_meanings(capsys) -> None:
    args = parse_args(["stake", "add", "--subtensor.network", "local", "--netuid", "1", "--amount", "all", "-y",
                       "--rate-tolerance", "0.1", "--dry-run"])
    assert (args.endpoint, args.amount, args.yes, args.tolerance, args.dry_run) == (
        "http://127.0.0.1:9946", "all", True, 0.1, True)
    args = parse_args(["stake", "remove", "--netuid", "1", "--amount", "ALL", "--no-prompt", "--no-safe-staking",
                       "--network", "http://127.0.0.1:9950"])
    assert (args.amount, args.yes, args.unsafe, args.endpoint) == ("all", True, True, "http://127.0.0.1:9950")
    # --subtensor.chain_endpoint wins over --subtensor.network, as in btcli
    args = parse_args(["subnet", "list", "--subtensor.network", "local", "--subtensor.chain_endpoint",
                       "http://127.0.0.1:9951"])
    assert args.endpoint == "http://127.0.0.1:9951"
    for bad, why in ((["subnet", "list", "--subtensor.network", "finney"], "subtensor network"),
                     (["subnet", "list", "--network", "ws://127.0.0.1:9944"], "subtensor network"),
                     (["stake", "add", "--netuid", "1", "--amount", "1", "--rate-tolerance", "1"], "[0, 1)")):
        with pytest.raises(SystemExit) as e:
            parse_args(bad)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and why in err


def test_hotkey_flag_takes_a_name_or_an_address() -> None:
    from template.chain.localnet.cli import context as ctx

    address = Keypair.create_from_uri("//Bob").ss58_address
    args = parse_args(["stake", "add", "--netuid", "1", "--amount", "1", "--hotkey", address])
    assert ctx.hotkey_is_address(args) and ctx.target_hotkey(args, None) == address
    with pytest.raises(CliError, match="is an address"):
        ctx.signing_hotkey(args, None)
    assert not ctx.hotkey_is_address(parse_args(["stake", "add", "--netuid", "1", "--amount", "1", "--hotkey", "h"]))


def test_bought_alpha_is_the_pool_drop_never_an_epoch_payout() -> None:
    from template.chain.localnet.cli.stake_cmds import bought_alpha

    # an epoch paid 29.5 alpha onto the stake in the block the 1.24 alpha purchase landed: only 1.24 was bought
    assert bought_alpha(1000 * RAO, 1000 * RAO - 1_240_000_000, 30_760_000_000, other_swaps=0, epochs_ran=1,
                        quote=1_240_000_000) == (1_240_000_000, True)
    assert bought_alpha(10, 5, 7, other_swaps=2, epochs_ran=0, quote=4) == (7, True)  # no epoch: the growth
    assert bought_alpha(10, 5, 7, other_swaps=2, epochs_ran=1, quote=4) == (4, False)  # both: the quote


def test_price_move_is_what_btcli_rate_tolerance_bounds() -> None:
    sub = {"subnet_tao_rao": 1000 * RAO, "alpha_in_rao": 1000 * RAO}
    # 1000 TAO into a 1000 TAO pool: price 1 -> about 4 (+300%), while half the value is lost to slippage
    assert pool.price_move_buy(sub, 1000 * RAO) == pytest.approx(3.0, rel=0.01)
    assert pool.slippage_buy(sub, 1000 * RAO) == pytest.approx(0.5, abs=0.001)
    # 10 TAO: +2% price move (btcli's default 5% lets it through), 1% slippage
    assert pool.price_move_buy(sub, 10 * RAO) == pytest.approx(0.0201, abs=0.0005)
    assert 0 < pool.price_move_sell(sub, 10 * RAO) == pytest.approx(0.0199, abs=0.0005)


def test_values_parse_by_the_parameter_type_and_print_in_their_unit() -> None:
    tempo, yuma3 = hparams.resolve("tempo"), hparams.resolve("yuma3")
    assert parse_value(tempo, "20") == 20 and parse_value(yuma3, "Off") is False and parse_value(yuma3, "1") is True
    with pytest.raises(CliError, match=r"tempo must be an integer \(blocks\), got 'abc'"):
        parse_value(tempo, "abc")
    with pytest.raises(CliError, match="true or false"):
        parse_value(yuma3, "2")
    assert explain("blocks", 360, {}, 12.0) == "360 blocks (72.0 min at 12 s/block)"
    assert explain("u16", 32767, {}, 1.0) == "32767 (0.5000)"
    assert explain("per_million", 900_000, {}, 1.0) == "900000 (0.9000)"
    assert explain("per_mille_tempo", 13_889, {"tempo": 360}, 1.0) == "13889 (13.889 x tempo = 5000 blocks)"
    assert explain("rao", 500_000, {}, 1.0) == "500000 rao (0.0005 TAO)"
    assert explain("bool", True, {}, 1.0) == "true"


def test_pool_quotes_are_the_chains_and_slippage_grows_with_the_amount() -> None:
    sub = {"subnet_tao_rao": 1000 * RAO, "alpha_in_rao": 1000 * RAO}
    assert pool.price(sub) == 1.0
    assert pool.quote_buy(sub, 1000 * RAO) == ChainState.quote_alpha_for_tao(
        type("S", (), {"subnet_tao": 1000 * RAO, "alpha_in": 1000 * RAO})(), 1000 * RAO)
    assert pool.slippage_buy(sub, 1000 * RAO) == pytest.approx(0.5, abs=0.001)  # 1000 TAO into a 1000 TAO pool
    assert pool.slippage_buy(sub, RAO) == pytest.approx(0.0015, abs=0.0002)  # the 0.05% fee plus 0.1% impact
    assert pool.slippage_sell(sub, 10 * RAO) < pool.slippage_sell(sub, 100 * RAO)


def test_dry_run_stops_before_asking_or_sending() -> None:
    from template.chain.localnet.cli.output import DryRun

    with pytest.raises(DryRun, match="Lock 1000 TAO"):
        confirm("Lock 1000 TAO?", assume_yes=True, stdin=io.StringIO("y\n"), dry_run=True)


def test_confirm_reads_a_piped_answer_and_gives_one_line_otherwise(capsys) -> None:
    confirm("Lock 1000 TAO?", assume_yes=True, stdin=io.StringIO(""))
    confirm("Lock 1000 TAO?", assume_yes=False, stdin=io.StringIO("y\n"))
    assert capsys.readouterr().err == "Lock 1000 TAO? [y/N] y\n"
    with pytest.raises(Aborted, match=r"Lock 1000 TAO\? \[y/N\] n: aborted, nothing was sent"):
        confirm("Lock 1000 TAO?", assume_yes=False, stdin=io.StringIO("n\n"))
    with pytest.raises(CliError, match="pass --yes"):
        confirm("Lock 1000 TAO?", assume_yes=False, stdin=io.StringIO(""))
    assert capsys.readouterr().err == ""


def test_table_aligns_numbers_right_and_text_left() -> None:
    out = io.StringIO()
    table(["uid", "hotkey", "stake"], [[0, "5Abc", 1.5], [12, "5Defgh", 100.25]], out=out)
    lines = out.getvalue().splitlines()
    assert lines == ["uid  hotkey     stake", "---  ------  --------", "  0  5Abc      1.5000", " 12  5Defgh  100.2500"]


def test_diff_states_names_the_paths_that_differ() -> None:
    stored = {"balances": {"a": 10, "b": 5}, "block": 7, "subnets": {"1": {"neurons": [{"stake": 1}]}}}
    replayed = {"balances": {"a": 9}, "block": 7, "subnets": {"1": {"neurons": [{"stake": 2}]}}}
    assert diff_states(stored, replayed) == ["balances.a: stored 10, replay gives 9",
                                             "balances.b: missing in the replay",
                                             "subnets.1.neurons[0].stake: stored 1, replay gives 2"]


def test_owner_cut_paid_per_epoch_and_in_total_is_recorded() -> None:
    state = ChainState.from_genesis(Genesis(timestamp=0.0, fee_base_rao=0, fee_per_byte_rao=0))
    alice, owner_hk = Keypair.create_from_uri("//Alice"), Keypair.create_from_uri("//owner_hk")

    def tx(call: str, **args: object) -> None:
        nonce = state.nonces.get(alice.ss58_address, 0)
        ok, err = apply_signed(state, sign_extrinsic(alice, call, dict(args), nonce, state.genesis.genesis_hash(),
                                                     birth=state.block))
        assert ok, err

    tx("register_network", hotkey=owner_hk.ss58_address)
    tx("set_hyperparameter", netuid=1, name="tempo", value=10)  # Alice is also the sudo key
    tx("start_call", netuid=1)
    sub = state.subnets["1"]
    paid = []
    for _ in range(35):
        epoch = sub.epoch_index
        state.begin_block(float(state.block + 1))
        if sub.epoch_index != epoch:
            paid.append(sub.owner_cut_last_epoch)
    per_block = coinbase.split_block_emission(RAO).owner_cut
    assert len(paid) == 3 and paid[1] == paid[2] == 10 * per_block  # full epochs pay tempo blocks of cut
    assert sub.owner_cut_total == sum(paid)
    view = subnet_summary(state, sub)
    assert view["owner_cut_total_rao"] == sum(paid) and view["owner_cut_last_epoch_rao"] == paid[-1]
    assert pool.owner_cut_per_epoch(view) == 10 * per_block
    assert state.stake_of(1, owner_hk.ss58_address) >= sum(paid)  # staked to the owner hotkey
