from loguru import logger

from template.node.logging_setup import redact, register_secret, setup_logging


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
