"""Local, crash-safe state: atomic JSON and safetensors files under a neuron's state dir.

Every write goes to a temporary file in the same folder, is fsynced and then renamed over
the old one, so a kill -9 at any moment leaves either the old or the new file, never half.
Nothing is pickled: optimizer state is flattened into safetensors plus JSON metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gauntlet.nearcopy import SketchEntry, SketchHistory
from gauntlet.progress import Probation
from gauntlet.ratings import Ratings
from gauntlet.sampling import Rotation


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


SEEN_PAYLOADS_KEPT = 4096  # payload digests remembered for replay detection


@dataclass(frozen=True)
class WindowSeed:
    """A validator's private randomness for one window (eval sample, copy sketch), kept so judging the same
    window again after a restart draws the same."""

    window: int
    seed: bytes


@dataclass(frozen=True)
class GatheredInputs:
    """What one window's gather set held: uid -> (hotkey, payload sha256), for the next window's check that
    the record's inputs are still there (`template.node.admission.vanished_inputs`)."""

    window: int
    uploads: dict[int, tuple[str, str]]


@dataclass
class ValidatorState:
    """Everything a validator carries from one window to the next; saved after every window
    (`save_validator_state`: run_state.json, ratings.json, near_copy.safetensors)."""

    ratings: Ratings
    sketches: SketchHistory = field(default_factory=SketchHistory.empty)  # earlier windows' updates (near-copies)
    last_window: int | None = None  # the last window judged (a restart resumes after it)
    last_weights_interval: int | None = None  # weights are set once per interval, never twice
    seen: list[str] = field(default_factory=list)  # payload digests of earlier windows (replays), newest last
    rotation: Rotation = field(default_factory=lambda: Rotation.from_state(None))  # who was evaluated when
    near_copy_key: bytes | None = None  # the near-copy sketches' private key, drawn once
    sample_seed: WindowSeed | None = None
    gathered: GatheredInputs | None = None
    restored_ratings: int = 0  # uids whose ratings were loaded from disk at start-up
    # lead: miners a step dropped (their own step did not lower the guard loss), off the peer lists until they
    # succeed `progress.REENTRY_SUCCESSES` windows in a row (saved: a restart does not put them back)
    probation: Probation = field(default_factory=Probation)
    # follower: (lead hotkey, window) of the checkpoints it has judged (`lead.check_lead_checkpoints`; in memory:
    # after a restart a checkpoint is judged again, to the same verdict)
    checked_checkpoints: set[tuple[str, int]] = field(default_factory=set)

    def remember_seen(self, digests: list[str]) -> None:
        self.seen = (self.seen + digests)[-SEEN_PAYLOADS_KEPT:]

    def run_state_json(self) -> dict[str, Any]:
        """run_state.json's body (the same keys as before the state was typed, so old files still load)."""
        out: dict[str, Any] = {"seen": list(self.seen), "rotation": self.rotation.state_dict()}
        if self.last_window is not None:
            out["last_window"] = self.last_window
        if self.last_weights_interval is not None:
            out["last_weights_interval"] = self.last_weights_interval
        if self.near_copy_key is not None:
            out["near_copy_key"] = self.near_copy_key.hex()
        if self.sample_seed is not None:
            out["sample_seed"] = {"window": self.sample_seed.window, "seed": self.sample_seed.seed.hex()}
        if self.gathered is not None:
            out["gathered"] = {"window": self.gathered.window,
                               "uploads": {str(u): [hk, sha] for u, (hk, sha) in self.gathered.uploads.items()}}
        if self.probation.needs:
            out["probation"] = {str(u): n for u, n in sorted(self.probation.needs.items())}
        return out

    def load_run_state_json(self, body: Any) -> None:
        """Take run_state.json's body; ValueError names what is wrong with it."""
        if not isinstance(body, dict):
            raise ValueError("run state must be a JSON object")
        try:
            self.last_window = None if body.get("last_window") is None else int(body["last_window"])
            interval = body.get("last_weights_interval")
            self.last_weights_interval = None if interval is None else int(interval)
            self.seen = [str(d) for d in body.get("seen", [])][-SEEN_PAYLOADS_KEPT:]
            self.rotation = Rotation.from_state(body.get("rotation"))
            key = body.get("near_copy_key")
            self.near_copy_key = bytes.fromhex(key) if key else None
            seed = body.get("sample_seed")
            self.sample_seed = WindowSeed(int(seed["window"]), bytes.fromhex(seed["seed"])) if seed else None
            gathered = body.get("gathered")
            self.gathered = None if not gathered else GatheredInputs(int(gathered["window"]), {
                int(u): (str(hk), str(sha)) for u, (hk, sha) in gathered["uploads"].items()})
            self.probation = parse_probation(body.get("probation"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"run state is unreadable ({e})") from e


def parse_probation(value: Any) -> Probation:
    """run_state.json's "probation" ({"uid": successes still needed}; absent in files from before it was
    saved: nobody is on probation). ValueError names a malformed entry."""
    if value is None:
        return Probation()
    if not isinstance(value, dict):
        raise ValueError("probation must be an object of uid -> successes still needed")
    needs = {}
    for uid, n in value.items():
        if not (isinstance(uid, str) and uid.isascii() and uid.isdigit() and len(uid) <= 9):
            raise ValueError(f"probation uid {uid!r} is not a uid")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= 1000:
            raise ValueError(f"probation of uid {uid} needs {n!r} successes, not a count in 1..1000")
        needs[int(uid)] = n
    return Probation(needs)


def load_validator_state(state_dir: Path, *, alpha: float) -> ValidatorState:
    """The validator's state saved under `state_dir` (fresh where nothing is saved). Raises ValueError with
    what to do when a file is unreadable."""
    state = ValidatorState(ratings=load_ratings(state_dir / "ratings.json", alpha=alpha),
                           sketches=load_sketch_history(state_dir / "near_copy.safetensors"))
    path = state_dir / "run_state.json"
    try:
        body = read_json(path, default=None)
        state.load_run_state_json({} if body is None else body)
    except ValueError as e:
        raise ValueError(f"{path}: {e}; move it away to start afresh") from e
    state.restored_ratings = len(state.ratings.state_dict()["ratings"])
    return state


def save_validator_state(state: ValidatorState, state_dir: Path) -> None:
    save_ratings(state.ratings, state_dir / "ratings.json")
    save_sketch_history(state.sketches, state_dir / "near_copy.safetensors")
    atomic_write_json(state_dir / "run_state.json", state.run_state_json())
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
