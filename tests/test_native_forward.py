"""proxy._native.Forwarder against the Python dispatch it stands in for.

For a client's batch, the simplest commands (one key at 1, at most one value, nothing to
check: proxy.commands.table.simple_table) are hashed, sealed and packed in C.  For any
command sequence, what the C part appends for a command must be what dispatch ->
forward -> client.forward would have sent and expected: the same request bytes (the
value's envelope aside, whose nonce is random: it must open to the same plaintext under
the same stored name), the same decoder, context and reply kind.  And it must stop at
the first command it does not handle, leaving it to dispatch.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache import Cache
from proxy.commands import TABLE, dispatch, simple_table
from proxy.commands.replies import REPLY_KINDS
from proxy.crypto import KeyHasher, ValueSealer
from proxy.resp.reader import RequestReader
from proxy.resp.writer import python_command
from proxy.server.client import Single

try:
    from proxy import _native
except ImportError:
    _native = None

pytestmark = pytest.mark.skipif(_native is None, reason="proxy._native is not built")

SIMPLE = simple_table()
NAMES = sorted({name for name in SIMPLE} | {b"GeT", b"SeT", b"mget", b"HSET", b"ping",
                                            b"nosuchcommand", b"SET", b"del"})


def _cache(hashing: bool, encryption: bool, prefix: bool) -> Cache:
    hasher = KeyHasher("fwd", bytes(range(32)) if hashing else None, b"app:", prefix, 16)
    sealer = ValueSealer(bytes(range(32, 64))) if encryption else None
    return Cache("fwd", hasher=hasher, sealer=sealer, on_decrypt_error="miss", databases=16,
                 backend=None)


class _Recorder:
    """Just enough of a client for dispatch: records what it would forward or answer."""

    def __init__(self, cache: Cache, db: int):
        self.cache, self.db, self.proto = cache, db, 2
        self.multi = self.capture = self.batch = None
        self.authenticated = True
        self.sent: list = []

    def forward(self, args, decode, ctx, command=None):
        self.sent.append(("forward", list(args), decode, ctx))

    def reply(self, data):
        self.sent.append(("reply", data))

    def run_op(self, operation):
        operation.close()
        self.sent.append(("op",))


commands = st.lists(
    st.tuples(st.sampled_from(NAMES), st.lists(st.binary(max_size=20), max_size=5)).map(
        lambda t: [t[0], *t[1]]),
    min_size=1, max_size=10)


def _unpacked(request: bytes) -> list[bytes]:
    parser = RequestReader()
    (args,) = parser.feed(request)
    return args


@settings(max_examples=400, deadline=None)
@given(commands, st.booleans(), st.booleans(), st.booleans(), st.integers(0, 15),
       st.integers(0, 3))
def test_c_forwards_as_dispatch_does(cmds, hashing, encryption, prefix, db, start):
    cache = _cache(hashing, encryption, prefix)
    assert cache.forwarder is not None
    packed, decoders, ctxs, kinds = [], [], [], bytearray()
    start = min(start, len(cmds))
    end = cache.forwarder.forward([list(c) for c in cmds], start, db, packed, decoders, ctxs,
                                  kinds)
    assert start <= end <= len(cmds)
    assert len(packed) == len(decoders) == len(ctxs) == len(kinds) == end - start

    for i, command in enumerate(cmds[start:end]):
        python = _Recorder(cache, db)
        dispatch(python, list(command))
        assert len(python.sent) == 1 and python.sent[0][0] == "forward", python.sent
        _, args, decode, ctx = python.sent[0]
        assert decoders[i] is decode
        assert ctxs[i] == ctx
        assert kinds[i] == REPLY_KINDS.get(decode, 0)
        ours = _unpacked(packed[i])
        offset = SIMPLE[command[0]][1]
        if encryption and offset:
            value_at = 1 + offset
            assert cache.open(db, ctx, ours[value_at]) == command[value_at]
            assert cache.open(db, ctx, args[value_at]) == command[value_at]
            assert ours[value_at] != command[value_at]  # never the plaintext
            ours[value_at] = args[value_at] = b"<sealed>"
        elif not encryption:
            assert packed[i] == python_command(args)  # byte for byte
        assert ours == args

    if end < len(cmds):  # left for dispatch: not one of the simplest, as sent
        command = cmds[end]
        entry = SIMPLE.get(command[0])
        arity = entry[0] if entry else None
        assert (entry is None or len(command) > 16 or
                (len(command) != arity if arity > 0 else len(command) < -arity))


def test_what_c_leaves_to_dispatch():
    cache = _cache(True, True, True)
    cmds = [[b"GET", b"k"], [b"SET", b"k", b"v", b"EX", b"10"], [b"GET", b"k"],
            [b"GET"], [b"MGET", b"a", b"b"], [b"get", b"k", b"x"], [b"GET", b"k"]]
    out = [], [], [], bytearray()
    assert cache.forwarder.forward(cmds, 0, 0, *out) == 1  # SET with options: run_set
    assert cache.forwarder.forward(cmds, 2, 0, *out) == 3  # GET without a key: arity
    assert cache.forwarder.forward(cmds, 4, 0, *out) == 4  # MGET: several keys
    assert cache.forwarder.forward(cmds, 5, 0, *out) == 5  # arity again
    assert cache.forwarder.forward(cmds, 6, 0, *out) == 7
    assert len(out[0]) == 3
    assert cache.forwarder.forward([[b"GET", b"k"]], 0, 16, *out) == 0  # db out of range
    assert cache.forwarder.forward([[b"GET", "k"]], 0, 0, *out) == 0  # not bytes
    assert cache.forwarder.forward([[b"GET", b"k"] + [b"x"] * 20], 0, 0, *out) == 0


def test_every_simple_command_is_a_plain_forward_in_the_table():
    for name, (arity, offset, decode, kind) in SIMPLE.items():
        command = TABLE[name]
        assert command.keys == (1, 1, 1) and command.check is None and command.batchable
        assert kind == REPLY_KINDS.get(decode, 0)
        if command.name != "set":
            assert (arity, offset, decode) == (command.arity, command.value_offset,
                                               command.decode)
    assert b"get" in SIMPLE and b"GET" in SIMPLE and b"SET" in SIMPLE
    assert b"mget" not in SIMPLE and b"hset" not in SIMPLE


def test_forwarder_refuses_bad_arguments():
    cache = _cache(False, False, False)
    with pytest.raises(TypeError):
        cache.forwarder.forward([], 0, 0, [], [], [], [])  # kinds must be a bytearray
    with pytest.raises(TypeError):
        _native.Forwarder({}, "not a hasher", [b""], None)
    with pytest.raises(TypeError):
        _native.Forwarder({}, None, ["str"], None)


@settings(max_examples=300, deadline=None)
@given(commands, st.booleans(), st.booleans(), st.booleans(), st.integers(-1, 17))
def test_one_is_forward_for_a_single_command(cmds, hashing, encryption, prefix, db):
    """Forwarder.one (a read of one command, proxy.server.client.Single) takes exactly
    the commands forward() takes, and makes the same request, stored name, decoder and
    reply kind."""
    cache = _cache(hashing, encryption, prefix)
    client = object()
    for command in cmds:
        one = cache.forwarder.one(list(command), db, 3, client, cache)
        packed, decoders, ctxs, kinds = [], [], [], bytearray()
        taken = cache.forwarder.forward([list(command)], 0, db, packed, decoders, ctxs, kinds)
        assert (one is not None) == (taken == 1)
        if one is None:
            continue
        assert type(one) is Single
        request, stored = one.request, one.ctx
        assert (stored, one.decode, one.kind) == (ctxs[0], decoders[0], kinds[0])
        assert (one.client, one.cache, one.db, one.proto) == (client, cache, db, 3)
        assert one.gcm is cache.reply_gcm and one.data is None
        ours, theirs = _unpacked(request), _unpacked(packed[0])
        offset = SIMPLE[command[0]][1]
        if encryption and offset:  # two envelopes of one value: random nonces
            assert cache.open(db, stored, ours[1 + offset]) == command[1 + offset]
            assert ours[1 + offset] != command[1 + offset]
            ours[1 + offset] = theirs[1 + offset] = b"<sealed>"
        else:
            assert request == packed[0]
        assert ours == theirs


def test_one_leaves_to_dispatch_what_forward_leaves():
    cache = _cache(True, True, True)
    one = cache.forwarder.one
    assert one([b"GET", b"k"], 0, 2, None, cache) is not None
    for command, db in (([b"SET", b"k", b"v", b"EX", b"10"], 0), ([b"GET"], 0),
                        ([b"MGET", b"a", b"b"], 0), ([b"GET", b"k"], 16), ([b"GET", b"k"], -1),
                        ([b"GET", "k"], 0), ((b"GET", b"k"), 0), ([b"PING"], 0)):
        assert one(command, db, 2, None, cache) is None, command
    with pytest.raises(TypeError):
        one([b"GET", b"k"], 0)
    with pytest.raises(TypeError):
        _native.Forwarder({}, None, [b""], None, int)  # not a Single type
