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


def log_file_name(name: str) -> str:
    """A plain file name for the log of `name` (`miner:alice/default:rank1` -> `miner-alice-default-rank1.log`):
    no colon or slash, which shells, pm2 and log shippers trip on."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "neuron") + ".log"


# Dated UTC times: a log read a day later, or next to another host's, must say which day a line is from
LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS!UTC}Z | {level: <7} | {extra[name]} | {extra[ctx]}{message}"


def setup_logging(*, debug: bool = False, trace: bool = False, log_dir: str | None = None, name: str = "neuron",
                  rotation: str = "100 MB", retention: str = "14 days") -> Path | None:
    """Configure sinks: stderr at INFO (DEBUG/TRACE on request) and, with `log_dir`, a file there named by
    `log_file_name`, rotated at `rotation` (a size or a time, loguru's syntax) and its rotated files kept
    for `retention`, compressed. Returns the log file's path (None without `log_dir`)."""
    level = "TRACE" if trace else "DEBUG" if debug else "INFO"
    logger.remove()
    logger.configure(patcher=_patch, extra={"name": name})
    logger.add(sys.stderr, level=level, format=LOG_FORMAT, colorize=False, backtrace=False, diagnose=False)
    if not log_dir:
        return None
    path = Path(log_dir).expanduser() / log_file_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.add(str(path), level=level, format=LOG_FORMAT, diagnose=False, rotation=rotation, retention=retention,
               compression="gz", enqueue=False)
    return path
