"""TLS on client listeners, mutual TLS included.

One real proxy process serves four listeners of the in-process cache: TLS with required
client certificates (mutual TLS, TLS 1.2 allowed), TLS without client certificates and
minVersion 1.3, plain TCP, and TLS on a Unix socket.  Certificates come from a throw-away
CA (tests/certs.py).  Clients are redis-py, redis-cli --tls and Python's ssl module on raw
sockets where a test needs to know exactly how many handshakes it attempted.  Failed
handshakes are checked in /metrics (parsed with prometheus_client's parser), in INFO and
in the log: one warning line each, with the peer address.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.certs import CertPair, TestCA
from tests.proxyproc import run_cli, start_proxy_listeners, wait_until
from tests.servers import ProxyProcess, RawClient, free_port
from tests.test_admin import http_get

PING = b"*1\r\n$4\r\nPING\r\n"
FAILURES = "cachecloak_listener_tls_handshake_failures_total"


class Certs:
    def __init__(self, directory: Path) -> None:
        self.ca = TestCA(directory / "ca")
        self.server = self.ca.issue("server")
        self.client = self.ca.issue("client", hosts=("app",), client=True)
        self.stranger_ca = TestCA(directory / "stranger", "stranger CA")
        # A client certificate with the right name from a CA the proxy does not trust.
        self.stranger = self.stranger_ca.issue("stranger", hosts=("app",), client=True)


class TLSProxy:
    def __init__(self, proxy: ProxyProcess, certs: Certs, ports: dict[str, int],
                 sock_path: Path) -> None:
        self.proxy, self.certs, self.ports, self.sock_path = proxy, certs, ports, sock_path

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def failures(self) -> dict[str, float]:
        status, text = http_get(self.ports["admin"], "/metrics")
        assert status == 200
        return {sample.labels["listener"]: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == FAILURES}

    def warnings_for(self, peer: str) -> list[str]:
        return [line for line in self.proxy.log().splitlines()
                if f"TLS handshake with {peer} failed" in line]


def _config(certs: Certs, ports: dict[str, int], sock_path: Path) -> str:
    return f"""
admin:
  address: "127.0.0.1:{ports['admin']}"
tls:
  mutual:
    certFile: {certs.server.cert}
    keyFile: {certs.server.key}
    caFile: {certs.ca.cert_path}
    clientAuth: require
  server-only:
    certFile: {certs.server.cert}
    keyFile: {certs.server.key}
    minVersion: "1.3"
  unix-optional:
    certFile: {certs.server.cert}
    keyFile: {certs.server.key}
    caFile: {certs.ca.cert_path}
    clientAuth: optional
listeners:
  - address: "127.0.0.1:{ports['mutual']}"
    cache: local_default
    tls: mutual
  - address: "127.0.0.1:{ports['tls']}"
    cache: local_default
    tls: server-only
  - address: "127.0.0.1:{ports['plain']}"
    cache: local_default
  - address: "unix:{sock_path}"
    cache: local_default
    tls: unix-optional
"""


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    directory = Path(tempfile.mkdtemp(prefix="cc-tls-"))
    yield Certs(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_proxy(certs: Certs) -> Iterator[TLSProxy]:
    ports = {name: free_port() for name in ("mutual", "tls", "plain", "admin")}
    sockdir = Path(tempfile.mkdtemp(prefix="cc-"))  # short: sun_path holds 107 bytes
    sock_path = sockdir / "tls.sock"
    proxy = start_proxy_listeners(_config(certs, ports, sock_path), list(ports.values()))
    try:
        wait_until(sock_path.exists, what="the Unix socket")
        yield TLSProxy(proxy, certs, ports, sock_path)
    finally:
        code = proxy.stop()
        log = proxy.log()
        shutil.rmtree(sockdir, ignore_errors=True)
    assert code == 0, log
    assert "Traceback" not in log, log


def _client_context(certs: Certs, client: CertPair | None = None, *,
                    version: ssl.TLSVersion | None = None, ca: Path | None = None
                    ) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or certs.ca.cert_path))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    if version is not None:
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = version
            context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("ALL:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1 at all
    return context


def _tls_ping(port: int | Path, context: ssl.SSLContext) -> tuple[str, bytes | Exception]:
    """Connect (TCP port or Unix socket path), handshake, PING; return (our address as the
    proxy logs it, the reply or the error).  One connection: one handshake attempt.  With
    TLS 1.3 a refused client certificate shows only after the client's handshake: as an
    error or an empty reply."""
    if isinstance(port, Path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(port))
        peer = f"{port}:0"
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(PING)
            return peer, tls.recv(100)
    except (OSError, ssl.SSLError) as exc:
        return peer, exc
    finally:
        sock.close()


def _redis(tls_proxy: TLSProxy, name: str, client: CertPair | None = None,
           **kwargs) -> redis.Redis:
    certs = tls_proxy.certs
    return redis.Redis(host="127.0.0.1", port=tls_proxy.ports[name], ssl=True,
                       ssl_ca_certs=str(certs.ca.cert_path),
                       ssl_certfile=str(client.cert) if client else None,
                       ssl_keyfile=str(client.key) if client else None,
                       socket_timeout=10, **kwargs)


def _expect_failures(tls_proxy: TLSProxy, before: dict[str, float],
                     expected: dict[str, int]) -> None:
    """Wait until the counters moved by `expected` (the server may count a handshake a
    moment after the client gave up), then check nothing else moved."""
    def moved() -> bool:
        now = tls_proxy.failures()
        return all(now.get(name, 0) - before.get(name, 0) >= delta
                   for name, delta in expected.items())

    wait_until(moved, what=f"handshake failures {expected}")
    now = tls_proxy.failures()
    assert {name: now[name] - before.get(name, 0) for name in now} == {
        name: expected.get(name, 0) for name in now}


# -- what works ---------------------------------------------------------------------------


def test_plain_tls_with_redis_py(tls_proxy):
    client = _redis(tls_proxy, "tls")
    assert client.set("greeting", "hello over TLS")
    assert client.get("greeting") == b"hello over TLS"
    assert client.ping()
    client.close()


def test_mutual_tls_with_a_good_client_certificate(tls_proxy):
    client = _redis(tls_proxy, "mutual", tls_proxy.certs.client)
    assert client.set("k", "v") and client.get("k") == b"v"
    info = client.info("cachecloak")
    assert info["listener_tls_handshake_failures"] >= 0
    client.close()
    # TLS 1.2 is allowed on this listener (its minVersion is the default).
    _, reply = _tls_ping(tls_proxy.ports["mutual"], _client_context(
        tls_proxy.certs, tls_proxy.certs.client, version=ssl.TLSVersion.TLSv1_2))
    assert reply == b"+PONG\r\n"


def test_redis_cli_tls(tls_proxy):
    certs = tls_proxy.certs
    base = ["redis-cli", "-h", "127.0.0.1", "--tls", "--cacert", str(certs.ca.cert_path)]
    out = subprocess.run([*base, "-p", str(tls_proxy.ports["mutual"]), "--cert",
                          str(certs.client.cert), "--key", str(certs.client.key), "PING"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "PONG", out.stderr
    out = subprocess.run([*base, "-p", str(tls_proxy.ports["tls"]), "ECHO", "tls-only"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "tls-only", out.stderr
    # Without its client certificate redis-cli gets no answer from the mutual listener.
    out = subprocess.run([*base, "-p", str(tls_proxy.ports["mutual"]), "PING"],
                         capture_output=True, text=True, timeout=30)
    assert "PONG" not in out.stdout


def test_tls_on_a_unix_socket_with_optional_client_certificates(tls_proxy):
    certs = tls_proxy.certs
    for client in (None, certs.client):  # optional: with or without a certificate
        _, reply = _tls_ping(tls_proxy.sock_path, _client_context(certs, client))
        assert reply == b"+PONG\r\n"
    # A certificate that is presented is verified, even when it is optional.
    before = tls_proxy.failures()
    peer, reply = _tls_ping(tls_proxy.sock_path, _client_context(certs, certs.stranger))
    assert reply != b"+PONG\r\n"
    _expect_failures(tls_proxy, before, {f"unix:{tls_proxy.sock_path}": 1})
    assert len(tls_proxy.warnings_for(peer)) == 1


# -- what is refused, counted and logged ------------------------------------------------


def test_refused_handshakes_are_counted_and_logged_once_each(tls_proxy):
    certs = tls_proxy.certs
    mutual, tls = tls_proxy.ports["mutual"], tls_proxy.ports["tls"]
    # Clients already connected keep being served throughout.
    good = _redis(tls_proxy, "mutual", certs.client)
    assert good.set("before", "1")
    plain = RawClient(tls_proxy.ports["plain"])
    before = tls_proxy.failures()
    assert set(before) == {tls_proxy.address("mutual"), tls_proxy.address("tls"),
                           f"unix:{tls_proxy.sock_path}"}  # no series for the plain one

    attempts = {
        "no client certificate": (mutual, _client_context(certs)),
        "a client certificate from another CA": (mutual, _client_context(certs, certs.stranger)),
        "a server certificate as client certificate": (
            mutual, _client_context(certs, certs.server)),
        "TLS 1.1": (mutual, _client_context(certs, certs.client,
                                            version=ssl.TLSVersion.TLSv1_1)),
        "TLS 1.2 below minVersion 1.3": (tls, _client_context(
            certs, version=ssl.TLSVersion.TLSv1_2)),
    }
    peers: dict[str, str] = {}
    for what, (port, context) in attempts.items():
        peer, reply = _tls_ping(port, context)
        assert reply != b"+PONG\r\n", what
        peers[what] = peer
    # A plain-text client on a TLS port: no reply, the connection is closed.
    with RawClient(mutual) as raw:
        peers["plain text"] = f"127.0.0.1:{raw.sock.getsockname()[1]}"
        raw.send_raw(PING)
        assert raw.read_until_closed() == b""

    _expect_failures(tls_proxy, before, {tls_proxy.address("mutual"): 5,
                                         tls_proxy.address("tls"): 1})
    reasons = {
        "no client certificate": "the client sent no certificate",
        "a client certificate from another CA": "the client certificate was not accepted",
        "a server certificate as client certificate": "unsuitable certificate purpose",
        "TLS 1.1": "the client offered no TLS version",
        "TLS 1.2 below minVersion 1.3": "(TLS 1.3 or newer)",
        "plain text": "the client did not speak TLS",
    }
    for what, peer in peers.items():
        lines = wait_until(lambda p=peer: tls_proxy.warnings_for(p), what=f"the log of {what}")
        assert len(lines) == 1, (what, lines)
        assert "WARNING" in lines[0] and reasons[what] in lines[0], (what, lines[0])
        assert "PRIVATE KEY" not in lines[0] and "BEGIN" not in lines[0]

    # The others are still served, on every listener.
    assert good.get("before") == b"1"
    assert plain.call("PING") == b"+PONG\r\n"
    plain.close()
    assert _redis(tls_proxy, "tls").ping()
    good.close()


def test_redis_py_without_its_client_certificate_is_refused(tls_proxy):
    client = _redis(tls_proxy, "mutual", retry_on_error=[], retry=None)
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_port_probes_are_not_handshake_failures(tls_proxy):
    before = tls_proxy.failures()
    for _ in range(3):  # what a TCP readiness probe does: connect and close
        socket.create_connection(("127.0.0.1", tls_proxy.ports["mutual"]), timeout=5).close()
    assert _redis(tls_proxy, "mutual", tls_proxy.certs.client).ping()  # after the probes
    assert tls_proxy.failures() == before


def test_info_shows_the_listener_failures(tls_proxy):
    client = _redis(tls_proxy, "tls")
    counted = tls_proxy.failures()[tls_proxy.address("tls")]
    assert client.info("cachecloak")["listener_tls_handshake_failures"] == counted
    client.close()
    plain = redis.Redis(host="127.0.0.1", port=tls_proxy.ports["plain"], socket_timeout=10)
    assert "listener_tls_handshake_failures" not in plain.info("cachecloak")
    plain.close()


# -- startup ------------------------------------------------------------------------------


def test_unreadable_certificate_content_stops_the_start(tmp_path, certs):
    bad_key = tmp_path / "not-a-key.pem"
    bad_key.write_text("this is not a PEM private key\n")
    config = tmp_path / "cachecloak.yaml"
    config.write_text(f"""
tls:
  edge:
    certFile: {certs.server.cert}
    keyFile: {bad_key}
listeners:
  - address: "127.0.0.1:{free_port()}"
    tls: edge
""")
    result = run_cli("run", "--config", str(config))
    assert result.returncode not in (0, None)
    lines = [line for line in result.stderr.splitlines() if "cannot listen" in line]
    assert len(lines) == 1, result.stderr
    assert f'tls profile "edge": certFile {certs.server.cert} / keyFile {bad_key} could not ' \
           "be loaded" in lines[0]
    assert "Traceback" not in result.stderr
