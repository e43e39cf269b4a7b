"""Where the primary is: several standalone addresses, Sentinel, or "auto".

A locator is the `locate` hook of the pool's connections (see
proxy.backends.redis.connection): each (re)connect asks it for the current primary.

* `PrimaryLocator` (mode standalone, several addresses) asks every listed address
  `ROLE` in parallel and picks the one that is a primary.  It prefers the primary it
  already uses, so two primaries for a moment (a replica promoted while the old primary
  still runs) do not make it flap.
* `SentinelLocator` (mode sentinel) asks the Sentinels `SENTINEL get-master-addr-by-name`
  and checks the answer with `ROLE` on that server.  It also stays subscribed to
  `+switch-master` on one Sentinel (moving to another when that one goes), so a
  failover is followed as soon as Sentinel announces it.

When no primary can be found, a locator keeps probing in the background (every 0.1 s
growing to 0.5 s) and wakes the pool as soon as one exists, instead of waiting for the
connections' own backoff.  When the primary moves, the pool drops its connections to
the old one (`RedisBackend._on_primary`).

Probes are short-lived connections with the pool's TLS and AUTH settings (the
Sentinels' own username/password for Sentinels), each exchange bounded by
connectTimeout.

`AutoBackend` is mode auto with one address: it asks the server `INFO cluster` and
becomes a standalone pool or the cluster backend.

Never logs keys, values or passwords: only addresses, the master name and reasons.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import ssl

import hiredis

from proxy.backends import Reply, Waiter
from proxy.backends.redis.connection import (
    UpstreamFailure,
    _hostport,
    describe_connect_error,
    failure_kind,
)
from proxy.backends.redis.pool import RedisBackend
from proxy.backends.redis.tls import describe_handshake_error
from proxy.resp import writer

log = logging.getLogger("cachecloak.upstream")

_HUNT_FIRST = 0.1  # background probing while no primary is known
_HUNT_MAX = 0.5
_WATCH_RETRY_FIRST = 0.1  # re-subscribing to another Sentinel
_WATCH_RETRY_MAX = 2.0
_WATCH_PING = 2.0  # a silent Sentinel is given up after two of these


class ProbeError(Exception):
    """A probe got no usable answer; str() is a one-line reason without secrets.
    `reached`: the connection (TLS included) was made, the server did not answer well."""

    reached = False


class _Auth:
    __slots__ = ("username", "password", "hint")

    def __init__(self, username: str | None, password: str | None, hint: str):
        self.username, self.password, self.hint = username, password, hint


class _Wire:
    """A short-lived RESP2 connection for probes and the Sentinel subscription."""

    def __init__(self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter):
        self._reader = reader
        self._stream = stream
        self._parser = hiredis.Reader()

    def send(self, *args) -> None:
        self._stream.write(hiredis.pack_command(args))

    async def read(self) -> Reply:
        """The next reply; safe to cancel (unread data stays buffered)."""
        while True:
            reply = self._parser.gets()
            if reply is not False:
                return reply
            data = await self._reader.read(65536)
            if not data:
                raise ProbeError("connection closed")
            self._parser.feed(data)

    async def call(self, *args) -> Reply:
        self.send(*args)
        return await self.read()

    def close(self) -> None:
        self._stream.transport.abort()


class _Target:
    """How to reach servers: TLS context and profile, timeout, label for messages."""

    def __init__(self, settings):
        self.ssl = settings.ssl
        self.tls_profile = settings.tls_profile
        self.timeout = settings.connect_timeout
        self.label = settings.label
        self.failures = settings.connect_failures  # shared with the cache's connections

    async def open(self, host: str, port: int, auth: _Auth) -> _Wire:
        server_name = None
        if self.ssl is not None:
            server_name = self.tls_profile.server_name or host
        reader, stream = await asyncio.open_connection(host, port, ssl=self.ssl,
                                                       server_hostname=server_name)
        wire = _Wire(reader, stream)
        if auth.password is not None:
            try:
                await self.authenticate(wire, auth)
            except BaseException:
                wire.close()
                raise
        return wire

    @staticmethod
    async def authenticate(wire: _Wire, auth: _Auth) -> None:
        args = ["AUTH", auth.username, auth.password] if auth.username else [
            "AUTH", auth.password]
        reply = await wire.call(*args)
        if isinstance(reply, hiredis.ReplyError):
            code = str(reply).split(" ", 1)[0]
            raise ProbeError(f"refused AUTH ({code}); {auth.hint}")

    async def probe(self, host: str, port: int, auth: _Auth, exchange):
        """`await exchange(wire)` on a fresh connection, all within connectTimeout."""
        wire: _Wire | None = None

        async def run():
            nonlocal wire
            wire = await self.open(host, port, _Auth(None, None, ""))
            if auth.password is not None:
                await self.authenticate(wire, auth)
            return await exchange(wire)

        kind = "other"
        try:
            try:
                return await asyncio.wait_for(run(), self.timeout)
            except TimeoutError:
                kind = "timeout"
                raise ProbeError(f"no answer within connectTimeout {self.timeout:g}s") from None
            except ssl.SSLError as exc:
                kind = "tls"
                raise ProbeError(describe_handshake_error(exc, self.tls_profile)) from None
            except OSError as exc:
                kind = failure_kind(exc)
                raise ProbeError(describe_connect_error(exc, host)) from None
            except hiredis.ProtocolError:
                raise ProbeError("invalid reply (is it a Redis server?)") from None
        except ProbeError as exc:
            exc.reached = wire is not None
            if kind == "other" and exc.reached:
                kind = "handshake"  # AUTH refused, or the connection closed on the probe
            self.failures[kind] = self.failures.get(kind, 0) + 1
            raise
        finally:
            if wire is not None:
                wire.close()


class _Role:
    __slots__ = ("kind", "replicas", "offset", "detail")

    def __init__(self, kind: str, detail: str, replicas: int = 0, offset: int = 0):
        self.kind, self.detail, self.replicas, self.offset = kind, detail, replicas, offset


async def _ask_role(wire: _Wire) -> _Role:
    reply = await wire.call("ROLE")
    if isinstance(reply, list) and reply:
        kind = reply[0]
        if kind == b"master":
            offset = reply[1] if len(reply) > 1 and isinstance(reply[1], int) else 0
            replicas = len(reply[2]) if len(reply) > 2 and isinstance(reply[2], list) else 0
            return _Role("master", "primary", replicas, offset)
        if kind == b"slave" and len(reply) >= 4:
            host = reply[1].decode("utf-8", "replace")
            state = reply[3].decode("utf-8", "replace")
            return _Role("replica", f"replica of {_hostport(host, reply[2])} ({state})")
        if kind == b"sentinel":
            return _Role("other", "a Sentinel, not a Redis server")
    if isinstance(reply, hiredis.ReplyError):
        # ROLE not allowed for this user (NOPERM)?  HELLO also says the role.
        hello = await wire.call("HELLO", "2")
        if isinstance(hello, list):
            fields = dict(zip(hello[::2], hello[1::2], strict=False))
            role = fields.get(b"role")
            if role == b"master":
                return _Role("master", "primary")
            if role in (b"replica", b"slave"):
                return _Role("replica", "replica")
        code = str(reply).split(" ", 1)[0]
        return _Role("other", f"ROLE refused ({code}); allow ROLE for redis.username")
    return _Role("other", "unexpected ROLE reply")


class _Locator:
    """Finds the primary on demand, shares concurrent searches, keeps searching in the
    background while there is none, and tells the pool when it moved."""

    def __init__(self, cfg, settings):
        redis = cfg.redis
        self.target = _Target(settings)
        self.label = settings.label
        self.scheme = "rediss" if redis.tls is not None else "redis"
        self.data_auth = _Auth(redis.username, redis.password,
                               "check redis.username and redis.password")
        self.primary: tuple[str, int] | None = None
        self.on_primary = None  # set by the pool: called with the primary's (host, port)
        self.moves = 0
        self._epoch = 0  # bumped when Sentinel announces a switch
        self._search: asyncio.Task | None = None
        self._hunt_task: asyncio.Task | None = None
        self._closed = False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        for task in (self._search, self._hunt_task):
            if task is not None and not task.done():
                task.cancel()

    async def locate(self) -> tuple[str, int]:
        """The `locate` hook: the current primary, freshly checked."""
        if self._closed:
            raise UpstreamFailure("shutting down")
        task = self._search
        if task is None or task.done():
            task = self._search = asyncio.get_running_loop().create_task(self._search_once())
        return await asyncio.shield(task)

    async def _search_once(self) -> tuple[str, int]:
        epoch = self._epoch
        try:
            found = await self._discover()
        except UpstreamFailure:
            if self._epoch != epoch and self.primary is not None:
                return self.primary
            self._start_hunt()
            raise
        if self._epoch != epoch and self.primary is not None:
            return self.primary  # a switch was announced meanwhile: this answer is stale
        self._set_primary(found)
        return found

    async def _discover(self) -> tuple[str, int]:
        raise NotImplementedError

    def _set_primary(self, found: tuple[str, int]) -> None:
        old = self.primary
        if found == old:
            return
        self.primary = found
        if old is None:
            log.info("upstream %s: primary is %s", self.label, _hostport(*found))
        else:
            self.moves += 1
            log.warning("upstream %s: primary moved from %s to %s", self.label,
                        _hostport(*old), _hostport(*found))
        self._notify(found)

    def _notify(self, found: tuple[str, int]) -> None:
        if self.on_primary is not None and not self._closed:
            self.on_primary(found)

    def _start_hunt(self) -> None:
        if self._closed or (self._hunt_task is not None and not self._hunt_task.done()):
            return
        self._hunt_task = asyncio.get_running_loop().create_task(self._hunt())

    async def _hunt(self) -> None:
        delay = _HUNT_FIRST
        while not self._closed:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _HUNT_MAX)
            try:
                found = await self.locate()
            except UpstreamFailure:
                continue
            except Exception as exc:  # noqa: BLE001 - keep hunting; never log arguments
                log.warning("upstream %s: probing failed (%s)", self.label, type(exc).__name__)
                continue
            self._notify(found)  # wake the pool even if the primary did not move
            return

    def _primary_text(self) -> str:
        return _hostport(*self.primary) if self.primary is not None else "unknown"

    def info(self) -> list[tuple[str, object]]:
        return [("upstream_mode", self.mode),
                ("upstream_primary", _hostport(*self.primary) if self.primary else ""),
                ("upstream_primary_changes", self.moves)]


class PrimaryLocator(_Locator):
    """mode standalone with several addresses: the one whose ROLE says primary."""

    mode = "standalone"

    def __init__(self, cfg, settings):
        super().__init__(cfg, settings)
        self.addresses = list(cfg.redis.addresses)

    def describe(self) -> str:
        return (f"{self.scheme} standalone, primary {self._primary_text()} "
                f"({len(self.addresses)} addresses)")

    async def _role_of(self, address: tuple[str, int]) -> _Role:
        try:
            return await self.target.probe(*address, self.data_auth, _ask_role)
        except ProbeError as exc:
            return _Role("down", str(exc))

    async def _discover(self) -> tuple[str, int]:
        roles = await asyncio.gather(*(self._role_of(a) for a in self.addresses))
        masters = [(a, r) for a, r in zip(self.addresses, roles, strict=True)
                   if r.kind == "master"]
        if not masters:
            seen = "; ".join(f"{_hostport(*a)}: {r.detail}"
                             for a, r in zip(self.addresses, roles, strict=True))
            raise UpstreamFailure(f"no primary among redis.addresses ({seen})")
        if any(a == self.primary for a, _ in masters):
            return self.primary
        # Two primaries and none is ours: the one with replicas and the most data.
        return max(masters, key=lambda m: (m[1].replicas, m[1].offset))[0]


class SentinelLocator(_Locator):
    """mode sentinel: ask the Sentinels, check with ROLE, follow +switch-master."""

    mode = "sentinel"

    def __init__(self, cfg, settings):
        super().__init__(cfg, settings)
        redis = cfg.redis
        self.sentinels = list(redis.addresses)
        self.master_name = redis.sentinel_master_name
        self.sentinel_auth = _Auth(redis.sentinel_username, redis.sentinel_password,
                                   "check redis.sentinel.username and redis.sentinel.password")
        self.watching: tuple[str, int] | None = None  # the Sentinel we are subscribed to
        self._watch_task: asyncio.Task | None = None
        self._watch_problems: dict[tuple[str, int], str] = {}  # logged once each

    def describe(self) -> str:
        return (f'{self.scheme} sentinel "{self.master_name}", primary '
                f"{self._primary_text()} ({len(self.sentinels)} sentinels)")

    async def start(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        await super().close()
        if self._watch_task is not None:
            self._watch_task.cancel()

    async def _ask(self, sentinel: tuple[str, int]) -> tuple[tuple[str, int] | None, str]:
        name = self.master_name

        async def exchange(wire: _Wire) -> Reply:
            return await wire.call("SENTINEL", "get-master-addr-by-name", name)

        try:
            reply = await self.target.probe(*sentinel, self.sentinel_auth, exchange)
        except ProbeError as exc:
            return None, str(exc)
        if reply is None:
            return None, f'does not know master "{name}"'
        if isinstance(reply, list) and len(reply) == 2:
            try:
                return (reply[0].decode(), int(reply[1])), ""
            except (ValueError, UnicodeDecodeError):
                pass
        if isinstance(reply, hiredis.ReplyError):
            return None, f"refused ({str(reply).split(' ', 1)[0]})"
        return None, "unexpected reply"

    async def _role_of(self, address: tuple[str, int]) -> _Role:
        try:
            return await self.target.probe(*address, self.data_auth, _ask_role)
        except ProbeError as exc:
            return _Role("down", str(exc))

    async def _discover(self) -> tuple[str, int]:
        answers = await asyncio.gather(*(self._ask(s) for s in self.sentinels))
        votes: dict[tuple[str, int], int] = {}
        for found, _ in answers:
            if found is not None:
                votes[found] = votes.get(found, 0) + 1
        candidates = list(votes)
        roles = await asyncio.gather(*(self._role_of(c) for c in candidates))
        masters = [c for c, r in zip(candidates, roles, strict=True) if r.kind == "master"]
        if masters:
            return max(masters, key=lambda c: (votes[c], c == self.primary))
        checked = dict(zip(candidates, roles, strict=True))
        parts = []
        for sentinel, (found, why) in zip(self.sentinels, answers, strict=True):
            if found is None:
                parts.append(f"{_hostport(*sentinel)}: {why}")
            else:
                parts.append(f"{_hostport(*sentinel)} says {_hostport(*found)}: "
                             f"{checked[found].detail}")
        raise UpstreamFailure(f'no primary for "{self.master_name}" from the Sentinels '
                              f"({'; '.join(parts)})")

    async def _watch(self) -> None:
        """Stay subscribed to +switch-master on one Sentinel; move on when it goes."""
        delay = _WATCH_RETRY_FIRST
        index = 0
        while not self._closed:
            sentinel = self.sentinels[index % len(self.sentinels)]
            index += 1
            try:
                await self._subscribe(sentinel)
                delay = _WATCH_RETRY_FIRST  # it worked for a while: retry quickly
            except asyncio.CancelledError:
                raise
            except ProbeError as exc:
                self._watch_problem(sentinel, str(exc))
            except Exception as exc:  # noqa: BLE001 - the watcher must survive anything
                self._watch_problem(sentinel, type(exc).__name__)
            finally:
                self.watching = None
            if self._closed:
                return
            if index % len(self.sentinels) == 0:  # every Sentinel tried: back off
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, _WATCH_RETRY_MAX)

    def _watch_problem(self, sentinel: tuple[str, int], reason: str) -> None:
        if self._watch_problems.get(sentinel) != reason:
            self._watch_problems[sentinel] = reason
            log.info("upstream %s: Sentinel %s: %s; watching another one for +switch-master",
                     self.label, _hostport(*sentinel), reason)

    async def _subscribe(self, sentinel: tuple[str, int]) -> None:
        target = self.target

        async def subscribe() -> _Wire:
            wire = await target.open(*sentinel, self.sentinel_auth)
            try:
                reply = await wire.call("SUBSCRIBE", "+switch-master")
            except BaseException:
                wire.close()
                raise
            if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                wire.close()
                raise ProbeError("SUBSCRIBE +switch-master refused")
            return wire

        try:
            wire = await asyncio.wait_for(subscribe(), target.timeout)
        except TimeoutError:
            raise ProbeError(f"no answer within connectTimeout {target.timeout:g}s") from None
        except ssl.SSLError as exc:
            raise ProbeError(describe_handshake_error(exc, target.tls_profile)) from None
        except OSError as exc:
            raise ProbeError(exc.strerror or type(exc).__name__) from None
        self.watching = sentinel
        self._watch_problems.pop(sentinel, None)
        log.info("upstream %s: following +switch-master on Sentinel %s", self.label,
                 _hostport(*sentinel))
        try:
            # A switch may have happened while no Sentinel was watched: ask again.
            asyncio.get_running_loop().create_task(self._refresh())
            silent = 0
            while not self._closed:
                try:
                    message = await asyncio.wait_for(wire.read(), _WATCH_PING)
                except TimeoutError:
                    if silent:
                        raise ProbeError("stopped answering") from None
                    silent = 1
                    wire.send("PING")
                    continue
                silent = 0
                self._on_message(message)
        except OSError as exc:
            raise ProbeError(exc.strerror or type(exc).__name__) from None
        finally:
            wire.close()

    def _on_message(self, message: Reply) -> None:
        if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"
                and message[1] == b"+switch-master" and isinstance(message[2], bytes)):
            return  # the PING reply, or anything else
        parts = message[2].split()
        if len(parts) != 5 or parts[0].decode("utf-8", "replace") != self.master_name:
            return
        try:
            new = (parts[3].decode(), int(parts[4]))
        except (ValueError, UnicodeDecodeError):
            return
        self._epoch += 1
        self._set_primary(new)

    async def _refresh(self) -> None:
        try:
            await self.locate()
        except Exception:  # noqa: BLE001 - the connections report it when they need it
            pass


# ---------------------------------------------------------------------------------------
# mode auto with one address
# ---------------------------------------------------------------------------------------


def load_cluster_backend():
    """The ClusterBackend class, or None when this build has none (yet)."""
    name = "proxy.backends.redis.cluster"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None
    return getattr(module, "ClusterBackend", None)


def cluster_fallback(cfg, why: str) -> RedisBackend:
    """A standalone pool on the first address, with a clear error in the log."""
    log.error("upstream cache \"%s\": %s, but this cachecloak has no cluster backend; "
              "using %s as a standalone server (keys on other nodes will answer MOVED); "
              "upgrade cachecloak", cfg.name, why, _hostport(*cfg.redis.addresses[0]))
    return RedisBackend(cfg)


class _PendingRoute:
    """A client's route while auto mode has not decided yet (Redis was unreachable).

    Commands fail at once with the reason; after the decision the route forwards to
    a route of the chosen backend, taken the first time it is needed."""

    __slots__ = ("_auto", "inner")

    def __init__(self, auto: AutoBackend):
        self._auto = auto
        self.inner = None

    def _target(self):
        if self.inner is None and self._auto.chosen is not None:
            self.inner = self._auto.chosen.route()
        return self.inner

    def submit(self, args: list[bytes], waiter: Waiter, command=None) -> None:
        inner = self.inner or self._target()
        if inner is None:
            waiter.fail(writer.error(f"ERR cachecloak: {self._auto.unavailable()}"))
            return
        inner.submit(args, waiter, command)

    def flush(self) -> None:
        if self.inner is not None:
            self.inner.flush()

    async def call(self, args: list[bytes]) -> Reply:
        inner = self._target()
        if inner is None:
            raise UpstreamFailure(self._auto.unavailable())
        return await inner.call(args)

    async def delete_prefix(self, prefix: bytes) -> int:
        inner = self._target()
        if inner is None:
            raise UpstreamFailure(self._auto.unavailable())
        return await inner.delete_prefix(prefix)

    async def count_prefix(self, prefix: bytes) -> int:
        inner = self._target()
        if inner is None:
            raise UpstreamFailure(self._auto.unavailable())
        return await inner.count_prefix(prefix)


class AutoBackend:
    """mode auto, one address: a standalone pool, or the cluster backend when the server
    says `cluster_enabled:1`.  Decided in start(); when Redis is unreachable then, it is
    asked again in the background and clients get an error reply meanwhile."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.standalone = RedisBackend(cfg)  # builds the TLS context: fails early
        settings = self.standalone._settings
        self.target = _Target(settings)
        self.auth = _Auth(cfg.redis.username, cfg.redis.password,
                          "check redis.username and redis.password")
        self.address = cfg.redis.addresses[0]
        self.chosen = None
        self._reason = "not connected yet"
        self._task: asyncio.Task | None = None
        self._closed = False

    @property
    def description(self) -> str:
        if self.chosen is not None:
            return self.chosen.description
        return f"{self.standalone.description} (mode auto: not reached yet)"

    def unavailable(self) -> str:
        return (f"Redis for {self.target.label} at {_hostport(*self.address)} is unavailable "
                f"({self._reason}); retrying in the background")

    async def start(self) -> None:
        if not await self._try_decide():
            self._task = asyncio.get_running_loop().create_task(self._keep_trying())

    async def _keep_trying(self) -> None:
        delay = 0.05
        while not self._closed:
            await asyncio.sleep(random.uniform(0, delay) + 0.01)
            delay = min(delay * 2, 2.0)
            try:
                if await self._try_decide():
                    log.info("upstream %s at %s: connected", self.target.label,
                             _hostport(*self.address))
                    return
            except Exception as exc:  # noqa: BLE001 - keep trying; never log arguments
                self._note(type(exc).__name__)

    def _note(self, reason: str) -> None:
        if reason != self._reason:
            log.warning("upstream %s at %s: %s; retrying with backoff", self.target.label,
                        _hostport(*self.address), reason)
        self._reason = reason

    async def _try_decide(self) -> bool:
        async def exchange(wire: _Wire) -> Reply:
            return await wire.call("INFO", "cluster")

        try:
            reply = await self.target.probe(*self.address, self.auth, exchange)
        except ProbeError as exc:
            text = str(exc)
            if exc.reached or text.startswith("TLS handshake failed"):
                # Reached but no good answer (AUTH refused, silent, TLS refused): treat it
                # as a standalone server, whose connections then report the problem.
                log.warning("upstream %s at %s: %s; using it as a standalone server",
                            self.target.label, _hostport(*self.address), text)
                reply = None
            else:
                self._note(text)
                return False
        if self._closed:
            return True
        backend = self.standalone
        if isinstance(reply, bytes) and b"cluster_enabled:1" in reply:
            cluster = load_cluster_backend()
            backend = cluster(self.cfg) if cluster is not None else cluster_fallback(
                self.cfg, f"{_hostport(*self.address)} says cluster_enabled:1")
        await backend.start()
        self.chosen = backend
        return True

    local = False

    def route(self):
        if self.chosen is not None:
            return self.chosen.route()
        return _PendingRoute(self)

    def dedicated(self, key: bytes | None = None):
        if self.chosen is None:
            raise UpstreamFailure(self.unavailable())
        return self.chosen.dedicated(key)

    def release_dedicated(self, route) -> None:
        if self.chosen is not None:
            self.chosen.release_dedicated(route)

    def release(self, route) -> None:
        if isinstance(route, _PendingRoute):
            route, backend = route.inner, self.chosen
            if route is None:
                return
        else:
            backend = self.chosen
        release = getattr(backend, "release", None)
        if release is not None:
            release(route)

    def info(self) -> list[tuple[str, object]]:
        info = getattr(self.chosen, "info", None)
        return info() if info is not None else []

    def ready(self) -> bool:
        return self.chosen is not None and self.chosen.ready()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self.chosen is not None:
            await self.chosen.close()
