"""ACL users and passwords against a real redis-server (requirepass for the default user,
users made with ACL SETUSER).

Right credentials work, written in the file or given as secret references through both
providers; a wrong password gets quick error replies naming the fix and never shows the
password anywhere; an ACL user limited to `~cachecloak:<name>:*` is enough, which is what
the key prefix is for.
"""

from __future__ import annotations

import time

import pytest

from tests.servers import RawClient, start_proxy, start_redis
from tests.upstream import ENC, HASH, cache_yaml

DEFAULT_PW = "default-Pw-Uq73"
APP_PW = "app-Pw-7Kq2-Zz"  # distinctive, so a leak into a log or reply is found
WRONG_PW = "wrong-Pw-9Xv4-Yy"
# What the proxy needs: strings, keys, SCAN/UNLINK (FLUSHDB, DBSIZE), SELECT, CLIENT SETNAME.
SCOPED = ["resetchannels", "-@all", "+@read", "+@write", "+@keyspace", "+@connection",
          "-@dangerous"]


@pytest.fixture(scope="module")
def acl_redis():
    server = start_redis("--requirepass", DEFAULT_PW)
    admin = server.client(password=DEFAULT_PW, socket_timeout=5)
    admin.execute_command("ACL", "SETUSER", "app", "on", f">{APP_PW}", "resetkeys",
                          "~cachecloak:app:*", *SCOPED)
    admin.execute_command("ACL", "SETUSER", "elsewhere", "on", f">{APP_PW}", "resetkeys",
                          "~cachecloak:other:*", *SCOPED)
    yield server, admin
    admin.close()
    server.stop()


@pytest.fixture
def redis_admin(acl_redis):
    server, admin = acl_redis
    admin.flushall()
    yield server, admin
    admin.flushall()


@pytest.fixture
def proxies():
    started = []

    def start(config_text: str, *args: str):
        proxy = start_proxy(config_text, *args)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def auth_yaml(port: int, *, username: str | None, password: str | None, **kwargs) -> str:
    extra = "      connectTimeout: 1s\n"
    if username is not None:
        extra += f'      username: "{username}"\n'
    if password is not None:
        extra += f'      password: "{password}"\n'
    return cache_yaml(f"127.0.0.1:{port}", redis_extra=extra, **kwargs)


def exercise(proxy) -> None:
    """Strings, expiry, DBSIZE and FLUSHDB (SCAN + UNLINK) through the proxy."""
    with RawClient(proxy.port) as c:
        assert c.call("SET", "user:1", "Ada") == b"+OK\r\n"
        assert c.call("GET", "user:1") == b"$3\r\nAda\r\n"
        assert c.call("SET", "user:2", "Bob", "EX", "100") == b"+OK\r\n"
        assert c.call("TTL", "user:2") == b":100\r\n"
        assert c.call("DBSIZE") == b":2\r\n"
        assert c.call("DEL", "user:1") == b":1\r\n"
        assert c.call("FLUSHDB") == b"+OK\r\n"
        assert c.call("DBSIZE") == b":0\r\n"
        assert c.call("SET", "kept", "1") == b"+OK\r\n"


def assert_no_secret(proxy, *replies: bytes) -> None:
    for text in (proxy.log(), *(r.decode(errors="replace") for r in replies)):
        for secret in (APP_PW, WRONG_PW, DEFAULT_PW):
            assert secret not in text


def test_acl_user_scoped_to_the_cache_prefix_works(redis_admin, proxies):
    server, admin = redis_admin
    proxy = proxies(auth_yaml(server.port, username="app", password=APP_PW))
    exercise(proxy)
    assert [k.startswith(b"cachecloak:app:0:") for k in admin.scan_iter()] == [True]
    assert_no_secret(proxy)
    # The ACL really is that narrow: the same user cannot touch other keys.
    scoped = server.client(username="app", password=APP_PW, socket_timeout=5)
    try:
        import redis

        with pytest.raises(redis.exceptions.NoPermissionError):
            scoped.set("not-cachecloak", "x")
    finally:
        scoped.close()


def test_acl_user_scoped_to_another_prefix_is_refused(redis_admin, proxies):
    server, _ = redis_admin
    proxy = proxies(auth_yaml(server.port, username="elsewhere", password=APP_PW))
    with RawClient(proxy.port) as c:
        reply = c.call("SET", "k", "v")
    assert reply.startswith(b"-NOPERM"), reply


def test_wrong_password_is_named_quickly_and_never_shown(redis_admin, proxies):
    server, _ = redis_admin
    proxy = proxies(auth_yaml(server.port, username="app", password=WRONG_PW),
                    "--log-level", "debug")
    replies = []
    with RawClient(proxy.port, timeout=10) as c:
        for command in (("SET", "k", "v"), ("GET", "k")):
            started = time.monotonic()
            replies.append(c.call(*command))
            assert time.monotonic() - started < 3
    for reply in replies:
        assert reply.startswith(b'-ERR cachecloak: Redis for cache "app" at 127.0.0.1:'), reply
        assert (b"Redis refused AUTH (WRONGPASS); check redis.username and redis.password"
                in reply), reply
        assert b"may or may not have been applied" not in reply  # nothing was sent
    assert "Redis refused AUTH (WRONGPASS); check redis.username and redis.password" in proxy.log()
    assert_no_secret(proxy, *replies)


def test_missing_password_says_one_is_required(redis_admin, proxies):
    server, _ = redis_admin
    proxy = proxies(auth_yaml(server.port, username=None, password=None))
    with RawClient(proxy.port) as c:
        reply = c.call("GET", "k")
    assert b"(NOAUTH); Redis requires a password: set redis.password" in reply, reply


def test_password_only_authenticates_the_default_user(redis_admin, proxies):
    server, admin = redis_admin
    proxy = proxies(auth_yaml(server.port, username=None, password=DEFAULT_PW))
    exercise(proxy)
    assert len(admin.keys("cachecloak:app:0:*")) == 1
    assert_no_secret(proxy)


@pytest.mark.parametrize("provider", ["secretfile", "dir"])
def test_credentials_and_keys_as_secret_references(redis_admin, proxies, tmp_path, provider):
    server, admin = redis_admin
    if provider == "secretfile":
        path = tmp_path / "secrets.yaml"
        path.write_text(f"vault:\n  redis_user: app\n  redis_password: \"{APP_PW}\"\n"
                        f"  enc: \"{ENC}\"\n  hash: \"{HASH}\"\n")
        url = f"secretfile://{path}"
    else:
        (tmp_path / "vault").mkdir()
        (tmp_path / "vault" / "redis_password").write_text(APP_PW + "\n")  # Kubernetes style
        (tmp_path / "vault.redis_user").write_text("app\n")  # Docker secrets style
        (tmp_path / "vault" / "enc").write_text(ENC)
        (tmp_path / "vault" / "hash").write_text(HASH + "\n")
        url = f"dir://{tmp_path}"
    config = auth_yaml(server.port, username="<vault.redis_user>",
                       password="<vault.redis_password>", enc="<vault.enc>",
                       hashing="<vault.hash>")
    assert APP_PW not in config
    proxy = proxies(config, "--secret-provider", url)
    exercise(proxy)
    assert [k.startswith(b"cachecloak:app:0:") for k in admin.scan_iter()] == [True]
    assert_no_secret(proxy)
    # The keys came from the provider: what was stored opens with the same keys written
    # out in the file.
    direct = proxies(auth_yaml(server.port, username="app", password=APP_PW))
    with RawClient(direct.port) as c:
        assert c.call("GET", "kept") == b"$1\r\n1\r\n"
