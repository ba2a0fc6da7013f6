"""A hostile S3-compatible endpoint on 127.0.0.1, as a miner who runs its own storage would.

It speaks just enough S3 (path-style HEAD and GET of an object, ListObjectsV2) for peers' reads,
never checks signatures, and serves objects from memory (`put`). How it misbehaves:

normal     answers like an honest server (Last-Modified = when `put` stored the object)
trickle    HEAD at once; GET sends headers, then the body one byte every `trickle_s` seconds
drip       HEAD at once; GET sends the whole answer, status line and headers too, one byte at a time
silent     HEAD at once; GET is accepted and never answered
backdate   answers at once, with Last-Modified forged to `forged_time` (None: no header at all)

Used by the hostile kinds `tarpit` and `backdater` (template/sim/adversaries.py) and by tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

MODES = ("normal", "trickle", "drip", "silent", "backdate")


@dataclass
class _Object:
    data: bytes
    stored_at: float


class HostileS3:
    """`with HostileS3(mode="trickle") as srv:` ... `srv.endpoint`, `srv.put(bucket, key, data)`."""

    def __init__(self, mode: str = "normal", *, trickle_s: float = 0.5, forged_time: float | None = None,
                 port: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.trickle_s = trickle_s
        self.forged_time = forged_time
        self.objects: dict[tuple[str, str], _Object] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen
        self.variants: dict[tuple[str, str], list[bytes]] = {}  # equivocated keys (put_variants)
        self.gets: dict[tuple[str, str], int] = {}  # GETs of each equivocated key so far
        self.body_bytes_sent = 0  # GET body bytes written (trickle, drip)
        self.in_flight = 0  # GETs being answered now
        self.max_in_flight = 0  # the most GETs this server answered at the same time
        self._count = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.objects[(bucket, key)] = _Object(data, time.time())

    def put_variants(self, bucket: str, key: str, variants: list[bytes]) -> None:
        """Equivocate: the n-th GET of `key` gets variants[n % len(variants)] (HEAD: the first)."""
        self.put(bucket, key, variants[0])
        self.variants[(bucket, key)] = list(variants)
        self.gets[(bucket, key)] = 0

    def serve(self, bucket: str, key: str, obj: _Object) -> _Object:
        """The object one GET receives: itself, or the next variant of an equivocated key."""
        variants = self.variants.get((bucket, key))
        if not variants:
            return obj
        with self._count:
            n = self.gets[(bucket, key)]
            self.gets[(bucket, key)] = n + 1
        return _Object(variants[n % len(variants)], obj.stored_at)

    def start(self) -> HostileS3:
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostile-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def last_modified(self, obj: _Object) -> str | None:
        if self.mode == "backdate":
            return None if self.forged_time is None else formatdate(self.forged_time, usegmt=True)
        return formatdate(obj.stored_at, usegmt=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _target(self) -> tuple[str, str, dict[str, list[str]]]:
                parts = urlsplit(self.path)
                bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
                return bucket, key, parse_qs(parts.query)

            def _not_found(self, head: bool) -> None:
                body = b"" if head else b"<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>"
                self.send_response(404)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _headers(self, obj: _Object) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(obj.data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("ETag", '"0"')
                stamp = srv.last_modified(obj)
                if stamp is not None:
                    self.send_header("Last-Modified", stamp)
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                srv.requests.append(("HEAD", self.path))
                bucket, key, _ = self._target()
                obj = srv.objects.get((bucket, key))
                if obj is None:
                    return self._not_found(head=True)
                self._headers(obj)

            def do_GET(self) -> None:  # noqa: N802
                srv.requests.append(("GET", self.path))
                with srv._count:
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    self._get()
                finally:
                    with srv._count:
                        srv.in_flight -= 1

            def _drip(self, data: bytes, *, body_from: int) -> None:
                for i in range(len(data)):
                    if srv._stop.wait(srv.trickle_s):
                        return
                    try:
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return  # the reader gave up
                    if i >= body_from:
                        srv.body_bytes_sent += 1

            def _get(self) -> None:
                bucket, key, query = self._target()
                if not key and "list-type" in query:
                    return self._list(bucket, query.get("prefix", [""])[0])
                obj = srv.objects.get((bucket, key))
                if obj is None:
                    return self._not_found(head=False)
                obj = srv.serve(bucket, key, obj)
                if srv.mode == "silent":
                    srv._stop.wait()  # accepted, never answered
                    return
                if srv.mode == "drip":
                    stamp = srv.last_modified(obj)
                    head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(obj.data)}\r\n"
                            f"Last-Modified: {stamp}\r\nETag: \"0\"\r\n\r\n").encode()
                    self._drip(head + obj.data, body_from=len(head))
                    self.close_connection = True
                    return
                self._headers(obj)
                if srv.mode != "trickle":
                    self.wfile.write(obj.data)
                    return
                self._drip(obj.data, body_from=0)

            def _list(self, bucket: str, prefix: str) -> None:
                items = []
                for (b, key), obj in sorted(srv.objects.items()):
                    if b == bucket and key.startswith(prefix):
                        when = obj.stored_at if srv.mode != "backdate" else srv.forged_time
                        stamp = "" if when is None else (
                            f"<LastModified>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(when))}</LastModified>")
                        items.append(f"<Contents><Key>{escape(key)}</Key><Size>{len(obj.data)}</Size>"
                                     f"{stamp}<ETag>\"0\"</ETag></Contents>")
                body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
                        f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
                        f"<KeyCount>{len(items)}</KeyCount><IsTruncated>false</IsTruncated>"
                        + "".join(items) + "</ListBucketResult>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
