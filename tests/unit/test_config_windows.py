import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from template.protocol.config import HParams, load_hparams, parse_neuron_args
from template.protocol.windows import (
    on_time,
    reveal_deadline,
    upload_deadline,
    window_first_block,
    window_last_block,
    window_of_block,
)


def test_hparams_defaults_and_fingerprint_stable():
    a, b = HParams(), HParams()
    assert a.fingerprint() == b.fingerprint()
    assert HParams(topk=32).fingerprint() != a.fingerprint()


def test_hparams_file_and_overrides(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"inner_steps": 3, "outer_lr": 0.5}))
    h = load_hparams(path, {"topk": 16})
    assert (h.inner_steps, h.outer_lr, h.topk) == (3, 0.5, 16)


@pytest.mark.parametrize(
    "bad, field",
    [({"blocks_per_window": 0}, "blocks_per_window"), ({"topk": 5000}, "topk"), ({"nope": 1}, "nope"),
     ({"burn_rate": 1.5}, "burn_rate")],
)
def test_hparams_invalid_names_field(bad, field):
    with pytest.raises(ValueError, match=field):
        load_hparams(None, bad)


def test_hparams_unreadable_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read hparams"):
        load_hparams(tmp_path / "missing.json")


def test_neuron_cli_dotted_flags():
    cfg = parse_neuron_args(
        "miner",
        ["--wallet.name", "m1", "--wallet.hotkey", "h1", "--netuid", "3", "--subtensor.network", "local",
         "--subtensor.chain_endpoint", "http://127.0.0.1:9944", "--logging.debug", "--device", "cpu",
         "--hparam", "topk=32"],
    )
    assert cfg.wallet.name == "m1" and cfg.wallet.hotkey == "h1" and cfg.netuid == 3
    assert cfg.subtensor.chain_endpoint == "http://127.0.0.1:9944"
    assert cfg.logging.debug is True and cfg.device == "cpu"
    assert cfg.hparam_overrides == {"topk": 32}


@pytest.mark.parametrize(
    "argv, needle",
    [(["--netuid", "-1"], "netuid"), (["--device", "tpu"], "device"), (["--hparam", "bogus=1"], "bogus")],
)
def test_neuron_cli_rejects_bad_values(argv, needle, capsys):
    with pytest.raises(SystemExit):
        parse_neuron_args("validator", argv)
    assert needle in capsys.readouterr().err


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 1000))
def test_window_arithmetic_roundtrip(block, start, bpw):
    w = window_of_block(block, start, bpw)
    if block < start:
        assert w == -1
        return
    assert window_first_block(w, start, bpw) <= block <= window_last_block(w, start, bpw)
    assert window_last_block(w, start, bpw) + 1 == window_first_block(w + 1, start, bpw)


@given(st.floats(0, 1e10), st.floats(0, 3600), st.floats(-5, 5))
def test_deadline_at_one_second_resolution(ts, grace, offset):
    deadline = upload_deadline(ts, grace)
    lm = deadline + offset
    assert on_time(lm, deadline) == (int(lm) <= int(deadline))
    assert on_time(float(int(deadline)), deadline)
    assert not on_time(None, deadline) and not on_time(float("nan"), deadline)


def test_window_rejects_bad_length():
    with pytest.raises(ValueError, match="blocks_per_window"):
        window_of_block(5, 0, 0)


def test_one_reveal_deadline_and_one_wait_on_the_nodes_clock():
    """Issue 26: the reveal deadline is defined once (`reveal_deadline`), and a node waits past a time on its
    own clock (`WindowClock.now` / `sleep`, which a test replaces), + LastModified's 1 s resolution."""
    from template.node.neuron import StopFlag, WindowClock
    from tests.unit.fakes import FakeChain, tiny_hparams

    assert reveal_deadline(100.0, 30.0) == 130.0
    now = [1000.0]
    chain = FakeChain(genesis_s=0.0)
    clock = WindowClock(chain, tiny_hparams(upload_grace_s=2.0, reveal_grace_s=30.0),
                        now=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    last = clock.last_block(3)
    assert clock.reveal_deadline(3) == clock.deadline(3) + 30.0 == upload_deadline(last * 12.0, 2.0) + 30.0
    assert clock.wait_past(1010.0, StopFlag()) and 1011.0 <= now[0] < 1011.2
    stopped = StopFlag()
    stopped.set()
    assert not clock.wait_past(now[0] + 100.0, stopped)
    chain.advance_to(clock.last_block(0) + 1)
    assert clock.wait_past_deadline(0, StopFlag()) == clock.deadline(0)  # long past on this clock: at once
