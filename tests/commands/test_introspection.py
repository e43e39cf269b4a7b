"""COMMAND replies of proxy.commands.introspection against a real redis-server.

Every byte-for-byte check compares with what the running redis-server answers on a raw
connection, in RESP2 and in RESP3; nothing here hard-codes Redis's replies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources

import hiredis
import pytest

from proxy.commands.introspection import (
    command_count_reply,
    command_docs_reply,
    command_info_reply,
    command_list_reply,
    command_reply,
    redis_version,
)
from tests.servers import RawClient

DATA = json.loads(resources.files("proxy.commands").joinpath("data/redis_commands.json")
                  .read_text(encoding="ascii"))
ALL_NAMES: list[str] = sorted(DATA["commands"])
CONTAINERS = sorted({n.split("|", 1)[0] for n in ALL_NAMES if "|" in n})
PLAIN = [n for n in ALL_NAMES if "|" not in n and n not in CONTAINERS]
PROTOS = (2, 3)


def parse(reply: bytes):
    """Parse one complete reply with hiredis; fail if it is not exactly one RESP value."""
    reader = hiredis.Reader()
    reader.feed(reply)
    value = reader.gets()
    assert value is not False, "incomplete RESP reply"
    assert reader.gets() is False, "bytes left after the reply"
    return value


@pytest.fixture(scope="module")
def raw(redis_server) -> Iterator[dict[int, RawClient]]:
    clients = {2: RawClient(redis_server.port), 3: RawClient(redis_server.port)}
    assert clients[3].call("HELLO", "3").startswith(b"%")
    yield clients
    for client in clients.values():
        client.close()


def test_capture_matches_the_running_redis(raw):
    info = raw[2].call("INFO", "server").decode()
    assert f"redis_version:{redis_version()}\r\n" in info
    assert DATA["redis_version"] == redis_version()


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("name", PLAIN)
def test_info_and_docs_byte_exact(raw, proto, name):
    served = PLAIN
    asked = [name.encode()]
    assert command_info_reply(served, proto, asked) == raw[proto].call("COMMAND", "INFO", name)
    assert command_docs_reply(served, proto, asked) == raw[proto].call("COMMAND", "DOCS", name)


@pytest.mark.parametrize("proto", PROTOS)
def test_info_in_asked_order_with_unknown_and_unserved(raw, proto):
    served = ["get", "set", "ttl", "hset"]
    ours = command_info_reply(served, proto, [b"ttl", b"hget", b"nosuch", b"GET", b"get",
                                              b"get|x", b"Set"])
    theirs = raw[proto].call("COMMAND", "INFO", "ttl", "nosuch1", "nosuch", "GET", "get",
                             "get|x", "Set")
    assert ours == theirs
    assert parse(ours)[1] is None


@pytest.mark.parametrize("proto", PROTOS)
def test_docs_in_asked_order_omit_unknown_and_unserved(raw, proto):
    served = ["get", "set", "ttl"]
    ours = command_docs_reply(served, proto, [b"ttl", b"hget", b"nosuch", b"GET", b"get"])
    theirs = raw[proto].call("COMMAND", "DOCS", "ttl", "nosuch", "GET", "get")
    assert ours == theirs
    assert command_docs_reply(served, proto, [b"hget", b"nosuch"]) == \
        raw[proto].call("COMMAND", "DOCS", "nosuch")


@pytest.mark.parametrize("proto", PROTOS)
def test_docs_of_all_served_is_valid_resp(raw, proto):
    served = ALL_NAMES
    reply = command_docs_reply(served, proto, [])
    value = parse(reply)
    pairs = (list(value.items()) if proto == 3
             else list(zip(value[::2], value[1::2], strict=True)))
    names = [k.decode() for k, _ in pairs]
    assert names == sorted(n for n in ALL_NAMES if "|" not in n)
    for name, docs in pairs:
        if name.decode() in CONTAINERS:
            continue
        redis_docs = parse(raw[proto].call("COMMAND", "DOCS", name))
        assert (redis_docs[name] if proto == 3 else redis_docs[1]) == docs


@pytest.mark.parametrize("proto", PROTOS)
def test_command_lists_every_served_command(raw, proto):
    served = ["zadd", "get", "nosuch", "set", "hset"]
    reply = command_reply(served, proto)
    expected = [b"*4\r\n"]
    for name in sorted(["zadd", "get", "set", "hset"]):
        expected.append(raw[proto].call("COMMAND", "INFO", name)[len(b"*1\r\n"):])
    assert reply == b"".join(expected)
    assert command_info_reply(served, proto, []) == reply
    assert [entry[0] for entry in parse(reply)] == [b"get", b"hset", b"set", b"zadd"]


@pytest.mark.parametrize("proto", PROTOS)
def test_count(proto):
    assert command_count_reply(PLAIN, proto) == b":%d\r\n" % len(PLAIN)
    assert command_count_reply(["get", "set", "nosuch"], proto) == b":2\r\n"
    assert command_count_reply(["get", "client|setname"], proto) == b":2\r\n"
    assert command_count_reply([], proto) == b":0\r\n"


SERVED_WITH_SUBS = [*PLAIN, "client", "client|setname", "client|getname", "client|id",
                    "command|docs", "command|count", "command|list", "command|info"]


def redis_list(client: RawClient, *args: str) -> list[str]:
    return [n.decode() for n in parse(client.call("COMMAND", "LIST", *args))]


@pytest.mark.parametrize("proto", PROTOS)
def test_list_without_filter(raw, proto):
    ours = [n.decode() for n in parse(command_list_reply(SERVED_WITH_SUBS, proto, None))]
    assert ours == sorted([*SERVED_WITH_SUBS, "command"])
    assert command_list_reply(SERVED_WITH_SUBS, proto, []) == \
        command_list_reply(SERVED_WITH_SUBS, proto, None)
    assert set(redis_list(raw[proto])) >= set(ours)


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("kind,value", [
    ("ACLCAT", "hash"), ("ACLCAT", "read"), ("ACLCAT", "connection"), ("ACLCAT", "WRITE"),
    ("ACLCAT", "@read"), ("ACLCAT", "nosuchcat"),
    ("PATTERN", "h*"), ("PATTERN", "client|*"), ("PATTERN", "*RANGE*"), ("PATTERN", "?et"),
    ("PATTERN", "z[ar]*"),
    ("MODULE", "foo"),
])
def test_list_filterby(raw, proto, kind, value):
    listed = set(SERVED_WITH_SUBS) | {"command"}
    expected = sorted(set(redis_list(raw[proto], "FILTERBY", kind, value)) & listed)
    reply = command_list_reply(SERVED_WITH_SUBS, proto, [b"FILTERBY", kind.encode(),
                                                         value.encode()])
    assert [n.decode() for n in parse(reply)] == expected
    # the caller may also hand over the arguments without the FILTERBY keyword
    assert command_list_reply(SERVED_WITH_SUBS, proto, [kind.encode(), value.encode()]) == reply


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("args", [
    [b"FILTERBY"], [b"FILTERBY", b"PATTERN"], [b"FILTERBY", b"NOPE", b"x"], [b"x"],
    [b"FILTERBY", b"PATTERN", b"*", b"extra"],
])
def test_list_syntax_errors(raw, proto, args):
    ours = command_list_reply(PLAIN, proto, args)
    assert ours == raw[proto].call("COMMAND", "LIST", *args)


def _subcommand_infos(entry: list) -> dict[bytes, list]:
    return {sub[0]: sub for sub in entry[9]}


def _docs_value(parsed, proto: int):
    return parsed[next(iter(parsed))] if proto == 3 else parsed[1]


def _docs_subcommands(docs, proto: int) -> dict:
    if proto == 3:
        return docs[b"subcommands"]
    fields = dict(zip(docs[::2], docs[1::2], strict=True))
    subs = fields[b"subcommands"]
    return dict(zip(subs[::2], subs[1::2], strict=True))


@pytest.mark.parametrize("proto", PROTOS)
def test_container_lists_only_served_subcommands(raw, proto):
    served = SERVED_WITH_SUBS
    ours = parse(command_info_reply(served, proto, [b"client", b"command"]))
    theirs = parse(raw[proto].call("COMMAND", "INFO", "client", "command"))
    for mine, redis in zip(ours, theirs, strict=True):
        assert mine[:9] == redis[:9]
        container = mine[0].decode()
        wanted = sorted(n for n in served if n.startswith(container + "|"))
        assert [sub[0].decode() for sub in mine[9]] == wanted
        redis_subs = _subcommand_infos(redis)
        for sub in mine[9]:
            assert sub == redis_subs[sub[0]]

    for container in ("client", "command"):
        mine = _docs_value(parse(command_docs_reply(served, proto, [container.encode()])), proto)
        redis = _docs_value(parse(raw[proto].call("COMMAND", "DOCS", container)), proto)
        mine_subs = _docs_subcommands(mine, proto)
        redis_subs = _docs_subcommands(redis, proto)
        assert sorted(k.decode() for k in mine_subs) == \
            sorted(n for n in served if n.startswith(container + "|"))
        for name, docs in mine_subs.items():
            assert docs == redis_subs[name]
        if proto == 3:
            assert {k: v for k, v in mine.items() if k != b"subcommands"} == \
                {k: v for k, v in redis.items() if k != b"subcommands"}


@pytest.mark.parametrize("proto", PROTOS)
def test_container_with_every_subcommand_matches_redis_but_for_order(raw, proto):
    ours = command_info_reply(ALL_NAMES, proto, [b"client"])
    theirs = raw[proto].call("COMMAND", "INFO", "client")
    assert len(ours) == len(theirs)
    mine, redis = parse(ours)[0], parse(theirs)[0]
    assert mine[:9] == redis[:9]
    assert sorted(mine[9]) == sorted(redis[9])
    ours_docs = command_docs_reply(ALL_NAMES, proto, [b"client"])
    theirs_docs = raw[proto].call("COMMAND", "DOCS", "client")
    assert len(ours_docs) == len(theirs_docs)
    assert _docs_subcommands(_docs_value(parse(ours_docs), proto), proto) == \
        _docs_subcommands(_docs_value(parse(theirs_docs), proto), proto)


@pytest.mark.parametrize("proto", PROTOS)
def test_subcommands_by_full_name(raw, proto):
    served = ["client", "client|setname"]
    for name in ("client|setname", "CLIENT|SETNAME"):
        assert command_info_reply(served, proto, [name.encode()]) == \
            raw[proto].call("COMMAND", "INFO", name)
        assert command_docs_reply(served, proto, [name.encode()]) == \
            raw[proto].call("COMMAND", "DOCS", name)
    # a real but unserved subcommand is as unknown as a made-up one
    assert command_info_reply(served, proto, [b"client|kill"]) == \
        raw[proto].call("COMMAND", "INFO", "client|nosuch")
    assert command_docs_reply(served, proto, [b"client|kill"]) == \
        raw[proto].call("COMMAND", "DOCS", "client|nosuch")


@pytest.mark.parametrize("proto", PROTOS)
def test_container_without_served_subcommands(proto):
    entry = parse(command_info_reply(["client"], proto, [b"client"]))[0]
    assert entry[0] == b"client"
    assert entry[9] == []
    docs = _docs_value(parse(command_docs_reply(["client"], proto, [b"client"])), proto)
    assert _docs_subcommands(docs, proto) == {}
    assert parse(command_list_reply(["client"], proto, None)) == [b"client"]


def test_a_subcommand_implies_its_container():
    assert parse(command_list_reply(["command|docs"], 2, None)) == [b"command", b"command|docs"]
    entry = parse(command_reply(["command|docs"], 2))[0]
    assert entry[0] == b"command"
    assert [sub[0] for sub in entry[9]] == [b"command|docs"]


def test_bad_proto_is_refused():
    with pytest.raises(ValueError):
        command_reply(["get"], 1)
