"""Coverage-guided fuzzing of the configuration loader (proxy.config) with atheris.

Each input is written as a configuration file and loaded: a Config or a ConfigError of
one-line problems, never another exception (tests/fuzz/properties.py).

    .venv/bin/python fuzz/fuzz_config.py /tmp/fuzz-config tests/fuzz/corpus/config \
        -max_total_time=300 -timeout=10
"""

from __future__ import annotations

import sys

import _common  # noqa: F401 - puts the repository on sys.path
import atheris

with atheris.instrument_imports():
    from tests.fuzz.properties import check_config_text


def test_one_input(data: bytes) -> None:
    check_config_text(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
