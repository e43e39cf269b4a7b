"""The built-in in-memory cache backend: an in-process store with Redis 7.0 semantics.

What it is for
    When cachecloak runs without a Redis behind it, the proxy still transforms each
    client command (keys hashed, values encrypted) and hands the transformed argument
    list to :class:`LocalStore.execute`.  The store runs the command exactly as a
    Redis 7.0 server would and returns the reply as the Python value that
    ``hiredis.Reader()`` produces from Redis's RESP2 reply: status and bulk replies are
    ``bytes``, integers ``int``, nil ``None``, arrays ``list`` and errors
    ``hiredis.ReplyError`` carrying Redis's exact message.  Option parsing, validation
    order, error texts and expiry arithmetic follow Redis 7.0 (``t_string.c``,
    ``expire.c``, ``db.c``); the differential tests in
    ``tests/backends/test_local_differential.py`` compare it against a real redis-server.

What it must never do
    * No I/O of any kind: no sockets, files, threads or subprocesses.  It sits on the
      proxy's event loop and every call must finish in microseconds.
    * No logging, printing or exception text that contains keys or values.  Even
      though keys arrive hashed and values encrypted, they are still customer data
      and error replies must look exactly like Redis's (which only ever echo the
      offending option or command name back to the client that sent it).
    * Never raise for bad client input: every malformed command gets an error reply.

Data model
    ``_data`` maps key -> value; the value's Python class is the entry's type tag
    (``bytes`` is a Redis string; ``dict``, ``set`` and ``collections.deque`` are
    reserved for hashes, sets and lists, and a sorted-set class can be added to
    ``_TYPE_NAMES`` later).  Using the class as the tag avoids allocating a wrapper
    per SET on the hot path.  ``_expires`` maps key -> absolute expiry in Unix
    milliseconds, as Redis's ``db->expires`` does.  ``_heap`` is a min-heap of
    ``(when, key)`` used for active expiry; it may hold stale entries (a TTL that was
    later changed or removed), which are recognised and dropped when popped.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import hiredis

Reply = bytes | int | None | list | hiredis.ReplyError

__all__ = ["LocalStore", "Reply"]

LLONG_MAX = 2**63 - 1
LLONG_MIN = -(2**63)
# C's LLONG_MAX / 1000 and LLONG_MIN / 1000 truncate toward zero; Python's // floors,
# which would be off by one for the negative bound.
_LLONG_MAX_DIV_1000 = 9223372036854775
_LLONG_MIN_DIV_1000 = -9223372036854775

# At most this many heap entries are examined per key creation by the active sweep, so
# a burst of simultaneously expiring keys is spread over many calls instead of one
# stalling the event loop (Redis samples 20 keys per cycle for the same reason).
_SWEEP_BUDGET = 20

# When stale heap entries outnumber live TTLs by this much the heap is rebuilt.
_HEAP_SLACK = 1024

_TYPE_NAMES: dict[type, bytes] = {
    bytes: b"string",
    dict: b"hash",
    set: b"set",
    deque: b"list",
}

_OK = b"OK"
_WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
_SYNTAX = "ERR syntax error"
_NOT_INT = "ERR value is not an integer or out of range"

# Flags of SET / GETEX extended arguments, as OBJ_* in Redis's t_string.c.
_NX = 1 << 0
_XX = 1 << 1
_EX = 1 << 2
_PX = 1 << 3
_KEEPTTL = 1 << 4
_GET = 1 << 5
_EXAT = 1 << 6
_PXAT = 1 << 7
_PERSIST = 1 << 8
_RELATIVE = _EX | _PX
_MILLIS = _PX | _PXAT

# option -> (flag, flags that must not precede it, whether a value follows), i.e. the
# acceptance conditions of parseExtendedStringArgumentsOrReply as a table.
_EXPIRY_OPTIONS: dict[bytes, tuple[int, int, bool]] = {
    b"EX": (_EX, _KEEPTTL | _PERSIST | _EXAT | _PX | _PXAT, True),
    b"PX": (_PX, _KEEPTTL | _PERSIST | _EX | _EXAT | _PXAT, True),
    b"EXAT": (_EXAT, _KEEPTTL | _PERSIST | _EX | _PX | _PXAT, True),
    b"PXAT": (_PXAT, _KEEPTTL | _PERSIST | _EX | _EXAT | _PX, True),
}
_SET_OPTIONS: dict[bytes, tuple[int, int, bool]] = {
    b"NX": (_NX, _XX, False),
    b"XX": (_XX, _NX, False),
    b"GET": (_GET, 0, False),
    b"KEEPTTL": (_KEEPTTL, _PERSIST | _EX | _EXAT | _PX | _PXAT, False),
    **_EXPIRY_OPTIONS,
}
_GETEX_OPTIONS: dict[bytes, tuple[int, int, bool]] = {
    b"PERSIST": (_PERSIST, _EX | _EXAT | _PX | _PXAT | _KEEPTTL, False),
    **_EXPIRY_OPTIONS,
}

# Flags of EXPIRE and friends.
_E_NX = 1
_E_XX = 2
_E_GT = 4
_E_LT = 8


def _err(message: str) -> hiredis.ReplyError:
    # A fresh instance per reply: exceptions are mutable (tracebacks attach when
    # raised), so sharing one across callers would be unsafe.
    return hiredis.ReplyError(message)


def _cstr(arg: bytes) -> bytes:
    """The argument as C code sees it through ``char *``: cut at the first NUL byte.

    Redis compares options with strcasecmp and formats them with %s, so an option
    like b"nx\\0junk" *is* NX and is echoed as "nx"; mirroring that keeps replies equal.
    """
    cut = arg.find(b"\0")
    return arg if cut < 0 else arg[:cut]


def _opt(arg: bytes) -> bytes:
    return _cstr(arg).upper()


def _error_text(message: bytes) -> hiredis.ReplyError:
    """Build an error from bytes that may echo client input, as addReplyErrorFormat does.

    Redis replaces CR and LF so the reply stays one protocol line; hiredis decodes the
    line as UTF-8 with replacement characters, so the same is done here.
    """
    message = message.replace(b"\r", b" ").replace(b"\n", b" ")
    return hiredis.ReplyError(message.decode("utf-8", "replace"))


def _parse_ll(arg: bytes) -> int | None:
    """Redis's string2ll: a canonical signed 64-bit decimal, else None.

    Python's int() is far more permissive (spaces, '+', '_', leading zeros, Unicode
    digits), so the accepted grammar is checked explicitly: "0" or an optional '-'
    followed by a digit 1-9 and more digits, fewer than 21 bytes, within int64.
    """
    size = len(arg)
    if size == 0 or size >= 21:
        return None
    if arg.isdigit():
        if arg[0] == 0x30 and size > 1:  # leading zero
            return None
        value = int(arg)
        return value if value <= LLONG_MAX else None
    if arg[0] == 0x2D and size > 1:  # '-'
        digits = arg[1:]
        if digits.isdigit() and digits[0] != 0x30:
            value = -int(digits)
            return value if value >= LLONG_MIN else None
    return None


class LocalStore:
    """An in-memory keyspace that executes Redis 7.0 commands on argument lists."""

    __slots__ = ("_clock", "_commands", "_data", "_expires", "_heap", "_lru", "_max")

    def __init__(self, max_entries: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be a positive integer or None")
        # OrderedDict gives O(1) move_to_end/popitem(last=False) for LRU eviction.
        self._data: OrderedDict[bytes, Any] = OrderedDict()
        self._expires: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self._max = max_entries
        # Recency only matters when something can be evicted; skip the bookkeeping
        # otherwise so unbounded stores pay nothing for it.
        self._lru = max_entries is not None
        self._clock = clock
        self._commands: dict[bytes, tuple[Callable[[list[bytes]], Reply], int, str]] = {}
        for name, arity, method in (
            ("get", 2, self._get),
            ("set", -3, self._set),
            ("setnx", 3, self._setnx),
            ("setex", 4, self._setex),
            ("psetex", 4, self._psetex),
            ("getset", 3, self._getset),
            ("getdel", 2, self._getdel),
            ("getex", -2, self._getex),
            ("mget", -2, self._mget),
            ("mset", -3, self._mset),
            ("msetnx", -3, self._msetnx),
            ("strlen", 2, self._strlen),
            ("del", -2, self._del),
            ("unlink", -2, self._del),
            ("exists", -2, self._exists),
            ("touch", -2, self._touch),
            ("type", 2, self._type),
            ("expire", -3, self._expire),
            ("pexpire", -3, self._pexpire),
            ("expireat", -3, self._expireat),
            ("pexpireat", -3, self._pexpireat),
            ("persist", 2, self._persist),
            ("ttl", 2, self._ttl),
            ("pttl", 2, self._pttl),
            ("expiretime", 2, self._expiretime),
            ("pexpiretime", 2, self._pexpiretime),
            ("dbsize", 1, self._dbsize),
            ("flushdb", -1, self._flush),
            ("flushall", -1, self._flush),
        ):
            entry = (method, arity, name)
            # Clients almost always send all-upper or all-lower names; registering both
            # spares a bytes.upper() allocation per call in the common case.
            self._commands[name.upper().encode()] = entry
            self._commands[name.encode()] = entry

    # ------------------------------------------------------------------ public API

    def execute(self, args: list[bytes]) -> Reply:
        """Run one command. args[0] is the command name in any letter case (bytes);
        the rest are the arguments as bytes. Never raises for bad input: returns
        hiredis.ReplyError("ERR ...") / ("WRONGTYPE ...") with Redis 7's exact text."""
        if not args:
            return _err("ERR unknown command '', with args beginning with: ")
        name = args[0]
        entry = self._commands.get(name)
        if entry is None:
            entry = self._commands.get(name.upper())
            if entry is None:
                return self._unknown(args)
        method, arity, fullname = entry
        if (len(args) != arity) if arity > 0 else (len(args) < -arity):
            return _err(f"ERR wrong number of arguments for '{fullname}' command")
        return method(args)

    def delete_prefix(self, prefix: bytes) -> int:
        """Delete every live key starting with prefix; return how many were deleted."""
        self._sweep(None)
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def count_prefix(self, prefix: bytes) -> int:
        """Count live (unexpired) keys starting with prefix."""
        self._sweep(None)
        return sum(1 for key in self._data if key.startswith(prefix))

    def __len__(self) -> int:
        """Number of live keys (expired ones are reclaimed first)."""
        self._sweep(None)
        return len(self._data)

    # ------------------------------------------------------------- keyspace helpers

    def _now(self) -> int:
        # Redis keeps time as integer Unix milliseconds (mstime()).
        return int(self._clock() * 1000)

    def _lookup(self, key: bytes) -> Any:
        """Redis lookupKey: the live value or None, reclaiming the key if it expired."""
        value = self._data.get(key)
        if value is None:
            return None
        when = self._expires.get(key)
        # A key is expired once now > when (keyIsExpired), not at now == when.
        if when is not None and self._now() > when:
            self._remove(key)
            return None
        if self._lru:
            self._data.move_to_end(key)
        return value

    def _lookup_notouch(self, key: bytes) -> Any:
        """Like _lookup but without refreshing recency (Redis's LOOKUP_NOTOUCH)."""
        value = self._data.get(key)
        if value is None:
            return None
        when = self._expires.get(key)
        if when is not None and self._now() > when:
            self._remove(key)
            return None
        return value

    def _remove(self, key: bytes) -> None:
        # The key's heap entries go stale and are skipped when popped.
        del self._data[key]
        self._expires.pop(key, None)

    def _store(self, key: bytes, value: Any, keepttl: bool = False) -> None:
        """Redis setKey: overwrite or add, dropping any TTL unless keepttl."""
        data = self._data
        if key in data:
            data[key] = value
            if self._lru:
                data.move_to_end(key)
        else:
            if self._heap:
                # Active expiry rides on key creation: each new key reclaims up to a
                # budget of expired ones, so dead keys cannot outgrow live ones, while
                # reads and overwrites never pay for it.
                self._sweep(_SWEEP_BUDGET)
            if self._max is not None and len(data) >= self._max:
                self._make_room()
            data[key] = value
        if not keepttl and self._expires:
            self._expires.pop(key, None)

    def _make_room(self) -> None:
        """Evict until one more key fits: expired keys first, then least recently used.

        Expired keys are reclaimed one at a time, only as many as needed, so a full
        store with a large backlog of expired keys does not stall one write.
        """
        data = self._data
        expires = self._expires
        heap = self._heap
        now = self._now()
        while len(data) >= self._max:  # type: ignore[operator]
            if heap and heap[0][0] < now:
                when, key = heapq.heappop(heap)
                if expires.get(key) == when:
                    del data[key]
                    del expires[key]
            else:
                key, _ = data.popitem(last=False)
                expires.pop(key, None)

    def _set_expire(self, key: bytes, when: int) -> None:
        expires = self._expires
        expires[key] = when
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if len(heap) > 2 * len(expires) + _HEAP_SLACK:
            # Repeatedly re-TTL'd keys leave stale entries behind; rebuilding is
            # O(n) but happens only after O(n) pushes, so it is amortised O(1).
            self._heap = [(w, k) for k, w in expires.items()]
            heapq.heapify(self._heap)

    def _sweep(self, budget: int | None) -> None:
        """Active expiry: reclaim keys whose time has passed, oldest deadline first.

        With a budget, at most that many heap entries are examined (bounded work per
        command); with None, every expired key is reclaimed (used before counting or
        evicting, where an exact live set is needed; the cost is amortised because
        each heap entry is popped once).
        """
        heap = self._heap
        if not heap:
            return
        now = self._now()
        expires = self._expires
        data = self._data
        pops = 0
        while heap and heap[0][0] < now:
            when, key = heapq.heappop(heap)
            if expires.get(key) == when:
                del data[key]
                del expires[key]
            pops += 1
            if budget is not None and pops >= budget:
                break

    # ------------------------------------------------------------------- replies

    def _unknown(self, args: list[bytes]) -> hiredis.ReplyError:
        # Same layout as Redis's processCommand: the name cut to 128 bytes, then
        # quoted arguments until the argument text reaches 128 bytes, each one cut
        # to whatever room is left (measured before its opening quote).
        shown = bytearray()
        for arg in args[1:]:
            if len(shown) >= 128:
                break
            shown += b"'" + _cstr(arg)[:128 - len(shown)] + b"' "
        return _error_text(b"ERR unknown command '" + _cstr(args[0])[:128]
                           + b"', with args beginning with: " + bytes(shown))

    @staticmethod
    def _expire_error(fullname: str) -> hiredis.ReplyError:
        return _err(f"ERR invalid expire time in '{fullname}' command")

    # ------------------------------------------------------------------- strings

    def _get(self, args: list[bytes]) -> Reply:
        # Hot path: _lookup inlined.
        key = args[1]
        value = self._data.get(key)
        if value is None:
            return None
        when = self._expires.get(key)
        if when is not None and int(self._clock() * 1000) > when:
            self._remove(key)
            return None
        if type(value) is not bytes:
            return _err(_WRONGTYPE)
        if self._lru:
            self._data.move_to_end(key)
        return value

    def _set(self, args: list[bytes]) -> Reply:
        if len(args) == 3:
            # Hot path: plain SET key value.
            self._store(args[1], args[2])
            return _OK
        parsed = self._parse_string_options(args, _SET_OPTIONS, 3)
        if isinstance(parsed, hiredis.ReplyError):
            return parsed
        flags, expire = parsed
        return self._set_generic(args[1], args[2], flags, expire, "set", _OK, None)

    def _setnx(self, args: list[bytes]) -> Reply:
        return self._set_generic(args[1], args[2], _NX, None, "setnx", 1, 0)

    def _setex(self, args: list[bytes]) -> Reply:
        return self._set_generic(args[1], args[3], _EX, args[2], "setex", _OK, None)

    def _psetex(self, args: list[bytes]) -> Reply:
        return self._set_generic(args[1], args[3], _PX, args[2], "psetex", _OK, None)

    @staticmethod
    def _parse_string_options(args: list[bytes], table: dict[bytes, tuple[int, int, bool]],
                              start: int) -> tuple[int, bytes | None] | hiredis.ReplyError:
        """parseExtendedStringArgumentsOrReply: flags and the expire argument, if any.

        Each option is accepted only if no conflicting option came before it, which is
        why e.g. "EX 1 EX 2" is legal (last wins) but "EX 1 PX 2" is a syntax error.
        An option that needs a value but is the last argument is a syntax error too.
        """
        flags = 0
        expire: bytes | None = None
        last = len(args) - 1
        j = start
        while j <= last:
            spec = table.get(args[j].upper())
            if spec is None:
                spec = table.get(_opt(args[j]))  # rare: an option with a NUL byte in it
                if spec is None:
                    return _err(_SYNTAX)
            flag, conflicts, takes_value = spec
            if flags & conflicts:
                return _err(_SYNTAX)
            if takes_value:
                if j == last:
                    return _err(_SYNTAX)
                j += 1
                expire = args[j]
            flags |= flag
            j += 1
        return flags, expire

    def _expire_ms(self, expire: bytes, flags: int, fullname: str,
                   now: int) -> int | hiredis.ReplyError:
        """getExpireMillisecondsOrReply: the absolute expiry in ms for SET-family options."""
        ms = _parse_ll(expire)
        if ms is None:
            return _err(_NOT_INT)
        seconds = not flags & _MILLIS
        if ms <= 0 or (seconds and ms > _LLONG_MAX_DIV_1000):
            return self._expire_error(fullname)
        if seconds:
            ms *= 1000
        if flags & _RELATIVE:
            ms += now
        if ms > LLONG_MAX:  # Redis detects the int64 wrap-around here
            return self._expire_error(fullname)
        return ms

    def _set_generic(self, key: bytes, value: bytes, flags: int, expire: bytes | None,
                     fullname: str, ok_reply: Reply, abort_reply: Reply) -> Reply:
        """setGenericCommand: validation order is expire value, GET's type check, NX/XX."""
        when = now = 0
        if expire is not None:
            # One clock reading per command, like Redis's per-command time snapshot.
            now = self._now()
            parsed = self._expire_ms(expire, flags, fullname, now)
            if isinstance(parsed, hiredis.ReplyError):
                return parsed
            when = parsed
        old = None
        if flags & _GET:
            old = self._lookup(key)
            if old is not None and type(old) is not bytes:
                return _err(_WRONGTYPE)
            found = old is not None
        else:
            found = self._lookup(key) is not None
        if (flags & _NX and found) or (flags & _XX and not found):
            return old if flags & _GET else abort_reply
        if expire is not None and when < now:
            # EXAT/PXAT in the past: Redis stores the key and lets it expire on the
            # next access; dropping it now is indistinguishable to clients and keeps
            # a dead key from taking (or evicting for) an LRU slot.
            if found:
                self._remove(key)
        else:
            self._store(key, value, keepttl=bool(flags & _KEEPTTL))
            if expire is not None:
                self._set_expire(key, when)
        return old if flags & _GET else ok_reply

    def _getset(self, args: list[bytes]) -> Reply:
        key = args[1]
        old = self._lookup(key)
        if old is not None and type(old) is not bytes:
            return _err(_WRONGTYPE)
        self._store(key, args[2])
        return old

    def _getdel(self, args: list[bytes]) -> Reply:
        key = args[1]
        old = self._lookup(key)
        if old is None:
            return None
        if type(old) is not bytes:
            return _err(_WRONGTYPE)
        self._remove(key)
        return old

    def _getex(self, args: list[bytes]) -> Reply:
        # Syntax first, then the key, then the expire value: GETEX on a missing key
        # with a malformed expire returns nil, as in Redis.
        parsed = self._parse_string_options(args, _GETEX_OPTIONS, 2)
        if isinstance(parsed, hiredis.ReplyError):
            return parsed
        flags, expire = parsed
        key = args[1]
        value = self._lookup(key)
        if value is None:
            return None
        if type(value) is not bytes:
            return _err(_WRONGTYPE)
        if expire is not None:
            now = self._now()
            when = self._expire_ms(expire, flags, "getex", now)
            if isinstance(when, hiredis.ReplyError):
                return when
            if flags & (_EXAT | _PXAT) and when <= now:
                self._remove(key)
            else:
                self._set_expire(key, when)
        elif flags & _PERSIST:
            self._expires.pop(key, None)
        return value

    def _mget(self, args: list[bytes]) -> Reply:
        lookup = self._lookup
        out = []
        for key in args[1:]:
            value = lookup(key)
            out.append(value if type(value) is bytes else None)
        return out

    def _mset(self, args: list[bytes]) -> Reply:
        if len(args) % 2 == 0:
            return _err("ERR wrong number of arguments for 'mset' command")
        store = self._store
        for i in range(1, len(args), 2):
            store(args[i], args[i + 1])
        return _OK

    def _msetnx(self, args: list[bytes]) -> Reply:
        if len(args) % 2 == 0:
            return _err("ERR wrong number of arguments for 'msetnx' command")
        lookup = self._lookup
        # Look up every key (as Redis does) so expired ones are reclaimed even when an
        # earlier key already makes the command fail.
        busy = 0
        for i in range(1, len(args), 2):
            if lookup(args[i]) is not None:
                busy += 1
        if busy:
            return 0
        store = self._store
        for i in range(1, len(args), 2):
            store(args[i], args[i + 1])
        return 1

    def _strlen(self, args: list[bytes]) -> Reply:
        value = self._lookup(args[1])
        if value is None:
            return 0
        if type(value) is not bytes:
            return _err(_WRONGTYPE)
        return len(value)

    # ---------------------------------------------------------------- keys/expiry

    def _del(self, args: list[bytes]) -> Reply:
        lookup = self._lookup_notouch
        deleted = 0
        for key in args[1:]:
            if lookup(key) is not None:
                self._remove(key)
                deleted += 1
        return deleted

    def _exists(self, args: list[bytes]) -> Reply:
        lookup = self._lookup_notouch
        return sum(1 for key in args[1:] if lookup(key) is not None)

    def _touch(self, args: list[bytes]) -> Reply:
        lookup = self._lookup
        return sum(1 for key in args[1:] if lookup(key) is not None)

    def _type(self, args: list[bytes]) -> Reply:
        value = self._lookup_notouch(args[1])
        if value is None:
            return b"none"
        return _TYPE_NAMES.get(type(value), b"none")

    def _expire(self, args: list[bytes]) -> Reply:
        return self._expire_generic(args, self._now(), True, "expire")

    def _pexpire(self, args: list[bytes]) -> Reply:
        return self._expire_generic(args, self._now(), False, "pexpire")

    def _expireat(self, args: list[bytes]) -> Reply:
        return self._expire_generic(args, 0, True, "expireat")

    def _pexpireat(self, args: list[bytes]) -> Reply:
        return self._expire_generic(args, 0, False, "pexpireat")

    def _expire_generic(self, args: list[bytes], basetime: int, seconds: bool,
                        fullname: str) -> Reply:
        """expireGenericCommand: options, then the integer, then overflow, then the key."""
        flags = 0
        for arg in args[3:]:
            opt = _opt(arg)
            if opt == b"NX":
                flags |= _E_NX
            elif opt == b"XX":
                flags |= _E_XX
            elif opt == b"GT":
                flags |= _E_GT
            elif opt == b"LT":
                flags |= _E_LT
            else:
                return _error_text(b"ERR Unsupported option " + _cstr(arg))
        if flags & _E_NX and flags & (_E_XX | _E_GT | _E_LT):
            return _err("ERR NX and XX, GT or LT options at the same time are not compatible")
        if flags & _E_GT and flags & _E_LT:
            return _err("ERR GT and LT options at the same time are not compatible")
        when = _parse_ll(args[2])
        if when is None:
            return _err(_NOT_INT)
        # Negative values are allowed (they delete the key); only int64 overflow of
        # the unit conversion or of adding the base time is rejected.
        if seconds:
            if when > _LLONG_MAX_DIV_1000 or when < _LLONG_MIN_DIV_1000:
                return self._expire_error(fullname)
            when *= 1000
        if when > LLONG_MAX - basetime:
            return self._expire_error(fullname)
        when += basetime
        key = args[1]
        if self._lookup(key) is None:
            return 0
        if flags:
            current = self._expires.get(key)
            if flags & _E_NX and current is not None:
                return 0
            if flags & _E_XX and current is None:
                return 0
            # No TTL counts as an infinite one: GT never beats it, LT always does.
            if flags & _E_GT and (current is None or when <= current):
                return 0
            if flags & _E_LT and current is not None and when >= current:
                return 0
        if when <= self._now():
            self._remove(key)
        else:
            self._set_expire(key, when)
        return 1

    def _persist(self, args: list[bytes]) -> Reply:
        key = args[1]
        if self._lookup(key) is None:
            return 0
        return 0 if self._expires.pop(key, None) is None else 1

    def _ttl_generic(self, key: bytes, millis: bool, absolute: bool) -> Reply:
        if self._lookup_notouch(key) is None:
            return -2
        when = self._expires.get(key)
        if when is None:
            return -1
        ttl = when if absolute else when - self._now()
        ttl = max(ttl, 0)
        return ttl if millis else (ttl + 500) // 1000

    def _ttl(self, args: list[bytes]) -> Reply:
        return self._ttl_generic(args[1], False, False)

    def _pttl(self, args: list[bytes]) -> Reply:
        return self._ttl_generic(args[1], True, False)

    def _expiretime(self, args: list[bytes]) -> Reply:
        return self._ttl_generic(args[1], False, True)

    def _pexpiretime(self, args: list[bytes]) -> Reply:
        return self._ttl_generic(args[1], True, True)

    # ------------------------------------------------------------------- server

    def _dbsize(self, args: list[bytes]) -> Reply:
        # Redis's DBSIZE also counts expired keys it has not reclaimed yet; reporting
        # only live keys is what Redis converges to and what callers expect.
        self._sweep(None)
        return len(self._data)

    def _flush(self, args: list[bytes]) -> Reply:
        # SYNC/ASYNC only choose how Redis frees memory; here both clear at once.
        if len(args) == 2:
            if _opt(args[1]) not in (b"SYNC", b"ASYNC"):
                return _err(_SYNTAX)
        elif len(args) > 2:
            return _err(_SYNTAX)
        self._data.clear()
        self._expires.clear()
        self._heap.clear()
        return _OK
