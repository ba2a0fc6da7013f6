"""One place that configures loguru sinks and keeps secrets out of every log line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

_SECRETS: set[str] = set()
# mnemonic-looking runs of 12+ lowercase words, and key=value pairs whose name says secret
_SECRET_PATTERNS = [
    re.compile(r"(?i)((?:secret|password|mnemonic|seed)[_a-z]*['\"]?\s*[:=]\s*['\"]?)([^\s'\",}]+)"),
    re.compile(r"\b(?:[a-z]{3,8} ){11,23}[a-z]{3,8}\b"),
]


def register_secret(value: str | None) -> None:
    """Any later log line containing `value` prints it as ***."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for s in _SECRETS:
        text = text.replace(s, "***")
    text = _SECRET_PATTERNS[0].sub(lambda m: m.group(1) + "***", text)
    return _SECRET_PATTERNS[1].sub("***", text)


def _context(extra: dict[str, Any]) -> str:
    """The bound context of a line (`logger.bind(window=..., uid=...)`) as `w=12 uid=3 | `, or ''."""
    parts = [f"{short}={extra[key]}" for key, short in (("window", "w"), ("uid", "uid")) if extra.get(key) is not None]
    return " ".join(parts) + " | " if parts else ""


def _patch(record: Record) -> None:
    record["message"] = redact(record["message"])
    record["extra"]["ctx"] = _context(record["extra"])


def setup_logging(*, debug: bool = False, trace: bool = False, log_dir: str | None = None, name: str = "neuron") -> None:
    """Configure sinks: stderr at INFO (DEBUG/TRACE on request), optional file sink."""
    level = "TRACE" if trace else "DEBUG" if debug else "INFO"
    logger.remove()
    logger.configure(patcher=_patch)
    fmt = "{time:HH:mm:ss.SSS} | {level: <7} | " + name + " | {extra[ctx]}{message}"
    logger.add(sys.stderr, level=level, format=fmt, colorize=False, backtrace=False, diagnose=False)
    if log_dir:
        Path(log_dir).expanduser().mkdir(parents=True, exist_ok=True)
        logger.add(str(Path(log_dir).expanduser() / f"{name}.log"), level=level, format=fmt, diagnose=False)
