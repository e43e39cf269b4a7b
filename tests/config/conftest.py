"""Helpers for the configuration tests: write YAML files to a temp dir and collect errors."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config

KEY_ENC = "a1" * 32
KEY_ENC_OLD = "b2" * 32
KEY_HASH = "c3" * 32

# A minimal valid redis cache; tests format extra YAML into it.
REDIS_CACHE = f"""\
caches:
  - name: main
    type: redis
    redis:
      addresses: ["127.0.0.1:6379"]
      disableTLS: true
    encryption:
      keys:
        current: "{KEY_ENC}"
    hashing:
      keys:
        current: "{KEY_HASH}"
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., str]:
    def write(text: str, name: str = "cachecloak.yaml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)

    return write


def config_errors(path: str | None, *, environ: Mapping[str, str] | None = None,
                  **kwargs: str) -> list[str]:
    """Load ``path`` expecting failure; return the error lines."""
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ, **kwargs)
    text = str(info.value)
    assert "Traceback" not in text
    assert text.splitlines() == info.value.errors
    return info.value.errors
