"""Cachecloak's answers to the COMMAND command, byte-exact with the Redis they were captured from.

Clients ask COMMAND when they connect (redis-cli sends COMMAND DOCS to build its hints,
others read COMMAND INFO for key positions).  cachecloak must describe only the commands it
serves, and describe each of them exactly as Redis does.  The replies Redis gave are in
``data/redis_commands.json`` (written by ``tools/capture_command_data.py``): for every
command, its COMMAND INFO entry and its COMMAND DOCS value as raw RESP2 and RESP3 bytes.
This module replays those bytes.  The only part it rebuilds is the subcommand list of a
container command (``client``, ``command``, ``cluster``), which lists only served subcommands;
the subcommand entries themselves are again Redis's own bytes.

Every public function is pure and returns the complete reply for the client's protocol
(``proto`` 2 or 3) as ``bytes``.  Served names are lowercase top-level names, plus served
subcommands written as ``container|sub`` (``client|setname``); serving a subcommand implies
serving its container.  Names that the captured Redis did not know are ignored.

This module must never do I/O beyond reading the packaged JSON once, never log, never
describe a command or subcommand that is not served, and never alter Redis's bytes for
anything but a container's subcommand list.  Top-level order is sorted by name (Redis
uses its hash-table order, which changes with every process); subcommands are sorted too.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = [
    "command_count_reply",
    "command_docs_reply",
    "command_info_reply",
    "command_list_reply",
    "command_reply",
    "redis_version",
]

_DATA_PACKAGE = "proxy.commands"
_DATA_FILE = "data/redis_commands.json"
_PROTOS = (2, 3)
_SYNTAX_ERROR = b"-ERR syntax error\r\n"
_NULL = {2: b"$-1\r\n", 3: b"_\r\n"}

_LINE_TYPES = frozenset(b"+-:,_#(")
_BLOB_TYPES = frozenset(b"$=!")
_AGGREGATE_TYPES = frozenset(b"*~>%|")
_PAIR_TYPES = frozenset(b"%|")


# --- a minimal RESP reader over trusted, captured bytes ---------------------------------

def _end_of(buf: bytes, pos: int) -> int:
    """Return the offset just past the RESP value that starts at ``pos``."""
    eol = buf.index(b"\r\n", pos)
    kind = buf[pos]
    after = eol + 2
    if kind in _LINE_TYPES:
        return after
    length = int(buf[pos + 1:eol])
    if kind in _BLOB_TYPES:
        return after if length < 0 else after + length + 2
    if kind not in _AGGREGATE_TYPES:
        raise ValueError(f"not a RESP value at {pos}: {buf[pos:pos + 20]!r}")
    if length < 0:
        return after
    if kind in _PAIR_TYPES:
        length *= 2
    for _ in range(length):
        after = _end_of(buf, after)
    if kind == ord("|"):  # an attribute is followed by the value it annotates
        after = _end_of(buf, after)
    return after


def _children(buf: bytes, pos: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each element of the aggregate at ``pos``; a map's keys and values
    alternate."""
    eol = buf.index(b"\r\n", pos)
    count = int(buf[pos + 1:eol])
    if buf[pos] in _PAIR_TYPES:
        count *= 2
    spans = []
    start = eol + 2
    for _ in range(count):
        end = _end_of(buf, start)
        spans.append((start, end))
        start = end
    return spans


def _string(buf: bytes, span: tuple[int, int]) -> str:
    """The text of a bulk or simple string element."""
    start, end = span
    if buf[start] == ord("+"):
        return buf[start + 1:end - 2].decode("latin-1")
    eol = buf.index(b"\r\n", start)
    return buf[eol + 2:end - 2].decode("latin-1")


def _bulk(text: str) -> bytes:
    data = text.encode("latin-1")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _header(kind: int, count: int) -> bytes:
    """An aggregate header; ``count`` is in elements, halved for RESP3 maps."""
    if kind in _PAIR_TYPES:
        count //= 2
    return b"%c%d\r\n" % (kind, count)


# --- the captured data -------------------------------------------------------------------

@dataclass(frozen=True)
class _Splice:
    """A reply cut around one nested aggregate: ``head + <aggregate> + tail``."""

    head: bytes
    kind: int  # the aggregate's RESP type byte
    tail: bytes

    def join(self, elements: list[bytes]) -> bytes:
        return self.head + _header(self.kind, len(elements)) + b"".join(elements) + self.tail


@dataclass(frozen=True)
class _Command:
    name: str
    info: dict[int, bytes]
    docs: dict[int, bytes]
    acl_categories: frozenset[str]  # lowercase, without the leading "@"
    info_splice: dict[int, _Splice] | None  # containers only: around the subcommand list
    docs_splice: dict[int, _Splice] | None


@dataclass(frozen=True)
class _Catalog:
    redis_version: str
    commands: dict[str, _Command]  # top-level names and "container|sub" names


def _info_splice(info: bytes) -> _Splice:
    start, end = _children(info)[9]  # the tenth field of a COMMAND INFO entry
    return _Splice(info[:start], info[start], info[end:])


def _docs_splice(docs: bytes) -> _Splice:
    spans = _children(docs)
    for key, value in zip(spans[::2], spans[1::2], strict=True):
        if _string(docs, key) == "subcommands":
            start, end = value
            return _Splice(docs[:start], docs[start], docs[end:])
    raise ValueError("container docs without subcommands")


def _acl_categories(info: bytes) -> frozenset[str]:
    field = _children(info)[6]
    return frozenset(_string(info, span).lstrip("@").lower()
                     for span in _children(info, field[0]))


@lru_cache(maxsize=1)
def _catalog() -> _Catalog:
    raw = resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE).read_text(encoding="ascii")
    data = json.loads(raw)
    entries: dict[str, dict[str, str]] = data["commands"]
    containers = {name.split("|", 1)[0] for name in entries if "|" in name}
    commands = {}
    for name, entry in entries.items():
        info = {p: entry[f"info{p}"].encode("latin-1") for p in _PROTOS}
        docs = {p: entry[f"docs{p}"].encode("latin-1") for p in _PROTOS}
        container = name in containers
        commands[name] = _Command(
            name=name,
            info=info,
            docs=docs,
            acl_categories=_acl_categories(info[2]),
            info_splice={p: _info_splice(info[p]) for p in _PROTOS} if container else None,
            docs_splice={p: _docs_splice(docs[p]) for p in _PROTOS} if container else None,
        )
    return _Catalog(redis_version=data["redis_version"], commands=commands)


def redis_version() -> str:
    """The version of the Redis whose replies are replayed."""
    return _catalog().redis_version


# --- the served view ---------------------------------------------------------------------

@dataclass(frozen=True)
class _View:
    """The served part of the catalog, with containers' replies already rebuilt."""

    top: tuple[str, ...]  # sorted top-level names
    subs: dict[str, tuple[str, ...]]  # container -> sorted served "container|sub" names
    info: dict[tuple[str, int], bytes]  # (name, proto) -> COMMAND INFO entry
    docs: dict[tuple[str, int], bytes]  # (name, proto) -> COMMAND DOCS value

    def listed(self) -> list[str]:
        """Every served name, as COMMAND LIST gives them: each container before its subs."""
        names = []
        for name in self.top:
            names.append(name)
            names.extend(self.subs.get(name, ()))
        return names


@lru_cache(maxsize=32)
def _view(served: frozenset[str]) -> _View:
    commands = _catalog().commands
    top: set[str] = set()
    subs: dict[str, set[str]] = {}
    for name in served:
        if name not in commands:
            continue
        if "|" in name:
            container = name.split("|", 1)[0]
            top.add(container)
            subs.setdefault(container, set()).add(name)
        else:
            top.add(name)
    ordered_subs = {name: tuple(sorted(subs.get(name, ())))
                    for name in top if commands[name].info_splice is not None}
    info: dict[tuple[str, int], bytes] = {}
    docs: dict[tuple[str, int], bytes] = {}
    for proto in _PROTOS:
        for name in top:
            cmd = commands[name]
            if cmd.info_splice is None or cmd.docs_splice is None:
                info[name, proto] = cmd.info[proto]
                docs[name, proto] = cmd.docs[proto]
                continue
            sub_names = ordered_subs[name]
            info[name, proto] = cmd.info_splice[proto].join(
                [commands[sub].info[proto] for sub in sub_names])
            docs_elements = []
            for sub in sub_names:
                docs_elements += [_bulk(sub), commands[sub].docs[proto]]
            docs[name, proto] = cmd.docs_splice[proto].join(docs_elements)
        for sub_names in ordered_subs.values():
            for sub in sub_names:
                info[sub, proto] = commands[sub].info[proto]
                docs[sub, proto] = commands[sub].docs[proto]
    return _View(top=tuple(sorted(top)), subs=ordered_subs, info=info, docs=docs)


def _served_view(served: Collection[str]) -> _View:
    return _view(frozenset(name.lower() for name in served))


def _check_proto(proto: int) -> int:
    if proto not in _PROTOS:
        raise ValueError(f"proto must be 2 or 3, not {proto!r}")
    return proto


def _array(elements: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(elements) + b"".join(elements)


def _docs_map(proto: int, pairs: Iterable[tuple[str, bytes]]) -> bytes:
    body = [_bulk(name) + value for name, value in pairs]
    count = len(body) if proto == 3 else 2 * len(body)
    return b"%c%d\r\n" % (ord("%") if proto == 3 else ord("*"), count) + b"".join(body)


def _name(arg: bytes) -> str:
    return arg.decode("latin-1").lower()


# --- the replies ---------------------------------------------------------------------------

def command_reply(served: Collection[str], proto: int) -> bytes:
    """``COMMAND``: the COMMAND INFO entry of every served top-level command."""
    view = _served_view(served)
    proto = _check_proto(proto)
    return _array([view.info[name, proto] for name in view.top])


def command_count_reply(served: Collection[str], proto: int) -> bytes:
    """``COMMAND COUNT``: how many top-level commands ``COMMAND`` describes."""
    _check_proto(proto)
    return b":%d\r\n" % len(_served_view(served).top)


def command_list_reply(served: Collection[str], proto: int,
                       filterby: list[bytes] | None) -> bytes:
    """``COMMAND LIST [FILTERBY MODULE name|ACLCAT category|PATTERN pattern]``.

    ``filterby`` is the arguments after LIST, with or without the FILTERBY keyword.  As in
    Redis, the list holds served subcommands (``client|setname``) too, ACLCAT takes a
    category name without ``@`` (case-insensitive), PATTERN is matched case-insensitively
    against the full name, and MODULE matches nothing since cachecloak loads no modules.
    """
    proto = _check_proto(proto)
    view = _served_view(served)
    names = view.listed()
    args = list(filterby or [])
    if args and args[0].lower() == b"filterby":
        args = args[1:]
        if not args:
            return _SYNTAX_ERROR
    if args:
        if len(args) != 2:
            return _SYNTAX_ERROR
        kind, value = args[0].lower(), _name(args[1])
        if kind == b"module":
            names = []
        elif kind == b"aclcat":
            commands = _catalog().commands
            names = [n for n in names if value in commands[n].acl_categories]
        elif kind == b"pattern":
            names = [n for n in names if fnmatch.fnmatchcase(n, value)]
        else:
            return _SYNTAX_ERROR
    return _array([_bulk(name) for name in names])


def command_info_reply(served: Collection[str], proto: int, names: list[bytes]) -> bytes:
    """``COMMAND INFO [name ...]``: one entry per asked name, in the asked order; a name
    that is unknown or not served gets a null, as Redis gives for unknown commands.  With
    no names, every served command (Redis 7.0 answers like ``COMMAND``)."""
    proto = _check_proto(proto)
    if not names:
        return command_reply(served, proto)
    view = _served_view(served)
    return _array([view.info.get((_name(arg), proto), _NULL[proto]) for arg in names])


def command_docs_reply(served: Collection[str], proto: int, names: list[bytes]) -> bytes:
    """``COMMAND DOCS [name ...]``: a map from name to docs; names that are unknown or
    not served are left out, as Redis does.  With no names, every served command."""
    proto = _check_proto(proto)
    view = _served_view(served)
    if not names:
        return _docs_map(proto, [(name, view.docs[name, proto]) for name in view.top])
    pairs = []
    for arg in names:
        name = _name(arg)
        value = view.docs.get((name, proto))
        if value is not None:
            pairs.append((name, value))
    return _docs_map(proto, pairs)
