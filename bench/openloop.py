"""An open-loop load: requests sent on a fixed schedule, whatever the replies do.

redis-benchmark is closed loop (each client waits for its reply before sending the next),
so a stalled target also stalls the load and its slow moments are sampled less often
("coordinated omission").  Here each of several worker processes sends its share of the
rate on a fixed schedule over a few connections, round robin, and times every request
from its *scheduled* send time, so a target that falls behind is charged for the whole
wait of every request queued behind the stall (as wrk2 does).  The latency from the
actual send time is kept too, to tell the generator's own lag from the target's.

Two generators make this load.  The one in C (bench/openloop.c, compiled with the system's
C compiler on first use into bench/.build/) spends well under a microsecond of its own per
request, so nearly all of its cost is the kernel's share of a send and a receive.  The one
in Python (below) spends about 20 us of interpreter time per request on top, which on a
small machine takes CPU from the targets it measures; it is used when there is no C
compiler, or when asked for (`--generator python`).

Why select() and not uvloop (in the Python generator): libuv timers (and epoll's timeout)
have millisecond resolution, which would add up to 1 ms of send jitter to every sample when
the latencies to measure are a fraction of that; select() sleeps to the microsecond (the C
generator uses epoll_pwait2, which takes nanoseconds).

Ceiling: each Python worker is one process doing a few microseconds of work per request;
it keeps to its schedule up to some tens of thousands of requests per second per worker
on an idle core (README, Benchmark).  Each run reports how late sends were
(`send_lag_p99_ms`); when that is not small against the target's latency, the generator,
not the target, is the bottleneck.  Run this module alone against Redis to see it:

    python -m bench.openloop --port 6379 --rate 40000 --duration 5

Loopback only; every run is bounded by its request count and a drain timeout.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import math
import multiprocessing
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from array import array
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import hiredis

from bench.keyspace import get_command, set_command

DRAIN_TIMEOUT = 5.0  # seconds to wait for outstanding replies after the last send
START_DELAY = 0.5    # seconds between forking the workers and the first scheduled send
C_SOURCE = Path(__file__).resolve().with_name("openloop.c")
BUILD_DIR = C_SOURCE.with_name(".build")
GENERATORS = ("auto", "c", "python")


@dataclass(frozen=True)
class OpenLoopLoad:
    rate: float            # requests per second, all workers together
    duration: float        # seconds of sending, warm-up included
    warmup: float          # seconds at the start whose samples are dropped
    workers: int
    connections: int       # per worker
    keyspace: int
    size: int              # SET value bytes
    set_ratio: float       # share of SETs; the rest are GETs
    generator: str = "auto"  # "c", "python", or "auto": C when it compiles


def _worker(port: int, load: OpenLoopLoad, index: int, start: float, seed: int,
            out: Connection) -> None:
    try:
        out.send(_send_on_schedule(port, load, index, start, seed))
    except Exception as exc:  # noqa: BLE001  the parent reports it; a worker must not hang
        out.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        out.close()


def _send_on_schedule(port: int, load: OpenLoopLoad, index: int, start: float,
                      seed: int) -> dict:
    gc.disable()  # a collection would pause the schedule; nothing here makes cycles
    rng = random.Random(seed)
    value = b"v" * load.size
    socks: list[socket.socket] = []
    for _ in range(load.connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    by_fd = {sock.fileno(): n for n, sock in enumerate(socks)}
    readers = [hiredis.Reader() for _ in socks]
    pending: list[deque[tuple[float, float]]] = [deque() for _ in socks]
    outbuf = [b""] * len(socks)
    inbuf = bytearray(262144)

    rate = load.rate / load.workers
    interval = 1.0 / rate
    # Workers interleave their schedules instead of all sending at the same instants.
    first = start + interval * index / load.workers
    total = int(rate * load.duration)
    measured_from = start + load.warmup
    from_sched, from_send, lag = array("d"), array("d"), array("d")
    errors = sent = 0
    i = 0
    drain_until = math.inf

    while True:
        now = time.monotonic()
        # Queue everything due by now; each keeps its own scheduled time.
        while i < total:
            scheduled = first + i * interval
            if scheduled > now:
                break
            n = i % len(socks)
            key = rng.randrange(load.keyspace)
            outbuf[n] += (set_command(key, value) if rng.random() < load.set_ratio
                          else get_command(key))
            pending[n].append((scheduled, now))
            if scheduled >= measured_from:
                lag.append(now - scheduled)
            i += 1
            sent += 1
        writers = []
        for n, data in enumerate(outbuf):
            if data:
                try:
                    written = socks[n].send(data)
                except BlockingIOError:
                    written = 0
                outbuf[n] = data[written:]
                if outbuf[n]:
                    writers.append(socks[n])
        if i >= total:
            if drain_until == math.inf:
                drain_until = now + DRAIN_TIMEOUT
            if not any(pending) or now >= drain_until:
                break
            timeout = drain_until - now
        else:
            timeout = max(0.0, first + i * interval - time.monotonic())
        readable, _, _ = select.select(socks, writers, [], timeout)
        if not readable:
            continue
        now = time.monotonic()
        for sock in readable:
            n = by_fd[sock.fileno()]
            # Into one buffer: recv(N) of a large N makes malloc map and unmap N bytes
            # around every read, three system calls that cost more than the read.
            got = sock.recv_into(inbuf)
            if not got:
                raise ConnectionError(f"port {port} closed a load connection")
            reader = readers[n]
            reader.feed(inbuf, 0, got)
            queue = pending[n]
            while (reply := reader.gets()) is not False:
                scheduled, sent_at = queue.popleft()
                if isinstance(reply, hiredis.ReplyError):
                    errors += 1
                elif scheduled >= measured_from:
                    from_sched.append(now - scheduled)
                    from_send.append(now - sent_at)
    lost = sum(len(queue) for queue in pending)
    for sock in socks:
        sock.close()
    return {"sent": sent, "errors": errors, "lost": lost,
            "from_sched": from_sched.tobytes(), "from_send": from_send.tobytes(),
            "lag": lag.tobytes()}


def percentile(sorted_values: list[float] | array, p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return None
    # The epsilon keeps float error (99.9 / 100 * 1000 = 999.0000000000001) from moving
    # the rank up by one.
    rank = max(1, math.ceil(p / 100 * len(sorted_values) - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@functools.lru_cache(maxsize=1)
def compiled_generator() -> tuple[Path | None, str]:
    """(the C generator's executable, "c"), or (None, why it cannot be had).

    Compiled once per version of bench/openloop.c (the name holds the source's hash), with
    $CC or cc; concurrent runs each compile to their own file and rename it into place.
    """
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None, "no C compiler (cc) for the C generator"
    digest = hashlib.sha256(C_SOURCE.read_bytes()).hexdigest()[:16]
    exe = BUILD_DIR / f"openloop-{digest}"
    if not exe.exists():
        BUILD_DIR.mkdir(exist_ok=True)
        partial = exe.with_name(f"{exe.name}.{os.getpid()}.tmp")
        done = subprocess.run([compiler, "-O2", "-o", str(partial), str(C_SOURCE), "-lm"],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            return None, ("the C generator did not compile: "
                          + (done.stderr.strip().splitlines() or ["no output"])[-1])
        os.replace(partial, exe)
    return exe, "c"


def generator_for(load: OpenLoopLoad) -> tuple[Path | None, str]:
    """The executable to run (None: the Python generator) and the generator's name."""
    if load.generator not in GENERATORS:
        raise ValueError(f"unknown generator {load.generator!r}; use one of {GENERATORS}")
    if load.generator == "python":
        return None, "python"
    exe, why = compiled_generator()
    if exe is None:
        if load.generator == "c":
            raise RuntimeError(why)
        return None, f"python ({why})"
    return exe, "c"


def _read_c_results(path: Path) -> dict:
    """The C generator's results file (see bench/openloop.c) in _send_on_schedule's form."""
    data = path.read_bytes()
    header = struct.calcsize("<6q")
    sent, errors, lost, n_sched, n_send, n_lag = struct.unpack_from("<6q", data)
    if len(data) != header + 8 * (n_sched + n_send + n_lag):
        raise RuntimeError(f"the C generator's results file {path} is truncated")
    at = header
    arrays = []
    for n in (n_sched, n_send, n_lag):
        arrays.append(data[at:at + 8 * n])
        at += 8 * n
    return {"sent": sent, "errors": errors, "lost": lost,
            "from_sched": arrays[0], "from_send": arrays[1], "lag": arrays[2]}


def _run_c(exe: Path, port: int, load: OpenLoopLoad, start: float, seed: int) -> list[dict]:
    rate = load.rate / load.workers
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cachecloak-openloop-") as tmp:
        procs = []
        try:
            for index in range(load.workers):
                out = Path(tmp) / f"{index}.bin"
                # As _send_on_schedule: the workers interleave their schedules.
                first = start + index / (rate * load.workers)
                args = [str(exe), str(port), repr(rate), str(int(rate * load.duration)),
                        repr(first), repr(start + load.warmup), str(load.connections),
                        str(load.keyspace), str(load.size), repr(load.set_ratio),
                        str(seed * 1000 + index), str(out)]
                procs.append((subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE), out))
            deadline = start + load.duration + DRAIN_TIMEOUT + 30
            for proc, out in procs:
                try:
                    _, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise RuntimeError("an open-loop worker did not finish in time") from None
                if proc.returncode != 0:
                    text = err.decode(errors="replace").strip()
                    results.append({"error": text or f"exit status {proc.returncode}"})
                else:
                    results.append(_read_c_results(out))
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
    return results


def _run_python(port: int, load: OpenLoopLoad, start: float, seed: int) -> list[dict]:
    ctx = multiprocessing.get_context("fork")  # the workers need nothing but this module
    procs, pipes = [], []
    for index in range(load.workers):
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(port, load, index, start, seed * 1000 + index,
                                                 send), daemon=True)
        proc.start()
        send.close()
        procs.append(proc)
        pipes.append(receive)
    results = []
    deadline = start + load.duration + DRAIN_TIMEOUT + 30
    try:
        for receive in pipes:
            if not receive.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("an open-loop worker did not finish in time")
            results.append(receive.recv())
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    return results


def run(port: int, load: OpenLoopLoad, seed: int = 1) -> dict:
    """Run the load against 127.0.0.1:port; latency figures in milliseconds.

    Raises RuntimeError when a worker failed or did not finish in time.
    """
    exe, generator = generator_for(load)
    # The workers' own CPU, read from the kernel's accounting of reaped children: the
    # generator's cost per request, and so its ceiling, shows in every run.
    before = os.times()
    start = time.monotonic() + START_DELAY
    results = (_run_c(exe, port, load, start, seed) if exe is not None
               else _run_python(port, load, start, seed))
    after = os.times()
    generator_cpu = (after.children_user + after.children_system
                     - before.children_user - before.children_system)
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        raise RuntimeError(f"open-loop worker failed: {failed[0]}")

    def merged(name: str) -> list[float]:
        values = array("d")
        for r in results:
            values.frombytes(r[name])
        return sorted(values)

    from_sched, from_send, lag = merged("from_sched"), merged("from_send"), merged("lag")
    window = load.duration - load.warmup

    def ms(values: list[float], p: float) -> float | None:
        v = percentile(values, p)
        return None if v is None else v * 1000

    sent = sum(r["sent"] for r in results)
    return {
        "rate": load.rate,
        "sent": sent,
        "completed_rps": len(from_sched) / window if window > 0 else None,
        "errors": sum(r["errors"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "p50_ms": ms(from_sched, 50), "p99_ms": ms(from_sched, 99),
        "p999_ms": ms(from_sched, 99.9), "max_ms": ms(from_sched, 100),
        "service_p50_ms": ms(from_send, 50), "service_p99_ms": ms(from_send, 99),
        "service_p999_ms": ms(from_send, 99.9),
        "send_lag_p99_ms": ms(lag, 99), "send_lag_max_ms": ms(lag, 100),
        "generator_cpu_s_per_M": generator_cpu / sent * 1e6 if sent else None,
        "generator": generator,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Open-loop GET/SET load at a fixed rate "
                                     "against one loopback port (see the module docstring).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=25, help="per worker")
    parser.add_argument("--keyspace", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--set-ratio", type=float, default=0.5)
    parser.add_argument("--generator", choices=GENERATORS, default="auto",
                        help="auto (default): the C generator when it compiles, else Python")
    args = parser.parse_args()
    load = OpenLoopLoad(args.rate, args.duration, args.warmup, args.workers, args.connections,
                        args.keyspace, args.size, args.set_ratio, args.generator)
    for name, value in run(args.port, load).items():
        print(f"{name:18} {value:,.3f}" if isinstance(value, float) else f"{name:18} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
