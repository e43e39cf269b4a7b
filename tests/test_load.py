"""10,000 concurrent client connections held and served by one cachecloak, then released
without leaking a file descriptor.

The test opens the connections with plain sockets (a redis-py client each would cost far
more than the proxy does), in batches so the proxy's listen backlog never overflows:
each connection writes its own key through the proxy into a real Redis, then, with all
10,000 open at once, every connection reads its key back and must get exactly its own
value (a reply routed to the wrong connection would show).  A fresh redis-py client is
then served too, and once everything is closed the proxy's descriptor count
(/proc/<pid>/fd) returns to its baseline.

RLIMIT_NOFILE: the soft limit of this process is raised to the hard limit (the proxy
started here inherits it); the test skips, saying so, when the hard limit is too low.
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import os
import resource
import secrets
import selectors
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.proxyproc import start_proxy_listeners, wait_until
from tests.secrets_registry import register_secret
from tests.servers import encode_command, free_port, start_redis

CONNECTIONS = 10_000
BATCH = 200  # connections opened before their first replies are read (listen backlog: 100+)
GRACEFUL_CLOSES = 500  # the rest are reset (SO_LINGER 0): no TIME_WAIT pile-up
FD_HEADROOM = 300  # descriptors beyond the connections: Python, pytest, Redis clients
FD_SLACK = 8  # descriptors the proxy may hold above its baseline afterwards
REPLY_TIMEOUT = 60.0


def _raise_nofile(need: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit is {hard}, below the {need} descriptors this "
                    "test needs; raise it (ulimit -Hn, or LimitNOFILE= for a service)")
    target = need * 2 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _stable_fd_count(pid: int) -> int:
    """The count once it stops changing (the proxy finishes closing what it closes)."""
    last = [-1]

    def settled() -> int | None:
        now = _fd_count(pid)
        same = now == last[0]
        last[0] = now
        return now if same else None

    return wait_until(settled, timeout=10, interval=0.2, what="a stable descriptor count")


def _exchange(socks: list[socket.socket], requests: list[bytes], expected: list[bytes],
              timeout: float) -> list[str]:
    """Send requests[i] on socks[i], read until each has len(expected[i]) bytes; return
    the problems (a wrong reply, a closed connection).  Bounded by `timeout`."""
    for sock, request in zip(socks, requests, strict=True):
        sock.sendall(request)
    problems: list[str] = []
    got = {sock.fileno(): b"" for sock in socks}
    want = {sock.fileno(): exp for sock, exp in zip(socks, expected, strict=True)}
    index = {sock.fileno(): i for i, sock in enumerate(socks)}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        waiting = len(socks)
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                problems.append(f"{waiting} connections got no complete reply in {timeout}s")
                break
            for key, _ in sel.select(min(remaining, 1.0)):
                sock = key.fileobj
                fd = sock.fileno()
                data = sock.recv(4096)
                if not data:
                    problems.append(f"connection {index[fd]} closed by the proxy")
                else:
                    got[fd] += data
                    if len(got[fd]) < len(want[fd]):
                        continue
                    if got[fd] != want[fd]:
                        problems.append(f"connection {index[fd]}: reply {got[fd][:60]!r} "
                                        f"!= {want[fd][:60]!r}")
                sel.unregister(sock)
                waiting -= 1
    return problems


def _config(port: int, upstream: str) -> str:
    enc, hashing = secrets.token_hex(32), secrets.token_hex(32)
    register_secret(enc, "encryption key")
    register_secret(hashing, "hashing key")
    return f"""\
listeners:
  - address: 127.0.0.1:{port}
    cache: app
    maxClients: {CONNECTIONS + 100}
caches:
  - name: app
    type: redis
    redis:
      addresses: ["{upstream}"]
      disableTLS: true
    encryption:
      keys:
        current: "{enc}"
    hashing:
      keys:
        current: "{hashing}"
"""


def test_ten_thousand_connections_are_held_served_and_released():
    soft, hard = _raise_nofile(CONNECTIONS + FD_HEADROOM)
    redis_server = start_redis("--maxclients", "1000")
    port = free_port()
    proxy = None
    socks: list[socket.socket] = []
    token = secrets.token_hex(4)
    register_secret(f"load-{token}", "workload plaintext")
    try:
        proxy = start_proxy_listeners(_config(port, redis_server.address), [port])
        pid = proxy.proc.pid
        proxy_limit = int(next(line.split()[3] for line in
                               Path(f"/proc/{pid}/limits").read_text().splitlines()
                               if line.startswith("Max open files")))
        assert proxy_limit >= CONNECTIONS + 100, proxy_limit
        with proxy.client(socket_timeout=10) as warm:
            assert warm.set("warm-up", "1") and warm.get("warm-up") == b"1"
        baseline = _stable_fd_count(pid)

        # Open in batches: each new connection writes its own key, and the batch's
        # replies are read before the next batch, so the accept queue stays short.
        linger = struct.pack("ii", 1, 0)
        deadline = time.monotonic() + REPLY_TIMEOUT
        while len(socks) < CONNECTIONS:
            assert time.monotonic() < deadline, f"only {len(socks)} connections opened"
            batch = []
            for _ in range(min(BATCH, CONNECTIONS - len(socks))):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                if len(socks) >= GRACEFUL_CLOSES:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                socks.append(sock)
                batch.append(sock)
            first = len(socks) - len(batch)
            problems = _exchange(
                batch,
                [encode_command(("SET", f"load-{token}:{first + i}", f"v{first + i}-{token}"))
                 for i in range(len(batch))],
                [b"+OK\r\n"] * len(batch), timeout=REPLY_TIMEOUT)
            assert not problems, problems[:5]

        # All held at once: every connection reads its own value back.
        assert _fd_count(pid) >= baseline + CONNECTIONS
        problems = _exchange(
            socks,
            [encode_command(("GET", f"load-{token}:{i}")) for i in range(CONNECTIONS)],
            [b"$%d\r\n%b\r\n" % (len(v), v) for v in
             (f"v{i}-{token}".encode() for i in range(CONNECTIONS))],
            timeout=REPLY_TIMEOUT)
        assert not problems, f"{len(problems)} problems, first: {problems[:5]}"

        # A new client is still served while the 10,000 are open.
        with proxy.client(socket_timeout=10) as fresh:
            assert fresh.ping() is True
            assert fresh.get(f"load-{token}:{CONNECTIONS - 1}") == (
                f"v{CONNECTIONS - 1}-{token}".encode())
            assert fresh.info("clients")["connected_clients"] == CONNECTIONS + 1
        with redis_server.client() as direct:
            assert direct.dbsize() == CONNECTIONS + 1  # every key reached Redis
            assert direct.info("clients")["connected_clients"] < 20  # a pool, not 10,000

        for sock in socks:
            sock.close()
        socks.clear()
        wait_until(lambda: _fd_count(pid) <= baseline + FD_SLACK, timeout=30, interval=0.1,
                   what=f"the proxy's descriptors back near its baseline of {baseline}")
        with proxy.client(socket_timeout=10) as after:
            assert after.info("clients")["connected_clients"] == 1
            assert after.get(f"load-{token}:0") == f"v0-{token}".encode()
        assert proxy.proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        if proxy is not None:
            assert proxy.stop() == 0
        redis_server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log = proxy.log()
    assert "Traceback" not in log and "internal error" not in log, log[-2000:]
