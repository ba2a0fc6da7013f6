import pytest
from loguru import logger

from storage.s3 import S3Error
from template.chain.base import ChainError
from template.node.logging_setup import redact, register_secret, setup_logging
from template.node.neuron import SetupError, run_neuron
from template.protocol.config import NeuronConfig


def test_registered_secret_never_printed(capsys):
    setup_logging(debug=True, name="t")
    register_secret("SuperSecretKey123")
    logger.info("credentials are SuperSecretKey123 ok")
    logger.debug("secret_key=abcdef123 and mnemonic: apple")
    err = capsys.readouterr().err
    assert "SuperSecretKey123" not in err and "abcdef123" not in err and "***" in err


def test_mnemonic_redacted():
    words = "abandon ability able about above absent absorb abstract absurd abuse access accident"
    assert "abandon" not in redact(f"phrase {words} end")


def test_bound_window_and_uid_are_printed(capsys):
    setup_logging(name="t")
    logger.bind(window=12, uid=3).info("gathered")
    logger.bind(window=7).warning("late")
    logger.info("plain")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("| t | w=12 uid=3 | gathered")
    assert lines[1].endswith("| t | w=7 | late")
    assert lines[2].endswith("| t | plain")


@pytest.mark.parametrize("error", [SetupError("hotkey not registered; register it"),
                                   ChainError("cannot reach the chain at http://127.0.0.1:1: connection refused"),
                                   S3Error("storage at http://127.0.0.1:1 did not answer")])
def test_an_expected_start_up_failure_is_one_line_and_exit_2(capsys, error):
    """Issue 26: a chain or storage out of reach at start-up ends like a SetupError: one logged line, status 2."""
    def runner(_cfg: NeuronConfig) -> None:
        raise error

    assert run_neuron(NeuronConfig(role="miner", netuid=1, device="cpu"), "miner", runner) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert "cannot start" in lines[0] and str(error).split(";")[0] in lines[0]
