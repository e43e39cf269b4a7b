"""Request parsing: RESP arrays split anywhere, inline commands, malformed input, limits."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.resp.reader import RequestReader, split_inline

commands = st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=5), min_size=1,
                    max_size=8)


def pack(cmds):
    return b"".join(hiredis.pack_command(tuple(c)) for c in cmds)


@settings(max_examples=200, deadline=None)
@given(commands, st.data())
def test_commands_split_at_any_points_come_out_whole_and_in_order(cmds, data):
    stream = pack(cmds)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader = RequestReader()
    out, start = [], 0
    for cut in [*cuts, len(stream)]:
        out += reader.feed(stream[start:cut]) if cut > start else []
        start = max(start, cut)
    assert reader.error is None
    assert out == cmds


@pytest.mark.parametrize("line, args", [
    (b"PING", [b"PING"]),
    (b"  set  a   b ", [b"set", b"a", b"b"]),
    (b'set a "b c"', [b"set", b"a", b"b c"]),
    (b'set a "\\x41\\n\\"q"', [b"set", b"a", b'A\n"q']),
    (b"set a 'it\\'s'", [b"set", b"a", b"it's"]),
    (b'set a ""', [b"set", b"a", b""]),
    (b"", []),
])
def test_inline_commands_split_like_redis(line, args):
    assert split_inline(line) == args


@pytest.mark.parametrize("line", [b'set a "b', b"set a 'b", b'set a "b"c'])
def test_unbalanced_quotes_are_a_protocol_error(line):
    reader = RequestReader()
    assert reader.feed(line + b"\r\n") == []
    assert "unbalanced quotes" in str(reader.error)


def test_inline_and_resp_mix_in_one_read():
    reader = RequestReader()
    data = b"PING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\nECHO y\n\r\n*1\r\n$4\r\nPING\r\n"
    assert reader.feed(data) == [[b"PING"], [b"ECHO", b"x"], [b"ECHO", b"y"], [b"PING"]]
    assert reader.error is None


def test_inline_line_split_across_reads():
    reader = RequestReader()
    assert reader.feed(b"EC") == []
    assert reader.feed(b"HO hel") == []
    assert reader.feed(b"lo\r\n") == [[b"ECHO", b"hello"]]


@pytest.mark.parametrize("data, text", [
    (b"*2\r\n$3\r\nGET\r\nXYZ\r\n", "Protocol error: expected '$', got 'X'"),
    (b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
    (b"*1\r\n\r\n", "Protocol error: expected '$', got ' '"),  # CR shown as a space
    (b"*99999999999\r\n", "Protocol error: invalid multibulk length"),
    (b"*01\r\n", "Protocol error: invalid multibulk length"),  # Redis's string2ll
    # 18, 19 and 20 digits: too many arguments, a 64-bit overflow, and one past it
    (b"*100000000000000000\r\n", "Protocol error: invalid multibulk length"),
    (b"*9223372036854775808\r\n", "Protocol error: invalid multibulk length"),
    (b"*18446744073709551616\r\n", "Protocol error: invalid multibulk length"),
    (b"*1\r\n$1x\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$04\r\nPING\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
    (b'PING "a\r\n', "Protocol error: unbalanced quotes in request"),
])
def test_malformed_requests_set_redis_error_text(data, text):
    reader = RequestReader()
    reader.feed(data)
    assert reader.error == text


@pytest.mark.parametrize("data", [
    b"*2\r\n$3\r\nGET\r\nXYZ",  # a header line without its CR: more may come
    b"*1\r\n\x00\r\n",  # a NUL before the CR: Redis's strchr stops there
    b"PING\x00\r\n",
])
def test_incomplete_lines_wait_as_in_redis(data):
    reader = RequestReader()
    assert reader.feed(data) == []
    assert reader.error is None
    assert reader.buffered() > 0


def test_empty_and_null_arrays_are_skipped_and_elements_tails_unchecked():
    reader = RequestReader()
    assert reader.feed(b"*0\r\n*-1\r\n*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n") == [
        [b"PING"], [b"PING"]]
    assert reader.error is None


def test_nested_array_headers_are_refused_at_once():
    reader = RequestReader()
    assert reader.feed(b"*1048576\r\n*1048576\r\n") == []
    assert reader.error == "Protocol error: expected '$', got '*'"


def test_a_line_not_starting_with_star_is_inline_as_in_redis():
    assert RequestReader().feed(b"+OK\r\n") == [[b"+OK"]]


def test_commands_before_malformed_bytes_are_still_returned():
    reader = RequestReader()
    out = reader.feed(b"*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n")
    assert out == [[b"PING"]]
    assert reader.error is not None


def test_oversized_request_is_refused_before_it_completes():
    reader = RequestReader(max_request_bytes=1000)
    assert reader.feed(b"*2\r\n$3\r\nSET\r\n$5000\r\n" + b"x" * 1200) == []
    assert "invalid bulk length" in str(reader.error)


def test_too_big_inline_request():
    reader = RequestReader()
    reader.feed(b"x" * (64 * 1024 + 10))
    assert "too big inline request" in str(reader.error)


def test_null_and_empty_arrays_are_ignored():
    reader = RequestReader()
    assert reader.feed(b"*-1\r\n*0\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


@pytest.mark.parametrize("value_size", [10, 4096, 20_000, 70_000])
def test_a_large_read_gives_every_command(value_size):
    # Many commands in one read (the parser's buffer grows past its first 4 KiB, values
    # longer than that), then an inline command and malformed bytes after them.
    slice_bytes = 16 * 1024
    count = max(40, 3 * slice_bytes // value_size)
    cmds = [[b"SET", b"key:%d" % i, bytes([65 + i % 26]) * value_size] for i in range(count)]
    stream = pack(cmds)
    assert len(stream) > 2 * slice_bytes
    reader = RequestReader()
    assert reader.feed(stream + b"PING\r\n") == [*cmds, [b"PING"]]
    assert reader.error is None
    reader = RequestReader()
    assert reader.feed(stream + b"*1\r\n:1\r\n") == cmds
    assert "expected '$'" in str(reader.error)
