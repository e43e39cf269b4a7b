"""`cachecloak check`: can every configured cache be used, and if not, why not?

For every ``type: redis`` cache and every configured address this connects (TCP, bounded
by ``connectTimeout``), completes the TLS handshake, authenticates, learns the server's
role (``ROLE``, ``INFO cluster``; ``HELLO`` when an ACL user may not run those) and, on a
primary, writes, reads and deletes one probe key through the full hashing and encryption
path (a :class:`proxy.cache.Cache` built from the configuration, so the probe is named and
sealed exactly like real traffic).  With ``mode: sentinel`` the addresses are Sentinels:
each is asked for the primary of ``sentinel.masterName``, which is then checked.

One line per address::

    ok    cache "app" 10.0.0.5:6379: primary, TLS 1.3, authenticated as app, probe ... ok
    FAIL  cache "app" 127.0.0.1:6380: connection refused; check the address and port, ...

Failures name their class and the likely fix: the connection (address, port, firewall),
authentication (username, password, secret resolution), the TLS handshake (CA, profile,
version, host name) or the configuration itself (keys, secret references: these are
reported by the loader before anything connects).

Exit status: 0 when every cache has at least one usable primary, 1 otherwise, 2 for a
configuration error.  Independent of the serving code: it uses only the configuration,
the TLS context builder, and Cache/crypto.  Never prints a password, key material, or
anything Redis returned for the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
import sys
from dataclasses import dataclass

import hiredis

from proxy.backends.redis.tls import TLSSetupError, client_context, describe_handshake_error

EXIT_OK, EXIT_UNUSABLE, EXIT_CONFIG = 0, 1, 2

CONNECT_FIX = "check the address and port, that Redis is running, and firewalls"
PROBE_TTL_MS = 60_000
_CLUSTER_PROBE_ATTEMPTS = 32  # a random probe key lands on this node's slots eventually
_MAX_READS = 100_000  # per reply; each read is also bounded by commandTimeout


class CheckFailure(Exception):
    """One line: what failed and the likely fix.  Never holds a secret."""


@dataclass
class Outcome:
    ok: bool
    usable_primary: bool
    text: str


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _code(reply: hiredis.ReplyError) -> str:
    """The error code (WRONGPASS, NOPERM, ...): the only part of an error we repeat."""
    return str(reply).split(" ", 1)[0] or "ERR"


class _Conn:
    """A minimal RESP connection for the check; every wait is bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float, tls_profile):
        self.reader, self.writer = reader, writer
        self.timeout = timeout
        self.tls_profile = tls_profile
        self.parser = hiredis.Reader()

    @property
    def transport_text(self) -> str:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return "plain TCP"
        version = ssl_object.version() or "TLS"
        return version.replace("TLSv", "TLS ")

    async def call(self, *args: str | bytes):
        try:
            self.writer.write(hiredis.pack_command(args))
            await asyncio.wait_for(self.writer.drain(), self.timeout)
            for _ in range(_MAX_READS):
                reply = self.parser.gets()
                if reply is not False:
                    return reply
                data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
                if not data:
                    raise ConnectionResetError("closed")
                self.parser.feed(data)
        except TimeoutError:
            raise CheckFailure(f"no reply within commandTimeout {self.timeout:g}s; check that "
                               "the address is a Redis server and that it is not overloaded"
                               ) from None
        except ssl.SSLError as exc:
            # TLS 1.3: a refused client certificate is only reported after the handshake.
            raise CheckFailure(describe_handshake_error(exc, self.tls_profile)) from None
        except hiredis.ProtocolError:
            raise CheckFailure("the server did not answer in the Redis protocol; check the "
                               "address and port") from None
        except OSError:
            if self.tls_profile is None:
                hint = ("is this a TLS port? then configure a tls profile instead of "
                        "disableTLS: true")
            else:
                hint = "check the server's log (TLS settings, maxclients)"
            raise CheckFailure(f"the server closed the connection; {hint}") from None
        raise CheckFailure("reply too large; check the address and port")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


async def _open(host: str, port: int, redis_cfg, context: ssl.SSLContext | None) -> _Conn:
    timeout = redis_cfg.connect_timeout
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        raise CheckFailure(f"connect timed out after {timeout:g}s; {CONNECT_FIX}") from None
    except ConnectionRefusedError:
        raise CheckFailure(f"connection refused; {CONNECT_FIX}") from None
    except socket.gaierror:
        raise CheckFailure(f'cannot resolve host "{host}"; check the address and DNS') from None
    except OSError as exc:
        raise CheckFailure(f"cannot connect ({exc.strerror or type(exc).__name__}); "
                           f"{CONNECT_FIX}") from None
    profile = redis_cfg.tls
    if context is not None:
        try:
            await asyncio.wait_for(
                writer.start_tls(context, server_hostname=profile.server_name or host),
                timeout)
        except TimeoutError:
            writer.close()
            raise CheckFailure(f"TLS handshake failed: no answer within {timeout:g}s; is this "
                               "Redis's tls-port? (for a plain-TCP port set disableTLS: true)"
                               ) from None
        except ssl.SSLError as exc:
            writer.close()
            raise CheckFailure(describe_handshake_error(exc, profile)) from None
        except OSError as exc:
            writer.close()
            raise CheckFailure(f"TLS handshake failed: the server closed the connection "
                               f"({exc.strerror or type(exc).__name__}); check the server's "
                               f'TLS settings and tls profile "{profile.name}"') from None
    return _Conn(reader, writer, redis_cfg.command_timeout, profile)


async def _authenticate(conn: _Conn, username: str | None, password: str | None,
                        fields: str) -> str:
    """AUTH as the proxy does; return how we are authenticated.  `fields` names the
    configuration fields to check, e.g. "redis.username and redis.password"."""
    if password is None:
        reply = await conn.call("PING")
        if isinstance(reply, hiredis.ReplyError):
            if _code(reply) == "NOAUTH":
                raise CheckFailure("authentication failed: Redis requires a password (NOAUTH); "
                                   f"set {fields}")
            raise CheckFailure(f"Redis refused PING ({_code(reply)}); check the Redis server")
        return "no authentication (default user)"
    args = ["AUTH", username, password] if username else ["AUTH", password]
    reply = await conn.call(*args)
    if isinstance(reply, hiredis.ReplyError):
        if "without any password configured" in str(reply):
            raise CheckFailure("authentication failed: Redis has no password for the default "
                               f"user; remove the password or set a username (check {fields})")
        raise CheckFailure(f"authentication failed: Redis refused AUTH ({_code(reply)}); "
                           f"check {fields}, and that their secret references resolve to the "
                           "right values")
    return f"authenticated as {username or 'default'}"


_ROLES = {b"master": "primary", b"slave": "replica", b"replica": "replica",
          b"sentinel": "sentinel"}


async def _role_and_cluster(conn: _Conn) -> tuple[str | None, bool | None]:
    role: str | None = None
    cluster: bool | None = None
    reply = await conn.call("ROLE")
    if isinstance(reply, list) and reply and isinstance(reply[0], bytes):
        role = _ROLES.get(reply[0])
    if role != "sentinel":
        reply = await conn.call("INFO", "cluster")
        if isinstance(reply, bytes):
            cluster = b"cluster_enabled:1" in reply
    if role is None or (cluster is None and role != "sentinel"):
        # ROLE and INFO are @dangerous in Redis 7, so a scoped ACL user may not run them;
        # HELLO is allowed to everybody and says both.
        reply = await conn.call("HELLO", "2")
        if isinstance(reply, list):
            fields = dict(zip(reply[::2], reply[1::2], strict=False))
            role = role or _ROLES.get(fields.get(b"role", b""))
            if fields.get(b"mode") == b"sentinel":
                role = "sentinel"
            if cluster is None:
                cluster = fields.get(b"mode") == b"cluster"
    return role, cluster


def _refusal_hint(code: str, prefix: str) -> str:
    if code == "NOPERM":
        scope = f"~{prefix}*" if prefix else "its keys"
        return f"allow the ACL user GET, SET and DEL on keys {scope}"
    if code == "READONLY":
        return "the server is a replica; list the primary in addresses"
    if code == "OOM":
        return "Redis is out of memory; check maxmemory and the eviction policy"
    return "check the Redis server"


async def _probe(conn: _Conn, cache, prefix: str, cluster: bool) -> str:
    """Write, read and delete one probe key through the cache's hashing and encryption."""
    db = 0  # logical database 0: the probe is named like a client's key in SELECT 0
    for _ in range(_CLUSTER_PROBE_ATTEMPTS if cluster else 1):
        key = b"cachecloak-check-" + secrets.token_hex(8).encode()
        value = b"cachecloak check " + secrets.token_hex(16).encode()
        stored = cache.stored_key(db, key)
        reply = await conn.call("SET", stored, cache.seal(db, stored, value),
                                "PX", str(PROBE_TTL_MS))
        if not (cluster and isinstance(reply, hiredis.ReplyError)
                and _code(reply) in ("MOVED", "ASK")):
            break
    else:
        raise CheckFailure("probe write failed: every probe key belonged to another cluster "
                           "node (does this node serve any slots?)")
    if isinstance(reply, hiredis.ReplyError):
        code = _code(reply)
        raise CheckFailure(f"probe write failed: Redis refused SET ({code}); "
                           f"{_refusal_hint(code, prefix)}")
    deleted = False
    try:
        blob = await conn.call("GET", stored)
        if isinstance(blob, hiredis.ReplyError):
            code = _code(blob)
            raise CheckFailure(f"probe read failed: Redis refused GET ({code}); "
                               f"{_refusal_hint(code, prefix)}")
        if not isinstance(blob, bytes):
            raise CheckFailure("probe read failed: the key just written was not there; check "
                               "for eviction (maxmemory) or a proxy/replica in between")
        if cache.open(db, stored, blob) != value:
            raise CheckFailure("probe read failed: the value read back did not decrypt to what "
                               "was written; check that nothing else writes these keys")
        reply = await conn.call("DEL", stored)
        if isinstance(reply, hiredis.ReplyError):
            code = _code(reply)
            raise CheckFailure(f"probe delete failed: Redis refused DEL ({code}); "
                               f"{_refusal_hint(code, prefix)}")
        deleted = True
    finally:
        if not deleted:  # best effort; the probe also expires by itself
            with contextlib.suppress(CheckFailure):
                await conn.call("DEL", stored)
    return "probe write/read/delete ok"


async def _check_server(cfg, cache, host: str, port: int,
                        context: ssl.SSLContext | None) -> Outcome:
    """One Redis server (not a Sentinel): connect, TLS, AUTH, SELECT, role, probe."""
    redis = cfg.redis
    try:
        conn = await _open(host, port, redis, context)
    except CheckFailure as exc:
        return Outcome(False, False, str(exc))
    try:
        parts = [conn.transport_text]
        parts.append(await _authenticate(conn, redis.username, redis.password,
                                         "redis.username and redis.password"))
        role, cluster = await _role_and_cluster(conn)
        if role == "sentinel":
            raise CheckFailure("this is a Sentinel, not a Redis server; set redis.mode: "
                               "sentinel and sentinel.masterName, or list the Redis servers")
        if cluster and redis.mode == "standalone":
            raise CheckFailure("this is a Redis Cluster node but redis.mode is standalone; "
                               "set mode: cluster (or auto)")
        if cluster is False and redis.mode == "cluster":
            raise CheckFailure("this server is not in cluster mode but redis.mode is cluster; "
                               "set mode: standalone (or auto)")
        if redis.db:
            reply = await conn.call("SELECT", str(redis.db))
            if isinstance(reply, hiredis.ReplyError):
                raise CheckFailure(f"Redis refused SELECT {redis.db} ({_code(reply)}); check "
                                   "redis.db against the server's databases setting")
        kind = "cluster primary" if cluster else (role or "role unknown")
        if role == "replica":
            return Outcome(True, False, ", ".join([
                f"{'cluster ' if cluster else ''}replica", *parts,
                "no probe (read-only; the proxy writes to the primary)"]))
        parts.insert(0, kind)
        prefix = cfg.key_prefix.decode("ascii") if cfg.prefix_enabled else ""
        parts.append(await _probe(conn, cache, prefix, bool(cluster)))
        return Outcome(True, True, ", ".join(parts))
    except CheckFailure as exc:
        return Outcome(False, False, str(exc))
    finally:
        await conn.close()


async def _check_sentinel(cfg, cache, host: str, port: int, context: ssl.SSLContext | None,
                          primaries: dict) -> Outcome:
    """Ask one Sentinel for the primary, then check that primary (once per primary)."""
    redis = cfg.redis
    name = redis.sentinel_master_name
    try:
        conn = await _open(host, port, redis, context)
    except CheckFailure as exc:
        return Outcome(False, False, str(exc))
    try:
        await _authenticate(conn, redis.sentinel_username, redis.sentinel_password,
                            "redis.sentinel.username and redis.sentinel.password")
        reply = await conn.call("SENTINEL", "get-master-addr-by-name", name)
    except CheckFailure as exc:
        return Outcome(False, False, f"Sentinel: {exc}")
    finally:
        await conn.close()
    if isinstance(reply, hiredis.ReplyError):
        return Outcome(False, False, f"not a Sentinel (SENTINEL refused: {_code(reply)}); with "
                                     "mode: sentinel, addresses must be the Sentinels")
    if not (isinstance(reply, list) and len(reply) == 2):
        return Outcome(False, False, f'the Sentinel does not monitor a primary named "{name}"; '
                                     "check sentinel.masterName")
    p_host, p_port = reply[0].decode(errors="replace"), int(reply[1])
    ident = (p_host, p_port)
    if ident not in primaries:
        primaries[ident] = asyncio.ensure_future(
            _check_server(cfg, cache, p_host, p_port, context))
    outcome = await primaries[ident]
    return Outcome(outcome.ok, outcome.usable_primary,
                   f'Sentinel says primary "{name}" is {_hostport(p_host, p_port)}: '
                   f"{outcome.text}")


async def _guarded(job) -> Outcome:
    try:
        return await job
    except Exception as exc:  # noqa: BLE001 - one line per address, never a traceback
        return Outcome(False, False, f"unexpected error ({type(exc).__name__}); check the "
                                     "address and the server")


async def _check_cache(cfg) -> tuple[list[tuple[bool, str]], bool, bool]:
    """Lines (ok, text) for one cache, whether it is usable, whether config was wrong."""
    label = f'cache "{cfg.name}"'
    if cfg.type == "local":
        return [(True, f"{label}: in-process memory")], True, False
    from proxy.cache import Cache

    redis = cfg.redis
    try:
        context = client_context(redis.tls) if redis.tls is not None else None
    except TLSSetupError as exc:
        return [(False, f"{label}: {exc}")], False, True
    cache = Cache.from_config(cfg, backend=None)  # names and seals; never sends anything
    primaries: dict = {}
    if redis.mode == "sentinel":
        jobs = [_check_sentinel(cfg, cache, h, p, context, primaries)
                for h, p in redis.addresses]
        kind = "Sentinel "
    else:
        jobs = [_check_server(cfg, cache, h, p, context) for h, p in redis.addresses]
        kind = ""
    outcomes = await asyncio.gather(*(_guarded(job) for job in jobs))
    lines = [(o.ok, f"{label} {kind}{_hostport(h, p)}: {o.text}")
             for (h, p), o in zip(redis.addresses, outcomes, strict=True)]
    usable = any(o.usable_primary for o in outcomes)
    if not usable and all(o.ok for o in outcomes):
        lines.append((False, f"{label}: no usable primary (every address is a replica); "
                             "list the primary in addresses"))
    return lines, usable, False


async def _check_all(caches) -> tuple[list[list[tuple[bool, str]]], list[bool], bool]:
    results = await asyncio.gather(*(_check_cache(cfg) for cfg in caches))
    return ([r[0] for r in results], [r[1] for r in results],
            any(r[2] for r in results))


def cmd_check(args) -> int:
    from proxy.config import LOCAL_DEFAULT, ConfigError, load_config

    try:
        config = load_config(args.config, secret_provider=args.secret_provider)
    except ConfigError as exc:
        print(f"cachecloak: configuration error in {args.config or 'the built-in default'}:",
              file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    served = {listener.cache for listener in config.listeners}
    caches = [cfg for name, cfg in config.caches.items()
              if name != LOCAL_DEFAULT or name in served]
    lines, usable, config_broken = asyncio.run(_check_all(caches))
    for cache_lines in lines:
        for ok, text in cache_lines:
            print(f"{'ok' if ok else 'FAIL':<6}{text}", flush=True)
    if config_broken:
        return EXIT_CONFIG
    return EXIT_OK if all(usable) else EXIT_UNUSABLE
