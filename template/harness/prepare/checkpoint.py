"""Resuming a killed preparation: the corpus writer's state and input position, saved after a document batch.

A checkpoint holds the recipe it belongs to, so a rerun with other settings starts afresh (and deletes
the other recipe's shards) rather than mixing two corpora. The state JSON is replaced atomically and
written last, after the arrays it points to, so a kill mid-checkpoint leaves the previous one whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from template.harness.prepare.corpus_writer import CorpusWriter
from template.harness.prepare.shards import SplitWriter
from template.harness.prepare.sources import Position

STATE_FILE = "prepare_state.json"
CARRY_FILE = "prepare_carry.npy"
HELD_FILE = "prepare_held.npy"
SPLITS = ("train", "heldout")


def save_checkpoint(writer: CorpusWriter, position: Position, recipe: dict[str, Any]) -> None:
    """Save what `writer` holds and the input `position` its tokens reach."""
    out_dir = writer.out_dir
    np.save(out_dir / CARRY_FILE, writer.carry)
    if writer.held_back is not None:
        np.save(out_dir / HELD_FILE, writer.held_back)
    state = {"recipe": recipe, "position": list(position), "pages_emitted": writer.pages_emitted,
             "chunks": writer.chunks, "held_back": writer.held_back is not None,
             "train": writer.train.state(), "heldout": writer.heldout.state()}
    tmp = out_dir / (STATE_FILE + ".part")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, out_dir / STATE_FILE)


def load_state(out_dir: Path) -> dict[str, Any] | None:
    """The checkpoint's state, or None when there is none or it does not parse."""
    try:
        state = json.loads((out_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def checkpointed_recipe(out_dir: Path) -> dict[str, Any] | None:
    """The recipe of the checkpoint in `out_dir`, if any."""
    state = load_state(out_dir)
    return state.get("recipe") if state else None


def remove_shards(out_dir: Path) -> None:
    """Delete every shard file and index under `out_dir` (another recipe's output)."""
    for split in SPLITS:
        folder = out_dir / "shards" / split
        for path in folder.glob("*") if folder.is_dir() else []:
            path.unlink()


def resume_writer(recipe: dict[str, Any], fresh: CorpusWriter) -> tuple[CorpusWriter, Position]:
    """The writer and input position of a checkpoint of the same recipe, or `fresh` at (0, 0)."""
    out_dir = fresh.out_dir
    state = load_state(out_dir)
    if not state or state.get("recipe") != recipe:
        remove_shards(out_dir)
        return fresh, (0, 0)
    fresh.train = SplitWriter.from_state(out_dir, "train", fresh.train.shard_pages, state["train"])
    fresh.heldout = SplitWriter.from_state(out_dir, "heldout", fresh.heldout.shard_pages, state["heldout"])
    fresh.carry = np.load(out_dir / CARRY_FILE).astype(fresh.dtype)
    fresh.held_back = np.load(out_dir / HELD_FILE) if state["held_back"] else None
    fresh.pages_emitted, fresh.chunks = state["pages_emitted"], state["chunks"]
    logger.info(f"resuming {out_dir} after {fresh.pages_emitted} pages")
    return fresh, (state["position"][0], state["position"][1])


def clear_checkpoint(out_dir: Path) -> None:
    """Delete the checkpoint files (the corpus is finished)."""
    for name in (STATE_FILE, CARRY_FILE, HELD_FILE):
        (out_dir / name).unlink(missing_ok=True)
