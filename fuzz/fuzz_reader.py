"""Coverage-guided fuzzing of the RESP request reader (proxy.resp.reader) with atheris.

Each input is fed whole, then in pieces of 1 + (last byte % 16) bytes, and must keep
the contract of tests/fuzz/properties.py: commands or one protocol error, nothing else;
and the C parser (proxy._native, when built) must give exactly what its Python twin
gives.  atheris sees the Python twin's coverage, which follows the same steps as the C.
With FUZZ_ALLOC=1 the allocation bound is checked too (slower: tracemalloc).

    .venv/bin/python fuzz/fuzz_reader.py /tmp/fuzz-reader tests/fuzz/corpus/reader \
        -max_total_time=300

New inputs go to the first directory; copy the ones worth keeping (a crash found, or a
new kind of input) into tests/fuzz/corpus/reader/, where pytest replays them.
"""

from __future__ import annotations

import os
import sys

import _common  # noqa: F401 - puts the repository on sys.path
import atheris

with atheris.instrument_imports():
    from tests.fuzz.properties import check_reader, check_reader_allocation, check_twin_parsers

CHECK_ALLOCATION = os.environ.get("FUZZ_ALLOC") == "1"


def test_one_input(data: bytes) -> None:
    check_reader(data)
    check_twin_parsers(data)
    if data:
        step = 1 + data[-1] % 16
        check_reader(data, range(step, len(data), step))
        check_twin_parsers(data, range(step, len(data), step))
    if CHECK_ALLOCATION:
        check_reader_allocation(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
