"""Logs and the figures operators read: --log-format, the nonce-limit warning, the
cachecloak section of INFO, and that no key, value or secret ever reaches the log.

Real proxy processes (their stderr is the log) in front of a real redis-server; INFO is
read with redis-py and compared with /metrics parsed by prometheus_client's parser.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid

import pytest

from proxy.backends.inprocess import LocalBackend
from proxy.cache import NONCE_LIMIT, Cache
from proxy.config import ConfigError, load_config
from proxy.crypto import KeyHasher, ValueSealer
from proxy.crypto.keys import derive_key_id
from tests.proxyproc import start_proxy_listeners, wait_until
from tests.servers import RawClient, free_port, start_redis
from tests.test_admin import scrape, value

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
NONCE_WARNING = "of the 2^32 random-nonce limit of NIST SP 800-38D"
UPSTREAM_PASSWORD = f"upstream-pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def redis_server():
    server = start_redis("--requirepass", UPSTREAM_PASSWORD)
    yield server
    server.stop()


def json_entries(log: str) -> list[dict]:
    """Every line of a --log-format json log, parsed; fails on a line that is not JSON."""
    entries = []
    for line in log.splitlines():
        entry = json.loads(line)  # raises on anything that is not one JSON object
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def local_config(port: int, *, enc: str | None = None, share: str | None = None,
                 admin_port: int | None = None) -> str:
    text = ""
    if admin_port is not None:
        text += f'admin:\n  address: "127.0.0.1:{admin_port}"\n'
    text += "caches:\n  - name: small\n    type: local\n"
    if enc is not None:
        text += f'    encryption:\n      keys:\n        current: "{enc}"\n'
        if share is not None:
            text += f"      nonceWarningShare: {share}\n"
    text += f'listeners:\n  - address: "127.0.0.1:{port}"\n    cache: small\n'
    return text


# -- --log-format ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["flag", "env"])
def test_json_logs_are_one_object_per_line(how):
    port = free_port()
    args, env = (("--log-format", "json"), None) if how == "flag" else (
        (), {"CACHECLOAK_LOG_FORMAT": "json"})
    proxy = start_proxy_listeners(local_config(port), [port], "--log-level", "debug", *args,
                                  env=env)
    try:
        with RawClient(port) as c:
            assert c.call("SET", "a", "b") == b"+OK\r\n"
            c.send_raw(b"*1\r\n$x\r\n")  # malformed: logged, connection closed
            c.read_until_closed()
    finally:
        assert proxy.stop() == 0, proxy.log()
    entries = json_entries(proxy.log())
    for entry in entries:
        assert TS_RE.match(entry["ts"]), entry
        assert entry["level"] in LEVELS, entry
        assert isinstance(entry["logger"], str) and entry["logger"].startswith("cachecloak")
        assert isinstance(entry["msg"], str) and entry["msg"]
    messages = [e["msg"] for e in entries]
    assert any(m.startswith(f"listening on 127.0.0.1:{port} for cache small") for m in messages)
    assert any("sent malformed input" in m for m in messages), messages
    assert messages[-1] == "stopped"


def test_text_logs_are_unchanged():
    port = free_port()
    proxy = start_proxy_listeners(local_config(port), [port])
    assert proxy.stop() == 0
    lines = proxy.log().splitlines()
    assert lines and all(TEXT_LINE_RE.match(line) for line in lines), lines
    assert lines[0].endswith(f" INFO cachecloak: listening on 127.0.0.1:{port} for cache "
                             "small (in-process memory)")


def test_configuration_errors_are_json_too(tmp_path):
    from tests.proxyproc import run_cli

    cfg = tmp_path / "cachecloak.yaml"
    cfg.write_text("caches:\n  - name: x\n    type: local\n    encryption:\n"
                   "      nonceWarningShare: 2\n")
    result = run_cli("run", "--config", str(cfg), "--log-format", "json")
    assert result.returncode == 2, result.stderr
    (entry,) = json_entries(result.stderr)
    assert entry["level"] == "ERROR"
    assert "caches[0].encryption.nonceWarningShare: must be greater than 0 and at most 1" \
        in entry["msg"]

    bad = run_cli("run", "--log-format", "xml")
    assert bad.returncode == 2
    assert "--log-format: invalid log format" in bad.stderr
    bad = run_cli("run", env={"CACHECLOAK_LOG_FORMAT": "yaml"})
    assert bad.returncode == 2
    assert "CACHECLOAK_LOG_FORMAT" in bad.stderr


# -- nonce-limit warning ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("0.25", 0.25), ("1", 1.0), ('"0.1"', 0.1), ("1.0e-9", 1e-9), ("1e-9", 1e-9)])
def test_nonce_warning_share_is_read(tmp_path, text, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(local_config(6379, enc="3f" * 32, share=text))
    assert load_config(str(cfg)).caches["small"].nonce_warning_share == pytest.approx(expected)


def test_nonce_warning_share_defaults_to_half(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(local_config(6379, enc="3f" * 32))
    assert load_config(str(cfg)).caches["small"].nonce_warning_share == 0.5


@pytest.mark.parametrize("text", ["0", "1.5", "-0.1", "true", "half", ".nan"])
def test_nonce_warning_share_errors_name_the_field(tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(local_config(6379, enc="3f" * 32, share=text))
    with pytest.raises(ConfigError) as info:
        load_config(str(cfg))
    assert str(info.value).startswith("caches[0].encryption.nonceWarningShare: must ")
    assert "at most 1" in str(info.value)


def _cache(share: float, key: bytes) -> Cache:
    return Cache("c", hasher=KeyHasher("c", None, b"", True, 16),
                 sealer=ValueSealer(key), on_decrypt_error="miss", databases=16,
                 backend=LocalBackend(None), nonce_warning_share=share)


def test_nonce_warning_once_per_threshold(caplog):
    key = secrets.token_bytes(32)
    cache = _cache(0.5, key)
    key_id = derive_key_id(key).hex()
    with caplog.at_level(logging.WARNING, logger="cachecloak.cache"):
        cache.seal(0, b"k", b"v")
        cache.check_nonce_limit()
        assert caplog.records == []
        cache.sealer.encryptions = NONCE_LIMIT // 2  # exactly half: not passed yet
        cache.check_nonce_limit()
        assert caplog.records == []
        cache.sealer.encryptions += 1
        cache.check_nonce_limit()
        cache.check_nonce_limit()
        cache.sealer.encryptions += 1000
        cache.check_nonce_limit()
        (warning,) = caplog.records
        assert warning.levelno == logging.WARNING
        assert warning.getMessage() == (
            f"cache c: {NONCE_LIMIT // 2 + 1} encryptions under key id {key_id} (counted by "
            "this process since it started) have passed 50% of the 2^32 random-nonce limit "
            "of NIST SP 800-38D; rotate the encryption key (see README Key rotation)")
        assert (warning.cache, warning.key_id) == ("c", key_id)
        caplog.clear()

        cache.sealer.encryptions = NONCE_LIMIT + 1
        cache.check_nonce_limit()
        cache.check_nonce_limit()
        (limit,) = caplog.records
        assert limit.levelno == logging.ERROR
        assert "have passed the 2^32 random-nonce limit" in limit.getMessage()
        caplog.clear()

        # A sealer rebuilt for the same key (a reload) does not warn again; a new key does.
        cache.sealer = ValueSealer(key)
        cache.sealer.encryptions = NONCE_LIMIT + 5
        cache.check_nonce_limit()
        assert caplog.records == []
        cache.sealer = ValueSealer(secrets.token_bytes(32))
        cache.sealer.encryptions = NONCE_LIMIT + 5  # both thresholds at once: one line
        cache.check_nonce_limit()
        (fresh,) = caplog.records
        assert "have passed the 2^32 random-nonce limit" in fresh.getMessage()


def test_nonce_warning_from_a_running_proxy():
    """A tiny share (1e-9 of 2^32 is 4.3 encryptions) warns once, with JSON fields."""
    port = free_port()
    enc = secrets.token_hex(32)
    key_id = derive_key_id(bytes.fromhex(enc)).hex()
    proxy = start_proxy_listeners(local_config(port, enc=enc, share="1.0e-9"), [port],
                                  "--log-format", "json")
    try:
        with RawClient(port) as c:
            for i in range(3):
                assert c.call("SET", f"k{i}", "v") == b"+OK\r\n"
            for i in range(3):
                assert c.call("SET", f"k{i}", "w") == b"+OK\r\n"
            wait_until(lambda: NONCE_WARNING in proxy.log(), what="the nonce-limit warning")
            for i in range(20):
                assert c.call("SET", f"k{i}", "x") == b"+OK\r\n"
    finally:
        assert proxy.stop() == 0, proxy.log()  # stopping checks the counts once more
    warnings = [e for e in json_entries(proxy.log()) if NONCE_WARNING in e["msg"]]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert warning["level"] == "WARNING"
    assert warning["logger"] == "cachecloak.cache"
    assert (warning["cache"], warning["key_id"]) == ("small", key_id)
    assert warning["encryptions"] >= 5
    assert "rotate the encryption key" in warning["msg"]
    assert enc not in proxy.log()


# -- INFO cachecloak -------------------------------------------------------------------

def _redis_config(redis_port: int, port: int, enc: str, hash_key: str, *,
                  admin_port: int | None = None, password: str | None = None,
                  extra_address: int | None = None) -> str:
    addresses = f'"127.0.0.1:{redis_port}"'
    if extra_address is not None:
        addresses += f', "127.0.0.1:{extra_address}"'
    admin = f'admin:\n  address: "127.0.0.1:{admin_port}"\n' if admin_port else ""
    pw = f'\n    password: "{password}"' if password else ""
    return f"""{admin}caches:
  - name: main
    type: redis
    redis:
      addresses: [{addresses}]
      disableTLS: true
      password: "{UPSTREAM_PASSWORD}"
      poolSize: 2
    encryption:
      keys:
        current: "{enc}"
    hashing:
      keys:
        current: "{hash_key}"
listeners:
  - address: "127.0.0.1:{port}"
    cache: main{pw}
"""


def _tamper_all(redis_server) -> None:
    direct = redis_server.client(password=UPSTREAM_PASSWORD)
    try:
        for name in direct.keys("*"):
            if direct.type(name) == b"string":
                blob = bytearray(direct.get(name))
                blob[-1] ^= 0x01
                direct.set(name, bytes(blob))
    finally:
        direct.close()


def test_info_cachecloak_shows_the_metrics_figures(redis_server):
    redis_server.client(password=UPSTREAM_PASSWORD).flushall()
    port, admin_port = free_port(), free_port()
    enc, hash_key = secrets.token_hex(32), secrets.token_hex(32)
    key_id = derive_key_id(bytes.fromhex(enc)).hex()
    # A second, closed address makes the backend follow a primary (failovers counted).
    config = _redis_config(redis_server.port, port, enc, hash_key, admin_port=admin_port,
                           password="pw-info", extra_address=free_port())
    proxy = start_proxy_listeners(config, [port, admin_port])
    try:
        client = proxy.client(password="pw-info")
        with RawClient(port) as raw:
            assert raw.call("AUTH", "not-it").startswith(b"-WRONGPASS")
        for i in range(4):
            client.set(f"info:{i}", f"value-{i}")
        assert client.get("info:0") == b"value-0"
        with pytest.raises(Exception, match="does not serve"):
            client.execute_command("KEYS", "*")
        _tamper_all(redis_server)
        assert client.get("info:1") is None  # a decrypt failure, read as a miss

        info = client.info("cachecloak")
        samples = scrape(admin_port)
        listener = f"127.0.0.1:{port}"
        assert info["listener_connected_clients"] == 1
        assert info["listener_connected_clients"] == value(
            samples, "cachecloak_client_connections", listener=listener)
        assert info["listener_bytes_received"] > 100
        # INFO's own request arrived before /metrics was read; its reply was sent after.
        assert info["listener_bytes_received"] == value(
            samples, "cachecloak_bytes_received_total", listener=listener)
        assert 0 < info["listener_bytes_sent"] < value(samples, "cachecloak_bytes_sent_total",
                                                       listener=listener)
        # The per-command counts of /metrics, summed; INFO does not count itself yet.
        outcomes = {outcome: sum(v for (name, labels), v in samples.items()
                                 if name == "cachecloak_commands_total"
                                 and ("outcome", outcome) in labels)
                    for outcome in ("ok", "error", "refused")}
        assert (info["commands_ok"], info["commands_error"], info["commands_refused"]) == \
            (outcomes["ok"] - 1, outcomes["error"], outcomes["refused"])
        assert info["commands_processed"] == sum(outcomes.values()) - 1
        # The workload: SET x4, GET x2 ok; AUTH not-it an error; KEYS refused (and redis-py
        # adds its own connection set-up: HELLO, CLIENT SETINFO, a CLIENT it may be refused).
        assert info["commands_ok"] >= 6
        assert info["commands_error"] == 1
        assert info["commands_refused"] >= 1
        assert info["auth_failures"] == 1 == value(samples, "cachecloak_auth_failures_total")
        assert info["decrypt_failures"] == 1
        assert info["decrypt_failures_by_reason"] == {"authentication-failed": 1}
        assert value(samples, "cachecloak_decrypt_failures_total", cache="main",
                     reason="authentication-failed") == 1
        assert info["encryptions_by_key_id"] == {key_id: 4}
        assert value(samples, "cachecloak_encryptions_total", cache="main", key_id=key_id) == 4
        assert info["encryptions_under_current_key"] == 4
        assert info["nonce_warning_share"] == 0.5
        upstream = info["upstream_connections"]
        assert set(upstream) == {"down", "connecting", "handshake", "ready"}
        assert upstream["ready"] >= 1
        assert upstream["ready"] == value(samples, "cachecloak_upstream_connections",
                                          cache="main", state="ready")
        assert info["upstream_primary_changes"] == 0
        assert ("cachecloak_upstream_failovers_total", (("cache", "main"),)) in samples
        assert value(samples, "cachecloak_upstream_failovers_total", cache="main") == 0
        client.close()
    finally:
        assert proxy.stop() == 0, proxy.log()


def test_info_without_admin_has_the_always_counted_figures(redis_server):
    port = free_port()
    enc, hash_key = secrets.token_hex(32), secrets.token_hex(32)
    proxy = start_proxy_listeners(_redis_config(redis_server.port, port, enc, hash_key),
                                  [port])
    try:
        client = proxy.client()
        client.set("x", "y")
        info = client.info("cachecloak")
        assert info["listener_connected_clients"] == 1
        assert info["listener_bytes_received"] > 0
        assert info["encryptions_by_key_id"] == {derive_key_id(bytes.fromhex(enc)).hex(): 1}
        assert info["upstream_connections"]["ready"] >= 1
        assert "decrypt_failures_by_reason" not in info  # none yet
        # Per-command counts are recorded only with an admin: section.
        assert not any(name.startswith("commands_") for name in info)
        client.close()
    finally:
        assert proxy.stop() == 0, proxy.log()


# -- no secret in the log --------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logs_hold_no_key_value_or_secret(redis_server, log_format):
    """Traffic, wrong passwords, a wrong upstream password, decrypt failures, refused
    and unknown commands with key-like arguments, malformed input: the debug log of all
    of it holds none of the keys, values, passwords or key material."""
    redis_server.client(password=UPSTREAM_PASSWORD).flushall()
    tag = uuid.uuid4().hex
    enc, old, hash_key = (secrets.token_hex(32) for _ in range(3))
    listener_pw = f"listener-pw-{tag}"
    wrong_upstream_pw = f"wrong-upstream-pw-{tag}"
    port, broken_port, admin_port = free_port(), free_port(), free_port()
    config = f"""admin:
  address: "127.0.0.1:{admin_port}"
caches:
  - name: main
    type: redis
    redis:
      addresses: ["127.0.0.1:{redis_server.port}"]
      disableTLS: true
      password: "{UPSTREAM_PASSWORD}"
    encryption:
      keys:
        current: "{enc}"
        old: ["{old}"]
    hashing:
      keys:
        current: "{hash_key}"
  - name: broken
    type: redis
    redis:
      addresses: ["127.0.0.1:{redis_server.port}"]
      disableTLS: true
      password: "{wrong_upstream_pw}"
      connectTimeout: 1s
      commandTimeout: 1s
    encryption:
      keys:
        current: "{old}"
    hashing:
      keys:
        current: "{hash_key}"
listeners:
  - address: "127.0.0.1:{port}"
    cache: main
    password: "{listener_pw}"
  - address: "127.0.0.1:{broken_port}"
    cache: broken
"""
    keys = [f"secret-key-{tag}-{i}" for i in range(5)]
    values = [f"secret-value-{tag}-{i}" for i in range(5)]
    field, member, element = (f"secret-{kind}-{tag}" for kind in ("field", "member", "elem"))
    guesses = [f"wrong-guess-{tag}-{i}" for i in range(2)]
    pattern, script = f"secret-pattern-{tag}*", f"return 'secret-script-{tag}'"
    unknown = [f"secret-unknown-{tag}", f"secret-arg-{tag}"]
    proxy = start_proxy_listeners(config, [port, broken_port, admin_port],
                                  "--log-level", "debug", "--log-format", log_format)
    try:
        with RawClient(port) as c:
            assert c.call("GET", keys[0]).startswith(b"-NOAUTH")
            assert c.call("AUTH", guesses[0]).startswith(b"-WRONGPASS")
            assert c.call("HELLO", "3", "AUTH", "default", guesses[1]).startswith(b"-WRONGPASS")
            assert c.call("AUTH", listener_pw) == b"+OK\r\n"
            for key, val in zip(keys, values, strict=True):
                assert c.call("SET", key, val) == b"+OK\r\n"
            assert c.call("HSET", keys[1] + "h", field, values[1]) == b":1\r\n"
            assert c.call("SADD", keys[2] + "s", member) == b":1\r\n"
            assert c.call("RPUSH", keys[3] + "l", element) == b":1\r\n"
            assert c.call("INCR", keys[4]).startswith(b"-ERR value is not an integer")
            assert c.call("KEYS", pattern).startswith(b"-ERR cachecloak does not serve")
            assert c.call("EVAL", script, "1", keys[0]).startswith(b"-ERR")
            assert c.call(*unknown, keys[0]).startswith(b"-ERR unknown command")
            assert c.call("GET", keys[0]) == f"${len(values[0])}\r\n{values[0]}\r\n".encode()
            direct = redis_server.client(password=UPSTREAM_PASSWORD)
            stored = [name.decode() for name in direct.keys("*")]
            direct.close()
            _tamper_all(redis_server)
            for key in keys:
                assert c.call("GET", key) == b"$-1\r\n"  # decrypt failures: misses
            # Malformed input quoting a key: logged as malformed, the connection closed.
            c.send_raw(f"*2\r\n$3\r\nGET\r\n${keys[0]}\r\n".encode())
            c.read_until_closed()
        with RawClient(broken_port) as c:
            reply = c.call("GET", keys[0])  # Redis refuses this cache's upstream password
            assert reply.startswith(b"-"), reply
            assert c.call("SET", keys[1], values[1]).startswith(b"-")
    finally:
        assert proxy.stop() == 0, proxy.log()
    log = proxy.log()
    if log_format == "json":
        # The messages as written, and the log as a collector stores it (JSON-escaped).
        messages = "\n".join(entry["msg"] for entry in json_entries(log))
        log += "\n" + messages
    else:
        assert all(TEXT_LINE_RE.match(line) for line in log.splitlines()), log
        messages = log
    # The events were logged (so the test looks at a log that had the chance to leak) ...
    assert "failed to decrypt" in messages
    assert "malformed input" in messages
    assert 'upstream cache "broken"' in messages
    assert "refused AUTH (WRONGPASS)" in messages
    # ... and none of them leaked anything.
    forbidden = [enc, old, hash_key, listener_pw, UPSTREAM_PASSWORD, wrong_upstream_pw,
                 *keys, *values, field, member, element, *guesses, pattern, script,
                 *unknown, *stored, tag]
    for secret in forbidden:
        for form in (secret, secret.lower(), secret.upper()):
            assert form not in log, f"{secret!r} appears in the {log_format} log"
    # Key material in other spellings: raw bytes as latin-1 text would be unreadable, but
    # the hex of the derived AES or HMAC keys must not show up either.
    assert not re.search(r"[0-9a-fA-F]{64}", log)

