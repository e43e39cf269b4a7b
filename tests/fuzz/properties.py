"""What must hold for any input to the three parsers of hostile or careless input.

Shared by the hypothesis tests in this directory (the default test run) and by the
coverage-guided atheris targets in fuzz/ (run by hand), so both check the same contract:

* the RESP request reader (proxy.resp.reader): any bytes, split anywhere, give commands
  (non-empty lists of bytes) or a one-line protocol error; nothing else escapes, nothing
  is fed after the error, and what it allocates is bounded by what it was given, not by
  what a header declares;
* the value envelope and the member cipher (proxy.crypto): any blob either opens to the
  plaintext it was sealed from or raises DecryptError, never another exception;
* the configuration loader (proxy.config): any file content gives a Config or a
  ConfigError whose lines are `<where>: <what>`, never a traceback.

Nothing here logs, and nothing here needs a network or a server.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

from proxy.config import Config, ConfigError, load_config
from proxy.crypto import DecryptError, ValueSealer
from proxy.crypto.members import MemberCipher
from proxy.resp import limits
from proxy.resp.reader import RequestReader


def examples(n: int) -> int:
    """`n` hypothesis examples, times CACHECLOAK_FUZZ_SCALE (default 1) for longer runs."""
    return n * max(int(os.environ.get("CACHECLOAK_FUZZ_SCALE", "1") or 1), 1)


# ---------------------------------------------------------------------------------------
# RESP request reader
# ---------------------------------------------------------------------------------------

# Besides about twice the bytes it was given (its buffer grows by doubling, plus the
# commands it returns), the reader allocates little: it reserves nothing from what a
# header declares, unlike hiredis, which reserved a list at every array header.
READER_OVERHEAD_BYTES = 64 * 1024


def pieces(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """`data` split at the given offsets (out-of-range and repeated offsets ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def check_reader(data: bytes, cuts: Iterable[int] = ()) -> tuple[list[list[bytes]], str | None]:
    """Feed `data` in pieces like the event loop does; check the reader's contract.

    Returns (commands, error text or None).
    """
    reader = RequestReader()
    commands: list[list[bytes]] = []
    for piece in pieces(data, cuts):
        got = reader.feed(piece)
        assert type(got) is list
        for command in got:
            assert type(command) is list and command, command
            assert len(command) <= limits.MAX_ARGUMENTS
            assert all(type(arg) is bytes for arg in command), command
        commands += got
        if reader.error is not None:  # the caller answers and closes; nothing more is fed
            assert type(reader.error) is str
            text = reader.error
            assert text.startswith("Protocol error"), text
            assert "\r" not in text and "\n" not in text, text
            return commands, text
    return commands, None


def reader_peak_allocation(data: bytes, cuts: Iterable[int] = ()) -> int:
    """Peak bytes allocated (tracemalloc: the C parser's buffer is counted too) while
    feeding `data`, beyond what the pieces themselves take."""
    split = pieces(data, cuts)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        reader = RequestReader()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for piece in split:
            reader.feed(piece)
            if reader.error is not None:
                break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if started:
            tracemalloc.stop()
    return peak - base


def twin_parsers(max_request_bytes: int = 1 << 20) -> list:
    """The C request parser and its Python twin, with the same (smaller) limits; only
    the Python one where proxy._native is not built."""
    from proxy.errors import ClientProtocolError
    from proxy.resp.reader import PythonRequestParser, split_inline

    kinds: list = [PythonRequestParser]
    try:
        from proxy import _native
    except ImportError:
        pass
    else:
        kinds.insert(0, _native.RequestParser)
    return [kind(split_inline, ClientProtocolError, max_request_bytes, 1 << 16, 1000,
                 limits.MAX_INLINE_BYTES) for kind in kinds]


def run_parser(parser, split: list[bytes]) -> tuple[list, list[int], str | None]:
    """What a parser returns for each piece, what it holds back after each, its error."""
    commands, held = [], []
    for piece in split:
        commands.append(parser.feed(piece))
        held.append(parser.buffered())
        if parser.error is not None:
            break
    return commands, held, parser.error


_POISON = b"\xa5" * 262144


def run_parser_buffered(parser, split: list[bytes]) -> tuple[list, list[int], str | None]:
    """run_parser with each piece read into the parser's get_buffer() buffer, as the event
    loop does for a client (BufferedProtocol), and fed as a count.  The whole buffer is
    overwritten before each piece, as another connection's read would: the parser must
    neither read past the count nor rely on what a read left there."""
    commands, held = [], []
    for piece in split:
        view = parser.get_buffer(-1)
        view[:] = _POISON[:len(view)]
        view[:len(piece)] = piece
        commands.append(parser.feed(len(piece)))
        held.append(parser.buffered())
        if parser.error is not None:
            break
    return commands, held, parser.error


def check_twin_parsers(data: bytes, cuts: Iterable[int] = ()) -> None:
    """The C parser and its Python twin, fed bytes or reads into their buffer: the same
    commands after every piece, the same bytes held back, the same error."""
    split = pieces(data, cuts)
    results = [run(parser, split) for run in (run_parser, run_parser_buffered)
               for parser in twin_parsers()]
    assert all(result == results[0] for result in results), (data, list(cuts))


def check_reader_allocation(data: bytes, cuts: Iterable[int] = ()) -> None:
    peak = reader_peak_allocation(data, cuts)
    bound = 4 * len(data) + READER_OVERHEAD_BYTES
    assert peak <= bound, f"{peak} bytes allocated for {len(data)} bytes of input"


# ---------------------------------------------------------------------------------------
# Value envelope and member cipher
# ---------------------------------------------------------------------------------------

KEY_CURRENT = bytes(range(32))
KEY_OLD = bytes(range(100, 132))
HASHING_KEY = bytes(range(200, 232))
SEALER = ValueSealer(KEY_CURRENT, [KEY_OLD])
MEMBERS = MemberCipher(HASHING_KEY)


def check_envelope(blob: bytes, db: int, stored_key: bytes, context: bytes | None) -> None:
    """Opening `blob` gives bytes or DecryptError with a known reason, nothing else."""
    for opener in (lambda: SEALER.open(db, stored_key, blob, context),
                   lambda: MEMBERS.open(db, stored_key, blob)):
        try:
            value = opener()
        except DecryptError as exc:
            assert exc.reason in ("not-an-envelope", "unknown-key-id",
                                  "authentication-failed"), exc.reason
            assert len(blob) < 8 or blob.hex() not in str(exc)  # never echoes the data
        else:
            assert type(value) is bytes
    key_id = ValueSealer.key_id_of(blob)
    assert key_id is None or (type(key_id) is bytes and len(key_id) == 4)


def check_tampered_envelope(value: bytes, db: int, stored_key: bytes, edit) -> None:
    """A sealed value changed by `edit` (bytes -> bytes) opens only if unchanged."""
    for cipher in (SEALER, MEMBERS):
        blob = cipher.seal(db, stored_key, value)
        changed = edit(blob)
        try:
            opened = cipher.open(db, stored_key, changed)
        except DecryptError:
            assert changed != blob
        else:
            assert changed == blob and opened == value


# ---------------------------------------------------------------------------------------
# Configuration loader
# ---------------------------------------------------------------------------------------


def check_config_text(text: str | bytes, directory: Path | None = None) -> Config | None:
    """Load `text` as a configuration file: a Config, or a ConfigError whose text is one
    `<where>: <what>` line per problem.  Any other exception fails the check."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / "cachecloak.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8",
                                                                          "surrogatepass"))
        try:
            config = load_config(str(path), environ={})
        except ConfigError as exc:
            lines = str(exc).splitlines()
            assert lines, "an empty ConfigError"
            assert lines == exc.errors, (lines, exc.errors)
            for line in lines:
                assert ": " in line, line
                assert "Traceback" not in line, line
            return None
    assert isinstance(config, Config)
    return config
