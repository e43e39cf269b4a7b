"""LocalStore's hash, set, list, sorted-set, counter and keyspace-scan commands
against a real redis-server (7.0): same commands, same replies.

Every differential step sends one command to redis-server (RESP2, parsed by
hiredis.Reader) and the same argument list to LocalStore.execute.  Replies are compared
value-for-value and type-for-type (errors by their message) except where Redis leaves
the order or the choice unspecified:

* ``U(...)``     the reply is a multiset (SMEMBERS, SINTER, KEYS, big HKEYS, ...);
* ``P(...)``     the reply is a flat field/value list whose pair order is unspecified;
* ``Rnd(...)``   a random reply (SPOP, SRANDMEMBER, HRANDFIELD, ZRANDMEMBER,
                 RANDOMKEY): both replies are checked for shape and membership against
                 the collection's contents, and after SPOP the local set is re-synced
                 to what Redis kept, so later steps compare equal states;
* ``Scan(...)``  a SCAN-family call: both sides are iterated to cursor 0 and the
                 unions compared (cursor numbers are implementation-defined);
* TTL/PTTL replies are compared with one unit of tolerance (the two executions are a
  few microseconds apart), as in test_local_differential.py.
"""

from __future__ import annotations

import random
import string
from collections import deque
from dataclasses import dataclass

import hiredis
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from proxy.backends.local import LocalStore, ZSet, _stringmatch
from tests.servers import RawClient, start_redis

LLONG_MAX = 2**63 - 1
LLONG_MIN = -(2**63)
TOLERANCE = {b"TTL": 1, b"EXPIRETIME": 1, b"PTTL": 1000, b"PEXPIRETIME": 1000}


def b(arg: bytes | str | int | float) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("latin-1")
    return str(arg).encode()


def norm(reply):
    """A comparable form of a reply that keeps the type (b"1" != 1)."""
    if isinstance(reply, hiredis.ReplyError):
        return ("error", reply.args)
    if isinstance(reply, list):
        return ("array", [norm(r) for r in reply])
    return (type(reply).__name__, reply)


@dataclass(frozen=True)
class U:
    """A step whose array reply is compared as a multiset."""

    args: tuple

    def __init__(self, *args) -> None:
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class P:
    """A step whose flat [field, value, ...] reply is compared as a multiset of pairs."""

    args: tuple

    def __init__(self, *args) -> None:
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class Rnd:
    """A random-reply step: shape and membership are checked on both sides."""

    args: tuple

    def __init__(self, *args) -> None:
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class Scan:
    """A SCAN-family step: both sides are iterated to the end and the unions compared."""

    args: tuple

    def __init__(self, *args) -> None:
        object.__setattr__(self, "args", args)


def _multiset(items) -> list:
    return sorted(repr(norm(i)) for i in items)


def _pairs(flat: list) -> list:
    return sorted(zip(flat[0::2], flat[1::2], strict=True))


class Pair:
    """One redis-server connection and one LocalStore, fed the same commands."""

    def __init__(self, client: RawClient, store: LocalStore) -> None:
        self.client = client
        self.store = store

    def redis(self, *args) -> object:
        reader = hiredis.Reader()
        reader.feed(self.client.call(*[b(a) for a in args]))
        return reader.gets()

    def local(self, *args) -> object:
        return self.store.execute([b(a) for a in args])

    def both(self, args) -> tuple[object, object]:
        args = [b(a) for a in args]
        local = self.store.execute(list(args))
        return self.redis(*args), local

    def check(self, step) -> object:
        if isinstance(step, Rnd):
            return self.check_random(step.args)
        if isinstance(step, Scan):
            return self.check_scan(step.args)
        args = list(step.args if isinstance(step, U | P) else step)
        expected, actual = self.both(args)
        name = b(args[0]).upper() if args else b""
        if isinstance(step, U | P) and isinstance(expected, list):
            assert isinstance(actual, list), (args, actual)
            if isinstance(step, U):
                assert _multiset(actual) == _multiset(expected), args
            else:
                assert _pairs(actual) == _pairs(expected), args
            return actual
        tol = TOLERANCE.get(name, 0)
        if (tol and type(expected) is int and type(actual) is int
                and expected >= 0 and actual >= 0):
            assert abs(expected - actual) <= tol, (args, expected, actual)
        else:
            assert norm(actual) == norm(expected), (args, expected, actual)
        return actual

    # ------------------------------------------------------------ random replies

    def _population(self, name: bytes, key: bytes | None):
        """The collection a random command draws from, read from Redis (the two sides
        hold equal states), as {element: value-or-None}; None for a wrong type."""
        if name == b"RANDOMKEY":
            return dict.fromkeys(self.redis("KEYS", "*"))
        kind = self.redis("TYPE", key)
        if name == b"HRANDFIELD":
            if kind not in (b"hash", b"none"):
                return None
            flat = self.redis("HGETALL", key)
            return dict(zip(flat[0::2], flat[1::2], strict=True))
        if name in (b"SRANDMEMBER", b"SPOP"):
            if kind not in (b"set", b"none"):
                return None
            return dict.fromkeys(self.redis("SMEMBERS", key))
        if kind not in (b"zset", b"none"):
            return None
        flat = self.redis("ZRANGE", key, 0, -1, "WITHSCORES")
        return dict(zip(flat[0::2], flat[1::2], strict=True))

    @staticmethod
    def _validate_random(args: list[bytes], reply, population: dict) -> None:
        name = args[0].upper()
        if len(args) == (1 if name == b"RANDOMKEY" else 2):
            if not population:
                assert reply is None, (args, reply)
            else:
                assert type(reply) is bytes and reply in population, (args, reply)
            return
        count = int(args[2])
        assert isinstance(reply, list), (args, reply)
        if len(args) == 4:  # WITHVALUES / WITHSCORES: flat pairs
            picks = reply[0::2]
            for element, value in zip(picks, reply[1::2], strict=True):
                assert population.get(element) == value, (args, element, value)
        else:
            picks = reply
        assert all(p in population for p in picks), (args, reply)
        if not population or count == 0:
            assert picks == [], (args, reply)
        elif count > 0:
            assert len(picks) == min(count, len(population)), (args, reply)
            assert len(set(picks)) == len(picks), (args, reply)
        else:
            assert len(picks) == -count, (args, reply)

    def check_random(self, raw_args) -> object:
        args = [b(a) for a in raw_args]
        name = args[0].upper()
        key = args[1] if len(args) > 1 else None
        population = self._population(name, key)
        expected, actual = self.both(args)
        if (isinstance(expected, hiredis.ReplyError) or isinstance(actual, hiredis.ReplyError)
                or population is None):
            assert norm(actual) == norm(expected), (args, expected, actual)
            return actual
        self._validate_random(args, expected, population)
        self._validate_random(args, actual, population)
        if name == b"SPOP":
            self._resync_set(key)
        return actual

    def _resync_set(self, key: bytes) -> None:
        """After SPOP the two sides popped different members: make the local set hold
        what Redis kept (in place, so its TTL and recency stay)."""
        kept = self.redis("SMEMBERS", key)
        value = self.store._data.get(key)
        if not kept:
            assert value is None
            return
        assert isinstance(value, set) and len(value) == len(kept)
        value.clear()
        value.update(kept)

    # ------------------------------------------------------------------- scans

    @staticmethod
    def _scan_all(call, args: list[bytes]):
        """Iterate a SCAN-family command to cursor 0; the union of what it returned,
        or the error of the first call."""
        pos = 2 if args[0].upper() in (b"HSCAN", b"SSCAN", b"ZSCAN") else 1
        found: list = []
        first = True
        for _ in range(100_000):
            reply = call(args)
            if isinstance(reply, hiredis.ReplyError):
                assert first, reply
                return reply
            first = False
            cursor, batch = reply
            assert type(cursor) is bytes and isinstance(batch, list)
            found += batch
            if cursor == b"0":
                break
            args = [*args[:pos], cursor, *args[pos + 1:]]
        else:
            raise AssertionError("scan never finished")
        if args[0].upper() in (b"HSCAN", b"ZSCAN"):
            return dict(zip(found[0::2], found[1::2], strict=True))
        return set(found)

    def check_scan(self, raw_args) -> object:
        args = [b(a) for a in raw_args]
        expected = self._scan_all(lambda a: self.redis(*a), args)
        actual = self._scan_all(lambda a: self.store.execute(list(a)), args)
        if isinstance(expected, hiredis.ReplyError) or isinstance(actual, hiredis.ReplyError):
            assert norm(actual) == norm(expected), (args, expected, actual)
        else:
            assert actual == expected, args
        return actual

    # ------------------------------------------------------------------ states

    def check_key_state(self, key: str) -> None:
        """The key's type, content and TTL agree on both sides."""
        kind = self.check(["TYPE", key])
        if kind == b"string":
            self.check(["GET", key])
        elif kind == b"hash":
            self.check(["HGETALL", key] if self.redis("HLEN", key) < 100
                       else P("HGETALL", key))
        elif kind == b"set":
            self.check(U("SMEMBERS", key))
        elif kind == b"list":
            self.check(["LRANGE", key, 0, -1])
        elif kind == b"zset":
            self.check(["ZRANGE", key, 0, -1, "WITHSCORES"])
        self.check(["PTTL", key])


@pytest.fixture(scope="module")
def raw(redis_server):
    with RawClient(redis_server.port) as client:
        yield client


@pytest.fixture
def pair(raw) -> Pair:
    raw.call("FLUSHALL")
    return Pair(raw, LocalStore())


def _ids(cases):
    return list(cases.keys())


# --------------------------------------------------------------------------- tables
# Each case is a sequence of steps; every step's reply is compared.

BIG = 200  # beyond Redis's listpack limits (128 entries), so its other encodings are hit
BIG_HASH = ["HSET", "bh", *[x for i in range(BIG) for x in (f"f{i}", f"v{i}")]]
BIG_SET = ["SADD", "bs", *[f"m{i}" for i in range(BIG)]]
BIG_INTSET = ["SADD", "bi", *[str(i * 7 - 300) for i in range(BIG)]]
BIG_LIST = ["RPUSH", "bl", *[f"e{i % 17}" for i in range(BIG)]]
BIG_ZSET = ["ZADD", "bz", *[x for i in range(BIG) for x in (str((i * 37) % 101 / 4), f"m{i}")]]
LEX_ZSET = ["ZADD", "lz", *[x for w in ("a", "ab", "abc", "b", "ba", "c", "d", "\xff", "",
                                         "a\x00", "B", "zz") for x in ("0", w)]]
BIG_LEX_ZSET = ["ZADD", "blz", *[x for i in range(BIG) for x in ("0", f"w{i:03d}")]]

COUNTER_CASES: dict[str, list] = {
    "incr_missing_and_existing": [["INCR", "a"], ["INCR", "a"], ["GET", "a"], ["DECR", "a"],
                                  ["DECR", "b"], ["GET", "b"]],
    "incrby_decrby": [["INCRBY", "a", 10], ["INCRBY", "a", -25], ["DECRBY", "a", 5],
                      ["DECRBY", "a", -7], ["GET", "a"], ["INCRBY", "a", 0]],
    "incr_bad_increment_before_type_check": [["HSET", "h", "f", "v"], ["INCRBY", "h", "abc"],
                                             ["INCRBY", "h", 1], ["DECRBY", "h", "x"],
                                             ["INCR", "h"], ["DECR", "h"]],
    "incr_non_integer_values": [["SET", "a", "abc"], ["INCR", "a"], ["SET", "a", "1.5"],
                                ["INCR", "a"], ["SET", "a", " 1"], ["INCR", "a"],
                                ["SET", "a", "01"], ["INCR", "a"], ["SET", "a", "+1"],
                                ["INCR", "a"], ["SET", "a", "-0"], ["INCR", "a"],
                                ["SET", "a", ""], ["INCR", "a"], ["SET", "a", b"1\x00"],
                                ["INCR", "a"], ["SET", "a", "99999999999999999999"],
                                ["INCR", "a"], ["GET", "a"]],
    "incr_bad_increments": [["INCRBY", "a", "1.0"], ["INCRBY", "a", " 1"], ["INCRBY", "a", ""],
                            ["INCRBY", "a", "9223372036854775808"], ["DECRBY", "a", "0x1"],
                            ["EXISTS", "a"]],
    "incr_overflow": [["SET", "a", LLONG_MAX], ["INCR", "a"], ["INCRBY", "a", 1],
                      ["INCRBY", "a", -1], ["SET", "a", LLONG_MIN], ["DECR", "a"],
                      ["DECRBY", "a", 1], ["INCRBY", "a", LLONG_MAX], ["GET", "a"],
                      ["DECRBY", "a", LLONG_MIN], ["SET", "a", 0],
                      ["DECRBY", "a", LLONG_MIN], ["DECRBY", "a", -LLONG_MAX],
                      ["INCRBY", "a", LLONG_MIN], ["DECR", "a"], ["GET", "a"]],
    "incr_keeps_ttl": [["SET", "a", 5, "EX", 1000], ["INCR", "a"], ["TTL", "a"],
                       ["INCRBYFLOAT", "a", "1.5"], ["TTL", "a"], ["APPEND", "a", "0"],
                       ["TTL", "a"], ["SETRANGE", "a", 0, "9"], ["PTTL", "a"], ["GET", "a"]],
    "incrbyfloat_basics": [["INCRBYFLOAT", "a", "10.5"], ["INCRBYFLOAT", "a", "0.1"],
                           ["INCRBYFLOAT", "a", "-5"], ["INCRBYFLOAT", "a", "5.0e3"],
                           ["INCRBYFLOAT", "a", "-5e3"], ["GET", "a"],
                           ["SET", "b", "0.1"], ["INCRBYFLOAT", "b", "0.2"],
                           ["INCRBYFLOAT", "b", "1e-20"], ["SET", "c", 1],
                           ["INCRBYFLOAT", "c", "-1.5"], ["INCRBYFLOAT", "c", "0.5"],
                           ["INCRBYFLOAT", "c", "-0"]],
    "incrbyfloat_long_double_precision": [
        ["SET", "a", 1], ["INCRBYFLOAT", "a", "1e17"], ["INCRBYFLOAT", "a", "1"],
        ["INCRBYFLOAT", "a", ".5"], ["INCRBYFLOAT", "a", "-.5e1"],
        ["SET", "b", LLONG_MAX], ["INCRBYFLOAT", "b", 1], ["INCRBYFLOAT", "b", "1e20"],
        ["SET", "c", "3.0000000000000000001"], ["INCRBYFLOAT", "c", 0],
        ["SET", "d", "0.000003814697265625"], ["INCRBYFLOAT", "d", 0],   # tie -> even
        ["SET", "d", "0.000011444091796875"], ["INCRBYFLOAT", "d", 0],   # tie -> even
        ["SET", "e", "-0.000000000000000001"], ["INCRBYFLOAT", "e", 0],  # "-0" -> "0"
        ["SET", "f", "1e-4940"], ["INCRBYFLOAT", "f", 0],               # subnormal
        ["SET", "g", "123456789.123456789123"], ["INCRBYFLOAT", "g", "0.000000001"]],
    "incrbyfloat_syntax": [["SET", "a", 1]] + [["INCRBYFLOAT", "a", x] for x in (
        "0x10", "0X1.8p1", "0x.8", "0x1p", "0x", "1e", "1e+", ".", "-.e1", "1.", ".5", "+2",
        " 1", "1 ", "", "abc", "nan", "NaN(123)", "-nan", "inf", "-Infinity", "InF",
        "1e400", "1e5000", "-1e5000", "1e-4952", "1e-5000", "0e-99999", "0e99999",
        "1" * 5119, "1" * 5120, "0." + "0" * 5000 + "1", b"2\x00junk", b"\x00", "1_000",
        "\u0661".encode(), "1e0000000000000000000000001", "0x1p99999", "0x1p-99999")
    ] + [["GET", "a"]],
    "incrbyfloat_stored_values": [["SET", "a", x] if i % 2 == 0 else ["INCRBYFLOAT", "a", "1"]
                                  for x in ("1e400", " 1", "1 ", "inf", "-inf", "0x1p3",
                                            b"5\x00z", "1e4000", "abc", "")
                                  for i in range(2)],
    "incrbyfloat_overflow": [["SET", "a", "1e4932"], ["INCRBYFLOAT", "a", "1e4932"],
                             ["INCRBYFLOAT", "a", "-1e4932"], ["GET", "a"],
                             ["INCRBYFLOAT", "a", "inf"], ["INCRBYFLOAT", "a", "-inf"]],
    "incrbyfloat_wrongtype": [["LPUSH", "l", "1"], ["INCRBYFLOAT", "l", "1"],
                              ["INCRBYFLOAT", "l", "abc"]],
    "append": [["APPEND", "a", "x"], ["APPEND", "a", "yz"], ["GET", "a"], ["APPEND", "a", ""],
               ["APPEND", "b", ""], ["EXISTS", "b"], ["TYPE", "b"], ["SET", "c", 12],
               ["APPEND", "c", 3], ["INCR", "c"], ["APPEND", "c", b"\x00\xff"],
               ["STRLEN", "c"], ["GET", "c"]],
    "setrange": [["SETRANGE", "a", 0, "hello"], ["SETRANGE", "a", 1, "EL"], ["GET", "a"],
                 ["SETRANGE", "a", 8, "x"], ["GET", "a"], ["SETRANGE", "a", 2, ""],
                 ["SETRANGE", "b", 3, ""], ["EXISTS", "b"], ["SETRANGE", "b", 3, "z"],
                 ["GET", "b"], ["SETRANGE", "a", 0, "0123456789ABC"], ["GET", "a"],
                 ["SETRANGE", "a", -1, "x"], ["SETRANGE", "a", "x", "x"],
                 ["SETRANGE", "a", "1.0", ""]],
    "setrange_size_limit": [["SETRANGE", "a", 536870912, "x"],
                            ["SETRANGE", "a", 536870911, "xy"],
                            ["SETRANGE", "a", 536870912, ""], ["SETRANGE", "a", LLONG_MAX, "x"],
                            ["EXISTS", "a"], ["SET", "a", "abc"],
                            ["SETRANGE", "a", 536870911, "xy"],
                            ["SETRANGE", "a", 536870912, ""], ["GET", "a"]],
    "getrange": [["SET", "a", "0123456789"]] + [["GETRANGE", "a", s, e] for s, e in (
        (0, -1), (0, 0), (2, 5), (-3, -1), (-1, -3), (5, 3), (0, 100), (-100, 2),
        (-100, -200), (100, 200), (9, 9), (10, 10), (-10, -10), (-11, -11),
        (LLONG_MIN, LLONG_MAX), (LLONG_MAX, LLONG_MIN), ("a", 1), (1, "b"))
    ] + [["GETRANGE", "missing", 0, -1], ["GETRANGE", "missing", "x", 1],
         ["SUBSTR", "a", 1, 3], ["SET", "e", ""], ["GETRANGE", "e", 0, -1],
         ["GETRANGE", "e", -1, 0], ["SET", "n", 12345], ["GETRANGE", "n", 1, -2]],
    "string_commands_on_other_types": [
        ["HSET", "h", "f", "v"], ["APPEND", "h", "x"], ["SETRANGE", "h", 0, "x"],
        ["SETRANGE", "h", 0, ""], ["SETRANGE", "h", -1, "x"], ["GETRANGE", "h", 0, -1],
        ["GETRANGE", "h", "a", 0], ["INCR", "h"], ["DECR", "h"], ["INCRBYFLOAT", "h", 1]],
}

KEY_CASES: dict[str, list] = {
    "rename_basics": [["SET", "a", "1"], ["RENAME", "a", "b"], ["EXISTS", "a"], ["GET", "b"],
                      ["RENAME", "a", "b"], ["RENAME", "b", "b"], ["RENAME", "x", "x"],
                      ["RENAMENX", "b", "b"], ["RENAMENX", "x", "x"], ["GET", "b"]],
    "rename_overwrites_any_type": [["SET", "a", "1"], ["RPUSH", "l", "x"], ["RENAME", "a", "l"],
                                   ["TYPE", "l"], ["GET", "l"], ["ZADD", "z", 1, "m"],
                                   ["RENAME", "z", "l"], ["TYPE", "l"],
                                   ["ZRANGE", "l", 0, -1, "WITHSCORES"]],
    "renamenx": [["SET", "a", "1"], ["SET", "b", "2"], ["RENAMENX", "a", "b"], ["GET", "b"],
                 ["RENAMENX", "a", "c"], ["EXISTS", "a"], ["GET", "c"],
                 ["RENAMENX", "missing", "c"]],
    "rename_moves_ttl": [["SET", "a", "1", "EX", 1000], ["SET", "b", "2", "EX", 5000],
                         ["RENAME", "a", "b"], ["TTL", "b"], ["SET", "c", "3"],
                         ["RENAME", "c", "b"], ["TTL", "b"], ["HSET", "h", "f", "v"],
                         ["EXPIRE", "h", 300], ["RENAMENX", "h", "h2"], ["TTL", "h2"],
                         ["HGETALL", "h2"]],
    "copy_basics": [["SET", "a", "1"], ["COPY", "a", "b"], ["GET", "b"], ["COPY", "a", "b"],
                    ["SET", "a", "2"], ["COPY", "a", "b", "REPLACE"], ["GET", "b"],
                    ["COPY", "missing", "b"], ["COPY", "missing", "b", "REPLACE"],
                    ["GET", "b"], ["COPY", "a", "a"], ["COPY", "missing", "missing"],
                    ["COPY", "a", "a", "REPLACE"]],
    "copy_options": [["SET", "a", "1"], ["COPY", "a", "b", "DB", 0], ["COPY", "a", "b", "db", 0,
                                                                     "replace"],
                     ["COPY", "a", "c", "REPLACE", "REPLACE"], ["COPY", "a", "b", "DB"],
                     ["COPY", "a", "b", "DB", "x"], ["COPY", "a", "b", "DB", "2147483648"],
                     ["COPY", "a", "b", "FOO"], ["COPY", "a", "b", "REPLACE", "FOO"],
                     ["COPY", "a", "a", "DB", "0"], ["COPY", "a", "a", "FOO"],
                     ["COPY", "a", "b", b"replace\x00x"]],
    "copy_is_deep_and_keeps_ttl": [
        ["HSET", "h", "f", "v"], ["EXPIRE", "h", 1000], ["COPY", "h", "h2"], ["TTL", "h2"],
        ["HSET", "h2", "g", "w"], ["HGETALL", "h"], ["HGETALL", "h2"],
        ["SADD", "s", "a"], ["COPY", "s", "s2"], ["SADD", "s2", "b"], ["SCARD", "s"],
        ["RPUSH", "l", "a"], ["COPY", "l", "l2"], ["RPUSH", "l2", "b"], ["LRANGE", "l", 0, -1],
        ["ZADD", "z", 1, "a"], ["COPY", "z", "z2"], ["ZADD", "z2", 2, "b"],
        ["ZRANGE", "z", 0, -1, "WITHSCORES"], ["ZRANGE", "z2", 0, -1, "WITHSCORES"],
        ["SET", "x", "v", "EX", 100], ["COPY", "h", "x", "REPLACE"], ["TTL", "x"],
        ["PERSIST", "h"], ["COPY", "h", "x", "REPLACE"], ["TTL", "x"], ["TYPE", "x"]],
    "type_of_every_kind": [["SET", "a", "1"], ["HSET", "h", "f", "v"], ["SADD", "s", "m"],
                           ["RPUSH", "l", "e"], ["ZADD", "z", 1, "m"]] +
                          [["TYPE", k] for k in ("a", "h", "s", "l", "z", "none")] +
                          [["EXISTS", "a", "h", "s", "l", "z", "none"], ["DBSIZE"],
                           ["DEL", "h", "s", "l", "z"], ["DBSIZE"]],
    "empty_aggregates_are_deleted": [
        ["HSET", "h", "f", "v"], ["HDEL", "h", "f"], ["EXISTS", "h"], ["TYPE", "h"],
        ["SADD", "s", "m"], ["SREM", "s", "m"], ["EXISTS", "s"], ["SADD", "s", "m"],
        ["SPOP", "s"], ["EXISTS", "s"], ["SADD", "s", "m"], ["SMOVE", "s", "t", "m"],
        ["EXISTS", "s"], ["RPUSH", "l", "e"], ["LPOP", "l"], ["EXISTS", "l"],
        ["RPUSH", "l", "e", "f"], ["RPOP", "l", 5], ["EXISTS", "l"], ["RPUSH", "l", "e"],
        ["LREM", "l", 0, "e"], ["EXISTS", "l"], ["RPUSH", "l", "e"], ["LTRIM", "l", 1, 0],
        ["EXISTS", "l"], ["RPUSH", "l", "e"], ["LMOVE", "l", "l2", "LEFT", "LEFT"],
        ["EXISTS", "l"], ["ZADD", "z", 1, "m"], ["ZREM", "z", "m"], ["EXISTS", "z"],
        ["ZADD", "z", 1, "m"], ["ZPOPMIN", "z"], ["EXISTS", "z"], ["ZADD", "z", 1, "m"],
        ["ZREMRANGEBYSCORE", "z", "-inf", "+inf"], ["EXISTS", "z"], ["ZADD", "z", 1, "m"],
        ["ZREMRANGEBYRANK", "z", 0, -1], ["EXISTS", "z"], ["ZADD", "z", 0, "m"],
        ["ZREMRANGEBYLEX", "z", "-", "+"], ["EXISTS", "z"], ["DBSIZE"]],
    "keys_patterns": [["MSET", "a", 1, "ab", 1, "abc", 1, "b", 1, "", 1, "a*", 1, "a?", 1,
                       "[a]", 1, "a\\b", 1, "\xff", 1, "a\x00b", 1, "h-x", 1, "]", 1]] +
                     [U("KEYS", p) for p in (
                         "*", "**", "", "a", "a*", "*b", "a?", "?", "??", "[ab]", "[^a]*",
                         "[a-b]*", "[b-a]", "a[]]", "[]", "[^]", "[", "[a", "[^", "a\\*",
                         "a\\?", "\\[a\\]", "[\\]]", "a\\\\b", "a\\", "\\", "*\\", "[a-]",
                         "[a-]]", "a[\\", "[\x00-\xff]", "[\xff-a]", "\xff", "?\x00?",
                         "*a*b*", "*[", "a**", "[a-c]?c", "[^-]", "[--/]", "h[\\-]x",
                         "h[a-\\-]x", "h[!-]x", "[[]a]", "*a\x00*")],
    "keys_skips_expired_and_other_types": [["SET", "a", 1, "PXAT", 1], ["HSET", "ah", "f", "v"],
                                           ["SADD", "as", "m"], ["PEXPIREAT", "as", 1],
                                           ["RPUSH", "al", "e"], U("KEYS", "a*"),
                                           ["EXISTS", "a", "as"], ["DBSIZE"]],
    "randomkey": [["RANDOMKEY"], ["SET", "a", 1], ["RANDOMKEY"], ["HSET", "b", "f", "v"],
                  Rnd("RANDOMKEY"), Rnd("RANDOMKEY"), ["DEL", "a", "b"], ["RANDOMKEY"]],
    "scan_basics": [["MSET", *[x for i in range(50) for x in (f"k{i}", i)]],
                    ["HSET", "h1", "f", "v"], ["SADD", "s1", "m"], ["RPUSH", "l1", "e"],
                    ["ZADD", "z1", 1, "m"],
                    Scan("SCAN", 0), Scan("SCAN", 0, "COUNT", 1), Scan("SCAN", 0, "COUNT", 1000),
                    Scan("SCAN", 0, "MATCH", "k1*"), Scan("SCAN", 0, "MATCH", "*1", "COUNT", 3),
                    Scan("SCAN", 0, "TYPE", "hash"), Scan("SCAN", 0, "TYPE", "STRING"),
                    Scan("SCAN", 0, "TYPE", "zset", "MATCH", "z*"), Scan("SCAN", 0, "TYPE", "x"),
                    Scan("SCAN", 0, "type", "list", "count", 2), Scan("SCAN", 0, "MATCH", "*"),
                    Scan("SCAN", 0, "MATCH", "nomatch"), Scan("SCAN", "", "COUNT", 7),
                    Scan("SCAN", "+0"), Scan("SCAN", 0, "TYPE", b"set\x00x")],
    "scan_errors": [["SCAN", "abc"], ["SCAN", " 1"], ["SCAN", "1 "], ["SCAN", "+"],
                    ["SCAN", "-"], ["SCAN", "18446744073709551616"],
                    ["SCAN", "-18446744073709551616"], ["SCAN", "1.5"],
                    ["SCAN", 0, "COUNT", 0], ["SCAN", 0, "COUNT", -1], ["SCAN", 0, "COUNT", "x"],
                    ["SCAN", 0, "COUNT"], ["SCAN", 0, "MATCH"], ["SCAN", 0, "TYPE"],
                    ["SCAN", 0, "FOO", "x"], ["SCAN", 0, "COUNT", 1, "MATCH"],
                    ["SCAN", "abc", "COUNT", 0], ["SCAN", 0, "COUNT", "9223372036854775808"]],
    "key_commands_errors": [["RENAME", "a"], ["COPY", "a"], ["KEYS"], ["KEYS", "a", "b"],
                            ["RANDOMKEY", "x"], ["SCAN"]],
}

HASH_CASES: dict[str, list] = {
    "hset_hget": [["HSET", "h", "f1", "v1"], ["HSET", "h", "f1", "v2", "f2", "v2"],
                  ["HSET", "h", "f3", "a", "f3", "b"], ["HGET", "h", "f1"], ["HGET", "h", "f3"],
                  ["HGET", "h", "nope"], ["HGET", "nope", "f"], ["HGETALL", "h"],
                  ["HKEYS", "h"], ["HVALS", "h"], ["HLEN", "h"], ["HLEN", "nope"],
                  ["HSET", "h", "f1"], ["HSET", "h", "f1", "v", "f2"], ["HGETALL", "nope"],
                  ["HKEYS", "nope"], ["HVALS", "nope"]],
    "hash_order_is_insertion_order": [["HSET", "h", "z", 1, "a", 2, "m", 3], ["HDEL", "h", "a"],
                                      ["HSET", "h", "a", 4, "z", 5], ["HGETALL", "h"],
                                      ["HKEYS", "h"], ["HVALS", "h"], ["HSCAN", "h", 0]],
    "hmset": [["HMSET", "h", "a", 1, "b", 2], ["HMSET", "h", "a", 3], ["HGETALL", "h"],
              ["HMSET", "h", "a"], ["hmset", "h", "a", 1, "b"], ["HMGET", "h", "a", "x", "b"],
              ["HMGET", "nope", "a", "b"]],
    "hsetnx": [["HSETNX", "h", "f", "v"], ["HSETNX", "h", "f", "w"], ["HGET", "h", "f"],
               ["HSETNX", "h", "g", "w"], ["HGETALL", "h"]],
    "hdel_hexists_hstrlen": [["HSET", "h", "a", "1", "b", "22", "c", ""],
                             ["HDEL", "h", "a", "a", "x"], ["HEXISTS", "h", "a"],
                             ["HEXISTS", "h", "b"], ["HEXISTS", "nope", "b"],
                             ["HSTRLEN", "h", "b"], ["HSTRLEN", "h", "c"],
                             ["HSTRLEN", "h", "x"], ["HSTRLEN", "nope", "x"],
                             ["HDEL", "nope", "a"], ["HDEL", "h", "b", "c"], ["EXISTS", "h"]],
    "hincrby": [["HINCRBY", "h", "n", 5], ["HINCRBY", "h", "n", -7], ["HGET", "h", "n"],
                ["HSET", "h", "s", "abc", "f", "1.5", "z", "01", "big", LLONG_MAX,
                 "small", LLONG_MIN],
                ["HINCRBY", "h", "s", 1], ["HINCRBY", "h", "f", 1], ["HINCRBY", "h", "z", 1],
                ["HINCRBY", "h", "big", 1], ["HINCRBY", "h", "big", -1],
                ["HINCRBY", "h", "small", -1], ["HINCRBY", "h", "small", LLONG_MAX],
                ["HINCRBY", "h", "n", "x"], ["HINCRBY", "h", "n", "1.0"],
                ["HINCRBY", "h", "n", LLONG_MIN], ["HGETALL", "h"],
                ["SET", "str", "x"], ["HINCRBY", "str", "n", "x"], ["HINCRBY", "str", "n", 1]],
    "hincrbyfloat": [["HINCRBYFLOAT", "h", "f", "10.5"], ["HINCRBYFLOAT", "h", "f", "0.1"],
                     ["HINCRBYFLOAT", "h", "f", "-10.6"], ["HSET", "h", "s", "x", "i", "inf",
                                                           "big", LLONG_MAX],
                     ["HINCRBYFLOAT", "h", "s", 1], ["HINCRBYFLOAT", "h", "i", 1],
                     ["HINCRBYFLOAT", "h", "big", 1], ["HINCRBYFLOAT", "h", "f", "inf"],
                     ["HINCRBYFLOAT", "h", "f", "-infinity"], ["HINCRBYFLOAT", "h", "f", "nan"],
                     ["HINCRBYFLOAT", "h", "f", "x"], ["HINCRBYFLOAT", "h", "f", "1e5000"],
                     ["HINCRBYFLOAT", "h", "f", "0x1p4"], ["HSET", "h", "m", "1e4932"],
                     ["HINCRBYFLOAT", "h", "m", "1e4932"], ["HGETALL", "h"],
                     ["SET", "str", "x"], ["HINCRBYFLOAT", "str", "f", "x"],
                     ["HINCRBYFLOAT", "str", "f", "inf"], ["HINCRBYFLOAT", "str", "f", 1]],
    "hrandfield": [["HRANDFIELD", "nope"], ["HRANDFIELD", "nope", 3],
                   ["HRANDFIELD", "nope", -3, "WITHVALUES"], ["HSET", "h", "a", 1, "b", 2, "c", 3],
                   Rnd("HRANDFIELD", "h"), Rnd("HRANDFIELD", "h", 1), Rnd("HRANDFIELD", "h", 2),
                   Rnd("HRANDFIELD", "h", 3), Rnd("HRANDFIELD", "h", 10),
                   Rnd("HRANDFIELD", "h", -1), Rnd("HRANDFIELD", "h", -10),
                   Rnd("HRANDFIELD", "h", 2, "WITHVALUES"),
                   Rnd("HRANDFIELD", "h", -5, "withvalues"),
                   Rnd("HRANDFIELD", "h", 5, "WITHVALUES"), ["HRANDFIELD", "h", 0],
                   ["HRANDFIELD", "h", 0, "WITHVALUES"], ["HRANDFIELD", "h", "x"],
                   ["HRANDFIELD", "h", 1, "WITHSCORES"], ["HRANDFIELD", "h", 1, "WITHVALUES", "x"],
                   ["HRANDFIELD", "h", LLONG_MIN], ["HRANDFIELD", "h", "4611686018427387904",
                                                    "WITHVALUES"],
                   ["HRANDFIELD", "h", "-4611686018427387904", "WITHVALUES"],
                   ["HRANDFIELD", "nope", "4611686018427387904", "WITHVALUES"],
                   ["HRANDFIELD", "nope", "x", "WITHVALUES"], ["HRANDFIELD", "nope", 1, "FOO"]],
    "hscan": [["HSET", "h", "a1", 1, "a2", 2, "b1", 3], Scan("HSCAN", "h", 0),
              Scan("HSCAN", "h", 0, "MATCH", "a*"), Scan("HSCAN", "h", 0, "COUNT", 1),
              Scan("HSCAN", "nope", 0), ["HSCAN", "nope", 0, "COUNT", 0],
              ["HSCAN", "nope", "x"], ["HSCAN", "h", "x"], ["HSCAN", "h", 0, "COUNT", 0],
              ["HSCAN", "h", 0, "TYPE", "string"], ["HSCAN", "h", 0, "MATCH"],
              ["HSCAN", "h", 0, "NOPE", 1], ["HSCAN", "h", 0], ["HSCAN", "h", 0, "MATCH", "b?"]],
    "big_hash": [BIG_HASH, ["HLEN", "bh"], P("HGETALL", "bh"), U("HKEYS", "bh"),
                 U("HVALS", "bh"), ["HGET", "bh", "f150"], ["HDEL", "bh", "f0", "f199"],
                 ["HMGET", "bh", "f0", "f1", "f198"], Scan("HSCAN", "bh", 0),
                 Scan("HSCAN", "bh", 0, "MATCH", "f1?", "COUNT", 5),
                 Rnd("HRANDFIELD", "bh", 20, "WITHVALUES"), Rnd("HRANDFIELD", "bh", -300),
                 Rnd("HRANDFIELD", "bh", 500), ["HSET", "bh", "long", "x" * 100],
                 ["HSTRLEN", "bh", "long"]],
}

SET_CASES: dict[str, list] = {
    "sadd_srem": [["SADD", "s", "a", "b", "a"], ["SADD", "s", "b", "c"], U("SMEMBERS", "s"),
                  ["SCARD", "s"], ["SREM", "s", "a", "x", "a"], ["SISMEMBER", "s", "a"],
                  ["SISMEMBER", "s", "b"], ["SISMEMBER", "nope", "b"],
                  ["SMISMEMBER", "s", "a", "b", "c", "b"], ["SMISMEMBER", "nope", "a", "b"],
                  ["SCARD", "nope"], ["SMEMBERS", "nope"], ["SREM", "nope", "a"],
                  ["SADD", "s", ""], ["SISMEMBER", "s", ""]],
    "integer_sets": [["SADD", "i", 3, 1, 2, -5, "10"], U("SMEMBERS", "i"), ["SCARD", "i"],
                     ["SADD", "i", "x"], U("SMEMBERS", "i"), ["SISMEMBER", "i", "01"],
                     ["SISMEMBER", "i", "1"]],
    "set_algebra": [["SADD", "a", 1, 2, 3, "x"], ["SADD", "b", 2, 3, 4], ["SADD", "c", 3, 9],
                    U("SINTER", "a", "b"), U("SINTER", "a", "b", "c"), U("SINTER", "a"),
                    U("SINTER", "a", "nope"), U("SUNION", "a", "b", "c"), U("SUNION", "nope"),
                    U("SUNION", "a", "nope"), U("SDIFF", "a", "b"), U("SDIFF", "a", "b", "c"),
                    U("SDIFF", "nope", "a"), U("SDIFF", "a", "nope"), U("SDIFF", "a", "a")],
    "set_algebra_store": [["SADD", "a", 1, 2, 3], ["SADD", "b", 2, 3, 4],
                          ["SINTERSTORE", "d", "a", "b"], U("SMEMBERS", "d"),
                          ["SUNIONSTORE", "d", "a", "b"], ["SCARD", "d"],
                          ["SDIFFSTORE", "d", "a", "b"], U("SMEMBERS", "d"),
                          ["SET", "str", "x"], ["EXPIRE", "str", 100],
                          ["SINTERSTORE", "str", "a", "b"], ["TYPE", "str"], ["TTL", "str"],
                          ["SINTERSTORE", "d", "a", "nope"], ["EXISTS", "d"],
                          ["SUNIONSTORE", "d", "nope"], ["SDIFFSTORE", "d", "a", "a"],
                          ["SDIFFSTORE", "a", "a", "b"], U("SMEMBERS", "a"),
                          ["SUNIONSTORE", "b", "b", "a"], U("SMEMBERS", "b"),
                          ["SINTERSTORE", "b", "b"], ["SCARD", "b"]],
    "set_algebra_wrongtype": [["SADD", "a", 1], ["SET", "str", "x"], ["SINTER", "a", "str"],
                              ["SINTER", "nope", "str"], ["SINTER", "str", "nope"],
                              ["SUNION", "a", "str"], ["SDIFF", "nope", "str"],
                              ["SDIFF", "a", "str"], ["SINTERSTORE", "d", "nope", "str"],
                              ["SUNIONSTORE", "d", "str"], ["SDIFFSTORE", "d", "str", "a"],
                              ["SINTERCARD", 2, "nope", "str"], ["EXISTS", "d"]],
    "sintercard": [["SADD", "a", 1, 2, 3, 4], ["SADD", "b", 2, 3, 4, 5],
                   ["SINTERCARD", 1, "a"], ["SINTERCARD", 2, "a", "b"],
                   ["SINTERCARD", 2, "a", "b", "LIMIT", 0], ["SINTERCARD", 2, "a", "b", "LIMIT", 2],
                   ["SINTERCARD", 2, "a", "b", "limit", 10], ["SINTERCARD", 2, "a", "nope"],
                   ["SINTERCARD", 1, "a", "b"], ["SINTERCARD", 0, "a"], ["SINTERCARD", -1, "a"],
                   ["SINTERCARD", "x", "a"], ["SINTERCARD", 3, "a", "b"],
                   ["SINTERCARD", 2, "a", "b", "LIMIT"], ["SINTERCARD", 2, "a", "b", "LIMIT", -1],
                   ["SINTERCARD", 2, "a", "b", "LIMIT", "x"],
                   ["SINTERCARD", 2, "a", "b", "LIMIT", 1, "LIMIT", 3],
                   ["SINTERCARD", 1, "a", "FOO", 1], ["SINTERCARD", "9223372036854775808", "a"]],
    "smove": [["SADD", "a", 1, 2], ["SADD", "b", 3], ["SMOVE", "a", "b", 1], U("SMEMBERS", "b"),
              ["SMOVE", "a", "b", 9], ["SMOVE", "a", "a", 2], ["SMOVE", "a", "a", 9],
              ["SMOVE", "a", "c", 2], ["EXISTS", "a"], U("SMEMBERS", "c"),
              ["SMOVE", "nope", "c", 1], ["SMOVE", "b", "c", 3], ["SMOVE", "c", "b", 3],
              ["SET", "str", "x"], ["SMOVE", "str", "b", 1], ["SMOVE", "b", "str", 1],
              ["SMOVE", "b", "str", 99], ["SMOVE", "nope", "str", 1], ["SCARD", "b"]],
    "spop_and_srandmember": [["SPOP", "nope"], ["SPOP", "nope", 0], ["SPOP", "nope", 3],
                             ["SRANDMEMBER", "nope"], ["SRANDMEMBER", "nope", 3],
                             ["SRANDMEMBER", "nope", -3], ["SADD", "s", *"abcdefgh"],
                             Rnd("SRANDMEMBER", "s"), Rnd("SRANDMEMBER", "s", 3),
                             Rnd("SRANDMEMBER", "s", 8), Rnd("SRANDMEMBER", "s", 20),
                             Rnd("SRANDMEMBER", "s", -20), Rnd("SRANDMEMBER", "s", 1),
                             Rnd("SRANDMEMBER", "s", -1), ["SRANDMEMBER", "s", 0],
                             Rnd("SPOP", "s"), Rnd("SPOP", "s", 2), ["SPOP", "s", 0],
                             ["SCARD", "s"], U("SPOP", "s", 100), ["EXISTS", "s"],
                             ["SADD", "s", "a"], Rnd("SPOP", "s", 1), ["EXISTS", "s"]],
    "spop_srandmember_errors": [["SADD", "s", "a"], ["SPOP", "s", -1], ["SPOP", "s", "x"],
                                ["SPOP", "s", 1, 2], ["SPOP", "nope", -1],
                                ["SRANDMEMBER", "s", "x"], ["SRANDMEMBER", "s", LLONG_MIN],
                                ["SRANDMEMBER", "s", 1, 2], ["SRANDMEMBER", "nope", "x"],
                                ["SET", "str", "x"], ["SPOP", "str"], ["SPOP", "str", 1],
                                ["SPOP", "str", -1], ["SRANDMEMBER", "str"],
                                ["SRANDMEMBER", "str", 2], ["SRANDMEMBER", "str", "x"]],
    "sscan": [["SADD", "s", "a1", "a2", "b1"], Scan("SSCAN", "s", 0),
              Scan("SSCAN", "s", 0, "MATCH", "a*"), Scan("SSCAN", "s", 0, "COUNT", 1),
              Scan("SSCAN", "nope", 0), ["SSCAN", "s", "x"], ["SSCAN", "s", 0, "COUNT", 0],
              ["SSCAN", "s", 0, "TYPE", "set"], ["SADD", "i", 1, 2, 3], Scan("SSCAN", "i", 0)],
    "big_sets": [BIG_SET, BIG_INTSET, ["SCARD", "bs"], U("SMEMBERS", "bs"), U("SMEMBERS", "bi"),
                 Scan("SSCAN", "bs", 0), Scan("SSCAN", "bs", 0, "MATCH", "m1*", "COUNT", 3),
                 Scan("SSCAN", "bi", 0, "COUNT", 5), ["SADD", "small", "m5", "m7", "-293"],
                 U("SINTER", "bs", "small"), ["SINTERCARD", 2, "bs", "bi"],
                 ["SDIFFSTORE", "d", "bs", "small"], ["SCARD", "d"],
                 Rnd("SRANDMEMBER", "bs", 50), Rnd("SRANDMEMBER", "bs", -500),
                 Rnd("SPOP", "bs", 30), ["SCARD", "bs"]],
}

LIST_CASES: dict[str, list] = {
    "push_pop": [["LPUSH", "l", "a", "b", "c"], ["RPUSH", "l", "d", "e"], ["LRANGE", "l", 0, -1],
                 ["LPOP", "l"], ["RPOP", "l"], ["LPOP", "l", 2], ["RPOP", "l", 0],
                 ["LLEN", "l"], ["LPOP", "l", 5], ["EXISTS", "l"], ["LPOP", "l"],
                 ["LPOP", "l", 0], ["LPOP", "l", 1], ["RPOP", "nope", 3], ["LLEN", "nope"]],
    "pop_errors": [["RPUSH", "l", "a"], ["LPOP", "l", -1], ["LPOP", "l", "x"],
                   ["RPOP", "l", "1.0"], ["LPOP", "l", 1, 2], ["LPOP", "nope", -1],
                   ["RPOP", "nope", "x"], ["LRANGE", "l", 0, -1]],
    "pushx": [["LPUSHX", "l", "a"], ["RPUSHX", "l", "a"], ["EXISTS", "l"], ["RPUSH", "l", "x"],
              ["LPUSHX", "l", "a", "b"], ["RPUSHX", "l", "c", "d"], ["LRANGE", "l", 0, -1],
              ["SET", "str", "v"], ["LPUSHX", "str", "a"], ["RPUSHX", "str", "a"],
              ["LPUSH", "str", "a"]],
    "lrange": [["RPUSH", "l", *"abcdefghij"]] + [["LRANGE", "l", s, e] for s, e in (
        (0, -1), (0, 0), (2, 5), (-3, -1), (-1, -3), (5, 3), (0, 100), (-100, 2),
        (-100, -200), (100, 200), (9, 9), (10, 10), (-10, -10), (-11, -11), (7, -2),
        (LLONG_MIN, LLONG_MAX), ("a", 1), (1, "b"))
    ] + [["LRANGE", "nope", 0, -1], ["LRANGE", "nope", "x", 0]],
    "lindex_lset": [["RPUSH", "l", "a", "b", "c"], ["LINDEX", "l", 0], ["LINDEX", "l", -1],
                    ["LINDEX", "l", 3], ["LINDEX", "l", -4], ["LINDEX", "l", "x"],
                    ["LINDEX", "nope", "x"], ["LINDEX", "nope", 0], ["LSET", "l", 1, "B"],
                    ["LSET", "l", -1, "C"], ["LSET", "l", 3, "x"], ["LSET", "l", -4, "x"],
                    ["LSET", "l", "x", "x"], ["LSET", "nope", 0, "x"], ["LSET", "nope", "x", "x"],
                    ["LRANGE", "l", 0, -1], ["SET", "str", "v"], ["LINDEX", "str", "x"],
                    ["LSET", "str", "x", "x"]],
    "ltrim": [["RPUSH", "l", *"abcdefghij"], ["LTRIM", "l", 1, -2], ["LRANGE", "l", 0, -1],
              ["LTRIM", "l", -5, 100], ["LRANGE", "l", 0, -1], ["LTRIM", "l", 0, 0],
              ["LRANGE", "l", 0, -1], ["LTRIM", "l", 5, 10], ["EXISTS", "l"],
              ["LTRIM", "nope", 0, 1], ["LTRIM", "nope", "x", 1], ["RPUSH", "m", 1, 2, 3],
              ["LTRIM", "m", -1, -2], ["EXISTS", "m"], ["RPUSH", "m", 1, 2, 3],
              ["LTRIM", "m", "1", "x"], ["LTRIM", "m", -100, -3], ["LRANGE", "m", 0, -1]],
    "lmove": [["RPUSH", "a", 1, 2, 3], ["LMOVE", "a", "b", "LEFT", "RIGHT"],
              ["LMOVE", "a", "b", "right", "left"], ["LRANGE", "a", 0, -1],
              ["LRANGE", "b", 0, -1], ["LMOVE", "b", "b", "LEFT", "RIGHT"],
              ["LRANGE", "b", 0, -1], ["LMOVE", "a", "a", "LEFT", "LEFT"],
              ["LMOVE", "a", "b", "LEFT", "LEFT"], ["EXISTS", "a"], ["LMOVE", "a", "b", "LEFT",
                                                                    "LEFT"],
              ["LMOVE", "b", "c", "UP", "LEFT"], ["LMOVE", "b", "c", "LEFT", "DOWN"],
              ["LMOVE", "nope", "c", "UP", "LEFT"], ["RPOPLPUSH", "b", "c"],
              ["RPOPLPUSH", "b", "c"], ["RPOPLPUSH", "b", "c"], ["LRANGE", "c", 0, -1],
              ["EXISTS", "b"], ["RPOPLPUSH", "c", "c"], ["LRANGE", "c", 0, -1],
              ["SET", "str", "v"], ["LMOVE", "c", "str", "LEFT", "LEFT"],
              ["LMOVE", "str", "c", "LEFT", "LEFT"], ["RPOPLPUSH", "nope", "str"],
              ["RPOPLPUSH", "c", "str"], ["LRANGE", "c", 0, -1]],
    "lmove_keeps_ttls_as_redis": [["RPUSH", "a", 1, 2], ["EXPIRE", "a", 1000],
                                  ["RPUSH", "b", 9], ["EXPIRE", "b", 500],
                                  ["LMOVE", "a", "b", "LEFT", "LEFT"], ["TTL", "a"], ["TTL", "b"],
                                  ["LMOVE", "a", "new", "LEFT", "LEFT"], ["TTL", "new"],
                                  ["EXISTS", "a"]],
    "lrem": [["RPUSH", "l", *"abacabaa"], ["LREM", "l", 2, "a"], ["LRANGE", "l", 0, -1],
             ["LREM", "l", -1, "a"], ["LRANGE", "l", 0, -1], ["LREM", "l", 0, "a"],
             ["LRANGE", "l", 0, -1], ["LREM", "l", 0, "z"], ["LREM", "l", "x", "a"],
             ["LREM", "nope", "x", "a"], ["LREM", "nope", 1, "a"], ["LREM", "l", -5, "b"],
             ["LREM", "l", 0, "c"], ["EXISTS", "l"], ["RPUSH", "m", "x", "x"],
             ["LREM", "m", LLONG_MIN, "x"], ["EXISTS", "m"]],
    "lpos": [["RPUSH", "l", *"abacabaa"]] + [["LPOS", "l", *args] for args in (
        ["a"], ["b"], ["z"], ["a", "RANK", 2], ["a", "RANK", -1], ["a", "RANK", -3],
        ["a", "RANK", 10], ["a", "RANK", -10], ["a", "COUNT", 0], ["a", "COUNT", 2],
        ["a", "COUNT", 2, "RANK", 2], ["a", "COUNT", 0, "RANK", -2], ["a", "MAXLEN", 3],
        ["a", "MAXLEN", 3, "COUNT", 0], ["a", "MAXLEN", 3, "RANK", -1, "COUNT", 0],
        ["z", "COUNT", 1], ["a", "RANK", LLONG_MIN], ["a", "RANK", LLONG_MIN, "COUNT", 1],
        ["a", "RANK", -LLONG_MAX, "COUNT", 1], ["a", "RANK", LLONG_MAX],
        ["a", "rank", 1, "count", 1, "maxlen", 0], ["a", "RANK", 0], ["a", "RANK", "x"],
        ["a", "COUNT", -1], ["a", "COUNT", "x"], ["a", "MAXLEN", -1], ["a", "MAXLEN", "x"],
        ["a", "RANK"], ["a", "FOO", 1], ["a", "COUNT", 1, "RANK", 0],
        ["a", "RANK", 1, "RANK", 3], [b"a", b"RANK\x00x", 2])
    ] + [["LPOS", "nope", "a"], ["LPOS", "nope", "a", "COUNT", 0],
         ["LPOS", "nope", "a", "RANK", 0], ["SET", "str", "v"], ["LPOS", "str", "a"],
         ["LPOS", "str", "a", "RANK", 0]],
    "linsert": [["RPUSH", "l", "a", "b", "a"], ["LINSERT", "l", "BEFORE", "a", "x"],
                ["LINSERT", "l", "after", "a", "y"], ["LRANGE", "l", 0, -1],
                ["LINSERT", "l", "AFTER", "z", "q"], ["LINSERT", "l", "MIDDLE", "a", "q"],
                ["LINSERT", "nope", "BEFORE", "a", "q"], ["LINSERT", "nope", "FOO", "a", "q"],
                ["EXISTS", "nope"], ["SET", "str", "v"], ["LINSERT", "str", "BEFORE", "a", "q"],
                ["LINSERT", "str", "FOO", "a", "q"], ["LINSERT", "l", "BEFORE", "b", ""],
                ["LRANGE", "l", 0, -1]],
    "big_list": [BIG_LIST, ["LLEN", "bl"], ["LRANGE", "bl", 0, -1], ["LRANGE", "bl", -30, -20],
                 ["LRANGE", "bl", 150, 160], ["LINDEX", "bl", 123], ["LINDEX", "bl", -77],
                 ["LSET", "bl", 100, "x"], ["LPOS", "bl", "e3", "COUNT", 0],
                 ["LPOS", "bl", "e3", "RANK", -2, "COUNT", 3], ["LREM", "bl", 5, "e4"],
                 ["LREM", "bl", -3, "e5"], ["LINSERT", "bl", "AFTER", "x", "y"],
                 ["LTRIM", "bl", 10, -10], ["LRANGE", "bl", 0, -1], ["LPOP", "bl", 7],
                 ["RPOP", "bl", 7], ["LLEN", "bl"]],
}

ZSET_CASES: dict[str, list] = {
    "zadd_basics": [["ZADD", "z", 1, "a", 2, "b"], ["ZADD", "z", 3, "a", 4, "c"],
                    ["ZRANGE", "z", 0, -1, "WITHSCORES"], ["ZCARD", "z"], ["ZCARD", "nope"],
                    ["ZADD", "z", 5, "d", 5, "d"], ["ZADD", "z", "CH", 1, "a", 9, "e", 4, "c"],
                    ["ZRANGE", "z", 0, -1, "WITHSCORES"], ["ZSCORE", "z", "a"],
                    ["ZSCORE", "z", "x"], ["ZSCORE", "nope", "x"],
                    ["ZMSCORE", "z", "a", "x", "e"], ["ZMSCORE", "nope", "a", "b"]],
    "zadd_score_formats": [["ZADD", "z", *[x for i, s in enumerate((
        "0.1", "1e20", "inf", "-inf", "+inf", "-0", "5", "1.5e-7", "123456789012345678",
        "0x10", "0X1P-3", "1e-310", "1.7976931348623157e308", "-2.5", "3.0", ".5", "7.",
        "1e+2", "1E2", "Infinity", "4.9e-324")) for x in (s, f"m{i}")]],
        ["ZRANGE", "z", 0, -1, "WITHSCORES"], ["ZSCAN", "z", 0],
        ["ZRANGE", "z", 0, -1, "BYSCORE", "REV", "WITHSCORES", "LIMIT", 0, -1]],
    "zadd_bad_scores": [["ZADD", "z", x, "m"] for x in (
        "nan", "NaN", "-nan", "1e400", "-1e400", "1e-400", " 1", "1 ", "", "abc", "1e",
        "0x", "1.2.3", b"1\x00", "--1", "1_0", "infinit", "0x1p99999")
    ] + [["ZADD", "z", 1, "a", "x", "b"], ["EXISTS", "z"]],
    "zadd_options": [["ZADD", "z", "XX", 1, "a"], ["EXISTS", "z"], ["ZADD", "z", "XX", "INCR", 1,
                                                                    "a"],
                     ["ZADD", "z", "NX", 1, "a", 2, "b"], ["ZADD", "z", "NX", 5, "a", 3, "c"],
                     ["ZADD", "z", "XX", 5, "a", 3, "d"], ["ZADD", "z", "XX", "CH", 6, "a", 1, "b"],
                     ["ZADD", "z", "GT", 1, "a", 10, "b", 1, "e"],
                     ["ZADD", "z", "GT", "CH", 1, "a", 11, "b"],
                     ["ZADD", "z", "LT", "CH", 7, "a", 0, "c", 100, "f"],
                     ["ZADD", "z", "XX", "GT", 50, "a", 50, "g"],
                     ["ZADD", "z", "XX", "LT", "CH", 1, "a", 1, "g"],
                     ["ZADD", "z", "gt", "xx", "ch", "incr", 5, "a"],
                     ["ZADD", "z", "GT", "INCR", -5, "a"], ["ZADD", "z", "LT", "INCR", -5, "a"],
                     ["ZADD", "z", "LT", "INCR", 5, "a"], ["ZADD", "z", "NX", "INCR", 5, "a"],
                     ["ZADD", "z", "NX", "INCR", 5, "new"], ["ZADD", "z", "INCR", 5, "new"],
                     ["ZADD", "z", "CH", "CH", 0, "new"],
                     # an equal score is neither greater nor less: no update, nil for INCR
                     ["ZADD", "z", "GT", "INCR", 0, "new"], ["ZADD", "z", "LT", "INCR", 0, "new"],
                     ["ZADD", "z", "GT", "CH", 10, "new", 10, "b"],
                     ["ZADD", "z", "LT", "CH", 10, "new"], ["ZADD", "z", "XX", "INCR", 0, "new"],
                     ["ZRANGE", "z", 0, -1, "WITHSCORES"]],
    "zadd_option_errors": [["ZADD", "z", "NX", "XX", 1, "a"], ["ZADD", "z", "XX", "NX", 1, "a"],
                           ["ZADD", "z", "GT", "LT", 1, "a"], ["ZADD", "z", "GT", "NX", 1, "a"],
                           ["ZADD", "z", "LT", "NX", 1, "a"],
                           ["ZADD", "z", "NX", "XX", "GT", "LT", 1, "a"],
                           ["ZADD", "z", "INCR", 1, "a", 2, "b"], ["ZADD", "z", "NX", "XX", 1],
                           ["ZADD", "z", "INCR", "GT", "LT", 1, "a", 2, "b"],
                           ["ZADD", "z", "NX", "XX", "x", "a"], ["ZADD", "z", "GT", "LT", "x", "a"],
                           ["ZADD", "z", "INCR", "x", "a", "y", "b"], ["ZADD", "z", "NX", "x", "a"],
                           ["ZADD", "z", 1, "a", 2], ["ZADD", "z", "NX", 1], ["ZADD", "z", "NX",
                                                                              "XX"],
                           ["ZADD", "z", 1, "a", "NX"], ["ZADD", "z", "FOO", 1, "a"],
                           ["ZADD", "z", b"nx\x00junk", 1, "a"], ["EXISTS", "z"]],
    "zadd_nan": [["ZADD", "z", "inf", "a"], ["ZADD", "z", "INCR", "-inf", "a"],
                 ["ZINCRBY", "z", "-inf", "a"], ["ZINCRBY", "z", "inf", "a"],
                 ["ZINCRBY", "z", "-inf", "new"], ["ZSCORE", "z", "a"],
                 ["ZRANGE", "z", 0, -1, "WITHSCORES"]],
    "negative_zero": [["ZADD", "z", "-0", "m"], ["ZSCORE", "z", "m"], ["ZINCRBY", "z", "-0", "m"],
                      ["ZADD", "z", "INCR", "-0", "n"], ["ZSCORE", "z", "n"],
                      ["ZADD", "z", "INCR", "-0", "n"], ["ZADD", "z", "0", "o", "-0", "p"],
                      ["ZRANGE", "z", 0, -1, "WITHSCORES"], ["ZRANGE", "z", "-0", "0", "BYSCORE"],
                      ["ZRANGE", "z", "(-0", "0", "BYSCORE"], ["ZCOUNT", "z", "-0", "-0"]],
    "zincrby": [["ZINCRBY", "z", 2, "a"], ["ZINCRBY", "z", "1.5", "a"], ["ZINCRBY", "z", -10, "a"],
                ["ZINCRBY", "z", "0.1", "b"], ["ZINCRBY", "z", "0.2", "b"],
                ["ZINCRBY", "z", "x", "a"], ["ZINCRBY", "z", "nan", "a"],
                ["ZINCRBY", "z", "nx", "a"], ["ZINCRBY", "z", "incr", "a"],
                ["ZINCRBY", "z", "CH", "a"], ["ZRANGE", "z", 0, -1, "WITHSCORES"],
                ["SET", "str", "v"], ["ZINCRBY", "str", 1, "a"], ["ZINCRBY", "str", "x", "a"]],
    "zrem": [["ZADD", "z", 1, "a", 2, "b", 3, "c"], ["ZREM", "z", "a", "x", "a"],
             ["ZRANGE", "z", 0, -1], ["ZREM", "nope", "a"], ["ZREM", "z", "b", "c"],
             ["EXISTS", "z"]],
    "zrank": [["ZADD", "z", 1, "a", 2, "b", 2, "c", 3, "d"], ["ZRANK", "z", "a"],
              ["ZRANK", "z", "c"], ["ZREVRANK", "z", "a"], ["ZREVRANK", "z", "c"],
              ["ZRANK", "z", "x"], ["ZRANK", "nope", "a"], ["ZREVRANK", "nope", "a"],
              ["ZRANK", "z", "a", "WITHSCORE"]],
    "zcount_and_score_ranges": [["ZADD", "z", *[x for i, s in enumerate(
        ("-inf", "-2", "0", "1", "1", "1.5", "2", "3", "inf")) for x in (s, f"m{i}")]]] +
        [["ZCOUNT", "z", lo, hi] for lo, hi in (
            ("-inf", "+inf"), ("-inf", "inf"), ("1", "1"), ("(1", "1"), ("1", "(1"), ("(1", "(2"),
            ("0", "(1.5"), ("2", "1"), ("(inf", "inf"), ("-inf", "(-inf"), ("", "1"), ("(", "1"),
            (" 1", "2"), ("1e400", "inf"), ("-1e400", "1e-400"), ("0x1", "0x2"),
            (b"1\x00x", "2"), ("(-inf", "(inf"), ("nan", "1"), ("1", "nan"), ("x", "1"),
            ("1", "(x"), ("1 ", "2"), ("((1", "2"), ("  ", "2"))] +
        [["ZCOUNT", "nope", "x", "1"], ["ZCOUNT", "nope", 0, 1]],
    "zrange_by_rank": [["ZADD", "z", *[x for i in range(10) for x in (i % 4, f"m{i}")]]] +
                      [["ZRANGE", "z", s, e, *opts] for s, e in (
                          (0, -1), (2, 5), (-3, -1), (5, 2), (-100, 100), (100, 200), (0, 0),
                          (-1, -1), (LLONG_MIN, LLONG_MAX)) for opts in ([], ["WITHSCORES"],
                                                                         ["REV"], ["REV",
                                                                                   "WITHSCORES"])] +
                      [["ZREVRANGE", "z", 0, 3], ["ZREVRANGE", "z", 1, -2, "WITHSCORES"],
                       ["ZRANGE", "z", "x", 1], ["ZRANGE", "z", 0, "1.5"],
                       ["ZRANGE", "nope", 0, -1],
                       ["ZREVRANGE", "nope", "x", 1]],
    "zrange_by_score": [["ZADD", "z", *[x for i in range(10) for x in (i % 4, f"m{i}")]]] +
                       [["ZRANGE", "z", lo, hi, "BYSCORE", *opts] for lo, hi in (
                           ("-inf", "+inf"), (1, 2), ("(1", 2), (1, "(2"), (2, 1), ("(0", "(1"))
                        for opts in ([], ["WITHSCORES"], ["LIMIT", 1, 2], ["LIMIT", 0, -1],
                                     ["LIMIT", -1, 2], ["LIMIT", 2, 0], ["LIMIT", 100, 1])] +
                       [["ZRANGE", "z", hi, lo, "BYSCORE", "REV", *opts] for lo, hi in (
                           ("-inf", "+inf"), (1, 2), ("(1", 2), (1, "(2"), (2, 1))
                        for opts in ([], ["WITHSCORES"], ["LIMIT", 1, 2], ["LIMIT", 3, -5])] +
                       [["ZRANGEBYSCORE", "z", 1, 2], ["ZRANGEBYSCORE", "z", "-inf", "inf",
                                                       "WITHSCORES", "LIMIT", 2, 3],
                        ["ZREVRANGEBYSCORE", "z", 2, 1], ["ZREVRANGEBYSCORE", "z", "+inf", "-inf",
                                                          "LIMIT", 1, 1, "WITHSCORES"],
                        ["ZRANGEBYSCORE", "z", "x", 1], ["ZREVRANGEBYSCORE", "z", 1, "x"],
                        ["ZRANGEBYSCORE", "nope", 0, 1], ["ZRANGEBYSCORE", "nope", "x", 1]],
    "zrange_by_lex": [LEX_ZSET] + [["ZRANGE", "lz", lo, hi, "BYLEX", *opts] for lo, hi in (
        ("-", "+"), ("[a", "[b"), ("(a", "(b"), ("[a", "(abc"), ("[", "+"), ("(", "+"),
        ("-", "[a"), ("+", "-"), ("-", "-"), ("+", "+"), ("[b", "[a"), ("[b", "[b"), ("(b", "[b"),
        ("[\xff", "+"), ("-", "[a\x00"), ("(a\x00", "+"), ("[ab", "(ab"))
        for opts in ([], ["LIMIT", 1, 2], ["LIMIT", 0, -1], ["LIMIT", -1, 5])] +
        [["ZRANGE", "lz", hi, lo, "BYLEX", "REV", *opts] for lo, hi in (
            ("-", "+"), ("[a", "[b"), ("(a", "(b"), ("[b", "[a"))
         for opts in ([], ["LIMIT", 1, 2], ["LIMIT", 2, -1])] +
        [["ZRANGEBYLEX", "lz", "[a", "[c"], ["ZREVRANGEBYLEX", "lz", "[c", "[a", "LIMIT", 1, 2],
         ["ZLEXCOUNT", "lz", "-", "+"], ["ZLEXCOUNT", "lz", "[a", "(b"],
         ["ZLEXCOUNT", "lz", "(b", "[a"], ["ZLEXCOUNT", "nope", "-", "+"]] +
        [["ZRANGEBYLEX", "lz", lo, hi] for lo, hi in (
            ("a", "+"), ("-", "b"), ("", "+"), ("-", ""), ("+x", "+"), ("-", "-x"),
            (b"+\x00", "+"), ("!a", "+"))] +
        [["ZLEXCOUNT", "lz", "x", "+"], ["ZLEXCOUNT", "nope", "x", "+"]],
    "bylex_with_mixed_scores": [["ZADD", "m", 1, "b", 2, "z", 3, "a", 4, "c", 5, "y"]] +
                               [["ZRANGE", "m", lo, hi, "BYLEX", *opts] for lo, hi in (
                                   ("-", "+"), ("[b", "[y"), ("-", "[c"), ("[c", "+"),
                                   ("(a", "(z")) for opts in ([], ["LIMIT", 1, 1], ["LIMIT", 2, 5],
                                                              ["LIMIT", 3, -1])] +
                               [["ZRANGE", "m", hi, lo, "BYLEX", "REV", *opts] for lo, hi in (
                                   ("-", "+"), ("[b", "[y"), ("-", "[c"), ("[c", "+"))
                                for opts in ([], ["LIMIT", 1, 1], ["LIMIT", 2, 5])] +
                               [["ZLEXCOUNT", "m", "[b", "[y"], ["ZLEXCOUNT", "m", "-", "[c"],
                                ["ZRANGESTORE", "d", "m", "[b", "[y", "BYLEX"],
                                ["ZRANGE", "d", 0, -1, "WITHSCORES"],
                                ["ZREMRANGEBYLEX", "m", "[c", "[y"],
                                ["ZRANGE", "m", 0, -1, "WITHSCORES"]],
    "zrange_option_errors": [["ZADD", "z", 1, "a", 2, "b"]] + [["ZRANGE", "z", *args] for args in (
        [0, 1, "LIMIT", 0, 1], [0, 1, "LIMIT", 0, -1], [0, 1, "LIMIT", 5, -1],
        [0, 1, "LIMIT", "x", 1], [0, 1, "LIMIT", 0, "x"], [0, 1, "LIMIT", 0], [0, 1, "LIMIT"],
        ["-", "+", "BYLEX", "WITHSCORES"], ["-", "+", "WITHSCORES", "BYLEX"], [0, 1, "REV", "REV"],
        [0, 1, "BYSCORE", "BYSCORE"], [0, 1, "BYSCORE", "BYLEX"], [0, 1, "FOO"],
        [0, 1, "WITHSCORES", "WITHSCORES"], ["x", 1, "BYSCORE"], ["-", "+", "BYSCORE"],
        [0, 1, "BYLEX"], ["x", "y", "LIMIT", 0, 1, "WITHSCORES"], ["(1", "+inf", "BYSCORE",
                                                                   "LIMIT", 0, 1, "FOO"],
        [0, 1, "LIMIT", "x", 1, "FOO"], ["(1", "2", "byscore", "rev"], [b"0", b"1",
                                                                       b"withscores\x00x"])
    ] + [["ZRANGEBYSCORE", "z", 0, 1, "BYSCORE"], ["ZRANGEBYSCORE", "z", 0, 1, "REV"],
         ["ZRANGEBYSCORE", "z", 0, 1, "LIMIT", 0], ["ZREVRANGE", "z", 0, 1, "REV"],
         ["ZREVRANGE", "z", 0, 1, "LIMIT", 0, 1], ["ZREVRANGE", "z", 0, 1, "BYSCORE"],
         ["ZRANGEBYLEX", "z", "-", "+", "WITHSCORES"], ["ZRANGEBYLEX", "z", "-", "+", "BYLEX"],
         ["ZREVRANGEBYLEX", "z", "+", "-", "REV"], ["ZRANGE", "nope", "x", "y", "BYSCORE"],
         ["ZRANGE", "nope", 0, 1, "LIMIT", 0, 1]],
    "zrangestore": [["ZADD", "z", *[x for i in range(10) for x in (i % 4, f"m{i}")]],
                    ["ZRANGESTORE", "d", "z", 0, 3], ["ZRANGE", "d", 0, -1, "WITHSCORES"],
                    ["ZRANGESTORE", "d", "z", 2, 1, "BYSCORE", "REV", "LIMIT", 1, 2],
                    ["ZRANGE", "d", 0, -1, "WITHSCORES"],
                    ["ZRANGESTORE", "d", "z", "(m3", "+", "BYLEX"],
                    ["ZRANGESTORE", "d", "z", 0, -1, "REV"], ["ZRANGE", "d", 0, -1, "WITHSCORES"],
                    ["ZRANGESTORE", "d", "z", 5, 1], ["EXISTS", "d"],
                    ["ZRANGESTORE", "d", "z", 0, 0], ["ZRANGESTORE", "d", "nope", 0, -1],
                    ["EXISTS", "d"], ["ZRANGESTORE", "d", "z", 0, -1, "WITHSCORES"],
                    ["ZRANGESTORE", "d", "z", 0, -1, "LIMIT", 0, 1],
                    ["SET", "str", "v", "EX", 100], ["ZRANGESTORE", "str", "z", 0, 1],
                    ["TYPE", "str"], ["TTL", "str"], ["ZRANGESTORE", "d", "str", 0, 1],
                    ["ZRANGESTORE", "z", "z", 0, 2], ["ZRANGE", "z", 0, -1, "WITHSCORES"]],
    "zremrange": [["ZADD", "z", *[x for i in range(10) for x in (i, f"m{i}")]],
                  ["ZREMRANGEBYRANK", "z", 0, 1], ["ZREMRANGEBYRANK", "z", -2, -1],
                  ["ZREMRANGEBYRANK", "z", 5, 2], ["ZREMRANGEBYRANK", "z", 100, 200],
                  ["ZREMRANGEBYRANK", "z", "x", 1], ["ZREMRANGEBYRANK", "nope", "x", 1],
                  ["ZREMRANGEBYRANK", "nope", 0, 1], ["ZRANGE", "z", 0, -1],
                  ["ZREMRANGEBYSCORE", "z", "(2", 4], ["ZREMRANGEBYSCORE", "z", 100, 200],
                  ["ZREMRANGEBYSCORE", "z", "x", 1], ["ZREMRANGEBYSCORE", "nope", "x", 1],
                  ["ZRANGE", "z", 0, -1], ["ZADD", "lz", 0, "a", 0, "b", 0, "c", 0, "d"],
                  ["ZREMRANGEBYLEX", "lz", "(a", "[c"], ["ZREMRANGEBYLEX", "lz", "x", "+"],
                  ["ZREMRANGEBYLEX", "nope", "-", "+"], ["ZRANGE", "lz", 0, -1],
                  ["ZREMRANGEBYSCORE", "z", "-inf", "+inf"], ["EXISTS", "z"]],
    "zpop": [["ZADD", "z", 1, "a", 2, "b", 3, "c", 4, "d"], ["ZPOPMIN", "z"], ["ZPOPMAX", "z"],
             ["ZPOPMIN", "z", 0], ["ZPOPMAX", "z", 5], ["EXISTS", "z"], ["ZPOPMIN", "z"],
             ["ZPOPMAX", "nope", 2], ["ZADD", "z", 1, "a", 1, "b", 1, "c"], ["ZPOPMIN", "z", 2],
             ["ZPOPMIN", "z", -1], ["ZPOPMIN", "z", "x"], ["ZPOPMAX", "z", 1, 2],
             ["ZPOPMIN", "nope", -1], ["ZPOPMIN", "nope", 0], ["SET", "str", "v"],
             ["ZPOPMIN", "str"], ["ZPOPMAX", "str", 0], ["ZPOPMAX", "str", -1]],
    "zrandmember": [["ZRANDMEMBER", "nope"], ["ZRANDMEMBER", "nope", 3],
                    ["ZRANDMEMBER", "nope", -3, "WITHSCORES"],
                    ["ZADD", "z", 1, "a", 2.5, "b", "inf", "c"], Rnd("ZRANDMEMBER", "z"),
                    Rnd("ZRANDMEMBER", "z", 2), Rnd("ZRANDMEMBER", "z", 3),
                    Rnd("ZRANDMEMBER", "z", 10), Rnd("ZRANDMEMBER", "z", -10),
                    Rnd("ZRANDMEMBER", "z", 2, "WITHSCORES"), Rnd("ZRANDMEMBER", "z", -4,
                                                                  "withscores"),
                    ["ZRANDMEMBER", "z", 0], ["ZRANDMEMBER", "z", "x"],
                    ["ZRANDMEMBER", "z", 1, "WITHVALUES"], ["ZRANDMEMBER", "z", 1, "WITHSCORES",
                                                            "x"],
                    ["ZRANDMEMBER", "z", LLONG_MIN], ["ZRANDMEMBER", "z", "4611686018427387904",
                                                      "WITHSCORES"]],
    "zscan": [["ZADD", "z", 1, "a1", "0.1", "a2", "inf", "b1"], Scan("ZSCAN", "z", 0),
              Scan("ZSCAN", "z", 0, "MATCH", "a*"), Scan("ZSCAN", "nope", 0),
              ["ZADD", "z", *[x for i, s in enumerate((
                  "1e17", "123456789012345678", "4611686018427387904", "4611686018427387905",
                  "-4611686018427387904", "-4.7e18", "1e300", "2.5", "-0", "4503599627370497"))
                  for x in (s, f"n{i}")]], ["ZSCAN", "z", 0], ["ZRANGE", "z", 0, -1, "WITHSCORES"],
              ["ZSCAN", "z", "x"], ["ZSCAN", "z", 0, "COUNT", 0], ["ZSCAN", "z", 0],
              ["ZSCAN", "z", 0, "TYPE", "zset"]],
    "big_zset": [BIG_ZSET, BIG_LEX_ZSET, ["ZCARD", "bz"], ["ZRANGE", "bz", 0, -1, "WITHSCORES"],
                 ["ZRANGE", "bz", 50, 60, "REV", "WITHSCORES"], ["ZRANK", "bz", "m77"],
                 ["ZREVRANK", "bz", "m77"], ["ZCOUNT", "bz", "(5", 10],
                 ["ZRANGE", "bz", "(5", 10, "BYSCORE", "LIMIT", 3, 7],
                 ["ZRANGE", "bz", 10, "(5", "BYSCORE", "REV", "LIMIT", 3, 7, "WITHSCORES"],
                 ["ZRANGE", "blz", "[w050", "(w100", "BYLEX", "LIMIT", 10, 5],
                 ["ZRANGE", "blz", "[w150", "-", "BYLEX", "REV", "LIMIT", 0, 3],
                 ["ZLEXCOUNT", "blz", "(w010", "[w190"], ["ZREMRANGEBYLEX", "blz", "-", "(w100"],
                 ["ZCARD", "blz"], ["ZREMRANGEBYRANK", "bz", 10, 19],
                 ["ZREMRANGEBYSCORE", "bz", 20, "(21"], ["ZPOPMIN", "bz", 3],
                 ["ZPOPMAX", "bz", 3], ["ZINCRBY", "bz", 100, "m50"], ["ZRANK", "bz", "m50"],
                 ["ZRANGESTORE", "d", "bz", 0, 9], ["ZRANGE", "d", 0, -1, "WITHSCORES"],
                 Scan("ZSCAN", "bz", 0), Scan("ZSCAN", "bz", 0, "MATCH", "m1*"),
                 Rnd("ZRANDMEMBER", "bz", 30, "WITHSCORES"), Rnd("ZRANDMEMBER", "bz", -300)],
}

ALL_CASES = {**{f"counter/{k}": v for k, v in COUNTER_CASES.items()},
             **{f"key/{k}": v for k, v in KEY_CASES.items()},
             **{f"hash/{k}": v for k, v in HASH_CASES.items()},
             **{f"set/{k}": v for k, v in SET_CASES.items()},
             **{f"list/{k}": v for k, v in LIST_CASES.items()},
             **{f"zset/{k}": v for k, v in ZSET_CASES.items()}}


@pytest.mark.parametrize("steps", list(ALL_CASES.values()), ids=_ids(ALL_CASES))
def test_commands(pair: Pair, steps) -> None:
    for step in steps:
        pair.check(step)
    # The keyspaces must agree at the end, not just the replies along the way.
    keys = pair.redis("KEYS", "*")
    assert sorted(keys) == sorted(pair.local("KEYS", "*"))
    for key in keys:
        pair.check_key_state(key)


# ----------------------------------------------------------- every command x type
# One template per command (the key is "k"), run against a key of every type and a
# missing key: WRONGTYPE, or whatever error or reply precedes the type check.

TEMPLATES: dict[str, list] = {
    "INCR": ["INCR", "k"], "DECR": ["DECR", "k"], "INCRBY": ["INCRBY", "k", 2],
    "DECRBY": ["DECRBY", "k", 2], "INCRBYFLOAT": ["INCRBYFLOAT", "k", "1.5"],
    "APPEND": ["APPEND", "k", "x"], "SETRANGE": ["SETRANGE", "k", 1, "x"],
    "GETRANGE": ["GETRANGE", "k", 0, -1], "SUBSTR": ["SUBSTR", "k", 0, 1],
    "RENAME": ["RENAME", "k", "k2"], "RENAMENX": ["RENAMENX", "k", "k2"],
    "COPY": ["COPY", "k", "k2"], "HSET": ["HSET", "k", "f", "v"], "HMSET": ["HMSET", "k", "f", "v"],
    "HSETNX": ["HSETNX", "k", "f", "v"], "HGET": ["HGET", "k", "f"],
    "HMGET": ["HMGET", "k", "f", "g"], "HDEL": ["HDEL", "k", "f"], "HEXISTS": ["HEXISTS", "k", "f"],
    "HLEN": ["HLEN", "k"], "HGETALL": ["HGETALL", "k"], "HKEYS": ["HKEYS", "k"],
    "HVALS": ["HVALS", "k"], "HSTRLEN": ["HSTRLEN", "k", "f"], "HINCRBY": ["HINCRBY", "k", "n", 1],
    "HINCRBYFLOAT": ["HINCRBYFLOAT", "k", "n", "0.5"], "HRANDFIELD": Rnd("HRANDFIELD", "k"),
    "HRANDFIELD_COUNT": Rnd("HRANDFIELD", "k", -2, "WITHVALUES"), "HSCAN": Scan("HSCAN", "k", 0),
    "SADD": ["SADD", "k", "m"], "SREM": ["SREM", "k", "m"], "SISMEMBER": ["SISMEMBER", "k", "m"],
    "SMISMEMBER": ["SMISMEMBER", "k", "m", "x"], "SMEMBERS": U("SMEMBERS", "k"),
    "SCARD": ["SCARD", "k"], "SPOP": Rnd("SPOP", "k"), "SPOP_COUNT": Rnd("SPOP", "k", 1),
    "SRANDMEMBER": Rnd("SRANDMEMBER", "k"), "SRANDMEMBER_COUNT": Rnd("SRANDMEMBER", "k", -2),
    "SINTER": U("SINTER", "k", "k"), "SUNION": U("SUNION", "k", "nope"),
    "SDIFF": U("SDIFF", "k", "nope"), "SINTERSTORE": ["SINTERSTORE", "d", "k"],
    "SUNIONSTORE": ["SUNIONSTORE", "d", "k"], "SDIFFSTORE": ["SDIFFSTORE", "d", "k"],
    "SMOVE_SRC": ["SMOVE", "k", "d", "m"], "SMOVE_DST": ["SMOVE", "s0", "k", "a"],
    "SINTERCARD": ["SINTERCARD", 1, "k"], "SSCAN": Scan("SSCAN", "k", 0),
    "LPUSH": ["LPUSH", "k", "x"], "RPUSH": ["RPUSH", "k", "x"], "LPUSHX": ["LPUSHX", "k", "x"],
    "RPUSHX": ["RPUSHX", "k", "x"], "LPOP": ["LPOP", "k"], "RPOP_COUNT": ["RPOP", "k", 2],
    "LRANGE": ["LRANGE", "k", 0, -1], "LLEN": ["LLEN", "k"], "LINDEX": ["LINDEX", "k", 0],
    "LSET": ["LSET", "k", 0, "x"], "LTRIM": ["LTRIM", "k", 0, 0],
    "LMOVE_SRC": ["LMOVE", "k", "d", "LEFT", "RIGHT"], "LMOVE_DST": ["LMOVE", "l0", "k", "LEFT",
                                                                     "RIGHT"],
    "RPOPLPUSH": ["RPOPLPUSH", "k", "k"], "LREM": ["LREM", "k", 0, "a"], "LPOS": ["LPOS", "k", "a"],
    "LINSERT": ["LINSERT", "k", "BEFORE", "a", "x"], "ZADD": ["ZADD", "k", 1, "m"],
    "ZINCRBY": ["ZINCRBY", "k", 1, "m"], "ZREM": ["ZREM", "k", "m"], "ZSCORE": ["ZSCORE", "k", "a"],
    "ZMSCORE": ["ZMSCORE", "k", "a", "m"], "ZCARD": ["ZCARD", "k"],
    "ZCOUNT": ["ZCOUNT", "k", "-inf", "+inf"], "ZLEXCOUNT": ["ZLEXCOUNT", "k", "-", "+"],
    "ZRANK": ["ZRANK", "k", "a"], "ZREVRANK": ["ZREVRANK", "k", "a"],
    "ZRANGE": ["ZRANGE", "k", 0, -1, "WITHSCORES"], "ZRANGESTORE": ["ZRANGESTORE", "d", "k", 0, -1],
    "ZREVRANGE": ["ZREVRANGE", "k", 0, -1], "ZRANGEBYSCORE": ["ZRANGEBYSCORE", "k", 0, 10],
    "ZREVRANGEBYSCORE": ["ZREVRANGEBYSCORE", "k", 10, 0],
    "ZRANGEBYLEX": ["ZRANGEBYLEX", "k", "-", "+"], "ZREVRANGEBYLEX": ["ZREVRANGEBYLEX", "k", "+",
                                                                      "-"],
    "ZREMRANGEBYSCORE": ["ZREMRANGEBYSCORE", "k", 0, 0],
    "ZREMRANGEBYRANK": ["ZREMRANGEBYRANK", "k", 0, 0],
    "ZREMRANGEBYLEX": ["ZREMRANGEBYLEX", "k", "[a", "[a"], "ZPOPMIN": ["ZPOPMIN", "k"],
    "ZPOPMAX": ["ZPOPMAX", "k", 2], "ZRANDMEMBER": Rnd("ZRANDMEMBER", "k"),
    "ZRANDMEMBER_COUNT": Rnd("ZRANDMEMBER", "k", 2, "WITHSCORES"), "ZSCAN": Scan("ZSCAN", "k", 0),
    "TYPE": ["TYPE", "k"], "SCAN_TYPE": Scan("SCAN", 0, "TYPE", "zset"),
    "KEYS": U("KEYS", "*"), "RANDOMKEY": Rnd("RANDOMKEY"),
}

SEEDS: dict[str, list] = {
    "missing": [],
    "string": [["SET", "k", "5"]],
    "hash": [["HSET", "k", "a", "1", "n", "2"]],
    "set": [["SADD", "k", "a", "m"]],
    "list": [["RPUSH", "k", "a", "b"]],
    "zset": [["ZADD", "k", 1, "a", 2, "m"]],
}


@pytest.mark.parametrize("name", list(TEMPLATES), ids=list(TEMPLATES))
def test_every_command_against_every_type(pair: Pair, name: str) -> None:
    for kind, seed in SEEDS.items():
        pair.redis("FLUSHALL")
        pair.store = LocalStore()
        pair.check(["SADD", "s0", "a"])
        pair.check(["RPUSH", "l0", "a"])
        for step in seed:
            pair.check(step)
        pair.check(TEMPLATES[name])
        keys = pair.redis("KEYS", "*")
        assert sorted(keys) == sorted(pair.local("KEYS", "*")), kind
        for key in keys:
            pair.check_key_state(key)


ARITY = {
    "incr": 2, "incrby": 3, "decr": 2, "decrby": 3, "incrbyfloat": 3, "append": 3,
    "setrange": 4, "getrange": 4, "substr": 4, "rename": 3, "renamenx": 3, "copy": -3,
    "hset": -4, "hsetnx": 4, "hget": 3, "hmget": -3, "hmset": -4, "hdel": -3, "hexists": 3,
    "hlen": 2, "hgetall": 2, "hkeys": 2, "hvals": 2, "hstrlen": 3, "hincrby": 4,
    "hincrbyfloat": 4, "hrandfield": -2, "hscan": -3, "sadd": -3, "srem": -3, "sismember": 3,
    "smismember": -3, "smembers": 2, "scard": 2, "spop": -2, "srandmember": -2, "sinter": -2,
    "sunion": -2, "sdiff": -2, "sinterstore": -3, "sunionstore": -3, "sdiffstore": -3,
    "smove": 4, "sintercard": -3, "sscan": -3, "lpush": -3, "rpush": -3, "lpushx": -3,
    "rpushx": -3, "lpop": -2, "rpop": -2, "lrange": 4, "llen": 2, "lindex": 3, "lset": 4,
    "ltrim": 4, "lmove": 5, "rpoplpush": 3, "lrem": 4, "lpos": -3, "linsert": 5, "zadd": -4,
    "zrem": -3, "zscore": 3, "zmscore": -3, "zincrby": 4, "zcard": 2, "zcount": 4, "zrank": 3,
    "zrevrank": 3, "zrange": -4, "zrangebyscore": -4, "zrevrangebyscore": -4,
    "zrangebylex": -4, "zrevrangebylex": -4, "zrevrange": -4, "zremrangebyscore": 4,
    "zremrangebyrank": 4, "zremrangebylex": 4, "zlexcount": 4, "zpopmin": -2, "zpopmax": -2,
    "zrandmember": -2, "zrangestore": -5, "zscan": -3, "scan": -2, "keys": 2, "randomkey": 1,
}


def test_arity_table_matches_redis(pair: Pair) -> None:
    info = pair.redis("COMMAND", "INFO", *ARITY)
    assert {row[0].decode(): row[1] for row in info} == ARITY
    for name, arity in ARITY.items():
        assert pair.store._commands[name.encode()][1] == arity
        assert pair.store._commands[name.upper().encode()][1] == arity


@pytest.mark.parametrize("name", list(ARITY), ids=list(ARITY))
def test_arity_errors(pair: Pair, name: str) -> None:
    arity = ARITY[name]
    need = abs(arity)
    bad = [[name.upper() if n % 2 else name, *(["k"] * n)] for n in range(need - 1)]
    if arity > 0:
        bad.append([name, *(["k"] * need)])
    for args in bad:
        reply = pair.check(args)
        assert isinstance(reply, hiredis.ReplyError)
        assert reply.args == (f"ERR wrong number of arguments for '{name}' command",)


def test_copy_db_option_matches_a_single_database_redis() -> None:
    # LocalStore has one database: it answers COPY ... DB n like a Redis started with
    # "databases 1" (and DB 0 like any Redis whose client is on database 0).
    server = start_redis("--databases", "1")
    try:
        with RawClient(server.port) as client:
            pair = Pair(client, LocalStore())
            for step in (["SET", "a", "1"], ["COPY", "a", "b", "DB", 0], ["GET", "b"],
                         ["COPY", "a", "c", "DB", 1], ["COPY", "a", "c", "DB", -1],
                         ["COPY", "a", "c", "DB", 16], ["COPY", "a", "c", "DB", "2147483647"],
                         ["COPY", "a", "c", "DB", "2147483648"], ["COPY", "a", "a", "DB", 1],
                         ["COPY", "a", "c", "DB", 1, "FOO"], ["COPY", "a", "c", "FOO", "DB", 1],
                         ["EXISTS", "c"]):
                pair.check(step)
    finally:
        server.stop()


# -------------------------------------------------------- number formats in depth

_DIGITS = st.text("0123456789", min_size=1, max_size=25)


@st.composite
def _decimal_text(draw) -> str:
    sign = draw(st.sampled_from(["", "-", "+"]))
    whole = draw(_DIGITS)
    frac = draw(st.one_of(st.just(""), _DIGITS.map(lambda d: "." + d)))
    exp = draw(st.one_of(st.just(""), st.integers(-40, 40).map(lambda e: f"e{e}"),
                         st.integers(-4960, 4940).map(lambda e: f"E{e}")))
    return sign + whole + frac + exp


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(_decimal_text(), st.floats(allow_nan=False).map(repr),
                       st.integers(LLONG_MIN, LLONG_MAX).map(str)),
       incr=st.one_of(_decimal_text(), st.floats(allow_nan=False).map(repr),
                      st.sampled_from(["0", "0.1", "-0.1", "1e-17", "1e17", "0x1p-3"])))
def test_incrbyfloat_matches_redis_long_double_arithmetic(raw, value: str, incr: str) -> None:
    raw.call("FLUSHALL")
    pair = Pair(raw, LocalStore())
    pair.check(["SET", "a", value])
    pair.check(["INCRBYFLOAT", "a", incr])
    pair.check(["GET", "a"])
    pair.check(["HSET", "h", "f", value])
    pair.check(["HINCRBYFLOAT", "h", "f", incr])
    pair.check(["HGET", "h", "f"])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scores=st.lists(st.one_of(_decimal_text(), st.floats(allow_nan=False).map(repr),
                                 st.sampled_from(["inf", "-inf", "-0", "0x1.8p3", "1e-320"])),
                       min_size=1, max_size=6),
       incr=st.one_of(_decimal_text(), st.floats(allow_nan=False).map(repr)))
def test_zset_scores_match_redis(raw, scores: list[str], incr: str) -> None:
    raw.call("FLUSHALL")
    pair = Pair(raw, LocalStore())
    pair.check(["ZADD", "z", *[x for i, s in enumerate(scores) for x in (s, f"m{i}")]])
    pair.check(["ZINCRBY", "z", incr, "m0"])
    pair.check(["ZRANGE", "z", 0, -1, "WITHSCORES"])
    for low, high in zip(scores, [*scores[1:], "+inf"], strict=True):
        pair.check(["ZCOUNT", "z", low, f"({high}"])
        pair.check(["ZRANGE", "z", f"({low}", high, "BYSCORE", "WITHSCORES"])


# ------------------------------------------------------------- glob patterns

PATTERN_KEYS = ["", "a", "b", "ab", "ba", "abc", "aXc", "a*c", "a?c", "a[c", "a]c", "a\\c",
                "\\", "[", "]", "-", "^", "\xff", "\x80a", "a\x00", "\x00", "aaaa", "abab",
                "hello", "hallo", "hxllo", "h-llo", "h^llo", "*", "?", "**"]
PATTERN_CHARS = "ab*?[]^-\\\xff\x00"


@pytest.fixture
def pattern_keyspace(raw):
    raw.call("FLUSHALL")
    raw.call("MSET", *[x for k in PATTERN_KEYS for x in (b(k), b"1")])
    yield
    raw.call("FLUSHALL")


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.text(PATTERN_CHARS, max_size=8))
def test_glob_matching_matches_redis(raw, pattern_keyspace, pattern: str) -> None:
    reader = hiredis.Reader()
    reader.feed(raw.call("KEYS", b(pattern)))
    expected = sorted(reader.gets())
    got = sorted(k for k in map(b, PATTERN_KEYS)
                 if b(pattern) == b"*" or _stringmatch(b(pattern), k))
    assert got == expected, pattern
    store = LocalStore()
    store.execute([b"MSET", *[x for k in PATTERN_KEYS for x in (b(k), b"1")]])
    assert sorted(store.execute([b"KEYS", b(pattern)])) == expected, pattern


def test_glob_matching_is_not_exponential() -> None:
    # Redis bounds the backtracking of "*a*a*a..." with skipLongerMatches; so must we.
    assert not _stringmatch(b"*a" * 40 + b"*b", b"a" * 5000)
    assert _stringmatch(b"*a" * 40 + b"*", b"a" * 5000)
    assert not _stringmatch(b"*" * 5000 + b"x", b"y" * 5000)  # no recursion limit either


# ------------------------------------------------------------------ property test
#
# Programs are built by plain Python from a seeded Random that Hypothesis supplies (the
# failing program is printed by note()), mostly well-formed commands over a few keys
# that change type as the program goes, with a steady minority of malformed ones.

# Each family works mostly on its own keys (so most commands meet a populated key of
# the right type), sometimes on any key (WRONGTYPE paths, cross-type moves).
POOLS = {"string": ["s1", "s2"], "hash": ["h1", "h2"], "set": ["t1", "t2"],
         "list": ["l1", "l2"], "zset": ["z1", "z2"]}
KEYS = [k for pool in POOLS.values() for k in pool]
MEMBERS = ["m1", "m2", "m3", "10", "", "\xff"]
VALUES = ["v", "", "12", "-4", "1.5", "abc", "9223372036854775807"]
SCORES = ["0", "1", "-1", "1.5", "2", "2", "3", "inf", "-inf", "-0", "1e300", "0.1"]
BAD_SCORES = ["abc", "nan", "", "(1"]
# Bounds in ascending order: ranges are drawn mostly in order (an inverted range is
# just empty), so that most range commands select something.
RANGE_SCORES = ["-inf", "(-inf", "-1", "-0", "0", "(0", "0.1", "1", "(1", "1.5", "2", "(2", "3",
                "inf", "(inf", "+inf"]
LEX_BOUNDS = ["-", "[", "(", "[10", "(10", "[m1", "(m1", "[m2", "(m2", "[m3", "(m4", "[\xff",
              "(\xff", "+"]
INDEXES = ["0", "1", "-1", "2", "-2", "3", "5", "-10"]
COUNTS = ["0", "1", "2", "3", "-1", "-3", "10"]


def _maybe_bad(rnd, good: list, bad: list) -> str:
    return rnd.choice(bad) if rnd.random() < 0.05 else rnd.choice(good)


def _bounds(rnd, ordered: list) -> tuple[str, str]:
    i, j = rnd.randrange(len(ordered)), rnd.randrange(len(ordered))
    if i > j and rnd.random() < 0.85:
        i, j = j, i
    return ordered[i], ordered[j]


def _pick(rnd, weighted: list[tuple[int, list]]) -> list:
    return rnd.choices([c for _, c in weighted], [w for w, _ in weighted])[0]


def _random_command(rnd) -> list:
    family = rnd.choices(["string", "key", "hash", "set", "list", "zset", "scan"],
                         [8, 6, 14, 14, 14, 24, 3])[0]
    pool = POOLS.get(family, KEYS)
    own = lambda: rnd.choice(pool) if rnd.random() < 0.92 else rnd.choice(KEYS)  # noqa: E731
    key, key2 = own(), own()
    member = rnd.choice(MEMBERS)
    value = rnd.choice(VALUES)
    cnt = lambda: _maybe_bad(rnd, COUNTS, ["x", "-0", "1.0"])  # noqa: E731
    idx = lambda: _maybe_bad(rnd, INDEXES, ["x", "1.5", ""])  # noqa: E731

    def span() -> list[str]:
        """A start and an end index, mostly a non-empty span."""
        if rnd.random() < 0.2:
            return [idx(), idx()]
        return [rnd.choice(["0", "1", "2", "-2", "-3"]), rnd.choice(["-1", "2", "3", "-2", "10"])]

    if family == "string":
        return _pick(rnd, [
            (4, ["SET", key, value]), (2, ["GET", key]), (3, ["INCR", key]), (1, ["DECR", key]),
            (2, ["INCRBY", key, _maybe_bad(rnd, ["5", "-7", "0"], ["x", "1.5"])]),
            (1, ["DECRBY", key, rnd.choice(["3", "-2", str(LLONG_MIN)])]),
            (3, ["INCRBYFLOAT", key, _maybe_bad(rnd, ["0.1", "-1.5", "1e3", "3"], ["x", "inf"])]),
            (2, ["APPEND", key, value]),
            (2, ["SETRANGE", key, rnd.choice(["0", "2", "-1", "5"]), value]),
            (2, ["GETRANGE", key, *span()]), (1, ["STRLEN", key])])
    if family == "key":
        key, key2 = rnd.choice(KEYS), rnd.choice(KEYS)
        return _pick(rnd, [
            (1, ["RENAME", key, key2]), (1, ["RENAMENX", key, key2]), (1, ["COPY", key, key2]),
            (1, ["COPY", key, key2, "REPLACE"]), (1, ["DEL", key]), (2, ["EXISTS", key, key2]),
            (2, ["TYPE", key]), (2, ["EXPIRE", key, rnd.choice(["1000", "2000"])]),
            (1, ["PERSIST", key]), (2, ["TTL", key]),
            (2, ["KEYS", rnd.choice(["*", "h*", "[sz]?", "?1", "*[^2]"])]), (1, ["RANDOMKEY"]),
            (1, ["DBSIZE"])])
    if family == "hash":
        fields = rnd.sample(MEMBERS, rnd.randint(1, 3))
        return _pick(rnd, [
            (10, ["HSET", key, *[x for f in fields for x in (f, rnd.choice(VALUES))]]),
            (1, ["HMSET", key, member, value]), (1, ["HSETNX", key, member, value]),
            (3, ["HGET", key, member]), (2, ["HMGET", key, *fields]), (2, ["HDEL", key, *fields]),
            (1, ["HEXISTS", key, member]), (1, ["HLEN", key]), (2, ["HGETALL", key]),
            (1, ["HKEYS", key]), (1, ["HVALS", key]), (1, ["HSTRLEN", key, member]),
            (2, ["HINCRBY", key, member, _maybe_bad(rnd, ["1", "-5", "100"], ["x"])]),
            (2, ["HINCRBYFLOAT", key, member, _maybe_bad(rnd, ["0.5", "-2", "1e2"],
                                                           ["inf", "x"])]),
            (1, ["HRANDFIELD", key]), (1, ["HRANDFIELD", key, cnt()]),
            (1, ["HRANDFIELD", key, cnt(), "WITHVALUES"]), (1, ["HSCAN", key, "0"]),
            (1, ["HSCAN", key, "0", "MATCH", rnd.choice(["m*", "1?", "*"])])])
    if family == "set":
        members = rnd.sample(MEMBERS, rnd.randint(1, 4))
        return _pick(rnd, [
            (12, ["SADD", key, *members]), (2, ["SREM", key, *members[:2]]),
            (2, ["SISMEMBER", key, member]), (1, ["SMISMEMBER", key, *members]),
            (2, ["SMEMBERS", key]), (1, ["SCARD", key]), (1, ["SPOP", key]),
            (1, ["SPOP", key, rnd.choice(["0", "1", "2", "5", "-1"])]), (1, ["SRANDMEMBER", key]),
            (2, ["SRANDMEMBER", key, cnt()]), (2, ["SINTER", key, key2]),
            (2, ["SUNION", key, key2]), (2, ["SDIFF", key, key2, own()]),
            (1, ["SINTERSTORE", own(), key, key2]), (1, ["SUNIONSTORE", own(), key, key2]),
            (1, ["SDIFFSTORE", own(), key, key2]), (2, ["SMOVE", key, key2, member]),
            (1, ["SINTERCARD", "2", key, key2, "LIMIT", cnt()]), (1, ["SSCAN", key, "0"]),
            (1, ["SSCAN", key, "0", "MATCH", "m*", "COUNT", "2"])])
    if family == "list":
        return _pick(rnd, [
            (8, ["LPUSH", key, member, rnd.choice(MEMBERS)]), (8, ["RPUSH", key, member]),
            (1, ["LPUSHX", key, member]), (1, ["RPUSHX", key, value]), (1, ["LPOP", key]),
            (1, ["RPOP", key]), (1, ["LPOP", key, _maybe_bad(rnd, ["0", "1", "2", "9"],
                                                            ["-1", "x"])]),
            (1, ["RPOP", key, rnd.choice(["0", "2"])]), (3, ["LRANGE", key, *span()]),
            (1, ["LLEN", key]), (2, ["LINDEX", key, idx()]), (2, ["LSET", key, idx(), value]),
            (1, ["LTRIM", key, *span()]),
            (2, ["LMOVE", key, key2, rnd.choice(["LEFT", "RIGHT"]), rnd.choice(["LEFT", "RIGHT"])]),
            (1, ["RPOPLPUSH", key, key2]), (2, ["LREM", key, rnd.choice(["0", "1", "-1", "2"]),
                                                member]),
            (2, ["LPOS", key, member]),
            (2, ["LPOS", key, member, "RANK", rnd.choice(["1", "-1", "2", "-2", "0"]), "COUNT",
                 rnd.choice(["0", "1", "2"])]),
            (1, ["LPOS", key, member, "MAXLEN", rnd.choice(["0", "2"])]),
            (2, ["LINSERT", key, rnd.choice(["BEFORE", "AFTER", "X"]), member, value])])
    if family == "zset":
        pairs = [x for m in rnd.sample(MEMBERS, rnd.randint(1, 4))
                 for x in (_maybe_bad(rnd, SCORES, BAD_SCORES), m)]
        same = [x for m in rnd.sample(MEMBERS, rnd.randint(1, 4)) for x in ("0", m)]
        flags = [rnd.choice(["NX", "XX", "GT", "LT", "CH", "INCR"])
                 for _ in range(rnd.choices([0, 1, 2], [5, 4, 1])[0])]
        lo, hi = _bounds(rnd, RANGE_SCORES)
        llo, lhi = _bounds(rnd, LEX_BOUNDS)
        limit = ["LIMIT", rnd.choice(["0", "1", "2", "-1"]), rnd.choice(["1", "2", "-1", "0"])]
        return _pick(rnd, [
            (12, ["ZADD", key, *pairs]), (5, ["ZADD", key, *flags, *pairs]),
            (5, ["ZADD", key, *same]),
            (3, ["ZADD", key, rnd.choice(["GT", "LT", "NX", "XX", "CH"]), "INCR",
                 rnd.choice(["0", "1", "-1", "inf", "-0"]), member]),
            (2, ["ZINCRBY", key, _maybe_bad(rnd, SCORES, BAD_SCORES), member]),
            (2, ["ZREM", key, member, rnd.choice(MEMBERS)]), (2, ["ZSCORE", key, member]),
            (1, ["ZMSCORE", key, member, rnd.choice(MEMBERS)]), (1, ["ZCARD", key]),
            (2, ["ZCOUNT", key, lo, hi]), (2, ["ZLEXCOUNT", key, llo, lhi]),
            (2, ["ZRANK", key, member]), (1, ["ZREVRANK", key, member]),
            (3, ["ZRANGE", key, *span(), *rnd.choice([[], ["WITHSCORES"], ["REV"]])]),
            (3, ["ZRANGE", key, lo, hi, "BYSCORE", *rnd.choice([[], ["WITHSCORES"], limit])]),
            (2, ["ZRANGE", key, hi, lo, "BYSCORE", "REV", *rnd.choice([[], limit])]),
            (3, ["ZRANGE", key, llo, lhi, "BYLEX", *rnd.choice([[], limit])]),
            (2, ["ZRANGE", key, lhi, llo, "BYLEX", "REV", *rnd.choice([[], limit])]),
            (1, ["ZRANGE", key, *span(), *limit]), (1, ["ZREVRANGE", key, *span()]),
            (1, ["ZRANGEBYSCORE", key, lo, hi, "WITHSCORES"]),
            (1, ["ZREVRANGEBYSCORE", key, hi, lo]), (1, ["ZRANGEBYLEX", key, llo, lhi]),
            (1, ["ZREVRANGEBYLEX", key, lhi, llo]), (1, ["ZRANGESTORE", key2, key, *span()]),
            (1, ["ZRANGESTORE", key2, key, lo, hi, "BYSCORE"]),
            (1, ["ZREMRANGEBYSCORE", key, lo, hi]), (1, ["ZREMRANGEBYRANK", key, *span()]),
            (1, ["ZREMRANGEBYLEX", key, llo, lhi]), (1, ["ZPOPMIN", key]),
            (1, ["ZPOPMAX", key, cnt()]), (1, ["ZRANDMEMBER", key]),
            (1, ["ZRANDMEMBER", key, cnt(), "WITHSCORES"]), (1, ["ZSCAN", key, "0"]),
            (1, ["ZSCAN", key, "0", "MATCH", "m*"])])
    return rnd.choice([["SCAN", "0"], ["SCAN", "0", "TYPE", rnd.choice(["zset", "hash", "set"])],
                       ["SCAN", "0", "MATCH", "[hz]*", "COUNT", "1"], ["SCAN", "x"]])


def _random_seed(rnd) -> list[list]:
    """Initial content: most keys of every pool start populated with their type."""
    out: list[list] = []
    for key in KEYS:
        if rnd.random() < 0.25:
            continue
        members = rnd.sample(MEMBERS, rnd.randint(1, len(MEMBERS)))
        if key[0] == "s":
            out.append(["SET", key, rnd.choice(VALUES)])
        elif key[0] == "h":
            out.append(["HSET", key, *[x for m in members for x in (m, rnd.choice(VALUES))]])
        elif key[0] == "t":
            out.append(["SADD", key, *members])
        elif key[0] == "l":
            out.append(["RPUSH", key, *members, *rnd.sample(MEMBERS, 2)])
        else:
            scores = SCORES if rnd.random() < 0.6 else ["0"]  # sometimes all-equal (BYLEX)
            out.append(["ZADD", key, *[x for m in members for x in (rnd.choice(scores), m)]])
    return out


UNORDERED = {b"SMEMBERS", b"SINTER", b"SUNION", b"SDIFF", b"KEYS"}
RANDOM = {b"SPOP", b"SRANDMEMBER", b"HRANDFIELD", b"ZRANDMEMBER", b"RANDOMKEY"}
SCANS = {b"SCAN", b"HSCAN", b"SSCAN", b"ZSCAN"}


def _step(args: list):
    name = b(args[0]).upper()
    if name in UNORDERED:
        return U(*args)
    if name in RANDOM:
        return Rnd(*args)
    if name in SCANS:
        return Scan(*args)
    return args


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rnd=st.randoms(use_true_random=True))
def test_random_programs_match_redis(raw, rnd) -> None:
    program = _random_seed(rnd) + [_random_command(rnd) for _ in range(rnd.randint(10, 50))]
    note(f"program: {program!r}")
    raw.call("FLUSHALL")
    pair = Pair(raw, LocalStore())
    for args in program:
        pair.check(_step(args))
    for key in KEYS:
        pair.check_key_state(key)
    pair.check(["DBSIZE"])


# ------------------------------------------------- local-only: time, LRU, scans
# These do not need Redis: time is controlled, so replies are checked exactly.

T0_MS = 1_700_000_000_000


class FakeClock:
    def __init__(self, ms: int = T0_MS) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms


def run(store: LocalStore, *args) -> object:
    return store.execute([b(a) for a in args])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> LocalStore:
    return LocalStore(clock=clock)


SEED_COMMANDS = {
    "string": ["SET", "k", "7"], "hash": ["HSET", "k", "f", "v"], "set": ["SADD", "k", "m"],
    "list": ["RPUSH", "k", "e"], "zset": ["ZADD", "k", 1, "m"],
}


def _deterministic(template) -> bool:
    return not isinstance(template, Rnd | Scan | U)


@pytest.mark.parametrize("name", [n for n, t in TEMPLATES.items() if _deterministic(t)])
def test_expired_aggregates_behave_as_missing(clock: FakeClock, name: str) -> None:
    template = TEMPLATES[name]
    for seed in SEED_COMMANDS.values():
        expired = LocalStore(clock=clock)
        run(expired, "SADD", "s0", "a")
        run(expired, "RPUSH", "l0", "a")
        run(expired, *seed)
        assert run(expired, "PEXPIRE", "k", 10) == 1
        fresh = LocalStore(clock=clock)
        run(fresh, "SADD", "s0", "a")
        run(fresh, "RPUSH", "l0", "a")
        clock.advance(11)
        assert norm(run(expired, *template)) == norm(run(fresh, *template)), (seed, template)
        for key in ("k", "k2", "d"):
            assert run(expired, "TYPE", key) == run(fresh, "TYPE", key)
            assert run(expired, "PTTL", key) == run(fresh, "PTTL", key)


def test_aggregate_writes_keep_ttl(store: LocalStore, clock: FakeClock) -> None:
    for seed, write in ((["HSET", "k", "f", "v"], ["HSET", "k", "g", "w"]),
                        (["SADD", "k", "a"], ["SADD", "k", "b"]),
                        (["RPUSH", "k", "a"], ["LPUSH", "k", "b"]),
                        (["ZADD", "k", 1, "a"], ["ZINCRBY", "k", 5, "a"]),
                        (["SET", "k", "1"], ["INCRBYFLOAT", "k", "0.5"]),
                        (["SET", "k", "1"], ["APPEND", "k", "0"])):
        run(store, "DEL", "k")
        run(store, *seed)
        run(store, "PEXPIRE", "k", 5000)
        clock.advance(1000)
        run(store, *write)
        assert run(store, "PTTL", "k") == 4000, write
    run(store, "SADD", "a", "x")
    run(store, "SET", "dst", "v", "PX", 100)
    assert run(store, "SUNIONSTORE", "dst", "a") == 1  # a store command replaces the TTL
    assert run(store, "PTTL", "dst") == -1


def test_aggregates_expire(store: LocalStore, clock: FakeClock) -> None:
    run(store, "HSET", "h", "f", "v")
    run(store, "ZADD", "z", 1, "m")
    run(store, "PEXPIRE", "h", 100)
    run(store, "PEXPIRE", "z", 200)
    clock.advance(150)
    assert run(store, "HGETALL", "h") == []
    assert run(store, "ZCARD", "z") == 1
    assert run(store, "DBSIZE") == 1
    clock.advance(100)
    assert run(store, "ZRANGE", "z", 0, -1) == []
    assert len(store) == 0


def test_lru_covers_every_type(clock: FakeClock) -> None:
    store = LocalStore(max_entries=3, clock=clock)
    run(store, "HSET", "h", "f", "v")
    run(store, "SADD", "s", "m")
    run(store, "RPUSH", "l", "e")
    assert run(store, "HGET", "h", "f") == b"v"     # h is now the most recent
    run(store, "ZADD", "z", 1, "m")                 # evicts s
    assert run(store, "EXISTS", "h", "s", "l", "z") == 3
    assert run(store, "SCARD", "s") == 0
    run(store, "LPUSH", "l", "f")                   # in-place writes refresh recency too
    run(store, "INCR", "n")                         # evicts h
    assert run(store, "TYPE", "h") == b"none"
    assert run(store, "LRANGE", "l", 0, -1) == [b"f", b"e"]
    run(store, "RENAME", "l", "l2")                 # a move never evicts
    assert sorted(run(store, "KEYS", "*")) == [b"l2", b"n", b"z"]
    assert len(store) == 3


def test_empty_aggregates_never_stay_in_the_keyspace(store: LocalStore) -> None:
    # Every path that can empty a collection deletes the key (checked on internals too).
    for args in (["HSET", "k", "f", "v"], ["HDEL", "k", "f"], ["SADD", "k", "a"],
                 ["SPOP", "k", 5], ["SADD", "k", "a"], ["SINTERSTORE", "k", "k", "nope"],
                 ["RPUSH", "k", "a"], ["LTRIM", "k", 5, 6], ["RPUSH", "k", "a"],
                 ["RPOPLPUSH", "k", "j"], ["ZADD", "k", 1, "a"], ["ZPOPMAX", "k", 9],
                 ["ZADD", "k", 1, "a"], ["ZRANGESTORE", "k", "k", 5, 6]):
        run(store, *args)
        for value in store._data.values():
            assert type(value) is bytes or len(value) > 0
    assert sorted(store._data) == [b"j"]


def test_full_scan_returns_every_key_once(store: LocalStore) -> None:
    for i in range(1000):
        run(store, "SET", f"k{i}", i)
    for count in (1, 7, 100, 5000):
        seen: list[bytes] = []
        cursor = b"0"
        calls = 0
        while True:
            cursor, keys = run(store, "SCAN", cursor, "COUNT", count)
            seen += keys
            calls += 1
            if cursor == b"0":
                break
        assert sorted(seen) == sorted(f"k{i}".encode() for i in range(1000))
        assert calls >= 1000 // count


def test_scan_survives_concurrent_changes() -> None:
    # Keys present for the whole scan must be returned even though keys are added,
    # deleted and rewritten, other scans restart the snapshot, and LRU order changes.
    store = LocalStore(max_entries=10_000)
    stable = {f"s{i}".encode() for i in range(300)}
    for key in stable:
        run(store, "SADD", key, "m")
    for i in range(300):
        run(store, "SET", f"doomed{i}", i)
    rnd = random.Random(7)
    seen: set[bytes] = set()
    cursor = b"0"
    step = 0
    while True:
        cursor, keys = run(store, "SCAN", cursor, "COUNT", 5)
        seen.update(keys)
        step += 1
        run(store, "SET", f"new{step}", 1)
        run(store, "DEL", f"doomed{step}")
        run(store, "SADD", rnd.choice(sorted(stable)), "x")   # touch: LRU reorder
        if step % 10 == 0:
            run(store, "SCAN", 0)                            # another client's scan
        if cursor == b"0":
            break
    assert stable <= seen
    survivors = {f"doomed{i}".encode() for i in range(step + 1, 300)}
    assert survivors <= seen  # never deleted during the scan: must have been returned


def _full_scan(store: LocalStore, *options) -> list[bytes]:
    seen: list[bytes] = []
    cursor = b"0"
    while True:
        cursor, keys = run(store, "SCAN", cursor, *options)
        seen += keys
        if cursor == b"0":
            return seen


def test_scan_index_stays_current(store: LocalStore) -> None:
    for i in range(100):
        run(store, "SET", f"a{i}", i)
    assert sorted(_full_scan(store, "COUNT", 7)) == sorted(b"a%d" % i for i in range(100))
    # Created after the index was built: a new scan must see them.
    for i in range(50):
        run(store, "HSET", f"b{i}", "f", "v")
    expected = sorted([b"a%d" % i for i in range(100)] + [b"b%d" % i for i in range(50)])
    assert sorted(_full_scan(store, "COUNT", 3)) == expected
    # Deleted and re-created keys are listed once, not once per incarnation.
    for _ in range(3):
        run(store, "DEL", "a1", "b1")
        run(store, "SADD", "a1", "m")
        run(store, "SET", "b1", "x")
        assert sorted(_full_scan(store, "COUNT", 5)) == expected
    # Mass deletion: dead entries are pruned and the answer stays right.
    for i in range(2, 100):
        run(store, "DEL", f"a{i}")
    for i in range(3000):
        run(store, "SET", f"c{i}", i)
        run(store, "DEL", f"c{i}")
    assert sorted(_full_scan(store, "COUNT", 10)) == sorted(
        [b"a0", b"a1"] + [b"b%d" % i for i in range(50)])
    assert sum(len(keys) for _, keys in store._scan_runs) <= 2 * len(store._data) + 1024
    assert run(store, "SCAN", 0, "TYPE", "set", "COUNT", 1000) == [b"0", [b"a1"]]


def test_scan_index_is_dropped_when_nobody_scans(store: LocalStore) -> None:
    run(store, "SET", "keep", 1)
    run(store, "SCAN", 0)
    for i in range(500):
        run(store, "SET", f"k{i}", i)
    assert len(store._scan_delta) == 500  # net growth: at most one entry per live key
    for i in range(3000):  # churn without any scan: the pending list must not grow forever
        run(store, "SET", f"tmp{i}", i)
        run(store, "DEL", f"tmp{i}")
    assert store._scan_runs is None and store._scan_delta is None  # memory given back
    assert len(_full_scan(store, "COUNT", 100)) == 501
    run(store, "FLUSHALL")
    assert store._scan_runs is None
    assert run(store, "SCAN", 0) == [b"0", []]


def test_scan_skips_expired_and_filters(store: LocalStore, clock: FakeClock) -> None:
    run(store, "MSET", "a1", 1, "a2", 2, "b1", 3)
    run(store, "HSET", "ah", "f", "v")
    run(store, "PEXPIRE", "a2", 10)
    clock.advance(11)
    cursor, keys = run(store, "SCAN", 0, "COUNT", 100)
    assert cursor == b"0" and sorted(keys) == [b"a1", b"ah", b"b1"]
    assert sorted(run(store, "SCAN", 0, "MATCH", "a*", "COUNT", 100)[1]) == [b"a1", b"ah"]
    assert run(store, "SCAN", 0, "TYPE", "HASH", "COUNT", 100)[1] == [b"ah"]
    assert run(store, "SCAN", 0, "TYPE", "stream", "COUNT", 100) == [b"0", []]
    # Any cursor is accepted; one beyond every key's hash just ends the scan.
    assert run(store, "SCAN", "18446744073709551615") == [b"0", []]
    assert run(store, "SCAN", "-1")[0] == b"0"
    run(store, "FLUSHALL")
    assert run(store, "SCAN", 123) == [b"0", []]


def test_collection_scans_return_everything_at_once(store: LocalStore) -> None:
    run(store, "HSET", "h", *[x for i in range(500) for x in (f"f{i}", i)])
    cursor, flat = run(store, "HSCAN", "h", 0)
    assert cursor == b"0" and len(flat) == 1000
    run(store, "ZADD", "z", *[x for i in range(500) for x in (i, f"m{i}")])
    cursor, flat = run(store, "ZSCAN", "z", 0, "MATCH", "m1*")
    assert cursor == b"0" and flat[:4] == [b"m1", b"1", b"m10", b"10"]


def test_random_commands_cover_the_collection(store: LocalStore) -> None:
    run(store, "SADD", "s", *"abcde")
    run(store, "HSET", "h", *[x for c in "abcde" for x in (c, c.upper())])
    run(store, "ZADD", "z", *[x for i, c in enumerate("abcde") for x in (i, c)])
    picks = {run(store, "SRANDMEMBER", "s") for _ in range(300)}
    assert picks == set(map(b, "abcde"))
    assert {run(store, "HRANDFIELD", "h") for _ in range(300)} == set(map(b, "abcde"))
    assert {run(store, "ZRANDMEMBER", "z") for _ in range(300)} == set(map(b, "abcde"))
    assert {run(store, "RANDOMKEY") for _ in range(100)} == {b"s", b"h", b"z"}
    popped = [run(store, "SPOP", "s") for _ in range(5)]
    assert sorted(popped) == list(map(b, "abcde")) and run(store, "EXISTS", "s") == 0
    reply = run(store, "HRANDFIELD", "h", -6, "WITHVALUES")
    assert all(v == f.upper() for f, v in zip(reply[0::2], reply[1::2], strict=True))


def test_repeated_picks_are_bounded(store: LocalStore) -> None:
    run(store, "SADD", "s", "a")
    run(store, "HSET", "h", "f", "v")
    run(store, "ZADD", "z", 1, "m")
    huge = -(1 << 40)
    for args in (["SRANDMEMBER", "s", huge], ["HRANDFIELD", "h", huge],
                 ["ZRANDMEMBER", "z", huge, "WITHSCORES"]):
        reply = run(store, *args)
        assert isinstance(reply, hiredis.ReplyError)
        assert reply.args == ("ERR value is out of range",)
    assert len(run(store, "SRANDMEMBER", "s", -1000)) == 1000


def test_zset_structure_stays_consistent(store: LocalStore) -> None:
    rnd = random.Random(3)
    for _ in range(3000):
        member = f"m{rnd.randrange(60)}"
        op = rnd.random()
        if op < 0.5:
            run(store, "ZADD", "z", rnd.choice(["1", "2", "-0", "0", "inf", "1.5"]), member)
        elif op < 0.7:
            run(store, "ZINCRBY", "z", rnd.choice(["1", "-1", "0.5"]), member)
        elif op < 0.85:
            run(store, "ZREM", "z", member)
        else:
            run(store, "ZREMRANGEBYSCORE", "z", rnd.choice(["1", "(1"]), "2")
        zset = store._data.get(b"z")
        if zset is None:
            continue
        assert isinstance(zset, ZSet)
        assert zset.items == sorted((s, m) for m, s in zset.scores.items())
        assert len(zset.items) == len(zset.scores) > 0


ALL_NAMES = [n.encode() for n in ARITY] + [b"HMSET", b"SUBSTR", b"NOPE"]
TOKENS = [b"0", b"1", b"-1", b"2", b"-2", b"10", b"9223372036854775807",
          b"-9223372036854775808", b"4611686018427387904", b"inf", b"-inf", b"nan", b"(1",
          b"[a", b"(", b"[", b"-", b"+", b"LIMIT", b"WITHSCORES", b"WITHVALUES", b"BYSCORE",
          b"BYLEX", b"REV", b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR", b"RANK", b"COUNT",
          b"MAXLEN", b"MATCH", b"TYPE", b"LEFT", b"RIGHT", b"BEFORE", b"AFTER", b"REPLACE",
          b"DB", b"*", b"[^", b"k", b"h", b"s", b"l", b"z", b"\x00", b"\xff", b"1e400", b"0x1p3"]


@settings(max_examples=1500, deadline=None)
@given(name=st.sampled_from(ALL_NAMES),
       rest=st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6),
                               st.text(string.printable, max_size=6).map(b)), max_size=7),
       max_entries=st.sampled_from([None, 1, 3]))
def test_execute_never_raises(name: bytes, rest: list[bytes], max_entries) -> None:
    store = LocalStore(max_entries=max_entries)
    store.execute([b"SET", b"k", b"1.5"])
    store.execute([b"HSET", b"h", b"a", b"1", b"b", b"x"])
    store.execute([b"SADD", b"s", b"a", b"1"])
    store.execute([b"RPUSH", b"l", b"a", b"1", b"a"])
    store.execute([b"ZADD", b"z", b"1", b"a", b"2", b"b"])
    for args in ([name, *rest], [name, b"k", *rest], [name, b"z", *rest], [name, b"l", *rest]):
        reply = store.execute(args)
        _assert_reply(reply)
        for value in store._data.values():
            assert type(value) is bytes or len(value) > 0


def _assert_reply(value) -> None:
    if isinstance(value, list):
        for item in value:
            _assert_reply(item)
        return
    assert value is None or type(value) in (bytes, int, hiredis.ReplyError), value


def test_seeding_helpers_accept_every_type() -> None:
    store = LocalStore()
    store._store(b"z", ZSet([(2.0, b"b"), (1.0, b"a")]))
    store._store(b"l", deque([b"x"]))
    assert store.execute([b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"]) == [b"a", b"1", b"b",
                                                                            b"2"]
    assert store.execute([b"TYPE", b"z"]) == b"zset"
    assert "b'" not in repr(store._data[b"z"])  # members never appear in a repr
