"""Real servers for the tests: redis-server and cachecloak processes on loopback ports.

Every process started here is stopped by the fixture that started it; nothing here
mocks Redis.  Ports come from the kernel (bind to port 0), so tests can run in parallel.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.secrets_registry import register_proxy, register_redis_args

REPO_ROOT = Path(__file__).resolve().parent.parent


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never the same one twice in this process: the
    kernel may offer a port again once the probe socket closed, and two listeners of
    one proxy (its listener and its admin endpoint) then collided."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no unused loopback port left to hand out")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                  proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class RedisServer:
    """A redis-server process on a loopback port, with its own empty data directory."""

    port: int
    proc: subprocess.Popen
    workdir: Path
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Its passwords must never show in a log (checked at session end).
        register_redis_args(self.extra_args)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(*extra_args: str, port: int | None = None) -> RedisServer:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed; run the README's test command, "
                           "which installs it with apt-get")
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-redis-"))
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--daemonize", "no", "--logfile", str(workdir / "redis.log"),
            *extra_args]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc=proc)
    return RedisServer(port=port, proc=proc, workdir=workdir, extra_args=list(extra_args))


@dataclass
class ProxyProcess:
    """A `cachecloak run` subprocess; its stderr (the log) is kept for inspection."""

    port: int
    proc: subprocess.Popen
    workdir: Path

    def __post_init__(self) -> None:
        # Whichever helper started it: its log is scanned at session end for the secrets
        # of its configuration (tests/secrets_registry.py).
        register_proxy(self.proc.args, self.workdir)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def log(self) -> str:
        path = self.workdir / "cachecloak.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_proxy(config_text: str | None = None, *extra_args: str, env: dict | None = None,
                port: int | None = None) -> ProxyProcess:
    """Start `python -m proxy run` with the given YAML config on a free loopback port."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-proxy-"))
    args = [sys.executable, "-m", "proxy", "run", "--listen", f"127.0.0.1:{port}"]
    if config_text is not None:
        cfg = workdir / "cachecloak.yaml"
        cfg.write_text(config_text)
        args += ["--config", str(cfg)]
    args += list(extra_args)
    full_env = dict(os.environ)
    full_env.pop("CACHECLOAK_CONFIG", None)
    full_env.pop("CACHECLOAK_SECRET_PROVIDER", None)
    full_env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    with open(workdir / "cachecloak.log", "wb") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=full_env,
                                cwd=str(workdir))
    try:
        wait_for_port(port, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"cachecloak did not start: {exc}\n" +
                           (workdir / "cachecloak.log").read_text(errors="replace")) from None
    return ProxyProcess(port=port, proc=proc, workdir=workdir)


class RawClient:
    """A blocking RESP client that returns each reply as the exact bytes on the wire.

    Differential tests compare these bytes between Redis and cachecloak, so nothing
    here may normalise a reply.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *args: bytes | str | int) -> None:
        self.sock.sendall(encode_command(args))

    def call(self, *args: bytes | str | int) -> bytes:
        self.send(*args)
        return self.read_reply()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by peer")
        self.buf += chunk

    def _line(self, pos: int) -> int:
        while True:
            end = self.buf.find(b"\r\n", pos)
            if end >= 0:
                return end
            self._fill()

    def _skip(self, pos: int) -> int:
        """Return the offset just past the reply that starts at pos."""
        end = self._line(pos)
        kind = self.buf[pos:pos + 1]
        head = self.buf[pos + 1:end]
        after = end + 2
        if kind in (b"+", b"-", b":", b",", b"_", b"#", b"("):
            return after
        if kind in (b"$", b"=", b"!"):
            n = int(head)
            if n < 0:
                return after
            while len(self.buf) < after + n + 2:
                self._fill()
            return after + n + 2
        if kind in (b"*", b"~", b">", b"%", b"|"):
            n = int(head)
            if n < 0:
                return after
            if kind in (b"%", b"|"):
                n *= 2
            for _ in range(n):
                after = self._skip(after)
            if kind == b"|":  # an attribute precedes the real reply
                after = self._skip(after)
            return after
        raise ValueError(f"not a RESP reply: {self.buf[pos:pos + 40]!r}")

    def read_reply(self) -> bytes:
        if not self.buf:
            self._fill()
        end = self._skip(0)
        reply, self.buf = self.buf[:end], self.buf[end:]
        return reply

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return data
            if not chunk:
                return data
            data += chunk


def encode_command(args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def info_fields(port: int, section: str = "cachecloak") -> dict[str, str]:
    """An INFO section's fields as the server wrote them.  Read raw: redis-py's INFO
    parser turns values that look like numbers into ints, so a key id of eight decimal
    digits such as "09971228" (one in about 40) would lose its leading zero."""
    with RawClient(port) as client:
        text = client.call("INFO", section).decode()
    return dict(re.findall(r"^(\w+):(.*?)\r$", text, re.M))
