"""Property-based fuzzing of the RESP request reader: any bytes, split anywhere.

The corpus in tests/fuzz/corpus/reader/ (seeds, and inputs that once broke something)
is replayed with several split patterns; atheris (fuzz/fuzz_reader.py) starts from it.
"""

from __future__ import annotations

from pathlib import Path

import hiredis
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.properties import (
    check_reader,
    check_reader_allocation,
    examples,
    reader_peak_allocation,
)

CORPUS = Path(__file__).parent / "corpus" / "reader"

# Pieces of RESP and inline requests, valid and not, that random bytes rarely hit.
TOKENS = [
    b"*", b"$", b"\r\n", b"\n", b"\r", b"0", b"1", b"2", b"3", b"-1", b"-", b" ", b'"', b"'",
    b"\\x4", b"\\", b"+", b":", b"%", b"~", b"_", b"PING", b"SET", b"a", b"*1\r\n$4\r\nPING\r\n",
    b"*2\r\n", b"$3\r\nabc\r\n", b"$0\r\n\r\n", b"*0\r\n", b"*-1\r\n", b"PING\r\n",
    b"*1048577\r\n", b"$536870913\r\n", b"$999999999999\r\n", b"*99999999999\r\n",
    b"$536870912\r\n", b"$-5\r\n", b"*1\r\n", b"\x00", b"\xff",
]
token_streams = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=3)),
                         max_size=24).map(b"".join)
any_input = st.one_of(st.binary(max_size=200), token_streams)
cuts = st.lists(st.integers(0, 400), max_size=6)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_input, cuts)
@example(b"*2\r\n+\r\n+**a*2\r\n3", [])
@example(b"*1\r\n$4\r\nPING\r\n*2\r\n%1\r\n~0\r\n:1\r\n", [])  # was a TypeError
@example(b"*1\r\n$4\r\nPING\r\n+OK\r\n", [])
@example(b"*1048577\r\n", [3])
@example(b"*1\r\n$536870913\r\n", [6])
@example(b'SET "a\r\n', [])
def test_any_bytes_split_anywhere_give_commands_or_one_protocol_error(data, points):
    check_reader(data, points)


# Well-formed requests: RESP arrays of bulk strings and inline lines, mixed.
arg = st.binary(max_size=12)
resp_command = st.lists(arg, min_size=1, max_size=4).map(
    lambda args: (hiredis.pack_command(tuple(args)), args))
# An inline command starts with its name, a letter (see the known limit below).
name = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6)
word = st.text("abcdefghijklmnopqrstuvwxyz0123456789:_-.*$+", min_size=1, max_size=8)
inline_command = st.tuples(st.tuples(name, st.lists(word, max_size=3)).map(
                               lambda t: [t[0], *t[1]]),
                           st.sampled_from(["\r\n", "\n"]), st.sampled_from(["", " ", "  "])
                           ).map(lambda t: ((t[2] + " ".join(t[0]) + t[1]).encode(),
                                            [w.encode() for w in t[0]]))
valid_stream = st.lists(st.one_of(resp_command, inline_command), min_size=1, max_size=8)


@settings(max_examples=examples(300), deadline=None)
@given(valid_stream, cuts)
# Found by this test: a RESP command whose tail came in reads of one byte, then inline.
@example([(b"AAA\r\n", [b"AAA"]), (b"*2\r\n$1\r\nx\r\n$0\r\n\r\n", [b"x", b""]),
          (b"A\r\n", [b"A"])], [18, 19])
# Found by this test: inline commands after a RESP one in the same read.
@example([(b"*1\r\n$0\r\n\r\n", [b""]), (b"-\r\n", [b"-"])], [])
@example([(b"*1\r\n$4\r\nPING\r\n", [b"PING"]), (b"+OK\r\n", [b"+OK"])], [])
def test_well_formed_requests_split_anywhere_come_out_whole_and_in_order(stream, points):
    data = b"".join(encoded for encoded, _ in stream)
    commands, error = check_reader(data, points)
    assert error is None
    assert commands == [args for _, args in stream]


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(resp_command, min_size=1, max_size=5), any_input, cuts)
def test_commands_before_garbage_come_out_first(stream, garbage, points):
    data = b"".join(encoded for encoded, _ in stream) + garbage
    commands, _ = check_reader(data, points)
    assert commands[:len(stream)] == [args for _, args in stream]


# Allocation: what a header declares is not what the reader reserves.
big_headers = st.sampled_from([
    b"$536870912\r\n", b"$536870911\r\n", b"$400000000\r\n", b"$999999\r\n", b"$99999999\r\n"])
declared_stream = st.tuples(
    st.sampled_from([b"*1\r\n", b"*3\r\n", b"*1048576\r\n", b"*999999\r\n", b""]),
    st.lists(st.one_of(big_headers, st.sampled_from([b"$1\r\na\r\n", b"abc", b"\r\n"])),
             max_size=6).map(b"".join),
).map(b"".join)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declared_stream, cuts)
@example(b"*1\r\n$536870912\r\nabc", [])
@example(b"*1048576\r\n", [])
def test_declared_sizes_are_not_allocated(data, points):
    check_reader_allocation(data, points)


# Redis refuses a `*` where an argument's `$` belongs at once; so does the reader, before
# anything is reserved (hiredis reserved a list of 1M slots at each nested header).
def test_nested_array_headers_are_refused_before_they_allocate():
    data = b"*1048576\r\n" * 7
    assert reader_peak_allocation(data) <= 4 * len(data) + 64 * 1024


# As Redis: an inline line may end with a bare LF, whatever its first byte.
def test_inline_line_like_a_reply_after_a_resp_command_in_one_read():
    commands, error = check_reader(b"*1\r\n$4\r\nPING\r\n:\n")
    assert (commands, error) == ([[b"PING"], [b":"]], None)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*")), ids=lambda p: p.name)
def test_corpus(path):
    data = path.read_bytes()
    for points in ([], [len(data) // 2], range(1, len(data)), range(3, len(data), 7)):
        check_reader(data, points)
    check_reader_allocation(data)
