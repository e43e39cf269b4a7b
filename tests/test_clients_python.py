"""redis-py through cachecloak: sync and asyncio, RESP2 and RESP3, hiredis and pure Python.

The same scripted workload as the Node.js and Java clients (strings with expiry, counters,
hashes, MULTI/EXEC, a pipeline of 1,000 commands, every reply checked) runs through each
combination, and through redis-py's cluster clients (sync and asyncio) pointed at
cachecloak's single address; then Redis is read directly to show it holds only hashed
names and envelopes.  redis-py picks hiredis when it is installed (it is a cachecloak
dependency); `parser_class` forces the pure-Python parsers.  tests/test_clients.py has
the lower-level redis-py and redis-cli checks (binary values, pipelined ordering, ...).
"""

from __future__ import annotations

import asyncio
import inspect

import pytest
import redis
import redis.asyncio
from redis._parsers import (
    _AsyncHiredisParser,
    _AsyncRESP2Parser,
    _AsyncRESP3Parser,
    _HiredisParser,
    _RESP2Parser,
    _RESP3Parser,
)
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from tests.clients.support import assert_only_ciphertext
from tests.servers import RawClient

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning")

PIPELINE_ROUNDS = 250  # 4 commands a round: a pipeline of 1,000 commands

PARSERS = {  # (sync, asyncio) parser classes
    "hiredis": (_HiredisParser, _AsyncHiredisParser),
    "python": {2: (_RESP2Parser, _AsyncRESP2Parser), 3: (_RESP3Parser, _AsyncRESP3Parser)},
}


async def _(result):
    """The value of a redis-py call, sync or asyncio alike."""
    return await result if inspect.isawaitable(result) else result


async def workload(c, prefix: str) -> list[str]:
    """The scripted workload; returns every key, field and value written in plaintext."""
    written: list[str] = []

    def k(name: str) -> str:
        return f"{prefix}{name}"

    def v(name: str) -> str:
        return f"plain-{prefix}{name}-value"

    def f(name: str) -> str:
        return f"field-{prefix}{name}"

    # Strings with expiry.
    written += [k("s1"), v("s1"), k("short"), v("short"), k("keep"), v("keep")]
    assert await _(c.set(k("s1"), v("s1"), ex=100)) is True
    assert await _(c.get(k("s1"))) == v("s1")
    assert 0 < await _(c.ttl(k("s1"))) <= 100
    assert await _(c.ttl(k("missing"))) == -2
    assert await _(c.set(k("short"), v("short"), px=150)) is True
    assert await _(c.set(k("keep"), v("keep"))) is True
    assert await _(c.ttl(k("keep"))) == -1
    await asyncio.sleep(0.4)
    assert await _(c.get(k("short"))) is None, "a key set with PX 150 expired"
    tag = f"{prefix}multi"  # multi-key commands share a hash tag, as cluster clients need
    m1, m2, mx = k(f"{{{tag}}}1"), k(f"{{{tag}}}2"), k(f"{{{tag}}}missing")
    written += [m1, m2, v("m1"), v("m2"), tag]
    assert await _(c.mset({m1: v("m1"), m2: v("m2")})) is True
    assert await _(c.mget([m1, mx, m2])) == [v("m1"), None, v("m2")]
    assert await _(c.delete(m1, mx)) == 1

    # Counters.
    written += [k("counter"), k("float")]
    assert await _(c.incr(k("counter"))) == 1
    assert await _(c.incrby(k("counter"), 41)) == 42
    assert await _(c.decr(k("counter"))) == 41
    assert await _(c.get(k("counter"))) == "41"
    assert await _(c.incrbyfloat(k("float"), 2.5)) == 2.5
    assert await _(c.incrbyfloat(k("float"), 0.25)) == 2.75
    with pytest.raises(redis.ResponseError, match="not an integer"):
        await _(c.incr(k("s1")))

    # Hashes.
    h = k("hash")
    written += [h, f("name"), v("name"), f("city"), v("city"), f("visits")]
    assert await _(c.hset(h, mapping={f("name"): v("name"), f("city"): v("city")})) == 2
    assert await _(c.hget(h, f("name"))) == v("name")
    assert await _(c.hget(h, f("nope"))) is None
    assert await _(c.hincrby(h, f("visits"), 3)) == 3
    assert await _(c.hgetall(h)) == {f("name"): v("name"), f("city"): v("city"),
                                    f("visits"): "3"}
    assert await _(c.hdel(h, f("city"), f("nope"))) == 1
    assert await _(c.hlen(h)) == 2
    assert await _(c.expire(h, 500)) is True

    # A transaction.
    ta, tc, th = k(f"{{{tag}}}tx:a"), k(f"{{{tag}}}tx:c"), k(f"{{{tag}}}tx:h")
    written += [ta, v("tx"), tc, th, f("tx"), v("txfield")]
    tx = c.pipeline(transaction=True)
    tx.set(ta, v("tx"))
    tx.incr(tc)
    tx.hset(th, f("tx"), v("txfield"))
    tx.get(ta)
    tx.hget(th, f("tx"))
    tx.incrby(tc, 9)
    result = await _(tx.execute())
    # redis-py's cluster transactions leave SET's reply as "OK" (against a real Redis
    # Cluster too); its other clients turn it into True.
    assert result[:1] in ([True], ["OK"]) and result[1:] == [1, 1, v("tx"), v("txfield"), 10]

    # A pipeline of 1,000 commands.
    pipe = c.pipeline(transaction=False)
    expected: list[object] = []
    total = 0
    for i in range(PIPELINE_ROUNDS):
        key, value = k(f"p:{i}"), f"plain-pipe-{prefix}{i}-" + "z" * (i % 37)
        written += [key, value, f(f"p{i}")]
        pipe.set(key, value)
        pipe.get(key)
        pipe.incrby(k("p:sum"), i)
        pipe.hset(k("p:hash"), f(f"p{i}"), value)
        total += i
        expected += [True, value, total, 1]
    written += [k("p:sum"), k("p:hash")]
    assert len(expected) == 1000
    assert await _(pipe.execute()) == expected
    assert await _(c.get(k("p:sum"))) == str(total)
    assert await _(c.hlen(k("p:hash"))) == PIPELINE_ROUNDS
    return written


def _standalone_variants():
    for api in ("sync", "asyncio"):
        for protocol in (2, 3):
            for parser in ("hiredis", "python"):
                yield pytest.param(api, protocol, parser, id=f"{api}-resp{protocol}-{parser}")


async def _run_standalone(port: int, api: str, protocol: int, parser: str) -> list[str]:
    classes = PARSERS[parser] if parser == "hiredis" else PARSERS[parser][protocol]
    kwargs = {"host": "127.0.0.1", "port": port, "protocol": protocol, "db": 1,
              "client_name": "wl-redis-py", "decode_responses": True, "socket_timeout": 10}
    prefix = f"py-{api}-resp{protocol}-{parser}:"
    if api == "sync":
        c = redis.Redis(connection_pool=redis.ConnectionPool(
            parser_class=classes[0], **kwargs))
    else:
        c = redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(
            parser_class=classes[1], **kwargs))
    try:
        info = await _(c.client_info())
        assert str(info["resp"]) == str(protocol)
        assert info["name"] == "wl-redis-py" and str(info["db"]) == "1"
        return await workload(c, prefix)
    finally:
        if api == "sync":
            c.close()
        else:
            await c.aclose()


@pytest.mark.parametrize("api, protocol, parser", list(_standalone_variants()))
def test_redis_py_workload(client_proxy, redis_server, api, protocol, parser):
    redis_server.client().flushall()  # the check below then sees this variant's data only
    written = asyncio.run(_run_standalone(client_proxy.port, api, protocol, parser))
    assert assert_only_ciphertext(redis_server.port, written, min_keys=250) >= 250


async def _run_cluster(port: int, api: str) -> list[str]:
    kwargs = {"host": "127.0.0.1", "port": port, "decode_responses": True}
    c = RedisCluster(**kwargs) if api == "sync" else AsyncRedisCluster(**kwargs)
    try:
        if api == "asyncio":
            await c.initialize()
        nodes = c.get_nodes()
        # One node, at the address the client was given, serves every slot.
        assert [(n.host, n.port) for n in nodes] == [("127.0.0.1", port)]
        assert c.get_node_from_key("any-key").port == port
        return await workload(c, f"py-cluster-{api}:")
    finally:
        if api == "sync":
            c.close()
        else:
            await c.aclose()


@pytest.mark.parametrize("api", ["sync", "asyncio"])
def test_redis_py_cluster_client_workload(client_proxy, redis_server, api):
    redis_server.client().flushall()
    written = asyncio.run(_run_cluster(client_proxy.port, api))
    assert assert_only_ciphertext(redis_server.port, written, min_keys=250) >= 250


def test_the_ciphertext_check_finds_plaintext(redis_server):
    """assert_only_ciphertext can fail: plaintext written straight into Redis is found."""
    direct = redis_server.client()
    direct.flushall()
    direct.set(b"cachecloak:clients:0:digest", b"\x01" + b"x" * 40 + b"secret-plain-value")
    with pytest.raises(pytest.fail.Exception, match="secret-plain-value"):
        assert_only_ciphertext(redis_server.port, ["secret-plain-value"])
    direct.flushall()
    direct.set(b"cachecloak:clients:0:digest", b"41")  # a counter that is not an envelope
    with pytest.raises(AssertionError, match="not an envelope"):
        assert_only_ciphertext(redis_server.port, ["unrelated-text"])
    direct.flushall()
    direct.hset(b"cachecloak:clients:0:h", b"field-secret-name", b"\x01" + b"y" * 40)
    with pytest.raises(pytest.fail.Exception, match="field-secret-name"):
        assert_only_ciphertext(redis_server.port, ["field-secret-name"])
    direct.flushall()
    direct.close()


# What the clients above were seen sending when they connect (through a recording relay),
# beyond the commands every test here already exercises.  Each must get the reply Redis
# gives, byte for byte, so the client carries on as it would with Redis; CLIENT SETINFO is
# the documented exception (Redis 7.0 lacks it; cachecloak answers +OK as Redis 7.2 does).
HANDSHAKES = [
    # node-redis 6 and redis-py 8: maintenance notifications (Redis Enterprise and Redis
    # 8.x); Redis 7.0 does not know the subcommand and the clients ignore the error.
    ("CLIENT", "MAINT_NOTIFICATIONS", "ON", "moving-endpoint-type", "external-ip"),
    ("CLIENT", "MAINT_NOTIFICATIONS", "ON", "moving-endpoint-type", "internal-fqdn"),
    ("CLIENT", "SETNAME", "wl-handshake"),       # ioredis, node-redis (RESP2), redis-py
    ("CLIENT", "GETNAME"),
    ("SELECT", "1"),                             # all of them, with a database option
    ("SELECT", "0"),
    ("PING",),
]


@pytest.mark.parametrize("proto", [2, 3])
def test_connect_time_commands_get_the_replies_redis_gives(client_proxy, redis_server, proto):
    with RawClient(redis_server.port) as direct, RawClient(client_proxy.port) as through:
        if proto == 3:
            for side in (direct, through):
                assert side.call("HELLO", "3", "SETNAME", "wl-hello")[:1] == b"%"
        for command in HANDSHAKES:
            expected, got = direct.call(*command), through.call(*command)
            assert got == expected, f"{command}: redis {expected!r} != cachecloak {got!r}"
        assert through.call("CLIENT", "SETINFO", "LIB-NAME", "x") == b"+OK\r\n"
