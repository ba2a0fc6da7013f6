"""This code's release and the integer `version_key` validators send with their weights.

The subnet owner raises the chain's `weights_version` to force an upgrade: the chain refuses weights
whose `version_key` is lower, and a neuron whose own key is below it stops at start-up and at the next
window with one line saying which release to install (docs/upgrade.md). `CODE_VERSION` follows the
project version in pyproject.toml (a unit test keeps them equal).
"""

from __future__ import annotations

import re

CODE_VERSION = "0.1.0"
_SEMVER = re.compile(r"(\d{1,3})\.(\d{1,2})\.(\d{1,2})")


def version_key(version: str) -> int:
    """`MAJOR.MINOR.PATCH` -> MAJOR * 10000 + MINOR * 100 + PATCH (minor and patch below 100).

    Raises ValueError on anything else."""
    m = _SEMVER.fullmatch(version)
    if m is None:
        raise ValueError(f"version must be MAJOR.MINOR.PATCH with MINOR and PATCH below 100, got {version!r}")
    major, minor, patch = (int(g) for g in m.groups())
    return major * 10_000 + minor * 100 + patch


def version_of_key(key: int) -> str:
    """The inverse of `version_key`: 10203 -> "1.2.3". Raises ValueError on a negative key."""
    if key < 0:
        raise ValueError(f"version key must be >= 0, got {key}")
    return f"{key // 10_000}.{key // 100 % 100}.{key % 100}"


VERSION_KEY = version_key(CODE_VERSION)


def upgrade_required(weights_version: int, own_key: int = VERSION_KEY) -> str | None:
    """None when `own_key` satisfies the chain's `weights_version`, else the one line telling what to install."""
    if weights_version <= own_key:
        return None
    return (f"the subnet requires release >= {version_of_key(weights_version)} (weights_version {weights_version}) "
            f"and this is {version_of_key(own_key)} (version_key {own_key}): install it with `git pull && "
            "pip install -e .` (docs/upgrade.md), then start again")
