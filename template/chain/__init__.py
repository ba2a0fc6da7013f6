"""Chain access for neurons: `make_chain(network, endpoint)` picks the local chain or the real subtensor.

Imports are lazy because the bittensor SDK is slow to import and the localnet does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from template.chain.base import Chain

LOCALNET_DEFAULT_ENDPOINT = "http://127.0.0.1:9946"
LOCAL_NETWORKS = ("local", "localnet")
SUBTENSOR_NETWORKS = ("finney", "test", "archive")


def make_chain(network: str, endpoint: str | None = None) -> Chain:
    """Build (not connect) a chain client.

    Args:
        network: "local"/"localnet" for our local chain; "finney"/"test"/"archive" for subtensor; a ws(s)://
            URL is also accepted here and means subtensor at that URL.
        endpoint: override URL: http(s) for the localnet node, ws(s) for a subtensor node.
    Raises:
        ValueError: unknown network name.
    """
    net = network.strip().lower()
    if net in LOCAL_NETWORKS and not (endpoint or "").startswith(("ws://", "wss://")):
        from template.chain.localnet.client import LocalnetClient

        return LocalnetClient(endpoint or LOCALNET_DEFAULT_ENDPOINT)
    if net in SUBTENSOR_NETWORKS or net.startswith(("ws://", "wss://")) or net in LOCAL_NETWORKS:
        from template.chain.subtensor import SubtensorChain

        return SubtensorChain(network=network, endpoint=endpoint)
    raise ValueError(f"network must be one of local, localnet, finney, test, archive or a ws(s):// URL, "
                     f"got {network!r}")


def connect(network: str, endpoint: str | None = None) -> Chain:
    """Build the chain client for `network` (see `make_chain`) and open its connection.

    Raises ChainError when the chain cannot be reached, ValueError for an unknown network.
    """
    chain = make_chain(network, endpoint)
    chain.connect()
    return chain
