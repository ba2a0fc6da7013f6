"""Shared fixtures: one real SeaweedFS S3 server per test session.

`seaweed` starts `weed mini` on loopback with an admin identity and a few neuron identities
(buckets created up front), and stops it at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from storage.s3 import S3Client
from storage.seaweed import Identity, SeaweedServer, admin_identity, neuron_identities

NEURON_BUCKETS = ("alice", "bob", "carol")


@dataclass
class SeaweedFixture:
    """A running server plus its identities: `neurons[bucket] = (write, read)`."""

    server: SeaweedServer
    admin: Identity
    neurons: dict[str, tuple[Identity, Identity]] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def client(self, identity: Identity, **kwargs: object) -> S3Client:
        """An S3Client for `identity` on this server."""
        return S3Client(self.endpoint, identity.access_key, identity.secret_key, **kwargs)  # type: ignore[arg-type]

    def writer(self, bucket: str) -> S3Client:
        return self.client(self.neurons[bucket][0])

    def reader(self, bucket: str) -> S3Client:
        return self.client(self.neurons[bucket][1])


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFixture]:
    admin = admin_identity()
    neurons = {bucket: neuron_identities(bucket) for bucket in NEURON_BUCKETS}
    identities = [admin] + [identity for pair in neurons.values() for identity in pair]
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), identities)
    with server:
        fixture = SeaweedFixture(server=server, admin=admin, neurons=neurons)
        for bucket in NEURON_BUCKETS:
            fixture.writer(bucket).ensure_bucket(bucket)
        yield fixture
