"""The peer list (DESIGN section 4.1): the uids whose uploads a window aggregates, signed by the lead and published
two windows ahead. Its body's shape is checked here, below the storage that reads it and the gauntlet that
selects it."""

from __future__ import annotations


def parse_peer_list(body: object, *, window: int) -> list[int]:
    """Validate the body of a signed peers artifact; ValueError names what is wrong."""
    if not isinstance(body, dict) or set(body) != {"window", "peers"}:
        raise ValueError("peer list body must be an object with exactly window and peers")
    if body["window"] != window:
        raise ValueError(f"peer list is for window {body['window']!r}, expected {window}")
    peers = body["peers"]
    if not isinstance(peers, list) or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 0
                                              for u in peers):
        raise ValueError("peer list peers must be a list of uids (ints >= 0)")
    if len(set(peers)) != len(peers):
        raise ValueError("peer list has duplicate uids")
    return list(peers)
