"""mode sentinel: the primary comes from three real redis-sentinel processes, a switch
is followed as soon as Sentinel announces it, and the +switch-master subscription moves
to another Sentinel when its Sentinel goes.

One primary, one replica, three Sentinels (quorum 2, down-after 1 s, failover-timeout
3 s) on loopback ports.  The measured recovery time is printed (run with -s).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.proxyproc import wait_until
from tests.servers import RawClient, start_proxy, start_redis
from tests.topology_servers import (
    MASTER_NAME,
    LoadClients,
    SwitchWatcher,
    cache_config,
    kill,
    start_replica,
    start_sentinels,
    wait_replica_synced,
)

COMMAND_TIMEOUT = 2.0
SLACK = 1.5
RECOVERY_BOUND = 5.0  # after Sentinel's +switch-master; the target is 2 s


@pytest.fixture
def topology():
    stack: list = []
    try:
        primary = start_redis()
        stack.append(primary)
        replica = start_replica(primary.port)
        stack.append(replica)
        wait_replica_synced(replica)
        sentinels = start_sentinels(primary.port)
        stack.extend(sentinels)
        yield primary, replica, sentinels
    finally:
        for thing in reversed(stack):
            thing.stop()


def following(log: str) -> list[str]:
    return re.findall(r"following \+switch-master on Sentinel (\S+)", log)


@pytest.mark.timeout(90)
def test_sentinel_failover_is_followed(topology):
    primary, replica, sentinels = topology
    extra = f"      sentinel:\n        masterName: {MASTER_NAME}\n"
    proxy = start_proxy(cache_config([s.address for s in sentinels], mode="sentinel",
                                     extra_redis=extra))
    watcher = None
    load = None
    try:
        with RawClient(proxy.port, timeout=10) as c:
            wait_until(lambda: c.call("SET", "k", "v") == b"+OK\r\n", timeout=10,
                       what="the proxy to find the primary through the Sentinels")
            text = c.call("INFO", "cachecloak").decode()
            assert (f'redis sentinel "{MASTER_NAME}", primary {primary.address} '
                    "(3 sentinels)") in text, text
            assert "upstream_ready:1" in text

        # The Sentinel it listens to goes: it must listen to another one.
        wait_until(lambda: following(proxy.log()), timeout=5,
                   what="the proxy to subscribe to +switch-master")
        first = following(proxy.log())[0]
        gone = next(s for s in sentinels if s.address == first)
        kill(gone)
        wait_until(lambda: len(following(proxy.log())) >= 2, timeout=10,
                   what="the subscription to move to another Sentinel")
        assert following(proxy.log())[1] != first
        survivor = next(s for s in sentinels if s is not gone)
        watcher = SwitchWatcher(survivor)

        load = LoadClients(proxy.port, count=2, reply_timeout=COMMAND_TIMEOUT + SLACK + 5)
        wait_until(lambda: load.each_has_succeeded(20), timeout=10,
                   what="the clients to run against the primary")
        killed = kill(primary)
        wait_until(lambda: watcher.switched_at is not None, timeout=30, interval=0.05,
                   what="Sentinel to fail over")
        switched = watcher.switched_at
        load.epoch = switched
        assert watcher.payload.split() == [MASTER_NAME, "127.0.0.1", str(primary.port),
                                           "127.0.0.1", str(replica.port)], watcher.payload
        ok = wait_until(lambda: load.successes_since(killed), timeout=10, interval=0.01,
                        what="a successful write through the proxy after the switch")
        recovered = min(o.started + o.latency for o in ok)
        wait_until(lambda: time.monotonic() - recovered > 0.5, timeout=5)
        load.stop()

        recovery = recovered - switched
        outcomes = load.all()
        errors = [o for o in outcomes if o.reply.startswith(b"-")]
        worst = max(o.latency for o in outcomes)
        print(f"\n[failover sentinel] Sentinel switched {switched - killed:.2f}s after the "
              f"kill; first successful write {recovery:+.3f}s after +switch-master; "
              f"{len(errors)} error replies; slowest reply {worst:.3f}s")
        assert not load.problems, load.problems
        assert recovery < RECOVERY_BOUND, recovery
        assert worst < COMMAND_TIMEOUT + SLACK, worst
        for o in errors:
            assert o.reply.startswith(b"-ERR cachecloak: "), o.reply
            assert killed - 0.1 <= o.started <= recovered, o.reply
        assert all(got == b"$%d\r\n%b\r\n" % (len(v), v.encode()) for v, got in load.final)

        with RawClient(proxy.port) as c:
            text = c.call("INFO", "cachecloak").decode()
            assert f"primary {replica.address}" in text and "upstream_ready:1" in text, text
            assert c.call("GET", "k") == b"$1\r\nv\r\n"  # written before, replicated
        assert proxy.stop() == 0
        log = proxy.log()
        moved = re.findall(r'upstream cache "app": primary moved from \S+ to \S+', log)
        assert moved == [f'upstream cache "app": primary moved from {primary.address} to '
                         f"{replica.address}"], log
    finally:
        if load is not None:
            load.stop()
        if watcher is not None:
            watcher.close()
        proxy.stop()
