"""One subnet at one block, as every node reads it from the chain (DESIGN section 2). Pure data: the chain
adapters (`template.chain`) fill it, the protocol's rules (`template.protocol.lead`) read it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Metagraph:
    """One subnet at one block. Stake and emission are in alpha units (not rao); u16 scores are in [0, 1]."""

    netuid: int
    block: int
    n: int
    uids: list[int]
    hotkeys: list[str]
    coldkeys: list[str]
    stake: list[float]
    validator_permit: list[bool]
    incentive: list[float]
    dividends: list[float]
    consensus: list[float]
    emission: list[float]  # alpha per epoch
    last_update: list[int]
    active: list[bool]
    owner_hotkey: str
    owner_coldkey: str
    weights: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # uid -> [(uid, weight in [0,1])]

    def uid_of(self, hotkey: str) -> int | None:
        """The uid of `hotkey`, or None when it is not registered."""
        try:
            return self.hotkeys.index(hotkey)
        except ValueError:
            return None
