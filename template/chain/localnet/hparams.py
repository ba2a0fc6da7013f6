"""The localnet's subnet hyperparameter registry: names, aliases, units, ranges and who may set them.

One table, read by the chain (`calls.set_hyperparameter`), the CLI (`sudo set` range errors, its docs table)
and the docs. Permissions follow mainnet: the bittensor v11 SDK lists the owner-settable parameters in
`bittensor.intents.hyperparameters.OWNER_HYPERPARAMETERS` (AdminUtils `sudo_set_*` calls that accept the
subnet owner); everything else is root-only there, and root on the localnet is the sudo key (//Alice, as on
subtensor's localnet). Owner ranges are the chain's semantic windows as the SDK's `hyperparams.HYPERPARAMS`
states them (tempo 360..50400, activity_cutoff_factor 1000..50000 per mille of tempo, ...); root may use the
wider codec range (a tempo of 10 for a short local run, as subtensor's fast-blocks build).

`activity_cutoff` is read-only, as on mainnet: the epoch derives it as activity_cutoff_factor * tempo / 1000
blocks (at least 1).
"""

from __future__ import annotations

from dataclasses import dataclass

U16_MAX = 65535
U64_MAX = 2**64 - 1
RAO = 1_000_000_000
SUDO_URI = "//Alice"  # the localnet's root key, as on subtensor's dev chain


class HParamError(ValueError):
    """A hyperparameter change refused; `code` is the chain's error name (InvalidValue, BadOrigin, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class HParam:
    """One subnet hyperparameter.

    name: the localnet's canonical name (key of the hyperparameters view). sdk_name: the name btcli / the SDK's
    `SetHyperparameter` use. aliases: other accepted spellings. unit: blocks, epochs, u16 (65535 = 1.0),
    per_million, per_mille_tempo, rao, int or bool. root_range / owner_range: inclusive integer bounds; an
    owner_range of None means root-only. sudo_call: the AdminUtils extrinsic on subtensor.
    """

    name: str
    sdk_name: str
    unit: str
    default: int | bool
    root_range: tuple[int, int]
    owner_range: tuple[int, int] | None
    sudo_call: str
    description: str
    aliases: tuple[str, ...] = ()

    @property
    def owner_settable(self) -> bool:
        return self.owner_range is not None

    @property
    def is_bool(self) -> bool:
        return self.unit == "bool"


def _p(name: str, sdk: str, unit: str, default: int | bool, root: tuple[int, int], owner: tuple[int, int] | None,
       call: str, desc: str, aliases: tuple[str, ...] = ()) -> HParam:
    return HParam(name, sdk, unit, default, root, owner, call, desc, aliases)


BOOL = (0, 1)
_REGISTRY: tuple[HParam, ...] = (
    _p("tempo", "tempo", "blocks", 360, (1, U16_MAX), (360, 50_400), "sudo_set_tempo",
       "blocks per epoch; a change restarts the epoch cycle"),
    _p("kappa", "kappa", "u16", 32767, (0, U16_MAX), None, "sudo_set_kappa",
       "consensus majority-stake threshold (32767 = 0.5)"),
    _p("rho", "rho", "int", 10, (0, U16_MAX), (0, U16_MAX), "sudo_set_rho",
       "legacy trust-curve steepness; stored, unused by the current epoch"),
    _p("immunity_period", "immunity_period", "blocks", 5000, (0, U16_MAX), (0, U16_MAX),
       "sudo_set_immunity_period", "blocks a new neuron cannot be pruned"),
    _p("max_allowed_uids", "max_allowed_uids", "int", 256, (1, 4096), (1, 256), "sudo_set_max_allowed_uids",
       "uid slots; registrations beyond this prune the weakest neuron", ("max_uids",)),
    _p("max_allowed_validators", "max_validators", "int", 64, (1, 4096), None, "sudo_set_max_allowed_validators",
       "validator permits: the top-stake neurons up to this count", ("max_validators",)),
    _p("min_allowed_weights", "min_allowed_weights", "int", 1, (0, U16_MAX), (0, U16_MAX),
       "sudo_set_min_allowed_weights", "minimum entries in one set_weights"),
    _p("max_weight_limit", "max_weights_limit", "u16", U16_MAX, (0, U16_MAX), None, "sudo_set_max_weight_limit",
       "cap on one normalized weight (65535 = no cap)", ("max_weights_limit",)),
    _p("weights_rate_limit", "weights_rate_limit", "blocks", 100, (0, 2**32 - 1), None,
       "sudo_set_weights_set_rate_limit", "blocks between two weight sets (or commits) of one validator",
       ("weights_set_rate_limit",)),
    _p("weights_version", "weights_version", "int", 0, (0, U64_MAX), (0, U64_MAX), "sudo_set_weights_version_key",
       "minimum version_key a set_weights must carry", ("weights_version_key",)),
    _p("activity_cutoff_factor", "activity_cutoff_factor", "per_mille_tempo", 13_889, (1_000, 50_000),
       (1_000, 50_000), "sudo_set_activity_cutoff_factor",
       "blocks without weights before a validator is inactive, per mille of tempo (13889 x 360 -> 5000 blocks)"),
    _p("bonds_moving_average", "bonds_moving_avg", "per_million", 900_000, (0, 1_000_000), (0, 975_000),
       "sudo_set_bonds_moving_average", "bonds EMA retention (900000 = 0.9)", ("bonds_moving_avg",)),
    _p("bonds_penalty", "bonds_penalty", "u16", U16_MAX, (0, U16_MAX), (0, U16_MAX), "sudo_set_bonds_penalty",
       "penalty on out-of-consensus bonds (65535 = full)"),
    _p("yuma3_enabled", "yuma3_enabled", "bool", True, BOOL, BOOL, "sudo_set_yuma3_enabled",
       "run the Yuma3 epoch (on for every new subnet)", ("yuma3",)),
    _p("liquid_alpha_enabled", "liquid_alpha_enabled", "bool", False, BOOL, BOOL, "sudo_set_liquid_alpha_enabled",
       "per-weight bonds EMA between alpha_low and alpha_high", ("liquid_alpha",)),
    _p("alpha_low", "alpha_low", "u16", 45_875, (1_638, U16_MAX), (1_638, U16_MAX), "sudo_set_alpha_values",
       "liquid-alpha lower bound (<= alpha_high)"),
    _p("alpha_high", "alpha_high", "u16", 58_982, (1_638, U16_MAX), (1_638, U16_MAX), "sudo_set_alpha_values",
       "liquid-alpha upper bound (>= alpha_low)"),
    _p("alpha_sigmoid_steepness", "alpha_sigmoid_steepness", "int", 1000, (0, 2**15 - 1), (0, 2**15 - 1),
       "sudo_set_alpha_sigmoid_steepness", "liquid-alpha sigmoid steepness"),
    _p("commit_reveal_weights_enabled", "commit_reveal_weights_enabled", "bool", True, BOOL, BOOL,
       "sudo_set_commit_reveal_weights_enabled", "weights are committed hidden and revealed by the chain",
       ("commit_reveal_enabled",)),
    _p("commit_reveal_period", "commit_reveal_period", "epochs", 1, (1, 100), (1, 100),
       "sudo_set_commit_reveal_weights_interval", "tempos a committed weight set stays hidden",
       ("commit_reveal_weights_interval", "reveal_period")),
    _p("min_burn", "min_burn", "rao", 500_000, (0, U64_MAX), (0, U64_MAX), "sudo_set_min_burn",
       "registration burn floor (rao)"),
    _p("max_burn", "max_burn", "rao", 100 * RAO, (0, U64_MAX), (0, U64_MAX), "sudo_set_max_burn",
       "registration burn ceiling (rao)"),
    _p("burn_half_life", "burn_half_life", "blocks", 360, (1, U16_MAX), (1, U16_MAX), "sudo_set_burn_half_life",
       "blocks for the registration burn to halve"),
    _p("owner_cut_enabled", "owner_cut_enabled", "bool", True, BOOL, BOOL, "sudo_set_owner_cut_enabled",
       "the owner takes its 18% emission cut"),
    _p("registration_allowed", "registration_allowed", "bool", True, BOOL, BOOL,
       "sudo_set_network_registration_allowed", "burned registration is open (also gates emission)",
       ("network_registration_allowed",)),
)

HPARAMS: dict[str, HParam] = {p.name: p for p in _REGISTRY}
_BY_ANY_NAME: dict[str, HParam] = {}
for _hp in _REGISTRY:
    for _n in (_hp.name, _hp.sdk_name, *_hp.aliases):
        _BY_ANY_NAME[_n] = _hp

# Values the hyperparameters view shows but nobody sets directly.
READ_ONLY: dict[str, str] = {
    "activity_cutoff": "derived: max(1, activity_cutoff_factor * tempo / 1000) blocks; set activity_cutoff_factor",
    "burn": "the current registration burn (decays each block, x1.26 per registration)",
}

DEFAULTS: dict[str, int | bool] = {p.name: p.default for p in _REGISTRY}


def resolve(name: str) -> HParam:
    """The registry entry for a canonical name, SDK name or alias. Raises HParamError(UnknownHyperparameter)."""
    hp = _BY_ANY_NAME.get(str(name))
    if hp is None:
        if name in READ_ONLY:
            raise HParamError("ReadOnlyHyperparameter", f"{name} is {READ_ONLY[name]}")
        raise HParamError("UnknownHyperparameter", f"{name!r}; known: {', '.join(sorted(HPARAMS))}")
    return hp


def check_value(hp: HParam, value: object, *, root: bool) -> int | bool:
    """Validate `value` for `hp` as root or as the subnet owner; returns the stored value.

    Raises HParamError: BadOrigin (root-only parameter set by the owner) or InvalidValue (wrong type or out of
    the caller's range; the message names the range).
    """
    if not root and not hp.owner_settable:
        raise HParamError("BadOrigin", f"{hp.name} is root-only on subtensor; set it with the sudo key ({SUDO_URI})")
    if hp.is_bool:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise HParamError("InvalidValue", f"{hp.name} takes true/false, got {value!r}")
    lo, hi = hp.root_range if root else hp.owner_range  # type: ignore[misc]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        who = "root" if root else "the subnet owner"
        raise HParamError("InvalidValue", f"{hp.name} must be an integer in [{lo}, {hi}] for {who}, got {value!r}")
    return value


def activity_cutoff_blocks(factor_per_mille: int, tempo: int) -> int:
    """The epoch's activity cutoff in blocks: max(1, factor * tempo / 1000), as subtensor derives it."""
    return max(1, int(factor_per_mille) * int(tempo) // 1000)
