"""Errors shared by the node and its command line, in a module light enough for `--help` to import."""

from __future__ import annotations


class ChainDatabaseError(Exception):
    """The node's database cannot be used as it is: one line naming the file and what to do (CLI exit 2)."""
