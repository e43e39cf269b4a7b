"""`cachecloak check` against real redis-server processes (plain, TLS with an ACL user,
replica, Sentinel, single-node Cluster) and each of its four failure classes.

Healthy configurations exit 0 with one `ok` line per address; the probe is written,
read and deleted through the hashing and encryption path (watched with MONITOR) and is
gone afterwards.  A refused connection, a wrong password, a failed TLS handshake and an
invalid key each produce their message and a non-zero exit.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.certs import TestCA
from tests.servers import RawClient, free_port, start_redis
from tests.upstream import (
    cache_yaml,
    run_cli,
    start_sentinel,
    start_tls_redis,
    wait_until,
)

APP_PW = "check-Pw-3Nf8-Qq"
WRONG_PW = "check-wrong-Pw-5Tt"
SCOPED = ["resetchannels", "-@all", "+@read", "+@write", "+@keyspace", "+@connection",
          "-@dangerous"]
CONNECT_FIX = "check the address and port, that Redis is running, and firewalls"


def check(tmp_path, config_text: str, *args: str):
    path = tmp_path / "cachecloak.yaml"
    path.write_text(config_text)
    started = time.monotonic()
    result = run_cli("check", "--config", str(path), *args, timeout=30)
    assert time.monotonic() - started < 20
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    for secret in (APP_PW, WRONG_PW):
        assert secret not in result.stdout + result.stderr
    return result


def lines(result) -> list[str]:
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca = TestCA(base / "ca")
    return {"ca": ca, "other": TestCA(base / "other", name="unrelated CA"),
            "server": ca.issue("server")}


@pytest.fixture(scope="module")
def tls_acl_redis(pki):
    server = start_tls_redis(pki["ca"], pki["server"], "--requirepass", "default-Pw")
    # Set up over a plain connection would need a second port: use redis-py over TLS.
    from tests.upstream import tls_client

    admin = tls_client(server, pki["ca"], password="default-Pw")
    admin.execute_command("ACL", "SETUSER", "app", "on", f">{APP_PW}", "resetkeys",
                          "~cachecloak:app:*", *SCOPED)
    yield server, admin
    admin.close()
    server.stop()


class Monitor:
    """MONITOR on a raw connection: what the check sent to Redis, read with a deadline."""

    def __init__(self, port: int):
        self.client = RawClient(port, timeout=5)
        assert self.client.call("MONITOR") == b"+OK\r\n"

    def commands_until_del(self, limit: int = 100) -> list[bytes]:
        seen: list[bytes] = []
        for _ in range(limit):  # each read is bounded by the socket timeout
            seen.append(self.client.read_reply())
            if b'"DEL"' in seen[-1]:
                break
        else:
            raise AssertionError(f"no DEL among {limit} monitored commands: {seen!r}")
        self.client.close()
        return seen


def test_healthy_plain_redis_probe_is_hashed_sealed_and_gone(redis_server, tmp_path):
    redis_server.client().flushall()
    monitor = Monitor(redis_server.port)
    result = check(tmp_path, cache_yaml(redis_server.address))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert lines(result) == [
        f'ok    cache "app" {redis_server.address}: primary, plain TCP, no authentication '
        "(default user), probe write/read/delete ok"]
    sent = b"".join(monitor.commands_until_del())
    # MONITOR quotes arguments and escapes binary bytes and quotes (\xNN, \").
    written = re.search(rb'"SET" "(cachecloak:app:0:[A-Za-z0-9_-]{32})" "((?:[^"\\]|\\.)+)" '
                        rb'"PX" "60000"', sent)
    assert written, sent
    assert b"cachecloak-check" not in sent and b"cachecloak check" not in sent  # hashed, sealed
    assert b'"GET" "%b"' % written.group(1) in sent and b'"DEL" "%b"' % written.group(1) in sent
    assert redis_server.client().dbsize() == 0


def test_healthy_tls_with_acl_user_and_a_local_cache(pki, tls_acl_redis, tmp_path):
    server, admin = tls_acl_redis
    admin.flushall()
    profile = f"  p:\n    caFile: {pki['ca'].cert_path}\n"
    local = "  - name: small\n    type: local\n"
    listeners = ("listeners:\n  - address: 127.0.0.1:0\n    cache: app\n"
                 "  - address: 127.0.0.1:0\n    cache: small\n")
    config = listeners + cache_yaml(f"127.0.0.1:{server.port}", tls="p", profiles=profile,
                        redis_extra=f'      username: app\n      password: "{APP_PW}"\n',
                        extra_caches=local)
    result = check(tmp_path, config)
    assert result.returncode == 0, (result.stdout, result.stderr)
    # ROLE is not allowed to this ACL user: the role comes from HELLO.
    assert lines(result) == [
        f'ok    cache "app" 127.0.0.1:{server.port}: primary, TLS 1.3, authenticated as app, '
        "probe write/read/delete ok",
        'ok    cache "small": in-process memory']
    assert admin.dbsize() == 0


def test_connection_refused(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = check(tmp_path, cache_yaml(address))
    assert result.returncode == 1
    assert lines(result) == [f'FAIL  cache "app" {address}: connection refused; {CONNECT_FIX}']


def test_silent_server_is_bounded_by_command_timeout(tmp_path):
    import socket

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = check(tmp_path, cache_yaml(address, redis_extra="      commandTimeout: 300ms\n"))
    assert result.returncode == 1
    assert lines(result) == [f'FAIL  cache "app" {address}: no reply within commandTimeout '
                             "0.3s; check that the address is a Redis server and that it is "
                             "not overloaded"]


def test_authentication_failed(pki, tls_acl_redis, tmp_path):
    server, _ = tls_acl_redis
    profile = f"  p:\n    caFile: {pki['ca'].cert_path}\n"
    config = cache_yaml(f"127.0.0.1:{server.port}", tls="p", profiles=profile,
                        redis_extra=f'      username: app\n      password: "{WRONG_PW}"\n')
    result = check(tmp_path, config)
    assert result.returncode == 1
    assert lines(result) == [
        f'FAIL  cache "app" 127.0.0.1:{server.port}: authentication failed: Redis refused AUTH '
        "(WRONGPASS); check redis.username and redis.password, and that their secret "
        "references resolve to the right values"]


def test_no_password_against_requirepass(pki, tls_acl_redis, tmp_path):
    server, _ = tls_acl_redis
    profile = f"  p:\n    caFile: {pki['ca'].cert_path}\n"
    result = check(tmp_path, cache_yaml(f"127.0.0.1:{server.port}", tls="p", profiles=profile))
    assert result.returncode == 1
    assert "authentication failed: Redis requires a password (NOAUTH)" in result.stdout


def test_tls_handshake_failed(pki, tls_acl_redis, tmp_path):
    server, _ = tls_acl_redis
    other = pki["other"].cert_path
    result = check(tmp_path, cache_yaml(f"127.0.0.1:{server.port}", tls="p",
                                        profiles=f"  p:\n    caFile: {other}\n"))
    assert result.returncode == 1
    [line] = lines(result)
    assert line.startswith(f'FAIL  cache "app" 127.0.0.1:{server.port}: TLS handshake failed: '
                           "self-signed certificate in certificate chain; check caFile "
                           f'{other} in the tls profile "p"'), line


def test_plain_tcp_against_a_tls_port(tls_acl_redis, tmp_path):
    server, _ = tls_acl_redis
    result = check(tmp_path, cache_yaml(f"127.0.0.1:{server.port}"))
    assert result.returncode == 1
    assert "the server closed the connection; is this a TLS port?" in result.stdout


def test_tls_against_a_plain_port(redis_server, pki, tmp_path):
    profile = f"  p:\n    caFile: {pki['ca'].cert_path}\n"
    result = check(tmp_path, cache_yaml(redis_server.address, tls="p", profiles=profile,
                                        redis_extra="      connectTimeout: 500ms\n"))
    assert result.returncode == 1
    assert "TLS handshake failed" in result.stdout and "tls-port" in result.stdout


@pytest.mark.parametrize("section", ["encryption", "hashing"])
def test_invalid_key_is_a_configuration_error(tmp_path, section):
    bad = {"enc": "abc123"} if section == "encryption" else {"hashing": "zz" * 32}
    result = check(tmp_path, cache_yaml("127.0.0.1:6379", **bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert (f"caches[0].{section}.keys.current: must be 64 hex characters (32 bytes); "
            'generate one with "cachecloak keygen"') in result.stderr


def test_unresolvable_secret_reference_is_a_configuration_error(tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("vault:\n  other: x\n")
    config = cache_yaml("127.0.0.1:6379", redis_extra="      password: <vault.redis_pw>\n")
    result = check(tmp_path, config, "--secret-provider", f"secretfile://{secrets}")
    assert result.returncode == 2
    assert "caches[0].redis.password: secret <vault.redis_pw>" in result.stderr


def test_ca_file_that_is_not_a_certificate(tmp_path, redis_server):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    result = check(tmp_path, cache_yaml(redis_server.address, tls="p",
                                        profiles=f"  p:\n    caFile: {junk}\n"))
    assert result.returncode == 2
    assert lines(result) == [f'FAIL  cache "app": tls profile "p": caFile {junk} could not be '
                             "loaded (NO_CERTIFICATE_OR_CRL_FOUND); it must hold PEM CA "
                             "certificates"]


@pytest.fixture(scope="module")
def replica(redis_server):
    server = start_redis("--replicaof", "127.0.0.1", str(redis_server.port))
    yield server
    server.stop()


def test_replica_alone_is_not_usable_but_with_its_primary_it_is(redis_server, replica,
                                                                 tmp_path):
    result = check(tmp_path, cache_yaml(replica.address))
    assert result.returncode == 1
    assert lines(result) == [
        f'ok    cache "app" {replica.address}: replica, plain TCP, no authentication '
        "(default user), no probe (read-only; the proxy writes to the primary)",
        'FAIL  cache "app": no usable primary (every address is a replica); list the primary '
        "in addresses"]
    down = f"127.0.0.1:{free_port()}"
    result = check(tmp_path, cache_yaml([redis_server.address, replica.address, down]))
    assert result.returncode == 0, result.stdout
    out = lines(result)
    assert out[0].startswith(f'ok    cache "app" {redis_server.address}: primary, ')
    assert out[1].startswith(f'ok    cache "app" {replica.address}: replica, ')
    assert out[2] == f'FAIL  cache "app" {down}: connection refused; {CONNECT_FIX}'


def test_sentinel_mode_checks_the_primary_it_names(redis_server, tmp_path):
    sentinel = start_sentinel("mymaster", redis_server.port)
    try:
        def sentinel_yaml(name: str) -> str:
            return cache_yaml(sentinel.address, redis_extra=(
                f"      mode: sentinel\n      sentinel:\n        masterName: {name}\n"))

        result = check(tmp_path, sentinel_yaml("mymaster"))
        assert result.returncode == 0, result.stdout
        assert lines(result) == [
            f'ok    cache "app" Sentinel {sentinel.address}: Sentinel says primary "mymaster" '
            f"is {redis_server.address}: primary, plain TCP, no authentication (default user), "
            "probe write/read/delete ok"]
        result = check(tmp_path, sentinel_yaml("nosuch"))
        assert result.returncode == 1
        assert lines(result) == [
            f'FAIL  cache "app" Sentinel {sentinel.address}: the Sentinel does not monitor a '
            'primary named "nosuch"; check sentinel.masterName']
        # A Sentinel listed as a plain Redis server is named for what it is.
        result = check(tmp_path, cache_yaml(sentinel.address))
        assert result.returncode == 1
        assert "this is a Sentinel, not a Redis server; set redis.mode: sentinel" in result.stdout
    finally:
        sentinel.stop()
    assert redis_server.client().dbsize() == 0


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid port too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 <= 65535:
            return port
    raise RuntimeError("no free port below 55536")


def test_single_node_cluster(tmp_path):
    server = start_redis("--cluster-enabled", "yes", port=cluster_port())
    try:
        client = server.client(socket_timeout=5)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        wait_until(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"),
                   timeout=10, what="the one-node cluster to be ok")
        result = check(tmp_path, cache_yaml(server.address))
        assert result.returncode == 0, result.stdout
        assert lines(result) == [
            f'ok    cache "app" {server.address}: cluster primary, plain TCP, no '
            "authentication (default user), probe write/read/delete ok"]
        result = check(tmp_path, cache_yaml(server.address,
                                            redis_extra="      mode: standalone\n"))
        assert result.returncode == 1
        assert "this is a Redis Cluster node but redis.mode is standalone" in result.stdout
        assert client.dbsize() == 0
        client.close()
    finally:
        server.stop()
