"""Splitting a client's byte stream into commands, exactly as Redis splits it.

Redis accepts two request forms: RESP arrays of bulk strings (what every client library
sends) and "inline" commands, a line of space-separated words (telnet, `nc`, health
checks such as `printf 'PING\\r\\n' | nc`).  A command whose first byte is `*` is an
array, anything else inline; this follows processMultibulkBuffer and processInlineBuffer
in Redis's networking.c step by step, so the same bytes give the same commands and the
same protocol errors as Redis:

* header lines are found as Redis's strchr finds them: a NUL before the `\\r` (inline:
  before the `\\n`) means the line is not complete yet;
* an array element's two trailing bytes are skipped unchecked; a count of 0 or less is
  an empty command, skipped; an inline line may follow an array in the same read;
* limits (proxy.resp.limits): the argument count, a bulk's declared length, a header or
  inline line without its end past 64 KiB, and the bytes of one unfinished command.
  Nothing is reserved from what a header declares: arguments are kept as they arrive.

`RequestReader` is the C parser (proxy._native.RequestParser) when it is built, else its
Python twin below; tests/test_native.py feeds both the same bytes split the same ways.

Never logs, never holds on to a command after returning it.
"""

from __future__ import annotations

import threading

from proxy.errors import ClientProtocolError
from proxy.resp import limits
from proxy.resp.numbers import string2ll
from proxy.speedups import native

_STAR = 0x2A
_DOLLAR = 0x24


def _line_end(buf: bytes, pos: int, char: bytes) -> int:
    """Redis's strchr(buf + pos, char) on a NUL-terminated buffer: -1 if a NUL is first."""
    end = buf.find(char, pos)
    if end < 0 or buf.find(b"\0", pos, end) >= 0:
        return -1
    return end


# Clients' requests and Redis's replies are read into one buffer per thread
# (asyncio.BufferedProtocol; see read_buffer below), which the parser reads in place; the
# C part's buffer is the same size (proxy/_native.c).
READ_BUFFER_BYTES = 262144
_read_buffers = threading.local()


def _python_read_buffer(sizehint: int = 0) -> memoryview:
    view = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(READ_BUFFER_BYTES))
    return view


class PythonRequestParser:
    """The Python twin of proxy._native.RequestParser: same arguments, same results.

    A read is parsed where it lies; only an unfinished command's tail is kept, and a
    long argument arriving in pieces is parsed again only once all of it is there.
    """

    __slots__ = ("_held", "_need", "_reqtype", "_multibulklen", "_bulklen", "_args",
                 "_pending", "_max_request_bytes", "_max_bulk_bytes", "_max_arguments",
                 "_max_inline_bytes", "_split_inline", "_error_type", "error")

    def __init__(self, split_inline, error_type, max_request_bytes: int, max_bulk_bytes: int,
                 max_arguments: int, max_inline_bytes: int):
        self._split_inline = split_inline
        self._error_type = error_type
        self._max_request_bytes = max_request_bytes
        self._max_bulk_bytes = max_bulk_bytes
        self._max_arguments = max_arguments
        self._max_inline_bytes = max_inline_bytes
        self._held = bytearray()  # an unfinished command's unparsed tail
        self._need = 0  # parse again once _held has this many bytes
        self.error: str | None = None
        self._reset_command()

    def _reset_command(self) -> None:
        self._reqtype = None  # b"*" (array) or b"i" (inline) once known
        self._multibulklen = 0
        self._bulklen = -1
        self._args: list[bytes] | None = None
        self._pending = 0

    def buffered(self) -> int:
        return len(self._held)

    def get_buffer(self, sizehint: int) -> memoryview:
        """This thread's read buffer (see proxy._native's READ_BUFFER_BYTES)."""
        return _python_read_buffer(sizehint)

    def feed(self, data: bytes | int) -> list[list[bytes]]:
        """The complete commands in `data`: bytes, or the count of bytes just read into
        get_buffer's buffer."""
        if type(data) is int:
            view = getattr(_read_buffers, "view", None)
            if view is None or not 0 <= data <= READ_BUFFER_BYTES:
                raise ValueError("feed(n): n bytes of get_buffer's buffer")
            data = bytes(view[:data])
        if self.error is not None:
            raise RuntimeError("the request stream already failed")
        held = self._held
        if held:
            held += data
            if len(held) < self._need:  # still inside one long argument
                if self._pending + len(held) > self._max_request_bytes:
                    self._fail("invalid bulk length")
                    held.clear()
                return []
            data = bytes(held)
            held.clear()
        commands: list[list[bytes]] = []
        pos = self._parse(data, commands)
        if self.error is None and pos < len(data):
            held += data[pos:]
        return commands

    def _fail(self, text: str) -> int:
        self.error = f"Protocol error: {text}"
        return 0

    def _whole_arrays(self, buf: bytes, commands: list[list[bytes]]) -> int:
        """The common case, quickly: whole, well-formed arrays at a command boundary.

        Takes only what the step-by-step parser below would take the same way (canonical
        counts and lengths, every argument complete, within the limits) and stops,
        consuming nothing of it, at the first command that is anything else; the
        step-by-step parser then takes over from there."""
        pos, n = 0, len(buf)
        max_bulk, max_args = self._max_bulk_bytes, self._max_arguments
        max_request = self._max_request_bytes
        while pos < n and buf[pos] == _STAR:
            cr = buf.find(b"\r", pos + 1)
            if cr < 0 or cr + 2 > n:
                break
            count = buf[pos + 1:cr]
            if (not count.isdigit() or (count[0] == 0x30) or len(count) > 7
                    or int(count) > max_args):
                break
            p = cr + 2
            args = []
            for _ in range(int(count)):
                cr = buf.find(b"\r", p + 1)
                if p >= n or buf[p] != _DOLLAR or cr < 0 or cr + 2 > n:
                    return pos
                length = buf[p + 1:cr]
                if (not length.isdigit() or (length[0] == 0x30 and len(length) > 1)
                        or len(length) > 10):
                    return pos
                length = int(length)
                p = cr + 2
                if length > max_bulk or p + length + 2 > n:
                    return pos
                args.append(buf[p:p + length])
                p += length + 2
            if p - pos > max_request:
                break
            commands.append(args)
            pos = p
        return pos

    def _header_end(self, buf: bytes, pos: int, avail: int, what: str) -> int:
        """Where the header line at pos has its CR, or -1 while the line (and the byte
        after its CR) is not all there; past the inline limit that is an error."""
        cr = _line_end(buf, pos, b"\r")
        if cr < 0:
            if avail > self._max_inline_bytes:
                self._fail(f"too big {what} count string")
            return -1
        return cr if cr - pos <= avail - 2 else -1

    def _parse(self, buf: bytes, commands: list[list[bytes]]) -> int:
        """Parse buf from 0; returns where the unparsed tail starts (and sets _need)."""
        pos = self._whole_arrays(buf, commands) if self._reqtype is None else 0
        n = len(buf)
        while pos < n:
            avail = n - pos
            self._need = avail + 1  # a header or line: look again at the next byte
            if self._reqtype is None:
                self._reqtype = b"*" if buf[pos] == _STAR else b"i"
            if self._reqtype == b"i":
                newline = _line_end(buf, pos, b"\n")
                if newline < 0:
                    if avail > self._max_inline_bytes:
                        self._fail("too big inline request")
                    return pos
                end = newline - 1 if newline > pos and buf[newline - 1] == 0x0D else newline
                try:
                    argv = self._split_inline(buf[pos:end])
                except self._error_type as exc:
                    self.error = str(exc)
                    return pos
                pos = newline + 1
                if argv:
                    commands.append(argv)
                self._reset_command()
                continue
            if self._multibulklen == 0:  # the array header
                cr = self._header_end(buf, pos, avail, "mbulk")
                if cr < 0:
                    return pos
                count = string2ll(buf[pos + 1:cr])
                if count is None or count > self._max_arguments:
                    return self._fail("invalid multibulk length")
                self._pending += cr + 2 - pos
                pos = cr + 2
                if count <= 0:  # an empty command: Redis skips it
                    self._reset_command()
                    continue
                self._multibulklen = count
                self._bulklen = -1
                self._args = []
                continue
            if self._bulklen == -1:  # an argument's header
                cr = self._header_end(buf, pos, avail, "bulk")
                if cr < 0:
                    return pos
                if buf[pos] != _DOLLAR:
                    # As Redis's reply: CR and LF become spaces, a NUL ends the text.
                    got = {0x0D: " ", 0x0A: " ", 0x00: ""}.get(buf[pos], chr(buf[pos]))
                    return self._fail("expected '$', got '" + got + ("'" if got else ""))
                length = string2ll(buf[pos + 1:cr])
                if length is None or length < 0 or length > self._max_bulk_bytes:
                    return self._fail("invalid bulk length")
                self._pending += cr + 2 - pos
                pos = cr + 2
                self._bulklen = length
                continue
            # an argument's bytes, then two bytes Redis skips unchecked
            length = self._bulklen
            if avail < length + 2:
                if self._pending + avail > self._max_request_bytes:
                    self._fail("invalid bulk length")
                self._need = length + 2
                return pos
            self._args.append(buf[pos:pos + length])
            pos += length + 2
            self._pending += length + 2
            self._bulklen = -1
            if self._pending > self._max_request_bytes and self._multibulklen > 1:
                return self._fail("invalid bulk length")  # many arguments adding up
            self._multibulklen -= 1
            if self._multibulklen == 0:
                commands.append(self._args)
                self._reset_command()
        return pos


_Parser = native.RequestParser if native is not None else PythonRequestParser
# read_buffer(sizehint): the buffer the event loop reads clients' requests and Redis's
# replies into (a BufferedProtocol's get_buffer), the same one RequestReader().get_buffer
# gives.  One per thread; each read is handled before the next one lands there.
read_buffer = native.read_buffer if native is not None else _python_read_buffer


def feed_as_reads(protocol, data: bytes) -> None:
    """Hand `data` to a BufferedProtocol as the event loop would: copied into its
    get_buffer() buffer a bufferful at a time, each followed by buffer_updated (for
    callers that hold bytes, such as bench.inprocess)."""
    view = protocol.get_buffer(-1)
    for start in range(0, len(data), len(view)):
        chunk = data[start:start + len(view)]
        view[:len(chunk)] = chunk
        protocol.buffer_updated(len(chunk))


def RequestReader(max_request_bytes: int = limits.MAX_REQUEST_BYTES):
    """A parser for one client connection: `feed(data)` returns the complete commands
    (non-empty lists of bytes); after malformed input `error` holds the protocol error's
    text (the commands before it are still returned; Redis runs them too), the caller
    answers `-ERR <error>` and closes, and nothing more is fed."""
    return _Parser(split_inline, ClientProtocolError, max_request_bytes,
                   limits.MAX_BULK_BYTES, limits.MAX_ARGUMENTS, limits.MAX_INLINE_BYTES)


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
