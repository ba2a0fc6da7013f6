"""A localnet node as a subprocess (`python -m template.chain.localnet serve`), for tools and tests: start it and
wait until it answers, stop it (SIGTERM, then SIGKILL), kill -9 it, start it again on the same db and port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalnetProcess:
    """A node subprocess on a fixed db and port, which can be stopped, killed and started again."""

    def __init__(self, db_path: Path, block_time: float = 1.0, port: int | None = None,
                 extra_args: list[str] | None = None, new: bool | None = None) -> None:
        """`new`: True starts a new chain (the file must not exist), False resumes the one in the file (which must
        hold one), None starts a new chain exactly when the file does not exist yet. Later starts resume."""
        self.db_path = Path(db_path)
        self.new = new
        self.block_time = block_time
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = self.db_path.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> subprocess.Popen:
        """Launch the node and wait until GET /block answers. Raises RuntimeError if it does not come up."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.db_path.exists() if self.new is None else self.new
        cmd = [sys.executable, "-m", "template.chain.localnet", "serve", "--db", str(self.db_path), "--port",
               str(self.port), "--block-time", str(self.block_time), *(["--new"] if new else []), *self.extra_args]
        root = Path(__file__).resolve().parents[3]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localnet exited with {self.proc.returncode}: {self.last_error()}; see "
                                   f"{self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.endpoint}/block", timeout=2.0).status_code == 200:
                    self.new = False  # the chain exists now: a restart resumes it
                    return self.proc
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"localnet did not answer on {self.endpoint} within {timeout_s} s; see {self.log_path}")

    def last_error(self) -> str:
        """The last `error: ...` line the node wrote to its log (why it refused to start), or ""."""
        if not self.log_path.exists():
            return ""
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if "error: " in line]
        return lines[-1].split("error: ", 1)[1] if lines else ""

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """kill -9: no chance to clean up (what the restart tests exercise)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, hard: bool = False) -> subprocess.Popen:
        """Stop (or kill -9 when `hard`) and start again on the same db and port."""
        self.kill() if hard else self.stop()
        return self.start()


@contextlib.contextmanager
def start_localnet_process(db_path: Path, block_time: float = 1.0, port: int | None = None,
                           new: bool | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run a node subprocess for the duration of the block; yields (endpoint, proc). `new` as LocalnetProcess."""
    node = LocalnetProcess(db_path, block_time=block_time, port=port, new=new)
    proc = node.start()
    try:
        yield node.endpoint, proc
    finally:
        node.stop()


def restart_localnet_process(db_path: Path, port: int, block_time: float = 1.0) -> LocalnetProcess:
    """Start a node again on an existing db and port (after a stop or a kill -9); returns the running process."""
    node = LocalnetProcess(db_path, block_time=block_time, port=port, new=False)
    node.start()
    return node
