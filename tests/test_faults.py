"""Fault behaviour of the real proxy process: malformed input, a Redis that is missing,
killed, or silent, bad configurations, signals.

Every wait is bounded; "in flight" is made deterministic by stalling redis-server with
DEBUG SLEEP and checking (in /proc/net/tcp) that the proxy's commands sit unread in
Redis's socket before Redis is killed.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

import pytest

from tests.proxyproc import run_cli, start_proxy_listeners, wait_until
from tests.servers import RawClient, encode_command, free_port, start_proxy, start_redis

ENC = "3c" * 32
HASH = "4d" * 32


def redis_config(port: int, *, name: str = "main", extra_redis: str = "") -> str:
    return f"""\
caches:
  - name: {name}
    type: redis
    redis:
      addresses: ["127.0.0.1:{port}"]
      disableTLS: true
{extra_redis}    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
"""


def read_to_eof(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the peer closes; (data, closed).  closed is False on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


# ---------------------------------------------------------------------------------------
# Malformed requests
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_proxy():
    proxy = start_proxy(None)
    yield proxy
    assert proxy.stop() == 0, proxy.log()


@pytest.mark.parametrize("data, text", [
    (b"*2\r\n$3\r\nGET\r\nXYZ\r\n", b"Protocol error: expected '$', got 'X'"),
    (b"*1\r\n:1\r\n", b"Protocol error: expected '$'"),
    (b"*1\r\n$99999999999\r\n", b"Protocol error: invalid bulk length"),
    (b"*2\r\n$3\r\nGET\r\n$600000000\r\nabc", b"Protocol error: invalid bulk length"),
    (b'SET "unbalanced quote\r\n', b"Protocol error: unbalanced quotes"),
    (b"*3000000000\r\n", b"Protocol error: invalid multibulk length"),
], ids=["bad-type-byte", "integer-argument", "huge-bulk", "huge-bulk-after-args",
        "unbalanced-quote", "huge-multibulk"])
def test_malformed_request_gets_an_error_and_only_that_connection_closes(local_proxy, data,
                                                                         text):
    with RawClient(local_proxy.port) as other, RawClient(local_proxy.port) as bad:
        assert other.call("SET", "fault:k", "still here") == b"+OK\r\n"
        # A good command in the same write is answered first, as Redis does.
        bad.send_raw(encode_command(["PING"]) + data)
        started = time.monotonic()
        reply, closed = read_to_eof(bad.sock, timeout=5)
        assert closed, f"connection not closed; got {reply!r}"
        assert time.monotonic() - started < 3
        assert reply.startswith(b"+PONG\r\n-ERR Protocol error"), reply
        assert text in reply
        assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 2
        # The other client is unaffected.
        assert other.call("GET", "fault:k") == b"$10\r\nstill here\r\n"
        assert other.call("PING") == b"+PONG\r\n"


def test_huge_bulk_header_split_from_its_array_is_refused(local_proxy):
    with RawClient(local_proxy.port) as bad:
        bad.send_raw(b"*2\r\n$3\r\nGET\r\n")
        assert wait_until(lambda: local_proxy.proc.poll() is None, timeout=1)
        bad.sock.settimeout(0.3)
        with pytest.raises((TimeoutError, socket.timeout)):
            bad.sock.recv(100)  # nothing to answer yet
        bad.send_raw(b"$1000000000\r\n")
        reply, closed = read_to_eof(bad.sock, timeout=5)
        assert closed and reply == b"-ERR Protocol error: invalid bulk length\r\n"


def test_empty_line_after_a_command_split_across_reads_is_skipped():
    """redis-cli --pipe ends its input with "\\r\\n" and an ECHO.  Wherever the reads
    split the stream, Redis skips the empty inline line; so must the proxy's reader (this
    is the request parser the proxy runs, fed the way the event loop feeds it)."""
    from proxy.resp.reader import RequestReader

    commands = [["SET", f"pipe:{i}", f"value\r\n{i}"] for i in range(4)]
    stream = (b"".join(encode_command(c) for c in commands) + b"\r\n"
              + encode_command(["ECHO", "01234567890123456789"]))
    expected = [[a.encode() for a in c] for c in commands] + [
        [b"ECHO", b"01234567890123456789"]]
    for cut in range(1, len(stream)):
        for second in (cut, min(cut + 5, len(stream) - 1)):
            reader = RequestReader()
            got = []
            for part in (stream[:cut], stream[cut:second], stream[second:]):
                if part:
                    got += reader.feed(part)
            assert reader.error is None, (cut, second, reader.error)
            assert got == expected, (cut, second)


# ---------------------------------------------------------------------------------------
# Redis missing at startup, killed, or silent
# ---------------------------------------------------------------------------------------


def test_upstream_unreachable_at_startup_then_appears(tmp_path):
    port = free_port()
    proxy = start_proxy(redis_config(port, extra_redis="      connectTimeout: 500ms\n"))
    redis_server = None
    try:
        with RawClient(proxy.port, timeout=10) as c:
            for _ in range(3):
                started = time.monotonic()
                reply = c.call("SET", "k", "v")
                assert time.monotonic() - started < 3
                assert reply.startswith(b"-ERR cachecloak: Redis for cache \"main\" at "
                                        b"127.0.0.1:%d is unavailable" % port), reply
                assert b"refused" in reply.lower(), reply
                assert b"\r\n" not in reply[:-2]
            assert c.call("PING") == b"+PONG\r\n"
            redis_server = start_redis(port=port)
            # Without restarting the proxy, commands start to succeed.
            wait_until(lambda: c.call("SET", "k", "v") == b"+OK\r\n", timeout=15,
                       interval=0.1, what="the proxy to reach the new Redis")
            assert c.call("GET", "k") == b"$1\r\nv\r\n"
            info = c.call("INFO", "cachecloak")
            assert b"upstream_ready:1" in info
        assert proxy.stop() == 0
        log = proxy.log()
        assert "refused" in log.lower() and ": connected" in log
    finally:
        proxy.stop()
        if redis_server is not None:
            redis_server.stop()


def _redis_rx_queue(port: int) -> int:
    """Bytes received but not yet read by redis-server on its established connections."""
    total = 0
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "01" and int(local.split(":")[1], 16) == port:
                total += int(queues.split(":")[1], 16)
    return total


def test_upstream_killed_with_commands_in_flight():
    redis_server = start_redis("--enable-debug-command", "local")
    port = redis_server.port
    proxy = start_proxy(redis_config(port, extra_redis="      poolSize: 1\n"))
    try:
        with RawClient(proxy.port, timeout=10) as c:
            assert c.call("SET", "before", "1") == b"+OK\r\n"
            # Stall Redis, then pipeline local and remote commands behind the stall.
            staller = socket.create_connection(("127.0.0.1", port))
            staller.sendall(encode_command(["DEBUG", "SLEEP", "5"]))
            probe = socket.create_connection(("127.0.0.1", port), timeout=0.2)
            probe.sendall(encode_command(["PING"]))
            with pytest.raises((TimeoutError, socket.timeout)):
                probe.recv(100)  # Redis is asleep
            commands = []
            for i in range(60):
                commands.append(["ECHO", f"local-{i}"] if i % 3 == 0 else
                                ["SET", f"k{i}", "v"] if i % 3 == 1 else ["GET", f"k{i}"])
            c.send_raw(b"".join(encode_command(cmd) for cmd in commands))
            wait_until(lambda: _redis_rx_queue(port) > 0, timeout=5,
                       what="the proxy's commands to reach the stalled Redis")
            redis_server.proc.send_signal(signal.SIGKILL)
            redis_server.proc.wait(5)
            killed = time.monotonic()
            replies = [c.read_reply() for _ in commands]
            assert time.monotonic() - killed < 3
            for cmd, reply in zip(commands, replies, strict=True):
                if cmd[0] == "ECHO":
                    assert reply == b"$%d\r\n%b\r\n" % (len(cmd[1]), cmd[1].encode())
                else:
                    assert reply.startswith(b"-ERR cachecloak: connection lost"), reply
                    assert b"may or may not have been applied" in reply
            # Exactly one reply each: the next reply belongs to the next command.
            assert c.call("PING", "after") == b"$5\r\nafter\r\n"
            # While Redis is down: a quick error, no hang.
            started = time.monotonic()
            assert c.call("GET", "before").startswith(b"-ERR cachecloak")
            assert time.monotonic() - started < 3
            staller.close()
            probe.close()
            redis_server.stop()
            redis_server = start_redis("--enable-debug-command", "local", port=port)
            wait_until(lambda: c.call("SET", "after", "2") == b"+OK\r\n", timeout=15,
                       interval=0.1, what="the proxy to recover after Redis restarted")
            assert c.call("GET", "after") == b"$1\r\n2\r\n"
            assert c.call("GET", "before") == b"$-1\r\n"  # a new, empty Redis
        assert proxy.stop() == 0
    finally:
        proxy.stop()
        redis_server.stop()


class BlackHole:
    """A TCP server on loopback that accepts and reads everything, and never answers."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self.connections = 0
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                if key.fileobj is self.listener:
                    try:
                        conn, _ = self.listener.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    self._socks.append(conn)
                    self.connections += 1
                    sel.register(conn, selectors.EVENT_READ)
                else:
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                    self.received += len(data)
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for s in self._socks:
            s.close()
        self.listener.close()


def test_silent_redis_times_out_while_a_local_cache_keeps_serving():
    hole = BlackHole()
    slow_port, fast_port = free_port(), free_port()
    config = f"""\
listeners:
  - address: 127.0.0.1:{slow_port}
    cache: slow
  - address: 127.0.0.1:{fast_port}
    cache: fast
caches:
  - name: slow
    type: redis
    redis:
      addresses: ["127.0.0.1:{hole.port}"]
      disableTLS: true
      commandTimeout: 1s
      connectTimeout: 1s
    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
  - name: fast
    type: local
"""
    proxy = start_proxy_listeners(config, [slow_port, fast_port])
    fast_latencies: list[float] = []
    fast_errors: list[str] = []
    stop = threading.Event()

    def use_fast_cache() -> None:
        try:
            with RawClient(fast_port, timeout=5) as f:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    started = time.monotonic()
                    assert f.call("SET", f"f{i}", f"v{i}") == b"+OK\r\n"
                    got = f.call("GET", f"f{i}")
                    fast_latencies.append(time.monotonic() - started)
                    assert got == b"$%d\r\nv%d\r\n" % (len(f"v{i}"), i)
                    stop.wait(0.01)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            fast_errors.append(repr(exc))

    worker = threading.Thread(target=use_fast_cache, daemon=True)
    try:
        worker.start()
        with RawClient(slow_port, timeout=10) as s:
            for attempt in range(2):
                started = time.monotonic()
                s.send(*["GET", f"slow{attempt}"])
                s.send("PING")  # a local reply queued behind the stuck one
                reply = s.read_reply()
                elapsed = time.monotonic() - started
                assert reply.startswith(b"-ERR cachecloak"), reply
                assert elapsed < 4, elapsed
                if attempt == 0:
                    assert b"commandTimeout" in reply, reply
                    assert elapsed >= 0.9, elapsed
                assert s.read_reply() == b"+PONG\r\n"
        assert hole.connections >= 1
    finally:
        stop.set()
        worker.join(10)
        code = proxy.stop()
        hole.close()
    assert not fast_errors, fast_errors
    assert len(fast_latencies) >= 20
    assert max(fast_latencies) < 0.5, max(fast_latencies)
    assert code == 0
    assert "commandTimeout" in proxy.log()


# ---------------------------------------------------------------------------------------
# Configuration and startup errors, signals, keygen
# ---------------------------------------------------------------------------------------


def _config_error(tmp_path, text: str | None, *, missing: bool = False):
    path = tmp_path / "cachecloak.yaml"
    if not missing:
        path.write_text(text)
    result = run_cli("run", "--config", str(path), "--listen", f"127.0.0.1:{free_port()}",
                     timeout=20)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line.strip() for line in result.stderr.strip().splitlines()]
    assert lines[0].startswith("cachecloak: configuration error in ")
    return lines[1:], path


def test_config_file_missing(tmp_path):
    problems, path = _config_error(tmp_path, None, missing=True)
    assert problems == [f"{path}: file not found; check the path"]


def test_config_unknown_field(tmp_path):
    text = redis_config(6379, extra_redis="      poolSizee: 3\n")
    problems, _ = _config_error(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith("caches[0].redis.poolSizee: unknown field"), problems
    assert '"poolSize"' in problems[0]


def test_config_bad_key(tmp_path):
    secret_looking = "zz" + "ab" * 31
    text = redis_config(6379).replace(ENC, secret_looking)
    problems, _ = _config_error(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith("caches[0].encryption.keys.current: must be 64 hex"), problems
    assert secret_looking not in "\n".join(problems)


def test_config_several_problems_one_line_each(tmp_path):
    text = redis_config(6379, extra_redis="      commandTimeout: -1s\n").replace(
        "disableTLS: true", "disableTLS: maybe").replace(HASH, "short")
    problems, _ = _config_error(tmp_path, text)
    paths = [p.split(": ", 1)[0] for p in problems]
    assert "caches[0].redis.disableTLS" in paths
    assert "caches[0].redis.commandTimeout" in paths
    assert "caches[0].hashing.keys.current" in paths
    assert all(re.match(r"^[\w\[\].-]+: \S", p) for p in problems), problems


def test_address_in_use_exits_1():
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        result = run_cli("run", "--listen", f"127.0.0.1:{port}", timeout=20)
    finally:
        holder.close()
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_with_idle_clients_exits_0():
    proxy = start_proxy(None)
    clients = [RawClient(proxy.port) for _ in range(3)]
    try:
        for c in clients:
            assert c.call("PING") == b"+PONG\r\n"
        wait_until(lambda: b"connected_clients:3" in clients[0].call("INFO", "clients"),
                   timeout=5, what="three connected clients")
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        code = proxy.proc.wait(10)
        assert time.monotonic() - started < 5
        assert code == 0
        for c in clients:
            _, closed = read_to_eof(c.sock, timeout=2)
            assert closed
        log = proxy.log()
        assert "draining 3 client(s)" in log
        assert log.rstrip().endswith("stopped")
    finally:
        for c in clients:
            c.close()
        proxy.stop()


def test_keygen_prints_64_hex_characters():
    first = run_cli("keygen", timeout=20)
    second = run_cli("keygen", timeout=20)
    for result in (first, second):
        assert result.returncode == 0
        assert re.fullmatch(r"[0-9a-f]{64}\n", result.stdout), result.stdout
        assert result.stderr == ""
    assert first.stdout != second.stdout


def test_help_and_unknown_option_do_not_traceback():
    result = run_cli("--no-such-option", timeout=20)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--no-such-option" in result.stderr
