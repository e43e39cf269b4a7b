"""The benchmark's targets: Redis itself, twemproxy in front of it, and cachecloak.

Every target is a real process that this module starts on a free loopback port and that
`Target.stop` ends: redis-server (`tests.servers.start_redis`), nutcracker (twemproxy,
Debian package `nutcracker`, YAML config in a temporary directory) and `cachecloak run`
(`tests.servers.start_proxy`) with encryption and hashing on, or both off (pure proxying),
optionally with `--workers N`.  It never binds anything but 127.0.0.1 and never stops a
process it did not start.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import (
    REPO_ROOT,
    RedisServer,
    free_port,
    start_proxy,
    start_redis,
    wait_for_port,
)

# Enough for the idle-connection measurement (10,000 by default) plus the load's clients;
# cachecloak's default maxClients is exactly 10,000, Redis's maxclients too.
MAX_CLIENTS = 20_000


@dataclass
class Target:
    """One thing the loads are sent to."""

    name: str         # short, stable: used in the JSON and for --only
    title: str        # for the table
    kind: str         # "redis", "twemproxy" or "cachecloak"
    port: int
    pid: int          # root of the process tree charged for CPU and memory
    keyspace: str     # targets with the same keyspace see the same stored keys
    stop: Callable[[], object]
    workers: int = 1


def start_bench_redis() -> RedisServer:
    # No persistence (tests.servers' defaults) and room for the idle-connection measurement.
    return start_redis("--maxclients", str(MAX_CLIENTS))


def redis_target(redis: RedisServer) -> Target:
    # The Redis server is shared by all targets, so stopping this target stops nothing:
    # the harness stops the server itself at the very end.
    return Target("redis", "Redis direct", "redis", redis.port, redis.proc.pid, "raw",
                  stop=lambda: None)


def nutcracker_available() -> bool:
    return shutil.which("nutcracker") is not None or Path("/usr/sbin/nutcracker").exists()


def twemproxy_config(port: int, upstream_port: int) -> str:
    # One pool, one server, the settings a twemproxy user would take for a single Redis:
    # one upstream connection (twemproxy's default, it pipelines all clients onto it),
    # connected before the first client arrives.
    return f"""bench:
  listen: 127.0.0.1:{port}
  redis: true
  hash: fnv1a_64
  distribution: ketama
  preconnect: true
  auto_eject_hosts: false
  server_connections: 1
  timeout: 5000
  backlog: 1024
  servers:
    - 127.0.0.1:{upstream_port}:1
"""


def start_twemproxy(redis: RedisServer) -> Target:
    exe = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-bench-twemproxy-"))
    port, stats_port = free_port(), free_port()
    conf = workdir / "nutcracker.yml"
    conf.write_text(twemproxy_config(port, redis.port))
    # Its stats port defaults to 22222 on 0.0.0.0: pick a free one on loopback instead.
    args = [exe, "-c", str(conf), "-s", str(stats_port), "-a", "127.0.0.1",
            "-o", str(workdir / "nutcracker.log"), "-p", str(workdir / "nutcracker.pid"),
            "-v", "4"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        log = (workdir / "nutcracker.log")
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        _end(proc)
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"twemproxy did not start: {exc}\n{detail}") from None

    def stop() -> None:
        _end(proc)
        shutil.rmtree(workdir, ignore_errors=True)

    return Target("twemproxy", "twemproxy", "twemproxy", port, proc.pid, "raw", stop)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cachecloak_config(upstream: str, encrypted: bool) -> str:
    if encrypted:
        # Fresh keys per run: the stored data is throw-away.
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
    # The listener's address is replaced by --listen; maxClients stays.
    return f"""
listeners:
  - address: 127.0.0.1:6379
    maxClients: {MAX_CLIENTS}
caches:
  - name: bench
    type: redis
    redis:
      addresses: ["{upstream}"]
      disableTLS: true{crypto}
"""


def cachecloak_supports_workers() -> bool:
    """Whether this cachecloak's `run` has --workers (it is being added alongside the bench)."""
    out = subprocess.run([sys.executable, "-m", "proxy", "run", "--help"], capture_output=True,
                         text=True, timeout=60, cwd=str(REPO_ROOT), check=False)
    return "--workers" in out.stdout


def start_cachecloak(redis: RedisServer, encrypted: bool, workers: int = 1,
                     config: str | None = None) -> Target:
    """Start cachecloak; pass the same `config` to two targets to share their keyspace."""
    config = config or cachecloak_config(redis.address, encrypted)
    extra = ["--log-level", "warning"]
    if workers > 1:
        extra += ["--workers", str(workers)]
    proxy = start_proxy(config, *extra)
    mode = "encrypted" if encrypted else "plain"
    name = f"cachecloak-{mode}" + (f"-w{workers}" if workers > 1 else "")
    title = ("cachecloak, encryption and hashing on" if encrypted
             else "cachecloak, both off (pure proxying)")
    if workers > 1:
        title += f", {workers} workers"

    def stop() -> None:
        proxy.stop()
        shutil.rmtree(proxy.workdir, ignore_errors=True)

    return Target(name, title, "cachecloak", proxy.port, proxy.proc.pid, mode, stop,
                  workers=workers)
