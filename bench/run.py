"""The side-by-side benchmark: Redis, twemproxy and cachecloak on one machine in one run.

    .venv/bin/python -m bench            # the full run (about 15 minutes on 2 cores)
    .venv/bin/python -m bench --quick    # a check that everything works (about 1 minute)
    .venv/bin/python -m bench --help     # every option

Starts its own redis-server, a twemproxy (nutcracker) in front of it, and cachecloak with
encryption and hashing on and with both off (pure proxying), each also with `--workers 2`
where `cachecloak run` has that option.  Then, in rounds (every target gets each load
once per round, in the reverse order every other round: A B, B A, ...; so drift of a
shared machine, and the place in a round, hit all of them alike):

1. redis-benchmark GET and SET, random keys, 50 clients, pipeline 1 and 16, 100 B and
   4 KiB values (closed loop): requests/s, p50/p99, CPU seconds per million requests of
   the target's processes and their peak RSS;
2. an open-loop load at a fixed rate (default: half of twemproxy's pipeline-1 rate just
   measured) with p50/p99/p99.9 from the scheduled send time (bench/openloop.py);
3. fresh processes holding 10,000 idle client connections: RSS per connection.

Writes bench/results/<date>.json, .md (the tables, also printed) and .png (the chart).
Absolute figures depend on what else the machine runs: compare the ratios of one run.
Loopback only; every load is bounded by its request count or duration and a timeout.
Never stops a process it did not start.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import idle, keyspace, openloop, procstat, redisbench, report
from bench.targets import (
    Target,
    cachecloak_config,
    cachecloak_supports_workers,
    nutcracker_available,
    redis_target,
    start_bench_redis,
    start_cachecloak,
    start_twemproxy,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL_TARGETS = ("redis", "twemproxy", "cachecloak-encrypted", "cachecloak-plain",
               "cachecloak-encrypted-w{n}", "cachecloak-plain-w{n}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark cachecloak side by side with Redis direct and twemproxy "
                    "(see bench/run.py and the README's Benchmark section).")
    p.add_argument("--quick", action="store_true",
                   help="few requests, one round, short open loop: checks that it all works")
    p.add_argument("--rounds", type=int,
                   help="rounds, A B then B A (default 2; --quick 1; 5 or more for figures "
                        "to quote)")
    p.add_argument("--only", help="comma-separated target names, from: "
                   + ", ".join(ALL_TARGETS).replace("{n}", "N"))
    p.add_argument("--workers", type=int, default=2,
                   help="also run cachecloak with --workers N (default 2; 0 or 1: no)")
    g = p.add_argument_group("redis-benchmark loads")
    g.add_argument("--tests", default="get,set", help="default get,set")
    g.add_argument("--pipelines", default="1,16", help="default 1,16")
    g.add_argument("--sizes", default="100,4096", help="value bytes; default 100,4096")
    g.add_argument("--clients", type=int, default=50)
    g.add_argument("--requests", type=int,
                   help="requests per run at pipeline 1 (default 100000; --quick 5000)")
    g.add_argument("--requests-pipelined", type=int,
                   help="requests per run at deeper pipelines (default 500000; --quick 20000)")
    g.add_argument("--keyspace", type=int,
                   help="random keys below this, filled before the loads (default 100000; "
                        "--quick 10000)")
    g.add_argument("--load-timeout", type=float, default=300.0,
                   help="seconds before one redis-benchmark run is abandoned")
    g = p.add_argument_group("open-loop load")
    g.add_argument("--rate", type=float,
                   help="requests/s (default: half of twemproxy's pipeline-1 GET/SET 100 B "
                        "rate measured in this run)")
    g.add_argument("--open-loop-duration", type=float,
                   help="seconds per target and round (default 10; --quick 2)")
    g.add_argument("--open-loop-generator", choices=openloop.GENERATORS, default="auto",
                   help="auto (default): the C generator (bench/openloop.c) when it compiles, "
                        "else the Python one")
    g.add_argument("--open-loop-workers", type=int,
                   help="generator processes (default 1 for the C generator, 2 for Python)")
    g.add_argument("--open-loop-connections", type=int,
                   help="per generator process (default: 50 in all, as redis-benchmark's "
                        "clients)")
    g.add_argument("--open-loop-set-ratio", type=float, default=0.5, help="share of SETs")
    g.add_argument("--open-loop-size", type=int, default=100, help="value bytes")
    g = p.add_argument_group("idle connections")
    g.add_argument("--idle-connections", type=int, default=10_000,
                   help="idle client connections held open (0: skip)")
    g = p.add_argument_group("phases and output")
    g.add_argument("--skip", default="",
                   help="comma-separated phases to skip: closed, open, idle")
    g.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    g.add_argument("--no-chart", action="store_true")
    args = p.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 2)
    args.requests = args.requests or (5_000 if quick else 100_000)
    args.requests_pipelined = args.requests_pipelined or (20_000 if quick else 500_000)
    args.keyspace = args.keyspace or (10_000 if quick else 100_000)
    args.open_loop_duration = args.open_loop_duration or (2.0 if quick else 10.0)
    args.tests = [t.strip().lower() for t in args.tests.split(",") if t.strip()]
    args.pipelines = [int(x) for x in args.pipelines.split(",") if x.strip()]
    args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {"closed", "open", "idle"}
    if unknown:
        p.error(f"--skip: unknown phase {sorted(unknown)[0]!r}; use closed, open or idle")
    if set(args.tests) - {"get", "set"}:
        p.error("--tests: use get, set or get,set")
    return args


def _steal_text(row: dict) -> str:
    """", steal 12%" when the hypervisor took a visible share of the machine in a run."""
    steal = row.get("steal_share")
    return f", steal {steal:.0%}" if steal is not None and steal >= 0.005 else ""


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
        else "unknown"


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "proxy"], capture_output=True, text=True, timeout=10,
                               check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.strip() + (" (proxy/ modified)" if dirty.strip() else "")


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.notes: list[str] = []
        self.targets: list[Target] = []
        self.redis = None

    def log(self, text: str) -> None:
        print(text, flush=True)

    # ------------------------------------------------------------------ targets

    def wanted(self) -> list[str]:
        workers = self.args.workers if self.args.workers > 1 else 0
        names = ["redis", "twemproxy", "cachecloak-encrypted", "cachecloak-plain"]
        if workers:
            names += [f"cachecloak-encrypted-w{workers}", f"cachecloak-plain-w{workers}"]
        if self.args.only:
            only = [n.strip() for n in self.args.only.split(",") if n.strip()]
            unknown = [n for n in only if n not in names]
            if unknown:
                raise SystemExit(f"--only: unknown target {unknown[0]!r}; use one of "
                                 + ", ".join(names))
            names = [n for n in names if n in only]
        return names

    def start_targets(self) -> None:
        names = self.wanted()
        self.redis = start_bench_redis()
        workers = self.args.workers
        if any(n.endswith(f"-w{workers}") for n in names) and not cachecloak_supports_workers():
            names = [n for n in names if not n.endswith(f"-w{workers}")]
            self.notes.append(f"cachecloak run has no --workers option yet: the {workers}-worker "
                              "targets were skipped")
        if workers > 1 and (os.cpu_count() or 1) < workers:
            self.notes.append(f"{workers} workers on {os.cpu_count()} cores: the workers "
                              "share cores with each other, Redis and the load generator")
        if "twemproxy" in names and not nutcracker_available():
            names.remove("twemproxy")
            self.notes.append("twemproxy skipped: nutcracker is not installed "
                              "(apt-get install nutcracker); no ratios to twemproxy")
        configs = {mode: cachecloak_config(self.redis.address, mode == "encrypted")
                   for mode in ("encrypted", "plain")}
        for name in names:
            if name == "redis":
                target = redis_target(self.redis)
            elif name == "twemproxy":
                target = start_twemproxy(self.redis)
            else:
                mode = name.split("-")[1]
                # The same config (so the same keys) for 1 and N workers: one keyspace.
                target = start_cachecloak(self.redis, mode == "encrypted",
                                          workers=1 if name.count("-") == 1 else workers,
                                          config=configs[mode])
            self.targets.append(target)
            self.log(f"started {target.name} on 127.0.0.1:{target.port} (pid {target.pid})")

    def stop_targets(self) -> None:
        for target in self.targets:
            target.stop()
        self.targets = []

    def fill(self, size: int) -> None:
        """Empty Redis, then store every key of the keyspace once through each keyspace."""
        keyspace.flush(self.redis.port)
        done = set()
        for target in self.targets:
            if target.keyspace not in done:
                keyspace.fill(target.port, self.args.keyspace, size)
                done.add(target.keyspace)

    def in_order(self, round_: int) -> list[Target]:
        """The targets in the order of this round: as started in odd rounds, reversed in
        even ones (A B, then B A), so that whatever the position in a round does (the run
        before, a machine that slows down as a round goes on) falls on each target alike
        and cancels out in the ratios."""
        return self.targets if round_ % 2 else self.targets[::-1]

    def measured(self, target: Target, action: Callable[[], dict], requests: int | None
                 ) -> dict:
        """Run action with the target's CPU and peak RSS accounted; errors are recorded."""
        procstat.reset_peak_rss(target.pid)
        cpu0, rcpu0 = procstat.cpu_seconds(target.pid), procstat.cpu_seconds(self.redis.proc.pid)
        machine0 = procstat.machine_ticks()
        try:
            row = action()
        except (subprocess.SubprocessError, OSError, ValueError, RuntimeError) as exc:
            return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        cpu = procstat.cpu_seconds(target.pid) - cpu0
        rcpu = procstat.cpu_seconds(self.redis.proc.pid) - rcpu0
        row.update(procstat.machine_shares(machine0, procstat.machine_ticks()))
        requests = requests or row.get("sent")
        row["cpu_s"] = cpu
        row["cpu_s_per_M"] = cpu / requests * 1e6 if requests else None
        row["redis_cpu_s_per_M"] = rcpu / requests * 1e6 if requests else None
        row["peak_rss_kib"] = procstat.peak_rss_kib(target.pid)
        return row

    # ------------------------------------------------------------------ phases

    def closed_loop(self) -> list[dict]:
        a = self.args
        loads = []
        for size in a.sizes:
            self.fill(size)
            size_loads = [redisbench.Load(test, pipeline, size, a.clients,
                                          a.requests if pipeline == 1 else a.requests_pipelined,
                                          a.keyspace)
                          for pipeline in a.pipelines for test in a.tests]
            runs: dict[str, dict[str, list[dict]]] = {
                load.key: {t.name: [] for t in self.targets} for load in size_loads}
            for round_ in range(1, a.rounds + 1):
                for load in size_loads:
                    for target in self.in_order(round_):
                        row = self.measured(target, lambda t=target, ld=load: redisbench.run(
                            t.port, ld, a.load_timeout), load.requests)
                        row["round"] = round_
                        runs[load.key][target.name].append(row)
                        self.log(f"round {round_} {load.label:13} {target.name:24} "
                                 + (row["error"] if "error" in row else
                                    f"{row['rps']:>11,.0f}/s p99 {row['p99_ms'] or 0:.3f} ms "
                                    f"cpu {row['cpu_s_per_M'] or 0:.1f} s/M"
                                    f"{_steal_text(row)}"))
            for load in size_loads:
                loads.append({
                    "key": load.key, "label": load.label, "test": load.test,
                    "pipeline": load.pipeline, "size": load.size, "clients": load.clients,
                    "requests": load.requests, "keyspace": load.keyspace,
                    "runs": runs[load.key],
                    "summary": report.summarise_runs(runs[load.key],
                                                     report.CLOSED_LOOP_FIELDS, "rps")})
        return loads

    def open_loop_rate(self, loads: list[dict]) -> tuple[float, str]:
        if self.args.rate:
            return self.args.rate, "given with --rate"
        for ref in ("twemproxy", "redis", *(t.name for t in self.targets)):
            rates = [load["summary"].get(ref, {}).get("rps") for load in loads
                     if load["pipeline"] == 1 and load["size"] == 100]
            rates = [r for r in rates if r]
            if rates:
                basis = "GET and SET" if len(rates) > 1 else "one test"
                return (sum(rates) / len(rates) / 2,
                        f"half of {ref}'s pipeline-1 100 B {basis} rate in this run")
        raise SystemExit("the open-loop rate needs a pipeline-1 100 B load in the same run "
                         "or --rate N")

    def open_loop(self, loads: list[dict]) -> dict:
        a = self.args
        rate, basis = self.open_loop_rate(loads)
        probe = openloop.OpenLoopLoad(rate, 0, 0, 1, 1, 1, 0, 0, a.open_loop_generator)
        exe, generator = openloop.generator_for(probe)
        workers = a.open_loop_workers or (1 if exe is not None else 2)
        connections = a.open_loop_connections or max(1, 50 // workers)
        if exe is None:
            self.notes.append(f"open loop: the Python generator ({generator}); it takes CPU "
                              "from the targets on a small machine")
            if rate / workers > 25_000:
                self.notes.append(f"open loop: {rate / workers:,.0f} req/s per generator "
                                  "process is near its ceiling; watch send lag, or raise "
                                  "--open-loop-workers")
        load = openloop.OpenLoopLoad(rate, a.open_loop_duration,
                                     min(1.0, a.open_loop_duration / 5), workers, connections,
                                     a.keyspace, a.open_loop_size, a.open_loop_set_ratio,
                                     a.open_loop_generator)
        self.fill(a.open_loop_size)
        runs: dict[str, list[dict]] = {t.name: [] for t in self.targets}
        for round_ in range(1, a.rounds + 1):
            for target in self.in_order(round_):
                row = self.measured(
                    target, lambda t=target, r=round_: openloop.run(t.port, load, r), None)
                row["round"] = round_
                if "error" not in row:
                    row["failures"] = row["errors"] + row["lost"]
                runs[target.name].append(row)
                self.log(f"round {round_} open loop {rate:,.0f}/s {target.name:24} " + (
                    row["error"] if "error" in row else
                    f"p50 {row['p50_ms'] or 0:.3f} p99 {row['p99_ms'] or 0:.3f} "
                    f"p99.9 {row['p999_ms'] or 0:.3f} ms, send lag p99 "
                    f"{row['send_lag_p99_ms'] or 0:.3f} ms, {row['failures']} failed"
                    f"{_steal_text(row)}"))
        summary = report.summarise_runs(
            runs, ["completed_rps", "p50_ms", "p99_ms", "p999_ms", "service_p99_ms",
                   "send_lag_p99_ms", "failures", "cpu_s_per_M", "peak_rss_kib",
                   "generator_cpu_s_per_M", "steal_share"],
            "p99_ms", ratio_prefix="p99_")
        return {"load": load.__dict__, "rate_basis": basis, "runs": runs, "summary": summary}

    def idle_connections(self) -> dict:
        """Fresh processes (no allocator state left from the loads), one at a time."""
        a = self.args
        count = a.idle_connections
        limit = idle.raise_nofile_limit()
        if count + 200 > limit:
            self.notes.append(f"idle connections: RLIMIT_NOFILE is {limit}; measured "
                              f"{limit - 200} connections instead of {count}")
            count = limit - 200
        names = [t.name for t in self.targets if t.workers == 1]
        self.stop_targets()
        results = {}
        for name in names:
            if name == "redis":
                # A second, empty Redis: the loads' Redis has data and freed memory to reuse.
                fresh = start_bench_redis()
                target = redis_target(fresh)
                target.stop = fresh.stop
            elif name == "twemproxy":
                target = start_twemproxy(self.redis)
            else:
                target = start_cachecloak(self.redis, name == "cachecloak-encrypted")
            try:
                results[name] = idle.measure(target.port, target.pid, count)
            except (OSError, RuntimeError) as exc:
                results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            finally:
                target.stop()
            row = results[name]
            self.log(f"idle {name:24} " + (row["error"] if "error" in row else
                     f"{row['per_connection_kib']:.1f} KiB per connection "
                     f"({row['connections']:,} connections)"))
        return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not redisbench.available() or shutil.which("redis-server") is None:
        print("bench: redis-server and redis-benchmark are needed: apt-get install "
              "redis-server redis-tools", file=sys.stderr)
        return 1
    # 10,000 idle connections need that many descriptors here and in the target; the
    # targets started below inherit the raised limit.
    idle.raise_nofile_limit()
    now = datetime.datetime.now()
    stamp = now.strftime("%Y-%m-%d_%H%M%S") + ("-quick" if args.quick else "")
    harness = Harness(args)
    result: dict = {}
    started = time.monotonic()
    try:
        harness.start_targets()
        result["targets"] = [{"name": t.name, "title": t.title, "kind": t.kind,
                              "workers": t.workers} for t in harness.targets]
        if "closed" not in args.skip:
            result["loads"] = harness.closed_loop()
        if "open" not in args.skip:
            result["open_loop"] = harness.open_loop(result.get("loads", []))
        if "idle" not in args.skip and args.idle_connections > 0:
            result["idle"] = harness.idle_connections()
    finally:
        harness.stop_targets()
        if harness.redis is not None:
            harness.redis.stop()
    result["meta"] = {
        "stamp": stamp, "date": now.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "summary": (f"{'--quick, ' if args.quick else ''}{args.rounds} round(s), "
                    f"{args.requests:,} requests per run at pipeline 1, "
                    f"{args.requests_pipelined:,} pipelined, {os.cpu_count()} cores shared "
                    "by Redis, the load and the proxies"),
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()},
        "versions": {"redis-benchmark": _version(["redis-benchmark", "--version"]),
                     "redis-server": _version(["redis-server", "--version"]),
                     "nutcracker": _version(["nutcracker", "--version"]),
                     "cachecloak": _git_commit()},
        "options": {k: sorted(v) if isinstance(v, set) else v
                    for k, v in vars(args).items() if k != "out"},
        "notes": harness.notes,
    }
    result["goals"] = report.evaluate_goals(result)
    result = {"meta": result.pop("meta"), **result}  # the JSON reads from the top
    args.out.mkdir(parents=True, exist_ok=True)
    text = report.markdown(result)
    print("\n" + text)
    report.write_json(result, args.out / f"{stamp}.json")
    (args.out / f"{stamp}.md").write_text(text)
    written = [f"{stamp}.json", f"{stamp}.md"]
    if not args.no_chart:
        why_not = report.chart(result, args.out / f"{stamp}.png")
        if why_not:
            print(why_not)
        else:
            written.append(f"{stamp}.png")
    print(f"written to {args.out}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
