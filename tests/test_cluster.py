"""Redis Cluster through the proxy: a real three-primary cluster on loopback ports.

What is proven here, against real redis-server processes only:

* the proxy's slot function is Redis's (CLUSTER KEYSLOT), and keys sharing a hash tag
  share a slot after hashing (CLUSTER KEYSLOT on the stored names read back by SCAN);
* data spreads over the primaries, and multi-key commands whose keys live in several
  slots answer byte for byte what a standalone Redis answers for the same commands;
* MSETNX across slots gets Redis Cluster's CROSSSLOT error, and works within a hash tag;
* a slot migrated under traffic (SETSLOT IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE):
  the proxy follows ASK and MOVED (counted in INFO), no client sees an error, every value
  reads back;
* DBSIZE / FLUSHDB cover every node, with a prefix (SCAN) and without (broadcast);
* no client key, tag or value is ever stored in plaintext.

Every loop and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from hiredis import ReplyError

from proxy.backends.redis.cluster import ClusterBackend, key_slot
from proxy.commands.table import Command
from proxy.config.schema import CacheConfig, RedisConfig
from proxy.crypto import KeyHasher
from tests.cluster_servers import RedisCluster, start_cluster
from tests.proxyproc import wait_until
from tests.servers import (
    RawClient,
    encode_command,
    free_port,
    info_fields,
    start_proxy,
    start_redis,
)

ENC = "3c" * 32
HASH = "4d" * 32
PREFIX = "cc:"
SECRET = "plaintextmarker"  # appears in client keys and values; must never reach Redis

HASHER = KeyHasher("main", bytes.fromhex(HASH), PREFIX.encode(), True, 16)


def cluster_config(addresses: list[str], *, keys: str = f'    keys:\n      prefix: "{PREFIX}"\n',
                   pool_size: int = 2) -> str:
    seeds = ", ".join(f'"{a}"' for a in addresses)
    return f"""\
caches:
  - name: main
    type: redis
    redis:
      mode: cluster
      addresses: [{seeds}]
      disableTLS: true
      poolSize: {pool_size}
{keys}    encryption:
      keys:
        current: "{ENC}"
    hashing:
      keys:
        current: "{HASH}"
"""


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def proxy(cluster: RedisCluster):
    # One seed is enough: the other primaries come from the slot map.
    proxy = start_proxy(cluster_config(cluster.addresses[:1]))
    yield proxy
    assert proxy.stop() == 0, proxy.log()


@pytest.fixture(scope="module")
def standalone():
    server = start_redis()
    yield server
    server.stop()


def stored(key: str, db: int = 0) -> bytes:
    return HASHER.stored_key(db, key.encode())


def node_of(cluster: RedisCluster, slot: int) -> int:
    return cluster.owner_of(slot).port


def all_stored_names(cluster: RedisCluster) -> dict[int, list[bytes]]:
    """port -> every key stored on that node (SCAN, bounded by the cursor)."""
    names = {}
    for node in cluster.nodes:
        client = node.client()
        names[node.port] = list(client.scan_iter(count=1000))
        client.close()
    return names


def assert_no_plaintext(cluster: RedisCluster, *texts: str) -> None:
    for node in cluster.nodes:
        client = node.client()
        for name in client.scan_iter(count=1000):
            blob = client.dump(name) or b""
            for text in texts:
                assert text.encode() not in name, "a client key reached Redis in plaintext"
                assert text.encode() not in blob, "a value reached Redis in plaintext"
        client.close()


def flush(proxy) -> None:
    with RawClient(proxy.port) as client:
        assert client.call("FLUSHDB") == b"+OK\r\n"


def run_pipeline(port: int, commands: list[tuple]) -> list[bytes]:
    """Send every command in one write, then read every reply: exact bytes."""
    with RawClient(port) as client:
        client.send_raw(b"".join(encode_command(c) for c in commands))
        return [client.read_reply() for _ in commands]


# ---------------------------------------------------------------------------------------


def test_key_slot_is_cluster_keyslot(cluster: RedisCluster):
    rng = random.Random(7)
    keys = [b"", b"foo", b"{user1000}.following", b"{}x", b"{}{x}", b"a{b}c{d}", b"{{a}}",
            b"x{", b"x}y{z}", b"\xff\x00{\x80}", b"{" * 3 + b"}"]
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
             for _ in range(300)]
    keys += [stored(f"k{i}") for i in range(100)] + [stored(f"{{t{i}}}x") for i in range(50)]
    client = cluster.nodes[0].client()
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("CLUSTER", "KEYSLOT", key)
    assert pipe.execute() == [key_slot(key) for key in keys]
    client.close()


def test_backend_describes_cluster(proxy):
    fields = info_fields(proxy.port)
    assert fields["cache_backend"] == "redis cluster (3 primaries)"
    assert fields["upstream_ready"] == "1"
    assert fields["cluster_slots_covered"] == "16384"


def test_set_get_spreads_over_nodes(cluster: RedisCluster, proxy):
    flush(proxy)
    keys = [f"{SECRET}:{i}" for i in range(60)]
    replies = run_pipeline(proxy.port, [("SET", k, f"{SECRET}-value-{k}") for k in keys]
                           + [("GET", k) for k in keys])
    assert replies[:60] == [b"+OK\r\n"] * 60
    for key, reply in zip(keys, replies[60:], strict=True):
        value = f"{SECRET}-value-{key}".encode()
        assert reply == b"$%d\r\n%s\r\n" % (len(value), value)
    names = all_stored_names(cluster)
    assert sum(len(n) for n in names.values()) == 60
    assert all(len(n) > 0 for n in names.values()), "every primary should hold some keys"
    for port, node_names in names.items():  # each key is on the node serving its slot
        assert all(node_of(cluster, key_slot(name)) == port for name in node_names)
    assert_no_plaintext(cluster, SECRET)


MULTI_KEYS = [f"mk{i}" for i in range(12)]
TAGGED = ["{grp}a", "{grp}b", "{grp}c"]


def multikey_script() -> list[tuple]:
    k = MULTI_KEYS
    return [
        ("MSET", *[x for key in k[:8] for x in (key, f"value of {key}")]),
        ("MGET", *k),
        ("MGET", k[5], k[0], "missing", k[5], k[11], k[3]),
        ("EXISTS", *k),
        ("EXISTS", k[0], k[0], k[1], "missing", k[7]),
        ("TOUCH", k[2], k[3], k[9], k[4]),
        ("DEL", k[0], k[1], k[10]),
        ("DEL", k[0], k[1]),
        ("UNLINK", k[2], k[2], k[3], k[11]),
        ("MGET", *k),
        ("MSET", k[0], "a", k[9], "b", k[0], "c"),  # the last value of a key wins
        ("MGET", k[0], k[9]),
        ("MSET", *[x for key in TAGGED for x in (key, key * 2)]),
        ("MGET", *TAGGED, k[0]),
        ("DEL", *TAGGED, k[0], k[9]),
        ("EXISTS", *k, *TAGGED),
        ("UNLINK", *k),
        ("DBSIZE",),
    ]


def test_multikey_commands_match_standalone(cluster: RedisCluster, proxy, standalone):
    slots = {key_slot(stored(key)) for key in MULTI_KEYS}
    nodes = {node_of(cluster, slot) for slot in slots}
    assert len(slots) == len(MULTI_KEYS) and len(nodes) == 3, "keys must span slots and nodes"
    flush(proxy)
    with RawClient(standalone.port) as client:
        client.call("FLUSHALL")
    script = multikey_script()
    expected = run_pipeline(standalone.port, script)
    assert run_pipeline(proxy.port, script) == expected
    # One at a time too (no pipelining): the same bytes.
    flush(proxy)
    with RawClient(standalone.port) as client:
        client.call("FLUSHALL")
        expected = [client.call(*command) for command in script]
    with RawClient(proxy.port) as client:
        assert [client.call(*command) for command in script] == expected


def test_msetnx_crossslot_and_hash_tag(cluster: RedisCluster, proxy):
    flush(proxy)
    assert key_slot(stored("nx1")) != key_slot(stored("nx2"))
    with RawClient(proxy.port) as client:
        assert client.call("MSETNX", "nx1", "a", "nx2", "b") == (
            b"-CROSSSLOT Keys in request don't hash to the same slot\r\n")
        assert client.call("EXISTS", "nx1", "nx2") == b":0\r\n"  # nothing was written
        assert client.call("MSETNX", "{t}nx1", "a", "{t}nx2", "b") == b":1\r\n"
        assert client.call("MSETNX", "{t}nx2", "c", "{t}nx3", "d") == b":0\r\n"
        assert client.call("MGET", "{t}nx1", "{t}nx2", "{t}nx3") == (
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n")
        assert client.call("MSETNX", "nx1", "a") == b":1\r\n"  # one key: one slot


def test_hash_tags_share_a_slot_after_hashing(cluster: RedisCluster, proxy):
    flush(proxy)
    groups = {tag: [f"{{{tag}}}", f"{{{tag}}}.name", f"x{{{tag}}}y", f"{{{tag}}}{{other}}"]
              for tag in (f"{SECRET}-user-1", f"{SECRET}-user-2")}
    keys = [key for group in groups.values() for key in group]
    assert run_pipeline(proxy.port, [("SET", k, f"{SECRET} {k}") for k in keys]) == (
        [b"+OK\r\n"] * len(keys))
    names = [name for node_names in all_stored_names(cluster).values() for name in node_names]
    assert len(names) == len(keys)
    client = cluster.nodes[0].client()
    slot_of = {name: client.execute_command("CLUSTER", "KEYSLOT", name) for name in names}
    client.close()
    by_slot: dict[int, list[bytes]] = {}
    for name, slot in slot_of.items():
        by_slot.setdefault(slot, []).append(name)
    # Each tag's four keys share one slot, and the two tags do not share theirs.
    assert sorted(len(group) for group in by_slot.values()) == [4, 4]
    for group in groups.values():
        assert {slot_of[stored(key)] for key in group} == {key_slot(stored(group[0]))}
    for name in names:
        assert name.startswith(PREFIX.encode() + b"0:{")
    assert_no_plaintext(cluster, SECRET, "user-1", "user-2", "other")
    # Multi-key commands within a tag need no split: the node executes them as one.
    group = groups[f"{SECRET}-user-1"]
    with RawClient(proxy.port) as proxy_client:
        assert proxy_client.call("DEL", *group) == b":4\r\n"


def test_flushdb_and_dbsize_across_nodes(cluster: RedisCluster, proxy):
    flush(proxy)
    commands = [("SET", f"fd{i}", "v") for i in range(40)]
    run_pipeline(proxy.port, commands)
    with RawClient(proxy.port) as client:
        client.call("SELECT", "1")
        for i in range(5):
            client.call("SET", f"fd{i}", "other db")
        assert client.call("DBSIZE") == b":5\r\n"
        client.call("SELECT", "0")
        assert client.call("DBSIZE") == b":40\r\n"
        names = all_stored_names(cluster)
        assert all(len(n) > 0 for n in names.values())
        assert sum(len(n) for n in names.values()) == 45
        assert client.call("FLUSHDB") == b"+OK\r\n"
        assert client.call("DBSIZE") == b":0\r\n"
        client.call("SELECT", "1")
        assert client.call("DBSIZE") == b":5\r\n"  # another logical db: untouched
        assert client.call("FLUSHALL") == b"+OK\r\n"
        assert client.call("DBSIZE") == b":0\r\n"
    assert sum(len(n) for n in all_stored_names(cluster).values()) == 0


def test_dbsize_and_flushdb_without_prefix_go_to_every_primary(cluster: RedisCluster, proxy):
    flush(proxy)
    bare = start_proxy(cluster_config(cluster.addresses, keys="    keys:\n"
                                      "      disablePrefix: true\n", pool_size=1))
    try:
        run_pipeline(bare.port, [("SET", f"np{i}", "v") for i in range(30)])
        names = all_stored_names(cluster)
        assert all(len(n) > 0 for n in names.values())
        with RawClient(bare.port) as client:
            assert client.call("DBSIZE") == b":30\r\n"
            assert client.call("FLUSHDB") == b"+OK\r\n"
            assert client.call("DBSIZE") == b":0\r\n"
            assert client.call("MSET", "np1", "a", "np2", "b") == b"+OK\r\n"
            assert client.call("FLUSHALL", "ASYNC") == b"+OK\r\n"
            assert client.call("DBSIZE") == b":0\r\n"
    finally:
        assert bare.stop() == 0, bare.log()
    assert sum(len(n) for n in all_stored_names(cluster).values()) == 0


def test_slot_migration_under_traffic_follows_ask_and_moved(cluster: RedisCluster, proxy):
    flush(proxy)
    keys = [f"{{{SECRET}-mig}}:{i}" for i in range(20)]
    missing = f"{{{SECRET}-mig}}:missing"  # same slot, never written
    slot = key_slot(stored(keys[0]))
    assert {key_slot(stored(k)) for k in keys} == {slot}
    others = [f"other{i}" for i in range(4)]  # other slots: MGET and EXISTS are split
    assert slot not in {key_slot(stored(k)) for k in others}
    run_pipeline(proxy.port, [("SET", k, k) for k in others])
    run_pipeline(proxy.port, [("SET", k, "initial") for k in keys])
    source = cluster.owner_of(slot)
    target = next(node for node in cluster.nodes if node is not source)
    ids = cluster.node_ids()
    before = info_fields(proxy.port)

    stop = threading.Event()
    problems: list[str] = []
    rounds = {"single": 0, "multi": 0}

    def single_key_round(round_: int) -> tuple[list[bytes], list[bytes]]:
        """SET then GET of every key of the migrating slot."""
        batch, expected = [], []
        for i, key in enumerate(keys):
            value = f"{SECRET} {i} {round_}".encode()
            batch += [encode_command(("SET", key, value)), encode_command(("GET", key))]
            expected += [b"+OK\r\n", b"$%d\r\n%s\r\n" % (len(value), value)]
        return batch, expected

    def multi_key_round(round_: int) -> tuple[list[bytes], list[bytes]]:
        """MGET / EXISTS split over slots, one part in the migrating slot (ASK, then
        TRYAGAIN while its keys are on two nodes), and a tagged MSET in that slot."""
        tagged = [f"{{{SECRET}-mig}}:m{j}" for j in range(3)]
        value = f"{SECRET} m {round_}".encode()
        bulk = b"$%d\r\n%s\r\n" % (len(value), value)
        batch = [encode_command(("MSET", *[x for k in tagged for x in (k, value)])),
                 encode_command(("MGET", others[0], *tagged, missing, *others[1:])),
                 encode_command(("EXISTS", *others, *tagged, missing))]
        expected = [b"+OK\r\n",
                    b"*%d\r\n" % (len(tagged) + len(others) + 1) + b"$6\r\nother0\r\n"
                    + bulk * len(tagged) + b"$-1\r\n"
                    + b"".join(b"$6\r\n%s\r\n" % k.encode() for k in others[1:]),
                    b":%d\r\n" % (len(others) + len(tagged))]
        return batch, expected

    def traffic(kind: str, make_round) -> None:
        """Pipelined rounds until told to stop (at most 100000): every reply checked."""
        try:
            with RawClient(proxy.port) as client:
                for round_ in range(100_000):
                    if stop.is_set() or problems:
                        return
                    batch, expected = make_round(round_)
                    client.send_raw(b"".join(batch))
                    for want in expected:
                        if (reply := client.read_reply()) != want:
                            problems.append(f"{kind}: {want[:30]!r} -> {reply[:80]!r}")
                    rounds[kind] = round_ + 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            problems.append(f"{kind}: {exc!r}")

    def counter(name: str) -> int:
        return int(info_fields(proxy.port)[name]) - int(before[name])

    threads = [threading.Thread(target=traffic, args=("single", single_key_round), daemon=True),
               threading.Thread(target=traffic, args=("multi", multi_key_round), daemon=True)]
    for thread in threads:
        thread.start()
    src, dst = source.client(), target.client()
    try:
        wait_until(lambda: min(rounds.values()) >= 3, timeout=10, what="traffic")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
        # One key at a time, with traffic in between: some keys are on the source, some on
        # the target; commands for keys already moved get ASK.
        for _ in range(len(keys) + 10):
            batch = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1)
            if not batch:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                                "KEYS", *batch)
            time.sleep(0.01)
        assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        wait_until(lambda: counter("cluster_ask_redirects") > 0, timeout=10, what="ASK")
        for node in (target, source, *[n for n in cluster.nodes if n not in (source, target)]):
            client = node.client()
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
            client.close()
        wait_until(lambda: counter("cluster_moved_redirects") > 0, timeout=10, what="MOVED")
        done = dict(rounds)
        wait_until(lambda: all(rounds[k] >= done[k] + 3 for k in rounds) or problems,
                   timeout=10, what="traffic after the migration")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        src.close()
        dst.close()
    assert not any(thread.is_alive() for thread in threads)
    assert problems == [], problems[:5]
    assert counter("cluster_ask_redirects") > 0
    assert counter("cluster_moved_redirects") > 0
    wait_until(cluster.stable, timeout=15, what="the cluster to agree on the new slot map")
    assert cluster.owner_of(slot) is target
    client = target.client()
    assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == len(keys) + 3
    client.close()
    # Every value reads back, through a new client (its own connections) too.
    last = rounds["single"] - 1
    replies = run_pipeline(proxy.port, [("GET", key) for key in keys])
    for i, reply in enumerate(replies):
        value = f"{SECRET} {i} {last}".encode()
        assert reply == b"$%d\r\n%s\r\n" % (len(value), value), reply
    assert_no_plaintext(cluster, SECRET)


def test_unreachable_cluster_does_not_stop_the_proxy(cluster: RedisCluster):
    """Seeds that refuse connections: the proxy starts at once, says why commands fail,
    and is not ready; a reachable seed later in the list is found."""
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    down = start_proxy(cluster_config([closed]))
    try:
        assert time.monotonic() - started < 5
        with RawClient(down.port) as client:
            reply = client.call("GET", "k")
            assert reply.startswith(b"-ERR cachecloak: the Redis Cluster slot map"), reply
            assert b"retrying" in reply
            assert client.call("DBSIZE").startswith(b"-ERR cachecloak:")
        assert info_fields(down.port)["upstream_ready"] == "0"
    finally:
        assert down.stop() == 0, down.log()
    found = start_proxy(cluster_config([closed, cluster.addresses[1]]))
    try:
        with RawClient(found.port) as client:
            assert client.call("SET", "k", "v") == b"+OK\r\n"
            assert client.call("GET", "k") == b"$1\r\nv\r\n"
        assert info_fields(found.port)["upstream_ready"] == "1"
    finally:
        assert found.stop() == 0, found.log()


class CountingWaiter:
    """Records every completion, to prove each waiter is completed exactly once."""

    client = None

    def __init__(self):
        self.calls: list[tuple[str, object]] = []
        self.done = asyncio.Event()

    def complete(self, reply) -> None:
        self.calls.append(("complete", reply))
        self.done.set()

    def fail(self, error_reply: bytes) -> None:
        self.calls.append(("fail", error_reply))
        self.done.set()


def test_backend_in_process_redirects_and_splits(cluster: RedisCluster):
    """The backend object itself against the real cluster: a stale slot map entry is
    corrected by MOVED (counted in `moved_redirects`), an unmapped slot is refused and
    reloaded, split replies complete their waiter exactly once, and a command without a
    split mode whose keys span slots gets Redis's own CROSSSLOT."""
    host, port = cluster.addresses[2].rsplit(":", 1)
    cfg = CacheConfig(name="inproc", type="redis", redis=RedisConfig(
        addresses=[(host, int(port))], raw_addresses=[cluster.addresses[2]],
        disable_tls=True, mode="cluster", pool_size=1))

    async def scenario():
        backend = ClusterBackend(cfg)
        await backend.start()
        try:
            assert backend.ready() and backend.description == "redis cluster (3 primaries)"
            route = backend.route()
            keys = [b"inproc:%d" % i for i in range(12)]
            assert len({backend.slots[key_slot(k)] for k in keys}) == 3
            assert await route.call([b"MSET", *[x for k in keys for x in (k, k + b"!")]]) == (
                b"OK")
            # A stale entry: the slot points at the wrong primary; MOVED corrects it.
            slot = key_slot(keys[0])
            right = backend.slots[slot]
            wrong = next(n for n in backend.primaries if n is not right)
            backend.slots[slot] = wrong
            assert await route.call([b"GET", keys[0]]) == keys[0] + b"!"
            assert backend.moved_redirects == 1 and backend.slots[slot] is right
            # Split commands: one completion each, replies in key order.
            backend.slots[slot] = wrong
            waiters = [CountingWaiter() for _ in range(3)]
            route.submit([b"MGET", *reversed(keys), b"nope"], waiters[0], _command(b"mget"))
            route.submit([b"DEL", b"nope", *keys[:5]], waiters[1], _command(b"del"))
            route.submit([b"EXISTS", *keys], waiters[2], _command(b"exists"))
            route.flush()
            for waiter in waiters:
                await asyncio.wait_for(waiter.done.wait(), 5)
            await asyncio.sleep(0.05)  # nothing completes a second time
            assert [w.calls for w in waiters] == [
                [("complete", [k + b"!" for k in reversed(keys)] + [None])],
                [("complete", 5)],
                [("complete", 7)]]
            # The slot's part of each of the three was sent before the first MOVED came back.
            assert backend.moved_redirects == 4 and backend.slots[slot] is right
            # No split mode: the first key's node answers CROSSSLOT itself.
            plain = Command("fake", -2, keys=(1, -1, 1))
            waiter = CountingWaiter()
            route.submit([b"EXISTS", keys[5], keys[6], keys[7]], waiter, plain)
            route.flush()
            await asyncio.wait_for(waiter.done.wait(), 5)
            (kind, reply), = waiter.calls
            assert kind == "complete" and type(reply) is ReplyError
            assert str(reply).startswith("CROSSSLOT")
            # An unmapped slot: refused at once, then the map is loaded again.
            loads = backend.refreshes
            backend.slots[slot] = None
            with pytest.raises(Exception, match="CLUSTERDOWN Hash slot not served"):
                await route.call([b"GET", keys[0]])
            for _ in range(100):
                if backend.refreshes > loads:
                    break
                await asyncio.sleep(0.02)
            assert backend.slots[slot] is right and backend.ready()
            # Keyless: every primary answers; integers add up.
            assert await route.call([b"PING"]) == b"PONG"
            assert await route.count_prefix(b"inproc:") == 7
            assert await route.delete_prefix(b"inproc:") == 7
            assert await route.count_prefix(b"inproc:") == 0
            backend.release(route)
        finally:
            await backend.close()

    asyncio.run(scenario())


def _command(name: bytes) -> Command:
    from proxy.commands.table import TABLE

    return TABLE[name]
