"""storage/s3.py: every S3Client is made from one boto3 session (issue 18: a session per client parsed the S3
service model again, about 12 MB each, 3 GB for a validator reading 256 peers' buckets)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from storage.bounded import FetchBudget
from storage.s3 import S3Client


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
