"""`cachecloak rekey`: values under an old encryption key are rewritten under the current one.

What is proven here, against real redis-server processes and real cachecloak processes:

* strings, hashes and lists written under key A read correctly through a proxy that only
  knows key B after `rekey` (configured with B current, A old) ran; every envelope in
  Redis then carries B's key identifier, TTLs are kept, sets and sorted sets untouched;
* the summary counts are right, and the exit status says whether anything remains;
* `--dry-run` writes nothing (every stored byte is unchanged) and counts what it would do;
* values that do not decrypt (tampered, unknown key, not cachecloak's) are counted and
  left unchanged, never printed;
* a write that lands between the sweep's read and its rewrite wins (WATCH/MULTI/EXEC),
  for strings, hash fields and lists, and writes made during a sweep are not lost;
* Ctrl-C stops the sweep with status 130 and `--resume` finishes it;
* a three-primary Redis Cluster is swept on every primary;
* no output contains a key name (client or stored) or a value.

Every loop and wait is bounded.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from proxy.crypto import KeyHasher, derive_key_id
from tests.proxyproc import proxy_env, run_cli, wait_until
from tests.servers import start_proxy

KEY_A = secrets.token_hex(32)
KEY_B = secrets.token_hex(32)
KEY_C = secrets.token_hex(32)  # a key the rekey configuration does not know
HASH_KEY = secrets.token_hex(32)
ID_A = derive_key_id(bytes.fromhex(KEY_A)).hex()
ID_B = derive_key_id(bytes.fromhex(KEY_B)).hex()
ID_C = derive_key_id(bytes.fromhex(KEY_C)).hex()
PREFIX = "rk:"
MARK = "plainmark"  # in every client key and value: must never appear in output or Redis
HASHER = KeyHasher("main", bytes.fromhex(HASH_KEY), PREFIX.encode(), True, 16)


def config(redis_addresses: list[str], current: str, old: tuple[str, ...] = (), *,
           mode: str | None = None, timeouts: bool = False, name: str = "main",
           more_caches: str = "", extra_redis: str = "") -> str:
    addresses = ", ".join(f'"{a}"' for a in redis_addresses)
    old_line = f"        old: [{', '.join(repr(k) for k in old)}]\n" if old else ""
    return (
        "caches:\n"
        f"  - name: {name}\n"
        "    type: redis\n"
        "    redis:\n"
        f"      addresses: [{addresses}]\n"
        "      disableTLS: true\n"
        + (f"      mode: {mode}\n" if mode else "")
        + ("      connectTimeout: 200ms\n      commandTimeout: 500ms\n" if timeouts else "")
        + extra_redis
        + "    keys:\n"
        f'      prefix: "{PREFIX}"\n'
        "    encryption:\n"
        "      keys:\n"
        f'        current: "{current}"\n'
        + old_line
        + "    hashing:\n"
        "      keys:\n"
        f'        current: "{HASH_KEY}"\n'
        + more_caches
    )


def write_config(tmp_path: Path, text: str, name: str = "rekey.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rekey(cfg: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return run_cli("rekey", "--config", str(cfg), "--state", str(cfg.parent / "state.json"),
                   *args, timeout=timeout)


def summary(stdout: str) -> dict[str, str]:
    """'label: value' lines of the summary, by label."""
    out = {}
    for line in stdout.splitlines():
        label, sep, value = line.partition(": ")
        if sep:
            out[label.strip()] = value
    return out


def number(text: str) -> int:
    return int(text.split(" ", 1)[0].split(";", 1)[0].replace(",", ""))


# -- what Redis holds ----------------------------------------------------------------------

def envelope_ids(r) -> Counter:
    """Key identifier (hex) of every envelope in Redis: string values, hash values, list
    elements; 'other' for anything that is not an envelope."""
    ids: Counter = Counter()

    def count(blob: bytes) -> None:
        ids[blob[1:5].hex() if len(blob) >= 33 and blob[0] == 1 else "other"] += 1

    for name in r.scan_iter(count=500):
        kind = r.type(name)
        if kind == b"string":
            count(r.get(name))
        elif kind == b"hash":
            for blob in r.hvals(name):
                count(blob)
        elif kind == b"list":
            for blob in r.lrange(name, 0, -1):
                count(blob)
    return ids


def snapshot(r) -> dict[bytes, object]:
    """Every key's type and exact stored content."""
    out: dict[bytes, object] = {}
    for name in r.scan_iter(count=500):
        kind = r.type(name)
        if kind == b"string":
            out[name] = r.get(name)
        elif kind == b"hash":
            out[name] = r.hgetall(name)
        elif kind == b"list":
            out[name] = r.lrange(name, 0, -1)
        elif kind == b"set":
            out[name] = r.smembers(name)
        elif kind == b"zset":
            out[name] = r.zrange(name, 0, -1, withscores=True)
    return out


# -- the data set --------------------------------------------------------------------------

STRINGS, TTL_STRINGS, HASHES, LISTS = 40, 10, 8, 8
FIELDS, ELEMENTS = 4, 5
VALUES = STRINGS + TTL_STRINGS + HASHES * FIELDS + LISTS * ELEMENTS  # 122 envelopes
KEYS = STRINGS + TTL_STRINGS + HASHES + LISTS + 2  # plus one set, one sorted set


def write_data(c) -> dict[str, object]:
    """Strings (some with a TTL), hashes, lists, a set and a sorted set, via a proxy."""
    expected: dict[str, object] = {}
    pipe = c.pipeline(transaction=False)
    for i in range(STRINGS):
        expected[f"{MARK}:s:{i}"] = f"{MARK}-value-{i}".encode()
        pipe.set(f"{MARK}:s:{i}", expected[f"{MARK}:s:{i}"])
    for i in range(TTL_STRINGS):
        expected[f"{MARK}:t:{i}"] = f"{MARK}-ttl-{i}".encode()
        pipe.set(f"{MARK}:t:{i}", expected[f"{MARK}:t:{i}"], ex=1000)
    for i in range(HASHES):
        fields = {f"{MARK}-f{j}".encode(): f"{MARK}-hv-{i}-{j}".encode()
                  for j in range(FIELDS)}
        expected[f"{MARK}:h:{i}"] = fields
        pipe.hset(f"{MARK}:h:{i}", mapping=fields)
        pipe.expire(f"{MARK}:h:{i}", 2000)
    for i in range(LISTS):
        elements = [f"{MARK}-el-{i}-{j}".encode() for j in range(ELEMENTS)]
        expected[f"{MARK}:l:{i}"] = elements
        pipe.rpush(f"{MARK}:l:{i}", *elements)
        pipe.expire(f"{MARK}:l:{i}", 3000)
    pipe.sadd(f"{MARK}:set", f"{MARK}-m1", f"{MARK}-m2")
    pipe.zadd(f"{MARK}:zset", {f"{MARK}-z1": 1, f"{MARK}-z2": 2})
    pipe.execute()
    return expected


def assert_reads(c, expected: dict[str, object]) -> None:
    for key, value in expected.items():
        if key.startswith(f"{MARK}:h:"):
            assert c.hgetall(key) == value
        elif key.startswith(f"{MARK}:l:"):
            assert c.lrange(key, 0, -1) == value
        else:
            assert c.get(key) == value
    assert c.smembers(f"{MARK}:set") == {f"{MARK}-m1".encode(), f"{MARK}-m2".encode()}
    assert c.zrange(f"{MARK}:zset", 0, -1) == [f"{MARK}-z1".encode(), f"{MARK}-z2".encode()]


def assert_quiet(result: subprocess.CompletedProcess, r) -> None:
    """No client key or value, and no stored name, in what the command printed."""
    text = result.stdout + result.stderr
    assert MARK not in text
    for name in r.scan_iter(count=500):
        assert name.decode(errors="replace").split(":")[-1] not in text


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxy_a(redis_server):
    proxy = start_proxy(config([redis_server.address], KEY_A))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def proxy_b(redis_server):
    """Knows only key B: reads values under A as misses."""
    proxy = start_proxy(config([redis_server.address], KEY_B))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def proxy_ba(redis_server):
    """The rotated configuration: B current, A old."""
    proxy = start_proxy(config([redis_server.address], KEY_B, (KEY_A,)))
    yield proxy
    proxy.stop()


@pytest.fixture
def written(redis_server, proxy_a):
    r = redis_server.client()
    r.flushall()
    expected = write_data(proxy_a.client())
    assert envelope_ids(r) == Counter({ID_A: VALUES})
    yield expected
    r.flushall()


@pytest.fixture
def rotated(tmp_path, redis_server) -> Path:
    return write_config(tmp_path, config([redis_server.address], KEY_B, (KEY_A,)))


# -- tests ---------------------------------------------------------------------------------

def test_rekey_moves_every_value_to_the_current_key(written, rotated, redis_server, proxy_b):
    r = redis_server.client()
    result = rekey(rotated)
    assert result.returncode == 0, result.stderr
    assert envelope_ids(r) == Counter({ID_B: VALUES})
    s = summary(result.stdout)
    assert number(s["keys scanned"]) == KEYS
    assert "hash 8" in s["keys scanned"] and "list 8" in s["keys scanned"]
    assert "string 50" in s["keys scanned"] and "set 1" in s["keys scanned"]
    assert number(s["values re-encrypted"]) == VALUES
    assert number(s[f"values under the current key {ID_B}"]) == VALUES
    remaining = s[f"values remaining under old key {ID_A}"]
    assert number(remaining) == 0 and "can be removed" in remaining
    # TTLs kept, about (the run took far less than 100 s).
    for i in range(TTL_STRINGS):
        assert 900 < r.ttl(HASHER.stored_key(0, f"{MARK}:t:{i}".encode())) <= 1000
    for i in range(STRINGS):
        assert r.ttl(HASHER.stored_key(0, f"{MARK}:s:{i}".encode())) == -1
    assert 1900 < r.ttl(HASHER.stored_key(0, f"{MARK}:h:0".encode())) <= 2000
    assert 2900 < r.ttl(HASHER.stored_key(0, f"{MARK}:l:0".encode())) <= 3000
    # A proxy that knows only B reads everything.
    assert_reads(proxy_b.client(), written)
    assert_quiet(result, r)
    # A second run finds nothing to do.
    again = rekey(rotated)
    assert again.returncode == 0, again.stderr
    s = summary(again.stdout)
    assert number(s["values re-encrypted"]) == 0
    assert number(s[f"values under the current key {ID_B}"]) == VALUES


def test_dry_run_changes_nothing_and_counts(written, rotated, redis_server, proxy_b):
    r = redis_server.client()
    before = snapshot(r)
    ttls = {name: r.pttl(name) for name in before}
    result = rekey(rotated, "--dry-run")
    assert result.returncode == 3, result.stderr  # values remain under A
    assert snapshot(r) == before
    for name, ttl in ttls.items():
        assert r.pttl(name) <= ttl
    s = summary(result.stdout)
    assert "dry run" in result.stdout.splitlines()[0]
    assert number(s["values would be re-encrypted"]) == VALUES
    assert number(s[f"values remaining under old key {ID_A}"]) == VALUES
    assert number(s[f"values under the current key {ID_B}"]) == 0
    assert number(s["keys scanned"]) == KEYS
    assert proxy_b.client().get(f"{MARK}:s:0") is None  # still under A
    assert_quiet(result, r)


def test_undecryptable_values_are_counted_and_left_alone(written, rotated, redis_server,
                                                         proxy_ba, tmp_path):
    r = redis_server.client()
    # A value under a key this configuration does not have (C), via a proxy using C.
    proxy_c = start_proxy(config([redis_server.address], KEY_C))
    try:
        proxy_c.client().set(f"{MARK}:c", f"{MARK}-c")
    finally:
        proxy_c.stop()
    # A value moved to another key (authentication fails), and junk under the prefix.
    s0 = HASHER.stored_key(0, f"{MARK}:s:0".encode())
    s1 = HASHER.stored_key(0, f"{MARK}:s:1".encode())
    r.set(s1, r.get(s0))
    r.set(HASHER.stored_key(0, f"{MARK}:junk".encode()), b"not an envelope at all")
    r.set(PREFIX + "not-a-cachecloak-name", b"x")
    before = {name: r.get(name) for name in
              (s1, HASHER.stored_key(0, f"{MARK}:c".encode()),
               HASHER.stored_key(0, f"{MARK}:junk".encode()))}
    result = rekey(rotated)
    assert result.returncode == 0, result.stderr  # nothing readable remains under A
    for name, blob in before.items():
        assert r.get(name) == blob  # left exactly as it was
    s = summary(result.stdout)
    bad = s["values that do not decrypt (left unchanged; they read as misses)"]
    assert number(bad) == 3
    assert "authentication-failed 1" in bad and "unknown-key-id 1" in bad
    assert "not-an-envelope 1" in bad
    assert f"{ID_C} 1" in s["under key ids this configuration does not have"]
    assert "not named by cachecloak 1" in s["keys scanned"]
    assert number(s["values re-encrypted"]) == VALUES - 1  # s:1 holds s:0's envelope
    assert proxy_ba.client().get(f"{MARK}:s:2") == f"{MARK}-value-2".encode()
    assert_quiet(result, r)


def test_interrupted_run_resumes_and_finishes(redis_server, proxy_a, proxy_b, rotated):
    r = redis_server.client()
    r.flushall()
    c = proxy_a.client()
    total = 400
    pipe = c.pipeline(transaction=False)
    for i in range(total):
        pipe.set(f"{MARK}:r:{i}", f"{MARK}-{i}")
    pipe.execute()
    state = rotated.parent / "state.json"
    args = [sys.executable, "-m", "proxy", "rekey", "--config", str(rotated), "--state",
            str(state), "--rate", "100", "--count", "10", "--progress-interval", "0.1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=proxy_env(), cwd=str(rotated.parent))
    try:
        # A few batches in (0.4 s at 100 keys/s): progress lines were due meanwhile.
        wait_until(lambda: state.exists()
                   and json.loads(state.read_text())["tally"]["keys"] >= 40,
                   timeout=20, what="a few saved batches")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "interrupted" in stdout.splitlines()[0]
    assert "keys scanned" in stderr  # periodic progress lines (stderr is not a terminal)
    ids = envelope_ids(r)
    assert ids[ID_A] > 0 and ids[ID_B] > 0  # stopped half-way
    assert MARK not in stdout + stderr
    first = number(summary(stdout)["values re-encrypted"])
    assert first == ids[ID_B]

    result = rekey(rotated, "--resume")
    assert result.returncode == 0, result.stderr
    assert envelope_ids(r) == Counter({ID_B: total})
    s = summary(result.stdout)
    assert number(s["values re-encrypted"]) == total  # both parts together
    assert number(s[f"values remaining under old key {ID_A}"]) == 0
    assert not state.exists()  # a completed scan removes its state
    assert proxy_b.client().get(f"{MARK}:r:7") == f"{MARK}-7".encode()
    # Nothing left to resume.
    again = rekey(rotated, "--resume")
    assert again.returncode == 2 and "no state file" in again.stderr
    r.flushall()


@pytest.mark.parametrize("kind", ["string", "hash", "list"])
def test_a_write_between_read_and_rewrite_wins(kind, redis_server, proxy_a, proxy_ba,
                                               rotated):
    """The sweep's rewrite is conditional on the key being unchanged since its read."""
    from proxy.cache import Cache
    from proxy.config import load_config
    from proxy.rekey import Options, Progress, Rekey, State, _start_backend

    r = redis_server.client()
    r.flushall()
    a, ba = proxy_a.client(), proxy_ba.client()
    key = f"{MARK}:race:{kind}"
    if kind == "string":
        a.set(key, "old", ex=500)
    elif kind == "hash":
        a.hset(key, mapping={"f1": "old1", "f2": "old2"})
    else:
        a.rpush(key, "e1", "e2", "e3")

    class Racing(Rekey):
        writes = 0

        async def before_write(self, db, name):
            if self.writes == 0:  # once: another client writes meanwhile (under B)
                self.writes += 1
                if kind == "string":
                    ba.set(key, "new", keepttl=True)
                elif kind == "hash":
                    ba.hset(key, "f1", "new1")
                else:
                    ba.lpush(key, "e0")  # shifts every index the sweep read

    async def sweep():
        cfg = load_config(str(rotated)).caches["main"]
        cache = Cache.from_config(cfg, backend=None)
        outer, backend = await _start_backend(cfg)
        try:
            state = State(None, {})
            sweep = Racing(cache, backend, Options(), state,
                           Progress(io.StringIO(), "test", False, 60.0), io.StringIO())
            assert await sweep.run()
            return sweep, state.tally
        finally:
            await outer.close()

    sweep, tally = asyncio.run(sweep())
    assert sweep.writes == 1
    if kind == "string":
        assert ba.get(key) == b"new" and 400 < ba.ttl(key) <= 500
        assert tally.reencrypted == 0  # the concurrent write already was under B
    elif kind == "hash":
        assert ba.hgetall(key) == {b"f1": b"new1", b"f2": b"old2"}
        assert tally.reencrypted == 1  # f2, re-read after the conflict
    else:
        assert ba.lrange(key, 0, -1) == [b"e0", b"e1", b"e2", b"e3"]
        assert tally.reencrypted == 3
    assert envelope_ids(r) == Counter({ID_B: sum(envelope_ids(r).values())})
    assert not tally.remaining
    r.flushall()


def test_writes_during_a_sweep_are_not_lost(redis_server, proxy_a, proxy_ba, rotated):
    r = redis_server.client()
    r.flushall()
    a = proxy_a.client()
    keys = [f"{MARK}:w:{i}" for i in range(60)]
    pipe = a.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, "0")
    pipe.execute()
    last: dict[str, str] = {}
    stop = threading.Event()

    def writer() -> None:
        c = proxy_ba.client()
        deadline = time.monotonic() + 30
        n = 0
        while not stop.is_set() and time.monotonic() < deadline and n < 50_000:
            n += 1
            key = keys[n % len(keys)]
            c.set(key, str(n))
            last[key] = str(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = rekey(rotated, "--rate", "40", "--count", "5")
    finally:
        stop.set()
        thread.join(35)
    assert result.returncode == 0, result.stderr
    c = proxy_ba.client()
    for key in keys:
        assert c.get(key) == last.get(key, "0").encode()
    assert envelope_ids(r) == Counter({ID_B: len(keys)})
    r.flushall()


def test_local_cache_has_nothing_to_rekey(tmp_path):
    cfg = write_config(tmp_path, "caches:\n  - name: mem\n    type: local\n")
    result = rekey(cfg)
    assert result.returncode == 0
    assert "in-process memory" in result.stderr and "nothing to rekey" in result.stderr


def test_several_redis_caches_need_the_cache_option(tmp_path, redis_server, proxy_a):
    second = ("  - name: other\n    type: redis\n    redis:\n"
              f'      addresses: ["{redis_server.address}"]\n      disableTLS: true\n'
              f'    encryption:\n      keys:\n        current: "{KEY_B}"\n'
              f'    hashing:\n      keys:\n        current: "{HASH_KEY}"\n')
    listeners = "listeners:\n  - address: 127.0.0.1:0\n    cache: main\n"
    cfg = write_config(tmp_path, listeners + config([redis_server.address], KEY_B, (KEY_A,),
                                                    more_caches=second))
    result = rekey(cfg)
    assert result.returncode == 2, result.stderr
    assert "--cache" in result.stderr and "main, other" in result.stderr
    r = redis_server.client()
    r.flushall()
    proxy_a.client().set(f"{MARK}:one", "1")
    result = rekey(cfg, "--cache", "main")
    assert result.returncode == 0, result.stderr
    assert number(summary(result.stdout)["values re-encrypted"]) == 1
    r.flushall()


def test_unreachable_redis_is_one_line_and_status_1(tmp_path):
    from tests.servers import free_port

    cfg = write_config(tmp_path, config([f"127.0.0.1:{free_port()}"], KEY_B, (KEY_A,),
                                        timeouts=True))
    result = rekey(cfg)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "cachecloak rekey:" in line]
    assert lines and ("unavailable" in lines[-1] or "refused" in lines[-1]), result.stderr
    assert "Traceback" not in result.stderr


def test_sentinel_finds_the_primary(written, redis_server, proxy_b, tmp_path):
    from tests.topology_servers import MASTER_NAME, start_sentinel

    sentinel = start_sentinel(redis_server.port, quorum=1)
    try:
        cfg = write_config(tmp_path, config(
            [sentinel.address], KEY_B, (KEY_A,), mode="sentinel",
            extra_redis=f"      sentinel:\n        masterName: {MASTER_NAME}\n"))
        result = rekey(cfg)
    finally:
        sentinel.stop()
    assert result.returncode == 0, result.stderr
    assert envelope_ids(redis_server.client()) == Counter({ID_B: VALUES})
    assert number(summary(result.stdout)["values re-encrypted"]) == VALUES
    assert_reads(proxy_b.client(), written)


def test_cluster_is_swept_on_every_primary(tmp_path):
    from tests.cluster_servers import start_cluster

    cluster = start_cluster()
    proxy = None
    try:
        proxy = start_proxy(config(cluster.addresses, KEY_A, mode="cluster"))
        expected = write_data(proxy.client())
        proxy.stop()
        proxy = None
        cfg = write_config(tmp_path, config(cluster.addresses, KEY_B, (KEY_A,),
                                            mode="cluster"))
        result = rekey(cfg)
        assert result.returncode == 0, result.stderr
        per_node = [envelope_ids(node.client()) for node in cluster.nodes]
        assert all(ids[ID_B] > 0 and ids[ID_A] == 0 for ids in per_node), per_node
        assert sum(ids[ID_B] for ids in per_node) == VALUES
        s = summary(result.stdout)
        assert number(s["keys scanned"]) == KEYS
        assert number(s["values re-encrypted"]) == VALUES
        proxy = start_proxy(config(cluster.addresses, KEY_B, mode="cluster"))
        assert_reads(proxy.client(), expected)
        assert MARK not in result.stdout + result.stderr
    finally:
        if proxy is not None:
            proxy.stop()
        cluster.stop()

