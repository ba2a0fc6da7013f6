"""What every CLI command needs: a connected client, the wallet's keys, a subnet's summary, chain-error hints.

Each helper turns a user mistake (no node at the endpoint, a missing key file, an unknown subnet) into a
`CliError` with one line that names the thing and the fix.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from template.chain.base import ChainError, TxResult
from template.chain.localnet.cli.output import CliError

DEFAULT_ENDPOINT = "http://127.0.0.1:9946"
DEFAULT_WALLET_PATH = "~/.bittensor/wallets"
CONNECT_RETRY_S = 2.0

# chain error name -> what it means for the person at the keyboard
ERROR_HINTS = {
    "SubnetNotExists": "no such subnet (`subnet list` shows them)",
    "MechanismDoesNotExist": "no such subnet (`subnet list` shows them)",
    "BadOrigin": "only the subnet owner's coldkey may do this",
    "CannotAffordLockCost": "the coldkey's free balance is below the lock cost",
    "NotEnoughBalanceToStake": "the coldkey's free balance is too small",
    "InsufficientBalance": "the coldkey's free balance is too small",
    "SubtokenDisabled": "staking opens after `subnet start` (start_call) on this subnet",
    "FirstEmissionBlockNumberAlreadySet": "this subnet was already started",
    "HotKeyAlreadyRegisteredInSubNet": "this hotkey already has a uid on the subnet",
    "NonAssociatedColdKey": "the hotkey belongs to another coldkey",
    "HotKeyAccountNotExists": "the hotkey is unknown to the chain (register it first)",
    "NotEnoughStakeToWithdraw": "the coldkey holds less alpha on this hotkey (`stake list`)",
    "AmountTooLow": "the amount is below the chain's minimum (0.002 TAO plus the pool fee for stake)",
    "HotKeyNotRegisteredInSubNet": "the hotkey has no uid on this subnet (`subnet register`)",
    "SettingWeightsTooFast": "weights_rate_limit blocks have not passed since the last weight set",
    "CommittingWeightsTooFast": "weights_rate_limit blocks have not passed since registration or the last commit",
    "NeuronNoValidatorPermit": "no validator permit yet (permits come from the previous epoch's stake)",
    "CommitRevealEnabled": "commit-reveal is on for this subnet: plain set_weights is refused",
    "SubNetRegistrationDisabled": "registration is off on this subnet (registration_allowed)",
    "AdminActionProhibitedDuringWeightsWindow": "hyperparameters are frozen in the last blocks before an epoch",
    "TxRateLimitExceeded": "this hyperparameter was changed too recently",
    "NetworkTxRateLimitExceeded": "a subnet was created too recently (network rate limit)",
    "UnknownHyperparameter": "no such hyperparameter (`subnet hyperparameters` lists them)",
    "InsufficientLiquidity": "the pool cannot fill this amount",
}


def client(args: argparse.Namespace):
    """A connected LocalnetClient for `--subtensor.chain_endpoint`; CliError when no node answers."""
    from template.chain.localnet.client import LocalnetClient

    endpoint = args.endpoint
    c = LocalnetClient(endpoint, timeout_s=60.0, retry_s=CONNECT_RETRY_S)
    try:
        c.connect()
    except ChainError as e:
        raise CliError(f"no localnet node answers at {endpoint}: start one with `python -m template.chain.localnet "
                       f"serve --db runs/chain.sqlite` or pass --subtensor.chain_endpoint") from e
    return c


def chain_error(e: ChainError | str) -> CliError:
    """A CliError naming the chain's error and what it means."""
    text = str(e)
    name = text.split(":", 1)[0].strip()
    hint = ERROR_HINTS.get(name)
    return CliError(f"{text} ({hint})" if hint and hint not in text else text)


def check(res: TxResult) -> TxResult:
    """`res` when the extrinsic succeeded, else a CliError with the chain's error name and a hint."""
    if not res.ok:
        raise chain_error(res.error or "extrinsic failed")
    return res


def wallet_path(args: argparse.Namespace) -> Path:
    return Path(args.wallet_path).expanduser()


def wallet(args: argparse.Namespace, coldkey: bool = True, hotkey: bool = True):
    """The wallet named by the flags, checked: CliError when a needed key file is missing or unreadable.

    `coldkey`: the private coldkey is needed (signing); otherwise only coldkeypub.txt. `hotkey`: the hotkey
    file is needed.
    """
    from bittensor_wallet import Wallet

    path = wallet_path(args)
    w = Wallet(name=args.wallet_name, hotkey=args.wallet_hotkey, path=str(path))
    create = f"`python -m template.chain.localnet wallet create --wallet.name {args.wallet_name}"
    if not (path / args.wallet_name).is_dir():
        raise CliError(f"no wallet {args.wallet_name!r} in {path}; create it with {create}` or pass --wallet.path")
    if hotkey and hotkey_is_address(args):
        hotkey = False  # --hotkey names an address: no hotkey file is needed (or read)
    cold_file = w.coldkey_file if coldkey else w.coldkeypub_file
    if not cold_file.exists_on_device():
        raise CliError(f"wallet {args.wallet_name!r} has no {'coldkey' if coldkey else 'coldkeypub.txt'} at "
                       f"{cold_file.path}; create it with {create}`")
    if hotkey and not w.hotkey_file.exists_on_device():
        raise CliError(f"wallet {args.wallet_name!r} has no hotkey {args.wallet_hotkey!r} at {w.hotkey_file.path}; "
                       f"create it with {create} --wallet.hotkey {args.wallet_hotkey}`")
    return w


def is_ss58(text: str) -> bool:
    """True when `text` is an SS58 address (prefix 42 or any other the wallet library decodes)."""
    from bittensor_wallet import Keypair

    try:
        Keypair(ss58_address=text)
    except (ValueError, TypeError):
        return False
    return True


def hotkey_is_address(args: argparse.Namespace) -> bool:
    """--hotkey / --wallet.hotkey holds an SS58 address rather than a hotkey name (btcli takes either)."""
    return is_ss58(getattr(args, "wallet_hotkey", "") or "")


def target_hotkey(args: argparse.Namespace, w) -> str:
    """The hotkey address a coldkey-signed call names: --hotkey as an address, else the wallet's hotkey."""
    return args.wallet_hotkey if hotkey_is_address(args) else hotkey_ss58(w)


def signing_hotkey(args: argparse.Namespace, w) -> Any:
    """The hotkey keypair for a hotkey-signed call; an address in --hotkey cannot sign."""
    if hotkey_is_address(args):
        raise CliError(f"--hotkey {args.wallet_hotkey} is an address: this call is signed by the hotkey itself, so "
                       "pass the name of a hotkey of the wallet (its key file signs)")
    return hotkey(w)


def keypair(load) -> Any:
    """Call a wallet key getter, turning an unreadable or encrypted-and-refused key file into one CliError."""
    from bittensor_wallet.errors import KeyFileError, PasswordError

    try:
        return load()
    except (KeyFileError, PasswordError) as e:
        raise CliError(f"cannot read the key file: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def coldkey(w) -> Any:
    return keypair(lambda: w.coldkey)


def coldkey_ss58(w) -> str:
    return keypair(lambda: w.coldkeypub.ss58_address)


def hotkey(w) -> Any:
    return keypair(lambda: w.hotkey)


def hotkey_ss58(w) -> str:
    return keypair(lambda: w.hotkey.ss58_address)


def subnet(c, netuid: int) -> dict[str, Any]:
    """The `/subnets` summary of `netuid`; CliError when it does not exist."""
    subnets = c.subnets()
    if str(netuid) not in subnets:
        have = ", ".join(sorted(subnets, key=int)) or "none yet"
        raise CliError(f"subnet {netuid} does not exist (SubnetNotExists); subnets on this chain: {have}")
    return subnets[str(netuid)]


def validate_ss58(address: str, flag: str) -> str:
    from bittensor_wallet import Keypair

    try:
        Keypair(ss58_address=address)
    except (ValueError, TypeError) as e:
        raise CliError(f"{flag} {address!r} is not an SS58 address") from e
    return address
