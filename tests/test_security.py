"""Security properties, checked from outside: real proxy processes, a real redis-server.

Everything the proxy stored is read back directly from Redis (SCAN, GET, DUMP) and
searched for the plaintext; stored values are tampered with, moved and replaced in Redis;
keys are rotated by restarting the proxy; secret references are resolved by the real
providers.  Every proxy runs with `--log-level debug` and every log is searched for
plaintext keys, values and key material when its test ends (and once more at the end).
"""

from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

import pytest

from tests.proxyproc import run_cli, start_proxy_listeners, wait_until
from tests.servers import ProxyProcess, RawClient, free_port, info_fields, start_proxy

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning")

OVERHEAD = 33  # version 1 + key id 4 + nonce 12 + tag 16

# Every secret any test in this module used: plaintexts and key hex.  Logs must hold none.
SECRET_TEXTS: set[str] = set()
COLLECTED_LOGS: list[str] = []


def new_key() -> str:
    key = secrets.token_hex(32)
    SECRET_TEXTS.add(key)
    return key


def marker(kind: str) -> str:
    text = f"PLAINTEXT-{kind}-{uuid.uuid4().hex}"
    SECRET_TEXTS.add(text)
    return text


def assert_no_secrets(log: str) -> None:
    for text in SECRET_TEXTS:
        assert text not in log, "a plaintext or key material reached the proxy log"
        assert text.upper() not in log and text.lower() not in log


def redis_cache_yaml(redis_port: int, *, name: str = "main", enc: str | None = None,
                     old: tuple[str, ...] = (), hash_key: str | None = None,
                     extra: str = "", on_error: str | None = None) -> str:
    """A `type: redis` cache.  enc/hash_key None means that section is disabled."""
    lines = [
        "caches:",
        f"  - name: {name}",
        "    type: redis",
        "    redis:",
        f'      addresses: ["127.0.0.1:{redis_port}"]',
        "      disableTLS: true",
    ]
    if enc is None:
        lines += ["    encryption:", "      disabled: true"]
    else:
        lines += ["    encryption:", "      keys:", f'        current: "{enc}"']
        if old:
            lines.append("        old: [" + ", ".join(f'"{k}"' for k in old) + "]")
        if on_error:
            lines.append(f"      onDecryptError: {on_error}")
    if hash_key is None:
        lines += ["    hashing:", "      disabled: true"]
    else:
        lines += ["    hashing:", "      keys:", f'        current: "{hash_key}"']
    text = "\n".join(lines) + "\n"
    if extra:
        text += extra
    return text


@pytest.fixture
def upstream(redis_server):
    """The module's redis-server, emptied for this test; a redis-py client to it."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def proxies():
    """Start proxies (debug logging); at the end stop them and check their logs."""
    started: list[ProxyProcess] = []

    def start(config_text: str | None, *args: str, env: dict | None = None,
              ports: list[int] | None = None) -> ProxyProcess:
        if ports is None:
            proxy = start_proxy(config_text, "--log-level", "debug", *args, env=env)
        else:
            proxy = start_proxy_listeners(config_text, ports, "--log-level", "debug", *args,
                                          env=env)
        started.append(proxy)
        return proxy

    def stop(proxy: ProxyProcess) -> str:
        code = proxy.stop()
        log = proxy.log()
        COLLECTED_LOGS.append(log)
        assert code == 0, log
        assert_no_secrets(log)
        return log

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    for proxy in started:
        if proxy.proc.poll() is None or proxy.log() not in COLLECTED_LOGS:
            stop(proxy)


def stored_items(upstream) -> dict[bytes, bytes]:
    """Every key in the upstream Redis's database 0 (the only one the caches here use),
    with its value."""
    items = {}
    for key in upstream.scan_iter(count=1000):
        assert upstream.type(key) == b"string"
        items[key] = upstream.get(key)
    return items


def info_field(client, field: str) -> str:
    return info_fields(client.connection_pool.connection_kwargs["port"])[field]


def find_hash_tag(key: bytes) -> bytes | None:
    """Redis Cluster's rule, written out independently of the proxy's code."""
    start = key.find(b"{")
    if start < 0:
        return None
    end = key.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1:end]


# ---------------------------------------------------------------------------------------
# Nothing in plaintext reaches Redis
# ---------------------------------------------------------------------------------------


def test_upstream_holds_no_plaintext_after_a_varied_workload(upstream, proxies):
    enc, hkey = new_key(), new_key()
    proxy = proxies(redis_cache_yaml(upstream.connection_pool.connection_kwargs["port"],
                                     enc=enc, hash_key=hkey))
    c = proxy.client()

    def K(name: str) -> bytes:
        return marker(f"KEY-{name}").encode()

    def V(name: str) -> bytes:
        return marker(f"VALUE-{name}").encode()

    final: dict[tuple[int, bytes], bytes] = {}  # (db, plaintext key) -> plaintext value
    all_values: list[bytes] = []

    def expect(key: bytes, value: bytes, db: int = 0) -> None:
        final[(db, key)] = value
        all_values.append(value)

    k = K("plain")
    v = V("plain")
    assert c.set(k, v) is True
    expect(k, v)
    k, v = K("ex"), V("ex")
    assert c.set(k, v, ex=100) is True
    expect(k, v)
    k, v = K("px"), V("px")
    assert c.set(k, v, px=100000) is True
    expect(k, v)
    k, v, v2 = K("nx"), V("nx"), V("nx-refused")
    assert c.set(k, v, nx=True) is True
    assert c.set(k, v2, nx=True) is None
    all_values.append(v2)
    expect(k, v)
    k, v_old, v = K("xx-get"), V("xx-old"), V("xx-new")
    assert c.set(k, v_old) is True
    assert c.set(k, v, xx=True, get=True) == v_old
    all_values.append(v_old)
    expect(k, v)
    k, v = K("keepttl"), V("keepttl")
    assert c.set(k, V("keepttl-first"), ex=200) is True
    assert c.set(k, v, keepttl=True) is True
    assert 0 < c.ttl(k) <= 200
    expect(k, v)
    pairs = {K("mset1"): V("mset1"), K("mset2"): V("mset2"), K("mset3"): V("mset3")}
    assert c.mset(pairs) is True
    for key, value in pairs.items():
        expect(key, value)
    k, v = K("msetnx"), V("msetnx")
    assert c.msetnx({k: v}) is True
    expect(k, v)
    k, v = K("setex"), V("setex")
    assert c.setex(k, 100, v) is True
    expect(k, v)
    k, v = K("psetex"), V("psetex")
    assert c.psetex(k, 100000, v) is True
    expect(k, v)
    k, v = K("setnx"), V("setnx")
    assert c.setnx(k, v) is True
    expect(k, v)
    k, v1, v = K("getset"), V("getset-1"), V("getset-2")
    assert c.getset(k, v1) is None
    assert c.getset(k, v) == v1
    all_values.append(v1)
    expect(k, v)
    k = K("getdel")
    assert c.set(k, V("getdel")) is True
    assert c.getdel(k) is not None  # deleted: must leave nothing behind
    uid = uuid.uuid4().hex
    tag_text = f"tag-{uid}"
    SECRET_TEXTS.add(tag_text)
    tagged = [b"{user}:1", b"{user}:2",
              f"{{{tag_text}}}:a".encode(), f"{{{tag_text}}}:b".encode()]
    for i, key in enumerate(tagged):
        value = V(f"tagged-{i}")
        assert c.set(key, value) is True
        expect(key, value)
    binary_key = b"\x00\r\n\xff" + K("binary") + bytes(range(256))
    binary_value = bytes(range(256)) + V("binary") + b"\r\n\x00*1\r\n$4\r\nPING\r\n"
    assert c.set(binary_key, binary_value) is True
    expect(binary_key, binary_value)
    k = K("empty")
    assert c.set(k, b"") is True
    final[(0, k)] = b""
    k, v = K("big"), V("big") * 2000
    assert c.set(k, v) is True
    expect(k, v)
    # The same workload in logical database 1.
    c1 = proxy.client(db=1)
    k, v = K("db1"), V("db1")
    assert c1.set(k, v) is True
    expect(k, v, db=1)
    c1.close()

    # The proxy gives everything back.
    for (db, key), value in final.items():
        client = c if db == 0 else proxy.client(db=db)
        assert client.get(key) == value
    assert c.exists(K("never-written")) == 0

    # Nothing in the proxy's own introspection either.
    with RawClient(proxy.port) as raw:
        introspection = raw.call("INFO", "everything") + raw.call("CLIENT", "LIST")
    for text in (enc, hkey, enc.upper(), hkey.upper()):
        assert text.encode() not in introspection
    assert b"PLAINTEXT" not in introspection

    assert set(upstream.info("keyspace")) == {"db0"}  # logical dbs are namespaces in db 0
    items = stored_items(upstream)
    assert len(items) == len(final)
    plaintext_keys = [key for _, key in final]
    for stored_key, stored_value in items.items():
        assert re.match(rb"^cachecloak:main:[01]:", stored_key), stored_key
        for key in plaintext_keys:
            assert key not in stored_key
        for fragment in (b"{user}", b"user}", tag_text.encode(), uid.encode(), b"PLAINTEXT"):
            assert fragment not in stored_key
        dump = upstream.dump(stored_key)
        for value in all_values:
            assert value not in stored_value
            assert value not in dump
        assert b"PLAINTEXT" not in stored_value and b"PLAINTEXT" not in dump
        assert stored_value[0] == 0x01
        assert len(stored_value) >= OVERHEAD
    # Value lengths: plaintext + 33 bytes each, no more, no less.
    assert sorted(len(v) for v in items.values()) == sorted(
        len(v) + OVERHEAD for v in final.values())
    # Logical databases live under their own namespace.
    assert sum(1 for k in items if k.startswith(b"cachecloak:main:1:")) == 1
    # Keys sharing a hash tag share a (hashed) tag in their stored names.
    tag_groups: dict[bytes, int] = {}
    expected_tagged = sum(1 for _, key in final if find_hash_tag(key) is not None)
    for stored_key in items:
        tag = find_hash_tag(stored_key)
        if tag is not None:
            tag_groups[tag] = tag_groups.get(tag, 0) + 1
    assert sum(tag_groups.values()) == expected_tagged
    assert sorted(n for n in tag_groups.values() if n > 1) == [2, 2]  # {user} and {tag-...}
    c.close()
    log = proxies.stop(proxy)
    assert "stopped" in log


# ---------------------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------------------


def test_key_rotation_old_keys_decrypt_new_writes_use_current(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    key_a, key_b, hkey = new_key(), new_key(), new_key()
    k_old, v_old = marker("KEY").encode(), marker("VALUE").encode()
    k_new, v_new = marker("KEY").encode(), marker("VALUE").encode()

    proxy = proxies(redis_cache_yaml(port, enc=key_a, hash_key=hkey))
    c = proxy.client()
    assert c.set(k_old, v_old) is True
    id_a = info_field(c, "encryption_current_key_id")
    c.close()
    proxies.stop(proxy)
    (stored_old,) = stored_items(upstream).keys()
    blob_old = upstream.get(stored_old)
    assert blob_old[1:5].hex() == id_a

    # Current B, old [A]: old values still read; new writes are under B's key id.
    proxy = proxies(redis_cache_yaml(port, enc=key_b, old=(key_a,), hash_key=hkey))
    c = proxy.client()
    assert c.get(k_old) == v_old
    assert c.set(k_new, v_new) is True
    id_b = info_field(c, "encryption_current_key_id")
    assert id_b != id_a
    assert info_field(c, "decrypt_failures") == "0"
    c.close()
    proxies.stop(proxy)
    items = stored_items(upstream)
    assert len(items) == 2
    (stored_new,) = [k for k in items if k != stored_old]
    assert items[stored_new][1:5].hex() == id_b
    assert items[stored_new][1:5] != items[stored_old][1:5]
    assert items[stored_old] == blob_old  # reading never rewrites

    # Current B without A: the old value is a miss, counted, and logged without the key.
    proxy = proxies(redis_cache_yaml(port, enc=key_b, hash_key=hkey))
    c = proxy.client()
    assert c.get(k_old) is None
    assert c.mget(k_old, k_new) == [None, v_new]
    assert c.get(k_new) == v_new
    assert info_field(c, "decrypt_failures") == "2"
    c.close()
    log = wait_until(lambda: "decrypt" in proxy.log() and proxy.log(), timeout=5,
                     what="the decrypt failure warning")
    assert "unknown-key-id" in log
    assert "failed to decrypt" in log
    for text in (k_old, v_old, stored_old, k_new):
        assert text.decode() not in log
    proxies.stop(proxy)


# ---------------------------------------------------------------------------------------
# Tampering, moved ciphertexts, plaintext injected into Redis
# ---------------------------------------------------------------------------------------


def _flip(blob: bytes, index: int) -> bytes:
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


def test_tampered_values_read_as_misses(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    proxy = proxies(redis_cache_yaml(port, enc=enc, hash_key=hkey))
    c = proxy.client()
    value = marker("VALUE").encode()
    positions = {"version": 0, "key-id": 2, "nonce": 8, "ciphertext": 20, "tag": -1}
    keys = {}
    for what in positions:
        key = marker(f"KEY-{what}").encode()
        assert c.set(key, value) is True
        keys[what] = key
    untouched = marker("KEY-untouched").encode()
    assert c.set(untouched, value) is True
    items = stored_items(upstream)
    by_plain = {}
    for what, key in keys.items():
        # Find each key's stored name: it is the only new name after writing it again.
        before = set(items)
        assert c.delete(key) == 1
        after = set(stored_items(upstream))
        (stored,) = before - after
        assert c.set(key, value) is True
        by_plain[what] = stored
        items = stored_items(upstream)
    for what, index in positions.items():
        stored = by_plain[what]
        upstream.set(stored, _flip(upstream.get(stored), index))
    for what, key in keys.items():
        assert c.get(key) is None, what
    assert c.get(untouched) == value
    assert c.mget(keys["tag"], untouched) == [None, value]
    # A truncated envelope is a miss too.
    upstream.set(by_plain["tag"], upstream.get(by_plain["tag"])[:20])
    assert c.get(keys["tag"]) is None
    assert int(info_field(c, "decrypt_failures")) == len(positions) + 2
    raw = RawClient(proxy.port)
    assert raw.call("GET", keys["nonce"]) == b"$-1\r\n"
    raw.close()
    c.close()
    proxies.stop(proxy)


def test_tampered_value_with_on_decrypt_error_error(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    proxy = proxies(redis_cache_yaml(port, enc=enc, hash_key=hkey, on_error="error"))
    key, value = marker("KEY").encode(), marker("VALUE").encode()
    good_key = marker("KEY").encode()
    raw = RawClient(proxy.port)
    assert raw.call("SET", key, value) == b"+OK\r\n"
    assert raw.call("SET", good_key, value) == b"+OK\r\n"
    items = stored_items(upstream)
    assert raw.call("DEL", key) == b":1\r\n"
    (stored,) = set(items) - set(stored_items(upstream))
    assert raw.call("SET", key, value) == b"+OK\r\n"
    blob = upstream.get(stored)
    upstream.set(stored, _flip(blob, 25))
    for command in (("GET", key), ("MGET", good_key, key), ("GETSET", key, value)):
        reply = raw.call(*command)
        assert reply.startswith(b"-ERR "), (command, reply)
        assert b"decrypt" in reply
        for text in (key, value, good_key, stored, enc.encode(), hkey.encode()):
            assert text not in reply
    # The error did not break the connection, and the good key still reads.
    assert raw.call("GET", good_key) == b"$%d\r\n%b\r\n" % (len(value), value)
    raw.close()
    proxies.stop(proxy)


def test_moved_and_injected_values_are_misses(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    proxy = proxies(redis_cache_yaml(port, enc=enc, hash_key=hkey))
    c = proxy.client()
    k1, k2, k3 = (marker("KEY").encode() for _ in range(3))
    v1, v2 = marker("VALUE").encode(), marker("VALUE").encode()
    names = {}
    for key, value in ((k1, v1), (k2, v2), (k3, v1)):
        before = set(stored_items(upstream))
        assert c.set(key, value) is True
        (names[key],) = set(stored_items(upstream)) - before
    # A ciphertext moved from k1's name to k2's name does not open there.
    upstream.set(names[k2], upstream.get(names[k1]))
    assert c.get(k2) is None
    assert c.get(k1) == v1
    # ... nor in another logical database under the same client key.
    c1 = proxy.client(db=1)
    assert c1.set(k1, v2) is True
    (name_db1,) = set(stored_items(upstream)) - set(names.values())
    assert name_db1.startswith(b"cachecloak:main:1:")
    upstream.set(name_db1, upstream.get(names[k1]))
    assert c1.get(k1) is None
    c1.close()
    # A plaintext written straight into Redis is never handed out as it is.
    injected = marker("VALUE-injected").encode()
    upstream.set(names[k3], injected)
    assert c.get(k3) is None
    upstream.set(names[k3], b"\x01" + secrets.token_bytes(60))
    assert c.get(k3) is None
    upstream.set(names[k3], b"")
    assert c.get(k3) is None
    assert c.mget(k1, k2, k3) == [v1, None, None]
    assert int(info_field(c, "decrypt_failures")) >= 5
    c.close()
    proxies.stop(proxy)


# ---------------------------------------------------------------------------------------
# Separation: caches, logical databases, nonces
# ---------------------------------------------------------------------------------------


def test_same_key_in_two_caches_and_two_dbs_has_different_names(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    listen = [free_port(), free_port()]
    # Same prefix, same keys: only the cache name tells the two caches apart.
    cache = """\
  - name: {name}
    type: redis
    redis:
      addresses: ["127.0.0.1:{port}"]
      disableTLS: true
    keys:
      prefix: "shared:"
    encryption:
      keys:
        current: "{enc}"
    hashing:
      keys:
        current: "{hkey}"
"""
    config = (
        "listeners:\n"
        f"  - address: 127.0.0.1:{listen[0]}\n    cache: alpha\n"
        f"  - address: 127.0.0.1:{listen[1]}\n    cache: beta\n"
        "caches:\n"
        + cache.format(name="alpha", port=port, enc=enc, hkey=hkey)
        + cache.format(name="beta", port=port, enc=enc, hkey=hkey)
    )
    proxy = proxies(config, ports=listen)
    alpha, beta = proxy.client(), RawClient(listen[1])
    alpha1 = proxy.client(db=1)
    key, value = marker("KEY").encode(), marker("VALUE").encode()
    assert alpha.set(key, value) is True
    assert beta.call("SET", key, value) == b"+OK\r\n"
    assert alpha1.set(key, value) is True
    items = stored_items(upstream)
    assert len(items) == 3
    digests = {name.rsplit(b":", 1)[1] for name in items}
    assert len(digests) == 3, "the same key must hash differently per cache and per db"
    assert sum(1 for n in items if n.startswith(b"shared:0:")) == 2
    assert sum(1 for n in items if n.startswith(b"shared:1:")) == 1
    # The same value three times: three different ciphertexts (fresh nonces).
    assert len(set(items.values())) == 3
    assert len({blob[5:17] for blob in items.values()}) == 3
    # Rewriting the same value under the same key also changes the ciphertext.
    before = dict(items)
    assert alpha.set(key, value) is True
    after = stored_items(upstream)
    changed = [n for n in after if after[n] != before[n]]
    assert len(changed) == 1
    # beta's ciphertext moved onto alpha's name does not open (bound to the name).
    (alpha_name,) = changed
    (beta_name,) = [n for n in after if n.startswith(b"shared:0:") and n != alpha_name]
    upstream.set(alpha_name, after[beta_name])
    assert alpha.get(key) is None
    assert beta.call("GET", key) == b"$%d\r\n%b\r\n" % (len(value), value)
    beta.close()
    alpha.close()
    alpha1.close()
    proxies.stop(proxy)


# ---------------------------------------------------------------------------------------
# Documented switches: hashing.disabled, encryption.disabled, keys.prefix, disablePrefix
# ---------------------------------------------------------------------------------------


def test_hashing_disabled_keeps_keys_after_the_prefix(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    proxy = proxies(redis_cache_yaml(port, enc=new_key(), hash_key=None))
    c = proxy.client()
    key, value = b"visible-key:\x00\xff{tag}", marker("VALUE").encode()
    assert c.set(key, value) is True
    assert c.execute_command("SELECT", 2) is True
    assert c.set(key, value) is True
    items = stored_items(upstream)
    assert set(items) == {b"cachecloak:main:0:" + key, b"cachecloak:main:2:" + key}
    for blob in items.values():
        assert value not in blob and len(blob) == len(value) + OVERHEAD
    c.close()
    proxies.stop(proxy)


def test_encryption_disabled_stores_values_unchanged(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    proxy = proxies(redis_cache_yaml(port, enc=None, hash_key=new_key()))
    c = proxy.client()
    key = marker("KEY").encode()
    value = b"stored as is \x00\r\n" + bytes(range(256))
    assert c.set(key, value) is True
    assert c.get(key) == value
    ((name, blob),) = stored_items(upstream).items()
    assert blob == value
    assert name.startswith(b"cachecloak:main:0:") and key not in name
    assert c.info("cachecloak")["encryption"] == "disabled"
    c.close()
    proxies.stop(proxy)


def test_custom_prefix_and_disabled_prefix(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    hkey = new_key()
    key, value = marker("KEY").encode(), marker("VALUE").encode()

    proxy = proxies(redis_cache_yaml(port, enc=new_key(), hash_key=hkey,
                                     extra='    keys:\n      prefix: "app1:"\n'))
    c = proxy.client()
    assert c.set(key, value) is True
    ((name, _),) = stored_items(upstream).items()
    assert re.fullmatch(rb"app1:0:[A-Za-z0-9_-]{32}", name), name
    assert c.dbsize() == 1
    c.close()
    proxies.stop(proxy)
    upstream.flushall()

    # No prefix at all: the stored name is the bare digest, and only db 0 exists.
    proxy = proxies(redis_cache_yaml(port, enc=new_key(), hash_key=hkey,
                                     extra="    keys:\n      disablePrefix: true\n"))
    raw = RawClient(proxy.port)
    assert raw.call("SET", key, value) == b"+OK\r\n"
    ((name, _),) = stored_items(upstream).items()
    assert re.fullmatch(rb"[A-Za-z0-9_-]{32}", name), name
    assert raw.call("SELECT", "1").startswith(b"-ERR")
    raw.close()
    proxies.stop(proxy)
    upstream.flushall()

    # No prefix, no hashing: the client's key is the stored name.
    proxy = proxies(redis_cache_yaml(port, enc=new_key(), hash_key=None,
                                     extra="    keys:\n      disablePrefix: true\n"))
    c = proxy.client()
    assert c.set(b"bare-key", value) is True
    assert list(stored_items(upstream)) == [b"bare-key"]
    c.close()
    proxies.stop(proxy)


# ---------------------------------------------------------------------------------------
# Secret references and environment substitution
# ---------------------------------------------------------------------------------------


def _secret_config(port: int, enc_ref: str, hash_ref: str) -> str:
    return redis_cache_yaml(port, enc="ENC", hash_key="HASH").replace(
        '"ENC"', enc_ref).replace('"HASH"', hash_ref)


def _written_value_opens_with_inline_keys(upstream, proxies, port: int, enc: str, hkey: str,
                                          key: bytes, value: bytes) -> None:
    """A proxy configured with the same keys written inline reads what was written."""
    proxy = proxies(redis_cache_yaml(port, enc=enc, hash_key=hkey))
    c = proxy.client()
    assert c.get(key) == value
    c.close()
    proxies.stop(proxy)


@pytest.mark.parametrize("provider", ["secretfile", "dir"])
def test_secret_references_work_end_to_end(upstream, proxies, tmp_path: Path, provider):
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    if provider == "secretfile":
        path = tmp_path / "secrets.yaml"
        path.write_text(f"vault:\n  enc: {enc}\n  hash: {hkey}\n")
        uri = f"secretfile://{path}"
    else:
        (tmp_path / "vault").mkdir()
        (tmp_path / "vault" / "enc").write_text(enc + "\n")  # Kubernetes-style layout
        (tmp_path / "vault.hash").write_text(hkey)  # Docker-secrets-style layout
        uri = f"dir://{tmp_path}"
    config = _secret_config(port, "<vault.enc>", "<vault.hash>")
    proxy = proxies(config, "--secret-provider", uri)
    c = proxy.client()
    key, value = marker("KEY").encode(), marker("VALUE").encode()
    assert c.set(key, value) is True
    assert c.get(key) == value
    c.close()
    log = proxies.stop(proxy)
    assert enc not in log and hkey not in log
    _written_value_opens_with_inline_keys(upstream, proxies, port, enc, hkey, key, value)

    # The same references through the environment variable instead of the flag.
    proxy = proxies(config, env={"CACHECLOAK_SECRET_PROVIDER": uri})
    c = proxy.client()
    assert c.get(key) == value
    c.close()
    proxies.stop(proxy)


def test_unresolvable_secret_reference_exits_2_naming_the_reference(upstream, tmp_path):
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    path = tmp_path / "secrets.yaml"
    path.write_text(f"vault:\n  enc: {enc}\n  hash: {hkey}\n")
    config = tmp_path / "cachecloak.yaml"
    config.write_text(_secret_config(port, "<vault.enc>", "<vault.missing_hash>"))
    result = run_cli("run", "--config", str(config), "--secret-provider",
                     f"secretfile://{path}", "--listen", f"127.0.0.1:{free_port()}",
                     timeout=20)
    assert result.returncode == 2, result.stderr
    assert "<vault.missing_hash>" in result.stderr
    assert "Traceback" not in result.stderr
    for text in (enc, hkey, enc.upper()):
        assert text not in result.stderr and text not in result.stdout
    COLLECTED_LOGS.append(result.stderr + result.stdout)

    # A reference without any provider configured: also exit 2, naming it.
    result = run_cli("run", "--config", str(config), "--listen",
                     f"127.0.0.1:{free_port()}", timeout=20)
    assert result.returncode == 2, result.stderr
    assert "<vault.enc>" in result.stderr or "<vault.missing_hash>" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_substitution_works_end_to_end(upstream, proxies):
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    config = redis_cache_yaml(port, enc="ENC", hash_key=hkey).replace(
        f"127.0.0.1:{port}", "127.0.0.1:{{ env.CC_TEST_REDIS_PORT }}").replace(
        '"ENC"', '"{{ env.CC_TEST_ENC_KEY }}"')
    assert "{{ env.CC_TEST_ENC_KEY }}" in config
    proxy = proxies(config, env={"CC_TEST_REDIS_PORT": str(port), "CC_TEST_ENC_KEY": enc})
    c = proxy.client()
    key, value = marker("KEY").encode(), marker("VALUE").encode()
    assert c.set(key, value) is True
    assert c.info("cachecloak")["cache_backend"] == f"redis 127.0.0.1:{port}"
    c.close()
    proxies.stop(proxy)
    assert len(stored_items(upstream)) == 1
    _written_value_opens_with_inline_keys(upstream, proxies, port, enc, hkey, key, value)


# ---------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------


def test_logs_never_contain_plaintext_or_key_material(upstream, proxies):
    """Runs last in this module: one more workload with every logged event, then a
    search of every log collected above."""
    port = upstream.connection_pool.connection_kwargs["port"]
    enc, hkey = new_key(), new_key()
    proxy = proxies(redis_cache_yaml(port, enc=enc, hash_key=hkey))
    c = proxy.client()
    key, value = marker("KEY").encode(), marker("VALUE").encode()
    assert c.set(key, value) is True
    ((name, blob),) = stored_items(upstream).items()
    upstream.set(name, _flip(blob, 30))
    assert c.get(key) is None  # logs a decrypt failure
    raw = RawClient(proxy.port)
    raw.send_raw(b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n*1\r\n:1\r\n" % (len(key), key))
    assert raw.read_until_closed(5).endswith(b"Protocol error: expected '$', got ':'\r\n")
    raw.close()
    with pytest.raises(Exception, match="unknown command") as refused:
        c.execute_command("NOTACOMMAND", key, value)
    assert key.decode() not in str(refused.value) and value.decode() not in str(refused.value)
    c.close()
    log = proxies.stop(proxy)
    assert "malformed input" in log and "decrypt" in log
    assert len(COLLECTED_LOGS) >= 1
    for text in COLLECTED_LOGS:
        assert_no_secrets(text)
