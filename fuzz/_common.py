"""Shared set-up of the atheris targets: the repository on sys.path, and argv defaults.

Not part of the default test run (pytest only collects tests/); see fuzz/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def corpus(name: str) -> str:
    """The seed corpus kept in the repository for a target (read-only for the fuzzer)."""
    return str(REPO / "tests" / "fuzz" / "corpus" / name)
