"""Clients that misbehave: they pipeline without reading, leave in the middle of a reply
or with commands still at Redis, dribble their commands, send half a command and go,
leave with a WATCH open, or guess passwords.

Each test works on one real cachecloak process in front of a real Redis and checks,
besides the replies, that nothing leaks: the proxy's file descriptors (/proc/PID/fd)
come back to their count before the test, Redis sees no more cachecloak connections
than before (the pool plus at most MAX_IDLE_DEDICATED idle transaction connections),
INFO's `listener_connected_clients` comes back, and the resident memory of the proxy
stops growing after a warm-up (a leaked reply or partial command per client would grow
it by megabytes per round).  The upstream pool has one connection, so every client shares
it: a client leaving with replies still due must not shift anyone else's replies.

Every loop is bounded in count and every wait in time; loopback only.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from proxy.backends.redis.pool import MAX_IDLE_DEDICATED
from tests.proxyproc import start_proxy_listeners, wait_until
from tests.servers import RawClient, encode_command, free_port, start_redis

ENC = "7a" * 32
HASH = "8b" * 32
PASSWORD = "misbehaving-clients-pw-93k2"
WRONG = "not-the-password-x71"
BIG = 2 * 1024 * 1024  # one stored value, read many times per round
# Growth of the proxy's resident memory allowed between the end of the warm-up rounds
# and the end of the test.  Keeping what a departed client asked for or half sent would
# grow it by 8 MB (4 x BIG of replies) or 1 MB (a partial bulk) per client and round:
# 256 MB and 24 MB x 5 clients over the measured rounds below.
RSS_SLACK = 40 * 1024 * 1024
FD_SLACK = 2  # descriptors the proxy may hold above its count before the test
POOL = 1  # poolSize of the cache: every client shares one upstream connection


def cache_config(port: int, redis_server, guarded: int | None = None) -> str:
    """A listener on `port` (and one with a password on `guarded`) for one redis cache."""
    second = f"""\
  - address: 127.0.0.1:{guarded}
    cache: app
    password: "{PASSWORD}"
""" if guarded else ""
    return f"""\
listeners:
  - address: 127.0.0.1:{port}
    cache: app
{second}caches:
  - name: app
    type: redis
    redis:
      addresses: ["{redis_server.address}"]
      disableTLS: true
      poolSize: {POOL}
    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
"""


@pytest.fixture(scope="module")
def proxy(redis_server):
    port, guarded = free_port(), free_port()
    config = cache_config(port, redis_server, guarded)
    started = start_proxy_listeners(config, [port, guarded])
    started.guarded_port = guarded
    yield started
    assert started.stop() == 0, started.log()
    assert "Traceback" not in started.log(), started.log()


# -- what must not leak ----------------------------------------------------------------

def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


def upstream_connections(redis_server) -> int:
    client = redis_server.client()
    try:
        return sum(1 for c in client.client_list() if c.get("name") == "cachecloak")
    finally:
        client.close()


def connected_clients(proxy) -> int:
    """Clients of the listener, not counting the one that asks."""
    with RawClient(proxy.port) as c:
        info = c.call("INFO", "cachecloak").decode()
    line = next(x for x in info.split("\r\n") if x.startswith("listener_connected_clients:"))
    return int(line.split(":", 1)[1]) - 1


class Baseline:
    def __init__(self, proxy, redis_server):
        self.proxy, self.redis = proxy, redis_server
        self.pid = proxy.proc.pid
        self.fds = fd_count(self.pid)
        self.clients = connected_clients(proxy)
        self.upstream = upstream_connections(redis_server)

    def assert_nothing_leaked(self) -> None:
        wait_until(lambda: connected_clients(self.proxy) == self.clients, timeout=10,
                   what="the listener's client count back to its baseline")
        wait_until(lambda: fd_count(self.pid) <= self.fds + FD_SLACK, timeout=10,
                   what=f"descriptors back to {self.fds} (+{FD_SLACK})")
        # The pool's connection, plus idle transaction connections kept for reuse.
        wait_until(lambda: upstream_connections(self.redis) <= POOL + MAX_IDLE_DEDICATED,
                   timeout=10,
                   what="no more upstream connections than the pool and its idle spares")
        assert self.proxy.proc.poll() is None


def leave(sock: socket.socket, reset: bool) -> None:
    """Close; with `reset`, with a TCP reset (SO_LINGER 0), as a killed client does."""
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def raw_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep the reply in the proxy
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def check_other_client(checker: RawClient, tag: str) -> None:
    """A well-behaved client on the same upstream connection gets exactly its replies."""
    key = f"other:{tag}"
    assert checker.call("SET", key, f"value {tag}") == b"+OK\r\n"
    expected = f"value {tag}".encode()
    assert checker.call("GET", key) == b"$%d\r\n%b\r\n" % (len(expected), expected)


# -- the tests -------------------------------------------------------------------------

def test_clients_leaving_in_the_middle_of_a_reply_leak_nothing(proxy, redis_server):
    value = os.urandom(BIG // 2).hex().encode()  # BIG bytes
    with RawClient(proxy.port) as setup:
        assert setup.call("SET", "big", value) == b"+OK\r\n"
    base = Baseline(proxy, redis_server)
    rounds, warmup = 40, 8
    pipeline = b"".join(encode_command(["GET", "big"]) for _ in range(4))
    with RawClient(proxy.port) as checker:
        for round_no in range(rounds):
            if round_no == warmup:
                warm_rss = rss(base.pid)
            sock = raw_socket(proxy.port)
            sock.sendall(pipeline)
            got = sock.recv(65536)  # the head of the first reply, then gone
            assert got.startswith(b"$%d\r\n" % len(value)), got[:40]
            leave(sock, reset=bool(round_no % 2))
            check_other_client(checker, f"reply-{round_no}")
        # Redis answered every GET of every client that left: nothing is still due.
        assert checker.call("GET", "big") == b"$%d\r\n%b\r\n" % (len(value), value)
    base.assert_nothing_leaked()
    growth = rss(base.pid) - warm_rss
    assert growth < RSS_SLACK, f"resident memory grew by {growth / 2**20:.0f} MiB"


def redis_rx_queue(port: int) -> int:
    """Bytes received but not yet read by the redis-server on `port` (/proc/net/tcp)."""
    total = 0
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
                total += int(fields[4].split(":")[1], 16)
    return total


@pytest.fixture(scope="module")
def debug_redis():
    server = start_redis("--enable-debug-command", "local")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def debug_proxy(debug_redis):
    port = free_port()
    proxy = start_proxy_listeners(cache_config(port, debug_redis), [port])
    yield proxy
    assert proxy.stop() == 0, proxy.log()


def test_clients_leaving_with_commands_still_at_redis_do_not_shift_replies(debug_proxy,
                                                                           debug_redis):
    proxy, port = debug_proxy, debug_redis.port
    base = Baseline(proxy, debug_redis)
    with RawClient(proxy.port) as checker:
        assert checker.call("SET", "mine", "checker's") == b"+OK\r\n"
        for round_no in range(3):
            # Redis asleep: the leavers' commands wait unread at Redis, on the one
            # upstream connection every client shares.
            staller = socket.create_connection(("127.0.0.1", port))
            staller.sendall(encode_command(["DEBUG", "SLEEP", "1"]))
            probe = socket.create_connection(("127.0.0.1", port), timeout=0.2)
            probe.sendall(encode_command(["PING"]))
            with pytest.raises((TimeoutError, socket.timeout)):
                probe.recv(100)  # Redis is asleep
            queued = redis_rx_queue(port)
            leavers, sent = [], 0
            for i in range(10):
                sock = raw_socket(proxy.port)
                request = b"".join(encode_command(["SET", f"leaver:{i}", "x" * 100])
                                   + encode_command(["GET", "mine"]) for _ in range(20))
                sock.sendall(request)
                sent += len(request)
                leavers.append(sock)
            # Forwarded (hashed, sealed: longer than what the clients sent), not answered.
            wait_until(lambda sent=sent, queued=queued: redis_rx_queue(port) >= queued + sent,
                       timeout=5, what="the leavers' commands to reach the sleeping Redis")
            for i, sock in enumerate(leavers):
                leave(sock, reset=bool(i % 2))
            # Sent after theirs on the same upstream connection: must get its own reply.
            assert checker.call("GET", "mine") == b"$9\r\nchecker's\r\n"
            staller.close()
            probe.close()
            check_other_client(checker, f"shift-{round_no}")
    base.assert_nothing_leaked()


def test_a_client_that_never_reads_is_paused_with_bounded_memory(proxy, redis_server):
    """It pipelines GETs without reading a reply: the proxy stops reading from it (its
    replies wait in a bounded buffer, then the kernel's), so what it could send is a
    small part of what it offered; its memory stays bounded; others are served; once it
    reads, every reply it is owed arrives, in order."""
    value = b"r" * 200
    command = encode_command(["GET", "unread"])
    reply = b"$%d\r\n%b\r\n" % (len(value), value)
    offered = 2_000_000  # 50 MB of commands, 420 MB of replies
    base = Baseline(proxy, redis_server)
    with RawClient(proxy.port) as checker:
        assert checker.call("SET", "unread", value) == b"+OK\r\n"
        before = rss(base.pid)
        sock = raw_socket(proxy.port)
        sock.setblocking(False)
        block = command * 20_000
        sent, idle_since = 0, time.monotonic()
        while sent < offered * len(command) and time.monotonic() - idle_since < 1.0:
            try:
                n = sock.send(block[sent % len(command):])
            except BlockingIOError:
                n = 0
            if n:
                sent += n
                idle_since = time.monotonic()
            else:
                time.sleep(0.01)
        check_other_client(checker, "unread")  # served while the other is stuck
        grown = rss(base.pid) - before
        # Without the pause the proxy would take all 50 MB and hold 420 MB of replies;
        # with it, what the client got in is bounded by the per-client limit plus the
        # kernel's socket buffers (several MB on loopback).
        assert sent < offered * len(command) // 2, sent
        assert grown < RSS_SLACK, f"resident memory grew by {grown / 2**20:.0f} MiB"
        # Complete the last command while reading every reply owed (the proxy reads
        # the rest only once the client reads: sending first could block forever).
        commands = -(-sent // len(command))
        tail = command[len(command) - (commands * len(command) - sent):] if (
            commands * len(command) > sent) else b""
        want, got = commands * len(reply), bytearray()
        deadline = time.monotonic() + 60
        while len(got) < want and time.monotonic() < deadline:
            if tail:
                try:
                    tail = tail[sock.send(tail):]
                except BlockingIOError:
                    pass
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            assert chunk, f"closed after {len(got)} of {want} bytes"
            got += chunk
        assert not tail and len(got) == want, (len(tail), len(got), want)
        assert got == reply * commands
        leave(sock, reset=False)
    base.assert_nothing_leaked()


def test_slow_loris_clients_are_served_and_do_not_stall_others(proxy, redis_server):
    base = Baseline(proxy, redis_server)
    loris = [raw_socket(proxy.port) for _ in range(30)]
    commands = [encode_command(["SET", f"loris:{i}", f"slow value {i}"])
                for i in range(len(loris))]
    longest = max(len(c) for c in commands)
    try:
        with RawClient(proxy.port) as checker:
            for pos in range(longest):  # one byte per client per round
                for sock, command in zip(loris, commands, strict=True):
                    if pos < len(command):
                        sock.sendall(command[pos:pos + 1])
                if pos % 8 == 0:
                    check_other_client(checker, f"loris-{pos}")  # others are not held up
                    assert connected_clients(proxy) >= base.clients + len(loris)
                time.sleep(0.02)
        # As Redis (timeout 0): a slow client is not cut off; its command runs when whole.
        for i, sock in enumerate(loris):
            assert sock.recv(100) == b"+OK\r\n", i
        with RawClient(proxy.port) as c:
            assert c.call("GET", "loris:7") == b"$12\r\nslow value 7\r\n"
    finally:
        for i, sock in enumerate(loris):
            leave(sock, reset=bool(i % 2))
    base.assert_nothing_leaked()


HALF_SENT = [
    b"*3\r\n$3\r\nSET\r\n$4\r\nhal",  # inside an argument
    b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10",  # inside a length line
    b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$4000000\r\n" + b"v" * 1_000_000,  # 1 of 4 MB
    b"SET half inline-without-newline",  # an inline command, no newline yet
    b"*2\r\n",  # only the array header
]


def test_half_sent_commands_then_a_close_run_nothing_and_leak_nothing(proxy, redis_server):
    base = Baseline(proxy, redis_server)
    before_keys = redis_server.client().dbsize()
    rounds, warmup = 30, 6
    with RawClient(proxy.port) as checker:
        for round_no in range(rounds):
            if round_no == warmup:
                warm_rss = rss(base.pid)
            socks = []
            for part in HALF_SENT:
                sock = raw_socket(proxy.port)
                sock.sendall(part)
                socks.append(sock)
            check_other_client(checker, f"half-{round_no}")  # the halves sit in the proxy
            for i, sock in enumerate(socks):
                leave(sock, reset=bool((i + round_no) % 2))
        assert checker.call("EXISTS", "half") == b":0\r\n"
    # Nothing of a half-sent command ran: only the checker's keys were written.
    assert redis_server.client().dbsize() == before_keys + rounds
    base.assert_nothing_leaked()
    growth = rss(base.pid) - warm_rss
    assert growth < RSS_SLACK, f"resident memory grew by {growth / 2**20:.0f} MiB"


def test_clients_leaving_with_a_watch_or_multi_open_return_their_connections(
        proxy, redis_server):
    base = Baseline(proxy, redis_server)
    with RawClient(proxy.port) as checker:
        for round_no in range(3):
            socks = []
            for i in range(12):
                sock = raw_socket(proxy.port)
                # WATCH takes a dedicated upstream connection; MULTI queues in the proxy.
                sock.sendall(encode_command(["WATCH", f"w:{i}"])
                             + encode_command(["MULTI"])
                             + encode_command(["SET", f"w:{i}", "never"]))
                reply = b""
                while reply.count(b"\r\n") < 3:
                    reply += sock.recv(100)
                assert reply == b"+OK\r\n+OK\r\n+QUEUED\r\n", reply
                socks.append(sock)
            assert upstream_connections(redis_server) >= 12  # each WATCH holds one
            for i, sock in enumerate(socks):
                leave(sock, reset=bool(i % 2))
            check_other_client(checker, f"watch-{round_no}")
        # The abandoned transactions never ran.
        assert checker.call("EXISTS", *[f"w:{i}" for i in range(12)]) == b":0\r\n"
        # A reused dedicated connection carries no stale WATCH: this transaction runs.
        assert checker.call("WATCH", "w:0") == b"+OK\r\n"
        assert checker.call("MULTI") == b"+OK\r\n"
        assert checker.call("SET", "w:0", "ran") == b"+QUEUED\r\n"
        assert checker.call("EXEC") == b"*1\r\n+OK\r\n"
        assert checker.call("DEL", "w:0") == b":1\r\n"
    base.assert_nothing_leaked()


def test_wrong_client_passwords_are_refused_counted_and_logged_once_per_connection(proxy):
    port = proxy.guarded_port

    def auth_failures() -> int:
        with RawClient(port) as c:
            assert c.call("AUTH", PASSWORD) == b"+OK\r\n"
            info = c.call("INFO", "cachecloak").decode()
        line = next(x for x in info.split("\r\n") if x.startswith("auth_failures:"))
        return int(line.split(":", 1)[1])

    before = auth_failures()
    wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    with RawClient(port) as guesser:
        for attempt in range(5):
            assert guesser.call("AUTH", f"{WRONG}{attempt}") == wrongpass
        assert guesser.call("GET", "k") == b"-NOAUTH Authentication required.\r\n"
    with RawClient(port) as other:
        assert other.call("HELLO", "3", "AUTH", "default", WRONG) == wrongpass
        assert other.call("AUTH", "someone", PASSWORD) == wrongpass  # right password, user no
    assert auth_failures() == before + 7
    lines = [line for line in proxy.log().splitlines() if "wrong password" in line]
    assert len(lines) == 2, lines  # one per connection, not one per guess
    for line in lines:
        assert "WARNING" in line and f"listener 127.0.0.1:{port}: client 127.0.0.1:" in line
    log = proxy.log()
    assert PASSWORD not in log and WRONG not in log
