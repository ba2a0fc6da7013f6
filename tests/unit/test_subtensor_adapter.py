"""The real-network adapter offline: make_chain routing, weight conversion to u16, commitment encoding,
metagraph/hyperparameter mapping from fake SDK objects, and SubtensorChain over a fake SDK client.
No chain is reachable here, so nothing talks to subtensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from bittensor_wallet import Keypair
from hypothesis import given, settings
from hypothesis import strategies as st

from template.chain import make_chain
from template.chain.base import Chain, ChainError, Metagraph, TxResult, weights_to_u16
from template.chain.localnet.client import LocalnetClient, commitment_fields
from template.chain.subtensor import (
    SubtensorChain,
    commitment_info,
    hyperparameters_from_sdk,
    metagraph_from_sdk,
    tx_result,
    weights_from_read,
)


def test_make_chain_routes_networks_without_io() -> None:
    local = make_chain("local", None)
    assert isinstance(local, LocalnetClient) and local.endpoint == "http://127.0.0.1:9946"
    assert make_chain("localnet", "http://127.0.0.1:1234").endpoint == "http://127.0.0.1:1234"
    for net, endpoint, target in [("finney", None, "finney"), ("test", None, "test"),
                                  ("archive", None, "archive"), ("wss://x.example:443", None, "wss://x.example:443"),
                                  ("local", "ws://127.0.0.1:9944", "ws://127.0.0.1:9944")]:
        chain = make_chain(net, endpoint)
        assert isinstance(chain, SubtensorChain) and chain.target == target
        assert isinstance(chain, Chain)
    with pytest.raises(ValueError, match="network must be one of"):
        make_chain("mainnet", None)


def test_tx_result_raise_for_error() -> None:
    assert TxResult(ok=True, block=3).raise_for_error().block == 3
    with pytest.raises(ChainError, match="SettingWeightsTooFast"):
        TxResult(ok=False, error="SettingWeightsTooFast").raise_for_error()


def test_weights_to_u16_max_upscales_and_drops_zeros() -> None:
    assert weights_to_u16([3, 1, 2], [0.5, 0.0, 0.25]) == ([3, 2], [65535, 32768])
    assert weights_to_u16([1, 2], [0.0, 0.0]) == ([], [])
    with pytest.raises(ValueError, match="same length"):
        weights_to_u16([1], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        weights_to_u16([1], [float("nan")])
    with pytest.raises(ValueError, match="finite"):
        weights_to_u16([1], [-1.0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1, max_size=40))
def test_weights_to_u16_keeps_the_max_at_65535_and_order(weights: list[float]) -> None:
    uids, values = weights_to_u16(list(range(len(weights))), weights)
    if max(weights) == 0:
        assert values == []
        return
    assert max(values) == 65535 and all(0 < v <= 65535 for v in values)
    assert uids == sorted(uids)
    for a, b in zip(uids, uids[1:], strict=False):  # order of weights is kept up to rounding
        if weights[a] > weights[b] * 1.001:
            assert values[uids.index(a)] >= values[uids.index(b)]


def test_commitment_encodings_fit_the_chain_limits() -> None:
    assert commitment_fields("abc") == [{"Raw": b"abc".hex()}]
    bucket = commitment_fields("x" * 220)  # a bucket commitment is 138-220 bytes
    assert [len(bytes.fromhex(f["Raw"])) for f in bucket] == [128, 92]
    with pytest.raises(ValueError, match="at most 384"):
        commitment_fields("x" * 385)
    assert commitment_info("abc") == {"fields": [{"Raw3": "0x616263"}]}
    assert [list(f) for f in commitment_info("y" * 300)["fields"]] == [["Raw128"], ["Raw128"], ["Raw44"]]
    with pytest.raises(ValueError, match="at most 384"):
        commitment_info("y" * 385)


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=200).filter(lambda t: len(t.encode()) <= 384))
def test_commitments_round_trip_through_the_sdks_own_decoders(data: str) -> None:
    """What we send is what every peer's SDK reads back: the metagraph and `commitment` read decoders."""
    import bittensor as bt
    from bittensor.metagraph import _decode_fields
    from bittensor.reads.identity import _decode_commitment_data

    info = commitment_info(data)
    assert len(info["fields"]) <= 3
    for entry in info["fields"]:
        (variant, value), = entry.items()
        assert variant == f"Raw{len(bytes.fromhex(value[2:]))}" and len(bytes.fromhex(value[2:])) <= 128
    assert _decode_fields(info["fields"]) == data
    assert _decode_commitment_data(info["fields"]) == data
    call = bt.calls.Commitments.set_commitment(3, info)
    assert (call.module, call.function, call.params["info"]) == ("Commitments", "set_commitment", info)


def test_a_bigraw_commitment_would_be_unreadable_to_sdk_peers() -> None:
    """Why the adapter never sends BigRaw: the SDK renders it as an opaque hash-like string."""
    from bittensor.metagraph import _decode_fields

    bucket = "b" * 200
    assert _decode_fields([{"BigRaw": "0x" + bucket.encode().hex()}]).startswith("bigraw:0x")


@dataclass
class FakeBalance:
    rao: int


@dataclass
class FakeNeuron:
    uid: int
    hotkey: str
    coldkey: str
    alpha_stake: FakeBalance
    emission: FakeBalance
    validator_permit: bool = False
    incentive: float = 0.0
    dividends: float = 0.0
    consensus: float = 0.0
    last_update: int = 0
    active: bool = True


@dataclass
class FakeMetagraph:
    netuid: int
    block: int
    owner_hotkey: str
    owner_coldkey: str
    neurons: list[FakeNeuron] = field(default_factory=list)


def fake_metagraph() -> FakeMetagraph:
    return FakeMetagraph(netuid=3, block=1000, owner_hotkey="hk0", owner_coldkey="ck0", neurons=[
        FakeNeuron(1, "hk1", "ck1", FakeBalance(2_500_000_000), FakeBalance(10**8), incentive=0.75, last_update=990),
        FakeNeuron(0, "hk0", "ck0", FakeBalance(10**9), FakeBalance(0), validator_permit=True, dividends=1.0),
    ])


def test_weights_read_in_the_sdk_shape_and_the_storage_shape() -> None:
    sdk_rows = {0: {1: 0.75, 2: 0.25}, 4: {}}  # v11's read: row-normalized fractions
    assert weights_from_read(sdk_rows) == {0: [(1, 1.0), (2, pytest.approx(1 / 3))], 4: []}
    assert weights_from_read([(0, [(1, 65535), (2, 21845)])]) == {0: [(1, 1.0), (2, pytest.approx(1 / 3))]}


def test_metagraph_mapping_from_the_sdk_object() -> None:
    mg = metagraph_from_sdk(fake_metagraph(), weights_from_read([(0, [(1, 65535), (0, 0)])]))
    assert isinstance(mg, Metagraph)
    assert (mg.netuid, mg.block, mg.n, mg.uids) == (3, 1000, 2, [0, 1])
    assert mg.hotkeys == ["hk0", "hk1"] and mg.coldkeys == ["ck0", "ck1"]
    assert mg.stake == [1.0, 2.5] and mg.emission == [0.0, 0.1]
    assert mg.validator_permit == [True, False] and mg.incentive == [0.0, 0.75] and mg.dividends == [1.0, 0.0]
    assert mg.last_update == [0, 990] and mg.uid_of("hk1") == 1 and mg.uid_of("nobody") is None
    assert mg.weights == {0: [(1, 1.0), (0, 0.0)]}


def test_hyperparameters_mapping_adds_canonical_names() -> None:
    hp = hyperparameters_from_sdk({"tempo": 360, "weights_version_key": 7, "weights_set_rate_limit": 100,
                                   "activity_cutoff": 5000, "commit_reveal_enabled": True,
                                   "min_burn": FakeBalance(500_000), "name": "sn3"})
    assert hp["weights_version"] == 7 and hp["weights_rate_limit"] == 100 and hp["activity_cutoff"] == 5000
    assert hp["commit_reveal_weights_enabled"] is True and hp["min_burn"] == 500_000 and "name" not in hp


class FakeClient:
    """The SyncClient surface SubtensorChain uses, recording writes."""

    def __init__(self) -> None:
        self.block = 1234
        self.calls: list[tuple[str, Any]] = []
        self.subnets = SimpleNamespace(
            metagraph=lambda netuid, commitments=False: fake_metagraph() if netuid == 3 else None,
            commitments=lambda netuid: {"hk1": SimpleNamespace(data="bucket=a"), "hk2": SimpleNamespace(data="")})

    def connect(self) -> FakeClient:
        return self

    def timestamp(self, block: int | None = None) -> datetime:
        return datetime.fromtimestamp(1_700_000_000 + 12 * (block or 0), tz=UTC)

    def read(self, name: str, **params: Any) -> Any:
        if name == "subnet_hyperparameters":
            return {"tempo": 99, "weights_version": 2} if params["netuid"] == 3 else None
        if name == "uid":
            return 1 if params["hotkey_ss58"] == "hk1" else None
        if name == "weights":
            raise RuntimeError("read not available")
        raise KeyError(name)

    def execute(self, intent: Any, wallet: Any) -> Any:
        self.calls.append(("execute", intent))
        return SimpleNamespace(success=True, extrinsic_id="1240-3")

    def submit_call(self, call: Any, wallet: Any) -> Any:
        self.calls.append(("submit_call", call))
        return SimpleNamespace(success=False, message="rejected", error=SimpleNamespace(name="SpaceLimitExceeded"))


def test_subtensor_chain_over_a_fake_sdk_client() -> None:
    fake = FakeClient()
    chain = SubtensorChain("finney", client_factory=lambda target: fake)
    assert chain._client is None  # no I/O before connect
    chain.connect()
    assert chain.block() == 1234
    assert chain.block_timestamp(10) - chain.block_timestamp(9) == 12.0
    assert chain.metagraph(3).hotkeys == ["hk0", "hk1"] and chain.metagraph(3).weights == {}
    with pytest.raises(ChainError, match="SubnetNotExists"):
        chain.metagraph(4)
    assert chain.commitments(3) == {"hk1": "bucket=a"}
    assert chain.hyperparameters(3)["tempo"] == 99
    assert chain.is_registered("hk1", 3) and not chain.is_registered("hk9", 3)
    hotkey = Keypair.create_from_uri("//v")
    res = chain.set_weights(hotkey, 3, [1, 2], [0.2, 0.8], version_key=5)
    assert res == TxResult(ok=True, block=1240)
    intent = fake.calls[-1][1]
    assert (intent.netuid, intent.uids, intent.version_key) == (3, [1, 2], 5)
    assert intent.weights[1] == 1.0 and intent.weights[0] == pytest.approx(0.25, abs=1e-4)
    res = chain.set_commitment(hotkey, 3, "bucket=b")
    assert res == TxResult(ok=False, error="SpaceLimitExceeded")
    call = fake.calls[-1][1]
    assert (call.module, call.function) == ("Commitments", "set_commitment")
    assert call.params == {"netuid": 3, "info": {"fields": [{"Raw8": "0x" + b"bucket=b".hex()}]}}
    assert chain.set_commitment(hotkey, 3, "z" * 5000).error.startswith("CommitmentTooLarge")


def test_a_hotkey_keypair_is_what_the_sdk_signs_with() -> None:
    from bittensor.signing import resolve_signer

    hotkey = Keypair.create_from_uri("//v")
    assert resolve_signer(hotkey, "hotkey") is hotkey  # our Chain passes Keypairs straight to execute()


def test_connect_failure_is_a_chain_error() -> None:
    def broken(target: str) -> Any:
        raise OSError("connection refused")

    with pytest.raises(ChainError, match="cannot connect"):
        SubtensorChain("finney", client_factory=broken).connect()
    assert tx_result(SimpleNamespace(success=False, message="boom", error=None)).error == "boom"


class FlakyClient(FakeClient):
    """A FakeClient whose first `failures` calls of each kind die like a dropped websocket."""

    def __init__(self, failures: int, error: BaseException) -> None:
        super().__init__()
        self.failures, self.error = failures, error
        self._block = 1234

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error

    @property
    def block(self) -> int:  # type: ignore[override]
        self._maybe_fail()
        return self._block

    @block.setter
    def block(self, value: int) -> None:
        self._block = value

    def read(self, name: str, **params: Any) -> Any:
        if name == "weights":
            return {0: {1: 0.75, 2: 0.25}}
        self._maybe_fail()
        return super().read(name, **params)

    def execute(self, intent: Any, wallet: Any) -> Any:
        self._maybe_fail()
        return super().execute(intent, wallet)


def flaky_chain(failures: int, error: BaseException, retry_s: float = 5.0,
                every_client: bool = False) -> tuple[SubtensorChain, list]:
    made: list[FlakyClient] = []

    def factory(target: str) -> FlakyClient:
        made.append(FlakyClient(failures if not made or every_client else 0, error))
        return made[-1]

    return SubtensorChain("finney", client_factory=factory, retry_s=retry_s, retry_sleep_s=0.01), made


def test_a_dropped_connection_is_retried_on_a_fresh_client() -> None:
    from bittensor.result import RpcConnectionError

    chain, made = flaky_chain(1, RpcConnectionError("websocket closed"))
    assert chain.block() == 1234 and len(made) == 2  # reconnected once
    chain, made = flaky_chain(1, ConnectionResetError("reset by peer"))
    assert chain.hyperparameters(3)["tempo"] == 99
    res = flaky_chain(1, TimeoutError("timed out"))[0].set_weights(Keypair.create_from_uri("//v"), 3, [1], [1.0])
    assert res.ok


def test_sdk_errors_become_chain_errors_and_failed_results() -> None:
    from bittensor.result import ChainError as SdkChainError
    from bittensor.result import ErrorCode, RpcConnectionError

    chain, _ = flaky_chain(10**6, RpcConnectionError("down"), retry_s=0.05, every_client=True)
    with pytest.raises(ChainError, match="Unreachable"):
        chain.block()
    assert chain.set_weights(Keypair.create_from_uri("//v"), 3, [1], [1.0]).error.startswith("Unreachable")
    too_soon = SdkChainError("Weights were last set 3 blocks ago", code=ErrorCode.RATE_LIMITED)
    chain, made = flaky_chain(1, too_soon)
    res = chain.set_weights(Keypair.create_from_uri("//v"), 3, [1], [1.0])
    assert not res.ok and res.error.startswith("SettingWeightsTooFast") and len(made) == 1  # no retry
    chain, _ = flaky_chain(1, SdkChainError("bad", name="SubnetNotExists"))
    with pytest.raises(ChainError, match="SubnetNotExists"):
        chain.hyperparameters(3)
    chain, _ = flaky_chain(1, ValueError("decode failed"))
    with pytest.raises(ChainError, match="ValueError"):
        chain.block()
    assert chain.set_weights(Keypair.create_from_uri("//v"), 3, [1], [float("inf")]).error.startswith("BadArgs")


def test_the_metagraph_carries_weights_in_the_sdk_shape() -> None:
    chain, _ = flaky_chain(0, OSError())
    assert chain.metagraph(3).weights == {0: [(1, 1.0), (2, pytest.approx(1 / 3))]}


def test_block_hash_comes_from_block_info_without_0x() -> None:
    fake = FakeClient()
    fake.block_info = lambda block=None: SimpleNamespace(hash="0x" + "ab" * 32) if block <= 1234 else None
    chain = SubtensorChain("finney", client_factory=lambda target: fake)
    chain.connect()
    assert chain.block_hash(1000) == "ab" * 32
    with pytest.raises(ChainError):
        chain.block_hash(2000)
