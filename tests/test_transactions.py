"""Transactions and read-modify-write on encrypted data: same replies as Redis, atomic.

Differential sequences (MULTI/EXEC/DISCARD/WATCH, INCR and friends, APPEND, SETRANGE,
GETRANGE) are compared byte for byte with Redis in RESP2 and RESP3, through a redis and
a local backend.  Concurrency tests check that many clients incrementing the same keys
end with the exact total, and that WATCH conflicts abort as in Redis.  A last test
reads Redis directly: counters are stored as envelopes, never as plaintext numbers.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.differential import Pair
from tests.servers import RawClient


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def pair(request, direct_redis, proxies, backend):
    proxy = proxies[backend]
    assert proxy.proc.poll() is None, "cachecloak exited:\n" + proxy.log()
    with RawClient(direct_redis.port) as r, RawClient(proxy.port) as p:
        assert r.call("FLUSHALL") == p.call("FLUSHALL") == b"+OK\r\n"
    with Pair(direct_redis.port, proxy.port, proto=request.param) as p:
        yield p


RMW_SEQUENCES = {
    "incr-family": [
        ("INCR", "n"), ("INCR", "n"), ("INCRBY", "n", "10"), ("DECR", "n"),
        ("DECRBY", "n", "3"), ("GET", "n"), ("INCRBY", "n", "-100"), ("GET", "n"),
        ("INCRBY", "n", "x"), ("INCRBY", "n", "1.5"), ("DECRBY", "n", ""),
        ("SET", "big", "9223372036854775807"), ("INCR", "big"), ("GET", "big"),
        ("SET", "small", "-9223372036854775808"), ("DECR", "small"),
        ("DECRBY", "n", "-9223372036854775808"),
        ("SET", "s", "abc"), ("INCR", "s"), ("SET", "sp", " 1"), ("INCR", "sp"),
        ("SET", "z", "007"), ("INCR", "z"), ("GET", "z"),
    ],
    "incrbyfloat": [
        ("INCRBYFLOAT", "f", "1.5"), ("INCRBYFLOAT", "f", "0.1"), ("GET", "f"),
        ("INCRBYFLOAT", "f", "-3"), ("INCRBYFLOAT", "f", "5.0e3"), ("GET", "f"),
        ("INCRBYFLOAT", "f", "abc"), ("INCRBYFLOAT", "f", "inf"),
        ("SET", "i", "10"), ("INCRBYFLOAT", "i", "0.25"),
    ],
    "append-setrange-getrange": [
        ("APPEND", "a", "hello"), ("APPEND", "a", " world"), ("GET", "a"), ("STRLEN", "a"),
        ("GETRANGE", "a", "0", "4"), ("GETRANGE", "a", "-5", "-1"), ("GETRANGE", "a", "3", "1"),
        ("GETRANGE", "missing", "0", "-1"), ("GETRANGE", "a", "x", "1"),
        ("SETRANGE", "a", "6", "WORLD"), ("GET", "a"), ("SETRANGE", "b", "3", "xy"),
        ("GET", "b"), ("SETRANGE", "c", "0", ""), ("EXISTS", "c"),
        ("SETRANGE", "a", "-1", "x"), ("SETRANGE", "a", "536870912", "x"),
        ("APPEND", "a", ""), ("STRLEN", "a"),
    ],
    "hash-fields": [
        ("HINCRBY", "h", "f", "5"), ("HINCRBY", "h", "f", "-7"), ("HGET", "h", "f"),
        ("HINCRBYFLOAT", "h", "g", "1.5"), ("HINCRBYFLOAT", "h", "g", "0.1"),
        ("HGET", "h", "g"), ("HLEN", "h"), ("HSET", "h", "t", "text"),
        ("HINCRBY", "h", "t", "1"), ("HINCRBYFLOAT", "h", "t", "1"),
        ("HINCRBY", "h", "f", "x"), ("HINCRBY", "h", "f", "9223372036854775807"),
        ("SET", "s", "1"), ("HINCRBY", "s", "f", "1"), ("INCR", "h"),
        ("HSET", "h", "big", "9223372036854775807"), ("HINCRBY", "h", "big", "1"),
        ("EXPIRE", "h", "500"), ("HINCRBY", "h", "f", "1"), ("TTL", "h"),
        ("MULTI",), ("HSET", "h2", "a", "1"), ("HINCRBY", "h2", "a", "2"),
        ("HINCRBY", "h2", "b", "3"), ("HGET", "h2", "a"), ("EXEC",),
        # One key read both as a string and as a hash in one transaction.
        ("SET", "x", "0.5"), ("MULTI",), ("INCRBYFLOAT", "x", "0.5"), ("HINCRBY", "x", "a", "1"),
        ("EXEC",), ("HSET", "y", "a", "1"), ("MULTI",), ("HINCRBY", "y", "a", "1"),
        ("INCR", "y"), ("HGET", "y", "a"), ("EXEC",),
        # A key of a third type read both ways: WRONGTYPE for both, as in Redis.
        ("SADD", "st", "m"), ("MULTI",), ("HINCRBY", "st", "a", "1"),
        ("INCRBYFLOAT", "st", "0.5"), ("EXEC",), ("RPUSH", "li", "e"), ("ZADD", "zz", "1", "m"),
        ("MULTI",), ("INCR", "li"), ("HINCRBY", "zz", "f", "1"), ("APPEND", "li", "x"),
        ("EXEC",),
    ],
    "ttl-is-kept": [
        ("SET", "t", "1", "EX", "1000"), ("INCR", "t"), ("TTL", "t"),
        ("APPEND", "t", "0"), ("TTL", "t"), ("GET", "t"),
    ],
}

KEY_MOVES = {
    "rename-string": [
        ("SET", "a", "v", "EX", "500"), ("RENAME", "a", "b"), ("GET", "a"), ("GET", "b"),
        ("TTL", "b"), ("RENAME", "a", "b"), ("RENAME", "b", "b"), ("GET", "b"),
        ("SET", "c", "other"), ("RENAMENX", "b", "c"), ("RENAMENX", "b", "d"), ("GET", "d"),
        ("RENAMENX", "d", "d"), ("EXISTS", "b"),
    ],
    "copy-string": [
        ("SET", "a", "v"), ("COPY", "a", "b"), ("GET", "b"), ("COPY", "a", "b"),
        ("SET", "a", "w"), ("COPY", "a", "b", "REPLACE"), ("GET", "b"), ("COPY", "x", "y"),
        ("COPY", "a", "a"), ("COPY", "nothing", "nothing"), ("COPY", "a", "b", "DB", "1"),
        ("COPY", "a", "z", "DB", "x"),
        ("COPY", "a", "z", "DB", "99"), ("COPY", "a", "z", "NOPE"), ("SELECT", "1"),
        ("GET", "b"), ("SELECT", "0"),
    ],
    "rename-other-types": [
        ("HSET", "h", "f1", "v1", "f2", "v2"), ("RENAME", "h", "h2"), ("HGET", "h2", "f1"),
        ("HGETALL", "h2"), ("HLEN", "h2"), ("EXISTS", "h"),
        ("RPUSH", "l", "x", "y", "z"), ("EXPIRE", "l", "900"), ("RENAME", "l", "l2"),
        ("LRANGE", "l2", "0", "-1"), ("TTL", "l2"),
        ("SADD", "s", "m1", "m2"), ("COPY", "s", "s2"), ("SISMEMBER", "s2", "m1"),
        ("SCARD", "s2"), ("SISMEMBER", "s", "m2"),
        ("ZADD", "z", "1.5", "a", "2", "b"), ("RENAME", "z", "z2"),
        ("ZRANGE", "z2", "0", "-1", "WITHSCORES"), ("ZSCORE", "z2", "a"),
        ("SET", "str", "1"), ("RENAME", "z2", "str"), ("TYPE", "str"), ("ZCARD", "str"),
    ],
}

TRANSACTIONS = {
    "basic": [
        ("MULTI",), ("SET", "c", "5"), ("INCR", "c"), ("EXPIRE", "c", "60"), ("GET", "c"),
        ("EXEC",), ("TTL", "c"),
    ],
    "errors-outside": [
        ("EXEC",), ("DISCARD",), ("MULTI",), ("MULTI",), ("SET", "a", "1"), ("EXEC",),
        ("GET", "a"),
    ],
    "discard": [
        ("MULTI",), ("SET", "a", "1"), ("INCR", "a"), ("DISCARD",), ("GET", "a"),
    ],
    "execabort-on-arity": [
        ("MULTI",), ("SET", "a", "1"), ("GET",), ("INCR", "a"), ("EXEC",), ("GET", "a"),
    ],
    "error-inside-exec": [
        ("SET", "s", "text"), ("MULTI",), ("INCR", "s"), ("SET", "x", "1"), ("INCR", "x"),
        ("SET", "y", "1", "EX", "0"), ("EXEC",), ("GET", "x"),
    ],
    "select-inside": [
        ("MULTI",), ("SET", "k", "db0"), ("SELECT", "1"), ("SET", "k", "db1"), ("INCR", "n"),
        ("EXEC",), ("GET", "k"), ("GET", "n"), ("SELECT", "0"), ("GET", "k"), ("GET", "n"),
    ],
    "watch-inside-multi": [
        ("MULTI",), ("WATCH", "a"), ("PING",), ("EXEC",),
    ],
    "watch-unchanged": [
        ("SET", "w", "1"), ("WATCH", "w"), ("GET", "w"), ("MULTI",), ("INCR", "w"),
        ("EXEC",), ("GET", "w"), ("UNWATCH",),
    ],
    "own-write-after-watch-aborts": [
        ("SET", "w", "1"), ("WATCH", "w"), ("SET", "w", "2"), ("MULTI",), ("INCR", "w"),
        ("EXEC",), ("GET", "w"),
    ],
    "unwatch-then-write": [
        ("SET", "w", "1"), ("WATCH", "w"), ("UNWATCH",), ("SET", "w", "2"), ("MULTI",),
        ("INCR", "w"), ("EXEC",), ("GET", "w"),
    ],
    "mixed-local-and-remote": [
        ("MULTI",), ("PING",), ("SET", "a", "x"), ("ECHO", "e"), ("MGET", "a", "b"),
        ("APPEND", "a", "y"), ("GETRANGE", "a", "0", "0"), ("EXEC",),
    ],
    "empty": [("MULTI",), ("EXEC",)],
}


@pytest.mark.parametrize("name", sorted(RMW_SEQUENCES))
def test_read_modify_write_matches_redis(pair, name):
    pair.run(RMW_SEQUENCES[name])


@pytest.mark.parametrize("name", sorted(KEY_MOVES))
def test_rename_and_copy_match_redis(pair, name):
    pair.run(KEY_MOVES[name])


@pytest.mark.parametrize("name", sorted(TRANSACTIONS))
def test_transactions_match_redis(pair, name):
    pair.run(TRANSACTIONS[name])


def test_pipelined_transactions_match_redis(pair):
    commands = [("SET", "p", "1"), ("MULTI",), ("INCR", "p"), ("INCRBY", "p", "5"),
                ("GET", "p"), ("EXEC",), ("GET", "p"), ("INCR", "p"), ("PING",)]
    expected, got = pair.pipeline(commands)
    assert got == expected


def test_watch_aborts_when_another_client_writes(direct_redis, proxies, backend):
    """The same interleaving against Redis and through cachecloak: EXEC returns nil."""
    for port in (direct_redis.port, proxies[backend].port):
        with RawClient(port) as a, RawClient(port) as b:
            assert a.call("SET", "acct", "10") == b"+OK\r\n"
            assert a.call("WATCH", "acct") == b"+OK\r\n"
            assert b.call("INCRBY", "acct", "5") == b":15\r\n"
            assert a.call("MULTI") == b"+OK\r\n"
            assert a.call("DECRBY", "acct", "3") == b"+QUEUED\r\n"
            assert a.call("EXEC") == b"*-1\r\n"
            assert a.call("GET", "acct") == b"$2\r\n15\r\n"


def _hammer(port: int, keys: list[str], per_thread: int, threads: int) -> list[str]:
    errors: list[str] = []
    deadline = time.monotonic() + 60

    def work(seed: int) -> None:
        try:
            with RawClient(port, timeout=30) as c:
                for i in range(per_thread):
                    if time.monotonic() > deadline:
                        errors.append("time limit")
                        return
                    key = keys[(seed + i) % len(keys)]
                    if i % 3 == 0:
                        reply = c.call("HINCRBY", "fields", key, "2")
                    elif i % 3 == 1:
                        reply = c.call("INCR", key)
                    else:
                        c.send("MULTI")
                        c.send("INCR", key)
                        c.send("EXEC")
                        replies = [c.read_reply() for _ in range(3)]
                        reply = replies[2]
                        if not reply.startswith(b"*1\r\n:"):
                            errors.append(repr(replies))
                        continue
                    if not reply.startswith(b":"):
                        errors.append(repr(reply))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(90)
    return errors


def test_concurrent_increments_lose_nothing(proxies, backend):
    port = proxies[backend].port
    keys = ["hits:a", "hits:b", "{tag}:c"]
    with RawClient(port) as c:
        c.call("DEL", "fields", *keys)
    threads, per_thread = 6, 60
    errors = _hammer(port, keys, per_thread, threads)
    assert errors == []
    # Per thread: every third command adds 2 to a hash field (HINCRBY), the others add
    # 1 to a string key (INCR, or INCR inside MULTI/EXEC).
    fields = strings = 0
    for _thread in range(threads):
        for i in range(per_thread):
            if i % 3 == 0:
                fields += 2
            else:
                strings += 1
    with RawClient(port) as c:
        total = sum(int(c.call("GET", k).split(b"\r\n")[1]) for k in keys)
        field_total = sum(int(c.call("HGET", "fields", k).split(b"\r\n")[1]) for k in keys
                          if c.call("HEXISTS", "fields", k) == b":1\r\n")
    assert (total, field_total) == (strings, fields)


def test_counters_are_stored_encrypted(proxies, upstream_redis):
    port = proxies["redis"].port
    with RawClient(port) as c:
        c.call("SET", "plain-counter-key", "41")
        assert c.call("INCR", "plain-counter-key") == b":42\r\n"
        assert c.call("APPEND", "plain-counter-key", "-MARKER") == b":9\r\n"
    direct = upstream_redis.client()
    names = [n for n in direct.scan_iter(count=1000) if direct.type(n) == b"string"]
    assert names
    for name in names:
        assert b"plain-counter-key" not in name
        value = direct.get(name)
        assert value[0] == 1 and len(value) >= 33  # an envelope, never a bare number
        assert b"MARKER" not in value and value != b"42-MARKER"
    assert any(len(direct.get(n)) == len(b"42-MARKER") + 33 for n in names)


def test_every_read_modify_write_is_atomic_under_concurrency(proxies, backend):
    """Several clients apply each read-modify-write command to shared keys at once; the
    final values show that no update was lost (each command's effect is countable)."""
    port = proxies[backend].port
    threads, per_thread = 4, 25
    with RawClient(port) as c:
        c.call("DEL", "rmw:int", "rmw:float", "rmw:append", "rmw:range", "rmw:hash",
               "rmw:dec")
    errors: list[str] = []
    deadline = time.monotonic() + 60

    def work(n: int) -> None:
        try:
            with RawClient(port, timeout=30) as c:
                for i in range(per_thread):
                    if time.monotonic() > deadline:
                        errors.append("time limit")
                        return
                    replies = [
                        c.call("INCRBY", "rmw:int", "3"),
                        c.call("INCRBYFLOAT", "rmw:float", "1"),
                        c.call("APPEND", "rmw:append", "x"),
                        c.call("SETRANGE", "rmw:range", str(n * per_thread + i), "y"),
                        c.call("HINCRBYFLOAT", "rmw:hash", "f", "2"),
                        c.call("DECR", "rmw:dec"),
                    ]
                    for reply in replies:
                        if reply[:1] not in (b":", b"$"):
                            errors.append(repr(reply))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(90)
    assert errors == []
    total = threads * per_thread
    with RawClient(port) as c:
        assert c.call("GET", "rmw:int") == b"$%d\r\n%d\r\n" % (len(str(3 * total)), 3 * total)
        assert c.call("GET", "rmw:float") == b"$%d\r\n%d\r\n" % (len(str(total)), total)
        assert c.call("STRLEN", "rmw:append") == b":%d\r\n" % total
        assert c.call("GET", "rmw:range") == b"$%d\r\n%s\r\n" % (total, b"y" * total)
        assert c.call("HGET", "rmw:hash", "f") == b"$%d\r\n%d\r\n" % (
            len(str(2 * total)), 2 * total)
        assert c.call("GET", "rmw:dec") == b"$%d\r\n%d\r\n" % (len(str(-total)), -total)


def test_moves_between_keys_neither_lose_nor_duplicate(proxies, backend):
    """LMOVE and SMOVE re-encrypt for the destination; run concurrently they must still
    move each element exactly once (read, decide and write happen atomically)."""
    port = proxies[backend].port
    items = [f"item-{i}" for i in range(30)]
    with RawClient(port) as c:
        c.call("DEL", "q:a", "q:b", "set:a", "set:b")
        c.call("RPUSH", "q:a", *items)
        c.call("SADD", "set:a", *items)
    errors: list[str] = []
    deadline = time.monotonic() + 60

    def work(n: int) -> None:
        try:
            with RawClient(port, timeout=30) as c:
                for i in range(40):
                    if time.monotonic() > deadline:
                        return
                    src, dst = ("q:a", "q:b") if (n + i) % 2 else ("q:b", "q:a")
                    reply = c.call("LMOVE", src, dst, "LEFT", "RIGHT")
                    if reply[:1] != b"$":
                        errors.append(repr(reply))
                    member = items[(n * 7 + i) % len(items)]
                    ssrc, sdst = ("set:a", "set:b") if i % 2 else ("set:b", "set:a")
                    reply = c.call("SMOVE", ssrc, sdst, member)
                    if reply not in (b":0\r\n", b":1\r\n"):
                        errors.append(repr(reply))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(90)
    assert errors == []
    import hiredis

    def parsed(reply: bytes):
        reader = hiredis.Reader()
        reader.feed(reply)
        return reader.gets()

    with RawClient(port) as c:
        in_lists = parsed(c.call("LRANGE", "q:a", "0", "-1")) + parsed(
            c.call("LRANGE", "q:b", "0", "-1"))
        in_sets = parsed(c.call("SMEMBERS", "set:a")) + parsed(c.call("SMEMBERS", "set:b"))
    expected = sorted(i.encode() for i in items)
    assert sorted(in_lists) == expected
    assert sorted(in_sets) == expected
