"""The real localnet node process against hostile input: arbitrary JSON to every route and call never gets a
5xx or stops block production; the inputs that used to kill it get 4xx or a named error; a node killed and
restarted under a resending client loses or duplicates nothing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from bittensor_wallet import Keypair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from template.chain.localnet.calls import ARG_SPECS
from template.chain.localnet.client import LocalnetClient
from template.chain.localnet.extrinsic import canonical_json
from template.chain.localnet.node import MAX_BODY_BYTES
from template.chain.localnet.process import LocalnetProcess

BLOCK_TIME = 0.2


def kp(name: str) -> Keypair:
    return Keypair.create_from_uri(f"//{name}")


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> LocalnetProcess:
    proc = LocalnetProcess(tmp_path_factory.mktemp("hostile") / "chain.sqlite", block_time=BLOCK_TIME)
    proc.start()
    c = LocalnetClient(proc.endpoint)
    c.connect()
    alice, owner = kp("Alice"), kp("owner")
    c.transfer(alice, owner.ss58_address, 5000.0).raise_for_error()
    netuid = c.register_network(owner, kp("owner_hk").ss58_address)
    c.set_hyperparameter(alice, netuid, "tempo", 10).raise_for_error()
    c.start_call(owner, netuid).raise_for_error()
    c.burned_register(kp("Bob"), kp("miner").ss58_address, netuid).raise_for_error()
    c.close()
    yield proc
    proc.stop()


def signed_raw(key: Keypair, call: str, args_json: str, nonce: int, genesis: str, birth: int) -> bytes:
    """A correctly signed extrinsic whose args are raw JSON text (possibly Infinity), as an attacker builds it."""
    payload_text = (f'{{"args":{args_json},"call":"{call}","era":[{birth},128],"genesis":"{genesis}",'
                    f'"nonce":{nonce},"signer":"{key.ss58_address}"}}')
    sig = key.sign(payload_text.encode()).hex()
    return f'{{"extrinsic":{{"payload":{payload_text},"signature":"{sig}"}},"wait":true}}'.encode()


def test_the_reported_killers_get_4xx_or_named_errors(node: LocalnetProcess) -> None:
    c = LocalnetClient(node.endpoint)
    c.connect()
    g, head = c.genesis_hash, c.block()
    post = lambda body: httpx.post(f"{node.endpoint}/extrinsic", content=body, timeout=30)  # noqa: E731
    args = '{"netuid":1,"uids":[Infinity],"weights":[1],"version_key":0}'
    assert post(signed_raw(kp("miner"), "set_weights", args, 0, g, head)).status_code == 400
    res = post(signed_raw(kp("miner"), "set_commitment", '{"fields":["x"],"netuid":1}', 0, g, head)).json()
    assert not res["ok"] and res["error"].startswith("BadArgs")
    assert post(b"[" * 100_000).status_code == 400
    assert post(b"\xff\xfe").status_code == 400
    assert post(b'{"extrinsic": 1, "wait": "yes"}').status_code == 400
    assert post(b"x" * (MAX_BODY_BYTES + 1)).status_code == 413
    assert post(b" " * (30 * 1024 * 1024)).status_code == 413
    for path in ("/block/99999999999999999999999999", "/block/-1", "/metagraph/99999999999999999999",
                 "/account/not-an-address", "/extrinsic/zz", "/nonce/%00"):
        assert httpx.get(f"{node.endpoint}{path}", timeout=30).status_code < 500, path
    res = c.transfer(kp("Alice"), "not-an-address", 1.0)
    assert not res.ok and res.error.startswith("BadAddress")
    res = c.set_weights(kp("miner"), 1, [float("inf")], [1.0])  # the client refuses to sign it
    assert not res.ok and res.error.startswith("BadArgs")
    big = c.submit(kp("miner"), "set_commitment", {"netuid": 1, "fields": [{"BigRaw": "62" * 512}] * 150})
    assert not big.ok and big.error.startswith("ExhaustsResources")
    stranger = c.submit(kp("stranger"), "set_commitment", {"netuid": 1, "fields": [{"Raw": "61"}]})
    assert not stranger.ok and stranger.error.startswith("NotRegistered")
    c.wait_for_block(c.block() + 2)  # still producing
    c.close()
    assert node.proc.poll() is None


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=16), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
ROUTES = ("/block", "/block/{}", "/metagraph/{}", "/commitments/{}", "/hyperparameters/{}", "/account/{}",
          "/nonce/{}", "/extrinsic/{}", "/subnets", "/network")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.data())
def test_arbitrary_json_to_every_call_and_route_never_gets_a_5xx(node: LocalnetProcess, data) -> None:
    http = httpx.Client(base_url=node.endpoint, timeout=30)
    head = http.get("/block").json()
    call = data.draw(st.sampled_from(sorted(ARG_SPECS)))
    spec = sorted(ARG_SPECS[call])
    args = data.draw(st.one_of(st.fixed_dictionaries({k: JSON for k in spec}), JSON))
    signer = kp(data.draw(st.sampled_from(["Alice", "miner", "owner", "stranger"])))
    nonce = http.get(f"/nonce/{signer.ss58_address}").json()["nonce"]
    payload = {"args": args, "call": call, "era": [head["number"], 128], "genesis": head["genesis_hash"],
               "nonce": nonce, "signer": signer.ss58_address}
    ext = {"payload": payload, "signature": signer.sign(canonical_json(payload)).hex()}
    res = http.post("/extrinsic", json={"extrinsic": ext, "wait": False})
    assert res.status_code < 500 and isinstance(res.json(), dict)
    garbage = data.draw(JSON)
    assert http.post("/extrinsic", content=json.dumps(garbage)).status_code < 500
    assert http.post("/extrinsics", content=json.dumps({"extrinsics": [garbage]})).status_code < 500
    printable = st.characters(min_codepoint=33, exclude_categories=("Cs", "Cc"))
    segment = data.draw(st.text(printable, min_size=1, max_size=30).filter(lambda s: "/" not in s and "?" not in s
                                                                 and "#" not in s and s not in (".", "..")))
    for route in ROUTES:
        assert http.get(route.format(segment)).status_code < 500, (route, segment)
    http.close()
    assert node.proc.poll() is None


def test_node_alive_and_producing_after_the_property_run(node: LocalnetProcess) -> None:
    c = LocalnetClient(node.endpoint)
    c.connect()
    head = c.block()
    assert c.wait_for_block(head + 2) >= head + 2
    c.close()


def test_kill_and_restart_under_a_resending_client_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    node = LocalnetProcess(tmp_path / "chain.sqlite", block_time=BLOCK_TIME)
    node.start()
    try:
        c = LocalnetClient(node.endpoint, retry_s=60.0)
        c.connect()
        sink = kp("sink").ss58_address
        results, stop = [], threading.Event()

        def sender() -> None:
            while not stop.is_set():
                results.append(c.transfer(kp("Alice"), sink, 0.001))

        t = threading.Thread(target=sender)
        t.start()
        for _ in range(3):
            time.sleep(1.5)
            node.kill()  # kill -9 while extrinsics are in flight
            time.sleep(0.5)
            node.start()
        time.sleep(1.5)
        stop.set()
        t.join(timeout=120)
        landed = [r for r in results if r.ok]
        assert [r.error for r in results if not r.ok] == [] and len(landed) > 10
        assert c.balance(sink) == pytest.approx(0.001 * len(landed))  # each ok landed exactly once
        c.close()
    finally:
        node.stop()
