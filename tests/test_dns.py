"""An upstream address given as a host name that does not resolve, or stops resolving.

The proxy runs in a private mount namespace (`unshare -m`) where temporary files are
bind-mounted over /etc/hosts and /etc/nsswitch.conf (`hosts: files`): names resolve from
that file only, so no lookup leaves the machine, and the test decides when the upstream
name (under the reserved `.invalid` domain, RFC 2606) resolves, to 127.0.0.1 only.  The
machine's own files are never touched.

* While the name does not resolve, both ways a cache reaches Redis (mode auto, which
  probes the server first, and mode standalone, whose connections connect directly) must
  answer every command at once with one error line that names the address and the fix,
  report not-ready on /readyz, keep retrying with capped backoff (counted in
  `cachecloak_upstream_connect_failures_total{reason="dns"}`, logged once), and leave the
  other listeners serving.  Without mount namespaces this test runs against the system
  resolver instead (a `.invalid` name never resolves in DNS either).
* Recovery without operator action: the name resolves, stops resolving while connected,
  connections break, it resolves again.  Skipped without mount namespaces.

Loopback only; every wait is bounded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.proxyproc import proxy_env, start_proxy_listeners, wait_until
from tests.servers import ProxyProcess, RawClient, encode_command, free_port, start_redis

NAME = "cachecloak-upstream.invalid"
ENC = "5e" * 32
HASH = "6f" * 32
# Attempts one connection may make in WINDOW seconds once its backoff reached the 2 s cap:
# the delays are uniform in [0, 2 s], and 12 of them summing to under 3 s has a
# probability below 1e-6 (Irwin-Hall); an un-backed-off loop makes thousands.
WINDOW = 3.0
MAX_ATTEMPTS_IN_WINDOW = 12


def dns_config(ports: dict[str, int], redis_port: int) -> str:
    """Three listeners: cache app (mode auto), cache fixed (mode standalone, one pooled
    connection so its attempts are one connection's), cache loc (in-process)."""
    def cache(name: str, extra: str) -> str:
        return f"""\
  - name: {name}
    type: redis
    redis:
      addresses: ["{NAME}:{redis_port}"]
      disableTLS: true
      connectTimeout: 1s
{extra}    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
"""
    fixed = cache("fixed", "      mode: standalone\n      poolSize: 1\n")
    return f"""\
admin:
  address: 127.0.0.1:{ports['admin']}
listeners:
  - address: 127.0.0.1:{ports['app']}
    cache: app
  - address: 127.0.0.1:{ports['fixed']}
    cache: fixed
  - address: 127.0.0.1:{ports['loc']}
    cache: loc
caches:
{cache("app", "")}{fixed}\
  - name: loc
    type: local
"""


def new_ports() -> dict[str, int]:
    return {name: free_port() for name in ("admin", "app", "fixed", "loc")}


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def dns_failures(admin_port: int, cache: str) -> int:
    _, text = http_get(admin_port, "/metrics")
    name = 'cachecloak_upstream_connect_failures_total{cache="' + cache + '",reason="dns"}'
    match = re.search("^" + re.escape(name) + r" (\S+)$", text, re.M)
    assert match, text
    return int(float(match.group(1)))


def assert_names_the_address_and_fix(reply: bytes, cache: str, redis_port: int) -> None:
    text = reply.decode()
    assert text.startswith(f'-ERR cachecloak: Redis for cache "{cache}" at '
                           f"{NAME}:{redis_port} is unavailable ("), text
    assert text.endswith("\r\n") and "\r\n" not in text[:-2], text  # one line
    assert f"the host name {NAME} does not resolve" in text, text
    assert "check the name in redis.addresses" in text, text
    assert "retrying in the background" in text, text


# -- a private resolver ------------------------------------------------------------------

def _namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = Path(tempfile.mkdtemp(prefix="cachecloak-hosts-")) / "hosts"
    probe.write_text(f"127.0.0.1 {NAME}\n")
    try:
        result = subprocess.run(
            [unshare, "-m", "--propagation", "private", "sh", "-c",
             f'mount --bind "{probe}" /etc/hosts && getent hosts {NAME}'],
            capture_output=True, text=True, timeout=10)
        return result.returncode == 0 and "127.0.0.1" in result.stdout
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe.parent, ignore_errors=True)


NAMESPACES = _namespaces_work()
needs_namespaces = pytest.mark.skipif(
    not NAMESPACES, reason="needs unshare -m and bind mounts over /etc/hosts (root, mount "
                           "namespaces); the machine's own files are never changed")


def private_resolver(directory: Path) -> Path:
    """A hosts file (returned; the name not in it yet) and an nsswitch.conf that resolves
    host names from files only, in `directory`."""
    system = Path("/etc/nsswitch.conf")
    lines = system.read_text().splitlines() if system.exists() else []
    lines = [line for line in lines if not line.startswith("hosts:")] + ["hosts: files"]
    (directory / "nsswitch.conf").write_text("\n".join(lines) + "\n")
    hosts = directory / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    return hosts


def start_proxy_with_private_resolver(config_text: str, hosts: Path,
                                      ports: list[int]) -> ProxyProcess:
    """`python -m proxy run` in its own mount namespace, resolving names from `hosts`."""
    workdir = Path(tempfile.mkdtemp(prefix="cachecloak-proxy-"))
    (workdir / "cachecloak.yaml").write_text(config_text)
    nsswitch = hosts.parent / "nsswitch.conf"
    script = (f'mount --bind "{hosts}" /etc/hosts && '
              f'mount --bind "{nsswitch}" /etc/nsswitch.conf && '
              f'exec "{sys.executable}" -m proxy run --config "{workdir / "cachecloak.yaml"}"')
    args = [shutil.which("unshare"), "-m", "--propagation", "private", "sh", "-c", script]
    with open(workdir / "cachecloak.log", "wb") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT,
                                env=proxy_env(), cwd=str(workdir))
    proxy = ProxyProcess(port=ports[0], proc=proc, workdir=workdir)
    try:
        for port in ports:
            wait_until(lambda port=port: _listening(port) or proc.poll() is not None,
                       timeout=15, what=f"port {port}")
        if proc.poll() is not None:
            raise RuntimeError(f"cachecloak did not start:\n{proxy.log()}")
    except BaseException:
        proxy.stop()
        raise
    return proxy


def start_dns_proxy(tmp_path: Path, ports: dict[str, int], redis_port: int
                    ) -> tuple[ProxyProcess, Path | None]:
    config = dns_config(ports, redis_port)
    listeners = [ports["app"], ports["fixed"], ports["loc"]]
    if not NAMESPACES:
        return start_proxy_listeners(config, listeners), None
    hosts = private_resolver(tmp_path)
    return start_proxy_with_private_resolver(config, hosts, listeners), hosts


def _listening(port: int) -> bool:
    try:
        with RawClient(port, timeout=1):
            return True
    except OSError:
        return False


# -- the tests ---------------------------------------------------------------------------

def test_unresolvable_name_fails_fast_reports_not_ready_and_retries_with_backoff(tmp_path):
    ports, redis_port = new_ports(), free_port()
    proxy, _ = start_dns_proxy(tmp_path, ports, redis_port)
    try:
        for cache in ("app", "fixed"):
            with RawClient(ports[cache], timeout=5) as c:  # a hang fails here
                assert_names_the_address_and_fix(c.call("SET", "k", "v"), cache, redis_port)
                # A pipeline gets one reply per command, in order, each the same error.
                c.send_raw(b"".join(encode_command(["GET", f"k{i}"]) for i in range(20)))
                replies = [c.read_reply() for _ in range(20)]
                for reply in replies:
                    assert_names_the_address_and_fix(reply, cache, redis_port)
                assert c.call("PING") == b"+PONG\r\n"  # answered by cachecloak itself
        # Everything else keeps serving.
        with RawClient(ports["loc"], timeout=5) as c:
            assert c.call("SET", "k", "local") == b"+OK\r\n"
            assert c.call("GET", "k") == b"$5\r\nlocal\r\n"
        assert http_get(ports["admin"], "/healthz")[0] == 200
        status, body = http_get(ports["admin"], "/readyz")
        assert status == 503, body
        assert "cache app: upstream not ready" in body and "cache fixed:" in body, body
        assert "cache loc" not in body, body

        # Retries go on in the background with capped backoff: wait until the backoff
        # reached its cap (6 doublings from 50 ms), then count one window's attempts.
        for cache in ("app", "fixed"):
            wait_until(lambda cache=cache: dns_failures(ports["admin"], cache) >= 7,
                       timeout=20, interval=0.2, what=f"retries of cache {cache}")
        before = {cache: dns_failures(ports["admin"], cache) for cache in ("app", "fixed")}
        time.sleep(WINDOW)
        for cache in ("app", "fixed"):
            attempts = dns_failures(ports["admin"], cache) - before[cache]
            assert 1 <= attempts <= MAX_ATTEMPTS_IN_WINDOW, (cache, attempts)
        with RawClient(ports["app"], timeout=5) as c:
            info = c.call("INFO", "cachecloak").decode()
        assert re.search(r"upstream_connect_failures:dns=\d+,refused=0,", info), info
        assert "upstream_ready:0" in info, info
    finally:
        proxy.stop()
    log = proxy.log()
    # Logged once per cache (the reason does not change), not once per attempt.
    for cache in ("app", "fixed"):
        lines = [line for line in log.splitlines()
                 if f'cache "{cache}" at {NAME}' in line and "does not resolve" in line]
        assert len(lines) == 1, lines
        assert "WARNING" in lines[0] and "Traceback" not in log


def _resolves(hosts: Path, yes: bool) -> None:
    # Rewritten in place (same inode): the bind mount shows the new content.
    lines = "127.0.0.1 localhost\n" + (f"127.0.0.1 {NAME}\n" if yes else "")
    with open(hosts, "r+") as f:
        f.truncate(0)
        f.write(lines)


def _served(port: int, key: str, value: str) -> bool:
    with RawClient(port, timeout=5) as c:
        if c.call("SET", key, value) != b"+OK\r\n":
            return False
        return c.call("GET", key) == b"$%d\r\n%s\r\n" % (len(value), value.encode())


@needs_namespaces
def test_name_that_starts_resolving_recovers_without_operator_action(tmp_path):
    redis = start_redis()
    ports = new_ports()
    proxy, hosts = start_dns_proxy(tmp_path, ports, redis.port)
    try:
        # Not resolving yet: fast errors naming the fix, not ready.
        for cache in ("app", "fixed"):
            with RawClient(ports[cache], timeout=5) as c:
                assert_names_the_address_and_fix(c.call("GET", "k"), cache, redis.port)
        assert http_get(ports["admin"], "/readyz")[0] == 503

        # The name appears: both caches connect by themselves, /readyz turns 200.
        _resolves(hosts, True)
        wait_until(lambda: http_get(ports["admin"], "/readyz")[0] == 200, timeout=15,
                   interval=0.1, what="ready once the name resolves")
        for cache in ("app", "fixed"):
            assert _served(ports[cache], f"{cache}:before", "one")

        # The name stops resolving: open connections need no lookup and keep serving...
        _resolves(hosts, False)
        for cache in ("app", "fixed"):
            assert _served(ports[cache], f"{cache}:during", "two")
        # ...until they break (Redis drops its clients): then the reconnects fail on
        # the name, commands get the error at once and readiness says so.
        direct = redis.client()
        direct.client_kill_filter(_type="normal", skipme=True)

        def failing_on_the_name() -> bool:
            for cache in ("app", "fixed"):
                with RawClient(ports[cache], timeout=5) as c:
                    if b"does not resolve" not in c.call("GET", f"{cache}:before"):
                        return False
            return True

        wait_until(failing_on_the_name, timeout=15, interval=0.1,
                   what="errors naming the unresolvable host")
        assert http_get(ports["admin"], "/readyz")[0] == 503
        assert _served(ports["loc"], "loc", "still")

        # It resolves again: recovery, with the data written before still readable.
        _resolves(hosts, True)
        wait_until(lambda: http_get(ports["admin"], "/readyz")[0] == 200, timeout=15,
                   interval=0.1, what="ready again")
        for cache in ("app", "fixed"):
            wait_until(lambda cache=cache: _served(ports[cache], f"{cache}:after", "three"),
                       timeout=10, interval=0.1, what=f"cache {cache} serving again")
            with RawClient(ports[cache], timeout=5) as c:
                assert c.call("GET", f"{cache}:before") == b"$3\r\none\r\n"
                assert c.call("GET", f"{cache}:during") == b"$3\r\ntwo\r\n"
        # Redis holds only hashed names (the proxy really went there, by the name).
        stored = list(direct.scan_iter(count=1000))
        assert len(stored) == 6, stored
        assert all(b"before" not in k and b"after" not in k for k in stored), stored
        direct.close()
    finally:
        proxy.stop()
        redis.stop()
    log = proxy.log()
    assert "does not resolve" in log and "connected" in log, log
    assert "Traceback" not in log, log
