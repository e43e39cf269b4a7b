"""mode standalone with several addresses: cachecloak finds the primary with ROLE and
follows it when it moves (a replica promoted after the primary died, a primary demoted
with REPLICAOF, a primary that comes up after the proxy).

Real redis-server processes on loopback; every wait is bounded polling.  The measured
recovery times are printed (run with -s to see them).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.proxyproc import wait_until
from tests.servers import RawClient, free_port, start_proxy, start_redis
from tests.topology_servers import (
    LoadClients,
    cache_config,
    kill,
    start_replica,
    wait_replica_synced,
)

COMMAND_TIMEOUT = 2.0  # commandTimeout in cache_config
SLACK = 1.5
RECOVERY_BOUND = 5.0  # generous; the target is 2 s


@pytest.fixture
def cleanup():
    """Stops whatever the test registered, in reverse order, whatever happens."""
    things: list = []
    yield things.append
    for thing in reversed(things):
        thing.stop()


def info(client: RawClient) -> str:
    return client.call("INFO", "cachecloak").decode(errors="replace")


def moved_lines(log: str) -> list[str]:
    return re.findall(r'upstream cache "app": primary moved from \S+ to \S+', log)


def test_failover_under_load_follows_the_promoted_replica(cleanup):
    primary = start_redis()
    cleanup(primary)
    replica = start_replica(primary.port)
    cleanup(replica)
    wait_replica_synced(replica)
    proxy = start_proxy(cache_config([primary.address, replica.address], mode="standalone"))
    cleanup(proxy)

    with RawClient(proxy.port) as c:
        wait_until(lambda: c.call("SET", "warm", "1") == b"+OK\r\n", timeout=10,
                   what="the proxy to find the primary")
        assert f"standalone, primary {primary.address} (2 addresses)" in info(c)

    load = LoadClients(proxy.port, count=4, reply_timeout=COMMAND_TIMEOUT + SLACK + 5)
    try:
        wait_until(lambda: load.each_has_succeeded(20), timeout=10,
                   what="the clients to run against the primary")
        killed = kill(primary)
        # Let the outage settle (clients see errors, the proxy is probing) before the
        # promotion, so the recovery measured is that of a real outage.
        wait_until(lambda: time.monotonic() - killed > 1.0 and len(load.errors_since(killed))
                   >= 4, timeout=10, what="error replies while there is no primary")
        with replica.client(socket_timeout=5) as r:
            r.replicaof("NO", "ONE")
        promoted = time.monotonic()
        load.epoch = promoted
        first = wait_until(lambda: load.successes_since(promoted), timeout=10, interval=0.01,
                           what="a successful write through the proxy after the promotion")
        recovered = min(o.started + o.latency for o in first)
        # Keep the load on a little longer: writes after the recovery must all succeed.
        wait_until(lambda: time.monotonic() - recovered > 0.5, timeout=5)
    finally:
        load.stop()

    recovery = recovered - promoted
    outcomes = load.all()
    errors = [o for o in outcomes if o.reply.startswith(b"-")]
    worst = max(o.latency for o in outcomes)
    print(f"\n[failover standalone] first successful write {recovery:.3f}s after "
          f"REPLICAOF NO ONE; {len(errors)} error replies in "
          f"{recovered - killed:.2f}s of outage; slowest reply {worst:.3f}s; "
          f"{len(outcomes)} commands")

    assert not load.problems, load.problems
    assert recovery < RECOVERY_BOUND, recovery
    assert worst < COMMAND_TIMEOUT + SLACK, worst  # no hang: every command got a reply
    # A bounded burst of error replies, all of them cachecloak's, none after recovery
    # (but for commands already on their way when it happened).
    assert errors, "the clients never noticed the primary died"
    for o in errors:
        assert o.reply.startswith(b"-ERR cachecloak: "), o.reply
        assert killed - 0.1 <= o.started <= recovered, (o.started - killed, o.reply)
    paced_bound = 4 * ((recovered - killed) / 0.01 + 10)
    assert len(errors) <= paced_bound
    assert all(got == b"$%d\r\n%b\r\n" % (len(v), v.encode()) for v, got in load.final), \
        load.final
    assert len(load.final) == 4

    with RawClient(proxy.port) as c:
        text = info(c)
        assert f"primary {replica.address}" in text and "upstream_ready:1" in text, text
        assert "upstream_mode:standalone" in text and "upstream_primary_changes:1" in text
    assert proxy.stop() == 0
    log = proxy.log()
    assert moved_lines(log) == [
        f'upstream cache "app": primary moved from {primary.address} to {replica.address}'], log
    assert "load-" not in log and "final-" not in log


def test_started_with_only_a_replica_reachable_then_the_primary_appears(cleanup):
    primary_port = free_port()
    replica = start_replica(primary_port)  # its primary is not up yet
    cleanup(replica)
    # The replica is listed first: the proxy must not just take the first address.
    proxy = start_proxy(cache_config([replica.address, f"127.0.0.1:{primary_port}"],
                                     mode="standalone"))
    cleanup(proxy)
    with RawClient(proxy.port, timeout=10) as c:
        started = time.monotonic()
        reply = c.call("SET", "k", "v")
        assert time.monotonic() - started < COMMAND_TIMEOUT + SLACK
        assert reply.startswith(b"-ERR cachecloak: Redis for cache \"app\""), reply
        assert b"no primary among redis.addresses" in reply, reply
        assert b"replica of 127.0.0.1:%d" % primary_port in reply, reply
        assert b"\r\n" not in reply[:-2]
        text = info(c)
        assert "upstream_ready:0" in text and "primary unknown" in text, text

        primary = start_redis(port=primary_port)
        cleanup(primary)
        appeared = time.monotonic()
        wait_until(lambda: c.call("SET", "k", "v") == b"+OK\r\n", timeout=10, interval=0.01,
                   what="the proxy to find the primary")
        recovery = time.monotonic() - appeared
        print(f"\n[late primary] first successful write {recovery:.3f}s after the primary "
              "started listening")
        assert recovery < RECOVERY_BOUND
        assert c.call("GET", "k") == b"$1\r\nv\r\n"
        text = info(c)
        assert f"standalone, primary {primary.address}" in text and "upstream_ready:1" in text
    with primary.client() as p:
        assert p.dbsize() == 1  # the write went to the primary
    assert proxy.stop() == 0
    log = proxy.log()
    assert f'upstream cache "app": primary is {primary.address}' in log, log
    assert not moved_lines(log)


def test_readonly_reply_leads_to_the_new_primary(cleanup):
    a = start_redis()
    cleanup(a)
    b = start_replica(a.port)
    cleanup(b)
    wait_replica_synced(b)
    proxy = start_proxy(cache_config([a.address, b.address], mode="standalone"))
    cleanup(proxy)
    with RawClient(proxy.port, timeout=10) as c:
        wait_until(lambda: c.call("SET", "k1", "v1") == b"+OK\r\n", timeout=10,
                   what="the proxy to find the primary")
        wait_until(lambda: b.client().dbsize() == 1, timeout=5, what="replication of k1")
        # Two primaries for a moment: the proxy stays with the one it uses.
        with b.client() as rb:
            rb.replicaof("NO", "ONE")
        assert c.call("SET", "k2", "v2") == b"+OK\r\n"
        assert f"primary {a.address}" in info(c)
        with a.client() as ra:
            assert ra.dbsize() == 2
            ra.replicaof("127.0.0.1", str(b.port))
        demoted = time.monotonic()
        # The next write meets READONLY (passed on, not retried), then the proxy follows.
        replies = []

        def write_ok() -> bool:
            started = time.monotonic()
            reply = c.call("SET", "k3", "v3")
            assert time.monotonic() - started < COMMAND_TIMEOUT + SLACK
            replies.append(reply)
            return reply == b"+OK\r\n"

        wait_until(write_ok, timeout=10, interval=0.01, what="a write to the new primary")
        recovery = time.monotonic() - demoted
        print(f"\n[READONLY] first successful write {recovery:.3f}s after the primary was "
              f"demoted; replies before it: {[r[:30] for r in replies[:-1]]}")
        assert replies[0].startswith(b"-READONLY"), replies
        for reply in replies[1:-1]:
            assert reply.startswith((b"-READONLY", b"-ERR cachecloak: ")), replies
        assert recovery < RECOVERY_BOUND
        assert c.call("GET", "k3") == b"$2\r\nv3\r\n"
        assert c.call("GET", "k1") == b"$2\r\nv1\r\n"
        text = info(c)
        assert f"primary {b.address}" in text and "upstream_ready:1" in text, text
    with b.client() as rb:
        assert rb.execute_command("ROLE")[0] == b"master"
        assert rb.dbsize() == 2  # k1 and k3 (k2 went to the old primary after the split)
    assert proxy.stop() == 0
    assert moved_lines(proxy.log()) == [
        f'upstream cache "app": primary moved from {a.address} to {b.address}']


def test_auto_mode_asks_the_server(cleanup):
    """One address: INFO cluster decides (cluster_enabled:1 -> the cluster backend);
    several addresses: standalone with the primary found by ROLE."""
    # An explicit bus port: the default (port + 10000) is out of range for high ports.
    node = start_redis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-port", str(free_port()))
    cleanup(node)
    proxy = start_proxy(cache_config([node.address], mode="auto"))
    cleanup(proxy)
    with RawClient(proxy.port) as c:
        assert "cache_backend:redis cluster" in info(c)
    assert proxy.stop() == 0

    a = start_redis()
    cleanup(a)
    b = start_replica(a.port)
    cleanup(b)
    proxy = start_proxy(cache_config([b.address, a.address], mode="auto"))
    cleanup(proxy)
    with RawClient(proxy.port) as c:
        wait_until(lambda: c.call("SET", "k", "v") == b"+OK\r\n", timeout=10,
                   what="the proxy to find the primary")
        assert f"cache_backend:redis standalone, primary {a.address} (2 addresses)" in info(c)
    assert proxy.stop() == 0
