"""storage/s3.py: every S3Client is made from one boto3 session (issue 18: a session per client parsed the S3
service model again, about 12 MB each, 3 GB for a validator reading 256 peers' buckets), and one per-identity
client signs every peer's reads with that peer's keys (a client per peer still held ~0.5 MB each)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from storage.bounded import FetchBudget, Identity, signed_for
from storage.s3 import IDENTITY_ENDPOINT, S3Client, Status


def make(i: int, budget: FetchBudget | None = None) -> S3Client:
    return S3Client("http://127.0.0.1:9", f"KEY{i:04d}", "secret-not-used", budget=budget)  # no I/O until a call


def test_clients_share_the_parsed_service_model_but_not_their_hooks():
    with ThreadPoolExecutor(8) as pool:  # peers' clients are made in fetch workers, at once
        clients = list(pool.map(make, range(16)))
    loaders = {id(c._client._loader) for c in clients}
    assert len(loaders) == 1
    bounded, plain = make(99, FetchBudget()), make(98)
    hooks = "before-send.s3.GetObject"
    assert list(bounded._client.meta.events._emitter._handlers.prefix_search(hooks))
    assert not list(plain._client.meta.events._emitter._handlers.prefix_search(hooks))
    creds = {c._client._request_signer._credentials.access_key for c in clients}
    assert len(creds) == 16


def test_a_per_identity_request_goes_to_the_identity_signed_with_its_keys():
    """storage/bounded.py `signed_for`: the unsigned client's request is sent to the thread's identity's
    endpoint (path prefix kept) and carries that identity's SigV4 credential; another identity's differs."""
    request = SimpleNamespace(method="GET", url="http://identity.invalid/bucket-a/v1/k?x-id=GetObject", body=None,
                              headers={"User-Agent": b"botocore", "amz-sdk-request": "attempt=1"})
    alice = Identity("https://alice.example:8443/prefix", "ALICEKEY", "alice-secret", "auto")
    url, headers = signed_for(request, alice)
    assert url == "https://alice.example:8443/prefix/bucket-a/v1/k?x-id=GetObject"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=ALICEKEY/")
    assert "/auto/s3/aws4_request" in headers["Authorization"] and headers["User-Agent"] == "botocore"
    _, other = signed_for(request, Identity("https://alice.example:8443/prefix", "ALICEKEY", "not-hers", "auto"))
    assert other["Authorization"] != headers["Authorization"]  # the signature is the secret's


def test_a_per_identity_client_needs_a_budget_and_an_identity():
    with pytest.raises(ValueError, match="budget"):
        S3Client(IDENTITY_ENDPOINT, "", "", per_identity=True)
    shared = S3Client.for_identities(FetchBudget(total_s=2.0), max_attempts=1)
    res = shared.get("bucket", "key")  # no as_identity(): refused before any connection
    assert res.status is Status.ERROR and "as_identity" in (res.error or "")
