"""A Redis Cluster node behind a cache that is not in cluster mode: MOVED and ASK.

Redis's own errors reach the client unchanged (tests/test_fault_relay.py), but a cluster
redirect is not the client's to follow: its slot is the slot of the hashed key, and its
address is Redis's own, where the client would write plaintext past cachecloak.  So
outside cluster mode (`mode: standalone`, or several addresses in mode auto, which
cachecloak treats as a primary and its replicas) cachecloak turns MOVED and ASK into an
error that names the fix, logs it once per connection, and never shows the redirect's
address.  In cluster mode (tests/test_cluster.py) they are followed.
"""

from __future__ import annotations

import re

import pytest

from tests.cluster_servers import start_cluster
from tests.proxyproc import start_proxy_listeners
from tests.servers import RawClient, free_port

ENC = "9c" * 32
HASH = "ad" * 32


@pytest.fixture(scope="module")
def cluster():
    started = start_cluster()
    yield started
    started.stop()


def config(cluster, ports: dict[str, int]) -> str:
    def cache(name: str, addresses: list[str], mode: str) -> str:
        listed = ", ".join(f'"{a}"' for a in addresses)
        return f"""\
  - name: {name}
    type: redis
    redis:
      addresses: [{listed}]
      disableTLS: true
      mode: {mode}
      poolSize: 1
    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
"""
    return f"""\
listeners:
  - address: 127.0.0.1:{ports['standalone']}
    cache: standalone
  - address: 127.0.0.1:{ports['seeds']}
    cache: seeds
caches:
{cache("standalone", cluster.addresses[:1], "standalone")}\
{cache("seeds", cluster.addresses, "auto")}"""


def test_moved_outside_cluster_mode_is_an_error_naming_the_fix(cluster):
    ports = {"standalone": free_port(), "seeds": free_port()}
    proxy = start_proxy_listeners(config(cluster, ports), list(ports.values()))
    try:
        for cache, port in ports.items():
            ok = redirected = 0
            with RawClient(port) as c:
                for i in range(40):  # hashed keys spread over the three nodes' slots
                    reply = c.call("SET", f"key:{i}", "value")
                    if reply == b"+OK\r\n":
                        ok += 1
                        assert c.call("GET", f"key:{i}") == b"$5\r\nvalue\r\n"
                        continue
                    redirected += 1
                    text = reply.decode()
                    assert text.endswith("\r\n") and "\r\n" not in text[:-2], text
                    assert text.startswith(f'-ERR cachecloak: Redis for cache "{cache}" at '
                                           "127.0.0.1:"), text
                    assert "answered MOVED: it is a Redis Cluster node" in text, text
                    assert "set redis.mode: cluster" in text, text
                    # Neither the redirect's slot nor its address is shown: the one
                    # address is the server cachecloak is connected to.
                    assert len(re.findall(r"127\.0\.0\.1:\d+", text)) == 1, text
                    assert "MOVED " not in text, text
                # One client, one upstream connection: still in step after the errors.
                assert c.call("PING") == b"+PONG\r\n"
            assert ok and redirected, (cache, ok, redirected)
    finally:
        proxy.stop()
    log = proxy.log()
    for cache in ports:
        lines = [line for line in log.splitlines()
                 if f'cache "{cache}"' in line and "answered MOVED" in line]
        assert len(lines) == 1, lines  # once per connection (poolSize 1), not per reply
        assert "WARNING" in lines[0]
    assert "Traceback" not in log
