"""Hot reload: SIGHUP and `cachecloak reload --pid-file` change keys and upstreams of a
running proxy without dropping a client connection.

Real processes only: redis-server(s), a `cachecloak run` with a config file and a pid
file, and redis-py clients that keep one connection each (no retries, so a dropped
connection shows up as an error and a new CLIENT ID).  What Redis holds is read
directly and parsed: an envelope starts with the version byte 0x01 and the 4-byte key
identifier (proxy/crypto/envelope.py).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from proxy.crypto.hashing import KeyHasher
from proxy.crypto.keys import derive_key_id
from tests.proxyproc import run_cli, wait_until
from tests.servers import (
    ProxyProcess,
    RawClient,
    encode_command,
    free_port,
    start_proxy,
    start_redis,
)

# Every traffic loop is bounded by these, whatever happens.
MAX_OPS_PER_CLIENT = 20_000
MAX_TRAFFIC_SECONDS = 60.0


def _key() -> str:
    return secrets.token_hex(32)


def _config(redis_port: int, enc: str, old: tuple[str, ...] = (), hashing: str | None = None,
            admin_port: int | None = None, tls: str = "", redis_tls: str = "disableTLS: true",
            max_clients: int | None = None) -> str:
    old_line = f"\n        old: [{', '.join(old)}]" if old else ""
    admin = f"admin:\n  address: 127.0.0.1:{admin_port}\n" if admin_port else ""
    listener = "listeners:\n  - address: 127.0.0.1:6379\n"  # --listen replaces the address
    if max_clients is not None:
        listener += f"    maxClients: {max_clients}\n"
    return f"""{admin}{tls}{listener}caches:
  - name: app
    type: redis
    redis:
      addresses: ["127.0.0.1:{redis_port}"]
      {redis_tls}
    encryption:
      keys:
        current: {enc}{old_line}
    hashing:
      keys:
        current: {hashing}
"""


class Setup:
    """A proxy (with pid file and admin endpoint) in front of a real Redis."""

    def __init__(self, tmp_path: Path, redis_port: int, enc: str, hashing: str):
        self.pid_file = tmp_path / "cachecloak.pid"
        self.admin_port = free_port()
        self.hashing = hashing
        self.proxy: ProxyProcess = start_proxy(
            _config(redis_port, enc, hashing=hashing, admin_port=self.admin_port),
            "--pid-file", str(self.pid_file))

    @property
    def config_path(self) -> Path:
        return self.proxy.workdir / "cachecloak.yaml"

    def rewrite(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)  # as a config management tool would

    def reload(self, *args: str):
        return run_cli("reload", "--pid-file", str(self.pid_file), *args)

    def metric(self, name: str, **labels: str) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                    timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return sample.value
        raise AssertionError(f"no sample {name}{labels}")

    def stored_name(self, key: str, hashing: str | None = None) -> bytes:
        hasher = KeyHasher("app", bytes.fromhex(hashing or self.hashing), b"cachecloak:app:",
                           True, 16)
        return hasher.stored_key(0, key.encode())

    def stop(self) -> None:
        self.proxy.stop()


def _client(port: int) -> redis.Redis:
    # One connection, never retried: a dropped connection is an error, not a silent redial.
    return redis.Redis(host="127.0.0.1", port=port, single_connection_client=True,
                       retry=Retry(NoBackoff(), 0), socket_timeout=15)


def _key_id(envelope: bytes) -> str:
    assert envelope[0] == 0x01, "not a version-1 envelope"
    return envelope[1:5].hex()


class Traffic:
    """Several clients, each on its own connection, writing and reading their own keys in
    small pipelines (and INCR on a shared counter) until stopped; bounded."""

    def __init__(self, port: int, clients: int = 3, strict: bool = True):
        self.port = port
        self.strict = strict  # False: a GET may miss (the upstream moved under it)
        self.stop = threading.Event()
        self.after = threading.Event()  # set once the reload has been applied
        self.errors: list[str] = []
        self.ids: list[tuple[int, int]] = []  # (CLIENT ID at start, at end)
        self.written: list[tuple[str, str, bool]] = []  # (key, value, sent after reload)
        self.increments = 0
        self.done = [0] * clients
        self.done_after = [0] * clients
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(clients)]

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, n: int) -> None:
        deadline = time.monotonic() + MAX_TRAFFIC_SECONDS
        try:
            client = _client(self.port)
            first = client.client_id()
            for i in range(MAX_OPS_PER_CLIENT):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                after = self.after.is_set()  # read before sending: then surely after
                key, value = f"traffic:{n}:{i}", f"value {n} {i} " + "x" * (i % 50)
                pipe = client.pipeline(transaction=False)
                pipe.set(key, value)
                pipe.get(key)
                if i % 2 == 0:
                    pipe.incr("counter")
                replies = pipe.execute()
                got = replies[1]
                if got != value.encode() and (self.strict or after or got is not None):
                    self.errors.append(f"client {n}: GET {key} gave {got!r}")
                with self._lock:
                    self.written.append((key, value, after))
                    if i % 2 == 0:
                        self.increments += 1
                self.done[n] += 1
                if after:
                    self.done_after[n] += 1
            self.ids.append((first, client.client_id()))
            client.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"client {n}: {type(exc).__name__}: {exc}")

    def wait_busy(self, minimum: int = 30, after: bool = False) -> None:
        counts = self.done_after if after else self.done
        wait_until(lambda: self.errors or all(c >= minimum for c in counts), timeout=30,
                   what="traffic from every client")
        assert not self.errors, self.errors

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self._threads), "a traffic client hung"


@pytest.fixture
def redis_a():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_b():
    server = start_redis()
    yield server
    server.stop()


def test_rotation_during_traffic_keeps_connections_and_values(tmp_path, redis_a):
    k1, k2, h = _key(), _key(), _key()
    setup = Setup(tmp_path, redis_a.port, k1, h)
    try:
        seed = _client(setup.proxy.port)
        for i in range(20):
            seed.set(f"before:{i}", f"old value {i}")
        traffic = Traffic(setup.proxy.port).start()
        traffic.wait_busy()

        setup.rewrite(_config(redis_a.port, k2, old=(k1,), hashing=h,
                              admin_port=setup.admin_port))
        result = setup.reload()
        traffic.after.set()
        assert result.returncode == 0, result.stderr
        new_id, old_id = derive_key_id(bytes.fromhex(k2)).hex(), derive_key_id(
            bytes.fromhex(k1)).hex()
        assert f"encryption key id {new_id} current, 1 old key ({old_id})" in result.stdout
        traffic.wait_busy(after=True)
        traffic.finish()

        assert not traffic.errors, traffic.errors
        assert len(traffic.ids) == 3
        for first, last in traffic.ids:
            assert first == last, "a client was reconnected"
        assert seed.client_id() == seed.client_id()  # still its first connection
        raw = redis_a.client()
        for i in range(20):  # written under the old key, still readable
            assert seed.get(f"before:{i}") == f"old value {i}".encode()
            assert _key_id(raw.get(setup.stored_name(f"before:{i}"))) == old_id
        for key, value, _after in traffic.written:
            assert seed.get(key) == value.encode()
        after = [key for key, _value, sent_after in traffic.written if sent_after]
        assert len(after) >= 90
        for key in after:  # every write sent after the reload uses the new key
            assert _key_id(raw.get(setup.stored_name(key))) == new_id
        assert int(seed.get("counter")) == traffic.increments  # no lost increment
        seed.set("fresh", "new")
        assert _key_id(raw.get(setup.stored_name("fresh"))) == new_id
        assert setup.metric("cachecloak_config_reloads_total", outcome="ok") == 1
        assert setup.metric("cachecloak_config_reloads_total", outcome="rejected") == 0
        log = setup.proxy.log()
        assert f"config reloaded: cache app: encryption key id {new_id} current" in log
        for secret in (k1, k2, h):
            assert secret not in log
        seed.close()
    finally:
        setup.stop()
    assert not setup.pid_file.exists(), "the pid file is removed at stop"


def test_sighup_new_hashing_key_renames_and_loses_watch(tmp_path, redis_a):
    k1, h1, h2 = _key(), _key(), _key()
    setup = Setup(tmp_path, redis_a.port, k1, h1)
    try:
        client = _client(setup.proxy.port)
        client.set("greeting", "hello")
        watcher = _client(setup.proxy.port)
        watcher.execute_command("WATCH", "greeting")
        first_id = watcher.client_id()

        setup.rewrite(_config(redis_a.port, k1, hashing=h2, admin_port=setup.admin_port))
        os.kill(setup.proxy.proc.pid, signal.SIGHUP)
        wait_until(lambda: "config reloaded" in setup.proxy.log(), what="the reload")
        assert "stored names changed" in setup.proxy.log()

        # The watched key now lives under another stored name: EXEC aborts (nil).
        watcher.execute_command("MULTI")
        watcher.execute_command("SET", "greeting", "changed")
        assert watcher.execute_command("EXEC") is None
        assert watcher.client_id() == first_id
        # Data written under the previous hashing key is no longer reachable.
        assert client.get("greeting") is None
        raw = redis_a.client()
        assert raw.get(setup.stored_name("greeting", h1)) is not None
        client.set("greeting", "hello again")
        assert raw.get(setup.stored_name("greeting", h2)) is not None
        assert client.get("greeting") == b"hello again"
        # A transaction without a stale WATCH works as before.
        watcher.execute_command("WATCH", "greeting")
        watcher.execute_command("MULTI")
        watcher.execute_command("SET", "greeting", "from watcher")
        assert watcher.execute_command("EXEC") == [b"OK"]
        assert client.get("greeting") == b"from watcher"
        client.close()
        watcher.close()
    finally:
        setup.stop()


def test_invalid_config_is_rejected_and_the_old_one_stays(tmp_path, redis_a):
    k1, k2, h = _key(), _key(), _key()
    setup = Setup(tmp_path, redis_a.port, k1, h)
    try:
        client = _client(setup.proxy.port)
        client.set("a", "1")
        old_id = derive_key_id(bytes.fromhex(k1)).hex()

        # 1. not a valid key: ConfigError, named by its field path
        bad = _config(redis_a.port, "zz" + k2[2:], old=(k1,), hashing=h,
                      admin_port=setup.admin_port)
        setup.rewrite(bad)
        result = setup.reload()
        assert result.returncode == 2
        assert "rejected" in result.stderr
        assert "caches[0].encryption.keys.current: must be 64 hex characters" in result.stderr

        # 2. TLS files that cannot be loaded
        garbage = tmp_path / "ca.pem"
        garbage.write_text("not a certificate\n")
        tls = f"tls:\n  broken:\n    caFile: {garbage}\n"
        setup.rewrite(_config(redis_a.port, k2, old=(k1,), hashing=h,
                              admin_port=setup.admin_port, tls=tls, redis_tls="tls: broken"))
        os.kill(setup.proxy.proc.pid, signal.SIGHUP)
        wait_until(lambda: setup.proxy.log().count("config reload rejected") >= 2,
                   what="the second rejection")
        assert re.search(r'tls profile "broken": caFile \S+ could not be loaded',
                         setup.proxy.log())

        # The running configuration still serves, with the old key and connection.
        assert client.get("a") == b"1"
        client.set("b", "2")
        raw = redis_a.client()
        assert _key_id(raw.get(setup.stored_name("b"))) == old_id
        assert setup.metric("cachecloak_config_reloads_total", outcome="rejected") == 2
        assert setup.metric("cachecloak_config_reloads_total", outcome="ok") == 0

        # 3. a listener setting only a restart applies: warned, the rest is applied
        setup.rewrite(_config(redis_a.port, k2, old=(k1,), hashing=h,
                              admin_port=setup.admin_port, max_clients=5))
        result = setup.reload()
        assert result.returncode == 0, result.stderr
        assert "listeners[0].maxClients: changed in the file; it takes effect only after a " \
               "restart" in setup.proxy.log()
        client.set("c", "3")
        assert _key_id(raw.get(setup.stored_name("c"))) == derive_key_id(
            bytes.fromhex(k2)).hex()
        log = setup.proxy.log()
        for secret in (k1, k2, h, k2[2:]):
            assert secret not in log
        client.close()
    finally:
        setup.stop()


def test_address_change_moves_clients_to_the_new_redis(tmp_path, redis_a, redis_b):
    k1, h = _key(), _key()
    setup = Setup(tmp_path, redis_a.port, k1, h)
    try:
        client = _client(setup.proxy.port)
        client.set("on-a", "1")
        watcher = _client(setup.proxy.port)
        watcher.execute_command("WATCH", "w")
        traffic = Traffic(setup.proxy.port, strict=False).start()
        traffic.wait_busy()

        setup.rewrite(_config(redis_b.port, k1, hashing=h, admin_port=setup.admin_port))
        result = setup.reload()
        traffic.after.set()
        assert result.returncode == 0, result.stderr
        assert f"upstream rebuilt (redis 127.0.0.1:{redis_a.port} -> redis " \
               f"127.0.0.1:{redis_b.port})" in result.stdout
        traffic.wait_busy(after=True)
        traffic.finish()
        assert not traffic.errors, traffic.errors
        for first, last in traffic.ids:
            assert first == last, "a client was reconnected"

        raw_a, raw_b = redis_a.client(), redis_b.client()
        after = [key for key, _v, sent_after in traffic.written if sent_after]
        assert len(after) >= 90
        for key in after:
            assert raw_b.exists(setup.stored_name(key)) == 1
            assert raw_a.exists(setup.stored_name(key)) == 0
        assert client.get("on-a") is None  # that value lives on the previous Redis
        client.set("on-b", "2")
        assert client.get("on-b") == b"2"
        assert raw_b.exists(setup.stored_name("on-b")) == 1
        # A WATCH taken on the previous Redis cannot hold: EXEC aborts.
        watcher.execute_command("MULTI")
        watcher.execute_command("SET", "w", "x")
        assert watcher.execute_command("EXEC") is None
        # The previous upstream is closed once no client uses it: only our own
        # inspecting connection is left on redis A.
        wait_until(lambda: "the previous upstream" in setup.proxy.log(),
                   what="the old upstream to close")
        wait_until(lambda: raw_a.info("clients")["connected_clients"] == 1,
                   what="the proxy's connections to redis A to close")
        client.close()
        watcher.close()
    finally:
        setup.stop()


def test_reload_reports_missing_and_stale_pid_files(tmp_path):
    missing = tmp_path / "missing.pid"
    result = run_cli("reload", "--pid-file", str(missing))
    assert result.returncode == 1
    assert f"pid file {missing} does not exist" in result.stderr
    assert "--pid-file" in result.stderr

    result = run_cli("reload", env={"CACHECLOAK_PID_FILE": ""})
    assert result.returncode == 1
    assert "no pid file given" in result.stderr

    stale = tmp_path / "stale.pid"
    gone = subprocess.Popen(["true"])  # a process that has exited: its pid names nothing
    gone.wait(10)
    stale.write_text(f"{gone.pid}\n")
    result = run_cli("reload", "--pid-file", str(stale))
    assert result.returncode == 1
    assert f"pid file {stale} is stale" in result.stderr

    # A running cachecloak owns its pid file: a second one refuses to take it.
    pid_file = tmp_path / "cc.pid"
    proxy = start_proxy(None, "--pid-file", str(pid_file))
    try:
        assert pid_file.read_text().strip() == str(proxy.proc.pid)
        second = run_cli("run", "--listen", f"127.0.0.1:{free_port()}",
                         "--pid-file", str(pid_file))
        assert second.returncode == 1
        assert f"names process {proxy.proc.pid}, which is running" in second.stderr
        # Without a config file a reload reads the built-in default again: no change.
        result = run_cli("reload", "--pid-file", str(pid_file))
        assert result.returncode == 0, result.stderr
        assert "cache local_default: encryption off; unchanged" in result.stdout
    finally:
        proxy.stop()
    assert not pid_file.exists()


def test_tls_profile_change_and_renewed_ca_file_rebuild_the_upstream(tmp_path):
    from tests.certs import TestCA

    ca = TestCA(tmp_path / "ca")
    server_pair = ca.issue("redis")
    tls_port = free_port()
    # One redis-server with a plain port and a TLS port: the data stays, the way to it
    # changes.
    redis_server = start_redis("--tls-port", str(tls_port), "--tls-cert-file",
                               str(server_pair.cert), "--tls-key-file", str(server_pair.key),
                               "--tls-ca-cert-file", str(ca.cert_path),
                               "--tls-auth-clients", "no")
    k1, h = _key(), _key()
    setup = Setup(tmp_path, redis_server.port, k1, h)
    try:
        client = _client(setup.proxy.port)
        client.set("k", "v")
        first_id = client.client_id()
        bundle = tmp_path / "trusted.pem"
        bundle.write_bytes(ca.cert_path.read_bytes())
        tls = f"tls:\n  upstream:\n    caFile: {bundle}\n"

        def tls_config() -> str:
            return _config(tls_port, k1, hashing=h, admin_port=setup.admin_port, tls=tls,
                           redis_tls="tls: upstream")

        setup.rewrite(tls_config())
        result = setup.reload()
        assert result.returncode == 0, result.stderr
        assert (f"upstream rebuilt (redis 127.0.0.1:{redis_server.port} -> rediss "
                f"127.0.0.1:{tls_port})") in result.stdout
        assert client.get("k") == b"v"  # same Redis, now over TLS

        # Same profile, same path, new contents (a renewed CA bundle): rebuilt again.
        other = TestCA(tmp_path / "other", name="another test CA")
        bundle.write_bytes(ca.cert_path.read_bytes() + other.cert_path.read_bytes())
        result = setup.reload()
        assert result.returncode == 0, result.stderr
        assert (f"upstream rebuilt (rediss 127.0.0.1:{tls_port} -> rediss "
                f"127.0.0.1:{tls_port})") in result.stdout
        # Nothing changed: nothing is rebuilt.
        result = setup.reload()
        assert result.returncode == 0, result.stderr
        assert "; unchanged" in result.stdout
        client.set("k2", "v2")
        assert client.get("k2") == b"v2"
        assert client.client_id() == first_id
        client.close()
    finally:
        setup.stop()
        redis_server.stop()


def test_commands_in_flight_when_the_upstream_changes_get_their_replies(tmp_path, redis_a,
                                                                         redis_b):
    k1, h = _key(), _key()
    setup = Setup(tmp_path, redis_a.port, k1, h)
    try:
        with RawClient(setup.proxy.port) as client:
            assert client.call("SET", "x", "before") == b"+OK\r\n"
            # Redis A holds every command for 4 s: the next pipeline stays in flight
            # while the reload moves the cache to redis B.
            redis_a.client().execute_command("CLIENT", "PAUSE", "4000", "ALL")
            client.send_raw(encode_command(["SET", "x", "in flight"])
                            + encode_command(["GET", "x"]))
            setup.rewrite(_config(redis_b.port, k1, hashing=h, admin_port=setup.admin_port))
            result = setup.reload()
            assert result.returncode == 0, result.stderr
            client.send("GET", "x")  # sent after the reload: answered by redis B
            replies = [client.read_reply() for _ in range(3)]
        # The old upstream stayed open until the commands in flight were answered, and
        # the later command did not overtake them.
        assert replies == [b"+OK\r\n", b"$9\r\nin flight\r\n", b"$-1\r\n"]
        assert redis_a.client().exists(setup.stored_name("x")) == 1
        assert redis_b.client().exists(setup.stored_name("x")) == 0
        wait_until(lambda: "the previous upstream" in setup.proxy.log(),
                   what="the old upstream to close")
    finally:
        setup.stop()
