"""Security properties of hashes, sets, lists and sorted sets, checked from outside.

A real cachecloak (hashing and encryption on, `--log-level debug`) in front of a real
redis-server.  After a workload over all four types, everything Redis holds is read
directly (HGETALL, SMEMBERS, ZRANGE WITHSCORES, LRANGE, GET on every key SCAN finds)
and searched for the plaintexts, which are distinctive markers.  Stored members, fields,
values and elements are then moved, copied and tampered with in Redis, and the proxy
must read them as misses (counted in `INFO cachecloak`), or as errors under
`onDecryptError: error`, and never return the stored bytes.
"""

from __future__ import annotations

import re
import secrets
import uuid

import pytest

from tests.servers import RawClient, start_proxy

MARKERS: set[str] = set()


def marker(kind: str) -> bytes:
    text = f"PLAINTEXT-{kind}-{uuid.uuid4().hex}"
    MARKERS.add(text)
    return text.encode()


def config(redis_port: int, on_error: str | None = None) -> str:
    on_error_line = f"      onDecryptError: {on_error}\n" if on_error else ""
    return (
        "caches:\n"
        "  - name: sec\n"
        "    type: redis\n"
        "    redis:\n"
        f'      addresses: ["127.0.0.1:{redis_port}"]\n'
        "      disableTLS: true\n"
        "    encryption:\n"
        "      keys:\n"
        f'        current: "{secrets.token_hex(32)}"\n'
        f"{on_error_line}"
        "    hashing:\n"
        "      keys:\n"
        f'        current: "{secrets.token_hex(32)}"\n'
    )


@pytest.fixture
def upstream(redis_server):
    with RawClient(redis_server.port) as raw:
        assert raw.call("FLUSHALL") == b"+OK\r\n"
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def proxy(redis_server):
    started = []

    def start(on_error: str | None = None):
        process = start_proxy(config(redis_server.port, on_error), "--log-level", "debug")
        started.append(process)
        return RawClient(process.port)

    yield start
    for process in started:
        assert process.stop() == 0, process.log()
        log = process.log()
        for text in MARKERS:
            assert text not in log, "a plaintext reached the proxy's log"
            assert text.split("-")[-1] not in log


def failures(client: RawClient) -> int:
    info = client.call("INFO", "cachecloak")
    match = re.search(rb"decrypt_failures:(\d+)", info)
    assert match, info
    return int(match.group(1))


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def everything_stored(upstream) -> bytes:
    """Every stored key name and every byte stored under it, read directly from Redis."""
    out = []
    for key in upstream.scan_iter(count=1000):
        out.append(key)
        kind = upstream.type(key)
        if kind == b"hash":
            for field, value in upstream.hgetall(key).items():
                out += [field, value]
        elif kind == b"set":
            out += list(upstream.smembers(key))
        elif kind == b"zset":
            out += [member for member, _ in upstream.zrange(key, 0, -1, withscores=True)]
        elif kind == b"list":
            out += upstream.lrange(key, 0, -1)
        elif kind == b"string":
            out.append(upstream.get(key))
        else:
            raise AssertionError(f"unexpected type {kind!r}")
    return b"\n".join(out)


def only_key(upstream) -> bytes:
    keys = list(upstream.scan_iter(count=1000))
    assert len(keys) == 1, keys
    return keys[0]


def new_key(upstream, before: set[bytes]) -> bytes:
    keys = set(upstream.scan_iter(count=1000)) - before
    assert len(keys) == 1, keys
    return keys.pop()


def keys_now(upstream) -> set[bytes]:
    return set(upstream.scan_iter(count=1000))


# -- nothing in plaintext --------------------------------------------------------------

def test_no_plaintext_reaches_redis(upstream, proxy):
    c = proxy()
    h, h2, s1, s2, s3, d, l1, l2, z = (marker(f"key{i}") for i in range(9))
    f1, f2, f3 = marker("field"), marker("field"), marker("field")
    v1, v2, v3 = marker("value"), marker("value"), marker("value")
    m1, m2, m3, m4 = (marker("member") for _ in range(4))
    e1, e2, e3 = marker("element"), marker("element"), marker("element")
    z1, z2 = marker("zmember"), marker("zmember")
    workload = [
        ("HSET", h, f1, v1, f2, v2), ("HSETNX", h, f3, v3), ("HMSET", h2, f1, v1),
        ("HDEL", h, f2), ("SADD", s1, m1, m2, m3), ("SADD", s2, m2, m3, m4),
        ("SINTERSTORE", d, s1, s2), ("SUNIONSTORE", s3, s1, s2), ("SDIFFSTORE", h2 + b"d", s1, s2),
        ("SMOVE", s1, s2, m1), ("SMOVE", s2, marker("key"), m4),
        ("RPUSH", l1, e1, e2, e1), ("LPUSH", l1, e3), ("LSET", l1, "1", e2),
        ("LMOVE", l1, l2, "LEFT", "RIGHT"), ("RPOPLPUSH", l1, l2),
        ("LMOVE", l2, l2, "LEFT", "RIGHT"),
        ("ZADD", z, "1", z1, "2", z2), ("ZINCRBY", z, "5", z1), ("ZADD", z, "INCR", "1", z2),
        ("SELECT", "1"), ("HSET", h, f1, v1), ("SADD", s1, m1), ("SINTERSTORE", d, s1, s1),
        ("RPUSH", l1, e1), ("LMOVE", l1, l2, "RIGHT", "LEFT"), ("ZADD", z, "3", z1),
        ("SELECT", "0"),
    ]
    for args in workload:
        reply = c.call(*args)
        assert not reply.startswith(b"-"), (args[0], reply)
    # Reads give the plaintexts back (the workload did what it should).
    assert c.call("HGET", h, f1) == bulk(v1)
    assert c.call("HMGET", h, f3, f2) == b"*2\r\n" + bulk(v3) + b"$-1\r\n"
    assert c.call("SISMEMBER", s2, m1) == b":1\r\n"
    assert c.call("SCARD", d) == b":2\r\n"
    assert c.call("LRANGE", l2, "0", "-1") == array(e3, e1)
    assert c.call("ZSCORE", z, z1) == b"$1\r\n6\r\n"

    stored = everything_stored(upstream)
    assert len(stored) > 1000
    lowered = stored.lower()
    for text in MARKERS:
        secret = text.split("-")[-1].encode()  # the uuid part: no other way to appear
        assert secret not in stored and secret not in lowered, f"{text} is in Redis"
        assert text.encode() not in stored
        for start in range(0, len(secret) - 12, 4):
            assert secret[start:start + 12] not in lowered
    assert b"PLAINTEXT" not in stored.upper()


def test_equal_members_of_different_keys_are_stored_differently(upstream, proxy):
    c = proxy()
    same, value = marker("member"), marker("value")
    stored: dict[bytes, list[bytes]] = {}
    for args in [("SADD", "set1", same), ("SADD", "set2", same), ("ZADD", "z1", "1", same),
                 ("ZADD", "z2", "1", same), ("HSET", "h1", same, value),
                 ("HSET", "h2", same, value)]:
        before = keys_now(upstream)
        assert c.call(*args) == b":1\r\n"
        key = new_key(upstream, before)
        kind = upstream.type(key)
        stored[args[1].encode() if isinstance(args[1], str) else args[1]] = (
            list(upstream.smembers(key)) if kind == b"set" else
            upstream.zrange(key, 0, -1) if kind == b"zset" else list(upstream.hkeys(key)))
    blobs = [blob for members in stored.values() for blob in members]
    assert len(blobs) == 6 and len(set(blobs)) == 6, "equal members look equal in Redis"
    # Within one key a member is deterministic: adding it again adds nothing.
    assert c.call("SADD", "set1", same) == b":0\r\n"
    assert c.call("ZADD", "z1", "2", same) == b":0\r\n"
    assert c.call("HSET", "h1", same, value) == b":0\r\n"
    # The same member in another logical database is another ciphertext too.
    c.call("SELECT", "1")
    before = keys_now(upstream)
    c.call("SADD", "set1", same)
    other_db = list(upstream.smembers(new_key(upstream, before)))
    assert other_db[0] not in blobs


def test_equal_list_elements_and_hash_values_look_unrelated(upstream, proxy):
    c = proxy()
    element = marker("element")
    assert c.call("RPUSH", "l", element, element, element) == b":3\r\n"
    stored = upstream.lrange(only_key(upstream), 0, -1)
    assert len(set(stored)) == 3
    value = marker("value")
    c.call("HSET", "h", "f1", value, "f2", value)
    key = next(k for k in upstream.scan_iter() if upstream.type(k) == b"hash")
    assert len(set(upstream.hvals(key))) == 2


# -- moved, copied and tampered data ---------------------------------------------------

def test_hash_value_copied_to_another_field_reads_as_a_miss(upstream, proxy):
    c = proxy()
    v1, v2 = marker("value"), marker("value")
    c.call("HSET", "h", "f1", v1)
    key = only_key(upstream)
    (sealed_f1, blob_f1), = upstream.hgetall(key).items()
    c.call("HSET", "h", "f2", v2)
    sealed_f2 = next(f for f in upstream.hkeys(key) if f != sealed_f1)
    upstream.hset(key, sealed_f2, blob_f1)  # f1's envelope under f2's name
    before = failures(c)
    replies = [c.call("HGET", "h", "f2"), c.call("HMGET", "h", "f1", "f2"),
               c.call("HGETALL", "h"), c.call("HVALS", "h"),
               c.call("HRANDFIELD", "h", "10", "WITHVALUES")]
    assert replies == [b"$-1\r\n", b"*2\r\n" + bulk(v1) + b"$-1\r\n", array(b"f1", v1),
                       array(v1), array(b"f1", v1)]
    assert failures(c) == before + 5
    assert c.call("HLEN", "h") == b":2\r\n"  # Redis still holds it
    assert c.call("HEXISTS", "h", "f2") == b":1\r\n"
    # Copied to the same field of another key: a miss too.
    c.call("HSET", "other", "f1", "x")
    other = next(k for k in upstream.scan_iter() if k != key)
    (sealed_other_f1, _), = upstream.hgetall(other).items()
    upstream.hset(other, sealed_other_f1, blob_f1)
    assert c.call("HGET", "other", "f1") == b"$-1\r\n"
    assert failures(c) == before + 6


def test_members_and_elements_moved_between_keys_read_as_misses(upstream, proxy):
    c = proxy()
    m, e = marker("member"), marker("element")
    c.call("SADD", "a", m)
    sa = only_key(upstream)
    c.call("SADD", "b", "other")
    sb = new_key(upstream, {sa})
    upstream.sadd(sb, *upstream.smembers(sa))  # a's sealed member, copied into b
    before = failures(c)
    assert c.call("SMEMBERS", "b") == array(b"other")
    assert c.call("SINTER", "a", "b") == b"*0\r\n"
    assert c.call("SUNIONSTORE", "u", "b") == b":1\r\n"
    assert failures(c) == before + 3
    before_lists = keys_now(upstream)
    c.call("RPUSH", "l1", e)
    l1 = new_key(upstream, before_lists)
    c.call("RPUSH", "l2", "x")
    l2 = new_key(upstream, before_lists | {l1})
    upstream.rpush(l2, upstream.lindex(l1, 0))
    assert c.call("LRANGE", "l2", "0", "-1") == array(b"x")
    assert c.call("LINDEX", "l2", "1") == b"$-1\r\n"
    assert failures(c) == before + 5


TAMPERED = b"TAMPERED-" + uuid.uuid4().hex.encode()


def _flip(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 1])


def _tamper_everything(c: RawClient, upstream) -> dict[str, bytes]:
    """One key of each type through the proxy, then a foreign and a flipped entry added
    to each in Redis.  Returns the stored key of each type."""
    for args in [("HSET", "h", "f", "v"), ("SADD", "s", "m"), ("ZADD", "z", "1", "m"),
                 ("RPUSH", "l", "e")]:
        assert c.call(*args) == b":1\r\n"
    stored = {upstream.type(k).decode(): k for k in upstream.scan_iter()}
    h, s, z, lst = stored["hash"], stored["set"], stored["zset"], stored["list"]
    (field, value), = upstream.hgetall(h).items()
    upstream.hset(h, mapping={TAMPERED: value, _flip(field): value, TAMPERED + b"2": TAMPERED})
    upstream.hset(h, field, _flip(value))  # the original field's value, tampered
    upstream.hset(h, "plainfield", TAMPERED)
    member = next(iter(upstream.smembers(s)))
    upstream.sadd(s, TAMPERED, _flip(member))
    upstream.zadd(z, {TAMPERED: 5, _flip(upstream.zrange(z, 0, 0)[0]): 6})
    upstream.rpush(lst, TAMPERED, _flip(upstream.lindex(lst, 0)))
    return stored


READS = [
    ("HGET", "h", "f"), ("HMGET", "h", "f", "plainfield"), ("HGETALL", "h"), ("HKEYS", "h"),
    ("HVALS", "h"), ("HRANDFIELD", "h", "20", "WITHVALUES"), ("HRANDFIELD", "h", "-20"),
    ("SMEMBERS", "s"), ("SRANDMEMBER", "s", "-20"), ("SINTER", "s", "s"), ("SUNION", "s"),
    ("SDIFF", "s"), ("ZRANGE", "z", "0", "-1", "WITHSCORES"), ("ZRANGEBYSCORE", "z", "0", "10"),
    ("ZREVRANGE", "z", "0", "-1"), ("LRANGE", "l", "0", "-1"), ("LINDEX", "l", "1"),
    ("LINDEX", "l", "2"),
]


def test_tampered_entries_are_counted_never_returned(upstream, proxy):
    c = proxy()
    _tamper_everything(c, upstream)
    before = failures(c)
    got = {args: c.call(*args) for args in READS}
    for args, reply in got.items():
        assert TAMPERED not in reply, args
        assert not reply.startswith(b"-"), (args, reply)
    assert got[("HGET", "h", "f")] == b"$-1\r\n"
    assert got[("HMGET", "h", "f", "plainfield")] == b"*2\r\n$-1\r\n$-1\r\n"
    assert got[("HGETALL", "h")] == b"*0\r\n"  # every field or value fails
    assert got[("HKEYS", "h")] == array(b"f")
    assert got[("SMEMBERS", "s")] == array(b"m")
    assert got[("ZRANGE", "z", "0", "-1", "WITHSCORES")] == array(b"m", b"1")
    assert got[("LRANGE", "l", "0", "-1")] == array(b"e")
    assert got[("LINDEX", "l", "1")] == got[("LINDEX", "l", "2")] == b"$-1\r\n"
    assert failures(c) > before + 20
    # Writes that re-seal from what they read skip what does not open.
    assert c.call("SUNIONSTORE", "copy", "s") == b":1\r\n"
    assert c.call("SMEMBERS", "copy") == array(b"m")
    assert c.call("LMOVE", "l", "l2", "RIGHT", "LEFT") == b"$-1\r\n"  # the flipped one
    assert c.call("LMOVE", "l", "l2", "RIGHT", "LEFT") == b"$-1\r\n"  # the foreign one
    assert c.call("LMOVE", "l", "l2", "RIGHT", "LEFT") == bulk(b"e")
    assert c.call("LRANGE", "l2", "0", "-1") == array(b"e")
    # Popped entries that do not open are not returned either.
    assert TAMPERED not in c.call("SPOP", "s", "10")
    assert TAMPERED not in c.call("ZPOPMAX", "z", "10")
    assert c.call("HRANDFIELD", "nokey") == b"$-1\r\n"


def test_on_decrypt_error_error_answers_errors(upstream, proxy):
    c = proxy("error")
    _tamper_everything(c, upstream)
    before = failures(c)
    for args in READS:
        reply = c.call(*args)
        assert TAMPERED not in reply, args
        if args in {("HMGET", "h", "f", "plainfield"), ("HGET", "h", "f")}:
            assert reply.startswith(b"-ERR cachecloak could not decrypt the stored value"), reply
        else:
            assert reply.startswith(b"-ERR cachecloak could not decrypt"), (args, reply)
    assert failures(c) >= before + len(READS)
    for args in [("SUNIONSTORE", "copy", "s"), ("LMOVE", "l", "l2", "RIGHT", "LEFT"),
                 ("SPOP", "s", "10"), ("ZPOPMAX", "z", "10")]:
        reply = c.call(*args)
        assert reply.startswith(b"-ERR cachecloak could not decrypt"), (args, reply)
    # Untouched data still reads.
    assert c.call("SADD", "fine", "x") == b":1\r\n"
    assert c.call("SMEMBERS", "fine") == array(b"x")
