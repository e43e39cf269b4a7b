"""KEYS and SCAN with hashing disabled; HSCAN, SSCAN and ZSCAN in both modes.

Redis orders SCAN pages and KEYS by its hash table, which depends on the stored names,
so these tests compare what a full scan returns as sets (which is all Redis promises).
"""

from __future__ import annotations

import secrets

import hiredis
import pytest

from tests.servers import RawClient, start_proxy, start_redis


def _config(upstream: str, hashing: bool, name: str = "app") -> str:
    hashing_section = (f"    hashing:\n      keys:\n        current: {secrets.token_hex(32)}\n"
                       if hashing else "    hashing:\n      disabled: true\n")
    return (f"caches:\n  - name: {name}\n    type: redis\n    redis:\n"
            f"      addresses: [\"{upstream}\"]\n      disableTLS: true\n"
            f"    encryption:\n      keys:\n        current: {secrets.token_hex(32)}\n"
            + hashing_section)


@pytest.fixture(scope="module")
def servers():
    direct, upstream = start_redis(), start_redis()
    plain_names = start_proxy(_config(upstream.address, hashing=False))
    hashed = start_proxy(_config(upstream.address, hashing=True, name="other"))
    local = start_proxy("caches:\n  - name: mem\n    type: local\n")
    yield direct, upstream, plain_names, hashed, local
    for process in (plain_names, hashed, local, direct, upstream):
        process.stop()


def parse(reply: bytes):
    reader = hiredis.Reader()
    reader.feed(reply)
    return reader.gets()


def full_scan(client: RawClient, head: tuple, *options) -> list:
    """Every item a complete scan returns: `head` is ("SCAN",) or ("HSCAN", key)."""
    cursor, seen = b"0", []
    for _round in range(1000):
        cursor, items = parse(client.call(*head, cursor, *options))
        seen += items
        if cursor == b"0":
            return seen
    raise AssertionError("the scan did not finish in 1000 rounds")


def _load(port: int) -> None:
    with RawClient(port) as c:
        assert c.call("FLUSHDB") == b"+OK\r\n"
        for i in range(60):
            c.call("SET", f"user:{i}", f"v{i}")
        c.call("SET", "other:1", "x")
        c.call("HSET", "h", *[x for i in range(40) for x in (f"f{i}", f"val{i}")])
        c.call("SADD", "s", *[f"m{i}" for i in range(40)])
        c.call("ZADD", "z", *[x for i in range(40) for x in (str(i), f"z{i}")])


@pytest.mark.parametrize("target", ["plain_names", "local"])
def test_keys_and_scan_list_the_applications_names(servers, target):
    direct, _upstream, plain_names, _hashed, local = servers
    proxy = plain_names if target == "plain_names" else local
    _load(direct.port)
    _load(proxy.port)
    with RawClient(direct.port) as d, RawClient(proxy.port) as p:
        for pattern in ("user:*", "*", "user:1?", "nothing*"):
            assert sorted(parse(p.call("KEYS", pattern))) == sorted(
                parse(d.call("KEYS", pattern)))
        assert sorted(full_scan(p, ("SCAN",), "MATCH", "user:*", "COUNT", "7")) == sorted(
            full_scan(d, ("SCAN",), "MATCH", "user:*", "COUNT", "7"))
        assert sorted(full_scan(p, ("SCAN",), "TYPE", "hash")) == [b"h"]
        assert p.call("SCAN", "0", "BOGUS") == d.call("SCAN", "0", "BOGUS")


def test_keys_of_other_caches_and_databases_are_not_listed(servers):
    _direct, _upstream, plain_names, hashed, _local = servers
    with RawClient(hashed.port) as h, RawClient(plain_names.port) as p:
        h.call("SET", "hidden-key", "x")
        p.call("SELECT", "1")
        p.call("SET", "db1-key", "y")
        p.call("SELECT", "0")
        names = parse(p.call("KEYS", "*"))
        assert b"db1-key" not in names and not any(b"hidden" in n for n in names)
        assert all(not n.startswith(b"cachecloak:") for n in names)


def test_keys_and_scan_are_refused_while_keys_are_hashed(servers):
    hashed = servers[3]
    with RawClient(hashed.port) as c:
        assert c.call("KEYS", "*").startswith(b"-ERR cachecloak does not serve 'keys': keys "
                                               b"are stored HMAC-hashed")
        assert c.call("SCAN", "0").startswith(b"-ERR cachecloak does not serve 'scan'")


@pytest.mark.parametrize("target", ["plain_names", "hashed", "local"])
@pytest.mark.parametrize("command, key", [("HSCAN", "h"), ("SSCAN", "s"), ("ZSCAN", "z")])
def test_member_scans_return_every_member_decrypted(servers, target, command, key):
    direct = servers[0]
    proxy = {"plain_names": servers[2], "hashed": servers[3], "local": servers[4]}[target]
    _load(direct.port)
    _load(proxy.port)
    with RawClient(direct.port) as d, RawClient(proxy.port) as p:
        expected = full_scan(d, (command, key), "COUNT", "5")
        got = full_scan(p, (command, key), "COUNT", "5")
        pairs = (lambda flat: sorted(zip(flat[::2], flat[1::2], strict=True))) if (
            command != "SSCAN") else sorted
        assert pairs(got) == pairs(expected)
        assert len(got) == len(expected) > 0


def test_match_on_encrypted_members_is_refused_with_the_reason(servers):
    hashed = servers[3]
    _load(hashed.port)
    with RawClient(hashed.port) as c:
        assert c.call("HSCAN", "h", "0", "MATCH", "f1*").startswith(
            b"-ERR cachecloak does not serve MATCH here: fields and members are stored "
            b"encrypted")
