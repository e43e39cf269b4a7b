"""Splitting a client's byte stream into commands: RESP arrays via hiredis, inline lines.

Redis accepts two request forms: RESP arrays of bulk strings (what every client library
sends) and "inline" commands, a line of space-separated words (telnet, `nc`, health
checks such as `printf 'PING\\r\\n' | nc`).  Like Redis, a command whose first byte is
not `*` is inline.  hiredis does the RESP work in C; this module decides where inline
lines are, enforces the size limits and validates the shape of each command.

Never logs, never holds on to a command after returning it.
"""

from __future__ import annotations

import re

import hiredis

from proxy.errors import ClientProtocolError
from proxy.resp import limits

_STAR = 0x2A
_DOLLAR = 0x24
# A bulk header with 9 or more digits: the only kind that can exceed MAX_BULK_BYTES.
_LONG_BULK_HEADER = re.compile(rb"\$\d{9,}\r\n")
# hiredis allocates an array as soon as it reads the header, so an array header that
# may exceed MAX_ARGUMENTS (7+ digits), or a `*` and digits ending a read, is cut off and
# checked at a boundary before hiredis sees it.  Inside a payload this only splits a read.
_ARRAY_HEADER_TO_CHECK = re.compile(rb"\*\d{7,}|\*\d*\Z")
_MAX_HEADER_LINE = 24
_HISTORY_BYTES = 512
# hiredis is fed at most this much at a time, and drained in between.  Once it has read
# 1 KiB of its buffer it moves the unread rest to the front, at every reply it returns:
# fed a whole 256 KiB read of 4 KiB values, it spent 30 us per value moving bytes, and
# about 0.6 us fed 16 KiB at a time (about half the cost per value at 100 bytes, too).
FEED_BYTES = 16 * 1024


class RequestReader:
    """Incremental request parser for one client connection."""

    __slots__ = ("_reader", "_inline", "_pending", "_line_ended", "_previous", "_held",
                 "max_request_bytes", "error")

    def __init__(self, max_request_bytes: int = limits.MAX_REQUEST_BYTES):
        self._reader = hiredis.Reader()
        self._inline: bytes | None = None  # a partial inline line, when one is being read
        # Bytes fed to hiredis since it last produced a command.  It over-counts by the
        # part of a chunk that completed the previous command, which only makes the limit
        # a little stricter; it never under-counts.
        self._pending = 0
        self._line_ended = True  # did the last byte fed to hiredis end a line?
        self._previous = b""  # the last bytes fed to hiredis before the current read
        self._held = b""  # an array header's first bytes, kept until its line is complete
        self.max_request_bytes = max_request_bytes
        # Set when the stream turned out malformed; the commands before the bad bytes are
        # still returned (Redis runs them too), then the caller answers with this error.
        self.error: ClientProtocolError | None = None

    def _idle(self) -> bool:
        """True when hiredis holds no partial command we could mistake for a boundary.

        hiredis consumes a reply's type byte before its line is complete, and an array
        header as soon as it has it, so `has_data()` alone is not enough: we also need
        the last byte fed to end a line.  A read that ends right after an array header
        or element still looks idle; well-formed input then continues with `$`, which
        always goes to hiredis.  Only a malformed continuation (neither `*` nor `$`) is
        taken for inline, and the partial array is then dropped.
        """
        return self._line_ended and not self._reader.has_data()

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Return every complete command in `data` (plus what was buffered before).

        On malformed input, returns the commands before it and sets `error`; the caller
        runs them, answers with the error and closes the connection, as Redis does.
        Nothing more may be fed once `error` is set.
        """
        commands: list[list[bytes]] = []
        try:
            self._feed(data, commands)
        except ClientProtocolError as exc:
            self.error = exc
        return commands

    def _feed(self, data: bytes, commands: list[list[bytes]]) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        while data:
            if self._inline is not None or (data[0] != _STAR and data[0] != _DOLLAR
                                            and self._idle()):
                data = self._feed_inline(data, commands)
                continue
            reader = self._reader
            chunk_at_boundary = self._line_ended and not reader.has_data()  # self._idle()
            if chunk_at_boundary and data[0] == _STAR:
                end = data.find(b"\r\n", 0, _MAX_HEADER_LINE)
                if end < 0 and len(data) < _MAX_HEADER_LINE:
                    self._held = data  # check the count once the line is complete
                    return
                if end != 2 or not 0x31 <= data[1] <= 0x39:  # other than `*1` to `*9`
                    self._check_array_header(data)
            later = _ARRAY_HEADER_TO_CHECK.search(data, 1)
            if later is not None:  # rare: only with 7-digit counts or a read ending in `*`
                data, after = data[:later.start()], data[later.start():]
            else:
                after = b""
            fed = min(len(data), FEED_BYTES)
            reader.feed(data, 0, fed)
            self._pending += len(data)
            self._line_ended = data[-1] == 0x0A
            chunk, data = data, b""
            returned = []  # everything hiredis returned from this chunk, empty ones too
            while True:
                try:
                    command = reader.gets()
                except hiredis.ProtocolError as exc:
                    rest = self._inline_after_resp(chunk, returned, chunk_at_boundary)
                    if rest is None:
                        raise ClientProtocolError(f"Protocol error: {exc}") from None
                    data = rest
                    break
                except TypeError:
                    # hiredis builds a RESP3 map or set as a dict or set, and a nested
                    # aggregate cannot be a key: "unhashable type".  Never a request.
                    raise ClientProtocolError(
                        "Protocol error: expected '$' before each argument") from None
                if command is False:
                    if fed < len(chunk):  # the next slice (see FEED_BYTES)
                        step = min(len(chunk) - fed, FEED_BYTES)
                        reader.feed(chunk, fed, step)
                        fed += step
                        continue
                    break
                returned.append(command)
                if command is None:  # `*-1\r\n`: Redis ignores a null array
                    continue
                if type(command) is not list:
                    # As Redis, a request not starting with `*` is inline (`PING` then
                    # `+OK` in one read is two commands), wherever the read was split.
                    rest = self._inline_after_resp(chunk, returned[:-1], chunk_at_boundary)
                    if rest is None:
                        raise ClientProtocolError(
                            "Protocol error: expected '*', got a non-array request")
                    data = rest
                    break
                for arg in command:
                    if type(arg) is not bytes:
                        raise ClientProtocolError(
                            "Protocol error: expected '$' before each argument")
                if command:
                    commands.append(command)
            if returned:
                self._pending = 0
            # The last bytes fed to hiredis (at least _HISTORY_BYTES, across reads that
            # small): a command's tail may arrive in several tiny reads.  Trimmed only
            # past twice that, which saves a copy per small read.
            if len(chunk) >= _HISTORY_BYTES:
                self._previous = chunk
            else:
                previous = self._previous + chunk
                self._previous = (previous if len(previous) <= 2 * _HISTORY_BYTES
                                  else previous[-_HISTORY_BYTES:])
            if (chunk_at_boundary and self._reader.has_data()
                    and _LONG_BULK_HEADER.search(chunk) is not None):
                self._check_bulk_lengths(chunk)
            if self._pending > self.max_request_bytes:
                raise ClientProtocolError("Protocol error: invalid bulk length")
            if after:
                data += after

    def _check_bulk_lengths(self, chunk: bytes) -> None:
        """Refuse a bulk longer than Redis's proto-max-bulk-len when its header arrives.

        Redis answers `invalid bulk length` at once; waiting for the data instead would
        leave a client that sent only the header without a reply.  `chunk` starts at a
        header (the reader was idle) and hiredis holds an incomplete element, so walking
        the headers (skipping payloads by their length) finds the pending one.  Only
        chunks holding a 9-digit bulk header get here, which keeps this off the hot path.
        """
        i, n = 0, len(chunk)
        while i < n:
            end = chunk.find(b"\r\n", i)
            if end < 0:
                return
            kind = chunk[i]
            if kind != _STAR and kind != _DOLLAR:
                return  # inline after RESP: hiredis and _feed_inline deal with it
            try:
                length = int(chunk[i + 1:end])
            except ValueError:
                return
            i = end + 2
            if kind == _DOLLAR:
                if length > limits.MAX_BULK_BYTES:
                    raise ClientProtocolError("Protocol error: invalid bulk length")
                i += length + 2

    def _inline_after_resp(self, chunk: bytes, parsed: list,
                           chunk_at_boundary: bool) -> bytes | None:
        """After hiredis rejects a byte: is it an inline command following RESP ones?

        Redis allows `*1\r\n$4\r\nPING\r\nPING\r\n`.  hiredis does not report how far
        it got, so on this (rare, error-only) path we re-encode the commands it returned
        from this chunk; if they account exactly for the chunk's start and the next byte
        starts an inline command, parsing resumes there with a fresh reader.
        """
        if chunk_at_boundary and self._inline_start(chunk, parsed, 0) is not None:
            return self._inline_after(chunk, parsed, 0)
        # The first command began in an earlier read (redis-cli --pipe sends "\r\n" after
        # its last command; "idle" may also mean after an array header or element): only
        # its tail is here.  Try each line end that could close it, bounded, and resume
        # only if exactly one accounts for the whole start of the chunk.
        first = parsed[0] if parsed else None
        if (type(first) is not list or not first
                or any(type(a) is not bytes for a in first)):
            return None
        encoded = hiredis.pack_command(tuple(first))
        found = None
        tries = 0
        end = chunk.find(b"\n", 0, len(encoded))
        while end >= 0 and tries < 64:
            offset = end + 1
            if chunk[0] == encoded[-offset] and encoded.endswith(chunk[:offset]):
                tries += 1
                head = encoded[:len(encoded) - offset]  # what earlier reads must have held
                previous = self._previous
                fits = (previous.endswith(head) if len(head) <= len(previous)
                        else head.endswith(previous))
                if fits and self._inline_start(chunk, parsed[1:], offset) is not None:
                    if found is not None:
                        return None
                    found = offset
            end = chunk.find(b"\n", offset, len(encoded))
        if found is None or end >= 0:  # none, or gave up before trying every line end
            return None
        return self._inline_after(chunk, parsed[1:], found)

    def _inline_after(self, chunk: bytes, parsed: list, offset: int) -> bytes | None:
        """Resume at the inline command after `parsed` (which starts at `offset`)."""
        offset = self._inline_start(chunk, parsed, offset)
        if offset is None:
            return None
        self._reader = hiredis.Reader()
        self._pending = 0
        self._line_ended = True
        return chunk[offset:]

    @staticmethod
    def _inline_start(chunk: bytes, parsed: list, offset: int) -> int | None:
        """The offset after `parsed` if they are exactly the bytes of `chunk` from
        `offset` and an inline command follows, else None."""
        for command in parsed:
            if not command:  # `*0\r\n` or `*-1\r\n`, which Redis skips
                end = chunk.find(b"\r\n", offset)
                if end < 0 or chunk[offset] != _STAR:
                    return None
                try:
                    if int(chunk[offset + 1:end]) > 0:
                        return None
                except ValueError:
                    return None
                offset = end + 2
                continue
            if type(command) is not list or any(type(a) is not bytes for a in command):
                return None
            encoded = hiredis.pack_command(tuple(command))
            if chunk[offset:offset + len(encoded)] != encoded:
                return None
            offset += len(encoded)
        if offset >= len(chunk) or chunk[offset] in (_STAR, _DOLLAR):
            return None
        return offset

    def _check_array_header(self, data: bytes) -> None:
        end = data.find(b"\r\n", 0, 24)
        if end < 0:
            return  # hiredis will reject a malformed header itself
        try:
            count = int(data[1:end])
        except ValueError:
            raise ClientProtocolError("Protocol error: invalid multibulk length") from None
        if count > limits.MAX_ARGUMENTS:
            raise ClientProtocolError("Protocol error: invalid multibulk length")

    def _feed_inline(self, data: bytes, commands: list[list[bytes]]) -> bytes:
        if self._inline is None:
            # Coming from RESP: hiredis may hold a partial array (see _idle); drop it.
            self._reader = hiredis.Reader()
            self._pending = 0
            self._line_ended = True
        buf = data if self._inline is None else self._inline + data
        newline = buf.find(b"\n")
        if newline < 0:
            if len(buf) > limits.MAX_INLINE_BYTES:
                raise ClientProtocolError("Protocol error: too big inline request")
            self._inline = buf
            return b""
        self._inline = None
        if newline > limits.MAX_INLINE_BYTES:
            raise ClientProtocolError("Protocol error: too big inline request")
        line = buf[:newline]
        if line.endswith(b"\r"):
            line = line[:-1]
        args = split_inline(line)
        if args:
            commands.append(args)
        return buf[newline + 1:]


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_SPACE = frozenset(b" \n\r\t\v\f\x00")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command the way Redis's sdssplitargs does (quotes and escapes)."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            if in_double:
                if i >= n:
                    raise ClientProtocolError("Protocol error: unbalanced quotes in request")
                c = line[i]
                if (c == 0x5C and i + 3 < n and line[i + 1] == ord("x")
                        and line[i + 2] in _HEX and line[i + 3] in _HEX):
                    current.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current += _ESCAPES.get(line[i], bytes([line[i]]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ClientProtocolError("Protocol error: unbalanced quotes in request")
                    i += 1
                    break
                else:
                    current.append(c)
            elif in_single:
                if i >= n:
                    raise ClientProtocolError("Protocol error: unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    current.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ClientProtocolError("Protocol error: unbalanced quotes in request")
                    i += 1
                    break
                else:
                    current.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in _SPACE:
                    break
                if c == 0x22:
                    in_double = True
                elif c == 0x27:
                    in_single = True
                else:
                    current.append(c)
            i += 1
        args.append(bytes(current))
