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
    ``t_hash.c``, ``t_set.c``, ``t_list.c``, ``t_zset.c``, ``expire.c``, ``db.c``);
    the differential tests in ``tests/backends/test_local_differential.py`` and
    ``tests/backends/test_local_types.py`` compare it against a real redis-server.

What it must never do
    * No I/O of any kind: no sockets, files, threads or subprocesses.  It sits on the
      proxy's event loop and every call must finish in microseconds.
    * No logging, printing or exception text that contains keys or values.  Even
      though keys arrive hashed and values encrypted, they are still customer data
      and error replies must look exactly like Redis's (which only ever echo the
      offending option or command name back to the client that sent it).
    * Never raise for bad client input: every malformed command gets an error reply.

Data model
    ``_data`` maps key -> value; the value's Python class is the entry's type tag:
    ``bytes`` is a string, ``dict`` a hash (field -> value, in insertion order like
    Redis's listpack encoding), ``set`` a set, ``collections.deque`` a list and
    :class:`ZSet` a sorted set.  Using the class as the tag avoids allocating a
    wrapper per SET on the hot path.  As in Redis, an aggregate that becomes empty is
    deleted, so a stored hash/set/list/zset is never empty.  ``_expires`` maps key ->
    absolute expiry in Unix milliseconds, as Redis's ``db->expires`` does.  ``_heap``
    is a min-heap of ``(when, key)`` used for active expiry; it may hold stale entries
    (a TTL that was later changed or removed), which are recognised and dropped when
    popped.

Numbers
    INCRBYFLOAT and HINCRBYFLOAT use C ``long double`` in Redis (x87 80-bit extended
    precision on x86-64) and print with ``%.17Lf`` minus trailing zeros; that
    arithmetic is reproduced exactly with integer (mantissa, exponent) pairs rounded
    to a 64-bit significand, ties to even, subnormals and overflow included (so
    10.5 + 0.1 is "10.6", as in Redis, not the double 10.59999...).  Sorted-set
    scores are doubles printed with ``%.17g``; ``strtod``'s grammar (hex floats,
    ``inf``/``infinity``, range errors) is reproduced for score arguments.

Cursors (SCAN and friends) -- documented difference from Redis
    SCAN orders keys by their 64-bit hash and the cursor is "the next hash position
    to visit" (0 = start and end).  The cursor does not depend on any state, so every
    key that exists for the whole scan is returned exactly once, whatever is written,
    deleted, evicted or re-ordered meanwhile and however many clients scan at once
    (keys created or deleted during the scan may or may not be returned, as in Redis).
    Keys are served from runs of keys sorted by hash: the first SCAN sorts every key
    (O(n log n), once); keys created later form a new small run when a scan starts
    and runs are merged size-tiered (O(log n) runs, amortised O(log n) per key);
    entries of deleted keys are dropped by a rebuild once they outnumber live keys.
    A call costs O(COUNT log n).  Cursor numbers differ from Redis's.
    HSCAN, SSCAN and ZSCAN return the whole (MATCH-filtered) collection in one reply
    with cursor 0, as Redis itself does for small (listpack/intset) collections.

Other deliberate differences (each one either unobservable through Redis's documented
contract or a choice the tests pin down)
    * COPY's ``DB n`` option: the store is a single database, so it behaves like a
      Redis started with ``databases 1``: ``DB 0`` is accepted, any other index gets
      ``ERR DB index is out of range``.
    * HRANDFIELD/SRANDMEMBER/ZRANDMEMBER with a negative count whose magnitude
      exceeds ``_MAX_REPEATED_PICKS`` answer ``ERR value is out of range`` instead of
      building a reply that cannot fit in memory (Redis would try).
    * Replies whose order Redis leaves unspecified (SMEMBERS, SINTER/SUNION/SDIFF,
      SPOP, KEYS, the random commands) come in Python's order.  In particular an
      all-integer set is not listed in ascending order, which Redis's intset encoding
      happens to do.  Hashes keep insertion order, which is what Redis shows for small
      (listpack) hashes; Redis's order for big ones is arbitrary anyway.
    * Encoding-dependent details follow Redis's compact encodings (the common case of
      small collections): a -0 score is stored as 0 and ZSCAN prints scores as a
      listpack stores them ("100000000000000000" where a big skiplist-encoded set
      would show "1e+17"); BYLEX over members with different scores (undefined in
      Redis) follows the listpack's linear scan.
    * RANDOMKEY and single-element SPOP/SRANDMEMBER/HRANDFIELD are O(n) (Python sets
      and dicts have no random access); APPEND and SETRANGE copy the string.
"""

from __future__ import annotations

import heapq
import random
import re
import time
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from itertools import islice
from operator import itemgetter
from typing import Any

import hiredis

from proxy.resp.numbers import string2ll as _parse_ll

Reply = bytes | int | None | list | hiredis.ReplyError

__all__ = ["LocalStore", "Reply", "ZSet"]

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


class ZSet:
    """A sorted set: ``scores`` maps member -> score and ``items`` holds the
    ``(score, member)`` pairs sorted the way Redis's skiplist orders them (score, then
    member bytes as memcmp does).  A plain list kept sorted with bisect is compact and
    fast for cache-sized sets; rank lookups are O(log n), inserts O(n) memmove."""

    __slots__ = ("items", "scores")

    def __init__(self, pairs: Iterable[tuple[float, bytes]] = ()) -> None:
        """From (score, member) pairs; a repeated member keeps its last score."""
        self.scores: dict[bytes, float] = {member: score + 0.0 for score, member in pairs}
        self.items: list[tuple[float, bytes]] = sorted(
            (score, member) for member, score in self.scores.items())

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:  # never shows members: they are customer data
        return f"<ZSet of {len(self.scores)}>"

    def insert(self, member: bytes, score: float) -> None:
        """Add a member that is not in the set.

        A score of -0.0 is stored as 0.0: Redis's compact encoding stores scores as
        text with an integer fast path, so -0 reads back as 0 (replies that echo the
        computed score, such as ZINCRBY's, still show "-0")."""
        score += 0.0
        self.scores[member] = score
        insort(self.items, (score, member))

    def discard(self, member: bytes) -> bool:
        score = self.scores.pop(member, None)
        if score is None:
            return False
        items = self.items
        del items[bisect_left(items, (score, member))]
        return True

    def rank(self, member: bytes, score: float) -> int:
        return bisect_left(self.items, (score, member))

    def copy(self) -> ZSet:
        clone = ZSet.__new__(ZSet)
        clone.items = self.items.copy()
        clone.scores = self.scores.copy()
        return clone


_TYPE_NAMES: dict[type, bytes] = {
    bytes: b"string",
    dict: b"hash",
    set: b"set",
    deque: b"list",
    ZSet: b"zset",
}

_OK = b"OK"
_WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
_SYNTAX = "ERR syntax error"
_NOT_INT = "ERR value is not an integer or out of range"
_NOT_FLOAT = "ERR value is not a valid float"
_OVERFLOW = "ERR increment or decrement would overflow"
_NAN_OR_INF = "ERR increment would produce NaN or Infinity"
_NO_KEY = "ERR no such key"
_NOT_POSITIVE = "ERR value is out of range, must be positive"
_LONG_RANGE = ("ERR value is out of range, value must between -9223372036854775807 "
               "and 9223372036854775807")
_OUT_OF_RANGE = "ERR value is out of range"
_TOO_BIG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
_NOT_FLOAT_RANGE = "ERR min or max is not a float"
_NOT_LEX_RANGE = "ERR min or max not valid string range item"
_BAD_CURSOR = "ERR invalid cursor"

# proto-max-bulk-len's default: the largest string APPEND/SETRANGE may produce.
_MAX_STRING = 512 * 1024 * 1024

# Largest |count| accepted by HRANDFIELD/SRANDMEMBER/ZRANDMEMBER with a negative count
# (repetitions allowed, so the reply size is not bounded by the collection).
_MAX_REPEATED_PICKS = 1 << 24

_LONG_MAX_HALF = LLONG_MAX // 2  # C's LONG_MAX / 2, the WITHVALUES/WITHSCORES bound
_INT_MIN = -(2**31)
_INT_MAX = 2**31 - 1
_ULONG_MASK = 2**64 - 1
_HASH_OFFSET = 2**63  # SCAN cursor = Python's signed 64-bit hash + 2**63

_rng = random.Random()

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

    Redis replaces CR and LF so the reply stays one protocol line.  Bytes that are not
    UTF-8 are kept as surrogate escapes (as proxy._native.ReplyReader reads Redis's
    error lines), so writer.error sends them back as they were.
    """
    message = message.replace(b"\r", b" ").replace(b"\n", b" ")
    return hiredis.ReplyError(message.decode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------- numbers
# C's strtod/strtold grammar (glibc, "C" locale), matched against the whole text.
_SPACE = b" \t\n\v\f\r"  # C isspace()
_DEC_RE = re.compile(rb"([+-]?)(?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))(?:[eE]([+-]?[0-9]+))?")
_HEX_RE = re.compile(rb"([+-]?)0[xX](?:([0-9a-fA-F]+)(?:\.([0-9a-fA-F]*))?|\.([0-9a-fA-F]+))"
                     rb"(?:[pP]([+-]?[0-9]+))?")
_INF_RE = re.compile(rb"[+-]?inf(?:inity)?", re.IGNORECASE)
_INF = float("inf")


def _exponent(text: bytes | None) -> int:
    """An exponent field as an int, saturated far beyond any representable range."""
    if not text:
        return 0
    digits = text.lstrip(b"+-").lstrip(b"0")
    value = 10**9 if len(digits) > 9 else int(digits or b"0")
    return -value if text[:1] == b"-" else value


def _strtod(text: bytes) -> tuple[float, bool] | None:
    """glibc strtod consuming all of text: (value, range_error), or None if text is not
    entirely a number or is NaN.  range_error means ERANGE with an infinite or zero
    result (overflow, or a nonzero number below the smallest subnormal)."""
    m = _DEC_RE.fullmatch(text)
    if m is not None:
        value = float(text)  # correctly rounded, as glibc's strtod
        if value == _INF or value == -_INF:
            return value, True
        if value == 0.0:
            return value, bool((m[2] or b"").strip(b"0") or (m[3] or m[4] or b"").strip(b"0"))
        return value, False
    m = _HEX_RE.fullmatch(text)
    if m is not None:
        try:
            value = float.fromhex(text.decode())
        except OverflowError:
            return (-_INF if m[1] == b"-" else _INF), True
        if value == 0.0:
            return value, bool((m[2] or b"").strip(b"0") or (m[3] or m[4] or b"").strip(b"0"))
        return value, False
    if _INF_RE.fullmatch(text):
        return (-_INF if text[:1] == b"-" else _INF), False
    return None  # not a number, or "nan" / "nan(...)" which every caller rejects


def _parse_double(arg: bytes) -> float | None:
    """Redis's string2d (scores of ZADD/ZINCRBY): the whole argument, no leading space,
    no NaN, no overflow or underflow to zero."""
    if not arg or arg[0] in _SPACE:
        return None
    parsed = _strtod(arg)
    if parsed is None or parsed[1]:
        return None
    return parsed[0]


def _parse_range_bound(arg: bytes) -> tuple[float, bool] | None:
    """One side of a score range (zslParseRange): (value, exclusive) or None.

    Redis calls plain strtod on the C string here, which is laxer than string2d:
    leading whitespace is skipped, overflow gives +-inf, underflow gives 0, and an
    empty string is 0 (strtod converts nothing and stops on the terminating NUL).
    """
    exclusive = arg[:1] == b"("
    text = _cstr(arg[1:] if exclusive else arg)
    if not text:
        return 0.0, exclusive
    parsed = _strtod(text.lstrip(_SPACE))
    if parsed is None:
        return None
    return parsed[0], exclusive


# x87 extended precision ("long double" on x86-64 Linux): a 64-bit significand and a
# 15-bit exponent.  A finite value is held exactly as an integer pair (m, e) meaning
# m * 2**e with |m| < 2**64 (after rounding); +-inf as a float.
LongDouble = tuple[int, int]
_LD_QUANTUM_MIN = -16445  # exponent of the smallest subnormal's only bit
_LD_MAX_CHARS = 5 * 1024  # MAX_LONG_DOUBLE_CHARS
_LD_ZERO: LongDouble = (0, 0)
_DEC_CHUNK = 4000  # stay below Python's int <-> decimal string conversion limit
_DEC_CHUNK_POW = 10**_DEC_CHUNK
_TEN_17 = 10**17


def _dec_to_int(digits: bytes) -> int:
    if len(digits) <= _DEC_CHUNK:
        return int(digits)
    value = 0
    for i in range(0, len(digits), _DEC_CHUNK):
        chunk = digits[i:i + _DEC_CHUNK]
        value = value * 10**len(chunk) + int(chunk)
    return value


def _int_to_dec(value: int) -> bytes:
    if value < _DEC_CHUNK_POW:
        return b"%d" % value
    high, low = divmod(value, _DEC_CHUNK_POW)
    return _int_to_dec(high) + (b"%d" % low).rjust(_DEC_CHUNK, b"0")


def _ld_round(m: int, e: int, sticky: bool = False) -> LongDouble | None:
    """Round (m + a sticky fraction below its last bit) * 2**e to the nearest long
    double, ties to even; None on overflow.  Zero stays zero."""
    if not m:
        return _LD_ZERO
    negative = m < 0
    if negative:
        m = -m
    quantum = max(e + m.bit_length() - 64, _LD_QUANTUM_MIN)
    if quantum > e:
        shift = quantum - e
        q = m >> shift
        rest = m & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if rest > half or (rest == half and (sticky or q & 1)):
            q += 1
        m, e = q, quantum
    if m.bit_length() + e > 16384:  # >= 2**16384: beyond the largest long double
        return None
    return (-m if negative else m), e


def _parse_long_double(arg: bytes) -> LongDouble | float | None:
    """Redis's string2ld: strtold consuming the whole argument, rejecting leading
    space, trailing garbage (a NUL byte included), NaN, overflow and underflow to zero."""
    size = len(arg)
    if size == 0 or size >= _LD_MAX_CHARS or arg[0] in _SPACE:
        return None
    m = _DEC_RE.fullmatch(arg)
    if m is not None:
        frac = m[3] or m[4] or b""
        digits = ((m[2] or b"") + frac).lstrip(b"0")
        if not digits:
            return _LD_ZERO
        exp = _exponent(m[5]) - len(frac)
        if len(digits) - 1 + exp > 4933 or len(digits) + exp < -4952:
            return None  # certainly beyond the largest long double / below half the least
        mantissa = _dec_to_int(digits)
        if exp >= 0:
            value = _ld_round(mantissa * 10**exp, 0)
        else:
            # mantissa / 10**-exp with at least 66 quotient bits, the remainder sticky.
            divisor = 10**-exp
            shift = max(0, divisor.bit_length() - mantissa.bit_length() + 66)
            q, r = divmod(mantissa << shift, divisor)
            value = _ld_round(q, -shift, r != 0)
    else:
        m = _HEX_RE.fullmatch(arg)
        if m is None:
            if _INF_RE.fullmatch(arg):
                return -_INF if arg[:1] == b"-" else _INF
            return None
        frac = m[3] or m[4] or b""
        mantissa = int((m[2] or b"") + frac, 16)
        if not mantissa:
            return _LD_ZERO
        exp = _exponent(m[5]) - 4 * len(frac)
        bits = mantissa.bit_length()
        if bits - 1 + exp >= 16384 or bits + exp < _LD_QUANTUM_MIN - 1:
            return None
        value = _ld_round(mantissa, exp)
    if value is None or not value[0]:  # overflow, or a nonzero value rounding to zero
        return None
    return (-value[0], value[1]) if m[1] == b"-" else value


def _ld_add(a: LongDouble | float, b: LongDouble | float) -> LongDouble | None:
    """a + b in long double arithmetic; None when the result is NaN or infinite."""
    if type(a) is float or type(b) is float:
        return None  # inf + x is inf, inf - inf is NaN: both are refused
    (ma, ea), (mb, eb) = a, b
    if ea < eb:
        mb <<= eb - ea
        eb = ea
    elif eb < ea:
        ma <<= ea - eb
    return _ld_round(ma + mb, eb)


def _ld_human(value: LongDouble) -> bytes:
    """ld2string(LD_STR_HUMAN): "%.17Lf", trailing zeros and a bare '.' removed,
    "-0" turned into "0".  glibc rounds the exact binary value, ties to even."""
    m, e = value
    negative = m < 0
    if negative:
        m = -m
    if e >= 0:
        q = m << e
        text = _int_to_dec(q)
    else:
        scaled = m * _TEN_17
        q = scaled >> -e
        rest = scaled & ((1 << -e) - 1)
        half = 1 << (-e - 1)
        if rest > half or (rest == half and q & 1):
            q += 1
        digits = _int_to_dec(q).rjust(18, b"0")
        frac = digits[-17:].rstrip(b"0")
        text = digits[:-17] + b"." + frac if frac else digits[:-17]
    return b"-" + text if negative and q else text


_SCORE_TEXT: dict[float, bytes] = {}


def _score_bytes(score: float) -> bytes:
    """addReplyDouble in RESP2: "%.17g" (which prints inf and -inf as Redis does).

    Memoised: formatting costs more than a dict lookup and scores repeat a lot
    (rankings, timestamps).  Zero is not cached: 0.0 and -0.0 are equal keys but
    print differently."""
    text = _SCORE_TEXT.get(score)
    if text is None:
        text = b"%.17g" % score
        if score:
            if len(_SCORE_TEXT) >= 4096:
                _SCORE_TEXT.clear()
            _SCORE_TEXT[score] = text
    return text


_TWO_62 = float(2**62)  # (double)(LLONG_MAX / 2), double2ll's safe range


def _score_text(score: float) -> bytes:
    """d2string: how a small sorted set stores a score, which ZSCAN shows verbatim:
    integral values within +-2^62 print as integers ("100000000000000000", where
    "%.17g" gives "1e+17"), anything else with "%.17g"."""
    if -_TWO_62 <= score <= _TWO_62 and score == int(score):
        return b"%d" % int(score)
    return b"%.17g" % score


def _parse_cursor(arg: bytes) -> int | None:
    """parseScanCursorOrReply: strtoul over the C string, no leading space."""
    if arg[:1] and arg[0] in _SPACE:
        return None
    text = _cstr(arg)
    if not text:
        return 0
    digits = text[1:] if text[:1] in (b"+", b"-") else text
    if not digits.isdigit():
        return None
    stripped = digits.lstrip(b"0")
    if len(stripped) > 20:
        return None
    value = int(stripped or b"0")
    if value > _ULONG_MASK:
        return None
    return (-value) & _ULONG_MASK if text[:1] == b"-" else value


# ------------------------------------------------------------------ lex ranges
# shared.minstring / shared.maxstring: the "-" and "+" bounds of BYLEX ranges.
_LEX_MIN = object()
_LEX_MAX = object()


def _parse_lex_bound(arg: bytes) -> tuple[Any, bool] | None:
    """zslParseLexRangeItem: (bound, exclusive) or None."""
    head = arg[:1]
    if head == b"+" or head == b"-":
        if len(arg) > 1 and arg[1] != 0:
            return None
        return (_LEX_MAX if head == b"+" else _LEX_MIN), True
    if head == b"(":
        return arg[1:], True
    if head == b"[":
        return arg[1:], False
    return None


def _lex_cmp(a: Any, b: Any) -> int:
    """sdscmplex."""
    if a is b:
        return 0
    if a is _LEX_MIN or b is _LEX_MAX:
        return -1
    if a is _LEX_MAX or b is _LEX_MIN:
        return 1
    return (a > b) - (a < b)


def _lex_gte_min(member: bytes, bound: tuple[Any, bool]) -> bool:
    cmp = _lex_cmp(member, bound[0])
    return cmp > 0 if bound[1] else cmp >= 0


def _lex_lte_max(member: bytes, bound: tuple[Any, bool]) -> bool:
    cmp = _lex_cmp(member, bound[0])
    return cmp < 0 if bound[1] else cmp <= 0


_SCORE = itemgetter(0)
_MEMBER = itemgetter(1)


def _lex_first(items: list[tuple[float, bytes]], low: tuple[Any, bool],
               high: tuple[Any, bool]) -> int:
    """Index of zzlFirstInLexRange's element, or -1.

    When all scores are equal (the only case Redis defines) the members are sorted and
    bisection finds it; otherwise the listpack encoding's linear scan is reproduced."""
    cmp = _lex_cmp(low[0], high[0])
    if cmp > 0 or (cmp == 0 and (low[1] or high[1])) or not items:
        return -1
    if not _lex_gte_min(items[-1][1], low) or not _lex_lte_max(items[0][1], high):
        return -1
    if items[0][0] == items[-1][0]:
        bound = low[0]
        if bound is _LEX_MIN:
            i = 0
        elif low[1]:
            i = bisect_right(items, bound, key=_MEMBER)
        else:
            i = bisect_left(items, bound, key=_MEMBER)
    else:
        i = 0
        while not _lex_gte_min(items[i][1], low):
            i += 1  # terminates: the last member is >= low
    return i if _lex_lte_max(items[i][1], high) else -1


def _lex_last(items: list[tuple[float, bytes]], low: tuple[Any, bool],
              high: tuple[Any, bool]) -> int:
    """Index of zzlLastInLexRange's element, or -1."""
    cmp = _lex_cmp(low[0], high[0])
    if cmp > 0 or (cmp == 0 and (low[1] or high[1])) or not items:
        return -1
    if not _lex_gte_min(items[-1][1], low) or not _lex_lte_max(items[0][1], high):
        return -1
    if items[0][0] == items[-1][0]:
        bound = high[0]
        if bound is _LEX_MAX:
            i = len(items) - 1
        elif high[1]:
            i = bisect_left(items, bound, key=_MEMBER) - 1
        else:
            i = bisect_right(items, bound, key=_MEMBER) - 1
    else:
        i = len(items) - 1
        while not _lex_lte_max(items[i][1], high):
            i -= 1  # terminates: the first member is <= high
    return i if _lex_gte_min(items[i][1], low) else -1


def _score_span(items: list[tuple[float, bytes]], low: tuple[float, bool],
                high: tuple[float, bool]) -> tuple[int, int]:
    """[first, stop) of the elements whose score lies in the range."""
    first = (bisect_right if low[1] else bisect_left)(items, low[0], key=_SCORE)
    stop = (bisect_left if high[1] else bisect_right)(items, high[0], key=_SCORE)
    return first, max(first, stop)


# --------------------------------------------------------------- glob matching

def _signed(byte: int) -> int:
    """A byte as C's (signed) char on x86."""
    return byte - 256 if byte > 127 else byte


def _stringmatch(pattern: bytes, string: bytes) -> bool:
    """Redis's stringmatchlen (case-sensitive), quirks included.

    Iterative: Redis recurses once per '*' but gives up as soon as the innermost star
    has tried every position (skipLongerMatches), so only the most recent star ever
    needs to be resumed.  Quirks kept: an empty string matches only an empty pattern
    (even "**" does not match it), an unterminated '[' class runs to the pattern's
    end, "a-]" inside a class is a range up to ']', and ranges compare signed chars.
    """
    plen = len(pattern)
    slen = len(string)
    p = s = 0
    star = -1  # pattern index of the '*' being resumed
    star_s = 0  # string index its remainder is being tried at
    while True:
        ok = True
        while p < plen and s < slen:
            c = pattern[p]
            if c == 42:  # '*'
                while p + 1 < plen and pattern[p + 1] == 42:
                    p += 1
                if p == plen - 1:
                    return True
                star, star_s = p, s
                p += 1
                continue
            if c == 63:  # '?'
                pass
            elif c == 91:  # '['
                p += 1
                negate = p < plen and pattern[p] == 94  # '^'
                if negate:
                    p += 1
                match = False
                sc = string[s]
                while True:
                    left = plen - p
                    pc = pattern[p] if left > 0 else 0
                    if pc == 92 and left >= 2:  # '\\'
                        p += 1
                        if pattern[p] == sc:
                            match = True
                    elif pc == 93 and left > 0:  # ']'
                        break
                    elif left == 0:
                        p -= 1
                        break
                    elif left >= 3 and pattern[p + 1] == 45:  # 'x-y'
                        start, end = _signed(pc), _signed(pattern[p + 2])
                        if start > end:
                            start, end = end, start
                        if start <= _signed(sc) <= end:
                            match = True
                        p += 2
                    elif pc == sc:
                        match = True
                    p += 1
                if negate:
                    match = not match
                if not match:
                    ok = False
                    break
            else:
                if c == 92 and plen - p >= 2:  # '\\' escapes the next byte
                    p += 1
                    c = pattern[p]
                if c != string[s]:
                    ok = False
                    break
            s += 1
            p += 1
            if s == slen:
                while p < plen and pattern[p] == 42:
                    p += 1
                break
        if ok and p == plen and s == slen:
            return True
        if star < 0:
            return False
        star_s += 1
        if star_s >= slen:
            return False
        p, s = star + 1, star_s


_GLOB_SPECIAL = re.compile(rb"[*?\[\\]")


def _matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """A predicate equivalent to _stringmatch(pattern, .) with fast paths."""
    if not _GLOB_SPECIAL.search(pattern):
        return pattern.__eq__
    if pattern[-1:] == b"*":
        prefix = pattern.rstrip(b"*")
        if prefix and not _GLOB_SPECIAL.search(prefix):
            return lambda s: s.startswith(prefix)
    return lambda s: _stringmatch(pattern, s)


def _wrap64(value: int) -> int:
    """value as a C int64 after two's-complement wrap-around."""
    return ((value + 2**63) & _ULONG_MASK) - 2**63


def _random_element(collection: set | dict) -> Any:
    """A uniformly random member/field; O(n) because Python sets and dicts have no
    random access (Redis's dictGetFairRandomKey is O(1))."""
    size = len(collection)
    if size == 1:
        return next(iter(collection))
    return next(islice(collection, _rng.randrange(size), None))


# Range kinds of zrangeGenericCommand.
_ZR_AUTO, _ZR_RANK, _ZR_SCORE, _ZR_LEX = range(4)


def _rank_slice(items: list, start: int, end: int, reverse: bool) -> list:
    """genericZrangebyrankCommand's selection, in reply order."""
    size = len(items)
    if start < 0:
        start += size
    if end < 0:
        end += size
    start = max(start, 0)
    if start > end or start >= size:
        return []
    end = min(end, size - 1)
    if reverse:
        out = items[size - 1 - end:size - start]
        out.reverse()
        return out
    return items[start:end + 1]


def _score_slice(items: list, low: tuple[float, bool], high: tuple[float, bool],
                 offset: int, limit: int, reverse: bool) -> list:
    """genericZrangebyscoreCommand's selection, in reply order.  A negative offset
    skips past the end (C's `while (offset--)`), a negative limit means no limit."""
    first, stop = _score_span(items, low, high)
    if first >= stop or offset < 0:
        return []
    if not reverse:
        begin = first + offset
        if begin >= stop:
            return []
        return items[begin:stop if limit < 0 else min(stop, begin + limit)]
    top = stop - 1 - offset
    if top < first:
        return []
    bottom = first if limit < 0 else max(first, top - limit + 1)
    out = items[bottom:top + 1]
    out.reverse()
    return out


def _lex_slice(items: list, low: tuple, high: tuple, offset: int, limit: int,
               reverse: bool) -> list:
    """genericZrangebylexCommand's selection, in reply order: from the first (last)
    element in range, skip offset elements, then emit while still <= high (>= low)."""
    size = len(items)
    if offset < 0 or offset >= size:
        return []
    i = _lex_last(items, low, high) if reverse else _lex_first(items, low, high)
    if i < 0:
        return []
    out = []
    if reverse:
        i -= offset
        while i >= 0 and limit != 0:
            pair = items[i]
            if not _lex_gte_min(pair[1], low):
                break
            out.append(pair)
            limit -= 1
            i -= 1
    else:
        i += offset
        while i < size and limit != 0:
            pair = items[i]
            if not _lex_lte_max(pair[1], high):
                break
            out.append(pair)
            limit -= 1
            i += 1
    return out


def _hash_run(keys: Iterable[bytes]) -> tuple[list[int], list[bytes]]:
    """Keys sorted by hash, with their hashes (bytes cache their hash: cheap)."""
    ordered = sorted(keys, key=hash)
    return list(map(hash, ordered)), ordered


def _duplicate(value: Any) -> Any:
    """A deep copy for COPY (members and values are immutable bytes)."""
    if type(value) is bytes:
        return value
    return value.copy()


class LocalStore:
    """An in-memory keyspace that executes Redis 7.0 commands on argument lists."""

    __slots__ = ("_clock", "_commands", "_data", "_expires", "_heap", "_lru", "_max",
                 "_scan_delta", "_scan_runs")

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
        # SCAN's index: runs of keys sorted by hash, built by the first SCAN; keys
        # created since then wait in _scan_delta until the next SCAN 0 adds them.
        self._scan_runs: list[tuple[list[int], list[bytes]]] | None = None
        self._scan_delta: list[bytes] | None = None
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
            # strings: read-modify-write
            ("incr", 2, self._incr),
            ("decr", 2, self._decr),
            ("incrby", 3, self._incrby),
            ("decrby", 3, self._decrby),
            ("incrbyfloat", 3, self._incrbyfloat),
            ("append", 3, self._append),
            ("setrange", 4, self._setrange),
            ("getrange", 4, self._getrange),
            ("substr", 4, self._getrange),
            # keys
            ("rename", 3, self._rename),
            ("renamenx", 3, self._renamenx),
            ("copy", -3, self._copy),
            ("scan", -2, self._scan),
            ("keys", 2, self._keys),
            ("randomkey", 1, self._randomkey),
            # hashes
            ("hset", -4, self._hset),
            ("hmset", -4, self._hset),
            ("hsetnx", 4, self._hsetnx),
            ("hget", 3, self._hget),
            ("hmget", -3, self._hmget),
            ("hdel", -3, self._hdel),
            ("hexists", 3, self._hexists),
            ("hlen", 2, self._hlen),
            ("hgetall", 2, self._hgetall),
            ("hkeys", 2, self._hkeys),
            ("hvals", 2, self._hvals),
            ("hstrlen", 3, self._hstrlen),
            ("hincrby", 4, self._hincrby),
            ("hincrbyfloat", 4, self._hincrbyfloat),
            ("hrandfield", -2, self._hrandfield),
            ("hscan", -3, self._hscan),
            # sets
            ("sadd", -3, self._sadd),
            ("srem", -3, self._srem),
            ("sismember", 3, self._sismember),
            ("smismember", -3, self._smismember),
            ("smembers", 2, self._smembers),
            ("scard", 2, self._scard),
            ("spop", -2, self._spop),
            ("srandmember", -2, self._srandmember),
            ("sinter", -2, self._sinter),
            ("sunion", -2, self._sunion),
            ("sdiff", -2, self._sdiff),
            ("sinterstore", -3, self._sinterstore),
            ("sunionstore", -3, self._sunionstore),
            ("sdiffstore", -3, self._sdiffstore),
            ("smove", 4, self._smove),
            ("sintercard", -3, self._sintercard),
            ("sscan", -3, self._sscan),
            # lists
            ("lpush", -3, self._lpush),
            ("rpush", -3, self._rpush),
            ("lpushx", -3, self._lpushx),
            ("rpushx", -3, self._rpushx),
            ("lpop", -2, self._lpop),
            ("rpop", -2, self._rpop),
            ("lrange", 4, self._lrange),
            ("llen", 2, self._llen),
            ("lindex", 3, self._lindex),
            ("lset", 4, self._lset),
            ("ltrim", 4, self._ltrim),
            ("lmove", 5, self._lmove),
            ("rpoplpush", 3, self._rpoplpush),
            ("lrem", 4, self._lrem),
            ("lpos", -3, self._lpos),
            ("linsert", 5, self._linsert),
            # sorted sets
            ("zadd", -4, self._zadd),
            ("zincrby", 4, self._zincrby),
            ("zrem", -3, self._zrem),
            ("zscore", 3, self._zscore),
            ("zmscore", -3, self._zmscore),
            ("zcard", 2, self._zcard),
            ("zcount", 4, self._zcount),
            ("zlexcount", 4, self._zlexcount),
            ("zrank", 3, self._zrank),
            ("zrevrank", 3, self._zrevrank),
            ("zrange", -4, self._zrange),
            ("zrangestore", -5, self._zrangestore),
            ("zrevrange", -4, self._zrevrange),
            ("zrangebyscore", -4, self._zrangebyscore),
            ("zrevrangebyscore", -4, self._zrevrangebyscore),
            ("zrangebylex", -4, self._zrangebylex),
            ("zrevrangebylex", -4, self._zrevrangebylex),
            ("zremrangebyscore", 4, self._zremrangebyscore),
            ("zremrangebyrank", 4, self._zremrangebyrank),
            ("zremrangebylex", 4, self._zremrangebylex),
            ("zpopmin", -2, self._zpopmin),
            ("zpopmax", -2, self._zpopmax),
            ("zrandmember", -2, self._zrandmember),
            ("zscan", -3, self._zscan),
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
            delta = self._scan_delta
            if delta is not None:
                delta.append(key)
                if len(delta) > len(data) + _HEAP_SLACK:
                    # No SCAN 0 for a long time: free the index; the next SCAN rebuilds.
                    self._scan_runs = self._scan_delta = None
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
        self._scan_runs = self._scan_delta = None
        return _OK

    # ------------------------------------------------------- generic helpers

    @staticmethod
    def _arity_error(fullname: str) -> hiredis.ReplyError:
        return _err(f"ERR wrong number of arguments for '{fullname}' command")

    def _replace(self, key: bytes, value: Any) -> None:
        """Swap in a new value for an existing, already looked-up key: its TTL and its
        LRU position (refreshed by that lookup) stay, like Redis's dbOverwrite of an
        in-place update."""
        self._data[key] = value

    def _drop_if_empty(self, key: bytes, value: Any) -> None:
        if not value:
            self._remove(key)

    def _delete_if_exists(self, key: bytes) -> None:
        if self._lookup_notouch(key) is not None:
            self._remove(key)

    # ----------------------------------------------------- strings (counters)

    def _incr_generic(self, key: bytes, incr: int) -> Reply:
        """incrDecrCommand: type, then the stored value, then overflow."""
        old = self._lookup(key)
        if old is None:
            value = 0
        elif type(old) is not bytes:
            return _err(_WRONGTYPE)
        else:
            value = _parse_ll(old)
            if value is None:
                return _err(_NOT_INT)
        if (incr < 0 and value < 0 and incr < LLONG_MIN - value) or \
                (incr > 0 and value > 0 and incr > LLONG_MAX - value):
            return _err(_OVERFLOW)
        value += incr
        if old is None:
            self._store(key, b"%d" % value)
        else:
            self._replace(key, b"%d" % value)  # INCR keeps the TTL
        return value

    def _incr(self, args: list[bytes]) -> Reply:
        return self._incr_generic(args[1], 1)

    def _decr(self, args: list[bytes]) -> Reply:
        return self._incr_generic(args[1], -1)

    def _incrby(self, args: list[bytes]) -> Reply:
        incr = _parse_ll(args[2])
        if incr is None:
            return _err(_NOT_INT)
        return self._incr_generic(args[1], incr)

    def _decrby(self, args: list[bytes]) -> Reply:
        incr = _parse_ll(args[2])
        if incr is None:
            return _err(_NOT_INT)
        if incr == LLONG_MIN:
            return _err("ERR decrement would overflow")
        return self._incr_generic(args[1], -incr)

    def _incrbyfloat(self, args: list[bytes]) -> Reply:
        key = args[1]
        old = self._lookup(key)
        if old is None:
            value: LongDouble | float | None = _LD_ZERO
        elif type(old) is not bytes:
            return _err(_WRONGTYPE)
        else:
            value = _parse_long_double(old)
        if value is None:
            return _err(_NOT_FLOAT)
        incr = _parse_long_double(args[2])
        if incr is None:
            return _err(_NOT_FLOAT)
        result = _ld_add(value, incr)
        if result is None:
            return _err(_NAN_OR_INF)
        text = _ld_human(result)
        if old is None:
            self._store(key, text)
        else:
            self._replace(key, text)
        return text

    def _append(self, args: list[bytes]) -> Reply:
        key, tail = args[1], args[2]
        old = self._lookup(key)
        if old is None:
            self._store(key, tail)
            return len(tail)
        if type(old) is not bytes:
            return _err(_WRONGTYPE)
        total = len(old) + len(tail)
        if total > _MAX_STRING:
            return _err(_TOO_BIG)
        if tail:
            self._replace(key, old + tail)
        return total

    def _setrange(self, args: list[bytes]) -> Reply:
        offset = _parse_ll(args[2])
        if offset is None:
            return _err(_NOT_INT)
        if offset < 0:
            return _err("ERR offset is out of range")
        key, chunk = args[1], args[3]
        old = self._lookup(key)
        if old is None:
            if not chunk:
                return 0
            if offset + len(chunk) > _MAX_STRING:
                return _err(_TOO_BIG)
            self._store(key, bytes(offset) + chunk)
            return offset + len(chunk)
        if type(old) is not bytes:
            return _err(_WRONGTYPE)
        if not chunk:
            return len(old)
        end = offset + len(chunk)
        if end > _MAX_STRING:
            return _err(_TOO_BIG)
        if offset > len(old):
            new = old + bytes(offset - len(old)) + chunk
        else:
            new = old[:offset] + chunk + old[end:]
        self._replace(key, new)
        return len(new)

    def _getrange(self, args: list[bytes]) -> Reply:
        start = _parse_ll(args[2])
        end = _parse_ll(args[3]) if start is not None else None
        if end is None:
            return _err(_NOT_INT)
        value = self._lookup(args[1])
        if value is None:
            return b""
        if type(value) is not bytes:
            return _err(_WRONGTYPE)
        size = len(value)
        if start < 0 and end < 0 and start > end:
            return b""
        if start < 0:
            start = max(size + start, 0)
        if end < 0:
            end = max(size + end, 0)
        end = min(end, size - 1)
        if start > end or size == 0:
            return b""
        return value[start:end + 1]

    # ------------------------------------------------------------ key commands

    def _rename_generic(self, args: list[bytes], nx: bool) -> Reply:
        src, dst = args[1], args[2]
        value = self._lookup(src)
        if value is None:
            return _err(_NO_KEY)
        if src == dst:
            return 0 if nx else _OK
        when = self._expires.get(src)
        if nx and self._lookup(dst) is not None:
            return 0
        # Removing the source first means the move never needs to evict anything.
        self._remove(src)
        self._store(dst, value)
        if when is not None:
            self._set_expire(dst, when)
        return 1 if nx else _OK

    def _rename(self, args: list[bytes]) -> Reply:
        return self._rename_generic(args, False)

    def _renamenx(self, args: list[bytes]) -> Reply:
        return self._rename_generic(args, True)

    def _copy(self, args: list[bytes]) -> Reply:
        replace = False
        n = len(args)
        j = 3
        while j < n:
            opt = _opt(args[j])
            if opt == b"REPLACE":
                replace = True
            elif opt == b"DB" and j + 1 < n:
                db = _parse_ll(args[j + 1])
                if db is None:
                    return _err(_NOT_INT)
                if not _INT_MIN <= db <= _INT_MAX:
                    return _err("ERR value is out of range, value must between -2147483648 "
                                "and 2147483647")
                if db != 0:
                    # One database only, as a Redis started with "databases 1".
                    return _err("ERR DB index is out of range")
                j += 1
            else:
                return _err(_SYNTAX)
            j += 1
        src, dst = args[1], args[2]
        if src == dst:
            return _err("ERR source and destination objects are the same")
        value = self._lookup(src)
        if value is None:
            return 0
        when = self._expires.get(src)
        if self._lookup(dst) is not None and not replace:
            return 0
        self._store(dst, _duplicate(value))
        if when is not None:
            self._set_expire(dst, when)
        return 1

    def _scan_options(self, args: list[bytes], i: int, keyspace: bool,
                      ) -> tuple[int, bytes | None, bytes | None] | hiredis.ReplyError:
        """scanGenericCommand's option loop: (count, pattern or None, type or None)."""
        count = 10
        pattern = typename = None
        n = len(args)
        while i < n:
            opt = _opt(args[i])
            more = i + 1 < n
            if opt == b"COUNT" and more:
                count = _parse_ll(args[i + 1])
                if count is None:
                    return _err(_NOT_INT)
                if count < 1:
                    return _err(_SYNTAX)
            elif opt == b"MATCH" and more:
                pattern = args[i + 1]
            elif opt == b"TYPE" and keyspace and more:
                typename = _cstr(args[i + 1]).lower()
            else:
                return _err(_SYNTAX)
            i += 2
        if pattern == b"*":
            pattern = None
        return count, pattern, typename

    def _scan(self, args: list[bytes]) -> Reply:
        cursor = _parse_cursor(args[1])
        if cursor is None:
            return _err(_BAD_CURSOR)
        options = self._scan_options(args, 2, True)
        if isinstance(options, hiredis.ReplyError):
            return options
        count, pattern, typename = options
        runs = self._scan_runs_for(cursor == 0)
        # The batch is every key whose hash lies in [cursor, bound], bound being the
        # COUNT-th smallest hash >= cursor over all runs (whole equal-hash groups).
        position = cursor - _HASH_OFFSET
        starts = []
        candidates: list[int] = []
        for hashes, _ in runs:
            i = bisect_left(hashes, position)
            starts.append(i)
            candidates += hashes[i:i + count]
        if not candidates:
            return [b"0", []]
        if len(candidates) > count:
            candidates.sort()
            bound = candidates[count - 1]
        else:
            bound = max(candidates)
        more = False
        batch: list[bytes] = []
        for (hashes, run_keys), i in zip(runs, starts, strict=True):
            j = bisect_right(hashes, bound, i)
            batch += run_keys[i:j]
            more = more or j < len(hashes)
        next_cursor = bound + _HASH_OFFSET + 1 if more else 0
        match = _matcher(pattern) if pattern is not None else None
        lookup = self._lookup_notouch
        keys = []
        seen: set[bytes] = set()
        for key in batch:
            if key in seen:
                continue  # deleted and re-created: in two runs, returned once
            seen.add(key)
            if match is not None and not match(key):
                continue
            value = lookup(key)
            if value is None:
                continue
            if typename is not None and _TYPE_NAMES.get(type(value)) != typename:
                continue
            keys.append(key)
        return [b"%d" % next_cursor, keys]

    def _scan_runs_for(self, new_scan: bool) -> list[tuple[list[int], list[bytes]]]:
        """SCAN's index: runs of (hashes, keys) sorted by hash.

        A cursor is "the next hash position", so it stays valid however the index
        changes.  The first SCAN sorts every key (O(n log n), once).  Keys created later
        become a new small run when a scan starts (keys created during a scan need not
        be returned); runs are merged size-tiered, so there are O(log n) of them and a
        key takes part in O(log n) merges.  Entries of deleted keys are dropped by a
        rebuild once they outnumber live keys (amortised over those deletions)."""
        runs = self._scan_runs
        data = self._data
        if runs is None:
            self._sweep(None)
            runs = self._scan_runs = [_hash_run(data)]
            self._scan_delta = []
        elif new_scan and self._scan_delta:
            runs.append(_hash_run(self._scan_delta))
            self._scan_delta = []
            while len(runs) > 1 and len(runs[-2][1]) <= 2 * len(runs[-1][1]):
                newer = runs.pop()
                runs[-1] = _hash_run(runs[-1][1] + newer[1])  # Timsort: merges two runs
            if sum(len(keys) for _, keys in runs) > 2 * len(data) + _HEAP_SLACK:
                runs[:] = [_hash_run(data)]
        return runs

    def _keys(self, args: list[bytes]) -> Reply:
        self._sweep(None)
        pattern = args[1]
        if pattern == b"*":
            return list(self._data)
        match = _matcher(pattern)
        return [key for key in self._data if match(key)]

    def _randomkey(self, args: list[bytes]) -> Reply:
        self._sweep(None)
        data = self._data
        if not data:
            return None
        return next(islice(data, _rng.randrange(len(data)), None))

    def _collection_scan(self, args: list[bytes], kind: type) -> Any:
        """HSCAN/SSCAN/ZSCAN prologue: cursor, key (nil -> empty scan), type, options.
        Returns the collection and the pattern, or a finished reply as a list/error."""
        if _parse_cursor(args[2]) is None:
            return _err(_BAD_CURSOR)
        value = self._lookup(args[1])
        if value is None:
            return [b"0", []]
        if type(value) is not kind:
            return _err(_WRONGTYPE)
        options = self._scan_options(args, 3, False)
        if isinstance(options, hiredis.ReplyError):
            return options
        return value, options[1]

    def _hscan(self, args: list[bytes]) -> Reply:
        found = self._collection_scan(args, dict)
        if type(found) is not tuple:
            return found
        table, pattern = found
        if pattern is None:
            return [b"0", [x for pair in table.items() for x in pair]]
        match = _matcher(pattern)
        return [b"0", [x for pair in table.items() if match(pair[0]) for x in pair]]

    def _sscan(self, args: list[bytes]) -> Reply:
        found = self._collection_scan(args, set)
        if type(found) is not tuple:
            return found
        members, pattern = found
        if pattern is None:
            return [b"0", list(members)]
        match = _matcher(pattern)
        return [b"0", [m for m in members if match(m)]]

    def _zscan(self, args: list[bytes]) -> Reply:
        found = self._collection_scan(args, ZSet)
        if type(found) is not tuple:
            return found
        zset, pattern = found
        match = _matcher(pattern) if pattern is not None else None
        out = []
        for score, member in zset.items:
            if match is None or match(member):
                out.append(member)
                out.append(_score_text(score))
        return [b"0", out]

    # ------------------------------------------------------------------ hashes

    def _hash_for_read(self, key: bytes) -> Any:
        """The hash at key, None if missing, or a WRONGTYPE error."""
        value = self._lookup(key)
        if value is not None and type(value) is not dict:
            return _err(_WRONGTYPE)
        return value

    def _hset(self, args: list[bytes]) -> Reply:
        n = len(args)
        if n % 2:
            return self._arity_error("hset" if args[0][1:2] in (b"s", b"S") else "hmset")
        key = args[1]
        table = self._lookup(key)
        created = table is None
        if created:
            table = {}
        elif type(table) is not dict:
            return _err(_WRONGTYPE)
        before = len(table)
        for i in range(2, n, 2):
            table[args[i]] = args[i + 1]
        if created:
            self._store(key, table)
        if args[0][1:2] in (b"s", b"S"):  # HSET counts new fields, HMSET says OK
            return len(table) - before
        return _OK

    def _hsetnx(self, args: list[bytes]) -> Reply:
        key, field = args[1], args[2]
        table = self._lookup(key)
        if table is None:
            self._store(key, {field: args[3]})
            return 1
        if type(table) is not dict:
            return _err(_WRONGTYPE)
        if field in table:
            return 0
        table[field] = args[3]
        return 1

    def _hget(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None or type(table) is not dict:
            return table
        return table.get(args[2])

    def _hmget(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None:
            return [None] * (len(args) - 2)
        if type(table) is not dict:
            return table
        get = table.get
        return [get(field) for field in args[2:]]

    def _hdel(self, args: list[bytes]) -> Reply:
        key = args[1]
        table = self._hash_for_read(key)
        if table is None:
            return 0
        if type(table) is not dict:
            return table
        deleted = 0
        for field in args[2:]:
            if table.pop(field, None) is not None:
                deleted += 1
        self._drop_if_empty(key, table)
        return deleted

    def _hexists(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None:
            return 0
        if type(table) is not dict:
            return table
        return 1 if args[2] in table else 0

    def _hlen(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None:
            return 0
        if type(table) is not dict:
            return table
        return len(table)

    def _hgetall(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None:
            return []
        if type(table) is not dict:
            return table
        return [x for pair in table.items() for x in pair]

    def _hkeys(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None:
            return []
        if type(table) is not dict:
            return table
        return list(table)

    def _hvals(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None:
            return []
        if type(table) is not dict:
            return table
        return list(table.values())

    def _hstrlen(self, args: list[bytes]) -> Reply:
        table = self._hash_for_read(args[1])
        if table is None:
            return 0
        if type(table) is not dict:
            return table
        value = table.get(args[2])
        return 0 if value is None else len(value)

    def _hincrby(self, args: list[bytes]) -> Reply:
        incr = _parse_ll(args[3])
        if incr is None:
            return _err(_NOT_INT)
        key, field = args[1], args[2]
        table = self._hash_for_read(key)
        if table is not None and type(table) is not dict:
            return table
        old = table.get(field) if table is not None else None
        if old is None:
            value = 0
        else:
            value = _parse_ll(old)
            if value is None:
                return _err("ERR hash value is not an integer")
        if (incr < 0 and value < 0 and incr < LLONG_MIN - value) or \
                (incr > 0 and value > 0 and incr > LLONG_MAX - value):
            return _err(_OVERFLOW)
        value += incr
        if table is None:
            self._store(key, {field: b"%d" % value})
        else:
            table[field] = b"%d" % value
        return value

    def _hincrbyfloat(self, args: list[bytes]) -> Reply:
        incr = _parse_long_double(args[3])
        if incr is None:
            return _err(_NOT_FLOAT)
        if type(incr) is float:
            return _err("ERR value is NaN or Infinity")
        key, field = args[1], args[2]
        table = self._hash_for_read(key)
        if table is not None and type(table) is not dict:
            return table
        old = table.get(field) if table is not None else None
        value: LongDouble | float | None = _LD_ZERO
        if old is not None:
            value = _parse_long_double(old)
            if value is None:
                return _err("ERR hash value is not a float")
        result = _ld_add(value, incr)
        if result is None:
            return _err(_NAN_OR_INF)
        text = _ld_human(result)
        if table is None:
            self._store(key, {field: text})
        else:
            table[field] = text
        return text

    @staticmethod
    def _parse_random_count(args: list[bytes], option: bytes,
                            ) -> tuple[int, bool] | hiredis.ReplyError:
        """HRANDFIELD/ZRANDMEMBER's count and WITH* flag, in Redis's checking order."""
        count = _parse_ll(args[2])
        if count is None:
            return _err(_NOT_INT)
        if count < -LLONG_MAX:
            return _err(_LONG_RANGE)
        n = len(args)
        if n > 4 or (n == 4 and _opt(args[3]) != option):
            return _err(_SYNTAX)
        if n == 4 and not -_LONG_MAX_HALF <= count <= _LONG_MAX_HALF:
            return _err(_OUT_OF_RANGE)
        return count, n == 4

    @staticmethod
    def _random_picks(population: list, count: int) -> list | hiredis.ReplyError:
        """count random elements (count > 0: distinct; count < 0: |count| with
        repetitions; the whole population when count >= its size), like the
        WithCount variants of HRANDFIELD/SRANDMEMBER/ZRANDMEMBER."""
        if count < 0 or count == 1:
            count = -count if count < 0 else 1
            if count > _MAX_REPEATED_PICKS:
                return _err(_OUT_OF_RANGE)
            return _rng.choices(population, k=count)
        if count >= len(population):
            return population
        return _rng.sample(population, count)

    def _hrandfield(self, args: list[bytes]) -> Reply:
        if len(args) >= 3:
            parsed = self._parse_random_count(args, b"WITHVALUES")
            if isinstance(parsed, hiredis.ReplyError):
                return parsed
            count, withvalues = parsed
            table = self._hash_for_read(args[1])
            if table is None:
                return []
            if type(table) is not dict:
                return table
            if count == 0:
                return []
            picks = self._random_picks(list(table), count)
            if not withvalues or type(picks) is not list:
                return picks
            return [x for field in picks for x in (field, table[field])]
        table = self._hash_for_read(args[1])
        if table is None or type(table) is not dict:
            return table
        return _random_element(table)

    # -------------------------------------------------------------------- sets

    def _set_for_read(self, key: bytes) -> Any:
        value = self._lookup(key)
        if value is not None and type(value) is not set:
            return _err(_WRONGTYPE)
        return value

    def _sadd(self, args: list[bytes]) -> Reply:
        key = args[1]
        members = self._lookup(key)
        if members is None:
            members = set(args[2:])
            self._store(key, members)
            return len(members)
        if type(members) is not set:
            return _err(_WRONGTYPE)
        before = len(members)
        members.update(args[2:])
        return len(members) - before

    def _srem(self, args: list[bytes]) -> Reply:
        key = args[1]
        members = self._set_for_read(key)
        if members is None:
            return 0
        if type(members) is not set:
            return members
        before = len(members)
        members.difference_update(args[2:])
        self._drop_if_empty(key, members)
        return before - len(members)

    def _sismember(self, args: list[bytes]) -> Reply:
        members = self._set_for_read(args[1])
        if members is None:
            return 0
        if type(members) is not set:
            return members
        return 1 if args[2] in members else 0

    def _smismember(self, args: list[bytes]) -> Reply:
        members = self._set_for_read(args[1])
        if members is None:
            return [0] * (len(args) - 2)
        if type(members) is not set:
            return members
        return [1 if m in members else 0 for m in args[2:]]

    def _smembers(self, args: list[bytes]) -> Reply:
        members = self._set_for_read(args[1])
        if members is None:
            return []
        if type(members) is not set:
            return members
        return list(members)

    def _scard(self, args: list[bytes]) -> Reply:
        members = self._set_for_read(args[1])
        if members is None:
            return 0
        if type(members) is not set:
            return members
        return len(members)

    def _spop(self, args: list[bytes]) -> Reply:
        n = len(args)
        if n > 3:
            return _err(_SYNTAX)
        key = args[1]
        if n == 3:
            count = _parse_ll(args[2])
            if count is None or count < 0:
                return _err(_NOT_POSITIVE)
        members = self._set_for_read(key)
        if n == 2:
            if members is None or type(members) is not set:
                return members
            member = _random_element(members)
            members.discard(member)
            self._drop_if_empty(key, members)
            return member
        if members is None:
            return []
        if type(members) is not set:
            return members
        if count == 0:
            return []
        if count >= len(members):
            self._remove(key)
            return list(members)
        picked = _rng.sample(list(members), count)
        members.difference_update(picked)
        return picked

    def _srandmember(self, args: list[bytes]) -> Reply:
        n = len(args)
        if n > 3:
            return _err(_SYNTAX)
        if n == 3:
            count = _parse_ll(args[2])
            if count is None:
                return _err(_NOT_INT)
            if count < -LLONG_MAX:
                return _err(_LONG_RANGE)
            members = self._set_for_read(args[1])
            if members is None:
                return []
            if type(members) is not set:
                return members
            if count == 0:
                return []
            return self._random_picks(list(members), count)
        members = self._set_for_read(args[1])
        if members is None or type(members) is not set:
            return members
        return _random_element(members)

    def _sets_for_read(self, keys: list[bytes]) -> list | hiredis.ReplyError:
        """Every key looked up and type-checked (missing ones as None), as Redis's
        set-algebra commands do before computing anything."""
        lookup = self._lookup
        out = []
        for key in keys:
            value = lookup(key)
            if value is not None and type(value) is not set:
                return _err(_WRONGTYPE)
            out.append(value)
        return out

    def _set_algebra(self, keys: list[bytes], op: str) -> set | hiredis.ReplyError:
        sets = self._sets_for_read(keys)
        if type(sets) is not list:
            return sets
        if op == "inter":
            if any(s is None for s in sets):
                return set()
            sets.sort(key=len)
            return sets[0].intersection(*sets[1:])
        if op == "union":
            return set().union(*(s for s in sets if s is not None))
        first = sets[0]
        if first is None:
            return set()
        return first.difference(*(s for s in sets[1:] if s is not None))

    def _set_algebra_reply(self, args: list[bytes], op: str) -> Reply:
        result = self._set_algebra(args[1:], op)
        if type(result) is not set:
            return result
        return list(result)

    def _set_algebra_store(self, args: list[bytes], op: str) -> Reply:
        result = self._set_algebra(args[2:], op)
        if type(result) is not set:
            return result
        dst = args[1]
        if not result:
            self._delete_if_exists(dst)
            return 0
        self._store(dst, result)
        return len(result)

    def _sinter(self, args: list[bytes]) -> Reply:
        return self._set_algebra_reply(args, "inter")

    def _sunion(self, args: list[bytes]) -> Reply:
        return self._set_algebra_reply(args, "union")

    def _sdiff(self, args: list[bytes]) -> Reply:
        return self._set_algebra_reply(args, "diff")

    def _sinterstore(self, args: list[bytes]) -> Reply:
        return self._set_algebra_store(args, "inter")

    def _sunionstore(self, args: list[bytes]) -> Reply:
        return self._set_algebra_store(args, "union")

    def _sdiffstore(self, args: list[bytes]) -> Reply:
        return self._set_algebra_store(args, "diff")

    def _sintercard(self, args: list[bytes]) -> Reply:
        numkeys = _parse_ll(args[1])
        if numkeys is None or numkeys < 1:
            return _err("ERR numkeys should be greater than 0")
        n = len(args)
        if numkeys > n - 2:
            return _err("ERR Number of keys can't be greater than number of args")
        limit = 0
        j = 2 + numkeys
        while j < n:
            if _opt(args[j]) == b"LIMIT" and j + 1 < n:
                j += 1
                limit = _parse_ll(args[j])
                if limit is None or limit < 0:
                    return _err("ERR LIMIT can't be negative")
            else:
                return _err(_SYNTAX)
            j += 1
        sets = self._sets_for_read(args[2:2 + numkeys])
        if type(sets) is not list:
            return sets
        if any(s is None for s in sets):
            return 0
        sets.sort(key=len)
        smallest, others = sets[0], sets[1:]
        count = 0
        for member in smallest:
            if all(member in s for s in others):
                count += 1
                if count == limit:
                    break
        return count

    def _smove(self, args: list[bytes]) -> Reply:
        src_key, dst_key, member = args[1], args[2], args[3]
        src = self._lookup(src_key)
        dst = self._lookup(dst_key)
        if src is None:
            return 0
        if type(src) is not set or (dst is not None and type(dst) is not set):
            return _err(_WRONGTYPE)
        if src is dst:
            return 1 if member in src else 0
        if member not in src:
            return 0
        src.discard(member)
        self._drop_if_empty(src_key, src)
        if dst is None:
            self._store(dst_key, {member})
        else:
            dst.add(member)
        return 1

    # ------------------------------------------------------------------- lists

    def _list_for_read(self, key: bytes) -> Any:
        value = self._lookup(key)
        if value is not None and type(value) is not deque:
            return _err(_WRONGTYPE)
        return value

    def _push(self, args: list[bytes], left: bool, existing_only: bool) -> Reply:
        key = args[1]
        items = self._lookup(key)
        if items is None:
            if existing_only:
                return 0
            items = deque()
            self._store(key, items)
        elif type(items) is not deque:
            return _err(_WRONGTYPE)
        if left:
            items.extendleft(args[2:])
        else:
            items.extend(args[2:])
        return len(items)

    def _lpush(self, args: list[bytes]) -> Reply:
        return self._push(args, True, False)

    def _rpush(self, args: list[bytes]) -> Reply:
        return self._push(args, False, False)

    def _lpushx(self, args: list[bytes]) -> Reply:
        return self._push(args, True, True)

    def _rpushx(self, args: list[bytes]) -> Reply:
        return self._push(args, False, True)

    def _pop(self, args: list[bytes], left: bool, fullname: str) -> Reply:
        n = len(args)
        if n > 3:
            return self._arity_error(fullname)
        count = 0
        if n == 3:
            count = _parse_ll(args[2])
            if count is None or count < 0:
                return _err(_NOT_POSITIVE)
        key = args[1]
        items = self._list_for_read(key)
        if items is None or type(items) is not deque:
            return items  # nil (a null array with a count: also None in RESP2) or error
        if n == 2:
            value = items.popleft() if left else items.pop()
            self._drop_if_empty(key, items)
            return value
        if count == 0:
            return []
        pop = items.popleft if left else items.pop
        out = [pop() for _ in range(min(count, len(items)))]
        self._drop_if_empty(key, items)
        return out

    def _lpop(self, args: list[bytes]) -> Reply:
        return self._pop(args, True, "lpop")

    def _rpop(self, args: list[bytes]) -> Reply:
        return self._pop(args, False, "rpop")

    def _lrange(self, args: list[bytes]) -> Reply:
        start = _parse_ll(args[2])
        end = _parse_ll(args[3]) if start is not None else None
        if end is None:
            return _err(_NOT_INT)
        items = self._list_for_read(args[1])
        if items is None:
            return []
        if type(items) is not deque:
            return items
        size = len(items)
        if start < 0:
            start += size
        if end < 0:
            end += size
        start = max(start, 0)
        if start > end or start >= size:
            return []
        end = min(end, size - 1)
        if start > size - 1 - end:  # nearer the tail: walk from there
            out = list(islice(reversed(items), size - 1 - end, size - start))
            out.reverse()
            return out
        return list(islice(items, start, end + 1))

    def _llen(self, args: list[bytes]) -> Reply:
        items = self._list_for_read(args[1])
        if items is None:
            return 0
        if type(items) is not deque:
            return items
        return len(items)

    def _lindex(self, args: list[bytes]) -> Reply:
        items = self._list_for_read(args[1])
        if items is None or type(items) is not deque:
            return items
        index = _parse_ll(args[2])
        if index is None:
            return _err(_NOT_INT)
        if index < 0:
            index += len(items)
        if not 0 <= index < len(items):
            return None
        return items[index]

    def _lset(self, args: list[bytes]) -> Reply:
        items = self._list_for_read(args[1])
        if items is None:
            return _err(_NO_KEY)
        if type(items) is not deque:
            return items
        index = _parse_ll(args[2])
        if index is None:
            return _err(_NOT_INT)
        if index < 0:
            index += len(items)
        if not 0 <= index < len(items):
            return _err("ERR index out of range")
        items[index] = args[3]
        return _OK

    def _ltrim(self, args: list[bytes]) -> Reply:
        start = _parse_ll(args[2])
        end = _parse_ll(args[3]) if start is not None else None
        if end is None:
            return _err(_NOT_INT)
        key = args[1]
        items = self._list_for_read(key)
        if items is None:
            return _OK
        if type(items) is not deque:
            return items
        size = len(items)
        if start < 0:
            start += size
        if end < 0:
            end += size
        start = max(start, 0)
        if start > end or start >= size:
            self._remove(key)
            return _OK
        end = min(end, size - 1)
        for _ in range(start):
            items.popleft()
        for _ in range(size - 1 - end):
            items.pop()
        return _OK

    def _lmove_generic(self, src_key: bytes, dst_key: bytes, from_left: bool,
                       to_left: bool) -> Reply:
        src = self._list_for_read(src_key)
        if src is None or type(src) is not deque:
            return src
        dst = self._list_for_read(dst_key)
        if dst is not None and type(dst) is not deque:
            return dst
        value = src.popleft() if from_left else src.pop()
        if dst is None:
            self._drop_if_empty(src_key, src)  # before creating dst: nothing to evict
            self._store(dst_key, deque((value,)))
            return value
        if to_left:
            dst.appendleft(value)
        else:
            dst.append(value)
        self._drop_if_empty(src_key, src)
        return value

    @staticmethod
    def _list_end(arg: bytes) -> bool | None:
        """getListPositionFromObjectOrReply: True for LEFT, False for RIGHT."""
        opt = _opt(arg)
        if opt == b"LEFT":
            return True
        if opt == b"RIGHT":
            return False
        return None

    def _lmove(self, args: list[bytes]) -> Reply:
        from_left = self._list_end(args[3])
        if from_left is None:
            return _err(_SYNTAX)
        to_left = self._list_end(args[4])
        if to_left is None:
            return _err(_SYNTAX)
        return self._lmove_generic(args[1], args[2], from_left, to_left)

    def _rpoplpush(self, args: list[bytes]) -> Reply:
        return self._lmove_generic(args[1], args[2], False, True)

    def _lrem(self, args: list[bytes]) -> Reply:
        count = _parse_ll(args[2])
        if count is None:
            return _err(_NOT_INT)
        key, element = args[1], args[3]
        items = self._list_for_read(key)
        if items is None:
            return 0
        if type(items) is not deque:
            return items
        if element not in items:
            return 0
        kept: deque = deque()
        removed = 0
        if count >= 0:
            limit = count or len(items)
            for item in items:
                if removed < limit and item == element:
                    removed += 1
                else:
                    kept.append(item)
        else:
            limit = -count
            for item in reversed(items):
                if removed < limit and item == element:
                    removed += 1
                else:
                    kept.appendleft(item)
        if kept:
            self._replace(key, kept)
        else:
            self._remove(key)
        return removed

    def _lpos(self, args: list[bytes]) -> Reply:
        rank, count, maxlen = 1, -1, 0
        n = len(args)
        j = 3
        while j < n:
            opt = _opt(args[j])
            more = j + 1 < n
            if opt == b"RANK" and more:
                j += 1
                rank = _parse_ll(args[j])
                if rank is None:
                    return _err(_NOT_INT)
                if rank == 0:
                    return _err("ERR RANK can't be zero: use 1 to start from the first "
                                "match, 2 from the second ... or use negative to start "
                                "from the end of the list")
            elif opt == b"COUNT" and more:
                j += 1
                count = _parse_ll(args[j])
                if count is None or count < 0:
                    return _err("ERR COUNT can't be negative")
            elif opt == b"MAXLEN" and more:
                j += 1
                maxlen = _parse_ll(args[j])
                if maxlen is None or maxlen < 0:
                    return _err("ERR MAXLEN can't be negative")
            else:
                return _err(_SYNTAX)
            j += 1
        reverse = rank < 0
        if reverse:
            # C negates a long: -LLONG_MIN wraps to LLONG_MIN, which then makes every
            # match qualify (and COUNT never stop the search) -- reproduced as is.
            rank = LLONG_MIN if rank == LLONG_MIN else -rank
        items = self._list_for_read(args[1])
        if items is None:
            return [] if count != -1 else None
        if type(items) is not deque:
            return items
        element = args[2]
        size = len(items)
        out = []
        matches = 0
        for index, item in enumerate(reversed(items) if reverse else items):
            if maxlen and index >= maxlen:
                break
            if item == element:
                matches += 1
                if matches >= rank:
                    position = size - index - 1 if reverse else index
                    if count == -1:
                        return position
                    out.append(position)
                    if count and _wrap64(matches - rank + 1) >= count:
                        break
        return out if count != -1 else None

    def _linsert(self, args: list[bytes]) -> Reply:
        where = _opt(args[2])
        if where not in (b"AFTER", b"BEFORE"):
            return _err(_SYNTAX)
        items = self._list_for_read(args[1])
        if items is None:
            return 0
        if type(items) is not deque:
            return items
        try:
            index = items.index(args[3])
        except ValueError:
            return -1
        items.insert(index + 1 if where == b"AFTER" else index, args[4])
        return len(items)

    # ------------------------------------------------------------- sorted sets

    def _zset_for_read(self, key: bytes) -> Any:
        value = self._lookup(key)
        if value is not None and type(value) is not ZSet:
            return _err(_WRONGTYPE)
        return value

    def _zadd_generic(self, args: list[bytes], incr: bool) -> Reply:
        nx = xx = gt = lt = ch = False
        n = len(args)
        i = 2
        while i < n:  # options come first; the first non-option starts the pairs
            opt = _opt(args[i])
            if opt == b"NX":
                nx = True
            elif opt == b"XX":
                xx = True
            elif opt == b"CH":
                ch = True
            elif opt == b"INCR":
                incr = True
            elif opt == b"GT":
                gt = True
            elif opt == b"LT":
                lt = True
            else:
                break
            i += 1
        elements = n - i
        if elements % 2 or not elements:
            return _err(_SYNTAX)
        if nx and xx:
            return _err("ERR XX and NX options at the same time are not compatible")
        if (gt and nx) or (lt and nx) or (gt and lt):
            return _err("ERR GT, LT, and/or NX options at the same time are not compatible")
        if incr and elements > 2:
            return _err("ERR INCR option supports a single increment-element pair")
        scores = []
        for j in range(i, n, 2):
            score = _parse_double(args[j])
            if score is None:
                return _err(_NOT_FLOAT)
            scores.append(score)
        key = args[1]
        zset = self._lookup(key)
        created = zset is None
        if created:
            if xx:
                return None if incr else 0
            zset = ZSet()
        elif type(zset) is not ZSet:
            return _err(_WRONGTYPE)
        added = updated = processed = 0
        current = zset.scores
        score = 0.0
        try:
            for j, score in enumerate(scores):
                member = args[i + 1 + 2 * j]
                old = current.get(member)
                if old is not None:
                    if nx:
                        continue
                    if incr:
                        score += old
                        if score != score:  # NaN: inf + -inf
                            return _err("ERR resulting score is not a number (NaN)")
                    if (lt and score >= old) or (gt and score <= old):
                        continue
                    processed += 1
                    if score != old:
                        zset.discard(member)
                        zset.insert(member, score)
                        updated += 1
                elif not xx:
                    zset.insert(member, score)
                    added += 1
                    processed += 1
        finally:
            if created and zset:
                self._store(key, zset)
        if incr:
            return _score_bytes(score) if processed else None
        return added + updated if ch else added

    def _zadd(self, args: list[bytes]) -> Reply:
        return self._zadd_generic(args, False)

    def _zincrby(self, args: list[bytes]) -> Reply:
        return self._zadd_generic(args, True)

    def _zrem(self, args: list[bytes]) -> Reply:
        key = args[1]
        zset = self._zset_for_read(key)
        if zset is None:
            return 0
        if type(zset) is not ZSet:
            return zset
        deleted = 0
        for member in args[2:]:
            if zset.discard(member):
                deleted += 1
        self._drop_if_empty(key, zset)
        return deleted

    def _zscore(self, args: list[bytes]) -> Reply:
        zset = self._zset_for_read(args[1])
        if zset is None or type(zset) is not ZSet:
            return zset
        score = zset.scores.get(args[2])
        return None if score is None else _score_bytes(score)

    def _zmscore(self, args: list[bytes]) -> Reply:
        zset = self._zset_for_read(args[1])
        if zset is None:
            return [None] * (len(args) - 2)
        if type(zset) is not ZSet:
            return zset
        get = zset.scores.get
        out = []
        for member in args[2:]:
            score = get(member)
            out.append(None if score is None else _score_bytes(score))
        return out

    def _zcard(self, args: list[bytes]) -> Reply:
        zset = self._zset_for_read(args[1])
        if zset is None:
            return 0
        if type(zset) is not ZSet:
            return zset
        return len(zset)

    @staticmethod
    def _parse_score_range(low: bytes, high: bytes) -> tuple | hiredis.ReplyError:
        lo = _parse_range_bound(low)
        hi = _parse_range_bound(high) if lo is not None else None
        if hi is None:
            return _err(_NOT_FLOAT_RANGE)
        return lo, hi

    @staticmethod
    def _parse_lex_range(low: bytes, high: bytes) -> tuple | hiredis.ReplyError:
        lo = _parse_lex_bound(low)
        hi = _parse_lex_bound(high) if lo is not None else None
        if hi is None:
            return _err(_NOT_LEX_RANGE)
        return lo, hi

    def _zcount(self, args: list[bytes]) -> Reply:
        bounds = self._parse_score_range(args[2], args[3])
        if type(bounds) is not tuple:
            return bounds
        zset = self._zset_for_read(args[1])
        if zset is None:
            return 0
        if type(zset) is not ZSet:
            return zset
        first, stop = _score_span(zset.items, *bounds)
        return stop - first

    def _zlexcount(self, args: list[bytes]) -> Reply:
        bounds = self._parse_lex_range(args[2], args[3])
        if type(bounds) is not tuple:
            return bounds
        zset = self._zset_for_read(args[1])
        if zset is None:
            return 0
        if type(zset) is not ZSet:
            return zset
        return len(self._lex_run(zset.items, *bounds))

    @staticmethod
    def _lex_run(items: list, low: tuple, high: tuple) -> range:
        """Indexes from the first element in the lex range while members stay <= high
        (what ZLEXCOUNT and ZREMRANGEBYLEX walk over)."""
        first = _lex_first(items, low, high)
        if first < 0:
            return range(0)
        stop = first + 1
        size = len(items)
        while stop < size and _lex_lte_max(items[stop][1], high):
            stop += 1
        return range(first, stop)

    def _zrank_generic(self, args: list[bytes], reverse: bool) -> Reply:
        zset = self._zset_for_read(args[1])
        if zset is None or type(zset) is not ZSet:
            return zset
        member = args[2]
        score = zset.scores.get(member)
        if score is None:
            return None
        rank = zset.rank(member, score)
        return len(zset) - 1 - rank if reverse else rank

    def _zrank(self, args: list[bytes]) -> Reply:
        return self._zrank_generic(args, False)

    def _zrevrank(self, args: list[bytes]) -> Reply:
        return self._zrank_generic(args, True)

    def _zrange_generic(self, args: list[bytes], base: int, store: bool, rangetype: int,
                        reverse: bool | None) -> Reply:
        """zrangeGenericCommand: options, their conflicts, the range, then the key."""
        n = len(args)
        withscores = False
        offset, limit = 0, -1
        j = base + 3
        while j < n:
            opt = _opt(args[j])
            if not store and opt == b"WITHSCORES":
                withscores = True
            elif opt == b"LIMIT" and n - j - 1 >= 2:
                offset = _parse_ll(args[j + 1])
                if offset is None:
                    return _err(_NOT_INT)
                limit = _parse_ll(args[j + 2])
                if limit is None:
                    return _err(_NOT_INT)
                j += 2
            elif reverse is None and opt == b"REV":
                reverse = True
            elif rangetype == _ZR_AUTO and opt == b"BYLEX":
                rangetype = _ZR_LEX
            elif rangetype == _ZR_AUTO and opt == b"BYSCORE":
                rangetype = _ZR_SCORE
            else:
                return _err(_SYNTAX)
            j += 1
        reverse = bool(reverse)
        if rangetype == _ZR_AUTO:
            rangetype = _ZR_RANK
        if limit != -1 and rangetype == _ZR_RANK:
            return _err("ERR syntax error, LIMIT is only supported in combination with "
                        "either BYSCORE or BYLEX")
        if withscores and rangetype == _ZR_LEX:
            return _err("ERR syntax error, WITHSCORES not supported in combination with "
                        "BYLEX")
        low, high = args[base + 1], args[base + 2]
        if reverse and rangetype != _ZR_RANK:
            low, high = high, low  # given as max, min
        if rangetype == _ZR_RANK:
            start = _parse_ll(low)
            end = _parse_ll(high) if start is not None else None
            if end is None:
                return _err(_NOT_INT)
        elif rangetype == _ZR_SCORE:
            bounds = self._parse_score_range(low, high)
            if type(bounds) is not tuple:
                return bounds
        else:
            bounds = self._parse_lex_range(low, high)
            if type(bounds) is not tuple:
                return bounds
        zset = self._lookup(args[base])
        if zset is None:
            return self._zstore_result(args[1], []) if store else []
        if type(zset) is not ZSet:
            return _err(_WRONGTYPE)
        items = zset.items
        if rangetype == _ZR_RANK:
            picked = _rank_slice(items, start, end, reverse)
        elif rangetype == _ZR_SCORE:
            picked = _score_slice(items, bounds[0], bounds[1], offset, limit, reverse)
        else:
            picked = _lex_slice(items, bounds[0], bounds[1], offset, limit, reverse)
        if store:
            return self._zstore_result(args[1], picked[::-1] if reverse else picked)
        if withscores:
            return [x for score, member in picked for x in (member, _score_bytes(score))]
        return [member for _, member in picked]

    def _zstore_result(self, dst: bytes, pairs: list[tuple[float, bytes]]) -> Reply:
        if not pairs:
            self._delete_if_exists(dst)
            return 0
        zset = ZSet.__new__(ZSet)
        zset.items = pairs  # already sorted: a contiguous run of a sorted list
        zset.scores = {member: score for score, member in pairs}
        self._store(dst, zset)
        return len(pairs)

    def _zrange(self, args: list[bytes]) -> Reply:
        return self._zrange_generic(args, 1, False, _ZR_AUTO, None)

    def _zrangestore(self, args: list[bytes]) -> Reply:
        return self._zrange_generic(args, 2, True, _ZR_AUTO, None)

    def _zrevrange(self, args: list[bytes]) -> Reply:
        return self._zrange_generic(args, 1, False, _ZR_RANK, True)

    def _zrangebyscore(self, args: list[bytes]) -> Reply:
        return self._zrange_generic(args, 1, False, _ZR_SCORE, False)

    def _zrevrangebyscore(self, args: list[bytes]) -> Reply:
        return self._zrange_generic(args, 1, False, _ZR_SCORE, True)

    def _zrangebylex(self, args: list[bytes]) -> Reply:
        return self._zrange_generic(args, 1, False, _ZR_LEX, False)

    def _zrevrangebylex(self, args: list[bytes]) -> Reply:
        return self._zrange_generic(args, 1, False, _ZR_LEX, True)

    def _zremrangebyscore(self, args: list[bytes]) -> Reply:
        bounds = self._parse_score_range(args[2], args[3])
        if type(bounds) is not tuple:
            return bounds
        key = args[1]
        zset = self._zset_for_read(key)
        if zset is None:
            return 0
        if type(zset) is not ZSet:
            return zset
        first, stop = _score_span(zset.items, *bounds)
        return self._zremrange_index(key, zset, first, stop)

    def _zremrange_index(self, key: bytes, zset: ZSet, first: int, stop: int) -> Reply:
        if first >= stop:
            return 0
        items = zset.items
        scores = zset.scores
        for _, member in items[first:stop]:
            del scores[member]
        del items[first:stop]
        if not scores:
            self._remove(key)
        return stop - first

    def _zremrangebyrank(self, args: list[bytes]) -> Reply:
        start = _parse_ll(args[2])
        end = _parse_ll(args[3]) if start is not None else None
        if end is None:
            return _err(_NOT_INT)
        key = args[1]
        zset = self._zset_for_read(key)
        if zset is None:
            return 0
        if type(zset) is not ZSet:
            return zset
        size = len(zset)
        if start < 0:
            start += size
        if end < 0:
            end += size
        start = max(start, 0)
        if start > end or start >= size:
            return 0
        return self._zremrange_index(key, zset, start, min(end, size - 1) + 1)

    def _zremrangebylex(self, args: list[bytes]) -> Reply:
        bounds = self._parse_lex_range(args[2], args[3])
        if type(bounds) is not tuple:
            return bounds
        key = args[1]
        zset = self._zset_for_read(key)
        if zset is None:
            return 0
        if type(zset) is not ZSet:
            return zset
        run = self._lex_run(zset.items, *bounds)
        return self._zremrange_index(key, zset, run.start, run.stop)

    def _zpop(self, args: list[bytes], from_max: bool) -> Reply:
        n = len(args)
        if n > 3:
            return _err(_SYNTAX)
        count = 1
        if n == 3:
            count = _parse_ll(args[2])
            if count is None or count < 0:
                return _err(_NOT_POSITIVE)
        key = args[1]
        zset = self._zset_for_read(key)
        if zset is None:
            return []
        if type(zset) is not ZSet:
            return zset
        if count == 0:
            return []
        items = zset.items
        take = min(count, len(items))
        if from_max:
            popped = items[len(items) - take:]
            del items[len(items) - take:]
            popped.reverse()
        else:
            popped = items[:take]
            del items[:take]
        scores = zset.scores
        out = []
        for score, member in popped:
            del scores[member]
            out.append(member)
            out.append(_score_bytes(score))
        self._drop_if_empty(key, zset)
        return out

    def _zpopmin(self, args: list[bytes]) -> Reply:
        return self._zpop(args, False)

    def _zpopmax(self, args: list[bytes]) -> Reply:
        return self._zpop(args, True)

    def _zrandmember(self, args: list[bytes]) -> Reply:
        if len(args) >= 3:
            parsed = self._parse_random_count(args, b"WITHSCORES")
            if isinstance(parsed, hiredis.ReplyError):
                return parsed
            count, withscores = parsed
            zset = self._zset_for_read(args[1])
            if zset is None:
                return []
            if type(zset) is not ZSet:
                return zset
            if count == 0:
                return []
            picks = self._random_picks(zset.items, count)
            if type(picks) is not list:
                return picks
            if withscores:
                return [x for score, member in picks for x in (member, _score_bytes(score))]
            return [member for _, member in picks]
        zset = self._zset_for_read(args[1])
        if zset is None or type(zset) is not ZSet:
            return zset
        return _rng.choice(zset.items)[1]
