"""Who is aggregated (DESIGN section 4.1): the peer list and the gather set of a window.

Both are pure functions of ratings, admissions and evaluation results, with every tie
broken by uid, so the lead validator's choice is reproducible from its inputs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the type: aggregation must not depend on the codec module at import
    from gauntlet.checks import Admission


def select_peers(ordinals: dict[int, float], *, num_peers: int) -> list[int]:
    """The `num_peers` uids with the highest ordinal, best first; equal ordinals by lower uid."""
    if num_peers <= 0:
        raise ValueError(f"num_peers must be > 0, got {num_peers}")
    ranked = sorted((u for u, o in ordinals.items() if math.isfinite(o)), key=lambda u: (-ordinals[u], u))
    return ranked[:num_peers]


def select_gather_set(admissions: dict[int, Admission], improvement: dict[int, float], *,
                      peer_uids: list[int] | None, max_peers: int) -> list[int]:
    """Admitted uploads (of the peer list, when there is one) that improved the random-batch loss.

    At most `max_peers`, the best improvements first (ties by lower uid); returned sorted by
    uid so every node applies them in the same order.
    """
    if max_peers <= 0:
        raise ValueError(f"max_peers must be > 0, got {max_peers}")
    allowed = None if peer_uids is None else set(peer_uids)
    candidates = [
        uid for uid, adm in admissions.items()
        if adm.ok and adm.update is not None and (allowed is None or uid in allowed)
        and math.isfinite(improvement.get(uid, math.nan)) and improvement[uid] > 0
    ]
    best = sorted(candidates, key=lambda u: (-improvement[u], u))[:max_peers]
    return sorted(best)
