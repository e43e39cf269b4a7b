"""Real topologies for the failover tests: a primary with replicas, and redis-sentinel.

Builds on tests.servers: every process is a real redis-server / redis-sentinel on a
loopback port, stopped by the fixture (or `finally`) that started it.  Every wait is
bounded polling.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.proxyproc import wait_until
from tests.servers import RedisServer, free_port, start_redis, wait_for_port

ENC = "5e" * 32
HASH = "6f" * 32
MASTER_NAME = "mymaster"


def start_replica(primary_port: int, *extra_args: str, port: int | None = None) -> RedisServer:
    """A redis-server replicating from 127.0.0.1:primary_port (which may not be up yet)."""
    return start_redis("--replicaof", "127.0.0.1", str(primary_port), *extra_args, port=port)


def replication(server: RedisServer) -> dict:
    with server.client(socket_timeout=2) as c:
        return c.info("replication")


def wait_replica_synced(replica: RedisServer, timeout: float = 15.0) -> None:
    wait_until(lambda: replication(replica).get("master_link_status") == "up",
               timeout=timeout, interval=0.05, what=f"replica {replica.address} to sync")


def kill(server) -> float:
    """SIGKILL the process and reap it; returns the monotonic time of the kill."""
    server.proc.kill()
    server.proc.wait(5)
    return time.monotonic()


def cache_config(addresses: list[str], *, mode: str, extra_redis: str = "",
                 name: str = "app") -> str:
    quoted = ", ".join(f'"{a}"' for a in addresses)
    return f"""\
caches:
  - name: {name}
    type: redis
    redis:
      addresses: [{quoted}]
      disableTLS: true
      mode: {mode}
      connectTimeout: 500ms
      commandTimeout: 2s
{extra_redis}    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
"""


class SentinelProcess(RedisServer):
    """A redis-sentinel process: started, addressed and stopped like a redis-server."""


def start_sentinel(primary_port: int, *, quorum: int = 2) -> SentinelProcess:
    exe = shutil.which("redis-sentinel")
    if exe is None:
        raise RuntimeError("redis-sentinel is not installed; install redis-sentinel (apt-get)")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-sentinel-"))
    conf = workdir / "sentinel.conf"
    conf.write_text(f"""\
port {port}
bind 127.0.0.1
daemonize no
dir {workdir}
logfile {workdir / "sentinel.log"}
sentinel resolve-hostnames no
sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}
sentinel down-after-milliseconds {MASTER_NAME} 1000
sentinel failover-timeout {MASTER_NAME} 3000
sentinel parallel-syncs {MASTER_NAME} 1
""")
    proc = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
    except Exception:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return SentinelProcess(port=port, proc=proc, workdir=workdir)


def start_sentinels(primary_port: int, count: int = 3) -> list[SentinelProcess]:
    """`count` Sentinels monitoring the primary; returns once they know each other and
    the replicas (a failover needs a majority that agrees)."""
    sentinels: list[SentinelProcess] = []
    try:
        for _ in range(count):
            sentinels.append(start_sentinel(primary_port))

        def settled() -> bool:
            for s in sentinels:
                with s.client(socket_timeout=2) as c:
                    others = c.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
                    replicas = c.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
                if len(others) != count - 1 or not replicas:
                    return False
            return True

        wait_until(settled, timeout=20, interval=0.1, what="the Sentinels to discover "
                   "each other and the replica")
    except Exception:
        for s in sentinels:
            s.stop()
        raise
    return sentinels


class SwitchWatcher:
    """The test's own +switch-master subscriber: records when Sentinel announced it."""

    def __init__(self, sentinel: SentinelProcess):
        self._client = sentinel.client(socket_timeout=5)
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe("+switch-master")
        self.switched_at: float | None = None
        self.payload: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                message = self._pubsub.get_message(timeout=0.05)
            except Exception:  # noqa: BLE001 - the Sentinel went away: stop watching
                return
            if message and message["type"] == "message" and self.switched_at is None:
                self.switched_at = time.monotonic()
                self.payload = message["data"].decode()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self._pubsub.close()
            self._client.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


@dataclass
class Outcome:
    started: float  # monotonic
    latency: float
    op: str  # "SET" or "GET"
    reply: bytes


class LoadClients:
    """Threads doing SET/GET through the proxy, each on its own connection; every reply
    is recorded with its time.  Bounded in count and time; paced after an error reply
    so an outage shows as a bounded burst, not a spin."""

    def __init__(self, port: int, count: int = 4, *, reply_timeout: float = 10.0,
                 max_ops: int = 50_000, max_seconds: float = 40.0):
        self.port = port
        self.reply_timeout = reply_timeout
        self.max_ops = max_ops
        self.max_seconds = max_seconds
        self.outcomes: list[list[Outcome]] = [[] for _ in range(count)]
        self.problems: list[str] = []  # hangs, closed connections, wrong values
        self.final: list[tuple[str, bytes]] = []  # (value last written, what GET returned)
        self.epoch = 0.0  # writes acknowledged after this must be read back
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(count)]
        for t in self._threads:
            t.start()

    def _run(self, index: int) -> None:
        from tests.servers import RawClient

        log = self.outcomes[index]
        key = f"load-{index}"
        deadline = time.monotonic() + self.max_seconds
        expect: str | None = None  # value of a SET acknowledged after `epoch`
        try:
            with RawClient(self.port, timeout=self.reply_timeout) as c:
                for i in range(self.max_ops):
                    if self._stop.is_set() or time.monotonic() > deadline:
                        break
                    value = f"v{index}-{i}"
                    for op, args in (("SET", ("SET", key, value)), ("GET", ("GET", key))):
                        started = time.monotonic()
                        reply = c.call(*args)
                        log.append(Outcome(started, time.monotonic() - started, op, reply))
                        if reply.startswith(b"-"):
                            expect = None  # may or may not have been applied
                            time.sleep(0.01)
                            break
                        if op == "SET":
                            expect = value if self.epoch and started > self.epoch else None
                        elif expect is not None and reply != b"$%d\r\n%b\r\n" % (
                                len(expect), expect.encode()):
                            self.problems.append(f"GET {key} returned {reply[:40]!r}, "
                                                 f"expected {expect}")
                final = f"final-{index}"
                if c.call("SET", key, final) == b"+OK\r\n":
                    self.final.append((final, c.call("GET", key)))
        except (OSError, ConnectionError) as exc:
            self.problems.append(f"client {index}: {type(exc).__name__}: {exc}")

    def all(self) -> list[Outcome]:
        return [o for log in self.outcomes for o in list(log)]

    def successes_since(self, when: float, op: str = "SET") -> list[Outcome]:
        return [o for o in self.all()
                if o.started >= when and o.op == op and not o.reply.startswith(b"-")]

    def errors_since(self, when: float) -> list[Outcome]:
        return [o for o in self.all() if o.started >= when and o.reply.startswith(b"-")]

    def each_has_succeeded(self, times: int) -> bool:
        return all(sum(1 for o in list(log) if not o.reply.startswith(b"-")) >= times
                   for log in self.outcomes)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.reply_timeout + 5)
            if t.is_alive():
                self.problems.append("a client thread did not finish (hung on a reply)")
