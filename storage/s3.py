"""The one storage client: put/get/head/list/delete over boto3, with retries, size caps and integrity.

Works with any S3-compatible endpoint (SeaweedFS, Cloudflare R2, AWS): path-style addressing,
signature v4. Reads of peer objects never raise for the expected outcomes (missing, too large,
access denied, integrity failure): they return a `GetResult` whose `status` says what happened, so
one bad peer is a scored outcome, not a crash. Writes of our own objects raise `S3Error`.

Retries: botocore's own retries are off; `_call` retries transient failures (connection errors,
timeouts, 5xx, throttling) with exponential backoff and jitter, up to `max_attempts` and a per-call
deadline, with short connect/read timeouts so a dead server cannot hang a validator.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, BinaryIO, TypeVar

import boto3
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from loguru import logger

from storage.bounded import (
    BoundedTransport,
    FetchBudget,
    FetchTimeout,
    Identity,
    as_identity,
    current_budget,
    current_deadline,
    deadline,
)

T = TypeVar("T")

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                 "AccountProblem", "InvalidToken", "ExpiredToken"}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestLimitExceeded",
                   "TooManyRequests", "ServiceUnavailable", "InternalError", "503", "500", "502", "504"}
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    BotoConnectionError, HTTPClientError, ConnectionClosedError, ResponseStreamingError, IncompleteReadError,
    urllib3.exceptions.HTTPError, ConnectionError, TimeoutError,
)


class Status(Enum):
    """Outcome of a read."""

    OK = "ok"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    DENIED = "denied"
    TIMEOUT = "timeout"  # no complete answer within the client's fetch budget (or socket timeouts)
    ERROR = "error"  # transient failure after retries, or integrity (sha256) mismatch


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of a stored object. `last_modified` is the storage's own clock (unix seconds), None when
    the server sent none (never read as "early": a missing time is never on time)."""

    key: str
    size: int
    last_modified: float | None
    etag: str


@dataclass(frozen=True)
class GetResult:
    """Result of `S3Client.get`: `data` and `info` are set when status is OK (`info` also on TOO_LARGE)."""

    status: Status
    data: bytes | None
    info: ObjectInfo | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


class S3Error(RuntimeError):
    """A storage operation failed (after retries); the message names bucket, key and reason."""


def error_code(exc: ClientError) -> str:
    """The S3 error code of a ClientError ("NoSuchKey", "AccessDenied", or the HTTP status for HEAD)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: connection trouble, timeouts, 5xx and throttling."""
    if isinstance(exc, ClientError):
        return error_code(exc) in _THROTTLE_CODES or _http_status(exc) >= 500 or _http_status(exc) == 429
    return isinstance(exc, _TRANSIENT_ERRORS)


def _classify(exc: BaseException) -> Status:
    if isinstance(exc, (FetchTimeout, TimeoutError, ReadTimeoutError, ConnectTimeoutError)):
        return Status.TIMEOUT
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in _NOT_FOUND_CODES or _http_status(exc) == 404:
            return Status.NOT_FOUND
        if code in _DENIED_CODES or _http_status(exc) == 403:
            return Status.DENIED
    return Status.ERROR


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc) or _http_status(exc)}: {exc.response.get('Error', {}).get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _unix(value: Any) -> float | None:
    return value.timestamp() if hasattr(value, "timestamp") else None


IDENTITY_ENDPOINT = "http://identity.invalid"  # a per-identity client's requests go to the identity's endpoint

_SESSION_LOCK = threading.Lock()
_SESSION: list[boto3.session.Session] = []


def _shared_session() -> boto3.session.Session:
    """The one boto3 session every S3Client is made from (call with `_SESSION_LOCK` held).

    A session parses the S3 service model when it makes its first client (about 12 MB here), so a session
    per client made a validator reading 256 peers' buckets hold about 3 GB of copies (issue 18). Clients
    of one session are still independent: own endpoint, credentials, connection pool and event hooks."""
    if not _SESSION:
        _SESSION.append(boto3.session.Session())
    return _SESSION[0]


MULTIPART_BYTES = 16 << 20  # one part of a multipart upload


class S3Client:
    """Thread-safe S3 client for one endpoint and one set of keys.

    Args:
        endpoint: URL such as ``http://127.0.0.1:8333`` or ``https://<account>.r2.cloudflarestorage.com``.
        access_key_id, secret_access_key, region: credentials (R2 accepts region "auto" or "us-east-1").
        max_workers: parallel downloads in `get_many` (also the HTTP connection pool size).
        max_attempts: tries per operation for transient failures (>= 1).
        connect_timeout_s, read_timeout_s: socket timeouts of one attempt.
        deadline_s: no new attempt starts after this many seconds of one operation.
        budget: for peers' endpoints: every request goes over a watched connection (storage.bounded) and
            each `get` (HEAD, GET, retries) ends within `budget.total_s`, and a body slower than
            `budget.min_bytes_per_s` is dropped; such reads end with status TIMEOUT.
        per_identity: the client holds no keys and no endpoint of its own: each request goes to the calling
            thread's `storage.bounded.as_identity` endpoint, signed with its keys (needs `budget`; see
            `for_identities` and `IdentityClient`).
    """

    def __init__(self, endpoint: str, access_key_id: str, secret_access_key: str, region: str = "us-east-1", *,
                 max_workers: int = 8, max_attempts: int = 4, connect_timeout_s: float = 3.0,
                 read_timeout_s: float = 20.0, deadline_s: float = 60.0, budget: FetchBudget | None = None,
                 per_identity: bool = False) -> None:
        if max_workers < 1 or max_attempts < 1:
            raise ValueError(f"max_workers and max_attempts must be >= 1, got {max_workers}, {max_attempts}")
        if per_identity and budget is None:
            raise ValueError("per_identity needs a budget: its requests are signed by the bounded transport")
        self.endpoint = endpoint
        self.max_workers = max_workers
        self.max_attempts = max_attempts
        self.deadline_s = deadline_s
        with _SESSION_LOCK:  # boto3 sessions are not thread-safe; peers' clients are made in fetch workers
            self._client = _shared_session().client(
                "s3", endpoint_url=endpoint, aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key, region_name=region,
                config=BotoConfig(
                    signature_version=UNSIGNED if per_identity else "s3v4", s3={"addressing_style": "path"},
                    connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
                    retries={"total_max_attempts": 1},  # our own loop retries (see _call)
                    max_pool_connections=max(10, max_workers),
                ),
            )
        self.budget = budget
        if budget is not None:
            self._client.meta.events.register(
                "before-send.s3", BoundedTransport(budget, connect_timeout_s, read_timeout_s, sign=per_identity))

    @classmethod
    def for_identities(cls, budget: FetchBudget, *, max_attempts: int = 4) -> S3Client:
        """One client that reads any bucket as any identity (`IdentityClient`): a validator reading 256 peers
        holds one botocore client instead of one per peer (each about 0.5 MB once used; issue 18)."""
        return cls(IDENTITY_ENDPOINT, "", "", max_attempts=max_attempts, budget=budget, per_identity=True)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transient failures with exponential backoff; re-raise the last error."""
        start = time.monotonic()
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except Exception as exc:
                delay = min(4.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random())
                bound = current_deadline()
                late = (time.monotonic() - start + delay > self.deadline_s
                        or (bound is not None and time.monotonic() + delay >= bound))
                if not is_transient(exc) or attempt == self.max_attempts or late:
                    raise
                logger.debug("{} failed (attempt {}/{}): {}; retrying in {:.2f} s", what, attempt,
                             self.max_attempts, _describe(exc), delay)
                time.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    # -- writes (our own bucket): raise S3Error

    def put(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        """Store `data` at bucket/key. Returns size and etag; `last_modified` is the server's Date header
        (the authoritative LastModified comes from `head`). Raises S3Error after retries."""
        try:
            response = self._call(f"put {bucket}/{key}",
                                  lambda: self._client.put_object(Bucket=bucket, Key=key, Body=data))
        except Exception as exc:
            raise S3Error(f"put {bucket}/{key} ({len(data)} bytes) failed: {_describe(exc)}") from exc
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            server_time = parsedate_to_datetime(date).timestamp() if date else time.time()
        except (TypeError, ValueError):
            server_time = time.time()
        return ObjectInfo(key=key, size=len(data), last_modified=server_time,
                          etag=str(response.get("ETag", "")).strip('"'))

    def put_multipart(self, bucket: str, key: str, chunks: Iterable[bytes], *, part_bytes: int = MULTIPART_BYTES) -> int:
        """Store the concatenation of `chunks` at bucket/key as one multipart upload, holding at most about
        one part in memory (parts of `part_bytes`, >= 5 MiB as S3 requires but the last). An aborted upload
        leaves no object. Returns the bytes stored. Raises S3Error."""
        if part_bytes < 5 << 20:
            raise ValueError(f"part_bytes must be >= 5 MiB, got {part_bytes}")
        where = f"{bucket}/{key}"
        try:
            upload = self._call(f"create multipart {where}",
                                lambda: self._client.create_multipart_upload(Bucket=bucket, Key=key))
        except Exception as exc:
            raise S3Error(f"multipart upload of {where} failed to start: {_describe(exc)}") from exc
        upload_id, total, pending = upload["UploadId"], 0, bytearray()
        parts: list[dict[str, Any]] = []

        def send(data: bytes) -> None:
            number = len(parts) + 1
            response = self._call(f"upload part {number} of {where}", lambda: self._client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data))
            parts.append({"PartNumber": number, "ETag": response["ETag"]})

        try:
            for chunk in chunks:
                pending += chunk
                total += len(chunk)
                while len(pending) >= part_bytes:
                    send(bytes(pending[:part_bytes]))
                    del pending[:part_bytes]
            if pending or not parts:
                send(bytes(pending))
            self._call(f"complete multipart {where}", lambda: self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}))
        except Exception as exc:
            try:
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the upload failed already; report that
                pass
            if isinstance(exc, S3Error):
                raise
            raise S3Error(f"multipart upload of {where} failed: {_describe(exc)}") from exc
        return total

    def delete(self, bucket: str, key: str) -> None:
        """Delete bucket/key (no error if it does not exist). Raises S3Error on failure."""
        try:
            self._call(f"delete {bucket}/{key}", lambda: self._client.delete_object(Bucket=bucket, Key=key))
        except Exception as exc:
            raise S3Error(f"delete {bucket}/{key} failed: {_describe(exc)}") from exc

    def ensure_bucket(self, bucket: str) -> None:
        """Create `bucket` if missing; fine if it already exists and is ours. Raises S3Error otherwise."""
        try:
            self._call(f"head bucket {bucket}", lambda: self._client.head_bucket(Bucket=bucket))
            return
        except ClientError as exc:
            if _classify(exc) is not Status.NOT_FOUND:
                raise S3Error(f"bucket {bucket} is not usable: {_describe(exc)}") from exc
        except Exception as exc:
            raise S3Error(f"bucket {bucket} is not reachable: {_describe(exc)}") from exc
        try:
            self._call(f"create bucket {bucket}", lambda: self._client.create_bucket(Bucket=bucket))
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise S3Error(f"create bucket {bucket} failed: {_describe(exc)}") from exc
        except Exception as exc:
            raise S3Error(f"create bucket {bucket} failed: {_describe(exc)}") from exc

    # -- reads

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Metadata of bucket/key, or None if it does not exist. Raises S3Error on other failures."""
        try:
            response = self._call(f"head {bucket}/{key}", lambda: self._client.head_object(Bucket=bucket, Key=key))
        except Exception as exc:
            if _classify(exc) is Status.NOT_FOUND:
                return None
            raise S3Error(f"head {bucket}/{key} failed: {_describe(exc)}") from exc
        return ObjectInfo(key=key, size=int(response.get("ContentLength", 0)),
                          last_modified=_unix(response.get("LastModified")),
                          etag=str(response.get("ETag", "")).strip('"'))

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None,
            budget: FetchBudget | None = None) -> GetResult:
        """Download bucket/key. Never raises for expected outcomes; see `Status`.

        With `max_bytes`, a HEAD first refuses larger objects before any download (TOO_LARGE), and the
        body read is capped too (the object may change between HEAD and GET). With `sha256` (hex), a
        payload whose digest differs is refused (ERROR, "sha256 mismatch"). A client with a `budget`
        ends the whole read within `budget.total_s` (TIMEOUT otherwise); `budget` here (or one set by an
        enclosing `storage.bounded.deadline`) replaces the client's for this read (e.g. for checkpoints).
        """
        budget = budget or current_budget() or self.budget
        if budget is None or self.budget is None:
            return self._get(bucket, key, max_bytes=max_bytes, sha256=sha256)
        with deadline(time.monotonic() + budget.total_s, budget):
            return self._get(bucket, key, max_bytes=max_bytes, sha256=sha256)

    def _get(self, bucket: str, key: str, *, max_bytes: int | None, sha256: str | None) -> GetResult:
        where = f"{bucket}/{key}"
        if max_bytes is not None:
            try:
                head = self._call(f"head {where}", lambda: self._client.head_object(Bucket=bucket, Key=key))
            except Exception as exc:
                return GetResult(_classify(exc), None, None, f"head {where}: {_describe(exc)}")
            size = int(head.get("ContentLength", 0))
            if size > max_bytes:
                info = ObjectInfo(key, size, _unix(head.get("LastModified")), str(head.get("ETag", "")).strip('"'))
                return GetResult(Status.TOO_LARGE, None, info, f"{where} is {size} bytes > cap {max_bytes}")
        try:
            info, data = self._call(f"get {where}", lambda: self._download(bucket, key, max_bytes))
        except Exception as exc:
            return GetResult(_classify(exc), None, None, f"get {where}: {_describe(exc)}")
        if data is None:
            return GetResult(Status.TOO_LARGE, None, info, f"{where} grew past cap {max_bytes} during download")
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
            return GetResult(Status.ERROR, None, info, f"{where}: sha256 mismatch (expected {sha256})")
        return GetResult(Status.OK, data, info, None)

    def _download(self, bucket: str, key: str, max_bytes: int | None) -> tuple[ObjectInfo, bytes | None]:
        response = self._client.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        info = ObjectInfo(key=key, size=int(response.get("ContentLength", 0)),
                          last_modified=_unix(response.get("LastModified")),
                          etag=str(response.get("ETag", "")).strip('"'))
        try:
            if max_bytes is not None and info.size > max_bytes:
                return info, None  # headers already say too large: close without reading the body
            data = body.read() if max_bytes is None else body.read(max_bytes + 1)
        finally:
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            return info, None
        return info, data

    def get_range(self, bucket: str, key: str, offset: int, length: int, sink: BinaryIO, *,
                  budget: FetchBudget | None = None) -> GetResult:
        """Stream bytes [offset, offset + length) of bucket/key into `sink` as they arrive (one range GET;
        a retry rewinds and truncates `sink`). Never raises for expected outcomes: OK with `data` None
        once exactly `length` bytes were written, else the failure's status (a short or long body is
        ERROR). A bounded client ends the read within its budget (TIMEOUT otherwise), as `get` does."""
        if offset < 0 or length <= 0:
            raise ValueError(f"need offset >= 0 and length > 0, got {offset}, {length}")
        where = f"{bucket}/{key} bytes {offset}-{offset + length - 1}"

        def read() -> int:
            sink.seek(0)
            sink.truncate()
            response = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}")
            body, written = response["Body"], 0
            try:
                while written <= length and (chunk := body.read(min(1 << 20, length + 1 - written))):
                    sink.write(chunk)
                    written += len(chunk)
            finally:
                body.close()
            return written

        budget = budget or current_budget() or self.budget
        try:
            if budget is None or self.budget is None:
                written = self._call(f"get {where}", read)
            else:
                with deadline(time.monotonic() + budget.total_s, budget):
                    written = self._call(f"get {where}", read)
        except Exception as exc:
            return GetResult(_classify(exc), None, None, f"get {where}: {_describe(exc)}")
        if written != length:
            return GetResult(Status.ERROR, None, None, f"{where}: {written} bytes arrived, expected {length}")
        return GetResult(Status.OK, None, None, None)

    def get_many(self, bucket: str, keys: Iterable[str], *, max_bytes: int | None = None) -> dict[str, GetResult]:
        """`get` for many keys of one bucket in parallel (up to `max_workers` at a time)."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(unique)), thread_name_prefix="s3get") as pool:
            results = pool.map(lambda key: self.get(bucket, key, max_bytes=max_bytes), unique)
            return dict(zip(unique, results, strict=True))

    def list(self, bucket: str, prefix: str = "", *, page_size: int | None = None) -> list[ObjectInfo]:
        """All objects under `prefix`, following every page (page_size: keys per request, for tests).

        Raises S3Error on failure (after retries, restarting the listing from the first page)."""

        def list_all() -> list[ObjectInfo]:
            paginator = self._client.get_paginator("list_objects_v2")
            config = {"PageSize": page_size} if page_size else {}
            found: list[ObjectInfo] = []
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig=config):
                found += [ObjectInfo(key=o["Key"], size=int(o.get("Size", 0)),
                                     last_modified=_unix(o.get("LastModified")),
                                     etag=str(o.get("ETag", "")).strip('"')) for o in page.get("Contents", [])]
            return found

        try:
            return self._call(f"list {bucket}/{prefix}", list_all)
        except Exception as exc:
            raise S3Error(f"list {bucket}/{prefix} failed: {_describe(exc)}") from exc


@dataclass(frozen=True)
class IdentityClient:
    """`S3Client`'s reads (get, head, list) as one identity, over a shared per-identity client
    (`S3Client.for_identities`): retries, caps, statuses and fetch budgets are that client's."""

    shared: S3Client
    identity: Identity

    def get(self, bucket: str, key: str, *, max_bytes: int | None = None, sha256: str | None = None,
            budget: FetchBudget | None = None) -> GetResult:
        with as_identity(self.identity):
            return self.shared.get(bucket, key, max_bytes=max_bytes, sha256=sha256, budget=budget)

    def get_range(self, bucket: str, key: str, offset: int, length: int, sink: BinaryIO, *,
                  budget: FetchBudget | None = None) -> GetResult:
        with as_identity(self.identity):
            return self.shared.get_range(bucket, key, offset, length, sink, budget=budget)

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        with as_identity(self.identity):
            return self.shared.head(bucket, key)

    def list(self, bucket: str, prefix: str = "", *, page_size: int | None = None) -> list[ObjectInfo]:
        with as_identity(self.identity):
            return self.shared.list(bucket, prefix, page_size=page_size)
