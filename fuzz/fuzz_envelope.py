"""Coverage-guided fuzzing of the value envelope and member cipher decoders with atheris.

Each input is opened as a stored value (under two locations) and used to tamper with a
freshly sealed one; tests/fuzz/properties.py says what must hold.

    .venv/bin/python fuzz/fuzz_envelope.py /tmp/fuzz-envelope tests/fuzz/corpus/envelope \
        -max_total_time=300
"""

from __future__ import annotations

import sys

import _common  # noqa: F401 - puts the repository on sys.path
import atheris

with atheris.instrument_imports():
    from tests.fuzz.properties import check_envelope, check_tampered_envelope


def test_one_input(data: bytes) -> None:
    check_envelope(data, 0, b"", None)
    check_envelope(data, 3, b"cachecloak:app:3:k", b"field")
    if len(data) >= 2:
        at, mask = data[0], data[1] or 1

        def flip(blob: bytes) -> bytes:
            i = at % len(blob)
            return blob[:i] + bytes([blob[i] ^ mask]) + blob[i + 1:]

        check_tampered_envelope(data[2:], 0, b"k", flip)
        check_tampered_envelope(data[2:], 0, b"k", lambda blob: blob[:at])


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
