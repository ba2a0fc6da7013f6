"""Local, crash-safe state: atomic JSON and safetensors files under a neuron's state dir.

Every write goes to a temporary file in the same folder, is fsynced and then renamed over
the old one, so a kill -9 at any moment leaves either the old or the new file, never half.
Nothing is pickled: optimizer state is flattened into safetensors plus JSON metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gauntlet.nearcopy import SketchEntry, SketchHistory
from gauntlet.ratings import Ratings


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    return load_file(str(path))


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Flatten an optimizer's state_dict into tensors + JSON metadata (no pickle)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in json.loads(meta["scalars"]).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def save_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    tensors, meta = optimizer_to_tensors(opt)
    save_tensors(path, tensors, meta)


def load_optimizer(path: Path, opt: torch.optim.Optimizer) -> bool:
    if not path.exists():
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    optimizer_from_tensors(opt, tensors, meta)
    return True


def load_ratings(path: Path, *, alpha: float) -> Ratings:
    """Ratings saved at `path`; a missing file gives fresh ratings. Raises ValueError on an unreadable file."""
    ratings = Ratings(alpha=alpha)
    try:
        state = read_json(Path(path), default=None)
        if state is not None:
            ratings.load_state_dict(state)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"ratings file {path} is unreadable ({e}); move it away to start from fresh ratings"
                         ) from e
    return ratings


def save_ratings(ratings: Ratings, path: Path) -> None:
    """Write `ratings` to `path` atomically."""
    atomic_write_json(Path(path), ratings.state_dict())


def save_sketch_history(history: SketchHistory, path: Path) -> None:
    """Write the near-copy check's sketches (`gauntlet.nearcopy`) to `path` atomically (safetensors)."""
    entries = [[e.window, e.uid, e.hotkey] for e in history.entries]
    save_tensors(Path(path), {"sketches": history.sketches}, {"entries": json.dumps(entries)})


def load_sketch_history(path: Path) -> SketchHistory:
    """The sketches saved at `path`; a missing file gives an empty history. Raises ValueError if unreadable."""
    path = Path(path)
    if not path.exists():
        return SketchHistory.empty()
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            sketches = f.get_tensor("sketches")
            entries = json.loads((f.metadata() or {})["entries"])
        return SketchHistory(sketches=sketches.to(torch.float32),
                             entries=tuple(SketchEntry(int(w), int(u), str(h)) for w, u, h in entries))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        raise ValueError(f"near-copy sketches {path} are unreadable ({e}); move the file away to start afresh"
                         ) from e


# -- the state folder's format version -------------------------------------------------------------
# RUN_STATE_VERSION names the format of everything in a neuron's state dir. A release that changes a
# file's format raises it and adds a step to STATE_MIGRATIONS (from version k to k + 1); a folder
# written by a newer release is refused rather than misread (docs/upgrade.md).
STATE_VERSION = 1
STATE_VERSION_FILE = "state_version.json"
# version k -> the step that turns a folder of version k into k + 1 (0: folders from before the stamp,
# same files, so the step only writes the stamp)
STATE_MIGRATIONS: dict[int, Any] = {0: lambda state_dir: None}


def plan_state_upgrade(found: int | None, has_files: bool, current: int = STATE_VERSION) -> list[int] | str:
    """The migration steps (versions to migrate from, in order) for a state folder stamped `found`
    (None: no stamp), or the reason it is refused. Pure."""
    start = found if found is not None else (0 if has_files else current)
    if start > current:
        return (f"written by a newer release (state format {start}, this code reads up to {current}); install that "
                "release again or move the folder away to start afresh")
    missing = [k for k in range(start, current) if k not in STATE_MIGRATIONS]
    if missing:
        return f"state format {start} has no migration to {current} (missing step from {missing[0]}); move it away"
    return list(range(start, current))


def open_state_dir(state_dir: Path, code_version: str) -> list[int]:
    """Check (and migrate) the format of `state_dir` before anything in it is read; stamp it with the
    current format. Returns the versions migrated from. Raises ValueError with the reason when refused."""
    state_dir = Path(state_dir)
    stamp_path = state_dir / STATE_VERSION_FILE
    try:
        stamp = read_json(stamp_path, default=None)
        found = None if stamp is None else int(stamp["state_version"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"state folder {state_dir}: {stamp_path.name} is unreadable ({e}); move the folder away"
                         ) from e
    has_files = state_dir.is_dir() and any(p.name != STATE_VERSION_FILE for p in state_dir.iterdir())
    plan = plan_state_upgrade(found, has_files)
    if isinstance(plan, str):
        raise ValueError(f"state folder {state_dir}: {plan}")
    for version in plan:
        STATE_MIGRATIONS[version](state_dir)
    if plan or found is None:
        atomic_write_json(stamp_path, {"state_version": STATE_VERSION, "written_by": code_version})
    return plan
