"""The client connection's read and write (proxy.server.client.Core: proxy._native.ClientCore
in C, client.PythonCore its twin), against a real cachecloak and a real Redis.

The C core forwards a read of one simple command itself and writes the replies of those
commands itself; anything else it hands to Python.  These tests put the two paths side
by side on one connection, where a slip would show: replies out of order, a reply lost
or written twice, a byte miscounted.  CI runs this file on both cores (the second pass
sets CACHECLOAK_NATIVE=0).

Every wait is bounded in time; loopback only.
"""

from __future__ import annotations

import time

import pytest

from proxy.server import client as client_module
from proxy.speedups import native
from tests.proxyproc import start_proxy_listeners
from tests.servers import RawClient, encode_command, free_port
from tests.upstream import cache_yaml

ENC = "3c" * 32
HASH = "4d" * 32
PASSWORD = "client-core-pw-5m1"


@pytest.fixture(scope="module")
def proxy(redis_server):
    port, guarded = free_port(), free_port()
    config = f"""\
listeners:
  - address: 127.0.0.1:{port}
    cache: app
  - address: 127.0.0.1:{guarded}
    cache: app
    password: "{PASSWORD}"
""" + cache_yaml(redis_server.address, redis_extra="      poolSize: 1\n", enc=ENC, hashing=HASH)
    started = start_proxy_listeners(config, [port, guarded])
    started.guarded_port = guarded
    yield started
    assert started.stop() == 0, started.log()
    assert "Traceback" not in started.log(), started.log()


def test_the_core_holds_exactly_its_fields_and_the_connection_does_not_shadow_them():
    # A name in both would give Python its own slot beside the C field: Python code would
    # set one and the C path read the other (say, `authenticated`).
    connection_slots = set(client_module.ClientConnection.__slots__)
    assert not connection_slots & set(client_module.CORE_FIELDS)
    assert set(client_module.PythonCore.__slots__) == set(client_module.CORE_FIELDS)
    if native is not None:
        members = {name for name, value in vars(native.ClientCore).items()
                   if type(value).__name__ == "member_descriptor"}
        assert members == set(client_module.CORE_FIELDS)
        assert client_module.Core is native.ClientCore
        assert native.CLIENT_MAX_INFLIGHT == client_module.MAX_INFLIGHT
    else:
        assert client_module.Core is client_module.PythonCore


def _info_counts(raw: RawClient) -> tuple[int, int, bytes]:
    request = encode_command(("INFO", "cachecloak"))
    raw.send_raw(request)
    reply = raw.read_reply()
    fields = dict(line.split(":", 1) for line in reply.decode().split("\r\n")
                  if line.startswith("listener_bytes_"))
    return int(fields["listener_bytes_received"]), int(fields["listener_bytes_sent"]), reply


def test_replies_keep_their_order_when_forwarded_and_local_replies_interleave(
        proxy, redis_server):
    """Redis is held back (CLIENT PAUSE), so the forwarded commands' replies are still
    due while later reads are answered by the proxy itself.  Each command is its own
    read: the forwarded ones take the C path, the local ones Python's, and the queue
    they share must come out in the order they were sent."""
    direct = redis_server.client()
    commands = [
        ("SET", "core:a", "value-a"),     # forwarded: a Single
        ("PING",),                        # answered by the proxy
        ("GET", "core:a"),                # forwarded
        ("ECHO", "local-between"),        # answered by the proxy
        ("GET", "core:missing"),          # forwarded
        ("SET", "core:b", "value-b"),     # forwarded
        ("GET", "core:b"),                # forwarded
        ("PING", "last"),                 # answered by the proxy
    ]
    expected = [b"+OK\r\n", b"+PONG\r\n", b"$7\r\nvalue-a\r\n", b"$13\r\nlocal-between\r\n",
                b"$-1\r\n", b"+OK\r\n", b"$7\r\nvalue-b\r\n", b"$4\r\nlast\r\n"]
    try:
        with RawClient(proxy.port) as raw:
            assert raw.call("PING") == b"+PONG\r\n"  # connected to Redis before the pause
            assert raw.call("GET", "core:warm") == b"$-1\r\n"
            direct.execute_command("CLIENT", "PAUSE", "600", "ALL")
            started = time.monotonic()
            for command in commands:
                raw.send_raw(encode_command(command))
                time.sleep(0.02)  # separate reads
            replies = [raw.read_reply() for _ in commands]
            assert replies == expected
            # The forwarded ones really waited for Redis: the test is of the shared queue.
            assert time.monotonic() - started > 0.3
    finally:
        direct.execute_command("CLIENT", "UNPAUSE")
        direct.close()


def test_every_read_and_write_is_counted_exactly(proxy):
    """The listener's byte counters (INFO, /metrics) count every read and write: one
    command per read goes through the C path, a pipelined read through Python's."""
    singles = [("SET", "count:a", "x" * 100), ("GET", "count:a"), ("GET", "count:none"),
               ("PING",)]
    pipelined = [("SET", "count:b", "y" * 50), ("GET", "count:b"), ("ECHO", "e")]
    with RawClient(proxy.port) as raw:
        received0, sent0, info0 = _info_counts(raw)
        sent_requests = received_replies = 0
        for command in singles:
            request = encode_command(command)
            raw.send_raw(request)
            sent_requests += len(request)
            received_replies += len(raw.read_reply())
        request = b"".join(encode_command(c) for c in pipelined)
        raw.send_raw(request)
        sent_requests += len(request)
        received_replies += sum(len(raw.read_reply()) for _ in pipelined)
        received1, sent1, _ = _info_counts(raw)
    info_request = len(encode_command(("INFO", "cachecloak")))
    # INFO's request is counted before it answers; its reply after.
    assert received1 - received0 == sent_requests + info_request
    assert sent1 - sent0 == len(info0) + received_replies


def test_the_upstream_core_queues_in_c_only_when_ready_and_no_route_overrides_it():
    """UpstreamCore.submit_one queues a READY connection's command itself (ClientCore
    calls it directly, so no subclass may replace it) and hands every other state to
    UpstreamConnection._submit_one, which connects or fails the waiter.  No route class
    replaces the core's read and write either, and no client class its flush (which
    the upstream read calls directly)."""
    import asyncio
    import importlib
    import sys

    from proxy.backends.redis import connection as conn

    assert conn.READY is sys.intern("ready")  # what the C part compares the state with

    def subclasses(cls):  # the product's (tests make their own twins)
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("proxy."):
                yield sub
            yield from subclasses(sub)

    for module in ("proxy.backends.redis.cluster", "proxy.backends.redis.topology"):
        importlib.import_module(module)  # every route class is defined
    for sub in subclasses(conn.UpstreamCore):
        for method in ("submit_one", "buffer_updated", "get_buffer", "_write_queued"):
            assert getattr(sub, method) is getattr(conn.UpstreamCore, method), (sub, method)
    # The upstream read calls a ClientCore's flush directly, too.
    assert client_module.ClientConnection.flush is client_module.Core.flush
    for sub in subclasses(client_module.ClientConnection):
        assert sub.flush is client_module.Core.flush, sub

    class Waiter:
        client = None
        failed = None

        def complete(self, reply):
            raise AssertionError("no reply expected")

        def fail(self, error_reply):
            self.failed = error_reply

    loop = asyncio.new_event_loop()
    try:
        settings = conn.UpstreamSettings("127.0.0.1", 1, username=None, password=None, db=0,
                                         connect_timeout=1, command_timeout=5, label="t")
        upstream = conn.UpstreamConnection(settings, loop)
        upstream.state = conn.READY
        first, second = Waiter(), Waiter()
        upstream.submit_one(b"*1\r\n$4\r\nPING\r\n", first)
        upstream.submit_one(b"*1\r\n$4\r\nECHO\r\n", second)
        assert upstream._wbuf == [b"*1\r\n$4\r\nPING\r\n", b"*1\r\n$4\r\nECHO\r\n"]
        assert list(upstream._waiters) == [first, second]
        assert upstream._flush_scheduled is True
        assert len(loop._ready) == 1  # one write for the loop iteration, not one each
        # Not ready and not allowed to connect yet (backoff): the waiter fails at once.
        upstream.state = conn.DOWN
        upstream._retry_at = float("inf")
        third = Waiter()
        upstream.submit_one(b"*1\r\n$4\r\nPING\r\n", third)
        assert third.failed is not None and third.failed.startswith(b"-")
        assert list(upstream._waiters) == [first, second]
    finally:
        loop.close()


def _redis_gets(redis_server) -> int:
    client = redis_server.client()
    try:
        return client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    finally:
        client.close()


def test_a_read_of_one_command_is_not_forwarded_before_auth_or_inside_multi(
        proxy, redis_server):
    """The states in which the C path must leave a lone GET to Python: a client that has
    not authenticated gets NOAUTH, and a GET inside MULTI is queued; Redis sees neither
    until it should."""
    before = _redis_gets(redis_server)
    with RawClient(proxy.guarded_port) as raw:
        assert raw.call("GET", "core:auth") == b"-NOAUTH Authentication required.\r\n"
        assert _redis_gets(redis_server) == before
        assert raw.call("AUTH", PASSWORD) == b"+OK\r\n"
        assert raw.call("GET", "core:auth") == b"$-1\r\n"
    assert _redis_gets(redis_server) == before + 1
    with RawClient(proxy.port) as raw:
        assert raw.call("MULTI") == b"+OK\r\n"
        assert raw.call("GET", "core:multi") == b"+QUEUED\r\n"
        assert _redis_gets(redis_server) == before + 1
        assert raw.call("EXEC") == b"*1\r\n$-1\r\n"
    assert _redis_gets(redis_server) == before + 2


def _idle_of(raw: RawClient, name: str) -> int:
    raw.send_raw(encode_command(("CLIENT", "LIST")))
    listing = raw.read_reply()
    line = next(x for x in listing.split(b"\n") if b" name=" + name.encode() + b" " in x)
    return int(line.split(b" idle=")[1].split(b" ")[0])


def test_a_read_on_the_c_path_makes_the_connection_active_again(proxy):
    """CLIENT LIST's idle= counts from the connection's last read; a read of one simple
    command (the C path, which keeps that time as a C double) resets it as Python's does."""
    with RawClient(proxy.port) as quiet, RawClient(proxy.port) as watcher:
        quiet.send_raw(encode_command(("CLIENT", "SETNAME", "quiet-one")))
        assert quiet.read_reply() == b"+OK\r\n"
        deadline = time.monotonic() + 10
        while _idle_of(watcher, "quiet-one") < 2:
            assert time.monotonic() < deadline, "idle= never reached 2 seconds"
            time.sleep(0.25)
        quiet.send_raw(encode_command(("GET", "idle:key")))  # one simple command: C's
        assert quiet.read_reply() == b"$-1\r\n"
        assert _idle_of(watcher, "quiet-one") == 0
