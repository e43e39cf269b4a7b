"""WAIT through cachecloak (proxy/commands/replication.py): the same replies as Redis
without replicas, and with a real replica the count of replicas that hold every write the
client made before it, whichever upstream connection carried the write.

Real redis-server processes (a primary and a replica) on loopback; every wait bounded.
"""

from __future__ import annotations

import select
import signal

import pytest

from tests.differential import Pair, flush_both
from tests.proxyproc import wait_until
from tests.servers import RawClient, start_proxy, start_redis
from tests.topology_servers import cache_config, kill, start_replica, wait_replica_synced

# cache_config's commandTimeout is 2s: WAIT's timeout is capped at half of it.
CAP_MS = 1000
# Redis waits 5 s by default before a diskless full sync, for more replicas to join.
FAST_SYNC = ("--repl-diskless-sync-delay", "0")


@pytest.fixture
def pair(direct_redis, proxies, backend, proto):
    proxy = proxies[backend]
    flush_both(direct_redis.port, proxy.port)
    with Pair(direct_redis.port, proxy.port, proto=proto) as p:
        yield p


def test_wait_replies_as_redis_without_replicas(pair):
    pair.check("SET", "k", "v")
    pair.check("WAIT", "0", "0")
    pair.check("WAIT", "1", "20")  # nobody to wait for: 0 (Redis after 20 ms)
    pair.check("WAIT", "-1", "0")
    for bad in (("WAIT", "x", "0"), ("WAIT", "0", "x"), ("WAIT", "0", "-1"),
                ("WAIT", "01", "0"), ("WAIT", "0", "1.5"), ("WAIT", "0", "99999999999999999999"),
                ("WAIT", "1"), ("WAIT", "1", "2", "3")):
        pair.check(*bad)
    pair.check("GET", "k")


@pytest.fixture
def replicated(request):
    """A primary, its replica and a proxy in front of both (mode standalone)."""
    started = []
    try:
        primary = start_redis(*FAST_SYNC)
        started.append(primary)
        replica = start_replica(primary.port, *FAST_SYNC)
        started.append(replica)
        wait_replica_synced(replica)
        proxy = start_proxy(cache_config([primary.address, replica.address], mode="standalone"))
        started.append(proxy)
        with RawClient(proxy.port) as c:
            wait_until(lambda: c.call("SET", "warm", "1") == b"+OK\r\n", timeout=10,
                       what="the proxy to find the primary")
        yield primary, replica, proxy
    finally:
        for thing in reversed(started):
            thing.stop()


def test_wait_covers_writes_of_every_kind(replicated):
    primary, replica, proxy = replicated
    with RawClient(proxy.port) as c:
        # A plain write (the client's route), a read-modify-write and a transaction (both
        # on dedicated connections): WAIT covers each, whichever connection carried it.
        for commands in ([("SET", "a", "1")], [("INCR", "n")],
                         [("MULTI",), ("SET", "b", "2"), ("HSET", "h", "f", "v"), ("EXEC",)]):
            assert c.call("WAIT", "1", "5000") == b":1\r\n"  # everything before: replicated
            # A stopped replica acknowledges nothing more: WAIT must not count it for the
            # new writes (a WAIT that only covered older offsets would say 1).
            replica.proc.send_signal(signal.SIGSTOP)
            try:
                for args in commands:
                    assert not c.call(*args).startswith(b"-"), args
                assert c.call("WAIT", "1", "200") == b":0\r\n", commands
            finally:
                replica.proc.send_signal(signal.SIGCONT)
            assert c.call("WAIT", "1", "5000") == b":1\r\n"
    with replica.client() as r, primary.client() as p:
        assert r.dbsize() == p.dbsize() == 5  # warm, a, n, b, h; no WAIT marker left
        assert p.execute_command("ROLE")[0] == b"master"


def test_wait_blocks_no_other_client_and_is_bounded(replicated):
    _primary, replica, proxy = replicated
    kill(replica)
    with RawClient(proxy.port) as waiting, RawClient(proxy.port) as other:
        assert waiting.call("SET", "x", "1") == b"+OK\r\n"
        waiting.send("WAIT", "1", "0")  # forever, in Redis: capped here
        # While it waits, the other client (maybe on the same pooled route) is served.
        for i in range(20):
            assert other.call("SET", f"o{i}", "v") == b"+OK\r\n"
            assert other.call("GET", f"o{i}") == b"$1\r\nv\r\n"
        pending, _, _ = select.select([waiting.sock], [], [], 0)
        assert not pending, "WAIT answered before the others were served"
        waiting.sock.settimeout(CAP_MS / 1000 + 5)
        assert waiting.read_reply() == b":0\r\n"  # no replica: 0 once the cap passed
        assert waiting.call("WAIT", "1", "50") == b":0\r\n"
        assert waiting.call("GET", "x") == b"$1\r\n1\r\n"


def test_wait_after_a_failover_answers_zero_once(replicated):
    primary, replica, proxy = replicated
    with RawClient(proxy.port, timeout=15) as before:
        assert before.call("SET", "k", "old") == b"+OK\r\n"
        assert before.call("WAIT", "1", "5000") == b":1\r\n"
        kill(primary)
        with replica.client() as r:
            r.replicaof("NO", "ONE")
        wait_until(lambda: before.call("SET", "k", "new") == b"+OK\r\n", timeout=15,
                   what="writes through the proxy to the promoted replica")
        # The old primary comes back as a replica of the new one.
        again = start_replica(replica.port, *FAST_SYNC, port=primary.port)
        try:
            wait_replica_synced(again)
            # Writes of this client went to the old primary too: the first WAIT since the
            # move cannot vouch for them, whatever the new primary's replicas say.
            assert before.call("WAIT", "1", "5000") == b":0\r\n"
            assert before.call("WAIT", "1", "5000") == b":1\r\n"
            with RawClient(proxy.port) as after:  # connected after the move
                assert after.call("SET", "j", "1") == b"+OK\r\n"
                assert after.call("WAIT", "1", "5000") == b":1\r\n"
        finally:
            again.stop()
