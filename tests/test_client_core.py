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

import asyncio
import time

import hiredis
import pytest

from bench import inprocess
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
        # ClientCore queues a READY connection's batch itself (upstream_submit_packed):
        # what these two Python methods do must stay all they do.
        for method in ("submit_packed", "flush"):
            assert (getattr(sub, method) is getattr(conn.UpstreamConnection, method)
                    or sub is conn.UpstreamConnection), (sub, method)
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


# -- a pipelined read in C (proxy._native.ClientCore's client_batch), in-process ---------
#
# One ClientConnection built as the server builds it (bench.inprocess's stand-ins for the
# server and the listener), its upstream connection connected to the real Redis; only the
# client's side of the socket is a list that collects what is written, so the test can see
# which path a read took (a subclass records the reads and flushes that reach Python).


class _RecordingConnection(client_module.ClientConnection):
    __slots__ = ("python_reads", "python_flushes")

    def _commands_read(self, commands):
        self.python_reads.append([args[0] for args in commands])
        super()._commands_read(commands)

    def _flush(self):
        self.python_flushes += 1
        super()._flush()


def _in_process_client(redis_server, encrypted: bool):
    from proxy.backends.redis.connection import READY, UpstreamConnection, UpstreamSettings

    loop = asyncio.new_event_loop()
    settings = UpstreamSettings("127.0.0.1", redis_server.port, username=None, password=None,
                                db=0, connect_timeout=5, command_timeout=5, label="core")
    upstream = UpstreamConnection(settings, loop)
    cache = inprocess.one_connection_cache(upstream, encrypted)
    client = _RecordingConnection(inprocess.Server(), inprocess.Listener(), cache)
    client.python_reads = []
    client.python_flushes = 0
    client.connection_made(inprocess.Transport())
    assert upstream._start_connect()

    async def connected():
        deadline = time.monotonic() + 10
        while upstream.state is not READY:
            assert time.monotonic() < deadline, upstream._last_error
            await asyncio.sleep(0.01)

    loop.run_until_complete(connected())
    return loop, client, upstream


def _close_in_process(loop, upstream, direct) -> None:
    """Remove what the in-process cache stored (its names start with cc:) and close."""
    for name in direct.keys("cc:*"):
        direct.delete(name)
    direct.close()
    upstream.close()
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()


def _read(loop, client, commands, replies: int) -> bytes:
    """Hand the client one read of `commands`, as the event loop does, and run the loop
    until `replies` replies were written (bounded in time)."""
    request = b"".join(encode_command(c) for c in commands)
    view = client.get_buffer(-1)
    view[:len(request)] = request
    client.buffer_updated(len(request))
    transport = client.transport

    async def written():
        deadline = time.monotonic() + 10
        while True:
            data = b"".join(transport.out)
            reader = hiredis.Reader()
            reader.feed(data)
            count = 0
            while reader.gets() is not False:
                count += 1
            if count >= replies:
                return
            assert time.monotonic() < deadline, data[-200:]
            await asyncio.sleep(0.005)

    loop.run_until_complete(written())
    out = b"".join(transport.out)
    transport.out.clear()
    return out


@pytest.mark.skipif(native is None, reason="the C path exists only with proxy._native")
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_a_pipelined_read_of_simple_commands_is_one_batch_made_in_c(redis_server, encrypted):
    loop, client, upstream = _in_process_client(redis_server, encrypted)
    direct = redis_server.client()
    try:
        big = "b" * 3000  # replies of WRITELINES_PART_BYTES or more go out as they are
        commands = [("SET", "pipe:a", "1"), ("SET", "pipe:b", "two"), ("GET", "pipe:a"),
                    ("GET", "pipe:b"), ("GET", "pipe:missing"), ("SET", "pipe:big", big)]
        out = _read(loop, client, commands, len(commands))
        assert out == b"+OK\r\n+OK\r\n$1\r\n1\r\n$3\r\ntwo\r\n$-1\r\n+OK\r\n"
        assert client.python_reads == []  # all of it in C: one Batch
        assert client.python_flushes == 0  # and its replies written by C
        assert not client._slots and client._batched == 0

        # A read of one command: a Single, forwarded and written by C too.
        assert _read(loop, client, [("GET", "pipe:b")], 1) == b"$3\r\ntwo\r\n"
        assert client.python_reads == [] and client.python_flushes == 0

        # Large replies: joined in C below WRITELINES_PART_BYTES, written as parts above.
        transport = client.transport
        before = transport.writelines_calls
        out = _read(loop, client, [("GET", "pipe:big"), ("GET", "pipe:a")], 2)
        assert out == b"$3000\r\n" + big.encode() + b"\r\n$1\r\n1\r\n"
        assert transport.writelines_calls == before + 1
        assert client.python_reads == [] and client.python_flushes == 0

        # A command C does not take ends what C takes: the rest of the read is Python's,
        # and the replies keep their order.
        out = _read(loop, client, [("SET", "pipe:c", "3"), ("PING",), ("GET", "pipe:c"),
                                   ("ECHO", "e")], 4)
        assert out == b"+OK\r\n+PONG\r\n$1\r\n3\r\n$1\r\ne\r\n"
        assert client.python_reads == [[b"PING", b"GET", b"ECHO"]]
        client.python_reads.clear()
        out = _read(loop, client, [("NOSUCH",), ("GET", "pipe:c")], 2)
        assert out.startswith(b"-ERR unknown command 'NOSUCH'") and out.endswith(b"$1\r\n3\r\n")
        assert client.python_reads == [[b"NOSUCH", b"GET"]]
        assert not client._slots and client._batched == 0

        # What reached Redis: with encryption, no name or value in the clear.
        stored = {name: direct.get(name) for name in direct.keys("cc:*")}  # this cache's
        assert len(stored) == 4
        if encrypted:
            for name, value in stored.items():
                assert b"pipe" not in name
                assert value not in (b"1", b"two", b"3", big.encode())
        else:
            assert stored[b"cc:0:pipe:b"] == b"two"
    finally:
        _close_in_process(loop, upstream, direct)


@pytest.mark.skipif(native is None, reason="the C path exists only with proxy._native")
def test_a_batch_made_in_c_has_the_fields_python_gives_one(redis_server):
    """ClientCore fills a Batch's fields itself (client_batch): they must be what
    _open_batch would have set, and the type the one Python makes."""
    loop, client, upstream = _in_process_client(redis_server, True)
    direct = redis_server.client()
    try:
        direct.execute_command("CLIENT", "PAUSE", "2000", "ALL")  # the batch waits
        request = b"".join(encode_command(c) for c in [("GET", "f:a"), ("SET", "f:b", "v")])
        view = client.get_buffer(-1)
        view[:len(request)] = request
        client.buffer_updated(len(request))
        (batch,) = client._slots
        assert type(batch) is client_module.Batch
        cache = client.cache
        assert batch.cache is cache and batch.gcm is cache.reply_gcm
        assert batch.in_c is cache.replies_in_c is True
        assert (batch.db, batch.proto, batch.count, batch.client) == (0, 2, 2, client)
        assert batch.stats is None and batch.data is None and batch.start is None
        assert batch.packed is None  # submitted
        assert list(upstream._waiters) == [batch, batch]
        assert len(upstream._wbuf) == 2 and upstream._flush_scheduled is True
        assert client._batched == 1
        assert client.python_reads == []
    finally:
        direct.execute_command("CLIENT", "UNPAUSE")
        _close_in_process(loop, upstream, direct)
