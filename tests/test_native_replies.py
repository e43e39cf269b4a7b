"""proxy._native.ReplyReader against hiredis.Reader and the Python reply decoders.

The upstream connection reads Redis's replies with ReplyReader when the C part is built.
`gets()` must give exactly what hiredis.Reader gives for any RESP2 stream cut anywhere
(hiredis stays the reader of the pure-Python path).  `take()` decodes a client batch's
replies in C, `take_singles()` those of reads of a single command; whatever they hand back
must be the bytes the Python decoders (proxy.commands.replies) would have made of the same
replies, under every kind, protocol and key situation, and whatever they leave (errors,
envelopes of old keys, tampered ones, unexpected types) must still reach the Python
decoders in order.
"""

from __future__ import annotations

import itertools
from collections import deque

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache import Cache
from proxy.commands import replies
from proxy.crypto import KeyHasher, ValueSealer
from proxy.server.client import Batch, Single, Slot

try:
    from proxy import _native
except ImportError:
    _native = None

pytestmark = pytest.mark.skipif(_native is None, reason="proxy._native is not built")


def _reader():
    return _native.ReplyReader(hiredis.ReplyError, hiredis.ProtocolError)


def _integer(n: int) -> bytes:
    return b":%d\r\n" % n


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


line_text = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))

scalar_replies = st.one_of(
    line_text.map(lambda t: b"+" + t + b"\r\n"),
    line_text.map(lambda t: b"-" + t + b"\r\n"),  # any bytes, invalid UTF-8 included
    st.integers(-(2 ** 63), 2 ** 63 - 1).map(_integer),
    st.binary(max_size=40).map(_bulk),  # CR, LF and CRLF inside a bulk are data
    st.just(b"$-1\r\n"),
    st.just(b"*-1\r\n"),
)
resp2_replies = st.recursive(
    scalar_replies,
    lambda inner: st.lists(inner, max_size=4).map(
        lambda items: b"*%d\r\n" % len(items) + b"".join(items)),
    max_leaves=12)


def _pieces(stream: bytes, cuts: list[int]):
    """(start, length) of the pieces of `stream` cut at `cuts`."""
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(bounds):
        yield start, end - start


def _all_replies(reader, stream: bytes, cuts: list[int], out: list | None = None) -> list:
    """Feed `stream` in pieces cut at `cuts`, reading every reply as soon as it is there
    (into `out`, when given, so that what came before an exception is kept)."""
    out = [] if out is None else out
    for start, length in _pieces(stream, cuts):
        reader.feed(stream, start, length)
        while (reply := reader.gets()) is not False:
            out.append(reply)
    return out


def _all_replies_from_read_buffer(reader, stream: bytes, cuts: list[int]) -> list:
    """_all_replies with each piece read into the thread's read buffer first (as the
    upstream connection's buffer_updated does), the buffer overwritten with junk before
    each piece: the reader must keep its own copy of everything it has not returned."""
    from proxy.resp.reader import read_buffer
    view = read_buffer(0)
    out = []
    for start, length in _pieces(stream, cuts):
        view[:] = b"\xa5" * len(view)
        view[:length] = stream[start:start + length]
        reader.feed(view, 0, length)
        while (reply := reader.gets()) is not False:
            out.append(reply)
    return out


def _comparable(reply):
    if isinstance(reply, hiredis.ReplyError):
        # hiredis replaces bytes that are not UTF-8 with U+FFFD; ReplyReader keeps them
        # (surrogate escapes): compared as hiredis would have decoded them.
        text = str(reply).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return ("error", text)
    if isinstance(reply, list):
        return [_comparable(r) for r in reply]
    return (type(reply).__name__, reply)


@settings(max_examples=400, deadline=None)
@given(st.lists(resp2_replies, max_size=8), st.lists(st.integers(0, 400), max_size=6))
def test_gets_reads_what_hiredis_reads_split_anywhere(replies_, cuts):
    stream = b"".join(replies_)
    ours = _all_replies(_reader(), stream, cuts)
    theirs = _all_replies(hiredis.Reader(), stream, cuts)
    assert len(ours) == len(replies_)
    assert [_comparable(r) for r in ours] == [_comparable(r) for r in theirs]
    # Read into the read buffer first, as the upstream connection does: the same replies
    # (hiredis there too, the reader without the C part).
    for reader in (_reader(), hiredis.Reader()):
        buffered = _all_replies_from_read_buffer(reader, stream, cuts)
        assert [_comparable(r) for r in buffered] == [_comparable(r) for r in theirs]
    errors = [r for r in replies_ if r.startswith(b"-")]
    for reply in ours:  # the same types, not just equal values
        if isinstance(reply, hiredis.ReplyError):
            assert type(reply) is hiredis.ReplyError
            line = b"-" + str(reply).encode("utf-8", "surrogateescape") + b"\r\n"
            assert line in errors  # the error line's bytes, all of them


def _until_protocol_error(reader, stream: bytes, cuts: list[int]) -> list:
    out: list = []
    try:
        _all_replies(reader, stream, cuts, out)
    except hiredis.ProtocolError:
        out.append("protocol error")
    return out


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b"+-:$*\r\n0123456789ab"[x % 19] for x in b)),
       st.lists(st.integers(0, 40), max_size=4))
def test_any_bytes_read_as_hiredis_reads_them(stream, cuts):
    """Made of RESP2's own bytes, so most streams are nearly valid: the same replies
    and the same protocol errors, found at the same point of the stream."""
    ours = _until_protocol_error(_reader(), stream, cuts)
    theirs = _until_protocol_error(hiredis.Reader(), stream, cuts)
    assert [_comparable(r) for r in ours] == [_comparable(r) for r in theirs]


@pytest.mark.parametrize("digits", [
    # around the 18 digits below which the C parser skips its per-digit overflow check
    b"99999999999999999", b"999999999999999999", b"1000000000000000000",
    b"9223372036854775807", b"9223372036854775808", b"18446744073709551615",
    b"18446744073709551616", b"99999999999999999999", b"100000000000000000000",
])
@pytest.mark.parametrize("sign", [b"", b"-"])
def test_long_integers_read_as_hiredis_reads_them(digits, sign):
    stream = b":" + sign + digits + b"\r\n"
    ours = _until_protocol_error(_reader(), stream, [])
    theirs = _until_protocol_error(hiredis.Reader(), stream, [])
    assert [_comparable(r) for r in ours] == [_comparable(r) for r in theirs]
    value = int(sign + digits)
    if -2**63 <= value < 2**63:
        assert ours == [value]
    else:
        assert ours == ["protocol error"]


@pytest.mark.parametrize("stream", [
    b":abc\r\n", b":-0\r\n", b":+5\r\n", b":99999999999999999999\r\n",
    b"$-2\r\n", b"$x\r\n", b"*-2\r\n", b"*1x\r\n", b"!oops\r\n",
])
def test_invalid_streams_are_protocol_errors_as_in_hiredis(stream):
    for reader in (_reader(), hiredis.Reader()):
        reader.feed(stream)
        with pytest.raises(hiredis.ProtocolError):
            reader.gets()


def test_deep_nesting_is_a_protocol_error_not_a_crash():
    reader = _reader()
    reader.feed(b"*1\r\n" * 100_000 + b":1\r\n")
    with pytest.raises(hiredis.ProtocolError):
        reader.gets()


def test_a_large_reply_in_small_pieces_and_the_buffer_let_go():
    value = bytes(range(256)) * 4096  # 1 MiB
    stream = _bulk(value) + b"+OK\r\n"
    reader = _reader()
    for start in range(0, len(stream), 1000):
        reader.feed(stream[start:start + 1000])
        if start + 1000 < len(stream) - 5:
            assert reader.gets() is False
    assert reader.gets() == value
    assert reader.gets() == b"OK"
    assert reader.gets() is False
    assert reader.buffered() == 0


def test_feed_refuses_bad_arguments():
    reader = _reader()
    for args in [("x",), (b"abc", 4), (b"abc", 1, 3), (b"abc", -1)]:
        with pytest.raises((TypeError, ValueError)):
            reader.feed(*args)
    with pytest.raises(TypeError):
        reader.take([], [1], [], 2, None, 0)  # kinds must be a bytearray


def test_kind_numbers_agree_with_the_c_module():
    in_c = {
        replies.value: _native.KIND_VALUE,
        replies.status_or_nil: _native.KIND_STATUS_OR_NIL,
        replies.status: _native.KIND_STATUS,
        replies.integer: _native.KIND_INTEGER,
    }
    assert in_c == replies.REPLY_KINDS


# -- take(): a batch's replies decoded in C, and the rest in Python --------------------

CURRENT = bytes(range(32))
OLD = bytes(range(32, 64))
HASHING = bytes(range(64, 96))
DECODERS = [replies.value, replies.status_or_nil, replies.status, replies.integer,
            replies.plain]


def _cache(encrypted: bool, policy: str = "miss", current: bytes = CURRENT) -> Cache:
    hasher = KeyHasher("t", HASHING, b"", False, 16)
    sealer = ValueSealer(current, [OLD] if current != OLD else []) if encrypted else None
    return Cache("t", hasher=hasher, sealer=sealer, on_decrypt_error=policy, databases=16,
                 backend=None)


def _reply_for(draw, cache: Cache, old_cache: Cache, stored: bytes, db: int) -> bytes:
    """Any reply a command might get: the usual ones and the ones take must leave."""
    plaintext = draw(st.binary(max_size=30))
    choice = draw(st.sampled_from([
        "envelope", "envelope", "old-key", "tampered", "other-name", "garbage", "nil",
        "ok", "status", "integer", "error", "moved", "array", "nil-array"]))
    if choice == "envelope":
        return _bulk(cache.seal(db, stored, plaintext))
    if choice == "old-key":
        return _bulk(old_cache.seal(db, stored, plaintext))
    if choice == "tampered" and cache.sealer is not None:
        blob = bytearray(cache.seal(db, stored, plaintext))
        blob[-1] ^= 1
        return _bulk(bytes(blob))
    if choice == "other-name":
        return _bulk(cache.seal(db, stored + b"x", plaintext))
    if choice == "garbage":
        return _bulk(plaintext)
    if choice == "nil":
        return b"$-1\r\n"
    if choice == "ok":
        return b"+OK\r\n"
    if choice == "status":
        return b"+" + draw(line_text) + b"\r\n"
    if choice == "integer":
        return _integer(draw(st.integers(-(2 ** 63), 2 ** 63 - 1)))
    if choice == "error":
        return b"-ERR " + draw(line_text) + b"\r\n"
    if choice == "moved":
        return b"-MOVED 1 127.0.0.1:1\r\n"
    if choice == "array":
        return b"*2\r\n$1\r\na\r\n:1\r\n"
    return b"*-1\r\n"


class _Client:
    def __init__(self, cache, db, proto):
        self.cache, self.db, self.proto = cache, db, proto
        self.stats = None


def _batch(cache, db, proto, decoders, ctxs, in_c: bool) -> Batch:
    batch = Batch(_Client(cache, db, proto))
    batch.cache, batch.db, batch.proto = cache, db, proto
    batch.decoders, batch.ctxs, batch.count = list(decoders), list(ctxs), len(decoders)
    batch.kinds = bytearray(replies.REPLY_KINDS.get(d, 0) for d in decoders)
    if in_c:
        batch.in_c = True
        batch.gcm = cache.reply_gcm
    return batch


def _deliver(batch: Batch, reader, stream: bytes, cuts: list[int], in_c: bool) -> int:
    """The upstream connection's loop for one batch; returns how many replies C took."""
    in_c_count = 0
    for start, length in _pieces(stream, cuts):
        reader.feed(stream, start, length)
        while batch.data is None:
            if in_c:
                taken = batch.take_replies(reader)
                in_c_count += taken
                if taken:
                    continue
            reply = reader.gets()
            if reply is False:
                break
            batch.complete(reply)
    return in_c_count


@settings(max_examples=300, deadline=None)
@given(st.data(), st.booleans(), st.sampled_from([2, 3]), st.integers(0, 15),
       st.sampled_from(["miss", "error"]), st.lists(st.integers(0, 2000), max_size=5))
def test_take_gives_the_python_decoders_bytes(data, encrypted, proto, db, policy, cuts):
    cache = _cache(encrypted, policy)
    old_cache = _cache(encrypted, policy, current=OLD)
    assert cache.replies_in_c
    n = data.draw(st.integers(1, 12))
    decoders = [data.draw(st.sampled_from(DECODERS)) for _ in range(n)]
    ctxs = [cache.stored_key(db, data.draw(st.binary(min_size=1, max_size=12)))
            for _ in range(n)]
    stream = b"".join(_reply_for(data.draw, cache, old_cache, ctx, db) for ctx in ctxs)

    # The reference: every reply read by gets() (compared with hiredis above) and decoded
    # by the Python decoders.
    expected = _batch(cache, db, proto, decoders, ctxs, in_c=False)
    _deliver(expected, _reader(), stream, cuts, in_c=False)
    got = _batch(cache, db, proto, decoders, ctxs, in_c=True)
    reader = _reader()
    _deliver(got, reader, stream, cuts, in_c=True)
    assert expected.data is not None
    assert got.parts == expected.parts
    assert got.data == expected.data
    assert reader.buffered() == 0


def test_take_decodes_the_usual_replies_in_c_and_leaves_the_rest():
    cache = _cache(True)
    stored = [cache.stored_key(0, b"k%d" % i) for i in range(5)]
    stream = (_bulk(cache.seal(0, stored[0], b"v0")) + b"$-1\r\n" + b"+OK\r\n"
              + _bulk(_cache(True, current=OLD).seal(0, stored[3], b"v3"))  # old key
              + _integer(7))
    decoders = [replies.value, replies.value, replies.status_or_nil, replies.value,
                replies.integer]
    batch = _batch(cache, 0, 3, decoders, stored, in_c=True)
    reader = _reader()
    reader.feed(stream)
    assert batch.take_replies(reader) == 3  # stops before the old key's envelope
    assert batch.data is None
    batch.complete(reader.gets())  # Python opens it with the old key
    assert batch.take_replies(reader) == 1
    assert batch.data == [b"$2\r\nv0\r\n", b"_\r\n", b"+OK\r\n", b"$2\r\nv3\r\n", b":7\r\n"]
    assert cache.decrypt_failures == {}


def test_take_never_returns_a_tampered_value():
    cache = _cache(True, "error")
    stored = cache.stored_key(0, b"k")
    blob = bytearray(cache.seal(0, stored, b"secret"))
    blob[5] ^= 1  # the nonce's first byte (after the 5-byte header): must not authenticate
    batch = _batch(cache, 0, 2, [replies.value], [stored], in_c=True)
    reader = _reader()
    reader.feed(_bulk(bytes(blob)))
    assert batch.take_replies(reader) == 0
    batch.complete(reader.gets())
    assert len(batch.data) == 1
    assert batch.data[0].startswith(b"-ERR cachecloak could not decrypt")
    assert b"secret" not in batch.data[0]


def _single(client, ctx, decode) -> Single:
    cache = client.cache
    return Single(client, b"", ctx, decode, replies.REPLY_KINDS.get(decode, 0), cache,
                  cache.reply_gcm, client.db, client.proto)


@settings(max_examples=300, deadline=None)
@given(st.data(), st.booleans(), st.sampled_from([2, 3]), st.integers(0, 15),
       st.sampled_from(["miss", "error"]), st.lists(st.integers(0, 2000), max_size=5),
       st.integers(1, 3))
def test_take_singles_gives_the_python_decoders_bytes(data, encrypted, proto, db, policy,
                                                      cuts, clients):
    """Single commands (proxy.server.client.Single) of a few clients queued on one
    connection: what take_singles decodes, and what it leaves to gets() and the decoder,
    is what the Python path (a Slot) makes of the same replies; each client is in
    `touched` once per run of its replies, in order."""
    cache = _cache(encrypted, policy)
    old_cache = _cache(encrypted, policy, current=OLD)
    owners = [_Client(cache, db, proto) for _ in range(clients)]
    n = data.draw(st.integers(1, 12))
    decoders = [data.draw(st.sampled_from(DECODERS)) for _ in range(n)]
    ctxs = [cache.stored_key(db, data.draw(st.binary(min_size=1, max_size=12)))
            for _ in range(n)]
    who = [owners[data.draw(st.integers(0, clients - 1))] for _ in range(n)]
    stream = b"".join(_reply_for(data.draw, cache, old_cache, ctx, db) for ctx in ctxs)
    singles = [_single(c, ctx, d) for c, d, ctx in zip(who, decoders, ctxs, strict=True)]
    slots = [Slot(c, d, ctx) for c, d, ctx in zip(who, decoders, ctxs, strict=True)]

    expected_touched = []
    for client in who:
        if not expected_touched or expected_touched[-1] is not client:
            expected_touched.append(client)
    for waiters, in_c in ((slots, False), (singles, True)):
        reader, pending, touched = _reader(), deque(waiters), []
        for start, length in _pieces(stream, cuts):
            reader.feed(stream, start, length)
            while pending:
                if in_c and reader.take_singles(pending, touched):
                    continue
                reply = reader.gets()
                if reply is False:
                    break
                waiter = pending.popleft()
                waiter.complete(reply)
                if not touched or touched[-1] is not waiter.client:
                    touched.append(waiter.client)
        assert not pending and reader.buffered() == 0
        assert touched == expected_touched
    assert [single.data for single in singles] == [slot.data for slot in slots]


def test_take_singles_never_returns_a_tampered_value_or_an_old_keys():
    cache = _cache(True, "miss")
    client = _Client(cache, 0, 2)
    stored = cache.stored_key(0, b"k")
    blob = bytearray(cache.seal(0, stored, b"secret"))
    blob[5] ^= 1
    old = _cache(True, current=OLD).seal(0, stored, b"older")
    reader = _reader()
    reader.feed(_bulk(bytes(blob)) + _bulk(old) + b"$-1\r\n")
    waiters = deque(_single(client, stored, replies.value) for _ in range(3))
    touched = []
    for _ in range(2):  # neither opens under the current key: left to Python, in order
        assert reader.take_singles(waiters, touched) == 0
        waiters.popleft().complete(reader.gets())
    assert reader.take_singles(waiters, touched) == 1
    assert touched == [client] and not waiters and reader.buffered() == 0
    with pytest.raises(TypeError):
        reader.take_singles(waiters, ())  # touched must be a list
    with pytest.raises(TypeError):
        Single(client, b"", stored, replies.value, 1, cache, "not a Gcm", 0, 2)


class _Entry:
    def __init__(self):
        self.finished = []

    def finish(self, t0, data):
        self.finished.append((t0, data))


def test_take_singles_tells_metrics_each_reply():
    cache = _cache(False)
    client = _Client(cache, 0, 2)
    entry = _Entry()
    waiters = deque()
    for _ in range(2):
        single = _single(client, cache.stored_key(0, b"k"), replies.status_or_nil)
        single.stat, single.t0 = entry, 1.5
        waiters.append(single)
    reader = _reader()
    reader.feed(b"+OK\r\n$-1\r\n")
    assert reader.take_singles(waiters, []) == 2
    assert entry.finished == [(1.5, b"+OK\r\n"), (1.5, b"$-1\r\n")]


# -- the upstream connection's read: UpstreamCore.buffer_updated against its twin ------

class _FlushingClient(_Client):
    """A client that records its flushes, by read (UpstreamConnection's flush call)."""

    def __init__(self, cache, db, proto, flushes: list):
        super().__init__(cache, db, proto)
        self.flushes = flushes

    def flush(self):
        self.flushes[-1].append(self)


def _batch_of(client, decoders, ctxs) -> Batch:
    """A batch of `client`'s whose replies C decodes, as the client connection makes it."""
    batch = Batch(client)
    batch.cache, batch.db, batch.proto = client.cache, client.db, client.proto
    batch.decoders, batch.ctxs, batch.count = list(decoders), list(ctxs), len(decoders)
    batch.kinds = bytearray(replies.REPLY_KINDS.get(d, 0) for d in decoders)
    batch.in_c, batch.gcm = True, client.cache.reply_gcm
    return batch


def _connections(loop):
    """An UpstreamConnection on the C core, and one on PythonUpstreamCore (its twin)."""
    from proxy.backends.redis import connection as conn

    class PythonConnection(conn.PythonUpstreamCore, conn.UpstreamConnection):
        pass

    settings_ = conn.UpstreamSettings("127.0.0.1", 1, username=None, password=None, db=0,
                                      connect_timeout=1, command_timeout=5, label="t")
    return [conn.UpstreamConnection(settings_, loop), PythonConnection(settings_, loop)]


@settings(max_examples=300, deadline=None)
@given(st.data(), st.booleans(), st.sampled_from([2, 3]), st.integers(0, 15),
       st.lists(st.integers(0, 120_000), max_size=5), st.integers(1, 3))
def test_the_upstream_read_in_c_does_what_its_python_twin_does(data, encrypted, proto, db,
                                                               cuts, clients):
    """Reads of replies (cut anywhere, some larger than the 16 KiB the reader is fed at a
    time) for a FIFO of Singles (C's), batches (C's when in_c) and Slots (Python's) of a
    few clients, through the read buffer and buffer_updated: the C core takes the
    Singles' and batches' replies itself, where they lie in the read buffer, and hands
    the rest of the read to _replies_read at the first reply it leaves.  Every waiter
    must end with the bytes the Python twin gives it, and each read must flush the same
    clients in the same order."""
    import asyncio

    cache = _cache(encrypted, data.draw(st.sampled_from(["miss", "error"])))
    old_cache = _cache(encrypted, "miss", current=OLD)
    n = data.draw(st.integers(1, 10))
    spec = []
    for _ in range(n):
        ctx = cache.stored_key(db, data.draw(st.binary(min_size=1, max_size=12)))
        big = data.draw(st.integers(0, 5)) == 0
        reply = (_bulk(cache.seal(db, ctx, b"v" * data.draw(st.integers(16_000, 70_000))))
                 if big else _reply_for(data.draw, cache, old_cache, ctx, db))
        spec.append((data.draw(st.integers(0, clients - 1)),
                     data.draw(st.sampled_from(["single", "slot", "batch", "batch"])),
                     data.draw(st.sampled_from(DECODERS)), ctx, reply))
    stream = b"".join(reply for *_, reply in spec)
    # Consecutive "batch" entries of one client are one batch (at most 4 replies).
    runs: list[list[int]] = []
    for i, (who, mode, *_) in enumerate(spec):
        if (mode == "batch" and runs and spec[runs[-1][0]][1] == "batch"
                and spec[runs[-1][0]][0] == who and len(runs[-1]) < 4):
            runs[-1].append(i)
        else:
            runs.append([i])
    loop = asyncio.new_event_loop()
    try:
        outcomes = []
        for upstream in _connections(loop):
            flushes: list[list] = []
            owners = [_FlushingClient(cache, db, proto, flushes) for _ in range(clients)]
            waiters = []
            for run in runs:
                who, mode, decode, ctx, _ = spec[run[0]]
                if mode == "single":
                    waiter = _single(owners[who], ctx, decode)
                elif mode == "slot":
                    waiter = Slot(owners[who], decode, ctx)
                else:
                    waiter = _batch_of(owners[who], [spec[i][2] for i in run],
                                       [spec[i][3] for i in run])
                waiters.append(waiter)
                upstream._waiters.extend([waiter] * len(run))  # an entry per reply
            view = upstream.get_buffer(-1)
            for start, length in _pieces(stream, cuts):
                for at in range(start, start + length, len(view)):  # a read fills it at most
                    size = min(len(view), start + length - at)
                    flushes.append([])
                    view[:] = b"\xa5" * len(view)  # the reader must keep its own copy
                    view[:size] = stream[at:at + size]
                    upstream.buffer_updated(size)
            assert not upstream._waiters and upstream._reader.buffered() == 0
            outcomes.append(([w.data for w in waiters],
                             [[owners.index(c) for c in read] for read in flushes]))
        assert outcomes[0] == outcomes[1]
        assert all(d is not None for d in outcomes[0][0])
    finally:
        loop.close()


def test_the_upstream_read_in_c_takes_a_batchs_replies_itself():
    """A batch's replies that C decodes never reach the Python loop (_replies_read),
    even when a reply crosses the read's 16 KiB slices; an error reply in the batch
    does."""
    import asyncio

    from proxy.backends.redis import connection as conn

    if conn.UpstreamCore is conn.PythonUpstreamCore:
        pytest.skip("the C core is not built")
    cache = _cache(True)
    loop = asyncio.new_event_loop()
    try:
        upstream = _connections(loop)[0]
        python_reads = []
        upstream._replies_read = lambda *args: python_reads.append(args)
        flushes: list[list] = [[]]
        client = _FlushingClient(cache, 0, 3, flushes)
        ctxs = [cache.stored_key(0, b"k%d" % i) for i in range(3)]
        values = [b"a" * 10, b"b" * 20_000, b""]
        batch = _batch_of(client, [replies.value] * 3, ctxs)
        upstream._waiters.extend([batch] * 3)
        stream = b"".join(_bulk(cache.seal(0, c, v)) for c, v in zip(ctxs, values, strict=True))
        view = upstream.get_buffer(-1)
        view[:len(stream)] = stream
        upstream.buffer_updated(len(stream))
        assert python_reads == []
        assert batch.data == [b"$%d\r\n%s\r\n" % (len(v), v) for v in values]
        assert not upstream._waiters and flushes == [[client]]
        assert upstream._reader.buffered() == 0

        batch = _batch_of(client, [replies.value], ctxs[:1])
        upstream._waiters.append(batch)
        view[:8] = b"-ERR x\r\n"
        upstream.buffer_updated(8)
        assert len(python_reads) == 1  # an error reply is Python's
    finally:
        loop.close()
