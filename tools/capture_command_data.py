"""Capture Redis's COMMAND INFO and COMMAND DOCS replies for the commands cachecloak serves.

Run it from the repository root against a real redis-server:

    python tools/capture_command_data.py              # starts a throwaway redis-server
    python tools/capture_command_data.py --port 6379  # or asks one that is already running

It writes ``proxy/commands/data/redis_commands.json``, which
``proxy.commands.introspection`` replays so that the proxy's answers to COMMAND are
byte-for-byte the ones Redis gives.  For every listed command (and every subcommand of
the listed container commands) the file holds the exact reply bytes Redis sent, in RESP2
and in RESP3, as latin-1 strings:

* ``info2`` / ``info3``: the command's entry of ``COMMAND INFO name`` (the reply without
  its ``*1`` header);
* ``docs2`` / ``docs3``: the command's value in ``COMMAND DOCS name`` (the reply without
  its one-entry header and without the name that keys it).

Redis lists a container's subcommands in its hash-table order, which changes with every
redis-server process, so the containers' (``client``, ``command``, ...) subcommand entries are
sorted by name; each entry keeps Redis's bytes.

Beyond that ordering, this script must never edit the captured bytes, and never write
anything but the JSON file: the proxy's byte-exactness rests on the file being exactly
what Redis answered.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from proxy.commands.introspection import _children, _docs_splice, _info_splice, _string
from tests.servers import RawClient, start_redis

DEFAULT_OUTPUT = REPO_ROOT / "proxy" / "commands" / "data" / "redis_commands.json"

# Commands cachecloak serves now or soon.  Container commands (client, command, cluster) are
# captured together with every one of their subcommands.
COMMANDS: tuple[str, ...] = (
    "get", "set", "setnx", "setex", "psetex", "getset", "getdel", "getex", "mget", "mset",
    "msetnx", "strlen", "incr", "incrby", "decr", "decrby", "incrbyfloat", "append", "setrange",
    "getrange", "del", "unlink", "exists", "touch", "type", "expire", "pexpire", "expireat",
    "pexpireat", "persist", "ttl", "pttl", "expiretime", "pexpiretime", "dbsize", "flushdb",
    "flushall", "rename", "renamenx", "copy", "hset", "hsetnx", "hget", "hmget", "hmset", "hdel",
    "hexists", "hlen", "hgetall", "hkeys", "hvals", "hstrlen", "hincrby", "hincrbyfloat",
    "hrandfield", "sadd", "srem", "sismember", "smismember", "smembers", "scard", "spop",
    "srandmember", "sinter", "sunion", "sdiff", "sinterstore", "sunionstore", "sdiffstore",
    "smove", "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "lrange", "llen", "lindex",
    "lset", "ltrim", "lmove", "rpoplpush", "zadd", "zrem", "zscore", "zmscore", "zincrby",
    "zcard", "zcount", "zrank", "zrevrank", "zrange", "zrangebyscore", "zrevrange",
    "zrevrangebyscore", "zremrangebyscore", "zremrangebyrank",
    "zpopmin", "zpopmax", "keys", "scan", "hscan", "sscan", "zscan",
    "multi", "exec", "discard", "watch", "unwatch", "ping", "echo", "quit",
    "reset", "hello", "auth", "select", "client", "command", "info", "time",
    "cluster", "readonly", "readwrite", "asking", "wait",
)

CONTAINERS: tuple[str, ...] = ("client", "command", "cluster")


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _bulk_array(reply: bytes) -> list[str]:
    """Decode a flat RESP array of bulk strings (the reply of COMMAND LIST)."""
    lines = reply.split(b"\r\n")
    if not lines[0].startswith(b"*"):
        raise ValueError(f"expected an array, got {reply[:40]!r}")
    count = int(lines[0][1:])
    names = [lines[2 + 2 * i].decode() for i in range(count)]
    return names


def _connect(port: int, host: str, proto: int) -> RawClient:
    client = RawClient(port, host=host)
    if proto == 3:
        hello = client.call("HELLO", "3")
        if not hello.startswith(b"%"):
            raise RuntimeError(f"HELLO 3 failed: {hello[:80]!r}")
    return client


def _redis_version(client: RawClient) -> str:
    info = client.call("INFO", "server")
    for line in info.split(b"\r\n"):
        if line.startswith(b"redis_version:"):
            return line.split(b":", 1)[1].decode()
    raise RuntimeError("INFO server did not report redis_version")


def _subcommands(client: RawClient, container: str) -> list[str]:
    reply = client.call("COMMAND", "LIST", "FILTERBY", "PATTERN", f"{container}|*")
    return sorted(_bulk_array(reply))


def _sorted_subcommands(info: bytes, docs: bytes) -> tuple[bytes, bytes]:
    """A container's info and docs with its subcommands sorted by name.

    Redis lists them in its hash-table order, which changes with every redis-server
    process; sorting keeps the file reproducible.  Each subcommand's bytes stay Redis's.
    """
    info_splice = _info_splice(info)
    entries = [info[start:end] for start, end in _children(info, len(info_splice.head))]
    entries.sort(key=lambda entry: _string(entry, _children(entry)[0]))
    docs_splice = _docs_splice(docs)
    spans = _children(docs, len(docs_splice.head))
    pairs = sorted((_string(docs, key), docs[key[0]:key[1]], docs[value[0]:value[1]])
                   for key, value in zip(spans[::2], spans[1::2], strict=True))
    new_info = info_splice.join(entries)
    new_docs = docs_splice.join([part for _, key, value in pairs for part in (key, value)])
    if len(new_info) != len(info) or len(new_docs) != len(docs):
        raise RuntimeError("sorting the subcommands changed the reply's size")
    return new_info, new_docs


def _capture_one(client: RawClient, name: str, proto: int) -> dict[str, bytes] | None:
    """Return this command's info and docs bytes in one protocol, or None if unknown."""
    info = client.call("COMMAND", "INFO", name)
    if info in (b"*1\r\n$-1\r\n", b"*1\r\n_\r\n"):
        return None
    if not info.startswith(b"*1\r\n"):
        raise RuntimeError(f"unexpected COMMAND INFO {name} reply: {info[:80]!r}")
    docs = client.call("COMMAND", "DOCS", name)
    head = (b"*2\r\n" if proto == 2 else b"%1\r\n") + _bulk(name.encode())
    if not docs.startswith(head):
        raise RuntimeError(f"unexpected COMMAND DOCS {name} reply: {docs[:80]!r}")
    info, docs = info[4:], docs[len(head):]
    if name in CONTAINERS:
        info, docs = _sorted_subcommands(info, docs)
    return {"info": info, "docs": docs}


def capture(port: int, host: str = "127.0.0.1",
            commands: Iterable[str] = COMMANDS) -> dict[str, object]:
    wanted = [c.lower() for c in commands]
    clients = {proto: _connect(port, host, proto) for proto in (2, 3)}
    try:
        version = _redis_version(clients[2])
        names = list(wanted)
        for container in CONTAINERS:
            if container in wanted:
                names += _subcommands(clients[2], container)
        entries: dict[str, dict[str, str]] = {}
        missing: list[str] = []
        for name in names:
            entry: dict[str, str] = {}
            for proto, client in clients.items():
                got = _capture_one(client, name, proto)
                if got is None:
                    break
                entry[f"info{proto}"] = got["info"].decode("latin-1")
                entry[f"docs{proto}"] = got["docs"].decode("latin-1")
            else:
                entries[name] = entry
                continue
            missing.append(name)
    finally:
        for client in clients.values():
            client.close()
    return {
        "redis_version": version,
        "generator": "tools/capture_command_data.py",
        "format": "exact RESP reply bytes as latin-1 strings; info<proto>: the command's "
                  "entry in COMMAND INFO <name>; docs<proto>: its value in COMMAND DOCS <name>; "
                  "containers' subcommands sorted by name (Redis uses hash-table order)",
        "not_in_redis": sorted(missing),
        "commands": dict(sorted(entries.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="ask this redis-server instead of starting one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    server = None
    port = args.port
    if port is None:
        server = start_redis()
        port = server.port
    try:
        data = capture(port, args.host)
    finally:
        if server is not None:
            server.stop()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, ensure_ascii=True) + "\n"
    args.output.write_text(text, encoding="ascii")
    print(f"wrote {len(data['commands'])} commands from Redis {data['redis_version']} "
          f"to {args.output} ({len(text)} bytes); not in Redis: {data['not_in_redis']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
