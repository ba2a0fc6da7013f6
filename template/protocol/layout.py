"""Every object key of the protocol in one place.

Neuron buckets hold versioned keys (``v{P}/...``, P = `PROTOCOL_VERSION`) so two protocol versions
never read each other's artifacts; the shared dataset bucket holds ``shards/...`` and ``hparams.json``.
Window numbers are zero-padded to 8 digits so lexicographic listing order is window order.
"""

from __future__ import annotations

import re

from template.protocol.config import PROTOCOL_VERSION

_ROOT = f"v{PROTOCOL_VERSION}"
_WINDOW_DIGITS = 8
_SHARD_DIGITS = 6

# Keys parse_window understands: gradients/records/peers files and checkpoint folders.
_WINDOW_KEY = re.compile(
    rf"^{_ROOT}/(?:gradients/(?P<g>\d{{{_WINDOW_DIGITS}}})\.safetensors"
    rf"|records/(?P<r>\d{{{_WINDOW_DIGITS}}})\.json"
    rf"|peers/(?P<p>\d{{{_WINDOW_DIGITS}}})\.json"
    rf"|checkpoints/(?P<c>\d{{{_WINDOW_DIGITS}}})/[^/]+"
    rf"|inputs/(?P<i>\d{{{_WINDOW_DIGITS}}})/[0-9a-f]{{64}}\.safetensors"
    rf"|keys/(?P<k>\d{{{_WINDOW_DIGITS}}})\.json"
    rf"|verdicts/(?P<v>\d{{{_WINDOW_DIGITS}}})\.json"
    rf"|checkpoint-verdicts/(?P<cv>\d{{{_WINDOW_DIGITS}}})\.json)$"
)
_INPUT_KEY = re.compile(rf"^{_ROOT}/inputs/\d{{{_WINDOW_DIGITS}}}/[0-9a-f]{{64}}\.safetensors$")


def _window_part(window: int) -> str:
    if not isinstance(window, int) or isinstance(window, bool) or not 0 <= window < 10**_WINDOW_DIGITS:
        raise ValueError(f"window must be an int in [0, 1e{_WINDOW_DIGITS}), got {window!r}")
    return f"{window:0{_WINDOW_DIGITS}d}"


def gradient_key(window: int) -> str:
    """Key of a miner's gradient artifact for `window`, e.g. ``v1/gradients/00000012.safetensors``."""
    return f"{_ROOT}/gradients/{_window_part(window)}.safetensors"


def record_key(window: int) -> str:
    """Key of the lead validator's aggregation record for `window`."""
    return f"{_ROOT}/records/{_window_part(window)}.json"


def peers_key(window: int) -> str:
    """Key of the peer list in force for `window`."""
    return f"{_ROOT}/peers/{_window_part(window)}.json"


def verdict_key(window: int) -> str:
    """Key of a validator's signed verdict on the lead's record of `window` (template/protocol/verdicts.py)."""
    return f"{_ROOT}/verdicts/{_window_part(window)}.json"


def checkpoint_verdict_key(window: int) -> str:
    """Key of a validator's signed verdict on the lead's checkpoint of `window` (`verdicts.CheckpointVerdict`):
    a key of its own, so the one verdict per window on the record (`verdict_key`) stays as it was."""
    return f"{_ROOT}/checkpoint-verdicts/{_window_part(window)}.json"


def checkpoint_prefix() -> str:
    """Prefix under which all checkpoints live (list it to find the latest)."""
    return f"{_ROOT}/checkpoints/"


def checkpoint_key(window: int) -> str:
    """Key of the checkpoint weights taken at `window`."""
    return f"{checkpoint_prefix()}{_window_part(window)}/model.safetensors"


def input_key(window: int, sha256: str) -> str:
    """Key of the lead's mirror of an update its record of `window` aggregates, addressed by the sha256 of the
    update's (unsealed) artifact file, e.g. ``v1/inputs/00000012/<64 hex>.safetensors``."""
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"sha256 must be 64 lowercase hex chars, got {sha256!r}")
    return f"{_ROOT}/inputs/{_window_part(window)}/{sha256}.safetensors"


def is_input_key(key: str) -> bool:
    """Whether `key` is a mirror key (`input_key`): it lives in the bucket of the record's signer."""
    return isinstance(key, str) and _INPUT_KEY.match(key) is not None


def key_reveal_key(window: int) -> str:
    """Key of the per-window key a miner reveals after the deadline to open its sealed update of `window`."""
    return f"{_ROOT}/keys/{_window_part(window)}.json"


def parse_window(key: str) -> int | None:
    """Window number of any key above (gradient, record, peers, checkpoint file, input, key reveal); None
    otherwise."""
    match = _WINDOW_KEY.match(key) if isinstance(key, str) else None
    if match is None:
        return None
    return int(next(v for v in match.groupdict().values() if v is not None))


def shard_key(split: str, index: int) -> str:
    """Key of dataset shard `index` of `split` (``train``/``heldout``...), e.g. ``shards/train/000003.bin``
    (raw little-endian tokens, whole samples)."""
    if not re.fullmatch(r"[a-z0-9_-]+", split):
        raise ValueError(f"split must match [a-z0-9_-]+, got {split!r}")
    if not isinstance(index, int) or not 0 <= index < 10**_SHARD_DIGITS:
        raise ValueError(f"shard index must be an int in [0, 1e{_SHARD_DIGITS}), got {index!r}")
    return f"shards/{split}/{index:0{_SHARD_DIGITS}d}.bin"


def shard_index_key(split: str, index: int) -> str:
    """Key of the page index of dataset shard `index` of `split` (the sha256 of each page, in order), e.g.
    ``shards/train/000003.idx``."""
    return shard_key(split, index)[: -len(".bin")] + ".idx"


def dataset_manifest_key() -> str:
    """Key of the dataset manifest in the dataset bucket."""
    return "shards/manifest.json"


def tokenizer_key() -> str:
    """Key of the dataset's tokenizer (``tokenizers`` JSON) in the dataset bucket."""
    return "shards/tokenizer.json"


def hparams_key() -> str:
    """Key of the run hyperparameters published by the subnet owner (dataset bucket)."""
    return "hparams.json"
