"""TLS from cachecloak to a real TLS-only redis-server, with certificates made per module.

Success (and what Redis holds, read over TLS with redis-py), mutual TLS, and each way a
handshake goes wrong: a CA that did not sign the server certificate, a host-name
mismatch (fixed with serverName), no common TLS version, no client certificate, and a
caFile that is not a certificate (refused at startup).  Failures must come back quickly
as error replies that name the problem and the setting to fix, be counted
(`upstream_connect_failures:...tls=N` in INFO, the same counter as
`cachecloak_upstream_connect_failures_total{reason="tls"}`), and be logged once per
connection and reason, not once per retry.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.certs import TestCA
from tests.servers import RawClient, free_port, start_proxy
from tests.upstream import cache_yaml, run_cli, start_tls_redis, tls_client, wait_until

# A failed handshake must be answered well within this (connectTimeout is 1s below).
FAST = 3.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca = TestCA(base / "ca")
    other = TestCA(base / "other", name="unrelated CA")
    return {
        "ca": ca,
        "other": other,
        "server": ca.issue("server"),  # 127.0.0.1 and localhost
        "internal": ca.issue("internal", hosts=("redis.internal",)),
        "client": ca.issue("client", hosts=("cachecloak-client",), client=True),
        "base": base,
    }


@pytest.fixture(scope="module")
def tls_redis(pki):
    server = start_tls_redis(pki["ca"], pki["server"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_redis(pki):
    server = start_tls_redis(pki["ca"], pki["server"], auth_clients="yes")
    yield server
    server.stop()


@pytest.fixture
def proxies():
    started = []

    def start(config_text: str):
        proxy = start_proxy(config_text)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def profile(ca_file, *, cert=None, extra: str = "") -> str:
    body = f"  p:\n    caFile: {ca_file}\n"
    if cert is not None:
        body += f"    certFile: {cert.cert}\n    keyFile: {cert.key}\n"
    return body + extra


def tls_config(server, profile_body: str) -> str:
    return cache_yaml(f"127.0.0.1:{server.port}", tls="p", profiles=profile_body,
                      redis_extra="      connectTimeout: 1s\n")


def first_reply(proxy, *command: str) -> tuple[bytes, float]:
    with RawClient(proxy.port, timeout=10) as c:
        started = time.monotonic()
        reply = c.call(*command)
        return reply, time.monotonic() - started


def assert_refused(proxy, *fragments: str) -> str:
    """The command gets one error reply quickly, naming every fragment; the log too."""
    reply, took = first_reply(proxy, "SET", "k", "v")
    assert took < FAST, (took, reply)
    text = reply.decode()
    assert text.startswith('-ERR cachecloak: Redis for cache "app" at 127.0.0.1:'), text
    assert text.endswith("\r\n") and "\r\n" not in text[:-2], text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    # Still quick, still the same reason, on the next command (no hang while backing off).
    reply, took = first_reply(proxy, "GET", "k")
    assert took < FAST and reply.startswith(b"-ERR cachecloak"), reply
    log = proxy.log()
    for fragment in fragments:
        assert fragment in log, (fragment, log)
    assert_counted_and_logged_once(proxy)
    return text


def tls_failures(proxy) -> int:
    with RawClient(proxy.port, timeout=10) as c:
        info = c.call("INFO", "cachecloak").decode()
    match = re.search(r"^upstream_connect_failures:(\S+)\r$", info, re.M)
    assert match, info
    return int(dict(p.split("=") for p in match.group(1).split(","))["tls"])


def assert_counted_and_logged_once(proxy) -> None:
    """Each failed handshake is counted; the log says it once per connection (and once
    for mode auto's probe), however many times the background retries fail."""
    wait_until(lambda: tls_failures(proxy) >= 6, timeout=15, interval=0.1,
               what="several counted TLS failures")
    lines = [line for line in proxy.log().splitlines() if "TLS handshake failed" in line]
    assert lines and all("WARNING" in line for line in lines), lines
    # The probe of mode auto, then each of the poolSize (2) connections.
    assert len(lines) <= 3, lines


def test_set_get_over_tls_and_redis_holds_only_hashed_names_and_ciphertext(
        pki, tls_redis, proxies):
    proxy = proxies(tls_config(tls_redis, profile(pki["ca"].cert_path)))
    value = b'{"name": "Ada", "card": "4111-1111"}'
    with RawClient(proxy.port) as c:
        assert c.call("SET", "user:42", value) == b"+OK\r\n"
        assert c.call("GET", "user:42") == b"$%d\r\n%b\r\n" % (len(value), value)
        assert c.call("INFO", "cachecloak").count(b"upstream_ready:1") == 1
    direct = tls_client(tls_redis, pki["ca"])
    try:
        keys = list(direct.scan_iter(count=100))
        assert len(keys) == 1, keys
        stored = keys[0]
        assert stored.startswith(b"cachecloak:app:0:") and b"user" not in stored, stored
        assert len(stored) == len(b"cachecloak:app:0:") + 32
        blob = direct.get(stored)
        assert blob[0] == 1 and len(blob) == len(value) + 33
        assert b"Ada" not in blob and b"4111" not in blob
        names = [c.get("name") for c in direct.client_list()]
        assert "cachecloak" in names  # the proxy's own connection arrived over TLS
    finally:
        direct.flushdb()
        direct.close()


def test_mutual_tls_with_client_certificate(pki, mtls_redis, proxies):
    proxy = proxies(tls_config(mtls_redis, profile(pki["ca"].cert_path, cert=pki["client"])))
    with RawClient(proxy.port) as c:
        assert c.call("SET", "m", "tls") == b"+OK\r\n"
        assert c.call("GET", "m") == b"$3\r\ntls\r\n"
        assert c.call("DEL", "m") == b":1\r\n"
    assert "WARNING" not in proxy.log()


def test_mutual_tls_without_client_certificate_is_named(pki, mtls_redis, proxies):
    proxy = proxies(tls_config(mtls_redis, profile(pki["ca"].cert_path)))
    text = assert_refused(proxy, "TLS handshake failed", "client certificate",
                          'certFile and keyFile in the tls profile "p"')
    assert "may or may not have been applied" not in text  # it was never sent


def test_wrong_ca_names_the_verification_problem_and_ca_file(pki, tls_redis, proxies):
    other_ca = pki["other"].cert_path
    proxy = proxies(tls_config(tls_redis, profile(other_ca)))
    text = assert_refused(proxy, "TLS handshake failed", f"check caFile {other_ca}",
                          'tls profile "p"')
    assert "certificate" in text.split("TLS handshake failed:", 1)[1].split(";")[0]


def test_host_name_mismatch_suggests_server_name_which_then_works(pki, proxies):
    server = start_tls_redis(pki["ca"], pki["internal"])  # certificate for redis.internal only
    try:
        proxy = proxies(tls_config(server, profile(pki["ca"].cert_path)))
        assert_refused(proxy, "TLS handshake failed", "127.0.0.1", "set serverName")
        proxy.stop()
        fixed = proxies(tls_config(server, profile(pki["ca"].cert_path,
                                                   extra="    serverName: redis.internal\n")))
        with RawClient(fixed.port) as c:
            assert c.call("SET", "h", "ok") == b"+OK\r\n"
            assert c.call("GET", "h") == b"$2\r\nok\r\n"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls12_redis(pki):
    server = start_tls_redis(pki["ca"], pki["server"], "--tls-protocols", "TLSv1.2")
    yield server
    server.stop()


def test_server_limited_to_tls_1_2_against_min_version_1_3(pki, tls12_redis, proxies):
    proxy = proxies(tls_config(tls12_redis, profile(pki["ca"].cert_path,
                                                    extra='    minVersion: "1.3"\n')))
    assert_refused(proxy, "TLS handshake failed", "share no TLS version", "minVersion")


def test_server_limited_to_tls_1_2_with_the_default_minimum(pki, tls12_redis, proxies):
    proxy = proxies(tls_config(tls12_redis, profile(pki["ca"].cert_path)))
    with RawClient(proxy.port) as c:
        assert c.call("SET", "v", "1.2") == b"+OK\r\n"
        assert c.call("GET", "v") == b"$3\r\n1.2\r\n"


@pytest.mark.parametrize("field", ["caFile", "certFile"])
def test_a_file_that_is_not_a_certificate_stops_startup_at_once(pki, field, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not a certificate\n")
    if field == "caFile":
        body = f"  p:\n    caFile: {junk}\n"
    else:
        body = (f"  p:\n    caFile: {pki['ca'].cert_path}\n    certFile: {junk}\n"
                f"    keyFile: {pki['client'].key}\n")
    config = tmp_path / "cachecloak.yaml"
    config.write_text(cache_yaml("127.0.0.1:6379", tls="p", profiles=body))
    started = time.monotonic()
    result = run_cli("run", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}",
                     timeout=20)
    assert time.monotonic() - started < 10
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert 'tls profile "p"' in lines[0] and str(junk) in lines[0], lines[0]
    assert field in lines[0] and "could not be loaded" in lines[0], lines[0]
