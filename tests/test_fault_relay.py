"""Faults between cachecloak and Redis, made with the fault-injecting relay (tests.faultrelay).

The relay sits between a real cachecloak process and a real redis-server and, on the
test's command, cuts the reply stream after an exact number of bytes, resets, hangs,
slows down, limits bandwidth or refuses connections.  Replies are checked as the exact
bytes a client receives: every command gets exactly one reply, in order, and no reply is
ever matched to another command.  Redis's own error replies (-OOM, -BUSY, -LOADING) are
provoked for real and must reach the client unchanged.

Every wait is bounded (wait_until, socket timeouts); nothing asserts wall time.
"""

from __future__ import annotations

import asyncio
import http.client
import shutil
import socket
import threading
import time

import pytest

from proxy.backends.redis.connection import _BACKOFF_MAX, UpstreamConnection, UpstreamSettings
from tests.certs import TestCA
from tests.faultrelay import FaultRelay
from tests.proxyproc import start_proxy_listeners, wait_until
from tests.servers import RawClient, encode_command, free_port, start_proxy, start_redis
from tests.upstream import start_tls_redis

ENC = "7a" * 32
HASH = "8b" * 32
OVERHEAD = 33  # the value envelope: version, key id, nonce, tag


def cache_config(name: str, address: str, *, tls: str | None = None, **redis: object) -> str:
    """One `type: redis` cache entry of `caches:`; `redis` holds extra redis: fields."""
    transport = "      disableTLS: true\n" if tls is None else f"      tls: {tls}\n"
    extra = "".join(f"      {field}: {value}\n" for field, value in redis.items())
    return f"""\
  - name: {name}
    type: redis
    redis:
      addresses: ["{address}"]
      mode: standalone
{transport}{extra}    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
"""


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def proxy_rss(proxy) -> int:
    """Resident memory of the proxy process, in bytes."""
    with open(f"/proc/{proxy.proc.pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for the proxy process")


def assert_one_line_error(reply: bytes, prefix: bytes = b"-ERR cachecloak: ") -> None:
    assert reply.startswith(prefix), reply
    assert reply.endswith(b"\r\n") and b"\r\n" not in reply[:-2], reply


# ---------------------------------------------------------------------------------------
# Upstream dies after k of N pipelined replies
# ---------------------------------------------------------------------------------------

N = 8
VALUES = [f"value-{i}-".encode() + b"v" * (3 * i) for i in range(N)]  # distinct lengths


def client_reply(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def upstream_reply_length(value: bytes) -> int:
    """Bytes of Redis's reply to GET of a value stored by cachecloak (the envelope)."""
    stored = len(value) + OVERHEAD
    return len(b"$%d\r\n" % stored) + stored + 2


@pytest.fixture(scope="module")
def relayed():
    """A Redis, a relay in front of it, and a proxy (one upstream connection) behind it."""
    redis_server = start_redis()
    relay = FaultRelay(redis_server.port)
    proxy = start_proxy(
        "caches:\n" + cache_config("main", f"127.0.0.1:{relay.port}", poolSize=1))
    try:
        with RawClient(proxy.port) as c:
            for i, value in enumerate(VALUES):
                assert c.call("SET", f"key:{i}", value) == b"+OK\r\n"
        yield redis_server, relay, proxy
        assert proxy.stop() == 0, proxy.log()
        assert "Traceback" not in proxy.log()
    finally:
        proxy.stop()
        relay.close()
        redis_server.stop()


@pytest.mark.parametrize("k, partial, reset", [
    (0, 0, False),
    (3, 0, False),
    (3, 7, False),
    (N - 1, 1, False),
    (0, 2, True),
    (5, 0, True),
    (5, 11, True),
], ids=["none-fin", "3-fin", "3-and-part-fin", "all-but-one-fin", "part-rst", "5-rst",
        "5-and-part-rst"])
def test_upstream_cut_after_k_of_n_replies(relayed, k, partial, reset):
    _, relay, proxy = relayed
    lengths = [upstream_reply_length(v) for v in VALUES]
    assert partial < lengths[k]
    gets = b"".join(encode_command(["GET", f"key:{i}"]) for i in range(N))
    with RawClient(proxy.port) as c:
        wait_until(lambda: c.call("GET", "key:0") == client_reply(VALUES[0]), timeout=10,
                   what="the upstream connection to be ready")
        assert relay.open_connections == 1
        relay.cut_downstream_after(sum(lengths[:k]) + partial, reset=reset)
        c.send_raw(gets)
        replies = [c.read_reply() for _ in range(N)]
        assert replies[:k] == [client_reply(v) for v in VALUES[:k]]
        lost = replies[k:]
        assert len(set(lost)) == 1, lost  # the same error for every command in flight
        if reset:
            assert lost[0].startswith(b"-ERR cachecloak: connection lost"), lost[0]
            assert lost[0].endswith(b"before Redis replied; the command may or may not have "
                                    b"been applied\r\n"), lost[0]
            assert_one_line_error(lost[0])
        else:
            assert lost[0] == (
                b'-ERR cachecloak: connection lost on cache "main" at 127.0.0.1:%d before '
                b"Redis replied; the command may or may not have been applied\r\n"
                % relay.port)
        # The same client connection goes on: after the reconnect, every reply belongs to
        # its own command (a partial reply of the old connection is never reused).
        wait_until(lambda: c.call("GET", "key:1") == client_reply(VALUES[1]), timeout=10,
                   what="the proxy to reconnect")
        c.send_raw(gets + encode_command(["ECHO", "end"]))
        assert [c.read_reply() for _ in range(N)] == [client_reply(v) for v in VALUES]
        assert c.read_reply() == b"$3\r\nend\r\n"


# ---------------------------------------------------------------------------------------
# Upstream hangs: commandTimeout
# ---------------------------------------------------------------------------------------


def test_upstream_hang_times_out_and_the_rest_of_the_proxy_keeps_serving():
    redis_server = start_redis()
    relay = FaultRelay(redis_server.port)
    slow_port, fast_port, admin_port = free_port(), free_port(), free_port()
    slow_cache = cache_config("slow", f"127.0.0.1:{relay.port}", poolSize=1,
                              commandTimeout="1s", connectTimeout="1s")
    config = f"""\
admin:
  address: "127.0.0.1:{admin_port}"
listeners:
  - address: 127.0.0.1:{slow_port}
    cache: slow
  - address: 127.0.0.1:{fast_port}
    cache: fast
caches:
{slow_cache}\
  - name: fast
    type: local
"""
    proxy = start_proxy_listeners(config, [slow_port, fast_port, admin_port])
    timeout_error = (
        b'-ERR cachecloak: no reply within commandTimeout 1s on cache "slow" at 127.0.0.1:%d '
        b"before Redis replied; the command may or may not have been applied; Redis is "
        b"stalled or unreachable (if its commands are just slow, raise "
        b"redis.commandTimeout)\r\n" % relay.port)
    try:
        with RawClient(slow_port, timeout=15) as s, RawClient(fast_port) as f:
            assert s.call("SET", "h1", "one") == b"+OK\r\n"
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, what="ready")
            accepted = relay.accepted
            relay.set_hang(True)
            s.send_raw(b"".join(encode_command(c) for c in (
                ["GET", "h1"], ["PING"], ["SET", "h2", "two"], ["ECHO", "x"])))
            # While the upstream hangs, the other cache and the admin endpoint answer.
            for i in range(5):
                assert f.call("SET", f"f{i}", "v") == b"+OK\r\n"
                assert f.call("GET", f"f{i}") == b"$1\r\nv\r\n"
                assert http_get(admin_port, "/healthz") == (200, "ok\n")
            replies = [s.read_reply() for _ in range(4)]
            assert replies == [timeout_error, b"+PONG\r\n", timeout_error, b"$1\r\nx\r\n"]
            # The hung connection was dropped and a new one tried (it hangs too, in its
            # handshake): not ready, and a new client gets an error, not a hang.
            wait_until(lambda: relay.accepted > accepted, what="a replacement connection")
            _, body = wait_until(
                lambda: (r := http_get(admin_port, "/readyz"))[0] == 503 and r,
                what="readyz 503 while Redis hangs")
            assert body == "cache slow: upstream not ready\n"
            with RawClient(slow_port, timeout=15) as other:
                assert_one_line_error(other.call("GET", "h1"))
            assert f.call("PING") == b"+PONG\r\n"
            # Recovery without operator action.
            relay.set_hang(False)
            wait_until(lambda: s.call("GET", "h1") == b"$3\r\none\r\n", timeout=15,
                       what="the proxy to recover after the hang")
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, timeout=10,
                       what="ready again")
            # The timed-out SET was held, not lost: it may have run once the hang ended,
            # which is what its error said.
            assert s.call("GET", "h2") in (b"$-1\r\n", b"$3\r\ntwo\r\n")
        assert proxy.stop() == 0
        log = proxy.log()
        assert "no reply within commandTimeout 1s" in log
        assert "Traceback" not in log
    finally:
        proxy.stop()
        relay.close()
        redis_server.stop()


# ---------------------------------------------------------------------------------------
# Upstream slow and bandwidth-limited: latency, not failure; memory bounded
# ---------------------------------------------------------------------------------------


def test_slow_upstream_gives_latency_not_errors_and_bounded_memory():
    redis_server = start_redis()
    relay = FaultRelay(redis_server.port)
    proxy = start_proxy(
        "caches:\n" + cache_config("main", f"127.0.0.1:{relay.port}", poolSize=1))
    total = 300_000
    command = encode_command(["SET", "k", b"v" * 100])
    stream = command * total  # 36 MB the client would like to send at once
    try:
        with RawClient(proxy.port, timeout=30) as c:
            assert c.call("SET", "k", "first") == b"+OK\r\n"
            relay.set_latency(upstream_ms=50, downstream_ms=50)
            relay.set_bandwidth(upstream=128 * 1024, downstream=128 * 1024)
            baseline = proxy_rss(proxy)
            replies = bytearray()
            stop_reading = threading.Event()

            def read_replies() -> None:  # a client that reads its replies as they come
                c.sock.settimeout(0.2)
                while not stop_reading.is_set():
                    try:
                        chunk = c.sock.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:  # closed by the main thread after a failure
                        return
                    if not chunk:
                        return
                    replies.extend(chunk)

            reader = threading.Thread(target=read_replies, daemon=True)
            reader.start()
            # Send as much as the proxy takes, until it stops taking (backpressure).
            sender = c.sock.dup()
            sender.setblocking(False)
            sent, peak, last_progress = 0, baseline, time.monotonic()
            deadline = last_progress + 10
            while sent < len(stream) and time.monotonic() < deadline:
                try:
                    n = sender.send(stream[sent:sent + 1024 * 1024])
                except BlockingIOError:
                    n = 0
                if n:
                    sent += n
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > 1.0:
                    break
                else:
                    time.sleep(0.01)
                peak = max(peak, proxy_rss(proxy))
            peak = max(peak, proxy_rss(proxy))
            # The proxy stopped reading long before the client's 36 MB were in ...
            assert sent < len(stream) // 2, sent
            # ... and its memory stayed far below what it was offered.
            assert peak - baseline < 48 * 1024 * 1024, (peak - baseline, sent)
            # Latency, not failure: once Redis is fast again every command gets +OK.
            relay.clear()
            commands = -(-sent // len(command))
            sender.setblocking(True)
            sender.sendall(stream[sent:commands * len(command)])
            sender.close()
            wait_until(lambda: len(replies) >= 5 * commands, timeout=60, interval=0.1,
                       what="every reply")
            stop_reading.set()
            reader.join(5)
            assert bytes(replies) == b"+OK\r\n" * commands
        assert proxy.stop() == 0
        assert "commandTimeout" not in proxy.log()
    finally:
        proxy.stop()
        relay.close()
        redis_server.stop()


# ---------------------------------------------------------------------------------------
# Redis restarts: backoff with jitter, readiness, recovery
# ---------------------------------------------------------------------------------------


def test_reconnect_backoff_has_full_jitter_and_a_cap():
    loop = asyncio.new_event_loop()
    try:
        settings = UpstreamSettings("127.0.0.1", 1, username=None, password=None, db=0,
                                    connect_timeout=1.0, command_timeout=1.0, label="test")
        delays = []
        for _ in range(2):
            conn = UpstreamConnection(settings, loop)
            for _ in range(150):
                now = time.monotonic()
                conn._note_failure("refused")
                delays.append(conn._retry_at - now)
            conn.close()
    finally:
        loop.close()
    assert all(0 <= d <= _BACKOFF_MAX + 0.01 for d in delays)
    capped = delays[20:150] + delays[170:]
    # Full jitter: uniform over [0, cap], so retries from many proxies do not line up.
    assert min(capped) < 0.25 * _BACKOFF_MAX and max(capped) > 0.75 * _BACKOFF_MAX
    assert len({round(d, 6) for d in capped}) > 200


def test_redis_restart_backs_off_reports_not_ready_and_recovers():
    redis_server = start_redis()
    port = redis_server.port
    relay = FaultRelay(port)  # counts the proxy's connection attempts
    admin_port, listen_port = free_port(), free_port()
    config = f"""\
admin:
  address: "127.0.0.1:{admin_port}"
listeners:
  - address: 127.0.0.1:{listen_port}
caches:
{cache_config("main", f"127.0.0.1:{relay.port}", poolSize=2)}"""
    proxy = start_proxy_listeners(config, [listen_port, admin_port])
    restarted = None
    try:
        with RawClient(listen_port) as c:
            assert c.call("SET", "before", "1") == b"+OK\r\n"
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, what="ready")
            redis_server.proc.kill()
            redis_server.proc.wait(5)
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 503,
                       what="readyz 503 with Redis gone")
            # Each attempt reaches the relay, which resets it (nothing behind it).
            before = relay.accepted
            time.sleep(3)
            attempts = relay.accepted - before
            # Two connections retrying in the background, with backoff: a few attempts
            # each, not a reconnect storm (a loop without backoff makes thousands).
            assert 2 <= attempts <= 40, attempts
            assert_one_line_error(c.call("GET", "before"))
            restarted = start_redis(port=port)
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, timeout=15,
                       what="readyz 200 after Redis restarted")
            wait_until(lambda: c.call("SET", "after", "2") == b"+OK\r\n", timeout=10,
                       what="commands to succeed again")
            assert c.call("GET", "after") == b"$1\r\n2\r\n"
            assert c.call("GET", "before") == b"$-1\r\n"  # a new, empty Redis
        assert proxy.stop() == 0
        assert "Traceback" not in proxy.log()
    finally:
        proxy.stop()
        relay.close()
        redis_server.stop()
        if restarted is not None:
            restarted.stop()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca = TestCA(base / "ca")
    server = start_tls_redis(ca, ca.issue("server"))
    yield server, ca
    server.stop()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_tls_handshake_cut_halfway_reconnects_and_recovers(tls_redis, reset):
    server, ca = tls_redis
    relay = FaultRelay(server.port)
    admin_port = free_port()
    config = f"""\
admin:
  address: "127.0.0.1:{admin_port}"
tls:
  p:
    caFile: {ca.cert_path}
caches:
{cache_config("main", f"127.0.0.1:{relay.port}", tls="p", poolSize=1,
              connectTimeout="1s")}"""
    proxy = start_proxy(config)
    value = b"t" * 1000
    try:
        with RawClient(proxy.port) as c:
            assert c.call("SET", "k", value) == b"+OK\r\n"
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, what="ready")
            accepted = relay.accepted
            # The open connection dies in its next reply; every new one 300 bytes into
            # the server's first handshake flight (its certificate is longer than that).
            relay.cut_downstream_after(300, reset=reset, new_connections=True)
            errors = []
            for _ in range(3):
                reply = c.call("GET", "k")
                if reply != client_reply(value):
                    assert_one_line_error(reply)
                    errors.append(reply)
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 503,
                       what="readyz 503 while handshakes fail")
            wait_until(lambda: relay.accepted >= accepted + 2, what="reconnect attempts")
            reply = c.call("GET", "k")
            assert_one_line_error(reply, b'-ERR cachecloak: Redis for cache "main" at ')
            assert b"TLS handshake failed: the connection was closed during the handshake" in (
                reply), reply
            assert errors
            relay.clear()
            wait_until(lambda: c.call("GET", "k") == client_reply(value), timeout=15,
                       what="recovery once handshakes complete")
            wait_until(lambda: http_get(admin_port, "/readyz")[0] == 200, what="ready again")
        assert proxy.stop() == 0
        log = proxy.log()
        assert "TLS handshake failed: the connection was closed during the handshake" in log
        assert "Traceback" not in log
    finally:
        proxy.stop()
        relay.close()


# ---------------------------------------------------------------------------------------
# Redis's own errors reach the client with Redis's prefix
# ---------------------------------------------------------------------------------------


def direct_proxy(redis_server):
    return start_proxy(
        "caches:\n" + cache_config("main", redis_server.address, poolSize=1))


def test_oom_is_passed_through():
    redis_server = start_redis()
    proxy = direct_proxy(redis_server)
    try:
        with RawClient(proxy.port) as c, RawClient(redis_server.port) as direct:
            assert c.call("SET", "a", "1") == b"+OK\r\n"
            assert direct.call("CONFIG", "SET", "maxmemory-policy", "noeviction") == b"+OK\r\n"
            assert direct.call("CONFIG", "SET", "maxmemory", "1") == b"+OK\r\n"
            expected = direct.call("SET", "x", "y")
            assert expected.startswith(b"-OOM "), expected
            assert c.call("SET", "a", "2") == expected
            assert c.call("GET", "a") == b"$1\r\n1\r\n"  # reads still work
            assert direct.call("CONFIG", "SET", "maxmemory", "0") == b"+OK\r\n"
            assert c.call("SET", "a", "3") == b"+OK\r\n"
        assert proxy.stop() == 0
    finally:
        proxy.stop()
        redis_server.stop()


def test_busy_is_passed_through():
    redis_server = start_redis("--busy-reply-threshold", "100")
    proxy = direct_proxy(redis_server)
    script = RawClient(redis_server.port, timeout=20)
    direct = RawClient(redis_server.port, timeout=20)
    try:
        with RawClient(proxy.port) as c:
            assert c.call("SET", "a", "1") == b"+OK\r\n"
            script.send("EVAL", "while true do end", "0")  # busy until SCRIPT KILL
            expected = wait_until(lambda: (r := direct.call("PING")).startswith(b"-BUSY") and r,
                                  what="Redis to be busy")
            try:
                assert c.call("GET", "a") == expected
            finally:
                assert direct.call("SCRIPT", "KILL") == b"+OK\r\n"
            assert script.read_reply().startswith(b"-ERR")
            assert c.call("GET", "a") == b"$1\r\n1\r\n"
        assert proxy.stop() == 0
    finally:
        script.close()
        direct.close()
        proxy.stop()
        redis_server.stop()


def test_loading_is_passed_through(tmp_path):
    """-LOADING for real: Redis restarted on a snapshot it loads slowly (key-load-delay)."""
    redis_server = start_redis("--enable-debug-command", "local")
    port = redis_server.port
    with RawClient(port) as direct:
        assert direct.call("DEBUG", "POPULATE", "3000") == b"+OK\r\n"
        assert direct.call("SAVE") == b"+OK\r\n"
    shutil.copy(redis_server.workdir / "dump.rdb", tmp_path / "dump.rdb")
    proxy = direct_proxy(redis_server)
    loading = None
    try:
        with RawClient(proxy.port) as c:
            assert c.call("SET", "a", "1") == b"+OK\r\n"
            redis_server.stop()
            # 1 ms per key: Redis loads for about three seconds, answering -LOADING.
            loading = start_redis("--dir", str(tmp_path), "--key-load-delay", "1000",
                                  "--loading-process-events-interval-bytes", "1024",
                                  port=port)
            with RawClient(port) as direct:
                expected = direct.call("GET", "x")
            assert expected == b"-LOADING Redis is loading the dataset in memory\r\n"
            seen = []

            def got_loading() -> bool:
                reply = c.call("GET", "a")
                seen.append(reply)
                return reply == expected

            wait_until(got_loading, timeout=10, interval=0.05, what="-LOADING via the proxy")
            for reply in seen[:-1]:  # before: only "reconnecting" errors
                assert_one_line_error(reply)
            wait_until(lambda: c.call("SET", "a", "2") == b"+OK\r\n", timeout=20,
                       what="Redis to finish loading")
            assert c.call("GET", "a") == b"$1\r\n2\r\n"
        assert proxy.stop() == 0
    finally:
        proxy.stop()
        redis_server.stop()
        if loading is not None:
            loading.stop()


def test_relay_refuses_and_resets_on_command():
    """The relay itself: refusing closes the port; reset mode accepts and resets."""
    redis_server = start_redis()
    relay = FaultRelay(redis_server.port)
    try:
        with RawClient(relay.port) as c:
            assert c.call("PING") == b"+PONG\r\n"
            relay.set_refuse(True)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", relay.port), timeout=5)
            assert c.call("PING") == b"+PONG\r\n"  # open connections are not affected
            relay.set_refuse(False)
            relay.set_refuse(True, mode="reset")
            before = relay.accepted
            with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
                s.settimeout(5)
                with pytest.raises(ConnectionResetError):
                    s.sendall(encode_command(["PING"]))
                    s.recv(100)
            assert relay.accepted == before + 1
            relay.reset_all()
            with pytest.raises((ConnectionResetError, ConnectionError)):
                c.call("PING")
        relay.set_refuse(False)
        with RawClient(relay.port) as c:
            assert c.call("PING") == b"+PONG\r\n"
    finally:
        relay.close()
        redis_server.stop()
