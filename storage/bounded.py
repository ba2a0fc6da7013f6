"""Fetch budgets: no read of a peer's storage can hold a node past a deadline or below a byte rate.

A peer's endpoint is whatever its owner runs, so it may answer slowly on purpose: accept the
connection and never answer, or trickle headers or body one byte every few seconds. Socket
timeouts only bound one `recv`, so they stop neither. Here every request of a bounded client
goes over a connection this module owns (botocore's `before-send` hook: boto still signs the
request and parses the answer), with a watchdog that shuts the socket down when the request's
time is up. The time a request gets:

- at most until the caller's deadline (`deadline()`, one per object read, all attempts
  included; `FetchBudget.total_s` when the caller set none);
- once the headers say how long the body is, at most `startup_s + size / min_bytes_per_s`
  from the request's start;
- and while the body streams, it is dropped as soon as it falls behind that rate.

A read cut short raises `FetchTimeout`, which the client reports as a TIMEOUT status (never
retried: a tarpit asked again is only slow again).

A transport made with `sign=True` also signs each request (SigV4, botocore's signer) for the peer
identity the calling thread set with `as_identity()`, sent to that identity's endpoint: one such client
reads every peer's bucket (issue 18: a botocore client per peer held about 0.5 MB each).
"""

from __future__ import annotations

import http.client
import math
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials

CHUNK_BYTES = 64 << 10  # one socket read at most; the rate is checked after each


class FetchTimeout(Exception):
    """A read ran past its budget (deadline or minimum byte rate); the message says which."""


@dataclass(frozen=True)
class FetchBudget:
    """Time limits of one object read.

    total_s: no object read (connect, headers, body, every retry) lasts longer.
    min_bytes_per_s: a body must arrive at least this fast on average, counted after `startup_s`.
    startup_s: allowance for connecting and the first byte before the rate counts.
    """

    total_s: float = 30.0
    min_bytes_per_s: float = 256 << 10
    # generous: an honest peer's small upload read by a busy node (many neurons on few cores) must not
    # time out, or the lead's gather set differs from the miners'; a tarpit is still cut at total_s
    startup_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("total_s", "min_bytes_per_s", "startup_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"FetchBudget.{name} must be a finite number > 0, got {value!r}")

    def allowance_s(self, size: int) -> float:
        """Seconds an object of `size` bytes may take at most."""
        return min(self.total_s, self.startup_s + size / self.min_bytes_per_s)

    def behind(self, received: int, elapsed_s: float) -> bool:
        """True when `received` bytes after `elapsed_s` seconds is below the minimum rate."""
        return received < (elapsed_s - self.startup_s) * self.min_bytes_per_s


@dataclass(frozen=True)
class Identity:
    """Whose keys sign a request and where it goes: a peer's endpoint URL, read keys and region."""

    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"


_active = threading.local()


@contextmanager
def as_identity(identity: Identity) -> Iterator[None]:
    """Every request a signing transport (`BoundedTransport(sign=True)`) sends from this thread inside the
    block goes to `identity.endpoint`, signed with its keys."""
    outer = getattr(_active, "identity", None)
    _active.identity = identity
    try:
        yield
    finally:
        _active.identity = outer


def current_identity() -> Identity | None:
    """The identity set by `as_identity()` in this thread, if any."""
    return getattr(_active, "identity", None)


def signed_for(request: Any, identity: Identity) -> tuple[str, dict[str, str]]:
    """(URL, headers) of `request` (botocore's, made by an unsigned client) sent to `identity.endpoint`,
    signed with its keys (SigV4 for S3, as a client holding those keys would sign it)."""
    parts = urlsplit(request.url)
    url = identity.endpoint.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    body = request.body if request.body not in (None, "") else b""
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
    signed = AWSRequest(method=request.method, url=url, headers=headers, data=body)
    creds = Credentials(identity.access_key_id, identity.secret_access_key)
    S3SigV4Auth(creds, "s3", identity.region).add_auth(signed)
    return url, dict(signed.headers.items())


@contextmanager
def deadline(at_monotonic: float, budget: FetchBudget | None = None) -> Iterator[None]:
    """Every bounded request made by this thread inside the block ends by `at_monotonic` (time.monotonic),
    an earlier deadline of an enclosing block still holding; `budget` (if given) replaces the client's
    own rate limits inside the block."""
    outer, outer_budget = getattr(_active, "deadline", None), getattr(_active, "budget", None)
    _active.deadline = at_monotonic if outer is None else min(outer, at_monotonic)
    _active.budget = budget or outer_budget
    try:
        yield
    finally:
        _active.deadline, _active.budget = outer, outer_budget


def current_deadline() -> float | None:
    """The deadline set by `deadline()` in this thread, if any (time.monotonic seconds)."""
    return getattr(_active, "deadline", None)


def current_budget() -> FetchBudget | None:
    """The budget set by `deadline()` in this thread, if any."""
    return getattr(_active, "budget", None)


class _Watchdog:
    """Shuts a socket down at a time; a blocked recv/send in another thread then returns at once."""

    def __init__(self) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self, sock: socket.socket | None, at_monotonic: float) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._sock = sock or self._sock
            self._timer = threading.Timer(max(0.0, at_monotonic - time.monotonic()), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


class _Body:
    """The response body as botocore reads it (`read`, `stream`, `close`), checked against the budget."""

    def __init__(self, budget: FetchBudget, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse, dog: _Watchdog, start: float, what: str) -> None:
        self._budget, self._conn, self._resp, self._dog, self._start, self._what = budget, conn, resp, dog, start, what
        self.received = 0
        self._closed = False

    def read(self, amt: int | None = None) -> bytes:
        parts: list[bytes] = []
        want = math.inf if amt is None else amt
        got = 0
        while got < want and not self._closed:
            try:
                chunk = self._resp.read1(int(min(CHUNK_BYTES, want - got)))
            except (OSError, http.client.HTTPException):
                self._raise_if_timed_out()
                self.close()
                raise
            self._raise_if_timed_out()
            if not chunk:
                self.close()
                break
            parts.append(chunk)
            got += len(chunk)
            self.received += len(chunk)
            if self._budget.behind(self.received, time.monotonic() - self._start):
                self.close()
                raise FetchTimeout(f"{self._what}: {self.received} bytes after {time.monotonic() - self._start:.1f} s, "
                                   f"below the minimum rate of {self._budget.min_bytes_per_s:.0f} B/s")
        return b"".join(parts)

    def stream(self, amt: int = CHUNK_BYTES) -> Iterator[bytes]:
        while chunk := self.read(amt):
            yield chunk

    def _raise_if_timed_out(self) -> None:
        if self._dog.fired:
            self.close()
            raise FetchTimeout(f"{self._what}: time budget used up after {time.monotonic() - self._start:.1f} s "
                               f"({self.received} bytes of the body received)")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dog.cancel()
            self._conn.close()


class BoundedTransport:
    """A botocore `before-send` handler that sends each request over its own watched connection."""

    def __init__(self, budget: FetchBudget, connect_timeout_s: float, read_timeout_s: float, *,
                 sign: bool = False) -> None:
        self.budget = budget
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.sign = sign  # sign each request for the thread's `as_identity` (the client itself is unsigned)

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        start = time.monotonic()
        budget = current_budget() or self.budget
        end = current_deadline() or start + budget.total_s
        url, headers = request.url, dict(request.headers.items())
        if self.sign:
            identity = current_identity()
            if identity is None:
                raise RuntimeError(f"{request.method} {_short(url)}: a signing client needs as_identity()")
            url, headers = signed_for(request, identity)
        if end - start <= 0:
            raise FetchTimeout(f"{request.method} {_short(url)}: no time left in the budget")
        parts = urlsplit(url)
        what = f"{request.method} {_short(url)}"
        timeout = max(0.05, min(self.read_timeout_s, end - start))
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        dog = _Watchdog()
        try:
            conn.timeout = max(0.05, min(self.connect_timeout_s, end - start))
            conn.connect()
            conn.sock.settimeout(timeout)
            dog.arm(conn.sock, end)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            body = request.body if request.body not in (None, b"", "") else None
            conn.request(request.method, path or "/", body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            dog.cancel()
            conn.close()
            if dog.fired:
                raise FetchTimeout(f"{what}: no answer within the time budget "
                                   f"({time.monotonic() - start:.1f} s)") from exc
            raise
        length = resp.getheader("Content-Length")
        if request.method != "HEAD" and length is not None and length.isdigit():
            dog.arm(None, min(end, start + budget.allowance_s(int(length))))
        resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        return AWSResponse(url, resp.status, resp_headers, _Body(budget, conn, resp, dog, start, what))


def _short(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"
