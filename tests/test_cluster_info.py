"""Cluster discovery answered by cachecloak (proxy/commands/cluster_info.py), compared with Redis.

The reference is a real one-node Redis Cluster that owns slots 0-16383 and announces
127.0.0.1, which is what cachecloak shows a cluster client.  Replies are compared byte for
byte in RESP2 and RESP3 after three substitutions that are the point of the feature: the
node id (each side has its own), the port (each side its own) and the cluster bus port in
CLUSTER NODES (cachecloak has no bus and says 0).  Cluster clients themselves are run in
tests/test_clients_node.py (ioredis, node-redis) and tests/test_clients_python.py
(redis-py).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

import pytest
import redis

from proxy.commands.cluster_info import node_id
from tests.proxyproc import start_proxy_listeners, wait_until
from tests.servers import RawClient, free_port, start_proxy, start_redis


@pytest.fixture(scope="module")
def cluster_node():
    # The bus port is chosen too: the default (port + 10000) fails above 55535.
    bus_port = free_port()
    server = start_redis("--cluster-enabled", "yes", "--cluster-announce-ip", "127.0.0.1",
                         "--cluster-port", str(bus_port))
    server.bus_port = bus_port
    try:
        with RawClient(server.port) as c:
            assert c.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383") == b"+OK\r\n"
            wait_until(lambda: b"cluster_state:ok" in c.call("CLUSTER", "INFO"),
                       timeout=10, what="the one-node cluster to be ok")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy():
    proc = start_proxy()  # the built-in local cache: discovery does not depend on it
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def pair(request, cluster_node, proxy):
    redis_side, proxy_side = RawClient(cluster_node.port), RawClient(proxy.port)
    if request.param == 3:
        redis_side.call("HELLO", "3")
        proxy_side.call("HELLO", "3")
    yield redis_side, proxy_side
    redis_side.close()
    proxy_side.close()


def _rewrite_text(reply: bytes, old: bytes, new: bytes) -> bytes:
    """Replace in the text of one bulk or verbatim reply, fixing its length header."""
    m = re.fullmatch(rb"([$=])(\d+)\r\n(.*)\r\n", reply, re.S)
    assert m and int(m.group(2)) == len(m.group(3)), reply[:60]
    text = m.group(3).replace(old, new)
    return b"%b%d\r\n%b\r\n" % (m.group(1), len(text), text)


def _as_proxy_would(reply: bytes, redis_port: int, bus_port: int, redis_id: bytes,
                    proxy_port: int, proxy_id: bytes) -> bytes:
    assert len(str(redis_port)) == len(str(proxy_port))  # both from the ephemeral range
    reply = reply.replace(redis_id, proxy_id)
    reply = reply.replace(b":%d\r\n" % redis_port, b":%d\r\n" % proxy_port)
    if reply[:1] in (b"$", b"="):
        reply = _rewrite_text(reply, b"127.0.0.1:%d@%d" % (redis_port, bus_port),
                              b"127.0.0.1:%d@0" % proxy_port)
    return reply


SAME_AS_A_CLUSTER_NODE = [
    ("CLUSTER", "SLOTS"), ("CLUSTER", "SHARDS"), ("CLUSTER", "NODES"), ("CLUSTER", "INFO"),
    ("CLUSTER", "MYID"), ("cluster", "slots"), ("CLUSTER", "KEYSLOT", "foo"),
    ("CLUSTER", "KEYSLOT", "{user1000}.following"), ("CLUSTER", "KEYSLOT", "foo{}{bar}"),
    ("CLUSTER", "KEYSLOT", ""), ("CLUSTER", "KEYSLOT", b"\x00\xff{\x01}"),
    ("READONLY",), ("READWRITE",), ("ASKING",), ("readonly",),
    # Arity and unknown subcommands: Redis's own errors.
    ("CLUSTER",), ("CLUSTER", "INFO", "x"), ("CLUSTER", "SLOTS", "x"), ("CLUSTER", "KEYSLOT"),
    ("READONLY", "x"), ("ASKING", "x"), ("CLUSTER", "NOSUCH"),
]


@pytest.mark.parametrize("args", SAME_AS_A_CLUSTER_NODE, ids=lambda a: " ".join(map(str, a)))
def test_replies_match_a_one_node_redis_cluster(pair, cluster_node, proxy, args):
    redis_side, proxy_side = pair
    redis_id = redis_side.call("CLUSTER", "MYID")[-42:-2]
    proxy_id = proxy_side.call("CLUSTER", "MYID")[-42:-2]
    expected = _as_proxy_would(redis_side.call(*args), cluster_node.port,
                               cluster_node.bus_port, redis_id, proxy.port, proxy_id)
    got = proxy_side.call(*args)
    assert got == expected, f"{args}: redis {expected!r} != cachecloak {got!r}"


def test_node_id_is_fixed_per_listener(proxy):
    with RawClient(proxy.port) as a, RawClient(proxy.port) as b:
        assert a.call("CLUSTER", "MYID") == b.call("CLUSTER", "MYID")
    expected = node_id(f"127.0.0.1:{proxy.port}")
    assert re.fullmatch(rb"[0-9a-f]{40}", expected)
    assert expected == hashlib.sha1(
        b"cachecloak cluster node\0" + f"127.0.0.1:{proxy.port}".encode()).hexdigest().encode()
    with RawClient(proxy.port) as c:
        assert c.call("CLUSTER", "MYID") == b"$40\r\n%b\r\n" % expected
        # The slot map names the address the client connected to.
        assert c.call("CLUSTER", "SLOTS") == (
            b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:%d\r\n$40\r\n%b\r\n*0\r\n"
            % (proxy.port, expected))


def test_the_server_still_says_standalone(proxy):
    # Clients that detect the mode (HELLO, INFO) keep using cachecloak as a plain server;
    # only clients configured for a cluster ask for the slot map.
    with RawClient(proxy.port) as c:
        assert b"$4\r\nmode\r\n$10\r\nstandalone\r\n" in c.call("HELLO", "3")
        assert b"cluster_enabled:0" in c.call("INFO", "cluster")


@pytest.mark.parametrize("sub", ["COUNTKEYSINSLOT", "GETKEYSINSLOT", "ADDSLOTS", "MEET",
                                 "FAILOVER", "RESET", "SETSLOT", "REPLICAS", "HELP"])
def test_placement_and_admin_subcommands_are_refused_with_the_reason(proxy, sub):
    with RawClient(proxy.port) as c:
        reply = c.call("CLUSTER", sub, "1", "2")
        assert reply.startswith(b"-ERR cachecloak does not serve 'cluster|%b': cachecloak "
                                b"presents itself as a single node" % sub.lower().encode())
        assert reply.count(b"\r\n") == 1
        assert c.call("PING") == b"+PONG\r\n"


def test_a_unix_socket_listener_answers_like_redis_without_cluster_support():
    # No TCP address to announce: a cluster client there gets Redis's own refusal.
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cc-cl-") as tmp:
        path = Path(tmp) / "cc.sock"
        proc = start_proxy_listeners(f"""\
caches:
  - name: c
    type: local
listeners:
  - address: 127.0.0.1:{port}
  - address: unix:{path}
""", [port])
        try:
            wait_until(path.exists, what="the unix socket")
            client = redis.Redis(unix_socket_path=str(path), socket_timeout=10)
            for command in (("CLUSTER", "SLOTS"), ("CLUSTER", "INFO"), ("READONLY",)):
                with pytest.raises(redis.ResponseError,
                                   match=r"^This instance has cluster support disabled$"):
                    client.execute_command(*command)
            assert client.ping() is True
            client.close()
            with RawClient(port) as tcp:  # the TCP listener of the same process answers
                assert tcp.call("READONLY") == b"+OK\r\n"
        finally:
            assert proc.stop() == 0, proc.log()
