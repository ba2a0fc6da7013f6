"""Output of the localnet CLI: amounts with units, plain-text tables, JSON for scripts, confirmations.

Tables and messages go to stdout; questions and errors go to stderr, so `--json` output stays parseable.
ASCII only (no TAO/alpha glyphs): amounts read "1,000.0000 TAO" and "498.1234 alpha".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

RAO = 1_000_000_000


class CliError(Exception):
    """A user mistake or a refused call: printed as one line `error: <message>`, exit status 1."""


class Aborted(CliError):
    """The user answered no to a confirmation: nothing was sent."""


class DryRun(Exception):
    """--dry-run reached the point of sending: the preview was shown, nothing is sent (exit status 0)."""

    def __init__(self, question: str) -> None:
        super().__init__(question)
        self.question = question


def tao(rao: int | float) -> str:
    """rao -> "1,234.5678 TAO"."""
    return f"{rao / RAO:,.4f} TAO"


def alpha(rao: int | float) -> str:
    """rao -> "1,234.5678 alpha"."""
    return f"{rao / RAO:,.4f} alpha"


def units(rao: int | float) -> float:
    """rao -> TAO or alpha as a float (for JSON)."""
    return rao / RAO


def short(ss58: str | None, keep: int = 8) -> str:
    """First `keep` characters of an address and an ellipsis, for narrow table columns."""
    if not ss58:
        return "-"
    return ss58 if len(ss58) <= keep + 3 else f"{ss58[:keep]}..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None,
          title: str | None = None) -> None:
    """Print a plain-text table; numbers are right-aligned, text left-aligned."""
    out = out or sys.stdout
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    if title:
        out.write(title + "\n")
    out.write(fmt(list(headers)) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(fmt(row) + "\n")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.4f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 100_000 else str(v)
    return "-" if v is None else str(v)


def emit_json(obj: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def confirm(question: str, assume_yes: bool, stdin: TextIO | None = None, dry_run: bool = False) -> None:
    """Ask `question [y/N]` on stderr unless `assume_yes`. Raises Aborted on no, CliError without an answer,
    DryRun (before asking) when `dry_run`.

    On a terminal the question is asked first; from a pipe the answer is read first, so a closed stdin gives one
    error line, and the question is then echoed with its answer (the preview stays in logs).
    """
    if dry_run:
        raise DryRun(question)
    if assume_yes:
        return
    stdin = stdin or sys.stdin
    interactive = stdin.isatty()
    if interactive:
        sys.stderr.write(f"{question} [y/N] ")
        sys.stderr.flush()
    answer = stdin.readline()
    if not answer:
        if interactive:
            sys.stderr.write("\n")
        raise CliError(f"{question} needs an answer and stdin is closed; pass --yes to skip the question")
    answer = answer.strip()
    if answer.lower() not in ("y", "yes"):
        raise Aborted("aborted, nothing was sent" if interactive else f"{question} [y/N] {answer}: aborted, "
                      "nothing was sent")
    if not interactive:
        sys.stderr.write(f"{question} [y/N] {answer}\n")
