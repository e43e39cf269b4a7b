"""Differential tests: the same commands sent to Redis and through cachecloak, same bytes.

One redis-server is the reference.  Two cachecloak processes sit in front of their own
stores: one with a `type: redis` cache (a second redis-server upstream), one with a
`type: local` cache.  Both have key hashing and value encryption on.  Every test runs
against each of them, in RESP2 and in RESP3 (HELLO 3 on both connections first), and
compares the raw reply bytes, command by command.  Both sides are flushed (FLUSHALL,
through the proxy for cachecloak) before each test.

Replies that depend on the clock (PTTL, EXPIRETIME after a relative expiry) are compared
with a small tolerance; TTL in seconds is compared exactly where the TTL is large (the
rounding cannot tick within a test).  HELLO replies are compared with `id` and `version`
masked.

Intended differences: cachecloak answers these differently from Redis on purpose, so the
tests assert cachecloak's documented behaviour for them instead of equality:

1. Unknown commands: cachecloak does not echo the arguments back (they may hold keys or
   values, and error texts reach application logs):
   `-ERR unknown command 'foo', with args beginning with: \\r\\n`.
2. Commands Redis has and cachecloak refuses (KEYS, SCAN, EVAL, LREM, SUBSCRIBE,
   CONFIG, OBJECT, BLPOP, ...): `-ERR cachecloak does not serve 'keys': <reason>`,
   whatever the arguments (also when Redis would report a wrong arity).  Refused
   subcommands likewise (`CLIENT KILL`, `CLIENT HELP`, `COMMAND GETKEYS`, ...):
   `-ERR cachecloak does not serve 'client|kill': <hint>`.
3. INFO, CLIENT LIST, CLIENT INFO and TIME describe the proxy, not a Redis server: only
   their shape is compared.  CLIENT ID is an integer on both sides, not the same one.
4. HELLO: the `id` and `version` fields (compared masked).
5. CLIENT SETINFO: Redis 7.0 does not have it (unknown subcommand); cachecloak answers
   +OK, as Redis 7.2 does, because current clients send it on connect.
6. COMMAND, COMMAND COUNT, COMMAND LIST and COMMAND INFO/DOCS without names describe
   only the commands cachecloak serves; the CLIENT and COMMAND entries list only served
   subcommands.  COMMAND INFO/DOCS of a served, non-container command are Redis's bytes.
7. DBSIZE counts live keys only.  Redis also counts keys that are logically expired but
   not yet reclaimed (right after `SET k v PXAT <past>`, for example); cachecloak counts
   with SCAN (or its store's live count), which never returns expired keys.

Known mismatch that is not intended (the test at the end): Redis echoes an unsupported
EXPIRE option's raw bytes in its error; without the C part, cachecloak reads upstream
replies with hiredis, which decodes error lines as UTF-8 with replacement characters, so
invalid UTF-8 there reaches the client as U+FFFD (the C ReplyReader keeps the bytes).
"""

from __future__ import annotations

import os
import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import speedups
from proxy.commands.connection import served_names
from proxy.commands.table import TABLE
from tests.differential import Near, Pair, flush_both, integer_of, mask_hello
from tests.servers import RawClient, encode_command

FAR = 4_000_000_000            # 2096-10-02, seconds
FAR_MS = 4_000_000_000_123     # the same, in milliseconds, not on a second boundary
BIG = 100_000                  # a relative TTL, in seconds, that cannot tick in a test
LLONG_MAX = 2**63 - 1
MIB = 1024 * 1024


# -- servers ---------------------------------------------------------------------------

@pytest.fixture
def ports(direct_redis, proxies, backend):
    proxy = proxies[backend]
    assert proxy.proc.poll() is None, "cachecloak exited:\n" + proxy.log()
    flush_both(direct_redis.port, proxy.port)
    return direct_redis.port, proxy.port


@pytest.fixture
def pair(ports, proto):
    with Pair(*ports, proto=proto) as p:
        yield p


# -- table-driven sequences ------------------------------------------------------------

INVALID_SET_OPTIONS = [
    ("EX", "0"), ("EX", "-1"), ("EX", "x"), ("EX", ""), ("EX", "1.5"), ("EX", "01"),
    ("PX", "0"), ("PX", "-5"), ("EXAT", "0"), ("PXAT", "-1"),
    ("EX", str(LLONG_MAX)), ("PX", str(LLONG_MAX)), ("EXAT", str(LLONG_MAX)),
    ("EX", str(LLONG_MAX // 1000 + 1)), ("EX", "99999999999999999999"),
    ("EX",), ("PX",), ("KEEPTTL", "EX", "10"), ("EX", "10", "KEEPTTL"),
    ("EX", "10", "PX", "10"), ("EXAT", "10", "PXAT", "10"), ("EX", "10", "EXAT", "10"),
    ("NX", "XX"), ("XX", "NX"), ("FOO",), ("GET", "FOO"), ("PERSIST",),
]

CASES: dict[str, list] = {
    "get_set": [
        ("SET", "k", "v"), ("GET", "k"), ("GET", "missing"), ("SET", "k", "v2"), ("GET", "k"),
        ("TYPE", "k"), ("STRLEN", "k"), ("STRLEN", "missing"), ("get", "k"), ("gEt", "k"),
        ("set", "k", "lower"), ("GET", "k"),
    ],
    "set_nx_xx": [
        ("SET", "k", "v", "NX"), ("SET", "k", "v2", "NX"), ("GET", "k"),
        ("SET", "k", "v3", "XX"), ("GET", "k"), ("SET", "m", "v", "XX"), ("GET", "m"),
        ("SET", "k", "v4", "nx"), ("SET", "k", "v5", "xx"), ("GET", "k"),
        ("SET", "n", "v", "NX", "NX"), ("GET", "n"),
    ],
    "set_get_flag": [
        ("SET", "k", "v", "GET"), ("SET", "k", "v2", "GET"), ("SET", "k", "v3", "NX", "GET"),
        ("GET", "k"), ("SET", "m", "v", "XX", "GET"), ("EXISTS", "m"),
        ("SET", "k", "v4", "XX", "GET"), ("SET", "k", "v5", "get", "GET"),
        ("SET", "k", "v6", "GET", "EX", str(BIG)), ("TTL", "k"),
        ("SET", "k", "v7", "KEEPTTL", "GET"), ("TTL", "k"), ("GET", "k"),
        ("SET", "k", "v8", b"get\x00junk"), ("SET", "k", "v9", b"nx\x00", b"GET\x00"),
        ("GET", "k"),
    ],
    "set_expiry": [
        ("SET", "k", "v", "EX", str(BIG)), ("TTL", "k"), Near("PTTL", "k", tolerance=2000),
        ("SET", "k", "v", "PX", str(BIG * 2000)), ("TTL", "k"),
        Near("PEXPIRETIME", "k", tolerance=2000), Near("EXPIRETIME", "k", tolerance=2),
        ("SET", "k", "v", "EXAT", str(FAR)), ("EXPIRETIME", "k"), ("PEXPIRETIME", "k"),
        ("SET", "k", "v", "PXAT", str(FAR_MS)), ("PEXPIRETIME", "k"), ("EXPIRETIME", "k"),
        ("SET", "k", "w", "KEEPTTL"), ("PEXPIRETIME", "k"), ("GET", "k"),
        ("SET", "k", "x"), ("TTL", "k"), ("PTTL", "k"), ("EXPIRETIME", "k"),
        ("SET", "k", "y", "ex", str(BIG), "nx"), ("SET", "k", "y", "xx", "px", str(BIG * 1000)),
        ("TTL", "k"), ("GET", "k"),
    ],
    "set_invalid_options": [
        step for options in INVALID_SET_OPTIONS
        for step in (("SET", "k", "bad", *options), ("GET", "k"), ("SET", "k", "good"))
    ],
    "set_in_the_past": [
        ("SET", "k", "v", "EXAT", "1"), ("GET", "k"), ("EXISTS", "k"),
        ("SET", "k", "v", "PXAT", "1"), ("TTL", "k"),
        ("SET", "k", "v", "EX", str(BIG)), ("SET", "k", "v2", "PXAT", "1", "GET"), ("GET", "k"),
        ("SET", "k", "v3", "EXAT", str(FAR), "XX"), ("GET", "k"),
    ],
    "setnx": [
        ("SETNX", "k", "v"), ("SETNX", "k", "w"), ("GET", "k"), ("SETNX", "e", ""),
        ("GET", "e"), ("STRLEN", "e"),
    ],
    "setex_psetex": [
        ("SETEX", "k", str(BIG), "v"), ("TTL", "k"), ("GET", "k"),
        ("SETEX", "k", "0", "v"), ("SETEX", "k", "-5", "v"), ("SETEX", "k", "x", "v"),
        ("SETEX", "k", "", "v"), ("SETEX", "k", str(LLONG_MAX), "v"),
        ("PSETEX", "k", str(BIG * 1000), "w"), ("TTL", "k"), ("GET", "k"),
        ("PSETEX", "k", "0", "v"), ("PSETEX", "k", "-1", "v"), ("PSETEX", "k", "1.0", "v"),
        ("PSETEX", "k", str(LLONG_MAX), "v"), ("GET", "k"),
    ],
    "getset": [
        ("GETSET", "k", "v"), ("GETSET", "k", "w"), ("GET", "k"),
        ("SET", "t", "v", "EX", str(BIG)), ("GETSET", "t", "w"), ("TTL", "t"),
    ],
    "getdel": [
        ("GETDEL", "k"), ("SET", "k", "v"), ("GETDEL", "k"), ("GETDEL", "k"), ("EXISTS", "k"),
    ],
    "getex": [
        ("GETEX", "k"), ("GETEX", "k", "EX", "10"), ("GETEX", "k", "EX", "-1"),
        ("GETEX", "k", "FOO"), ("SET", "k", "v"), ("GETEX", "k"), ("TTL", "k"),
        ("GETEX", "k", "EX", str(BIG)), ("TTL", "k"),
        ("GETEX", "k", "PX", str(BIG * 2000)), ("TTL", "k"),
        ("GETEX", "k", "EXAT", str(FAR)), ("EXPIRETIME", "k"),
        ("GETEX", "k", "PXAT", str(FAR_MS)), ("PEXPIRETIME", "k"),
        ("GETEX", "k", "PERSIST"), ("TTL", "k"), ("GETEX", "k", "persist"),
        ("GETEX", "k", "EX", "0"), ("GETEX", "k", "EX", "-1"), ("GETEX", "k", "EX", "x"),
        ("GETEX", "k", "PX", "0"), ("GETEX", "k", "EXAT", "0"), ("GETEX", "k", "PXAT", "-1"),
        ("GETEX", "k", "EX", str(LLONG_MAX)), ("GETEX", "k", "EX"),
        ("GETEX", "k", "EX", "10", "PX", "10"), ("GETEX", "k", "PERSIST", "EX", "10"),
        ("GETEX", "k", "EX", "10", "PERSIST"), ("GETEX", "k", "PERSIST", "PERSIST"),
        ("GETEX", "k", "KEEPTTL"), ("GETEX", "k", "NX"), ("GETEX", "k", "GET"),
        ("TTL", "k"), ("GETEX", "k", "EXAT", "1"), ("GET", "k"), ("EXISTS", "k"),
        ("SET", "k", "v"), ("GETEX", "k", "PXAT", "1"), ("GET", "k"),
    ],
    "mget": [
        ("MSET", "a", "1", "b", "2"), ("MGET", "a", "b", "c"), ("MGET", "c"), ("MGET", "a", "a"),
        ("MGET", "c", "b", "a", "c"),
    ],
    "mset": [
        ("MSET", "a", "1"), ("MSET", "a", "1", "b"), ("MSET", "a"), ("MSET", "a", "1", "a", "2"),
        ("GET", "a"), ("GET", "b"), ("SET", "t", "v", "EX", str(BIG)), ("MSET", "t", "w"),
        ("TTL", "t"), ("MSET", "x", "1", "y", "2", "z"), ("EXISTS", "x", "y", "z"),
    ],
    "msetnx": [
        ("MSETNX", "a", "1", "b", "2"), ("MSETNX", "b", "3", "c", "4"), ("EXISTS", "c"),
        ("MGET", "a", "b", "c"), ("MSETNX", "a"), ("MSETNX", "a", "1", "b"),
        ("MSETNX", "x", "1", "x", "2"), ("GET", "x"), ("MSETNX", "y", "1", "z"),
        ("EXISTS", "y"),
    ],
    "strlen": [
        ("SET", "k", ""), ("STRLEN", "k"), ("SET", "k", "hello"), ("STRLEN", "k"),
        ("SET", "k", "h\u00e9llo"), ("STRLEN", "k"), ("STRLEN", "missing"),
    ],
    "del_unlink": [
        ("MSET", "a", "1", "b", "2", "c", "3"), ("DEL", "a", "a", "x"),
        ("UNLINK", "b", "c", "x"), ("EXISTS", "a", "b", "c"), ("DEL", "x"), ("UNLINK", "x"),
        ("SET", "a", "1"), ("DEL", "a"), ("GET", "a"),
    ],
    "exists_touch_type": [
        ("MSET", "a", "1", "b", "2"), ("EXISTS", "a", "b", "x", "a"),
        ("TOUCH", "a", "b", "x", "a"), ("TOUCH", "x"), ("EXISTS", "x"),
        ("TYPE", "a"), ("TYPE", "x"), ("type", "a"),
    ],
    "expire_ttl": [
        ("EXPIRE", "k", "100"), ("TTL", "k"), ("PTTL", "k"), ("EXPIRETIME", "k"),
        ("PEXPIRETIME", "k"), ("PERSIST", "k"), ("SET", "k", "v"), ("TTL", "k"), ("PTTL", "k"),
        ("EXPIRETIME", "k"), ("PEXPIRETIME", "k"), ("PERSIST", "k"),
        ("EXPIRE", "k", str(BIG)), ("TTL", "k"), Near("PTTL", "k", tolerance=2000),
        ("PEXPIRE", "k", str(BIG * 2000)), ("TTL", "k"),
        ("EXPIREAT", "k", str(FAR)), ("EXPIRETIME", "k"), ("PEXPIRETIME", "k"),
        ("PEXPIREAT", "k", str(FAR_MS)), ("PEXPIRETIME", "k"), ("EXPIRETIME", "k"),
        ("PERSIST", "k"), ("PERSIST", "k"), ("TTL", "k"), ("GET", "k"),
    ],
    "expire_flags": [
        ("SET", "k", "v"), ("EXPIRE", "k", str(BIG), "XX"), ("EXPIRE", "k", str(BIG), "GT"),
        ("TTL", "k"), ("EXPIRE", "k", str(BIG), "LT"), ("TTL", "k"),
        ("EXPIRE", "k", str(BIG), "NX"), ("EXPIRE", "k", str(2 * BIG), "GT"), ("TTL", "k"),
        ("EXPIRE", "k", str(3 * BIG // 2), "GT"), ("EXPIRE", "k", str(3 * BIG // 2), "LT"),
        ("TTL", "k"), ("EXPIRE", "k", str(3 * BIG), "XX"), ("TTL", "k"),
        ("EXPIRE", "k", str(4 * BIG), "xx", "gt"), ("EXPIRE", "k", str(BIG), "XX", "GT"),
        ("PERSIST", "k"), ("EXPIRE", "k", str(BIG), "NX"), ("TTL", "k"),
        ("EXPIRE", "k", "100", "NX", "XX"), ("EXPIRE", "k", "100", "NX", "GT"),
        ("EXPIRE", "k", "100", "NX", "LT"), ("EXPIRE", "k", "100", "GT", "LT"),
        ("EXPIRE", "k", "100", "FOO"), ("EXPIRE", "k", "x", "FOO"), ("EXPIRE", "k", "x", "GT"),
        ("EXPIRE", "k", "100", b"gt\x00junk"), ("EXPIRE", "k", "100", b"f\x00oo"),
        ("EXPIRE", "missing", str(BIG), "GT"), ("EXPIRE", "missing", "x"),
        ("EXPIREAT", "k", str(FAR)), ("EXPIREAT", "k", str(FAR + 100), "LT"),
        ("EXPIREAT", "k", str(FAR - 100), "LT"), ("EXPIRETIME", "k"),
        ("PEXPIREAT", "k", str((FAR - 100) * 1000), "GT"),
        ("PEXPIREAT", "k", str((FAR - 100) * 1000 + 1), "GT"), ("PEXPIRETIME", "k"),
        ("PEXPIREAT", "k", str(FAR_MS), "XX", "GT"), ("PEXPIRETIME", "k"),
        ("PEXPIRE", "k", str(BIG * 1000), "LT"), ("TTL", "k"),
    ],
    "expire_edges": [
        ("SET", "k", "v"), ("EXPIRE", "k", str(LLONG_MAX)), ("PEXPIRE", "k", str(LLONG_MAX)),
        ("EXPIREAT", "k", str(LLONG_MAX)), ("EXPIRE", "k", str(-LLONG_MAX)),
        ("EXPIRE", "k", "99999999999999999999"), ("EXPIRE", "k", ""), ("EXPIRE", "k", "01"),
        ("EXPIRE", "k", " 1"), ("EXPIRE", "k", "1.5"), ("TTL", "k"),
        ("PEXPIREAT", "k", str(LLONG_MAX)), ("PEXPIRETIME", "k"),
        ("EXPIRE", "k", "-1"), ("EXISTS", "k"), ("SET", "k", "v"), ("EXPIREAT", "k", "1"),
        ("GET", "k"), ("SET", "k", "v"), ("PEXPIRE", "k", "0"), ("GET", "k"),
        ("SET", "k", "v"), ("PEXPIREAT", "k", "0"), ("TTL", "k"),
    ],
    "dbsize_flush": [
        ("DBSIZE",), ("MSET", "a", "1", "b", "2"), ("DBSIZE",), ("FLUSHDB",), ("DBSIZE",),
        ("MSET", "a", "1", "b", "2"), ("FLUSHDB", "ASYNC"), ("DBSIZE",), ("SET", "a", "1"),
        ("FLUSHDB", "SYNC"), ("DBSIZE",), ("SET", "a", "1"), ("FLUSHDB", "sync"),
        ("FLUSHDB", "FOO"), ("FLUSHDB", "ASYNC", "SYNC"), ("FLUSHDB", ""),
        ("SET", "a", "1"), ("FLUSHDB", b"async\x00x"), ("DBSIZE",),
        ("SET", "a", "1"), ("FLUSHALL", "FOO"), ("FLUSHALL", "ASYNC", "ASYNC"), ("DBSIZE",),
        ("FLUSHALL", "ASYNC"), ("DBSIZE",), ("SET", "a", "1"), ("FLUSHALL", "SYNC"),
        ("SET", "a", "1"), ("FLUSHALL",), ("DBSIZE",), ("GET", "a"),
    ],
    "ping_echo": [
        ("PING",), ("PING", "hello"), ("PING", ""), ("PING", "a", "b"), ("ping",),
        ("ECHO", "x"), ("ECHO", ""), ("ECHO",), ("ECHO", "a", "b"), ("echo", "\r\n"),
        ("PING", b"\x00\xff"),
    ],
    "select": [
        ("SELECT", "0"), ("SELECT", "15"), ("SELECT", "16"), ("SELECT", "-1"),
        ("SELECT", "x"), ("SELECT", "01"), ("SELECT", "+1"), ("SELECT", " 1"),
        ("SELECT", "1.0"), ("SELECT", "-0"), ("SELECT", "1_0"), ("SELECT", "3000000000"),
        ("SELECT", "-3000000000"), ("SELECT", "99999999999999999999"), ("SELECT", ""),
        ("SELECT",), ("SELECT", "1", "2"), ("SELECT", "0"),
    ],
    "select_separates_databases": [
        ("SET", "a", "db0"), ("SELECT", "1"), ("GET", "a"), ("EXISTS", "a"), ("DBSIZE",),
        ("SET", "a", "db1"), ("GET", "a"), ("MGET", "a", "b"), ("SELECT", "0"), ("GET", "a"),
        ("DBSIZE",), ("SELECT", "1"), ("DEL", "a"), ("SELECT", "0"), ("GET", "a"),
        ("SELECT", "15"), ("SET", "a", "db15"), ("SELECT", "1"), ("SET", "a", "db1"),
        ("FLUSHDB",), ("GET", "a"), ("SELECT", "15"), ("GET", "a"), ("SELECT", "0"),
        ("GET", "a"), ("FLUSHALL",), ("GET", "a"), ("SELECT", "15"), ("GET", "a"),
        ("DBSIZE",),
    ],
    "auth": [
        ("AUTH", "x"), ("AUTH", "default", "x"), ("AUTH", "other", "x"), ("AUTH",),
        ("AUTH", "a", "b", "c"), ("AUTH", "default", ""), ("AUTH", ""), ("auth", "default", "x"),
        ("PING",),
    ],
    "hello": [
        ("HELLO",), ("HELLO", "2"), ("HELLO", "3"), ("GET", "missing"), ("HELLO", "2"),
        ("GET", "missing"), ("HELLO", "4"), ("HELLO", "1"), ("HELLO", "0"), ("HELLO", "-1"),
        ("HELLO", "x"), ("HELLO", "03"), ("HELLO", "+3"), ("HELLO", ""), ("HELLO", "-0"),
        ("HELLO", "99999999999999999999"), ("HELLO", "3", "AUTH", "default", "x"),
        ("MGET", "missing"), ("HELLO", "3", "AUTH", "other", "x"), ("HELLO", "3", "AUTH"),
        ("HELLO", "3", "AUTH", "default"), ("HELLO", "2", "SETNAME", "myname"),
        ("CLIENT", "GETNAME"), ("HELLO", "3", "SETNAME", "bad name"), ("CLIENT", "GETNAME"),
        ("HELLO", "3", "SETNAME"), ("HELLO", "3", "FOO"), ("HELLO", "3", b"fo\x00o"),
        ("HELLO", "3", b"\xff\xfe"), ("HELLO", "3", "SETNAME", "ok", "FOO"),
        ("CLIENT", "GETNAME"), ("GET", "missing"), ("HELLO", "3", "SETNAME", "bad name", "FOO"),
        ("HELLO", "3", "SETNAME", "n2", "AUTH", "other", "x"), ("CLIENT", "GETNAME"),
        ("HELLO", "3", "AUTH", "other", "x", "FOO"),
        ("HELLO", "3", "auth", "default", "x", "setname", "n3"), ("CLIENT", "GETNAME"),
        ("HELLO", "3", "SETNAME", "a", "SETNAME", "b"), ("CLIENT", "GETNAME"),
        ("HELLO", "3", "SETNAME", ""), ("CLIENT", "GETNAME"),
        ("HELLO", "2", b"AUTH\x00x", "default", "x"), ("GET", "missing"),
    ],
    "client": [
        ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "foo"), ("CLIENT", "GETNAME"),
        ("CLIENT", "SETNAME", "a b"), ("CLIENT", "SETNAME", "a\nb"),
        ("CLIENT", "SETNAME", "\u00e9"), ("CLIENT", "SETNAME", b"a\x00"), ("CLIENT", "GETNAME"),
        ("client", "setname", "bar"), ("Client", "GetName"), ("CLIENT", "SETNAME", ""),
        ("CLIENT", "GETNAME"), ("CLIENT",), ("CLIENT", "SETNAME"),
        ("CLIENT", "SETNAME", "a", "b"), ("CLIENT", "GETNAME", "x"), ("CLIENT", "ID", "x"),
        ("CLIENT", "FOO"), ("CLIENT", "foo", "bar"), ("CLIENT", b"f\x00oo"),
        ("CLIENT", "x" * 200), ("CLIENT", b"\xff"), ("CLIENT", "a\r\nb"),
        # Not ("CLIENT", b"getname\x00"): Redis hashes the whole name but compares with
        # strcasecmp, so it finds GETNAME only when the two hashes share a bucket.
    ],
    "command_errors": [
        ("COMMAND", "FOO"), ("COMMAND", b"f\x00oo"), ("COMMAND", "f\r\noo"),
        ("COMMAND", "COUNT", "x"), ("COMMAND", "INFO", "nosuch"), ("COMMAND", "DOCS", "nosuch"),
    ],
    # A read-modify-write (HINCRBY) in a transaction, on a hash none of whose read
    # fields exist, after a command that fails on it (found by the whole-surface test).
    "multi_rmw_after_wrongtype": [
        ("HSETNX", "x", "b", "v"), ("MULTI",), ("SADD", "x", "a"),
        ("HINCRBY", "x", "a", "1"), ("EXEC",), ("HGET", "x", "a"),
    ],
    "reset": [
        ("CLIENT", "SETNAME", "x"), ("SELECT", "1"), ("SET", "a", "1"), ("HELLO", "3"),
        ("GET", "missing"), ("RESET",), ("GET", "a"), ("GET", "missing"),
        ("CLIENT", "GETNAME"), ("SELECT", "1"), ("GET", "a"), ("RESET", "x"), ("reset",),
        ("GET", "a"),
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sequence(pair, case):
    pair.run(CASES[case])


# -- wrong arity, for every served command ---------------------------------------------

# Commands Redis 7.0 answers differently on purpose (see the module docstring).
_NOT_COMPARED = {"client|setinfo"}


def _all_served() -> list:
    seen = {}
    for command in TABLE.values():
        seen[command.name] = command
        for sub in (command.subcommands or {}).values():
            seen[sub.name] = sub
    return [seen[name] for name in sorted(seen)]


def _arity_cases() -> list[tuple[str, tuple]]:
    cases = []
    for command in _all_served():
        if command.name in _NOT_COMPARED:
            continue
        prefix = tuple(command.name.upper().split("|"))
        arity = command.arity
        counts = [arity - 1, arity + 1] if arity > 0 else [-arity - 1]
        for argc in counts:
            if argc < len(prefix):
                continue
            args = prefix + ("x",) * (argc - len(prefix))
            cases.append((f"{command.name}-{argc}", args))
    # Arity -1 in the table, but the command itself takes at most one argument.
    cases.append(("ping-3", ("PING", "x", "y")))
    return cases


ARITY_CASES = _arity_cases()


def test_arity_cases_cover_the_table():
    names = {case_id.rsplit("-", 1)[0] for case_id, _ in ARITY_CASES}
    assert {"get", "set", "mset", "expire", "client|setname", "command|count", "ping"} <= names
    assert len(ARITY_CASES) > 40


@pytest.mark.parametrize("args", [a for _, a in ARITY_CASES], ids=[i for i, _ in ARITY_CASES])
def test_wrong_arity(pair, args):
    reply = pair.check(*args)
    if args[0].upper() == "EXEC":  # Redis discards the transaction on a rejected EXEC
        assert reply.startswith(b"-EXECABORT Transaction discarded because of: wrong "), reply
    else:
        assert reply.startswith(b"-ERR wrong number of arguments for '"), reply


# -- CLIENT ID, QUIT -------------------------------------------------------------------

def test_client_id_is_an_integer(pair):
    expected, got = pair.both("CLIENT", "ID")
    assert integer_of(expected) > 0 and integer_of(got) > 0
    # HELLO reports the same id as CLIENT ID.
    hello = pair.proxy.call("HELLO")
    assert b"$2\r\nid\r\n:%d\r\n" % integer_of(got) in hello


def test_quit_replies_ok_and_closes(pair):
    pair.check("SET", "k", "v")
    for client in (pair.redis, pair.proxy):
        client.send("QUIT")
    assert pair.redis.read_until_closed() == pair.proxy.read_until_closed() == b"+OK\r\n"


# -- COMMAND introspection -------------------------------------------------------------

_CONTAINERS = {"client", "command", "cluster"}
_SERVED = served_names()
_SERVED_TOP = [n for n in _SERVED if "|" not in n]
_DESCRIBED_EXACTLY = [n for n in _SERVED
                      if n not in _CONTAINERS and n not in _NOT_COMPARED]


@pytest.mark.parametrize("what", ["INFO", "DOCS"])
def test_command_info_and_docs_of_each_served_command(pair, what):
    for name in _DESCRIBED_EXACTLY:
        pair.check("COMMAND", what, name)
    pair.check("COMMAND", what, "GET")
    pair.check("COMMAND", what, "get", "set", "nosuch", "mget")
    pair.check("COMMAND", what, "ttl", "ttl")


def test_command_count_and_list_describe_served_commands(pair):
    expected, got = pair.both("COMMAND", "COUNT")
    assert integer_of(got) == len(_SERVED_TOP) < integer_of(expected)
    listing = pair.proxy.call("COMMAND")
    assert listing.startswith(b"*%d\r\n" % len(_SERVED_TOP))
    # CLIENT SETINFO is served but Redis 7.0, whose descriptions are replayed, lacks it.
    listed = [n for n in _listing_order() if n != "client|setinfo"]
    assert pair.proxy.call("COMMAND", "LIST") == b"*%d\r\n" % len(listed) + b"".join(
        b"$%d\r\n%s\r\n" % (len(n), n.encode()) for n in listed)
    info = pair.proxy.call("COMMAND", "INFO", "randomkey")  # refused: not described
    assert info == (b"*1\r\n$-1\r\n" if pair.proto == 2 else b"*1\r\n_\r\n")


def _listing_order() -> list[str]:
    out = []
    for name in _SERVED_TOP:
        out.append(name)
        out.extend(sorted(n for n in _SERVED if n.startswith(name + "|")))
    return out


# -- binary safety ---------------------------------------------------------------------

BINARY_KEYS = [b"", b"\x00", b"a\x00b", b"\r\n", b"$3\r\nfoo", b"key with spaces",
               bytes(range(256)), b"{tag}x", b"{}", b"k" * 1000]
BINARY_VALUES = [b"", b"\x00" * 10, b"\r\n$3\r\nfoo\r\n", bytes(range(256)), b"-ERR no\r\n",
                 "\u00e9\u4e2d".encode()]


def test_binary_keys_and_values(pair):
    for i, key in enumerate(BINARY_KEYS):
        value = BINARY_VALUES[i % len(BINARY_VALUES)]
        pair.run([
            ("SET", key, value), ("GET", key), ("STRLEN", key), ("EXISTS", key),
            ("MGET", key, b"other", key), ("GETSET", key, value + b"!"), ("GETEX", key),
            ("SET", key, value, "GET"), ("TYPE", key), ("GETDEL", key), ("GET", key),
        ])
    for value in BINARY_VALUES:
        pair.run([("SET", "v", value), ("GET", "v"), ("STRLEN", "v"), ("ECHO", value),
                  ("PING", value)])
    pair.check("MSET", *[part for i, k in enumerate(BINARY_KEYS)
                         for part in (k, BINARY_VALUES[i % len(BINARY_VALUES)])])
    pair.check("MGET", *BINARY_KEYS)
    pair.check("DEL", *BINARY_KEYS)


def test_one_mebibyte_values(pair):
    rng = random.Random(1)
    big = [rng.randbytes(MIB), b"\r\n" * (MIB // 2), b"x" * MIB]
    for i, value in enumerate(big):
        pair.run([("SET", f"big{i}", value), ("STRLEN", f"big{i}"), ("GET", f"big{i}")])
    pair.check("MGET", "big0", "big1", "nope", "big2")
    pair.check("MSET", "m0", big[0], "m1", big[1])
    pair.check("GETSET", "m0", big[2])
    pair.check("SET", "m1", big[0], "GET")
    pair.check("MGET", "m0", "m1")
    pair.check("ECHO", big[1])


# -- pipelines -------------------------------------------------------------------------

def _pipeline_commands(rng: random.Random, count: int) -> list[tuple]:
    keys = ["a", "b", "c", "{t}d", "e\x00f"]
    templates = [
        lambda: ("PING",),
        lambda: ("PING", f"p{rng.randrange(100)}"),
        lambda: ("ECHO", rng.choice(["", "x", "a\r\nb"])),
        lambda: ("SET", rng.choice(keys), f"v{rng.randrange(1000)}"),
        lambda: ("SET", rng.choice(keys), "w", "GET"),
        lambda: ("GET", rng.choice(keys)),
        lambda: ("MGET", *rng.sample(keys, 3)),
        lambda: ("MSET", rng.choice(keys), "m", rng.choice(keys), "n"),
        lambda: ("DEL", rng.choice(keys)),
        lambda: ("EXISTS", *rng.sample(keys, 2)),
        lambda: ("STRLEN", rng.choice(keys)),
        lambda: ("EXPIRE", rng.choice(keys), str(BIG)),
        lambda: ("TTL", rng.choice(keys)),
        lambda: ("GETDEL", rng.choice(keys)),
        lambda: ("CLIENT", "GETNAME"),
        lambda: ("CLIENT", "SETNAME", f"n{rng.randrange(10)}"),
        lambda: ("SELECT", rng.choice(["0", "1"])),
        lambda: ("DBSIZE",),
        lambda: ("GET",),
        lambda: ("SET", "a", "b", "EX", "0"),
        lambda: ("TYPE", rng.choice(keys)),
    ]
    commands = [rng.choice(templates)() for _ in range(count)]
    commands[count // 2] = ("FLUSHDB",)
    return commands


def test_pipeline_of_200_mixed_commands(pair):
    rng = random.Random(200)
    for _ in range(3):
        commands = _pipeline_commands(rng, 200)
        expected, got = pair.pipeline(commands)
        for i, (command, e, g) in enumerate(zip(commands, expected, got, strict=True)):
            assert g == e, f"reply {i} to {command}: redis {e!r} != cachecloak {g!r}"


def test_pipeline_state_changes_apply_in_order(pair):
    """SELECT and HELLO in a pipeline apply to the commands after them, not before."""
    pair.check("SET", "a", "db0")
    commands = [("GET", "a"), ("MGET", "a", "x"), ("SET", "a", "again", "GET"), ("STRLEN", "a"),
                ("SELECT", "1"), ("GET", "a"), ("SET", "a", "db1"), ("GET", "x"),
                ("HELLO", "3" if pair.proto == 2 else "2"), ("GET", "x"), ("MGET", "a", "x"),
                ("SELECT", "0"), ("GET", "a"), ("DBSIZE",), ("GET", "x"),
                ("HELLO", str(pair.proto)), ("GET", "x"), ("MGET", "x")]
    expected, got = pair.pipeline(commands)
    for i, (command, e, g) in enumerate(zip(commands, expected, got, strict=True)):
        if command[0] == "HELLO":
            e, g = mask_hello(e), mask_hello(g)
        assert g == e, f"reply {i} to {command}: redis {e!r} != cachecloak {g!r}"


def test_pipeline_with_reset_and_quit(pair):
    """RESET in a pipeline returns to RESP2 and db 0 for the commands after it only; QUIT
    answers the commands before it and +OK, then closes without running the rest."""
    pair.check("SET", "a", "db0")
    commands = [("SELECT", "1"), ("SET", "a", "db1"), ("HELLO", "3"), ("GET", "a"),
                ("GET", "x"), ("MGET", "a", "x"), ("RESET",), ("GET", "a"), ("GET", "x"),
                ("MGET", "x"), ("SELECT", "1"), ("GETDEL", "a"), ("QUIT",), ("SET", "after", "1")]
    payload = b"".join(encode_command(c) for c in commands)
    pair.redis.send_raw(payload)
    pair.proxy.send_raw(payload)
    expected = pair.redis.read_until_closed()
    got = pair.proxy.read_until_closed()
    assert mask_hello(got) == mask_hello(expected)
    assert got.endswith(b"+OK\r\n")
    with RawClient(pair.proxy_port) as proxy:
        assert proxy.call("EXISTS", "after") == b":0\r\n"
        assert proxy.call("GET", "a") == b"$3\r\ndb0\r\n"


def test_pipeline_of_large_values(pair):
    value = bytes(range(256)) * 64  # 16 KiB
    commands = []
    for i in range(100):
        commands += [("SET", f"k{i}", value), ("GET", f"k{i - 1}")]
    expected, got = pair.pipeline(commands)
    assert got == expected


def test_pipelines_of_small_and_large_replies(pair):
    """A flush of several replies is written as they are when the first is large
    (proxy.server.client.WRITELINES_PART_BYTES) and joined when not: both ways, with
    batches, local replies and misses between them, the bytes come in order."""
    sizes = [0, 1, 100, 2047, 2048, 2049, 4096, 20000]
    setup = [("SET", f"m{i}", bytes([65 + i]) * n) for i, n in enumerate(sizes)]
    assert pair.pipeline(setup)[0] == pair.pipeline(setup)[1]
    commands = []
    for start in range(len(sizes)):
        for i in range(start, len(sizes)):
            commands.append(("GET", f"m{i}"))
        commands += [("PING",), ("GET", "missing"), ("ECHO", "x" * (start * 1000))]
    expected, got = pair.pipeline(commands)
    assert got == expected
    for i in range(len(sizes)):  # and one large reply after small ones, alone
        expected, got = pair.pipeline([("GET", "m0"), ("GET", "m1"), ("GET", f"m{i}")])
        assert got == expected


# -- inline commands -------------------------------------------------------------------

INLINE = [
    (b"PING\r\n", 1),
    (b"PING\n", 1),
    (b"SET a \"b c\"\r\nGET a\r\n", 2),
    (b"  GET   a  \r\n", 1),
    (b"ECHO 'x y'\r\n", 1),
    (b"ECHO \"\\x41\\n\\t\\\\\"\r\n", 1),
    (b"ECHO 'it\\'s'\r\n", 1),
    (b"\r\nPING\r\n\n", 1),
    (b"*1\r\n$4\r\nPING\r\nPING\r\n", 2),
    (b"*2\r\n$3\r\nGET\r\n$1\r\na\r\nGET a\r\n*1\r\n$4\r\nPING\r\n", 3),
    (b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nECHO inline\r\n", 3),
    (b"SET k v EX 100000\r\nTTL k\r\nMGET a k nope\r\n", 3),
    (b"set\tk\tw\r\nget k\r\n", 2),
    (b"GET\r\n", 1),
    (b"SET \"\" empty\r\nGET \"\"\r\n", 2),
    (b"*0\r\nPING\r\n", 1),
    (b"*-1\r\nPING\r\n", 1),
    (b"*1\r\n$4\r\nPING\r\n*0\r\n*-1\r\nECHO x\r\n", 2),
]


@pytest.mark.parametrize("data,replies", INLINE, ids=[repr(d)[2:30] for d, _ in INLINE])
def test_inline_commands(pair, data, replies):
    pair.redis.send_raw(data)
    pair.proxy.send_raw(data)
    expected = [pair.redis.read_reply() for _ in range(replies)]
    got = [pair.proxy.read_reply() for _ in range(replies)]
    assert got == expected
    # Nothing more came: the next reply belongs to the next command.
    assert pair.check("PING", "end") == b"$3\r\nend\r\n"


def test_inline_unbalanced_quotes_close_the_connection(pair):
    data = b"PING\r\nSET a \"b\r\nPING\r\n"
    pair.redis.send_raw(data)
    pair.proxy.send_raw(data)
    assert pair.proxy.read_until_closed() == pair.redis.read_until_closed()


# -- intended differences: cachecloak's documented behaviour ---------------------------

def test_unknown_command_does_not_echo_arguments(pair):
    for name, args in [("FOO", ()), ("foo", ("secret-key", "secret-value")),
                       ("x" * 200, ("y",)), ("fo\x00o", ("k",))]:
        expected, got = pair.both(name, *args)
        shown = name.split("\x00")[0][:128].encode()
        assert got == b"-ERR unknown command '%s', with args beginning with: \r\n" % shown
        assert expected.startswith(b"-ERR unknown command '%s', with args beginning with: "
                                   % shown)
        assert b"secret" not in got


@pytest.mark.parametrize("args", [
    ("KEYS", "*"), ("SCAN", "0"), ("RANDOMKEY",), ("EVAL", "return 1", "0"), ("SORT", "k"),
    ("LCS", "k", "v"), ("BITCOUNT", "h"), ("FCALL", "f", "0"), ("PUBLISH", "c", "m"),
    ("CONFIG", "GET", "*"), ("OBJECT", "ENCODING", "k"), ("DUMP", "k"), ("BLPOP", "l", "0.01"),
    ("MIGRATE", "h", "1", "a", "0", "5"), ("PFADD", "k", "0", "1"), ("SETBIT", "k", "1", "1"),
    ("sort",), ("Sort", "a", "b", "c"),
])
def test_refused_commands(pair, args):
    pair.check("SET", "k", "v")
    expected, got = pair.both(*args)
    name = args[0].lower()
    assert got.startswith(b"-ERR cachecloak does not serve '%s': " % name.encode()), got
    assert got.endswith(b"\r\n") and got.count(b"\r\n") == 1
    assert got != expected
    # The connection still works and nothing changed (Redis ran the command; we did not).
    assert pair.proxy.call("GET", "k") == b"$1\r\nv\r\n"


@pytest.mark.parametrize("args", [
    ("CLIENT", "KILL"), ("CLIENT", "KILL", "ID", "999999"), ("CLIENT", "HELP"),
    ("CLIENT", "TRACKING", "ON"), ("CLIENT", "PAUSE", "10"), ("COMMAND", "GETKEYS"),
    ("COMMAND", "GETKEYS", "GET", "k"), ("COMMAND", "HELP"), ("client", "no-evict", "on"),
])
def test_refused_subcommands(pair, args):
    expected, got = pair.both(*args)
    container, sub = args[0].lower(), args[1].lower()
    assert got.startswith(b"-ERR cachecloak does not serve '%s|%s': " % (
        container.encode(), sub.encode())), got
    assert got != expected
    assert pair.check("PING") == b"+PONG\r\n"


def _text_reply(reply: bytes, proto: int) -> bytes:
    """The text of a bulk (RESP2) or verbatim (RESP3) reply."""
    if proto == 3:
        m = re.fullmatch(rb"=(\d+)\r\ntxt:(.*)\r\n", reply, re.S)
        assert m and int(m.group(1)) == len(m.group(2)) + 4, reply[:80]
    else:
        m = re.fullmatch(rb"\$(\d+)\r\n()(.*)\r\n", reply, re.S)
        assert m and int(m.group(1)) == len(m.group(3)), reply[:80]
        return m.group(3)
    return m.group(2)


def test_info_client_list_client_info_and_time_have_redis_shapes(pair):
    expected, got = pair.both("INFO")
    assert b"# Server\r\nredis_version:" in _text_reply(expected, pair.proto)
    assert b"# Server\r\nredis_version:" in _text_reply(got, pair.proto)
    server = _text_reply(pair.proxy.call("INFO", "server"), pair.proto)
    assert b"redis_mode:standalone" in server and b"# Clients" not in server
    own_id = integer_of(pair.proxy.call("CLIENT", "ID"))
    for args in (("CLIENT", "INFO"), ("CLIENT", "LIST"), ("CLIENT", "LIST", "TYPE", "normal")):
        expected, got = pair.both(*args)
        for reply in (expected, got):
            text = _text_reply(reply, pair.proto)
            assert text.startswith(b"id=") and text.endswith(b"\n"), text
        assert b"id=%d " % own_id in _text_reply(got, pair.proto)
        assert f"resp={pair.proto}".encode() in _text_reply(got, pair.proto)
    expected, got = pair.both("TIME")
    pattern = rb"\*2\r\n\$\d+\r\n(\d+)\r\n\$\d+\r\n(\d+)\r\n"
    e, g = re.fullmatch(pattern, expected), re.fullmatch(pattern, got)
    assert e and g, (expected, got)
    assert abs(int(e.group(1)) - int(g.group(1))) <= 2 and int(g.group(2)) < 1_000_000
    assert abs(int(g.group(1)) - time.time()) <= 5


def test_client_setinfo_is_accepted(pair):
    expected, got = pair.both("CLIENT", "SETINFO", "LIB-NAME", "redis-py")
    assert expected.startswith(b"-ERR unknown subcommand 'SETINFO'")
    assert got == b"+OK\r\n"
    assert pair.proxy.call("CLIENT", "SETINFO", "LIB-VER", "5.0.1") == b"+OK\r\n"
    assert b" lib-name=redis-py lib-ver=5.0.1" in pair.proxy.call("CLIENT", "INFO")


def test_dbsize_counts_live_keys_only(pair):
    pair.check("SET", "live", "v")
    pair.check("SET", "dead", "v", "PXAT", "1")  # expired at once, not yet reclaimed
    expected, got = pair.both("DBSIZE")
    assert integer_of(got) == 1
    assert integer_of(expected) in (1, 2)  # Redis counts it until it reclaims it
    pair.check("EXISTS", "live", "dead")


# -- property test: random sequences ---------------------------------------------------

_KEYS = [b"a", b"b", b"{t}c", b"x\x00y", b""]
_VALUES = [b"", b"v", b"\r\n", b"\x00\xff", b"w" * 300]
_REL_S = ["1000", "2000", "0", "-1", "x"]
_REL_MS = ["1500000", "2500000", "0"]
_ABS_S = ["1", str(FAR), str(FAR + 1000), "0"]
_ABS_MS = ["1", str(FAR_MS), str(FAR_MS + 1_000_500)]

key = st.sampled_from(_KEYS)
value = st.sampled_from(_VALUES)
keys = st.lists(key, min_size=1, max_size=4)


def _opts(*groups):
    """Zero or more option groups, each a strategy of a tuple of words."""
    return st.lists(st.one_of(*groups), max_size=3).map(lambda parts: [w for p in parts for w in p])


_EXPIRY = st.one_of(
    st.tuples(st.just("EX"), st.sampled_from(_REL_S)),
    st.tuples(st.just("PX"), st.sampled_from(_REL_MS)),
    st.tuples(st.just("EXAT"), st.sampled_from(_ABS_S)),
    st.tuples(st.just("PXAT"), st.sampled_from(_ABS_MS)),
)
_SET_OPTS = _opts(st.sampled_from([("NX",), ("XX",), ("GET",), ("KEEPTTL",), ("FOO",)]),
                  _EXPIRY)
_GETEX_OPTS = _opts(st.sampled_from([("PERSIST",), ("KEEPTTL",)]), _EXPIRY)
_FLAGS = st.lists(st.sampled_from(["NX", "XX", "FOO"]), max_size=2)
_ABS_FLAGS = st.lists(st.sampled_from(["NX", "XX", "GT", "LT"]), max_size=2)

command = st.one_of(
    st.builds(lambda k, v, o: ("SET", k, v, *o), key, value, _SET_OPTS),
    st.builds(lambda k: ("GET", k), key),
    st.builds(lambda k, v: ("SETNX", k, v), key, value),
    st.builds(lambda k, t, v: ("SETEX", k, t, v), key, st.sampled_from(_REL_S), value),
    st.builds(lambda k, t, v: ("PSETEX", k, t, v), key, st.sampled_from(_REL_MS), value),
    st.builds(lambda k, v: ("GETSET", k, v), key, value),
    st.builds(lambda k: ("GETDEL", k), key),
    st.builds(lambda k, o: ("GETEX", k, *o), key, _GETEX_OPTS),
    st.builds(lambda ks: ("MGET", *ks), keys),
    st.builds(lambda kv, odd: ("MSET", *[w for p in kv for w in p], *odd),
              st.lists(st.tuples(key, value), min_size=1, max_size=3),
              st.sampled_from([(), (b"odd",)])),
    st.builds(lambda kv, odd: ("MSETNX", *[w for p in kv for w in p], *odd),
              st.lists(st.tuples(key, value), min_size=1, max_size=3),
              st.sampled_from([(), (b"odd",)])),
    st.builds(lambda k: ("STRLEN", k), key),
    st.builds(lambda c, ks: (c, *ks), st.sampled_from(["DEL", "UNLINK", "EXISTS", "TOUCH"]),
              keys),
    st.builds(lambda k: ("TYPE", k), key),
    # Relative expiries only with NX/XX: GT/LT between two relative times taken a few
    # microseconds apart would depend on the clock.
    st.builds(lambda k, t, f: ("EXPIRE", k, t, *f), key, st.sampled_from(_REL_S), _FLAGS),
    st.builds(lambda k, t, f: ("PEXPIRE", k, t, *f), key, st.sampled_from(_REL_MS), _FLAGS),
    st.builds(lambda k, t, f: ("EXPIREAT", k, t, *f), key, st.sampled_from(_ABS_S), _ABS_FLAGS),
    st.builds(lambda k, t, f: ("PEXPIREAT", k, t, *f), key, st.sampled_from(_ABS_MS),
              _ABS_FLAGS),
    st.builds(lambda c, k: (c, k), st.sampled_from(
        ["PERSIST", "TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"]), key),
    st.just(("DBSIZE",)),
    st.sampled_from([("FLUSHDB",), ("FLUSHALL", "ASYNC"), ("FLUSHDB", "BAD")]),
    st.sampled_from([("SELECT", "0"), ("SELECT", "1"), ("SELECT", "16")]),
    st.sampled_from([("HELLO", "2"), ("HELLO", "3"), ("HELLO", "4"), ("RESET",)]),
    st.sampled_from([("PING",), ("PING", "x"), ("ECHO", "e"), ("CLIENT", "GETNAME"),
                     ("CLIENT", "SETNAME", "n"), ("GET",), ("SET", "a"), ("AUTH", "x")]),
)

# Replies that depend on when each server ran the command, with their tolerance.
_CLOCK_TOLERANCE = {"TTL": 2, "PTTL": 2000, "EXPIRETIME": 2, "PEXPIRETIME": 2000}
_EXAMPLES = int(os.environ.get("CACHECLOAK_DIFF_EXAMPLES", "100"))


def _compare(p: Pair, step: tuple, index: int, expected: bytes, got: bytes,
             live_count=None) -> None:
    where = f"step {index} {step!r} (RESP{p.proto})"
    name = step[0]
    if name == "HELLO":
        expected, got = mask_hello(expected), mask_hello(got)
    if got == expected:
        return
    if name == "DBSIZE":
        # Redis may count logically expired keys it has not reclaimed yet (difference 7):
        # cachecloak's count is the live one, never more than Redis's.
        count = integer_of(got)
        assert count <= integer_of(expected), f"{where}: redis {expected!r} < {got!r}"
        if live_count is not None:
            assert count == live_count(), f"{where}: {count} is not the live key count"
        return
    tolerance = _CLOCK_TOLERANCE.get(name)
    if tolerance is not None:
        a, b = integer_of(expected), integer_of(got)
        assert a == b if a < 0 or b < 0 else abs(a - b) <= tolerance, (
            f"{where}: redis {expected!r} != cachecloak {got!r}")
        return
    assert got == expected, f"{where}: redis {expected!r} != cachecloak {got!r}"


@pytest.mark.parametrize("proto", [2, 3], ids=["resp2", "resp3"])
@pytest.mark.parametrize("backend", ["redis", "local"])
def test_random_sequences(direct_redis, proxies, backend, proto):
    """Random sequences, sent command by command or as one pipeline."""
    proxy = proxies[backend]

    @settings(max_examples=_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(command, min_size=1, max_size=25), st.booleans())
    def run(steps, pipelined):
        flush_both(direct_redis.port, proxy.port)
        with Pair(direct_redis.port, proxy.port, proto=proto) as p:
            if pipelined:
                expected, got = p.pipeline(steps)
                for index, step in enumerate(steps):
                    _compare(p, step, index, expected[index], got[index])
                return
            for index, step in enumerate(steps):
                expected, got = p.both(*step)
                _compare(p, step, index, expected, got,
                         lambda: integer_of(p.redis.call("EXISTS", *_KEYS)))

    run()


# -- a known difference that is not intended (without the C part) ----------------------

def test_error_echo_of_invalid_utf8_option(pair, backend):
    if backend == "redis" and speedups.native is None:
        pytest.xfail("without the C part, hiredis reads Redis's error lines and decodes "
                     "them as UTF-8 with replacement characters, so an option Redis echoes "
                     "in an error (EXPIRE's 'Unsupported option') reaches the client with "
                     "U+FFFD instead of its bytes")
    pair.check("SET", "k", "v")
    pair.check("EXPIRE", "k", "100", b"\xff\xfe")
