"""A single-process local subtensor chain: Yuma Consensus epoch, coinbase emission and the node state machine."""
