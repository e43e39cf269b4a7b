"""One redis-benchmark run (closed loop: each client waits for its replies) and its figures.

redis-benchmark 7.0 `--csv` prints, per test, requests per second and the latency average,
minimum, p50, p95, p99 and maximum in milliseconds; older versions print only the rate,
and the missing figures are then None.  The run is bounded by its request count and by a
timeout; it talks to 127.0.0.1 only.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """A redis-benchmark load: one test, one pipeline depth, one value size."""

    test: str        # "get" or "set"
    pipeline: int
    size: int        # value bytes
    clients: int
    requests: int
    keyspace: int    # -r: random keys below this

    @property
    def label(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size % 1024 == 0 else f"{self.size} B"
        return f"{self.test.upper()} P{self.pipeline} {size}"

    @property
    def key(self) -> str:
        return f"{self.test}-p{self.pipeline}-{self.size}"


def available() -> bool:
    return shutil.which("redis-benchmark") is not None


def run(port: int, load: Load, timeout: float) -> dict[str, float | None]:
    """Run the load against 127.0.0.1:port; return rps and latency figures in ms.

    Raises subprocess.TimeoutExpired / CalledProcessError, and ValueError when the output
    has no figures (redis-benchmark prints errors on stdout, so they are included).
    """
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", load.test,
            "-n", str(load.requests), "-c", str(load.clients), "-P", str(load.pipeline),
            "-d", str(load.size), "-r", str(load.keyspace), "--csv"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True)
    return parse_csv(out.stdout)


_COLUMNS = {"rps": "rps", "avg_latency_ms": "avg_ms", "min_latency_ms": "min_ms",
            "p50_latency_ms": "p50_ms", "p95_latency_ms": "p95_ms",
            "p99_latency_ms": "p99_ms", "max_latency_ms": "max_ms"}


def parse_csv(text: str) -> dict[str, float | None]:
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    figures: dict[str, float | None] = dict.fromkeys(_COLUMNS.values())
    try:
        if rows[0][0] == "test":
            for name, value in zip(rows[0][1:], rows[1][1:], strict=False):
                if name in _COLUMNS:
                    figures[_COLUMNS[name]] = float(value)
        else:  # before 7.0: no header, one "TEST","rps" row
            figures["rps"] = float(rows[0][1])
    except (IndexError, ValueError):
        raise ValueError(f"redis-benchmark printed no figures: {text.strip()[-300:]!r}") from None
    if not figures["rps"]:
        raise ValueError(f"redis-benchmark measured no requests: {text.strip()[-300:]!r}")
    return figures
