"""Commands cachecloak answers itself: connection state, introspection, server info.

These never reach Redis.  HELLO, SELECT and RESET change only this client's view (its
protocol, its logical database); INFO and CLIENT describe the proxy, not the upstream
Redis, whose details (addresses aside) are not the client's business.

Must never: answer with a key, a value or a secret; INFO shows key identifiers' counts,
never key material.
"""

from __future__ import annotations

import hmac
import logging
import os
import platform
import time

from proxy import __version__
from proxy.commands import introspection
from proxy.commands.table import (
    TABLE,
    Command,
    arity_error,
    dispatch_subcommand,
    register,
    subcommands,
)
from proxy.metrics import cache_figures, listener_figures
from proxy.resp import writer
from proxy.resp.numbers import string2ll as _parse_ll

log = logging.getLogger("cachecloak.auth")

REDIS_COMPAT_VERSION = introspection.redis_version()

_NOT_INTEGER = writer.error("ERR value is not an integer or out of range")
_BAD_NAME = writer.error("ERR Client names cannot contain spaces, newlines or special characters.")
_WRONGPASS = writer.error("WRONGPASS invalid username-password pair or user is disabled.")
# Redis 7.2 added "<proto>" to this text; answer as the Redis version replayed here.
_HELLO_NOAUTH = writer.error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    + ("HELLO <proto> AUTH" if tuple(int(p) for p in REDIS_COMPAT_VERSION.split(".")[:2])
       >= (7, 2) else "HELLO AUTH")
    + " <user> <pass> option can be used to authenticate the client and select the RESP "
    "protocol version at the same time")
_AUTH_NO_PASSWORD = writer.error(
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?")


def served_names() -> list[str]:
    names = set()
    for command in TABLE.values():
        names.add(command.name)
        for sub in (command.subcommands or {}).values():
            names.add(sub.name)
    return sorted(names)


def _cstr(arg: bytes) -> bytes:
    """The argument as Redis's C code sees it through `char *` (%s, strcasecmp): cut at
    the first NUL byte."""
    cut = arg.find(b"\0")
    return arg if cut < 0 else arg[:cut]


def _valid_client_name(name: bytes) -> bool:
    # Redis: printable ASCII from '!' to '~' only.
    return all(33 <= b <= 126 for b in name)


# -- connection ------------------------------------------------------------------------

def run_ping(client, command, args):
    if len(args) > 2:
        client.reply(arity_error("ping"))
        return
    client.reply(writer.PONG if len(args) == 1 else writer.bulk(args[1]))


def run_echo(client, command, args):
    client.reply(writer.bulk(args[1]))


def run_quit(client, command, args):
    client.reply(writer.OK)
    client.close_after_reply()


def run_reset(client, command, args):
    client.reset_state()
    client.reply(b"+RESET\r\n")


def _authenticate(client, username: bytes | None, password: bytes) -> bytes | None:
    """None when accepted, else the error reply.  Without a listener password the proxy
    behaves like a Redis whose default user has `nopass`; with one, like `requirepass`:
    the user is `default` (or omitted) and the password must match.  Neither the
    password nor what the client sent is ever logged."""
    expected = client.password
    if expected is None:
        if username is None:
            return _AUTH_NO_PASSWORD
        if username != b"default":
            return _WRONGPASS
        return None
    matches = hmac.compare_digest(password, expected)  # compared even for a wrong user
    if not matches or (username is not None and username != b"default"):
        client.server.auth_failures += 1
        if not getattr(client, "auth_failure_logged", False):
            # Once per connection: a client pipelining guesses must not flood the log.
            client.auth_failure_logged = True
            log.warning("listener %s: client %s sent a wrong password; refused with "
                        "WRONGPASS (further failures on this connection are only counted)",
                        client.listener.address, client.peer)
        return _WRONGPASS
    client.authenticated = True
    return None


def run_auth(client, command, args):
    if len(args) == 2:
        problem = _authenticate(client, None, args[1])
    elif len(args) == 3:
        problem = _authenticate(client, args[1], args[2])
    else:
        client.reply(writer.error("ERR syntax error"))
        return
    client.reply(problem or writer.OK)


def run_hello(client, command, args):
    proto = client.proto
    if len(args) >= 2:
        proto = _parse_ll(args[1])
        if proto is None:
            client.reply(writer.error("ERR Protocol version is not an integer or out of range"))
            return
        if proto not in (2, 3):
            client.reply(writer.error("NOPROTO unsupported protocol version"))
            return
    # Redis 7.0 acts on each option as it reads it: AUTH authenticates and SETNAME names
    # the connection at once, so a later bad option fails after they took effect.
    i = 2
    while i < len(args):
        option = _cstr(args[i]).upper()
        left = len(args) - i - 1
        if option == b"AUTH" and left >= 2:
            problem = _authenticate(client, args[i + 1], args[i + 2])
            if problem is not None:
                client.reply(problem)
                return
            i += 3
        elif option == b"SETNAME" and left >= 1:
            name = args[i + 1]
            if not _valid_client_name(name):
                client.reply(_BAD_NAME)
                return
            client.name = name or None
            i += 2
        else:
            client.reply(writer.error(
                b"ERR Syntax error in HELLO option '" + _cstr(args[i]) + b"'"))
            return
    if not client.authenticated:
        client.reply(_HELLO_NOAUTH)
        return
    client.proto = proto
    client.reply(writer.map_(proto, [
        (writer.bulk(b"server"), writer.bulk(b"redis")),
        (writer.bulk(b"version"), writer.bulk(REDIS_COMPAT_VERSION.encode())),
        (writer.bulk(b"proto"), writer.integer(proto)),
        (writer.bulk(b"id"), writer.integer(client.id)),
        (writer.bulk(b"mode"), writer.bulk(b"standalone")),
        (writer.bulk(b"role"), writer.bulk(b"master")),
        (writer.bulk(b"modules"), b"*0\r\n"),
    ]))


def run_select(client, command, args):
    db = _parse_ll(args[1])
    if db is None:
        client.reply(_NOT_INTEGER)
        return
    if not -2**31 <= db < 2**31:  # Redis reads the index as a C int
        client.reply(writer.error(
            "ERR value is out of range, value must between -2147483648 and 2147483647"))
        return
    if not 0 <= db < client.cache.databases:
        client.reply(writer.error("ERR DB index is out of range"))
        return
    client.db = db
    client.reply(writer.OK)


# -- CLIENT ----------------------------------------------------------------------------

def client_line(c, now: float) -> bytes:
    def text(b: bytes | None) -> str:
        return (b or b"").decode("utf-8", "replace")
    return (
        f"id={c.id} addr={c.peer} laddr={c.local} fd={c.fd} name={text(c.name)} "
        f"age={int(now - c.created)} idle={int(now - c.last_active)} "
        f"flags={'U' if c.listener.unix_path is not None else 'N'} db={c.db} "
        f"sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 "
        f"tot-mem=0 events=r cmd={c.last_command} user=default redir=-1 resp={c.proto} "
        f"lib-name={text(c.lib_name)} lib-ver={text(c.lib_ver)}\n").encode()


def run_client_setname(client, command, args):
    if not _valid_client_name(args[2]):
        client.reply(_BAD_NAME)
        return
    client.name = args[2] or None
    client.reply(writer.OK)


def run_client_getname(client, command, args):
    client.reply(writer.bulk(client.name) if client.name else writer.NULL_BULK[client.proto])


def run_client_id(client, command, args):
    client.reply(writer.integer(client.id))


def run_client_setinfo(client, command, args):
    attr = args[2].upper()
    if attr not in (b"LIB-NAME", b"LIB-VER"):
        client.reply(writer.error(
            f"ERR Unrecognized option '{args[2].decode('utf-8', 'replace')}'"))
        return
    if not _valid_client_name(args[3]) and args[3]:
        client.reply(writer.error(f"ERR {attr.decode().lower()} cannot contain spaces, "
                                  "newlines or special characters."))
        return
    if attr == b"LIB-NAME":
        client.lib_name = args[3]
    else:
        client.lib_ver = args[3]
    client.reply(writer.OK)


def run_client_info(client, command, args):
    client.reply(writer.verbatim(client.proto, client_line(client, time.monotonic())))


def run_client_list(client, command, args):
    clients = list(client.server.clients.values())
    if len(args) > 2:
        option = args[2].upper()
        if option == b"TYPE" and len(args) == 4:
            kind = args[3].lower()
            if kind not in (b"normal", b"master", b"replica", b"pubsub", b"slave"):
                client.reply(writer.error(
                    f"ERR Unknown client type '{args[3].decode('utf-8', 'replace')}'"))
                return
            if kind != b"normal":
                clients = []
        elif option == b"ID" and len(args) >= 4:
            try:
                wanted = {int(a) for a in args[3:]}
            except ValueError:
                client.reply(writer.error("ERR Invalid client ID"))
                return
            clients = [c for c in clients if c.id in wanted]
        else:
            client.reply(writer.error("ERR syntax error"))
            return
    now = time.monotonic()
    text = b"".join(client_line(c, now) for c in sorted(clients, key=lambda c: c.id))
    client.reply(writer.verbatim(client.proto, text))


# -- COMMAND ---------------------------------------------------------------------------

def run_command(client, command, args):
    if len(args) == 1:
        client.reply(introspection.command_reply(served_names(), client.proto))
        return
    dispatch_subcommand(client, command, args)


def run_command_count(client, command, args):
    client.reply(introspection.command_count_reply(served_names(), client.proto))


def run_command_info(client, command, args):
    client.reply(introspection.command_info_reply(served_names(), client.proto, args[2:]))


def run_command_docs(client, command, args):
    client.reply(introspection.command_docs_reply(served_names(), client.proto, args[2:]))


def run_command_list(client, command, args):
    client.reply(introspection.command_list_reply(served_names(), client.proto,
                                                  args[2:] or None))


# -- INFO and TIME ---------------------------------------------------------------------

_DEFAULT_SECTIONS = ("server", "clients", "cluster", "cachecloak")


def _pairs(counts: dict[str, int]) -> str:
    """Redis's compound INFO value (as in `db0:keys=1,expires=0`), which redis-py reads
    as a dict."""
    return ",".join(f"{name}={count}" for name, count in counts.items())


def _figure_fields(client) -> list[tuple[str, object]]:
    """The /metrics figures (proxy.metrics.cache_figures, listener_figures) for the
    client's cache and listener."""
    figures = cache_figures(client.server, client.cache.name, client.cache)
    listener = listener_figures(client.server, client.listener)
    fields: list[tuple[str, object]] = [
        ("listener_connected_clients", listener.clients),
        ("listener_bytes_received", listener.bytes_received),
        ("listener_bytes_sent", listener.bytes_sent),
    ]
    if listener.tls_handshake_failures is not None:  # a TLS listener
        fields.append(("listener_tls_handshake_failures", listener.tls_handshake_failures))
    totals = figures.command_totals()
    if totals is not None:  # recorded only with an admin: section
        ok, error, refused = totals
        fields += [("commands_processed", ok + error + refused), ("commands_ok", ok),
                   ("commands_error", error), ("commands_refused", refused)]
    if figures.upstream is not None:
        fields.append(("upstream_connections", _pairs(figures.upstream)))
    if figures.connect_failures is not None:
        fields.append(("upstream_connect_failures", _pairs(figures.connect_failures)))
    if figures.decrypt_failures:
        fields.append(("decrypt_failures_by_reason", _pairs(figures.decrypt_failures)))
    if figures.encryptions:
        fields.append(("encryptions_by_key_id", _pairs(figures.encryptions)))
    return fields


def info_sections(client) -> dict[str, list[tuple[str, object]]]:
    server = client.server
    cache = client.cache
    uptime = int(time.time() - server.started_at)
    sealer = cache.sealer
    return {
        "server": [
            ("redis_version", REDIS_COMPAT_VERSION),
            ("redis_mode", "standalone"),
            ("os", f"{platform.system()} {platform.release()} {platform.machine()}"),
            ("arch_bits", 64 if platform.architecture()[0] == "64bit" else 32),
            ("process_id", os.getpid()),
            ("tcp_port", client.listener_port),
            ("uptime_in_seconds", uptime),
            ("uptime_in_days", uptime // 86400),
        ],
        "clients": [("connected_clients", len(server.clients))],
        "cluster": [("cluster_enabled", 0)],
        "cachecloak": [
            ("cachecloak_version", __version__),
            ("cache_name", cache.name),
            ("cache_backend", cache.backend.description),
            ("upstream_ready", int(cache.backend.ready())),
            ("hashing", "enabled" if cache.hasher.enabled else "disabled"),
            ("encryption", "enabled" if sealer else "disabled"),
            ("encryption_current_key_id", sealer.key_id.hex() if sealer else ""),
            ("encryptions_under_current_key", sealer.encryptions if sealer else 0),
            ("nonce_warning_share", cache.nonce_warning_share if sealer else ""),
            ("decrypt_failures", sum(cache.decrypt_failures.values())),
            ("listener", client.listener.address),
            ("auth_failures", server.auth_failures),
            ("logical_db", client.db),
            *_figure_fields(client),
            *(cache.backend.info() if hasattr(cache.backend, "info") else ()),
        ],
    }


def run_info(client, command, args):
    sections = info_sections(client)
    wanted = [a.decode("utf-8", "replace").lower() for a in args[1:]]
    if not wanted or "default" in wanted or "all" in wanted or "everything" in wanted:
        names = list(_DEFAULT_SECTIONS)
    else:
        names = [n for n in sections if n in wanted]
    parts = []
    for name in names:
        lines = [f"# {name.capitalize()}"] + [f"{k}:{v}" for k, v in sections[name]]
        parts.append("\r\n".join(lines) + "\r\n")
    client.reply(writer.verbatim(client.proto, "\r\n".join(parts).encode()))


def run_time(client, command, args):
    now = time.time_ns() // 1000
    client.reply(writer.bulks([str(now // 1_000_000).encode(),
                               str(now % 1_000_000).encode()]))


register(
    Command("ping", -1, run=run_ping),
    Command("echo", 2, run=run_echo),
    Command("quit", -1, run=run_quit, no_auth=True),
    Command("reset", 1, run=run_reset, no_auth=True),
    Command("auth", -2, run=run_auth, no_auth=True),
    Command("hello", -1, run=run_hello, no_auth=True),
    Command("select", 2, run=run_select),
    Command("info", -1, run=run_info),
    Command("time", 1, run=run_time),
    Command("client", -2, run=dispatch_subcommand, subcommands=subcommands(
        Command("client|setname", 3, run=run_client_setname),
        Command("client|getname", 2, run=run_client_getname),
        Command("client|id", 2, run=run_client_id),
        Command("client|setinfo", 4, run=run_client_setinfo),
        Command("client|info", 2, run=run_client_info),
        Command("client|list", -2, run=run_client_list),
    )),
    Command("command", -1, run=run_command, subcommands=subcommands(
        Command("command|count", 2, run=run_command_count),
        Command("command|info", -2, run=run_command_info),
        Command("command|docs", -2, run=run_command_docs),
        Command("command|list", -2, run=run_command_list),
    )),
)

__all__ = ["arity_error", "served_names"]
