"""First benchmark: Redis directly versus through cachecloak, with redis-benchmark.

    python bench/compare.py [--requests 200000] [--pipeline 16] [--rounds 2]

Starts its own redis-server and two cachecloak processes (encryption and hashing on;
both off, pure proxying) on loopback ports, then runs the same redis-benchmark load
against each target in turn, A B C A B C ..., so drift of a shared machine affects all
targets alike.  Prints requests per second per target and the ratios to Redis direct.
Redis, the load generator and the proxy share the machine's cores: compare the ratios
of one run, never absolute figures from different runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import secrets
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import start_proxy, start_redis  # noqa: E402


def proxy_config(upstream: str, encrypted: bool) -> str:
    if encrypted:
        crypto = f"""
    encryption:
      keys:
        current: {secrets.token_hex(32)}
    hashing:
      keys:
        current: {secrets.token_hex(32)}"""
    else:
        crypto = """
    encryption:
      disabled: true
    hashing:
      disabled: true"""
    return f"""
caches:
  - name: bench
    type: redis
    redis:
      addresses: ["{upstream}"]
      disableTLS: true{crypto}
"""


def run_benchmark(port: int, tests: str, requests: int, pipeline: int, clients: int,
                  size: int) -> dict[str, float]:
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", tests, "-n",
         str(requests), "-P", str(pipeline), "-c", str(clients), "-d", str(size), "-r",
         "100000", "--csv"], capture_output=True, text=True, timeout=600, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return {row[0]: float(row[1]) for row in rows[1:] if len(row) > 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark is missing: apt-get install redis-tools", file=sys.stderr)
        return 1

    redis = start_redis()
    encrypted = start_proxy(proxy_config(redis.address, True))
    plain = start_proxy(proxy_config(redis.address, False))
    targets = {"redis": redis.port, "cachecloak-encrypted": encrypted.port,
               "cachecloak-plain": plain.port}
    results: dict[str, dict[str, list[float]]] = {name: {} for name in targets}
    try:
        for round_ in range(args.rounds):
            for name, port in targets.items():
                figures = run_benchmark(port, "get,set", args.requests, args.pipeline,
                                        args.clients, args.size)
                for test, rps in figures.items():
                    results[name].setdefault(test, []).append(rps)
                print(f"round {round_ + 1}: {name}: " +
                      ", ".join(f"{t} {v:,.0f}/s" for t, v in figures.items()), flush=True)
    finally:
        encrypted.stop()
        plain.stop()
        redis.stop()

    print(f"\nredis-benchmark -c {args.clients} -P {args.pipeline} -d {args.size} -r 100000, "
          f"median of {args.rounds} rounds")
    print(f"{'target':24} {'test':5} {'req/s':>12} {'vs redis':>9}")
    for name in targets:
        for test, values in results[name].items():
            rps = statistics.median(values)
            base = statistics.median(results["redis"][test])
            print(f"{name:24} {test:5} {rps:12,.0f} {rps / base:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
