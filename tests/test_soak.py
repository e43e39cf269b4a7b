"""Soak: mixed commands from several clients through cachecloak to a real primary and
replica, with upstream failovers and Redis restarts every few seconds.

What it checks:
* no reply mismatch: every client uses its own keys, every value carries its key name
  and a sequence number, and each reply is checked against what that command can
  answer at that moment (a reply meant for another command or client shows);
* no acknowledged write is lost unless reported: per key the test tracks which values
  it may hold.  A write that got an error reply may or may not have happened.  A write
  acknowledged and then covered by `WAIT 1 ...` answering 1 must survive every later
  failover; one acknowledged but not confirmed may be lost, and is counted and printed
  ("reported"), not failed;
* no hang (every reply within a bound), no connection closed by the proxy, recovery
  without operator action (writes succeed again after the last fault);
* the proxy's memory (RSS) and file descriptors stay flat: sampled after a warm-up and
  at the end, bounded growth allowed;
* afterwards, nothing Redis holds (key names, string values, hash fields and values, set
  members, list elements) contains any plaintext the workload wrote.

The faults, in turn: the primary is killed (SIGKILL), the replica promoted (REPLICAOF NO
ONE) and the old primary restarted empty as a replica of the new one; the replica is
killed and restarted (a full resync); a coordinated switchover (FAILOVER).  Redis runs
without persistence, as a cache does; restarting the primary in place would empty it,
which no WAIT can prevent, so the soak never does that.

Short form in the default suite (about 30 s).  Long form:
`CACHECLOAK_SOAK_SECONDS=600 ./scripts/test tests/test_soak.py` (optionally
`CACHECLOAK_SOAK_FAULT_EVERY=8`, seconds between faults).  Loopback only; everything
is bounded in time and count.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import hiredis
import pytest

from tests.proxyproc import wait_until
from tests.secrets_registry import register_secret
from tests.servers import RawClient, encode_command, free_port, start_proxy, start_redis
from tests.topology_servers import cache_config, kill, start_replica, wait_replica_synced

SOAK_SECONDS = float(os.environ.get("CACHECLOAK_SOAK_SECONDS", "30"))
FAULT_EVERY = float(os.environ.get("CACHECLOAK_SOAK_FAULT_EVERY", "5"))
CALM_END = 5.0  # seconds without faults at the end: the proxy must be serving again
WARM_UP = 2.0  # seconds of load before the first memory / descriptor sample
CLIENTS = 4
REPLY_TIMEOUT = 20.0  # a reply slower than this is a hang (commandTimeout is 2 s)
MAX_OPS = 2_000_000  # per client; the duration bounds it first
RSS_GROWTH_KIB = 24 * 1024  # allowed RSS growth between the samples
FD_GROWTH = 8  # allowed descriptor growth (dedicated connections come and go)
FAST_SYNC = ("--repl-diskless-sync-delay", "0")  # Redis waits 5 s for more replicas
TTL = 3600
COLLECTION_CAP = 400  # pushes per list, members per set; then other operations
MISSING = None


class Mismatch(AssertionError):
    """A reply that this command could not have given."""


def parse(reply: bytes):
    reader = hiredis.Reader()
    reader.feed(reply)
    return reader.gets()


def is_error(value) -> bool:
    return isinstance(value, hiredis.ReplyError)


# -- what each key may hold --------------------------------------------------------------

@dataclass
class Register:
    """A value that writes overwrite (a string, a hash field).  `floor`: one of these is
    replicated for sure; `pending`: (value, acknowledged, wait round) written since."""

    floor: set = field(default_factory=lambda: {MISSING})
    pending: list = field(default_factory=list)
    last_acked: str | None = None

    def possible(self) -> set:
        return self.floor | {value for value, _, _ in self.pending}

    def wrote(self, value: str, acked: bool, round_: int) -> None:
        self.pending.append((value, acked, round_))
        if acked:
            self.last_acked = value

    def confirm(self, round_: int) -> None:
        """WAIT answered >= 1: this round's writes are replicated."""
        acked = [i for i, (_, ok, r) in enumerate(self.pending) if ok and r == round_]
        if acked:
            last = acked[-1]
            self.floor = {self.pending[last][0]}
            self.pending = self.pending[last + 1:]  # only error replies follow it

    def confirmed_value(self) -> str | None:
        return next(iter(self.floor)) if len(self.floor) == 1 and not self.pending else None


@dataclass
class Counter:
    """INCR only: the value is in [low, high]; `low` is replicated for sure."""

    low: int
    high: int
    last_acked: tuple[int, int] | None = None  # (value, wait round)

    def incremented(self, reply: int | None, round_: int) -> None:
        if reply is None:
            self.high += 1
            return
        if not self.low + 1 <= reply <= self.high + 1:
            raise Mismatch(f"INCR answered {reply}, possible {self.low + 1}..{self.high + 1}")
        self.high = reply
        self.last_acked = (reply, round_)

    def confirm(self, round_: int) -> None:
        if self.last_acked is not None and self.last_acked[1] == round_:
            self.low = max(self.low, self.last_acked[0])


@dataclass
class Collection:
    """A list (RPUSH) or a set (SADD): elements only added, each one distinct."""

    added: list = field(default_factory=list)  # in order, acknowledged or not
    acked: list = field(default_factory=list)  # (element, wait round)
    confirmed: set = field(default_factory=set)

    def confirm(self, round_: int) -> None:
        self.confirmed.update(e for e, r in self.acked if r == round_)

    def check_list(self, elements: list[str]) -> None:
        it = iter(self.added)
        if not all(e in it for e in elements):  # a subsequence of what was pushed
            raise Mismatch(f"list of {len(elements)} elements is not a subsequence of the "
                           f"{len(self.added)} pushed")
        missing = self.confirmed - set(elements)
        if missing:
            raise Mismatch(f"{len(missing)} confirmed elements missing from the list")

    def check_set(self, members: set[str]) -> None:
        if not members <= set(self.added):
            raise Mismatch("set holds members never added")
        if self.confirmed - members:
            raise Mismatch(f"{len(self.confirmed - members)} confirmed members missing")


# -- one client --------------------------------------------------------------------------

class Worker(threading.Thread):
    """One connection, its own keys, a random mix of commands, every reply checked."""

    def __init__(self, index: int, port: int, token: str, seed: int, deadline: float):
        super().__init__(daemon=True, name=f"soak-{index}")
        self.index, self.port, self.token = index, port, token
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.ops = self.errors = self.waits_confirmed = self.waits_zero = 0
        self.last_success = 0.0
        self.seq = 0
        self.round = 0  # WAIT rounds: writes are tagged with the round they were made in
        base = f"{token}:c{index}"
        self.strings = {f"{base}:s{i}": Register() for i in range(6)}
        self.counter_base = int(token.split("-")[1], 16) * 1_000_000 + index * 100_000
        self.counters = {f"{base}:n{i}": Counter(self.counter_base, self.counter_base)
                         for i in range(3)}
        self.hashes = {f"{base}:h{i}": {f"{token}-f{j}": Register() for j in range(4)}
                       for i in range(3)}
        self.base = base
        self.lists = {f"{base}:l{i}": Collection() for i in range(2)}
        self.sets = {f"{base}:S{i}": Collection() for i in range(2)}
        self.open = {"l": [*self.lists], "S": [*self.sets]}  # written to; the rest is full
        self.client: RawClient | None = None

    def collection_key(self, kind: str) -> str:
        """A list ("l") or set ("S") to add to; a full one is replaced by a new key, so
        collections stay small however long the soak runs (the full ones stay checked)."""
        models = self.lists if kind == "l" else self.sets
        index = self.rng.randrange(len(self.open[kind]))
        key = self.open[kind][index]
        if len(models[key].added) >= COLLECTION_CAP:
            key = f"{self.base}:{kind}{len(models)}"
            models[key] = Collection()
            self.open[kind][index] = key
        return key

    # values carry the token, their key (and field) and a sequence number
    def value(self, where: str, ttl: bool = False) -> str:
        self.seq += 1
        return (f"{self.token}|{where}|{self.seq}|{'ex' if ttl else '-'}|"
                + "p" * self.rng.randrange(0, 48))

    def check_value(self, reply, where: str, possible: set) -> None:
        got = reply.decode() if isinstance(reply, bytes) else reply
        if got is not None and got.split("|")[1:2] != [where]:
            raise Mismatch(f"value of another key or command: {got[:80]!r} for {where}")
        if got not in possible:
            raise Mismatch(f"{where}: {got!r:.80} not among {len(possible)} possible values")

    # -- the wire --

    def call(self, *args) -> object:
        reply = parse(self.client.call(*args))
        if is_error(reply):
            self.errors += 1
            time.sleep(0.02)  # an outage shows as a bounded burst, not a spin
        else:
            self.last_success = time.monotonic()
        return reply

    def run(self) -> None:
        try:
            with RawClient(self.port, timeout=REPLY_TIMEOUT) as client:
                self.client = client
                self.initialise()
                for _ in range(MAX_OPS):
                    if self.stop.is_set() or time.monotonic() > self.deadline:
                        break
                    self.step()
                    self.ops += 1
        except Mismatch as exc:
            self.problems.append(f"client {self.index}: reply mismatch: {exc}")
        except TimeoutError:
            self.problems.append(f"client {self.index}: no reply within {REPLY_TIMEOUT}s")
        except (OSError, ConnectionError) as exc:
            self.problems.append(f"client {self.index}: {type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as a problem of the run
            self.problems.append(f"client {self.index}: {type(exc).__name__}: {exc}")

    def initialise(self) -> None:
        """Counters start at a distinctive base, replicated before the faults begin."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = all(self.call("SET", k, str(self.counter_base)) == b"OK"
                     for k in self.counters)
            if ok and self.call("WAIT", "1", "1000") == 1:
                self.round += 1
                return
        raise Mismatch("could not initialise the counters")

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.2:
            self.write_string()
        elif roll < 0.3:
            self.incr()
        elif roll < 0.42:
            self.hset()
        elif roll < 0.5:
            self.push_or_add()
        elif roll < 0.55:
            self.transaction()
        elif roll < 0.62:
            self.pipelined()
        elif roll < 0.78:
            self.read()
        else:
            self.wait()

    def write_string(self) -> None:
        key = self.rng.choice(list(self.strings))
        ttl = self.rng.random() < 0.5
        value = self.value(key, ttl)
        args = ("SET", key, value, "EX", str(TTL)) if ttl else ("SET", key, value)
        reply = self.call(*args)
        if not is_error(reply) and reply != b"OK":
            raise Mismatch(f"SET answered {reply!r}")
        self.strings[key].wrote(value, not is_error(reply), self.round)

    def pipelined(self) -> None:
        """SETs and GETs of strings in one write: the proxy makes a batch of them
        (proxy.server.client.Batch), which a fault may cut anywhere.  Replies must come
        in order: a GET right after an acknowledged SET of the same key in the same
        pipeline (one connection, so one server) reads exactly that value."""
        steps = []
        for _ in range(self.rng.randrange(2, 10)):
            key = self.rng.choice(list(self.strings))
            steps.append((key, self.value(key) if self.rng.random() < 0.5 else None))
        self.client.send_raw(b"".join(
            encode_command(("GET", key) if value is None else ("SET", key, value))
            for key, value in steps))
        last_acked: dict[str, str] = {}  # key -> value acknowledged in this pipeline
        failed = False
        for key, value in steps:
            reply = parse(self.client.read_reply())
            if is_error(reply):
                self.errors += 1
                failed = True
                last_acked.pop(key, None)
                if value is not None:
                    self.strings[key].wrote(value, False, self.round)
                continue
            self.last_success = time.monotonic()
            if value is not None:
                if reply != b"OK":
                    raise Mismatch(f"pipelined SET answered {reply!r}")
                self.strings[key].wrote(value, True, self.round)
                last_acked[key] = value
                continue
            self.check_value(reply, key, self.strings[key].possible())
            got = reply.decode() if isinstance(reply, bytes) else reply
            if key in last_acked and got != last_acked[key]:
                raise Mismatch(f"pipelined GET of {key} did not read the SET just before it")
        if failed:
            time.sleep(0.02)  # as call(): an outage shows as a bounded burst

    def incr(self) -> None:
        key = self.rng.choice(list(self.counters))
        reply = self.call("INCR", key)
        if not is_error(reply) and not isinstance(reply, int):
            raise Mismatch(f"INCR answered {reply!r}")
        self.counters[key].incremented(None if is_error(reply) else reply, self.round)

    def hset(self) -> None:
        key = self.rng.choice(list(self.hashes))
        name = self.rng.choice(list(self.hashes[key]))
        value = self.value(f"{key}#{name}")
        reply = self.call("HSET", key, name, value)
        if not is_error(reply) and reply not in (0, 1):
            raise Mismatch(f"HSET answered {reply!r}")
        register = self.hashes[key][name]
        if reply == 1 and MISSING not in register.possible():
            raise Mismatch("HSET created a field that must exist")
        if reply == 0 and not register.possible() - {MISSING}:
            raise Mismatch("HSET found a field never written")
        register.wrote(value, not is_error(reply), self.round)

    def push_or_add(self) -> None:
        if self.rng.random() < 0.5:
            key = self.collection_key("l")
            model = self.lists[key]
            element = self.value(key)
            reply = self.call("RPUSH", key, element)
            model.added.append(element)
            if not is_error(reply):
                if not isinstance(reply, int) or not len(model.confirmed) < reply <= len(
                        model.added):
                    raise Mismatch(f"RPUSH answered {reply!r}")
                model.acked.append((element, self.round))
            return
        key = self.collection_key("S")
        model = self.sets[key]
        member = self.value(key)
        reply = self.call("SADD", key, member)
        model.added.append(member)
        if not is_error(reply):
            if reply != 1:
                raise Mismatch(f"SADD of a new member answered {reply!r}")
            model.acked.append((member, self.round))

    def transaction(self) -> None:
        skey = self.rng.choice(list(self.strings))
        nkey = self.rng.choice(list(self.counters))
        hkey = self.rng.choice(list(self.hashes))
        hname = self.rng.choice(list(self.hashes[hkey]))
        lkey = self.collection_key("l")
        svalue, hvalue = self.value(skey), self.value(f"{hkey}#{hname}")
        element = self.value(lkey)
        commands = [("MULTI",), ("SET", skey, svalue), ("INCR", nkey),
                    ("HSET", hkey, hname, hvalue), ("RPUSH", lkey, element), ("EXEC",)]
        self.client.send_raw(b"".join(encode_command(c) for c in commands))
        replies = [parse(self.client.read_reply()) for _ in commands]
        result = replies[-1]
        ok = (replies[0] == b"OK" and all(r == b"QUEUED" for r in replies[1:-1])
              and isinstance(result, list) and len(result) == 4
              and not any(is_error(r) for r in result))
        if ok:
            self.last_success = time.monotonic()
            if result[0] != b"OK" or not isinstance(result[1], int) or result[2] not in (0, 1) \
                    or not isinstance(result[3], int):
                raise Mismatch(f"EXEC answered {result!r:.200}")
        else:
            self.errors += 1
            for r in replies:
                if not (is_error(r) or r in (b"OK", b"QUEUED") or isinstance(r, list)
                        or r is None):
                    raise Mismatch(f"transaction reply {r!r:.80}")
            time.sleep(0.02)
        self.strings[skey].wrote(svalue, ok, self.round)
        self.counters[nkey].incremented(result[1] if ok else None, self.round)
        self.hashes[hkey][hname].wrote(hvalue, ok, self.round)
        lmodel = self.lists[lkey]
        lmodel.added.append(element)
        if ok:
            if not len(lmodel.confirmed) < result[3] <= len(lmodel.added):
                raise Mismatch(f"RPUSH in EXEC answered {result[3]}")
            lmodel.acked.append((element, self.round))

    def read(self) -> None:
        kind = self.rng.randrange(6)
        if kind == 0:
            key = self.rng.choice(list(self.strings))
            reply = self.call("GET", key)
            if not is_error(reply):
                self.check_value(reply, key, self.strings[key].possible())
        elif kind == 1:
            key = self.rng.choice(list(self.counters))
            reply = self.call("GET", key)
            if not is_error(reply):
                model = self.counters[key]
                if not isinstance(reply, bytes) or not model.low <= int(reply) <= model.high:
                    raise Mismatch(f"counter {reply!r:.40} outside {model.low}..{model.high}")
        elif kind == 2:
            key = self.rng.choice(list(self.hashes))
            name = self.rng.choice(list(self.hashes[key]))
            reply = self.call("HGET", key, name)
            if not is_error(reply):
                self.check_value(reply, f"{key}#{name}", self.hashes[key][name].possible())
        elif kind == 3:
            key = self.rng.choice(list(self.lists))
            reply = self.call("LRANGE", key, "0", "-1")
            if not is_error(reply):
                elements = [e.decode() for e in reply]
                for e in elements:
                    self.check_value(e, key, set(self.lists[key].added))
                self.lists[key].check_list(elements)
        elif kind == 4:
            key = self.rng.choice(list(self.sets))
            reply = self.call("SMEMBERS", key)
            if not is_error(reply):
                members = {m.decode() for m in reply}
                for m in members:
                    self.check_value(m, key, set(self.sets[key].added))
                self.sets[key].check_set(members)
        else:
            key = self.rng.choice(list(self.strings))
            reply = self.call("TTL", key)
            if not is_error(reply) and not (isinstance(reply, int) and -2 <= reply <= TTL):
                raise Mismatch(f"TTL answered {reply!r}")

    def wait(self) -> None:
        reply = self.call("WAIT", "1", str(self.rng.choice((200, 500, 1000))))
        round_ = self.round
        self.round += 1
        if is_error(reply):
            return
        if not isinstance(reply, int) or reply < 0:
            raise Mismatch(f"WAIT answered {reply!r}")
        if reply == 0:
            self.waits_zero += 1
            return
        self.waits_confirmed += 1
        for model in (*self.strings.values(), *self.counters.values(), *self.lists.values(),
                      *self.sets.values(), *(r for h in self.hashes.values() for r in h.values())):
            model.confirm(round_)


# -- the upstream and its faults ---------------------------------------------------------

class Topology:
    """Two redis-server ports that swap roles; restarted servers keep their port, so the
    proxy's `addresses` stay right."""

    def __init__(self) -> None:
        ports = [free_port(), free_port()]
        self.primary = start_redis(*FAST_SYNC, port=ports[0])
        self.replica = start_replica(ports[0], *FAST_SYNC, port=ports[1])
        wait_replica_synced(self.replica)
        self.faults: list[tuple[float, str]] = []

    @property
    def addresses(self) -> list[str]:
        return [self.primary.address, self.replica.address]

    def kill_primary_and_promote(self) -> None:
        old = self.primary
        kill(old)
        time.sleep(0.3)  # clients meet the outage before the promotion
        with self.replica.client(socket_timeout=5) as r:
            r.replicaof("NO", "ONE")
        old.stop()
        self.primary = self.replica
        self.replica = start_replica(self.primary.port, *FAST_SYNC, port=old.port)
        wait_replica_synced(self.replica, timeout=30)

    def restart_replica(self) -> None:
        old = self.replica
        kill(old)
        time.sleep(0.3)
        old.stop()
        self.replica = start_replica(self.primary.port, *FAST_SYNC, port=old.port)
        wait_replica_synced(self.replica, timeout=30)

    def switchover(self) -> None:
        """FAILOVER: the primary pauses writes until the replica caught up, then they swap."""
        with self.primary.client(socket_timeout=5) as p:
            p.execute_command("FAILOVER", "TIMEOUT", "5000")
        old, new = self.primary, self.replica

        def swapped() -> bool:
            with new.client(socket_timeout=2) as n, old.client(socket_timeout=2) as o:
                return (n.execute_command("ROLE")[0] == b"master"
                        and o.info("replication").get("master_link_status") == "up")

        wait_until(swapped, timeout=30, interval=0.05, what="FAILOVER to complete")
        self.primary, self.replica = new, old

    def fault(self, kind: str) -> None:
        getattr(self, kind)()
        self.faults.append((time.monotonic(), kind))

    def stop(self) -> None:
        self.primary.stop()
        self.replica.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _scan_redis(server, needles: list[bytes]) -> list[str]:
    """Everything `server` holds; the needles found in it (never printed themselves)."""
    found: list[str] = []
    blobs = 0
    with server.client(socket_timeout=10) as r:
        for key in r.scan_iter(count=1000):
            kind = r.type(key)
            parts: list[bytes] = [key]
            if kind == b"string":
                parts.append(r.get(key) or b"")
            elif kind == b"hash":
                for f, v in r.hgetall(key).items():
                    parts += [f, v]
            elif kind == b"set":
                parts += list(r.smembers(key))
            elif kind == b"zset":
                parts += [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
            elif kind == b"list":
                parts += r.lrange(key, 0, -1)
            elif kind != b"none":
                found.append(f"unexpected type {kind!r}")
            for part in parts:
                blobs += 1
                for index, needle in enumerate(needles):
                    if needle in part:
                        found.append(f"workload plaintext #{index} in a {kind.decode()} of "
                                     f"{server.address}")
    assert blobs > 0, "nothing stored: the scan would prove nothing"
    return found


def _seq(value) -> int:
    """The sequence number inside a workload value (0 for a missing one)."""
    if value is None:
        return 0
    text = value.decode() if isinstance(value, bytes) else value
    return int(text.split("|")[2])


def _final_check(workers: list[Worker], port: int) -> tuple[list[str], int]:
    """Read every key through the proxy and check it against the model; returns the
    problems and the number of acknowledged writes that were lost (not confirmed by
    WAIT, so reported rather than failed)."""
    problems: list[str] = []
    lost = 0
    with RawClient(port, timeout=REPLY_TIMEOUT) as c:
        def get(*args):
            reply = parse(c.call(*args))
            if is_error(reply):
                raise AssertionError(f"{args[0]} failed after the soak: {reply}")
            return reply

        def register(where: str, value, model: Register) -> None:
            nonlocal lost
            w.check_value(value, where, model.possible())
            if model.last_acked is not None and _seq(value) < _seq(model.last_acked):
                lost += 1  # an older value than the last acknowledged one

        for w in workers:
            try:
                for key, model in w.strings.items():
                    value = get("GET", key)
                    register(key, value, model)
                    ttl = get("TTL", key)
                    if value is None:
                        expected = ttl == -2
                    elif value.decode().split("|")[3] == "ex":
                        expected = 0 < ttl <= TTL
                    else:
                        expected = ttl == -1
                    if not expected:
                        raise Mismatch(f"{key}: TTL {ttl} does not match its value's write")
                for key, counter in w.counters.items():
                    value = int(get("GET", key))
                    if not counter.low <= value <= counter.high:
                        raise Mismatch(f"{key}: {value} outside {counter.low}..{counter.high}")
                for key, fields in w.hashes.items():
                    flat = get("HGETALL", key)
                    got = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
                    for name, model in fields.items():
                        register(f"{key}#{name}", got.pop(name, None), model)
                    if got:
                        raise Mismatch(f"{key}: {len(got)} fields never written")
                for key, elements in w.lists.items():
                    present = [e.decode() for e in get("LRANGE", key, "0", "-1")]
                    elements.check_list(present)
                    lost += sum(1 for e, _ in elements.acked if e not in set(present))
                for key, members in w.sets.items():
                    present = {m.decode() for m in get("SMEMBERS", key)}
                    members.check_set(present)
                    lost += sum(1 for e, _ in members.acked if e not in present)
            except Mismatch as exc:
                problems.append(f"after the soak, client {w.index}: {exc}")
    return problems, lost


@pytest.mark.timeout(int(SOAK_SECONDS) + 240)
def test_soak_with_failovers_and_restarts():
    token = f"soak-{secrets.token_hex(4)}"
    register_secret(token, "workload plaintext")  # never in any log either
    topology = Topology()
    proxy = None
    workers: list[Worker] = []
    try:
        proxy = start_proxy(cache_config(topology.addresses, mode="standalone"))
        pid = proxy.proc.pid
        with RawClient(proxy.port) as c:
            wait_until(lambda: c.call("SET", "warm", "1") == b"+OK\r\n", timeout=10,
                       what="the proxy to find the primary")
        started = time.monotonic()
        deadline = started + SOAK_SECONDS
        workers = [Worker(i, proxy.port, token, seed=1000 + i, deadline=deadline)
                   for i in range(CLIENTS)]
        for w in workers:
            w.start()
        wait_until(lambda: all(w.ops > 20 for w in workers) or any(w.problems for w in workers),
                   timeout=30, what="the clients to start working")
        time.sleep(WARM_UP)
        rss_start, fds_start = _rss_kib(pid), _fds(pid)

        kinds = ["kill_primary_and_promote", "restart_replica", "switchover"]
        next_fault = time.monotonic() + FAULT_EVERY / 2
        count = 0
        while time.monotonic() < deadline - CALM_END:
            if any(w.problems for w in workers) or not any(w.is_alive() for w in workers):
                break
            if time.monotonic() >= next_fault:
                topology.fault(kinds[count % len(kinds)])
                count += 1
                next_fault = time.monotonic() + FAULT_EVERY
            time.sleep(0.05)
        for w in workers:
            w.join(max(deadline - time.monotonic(), 0) + REPLY_TIMEOUT + 5)
        hung = [w.index for w in workers if w.is_alive()]
        for w in workers:
            w.stop.set()
        rss_end, fds_end = _rss_kib(pid), _fds(pid)

        problems = [p for w in workers for p in w.problems]
        if hung:
            problems.append(f"clients {hung} did not finish (hung on a reply)")
        last_fault = topology.faults[-1][0] if topology.faults else started
        final_problems, lost = _final_check(workers, proxy.port)
        ops = sum(w.ops for w in workers)
        print(f"\n[soak] {SOAK_SECONDS:.0f}s, {len(workers)} clients, {ops} operations, "
              f"{sum(w.errors for w in workers)} error replies, faults: "
              f"{[k for _, k in topology.faults]}; WAIT confirmed "
              f"{sum(w.waits_confirmed for w in workers)} times, 0 "
              f"{sum(w.waits_zero for w in workers)} times; acknowledged writes not "
              f"confirmed and lost: {lost}; RSS {rss_start} -> {rss_end} KiB, "
              f"fds {fds_start} -> {fds_end}")

        assert not problems, problems[:10]
        assert not final_problems, final_problems[:10]
        assert len(topology.faults) >= min(3, int((SOAK_SECONDS - CALM_END) / FAULT_EVERY))
        assert all(w.waits_confirmed > 0 for w in workers)
        # Recovered without help: every client wrote successfully after the last fault.
        assert all(w.last_success > last_fault for w in workers), [
            (w.index, w.last_success - last_fault) for w in workers]
        assert rss_end - rss_start <= RSS_GROWTH_KIB, (rss_start, rss_end)
        assert fds_end - fds_start <= FD_GROWTH, (fds_start, fds_end)

        # Nothing Redis holds reveals the workload: every key, value, field, member and
        # element it wrote carries the token; counters carry their distinctive base.
        needles = [token.encode(), str(workers[0].counter_base)[:10].encode()]
        for w in workers:
            needles += [k.encode() for k in (*w.strings, *w.counters, *w.hashes, *w.lists,
                                             *w.sets)]
        leaks = _scan_redis(topology.primary, needles) + _scan_redis(topology.replica, needles)
        assert not leaks, leaks[:10]
    finally:
        for w in workers:
            w.stop.set()
        if proxy is not None:
            proxy.stop()
        topology.stop()
    log = proxy.log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
