"""Hot reload: SIGHUP (or `cachecloak reload`) re-reads the configuration file and the
secrets and applies them to the running server without dropping a client connection.

What a reload applies, for every cache a listener serves:

* keys and their settings (`encryption`, `hashing`, `keys.prefix`, `databases`): a new
  `Cache` object replaces the running one.  The running object keeps its keys and
  names, so a command or multi-step operation (RENAME, a transaction, a
  read-modify-write) that started with it finishes with the keys it started with; it
  only learns to open what the new current key writes meanwhile (Cache.open_also_as),
  or a concurrent INCR would take a fresh value for a miss and start again from 0.
  The client's next command uses the new object.
* the upstream (`redis:`, the TLS profile it names and the contents of that profile's
  files, `type`): a new backend is built, started and given up to connectTimeout to
  connect; then clients move to it.  A client with nothing in flight moves at once; a
  client with commands in flight moves after their replies (in its own reply order, so
  its later commands cannot overtake earlier ones on the other connection).  The old
  backend is closed once no client uses it (bounded by RETIRE_TIMEOUT).
* A client's WATCH is lost when its keys move to another upstream or get other stored
  names (new hashing key or prefix): its EXEC then answers nil, as when a watched key
  changed, and the client retries its transaction.

What needs a restart: the `listeners:` (addresses, sockets, their cache, password,
maxClients, socketMode, ...), `admin:`, and `local.maxEntries` of an in-process cache
(rebuilding it would drop its data).  A reload that changes them logs a warning naming
the field and keeps the running value; it is not rejected for it.

Everything is built before anything changes: a configuration error, a TLS file that
cannot be loaded, or a served cache that is no longer defined rejects the whole reload,
logs why, and leaves the running configuration in force.

Also here: the pid file of `cachecloak run --pid-file` and the `cachecloak reload`
command, which signals the process named by that file and waits for the outcome the
process writes next to it (`<pid file>.reload.json`).  With --workers, a worker hands
its outcome to the supervisor instead (report_outcomes_to), and the supervisor, which
checks the new configuration itself first (check_reload), writes the one outcome file
(proxy.server.workers).

Must never: log, or write to the outcome file, a key, a value or a secret (key
identifiers are public, as INFO shows them); apply part of a configuration; close a
client connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("cachecloak")

# How long an old backend stays open for the commands still in flight on it.  Every
# command is bounded by commandTimeout already; this only bounds the wait for clients
# that keep a long pipeline going.
RETIRE_TIMEOUT = 30.0
# A key no application uses: two caches name it alike exactly when their naming is alike.
_NAMING_PROBE = b"\x00cachecloak reload naming probe"
OUTCOME_SUFFIX = ".reload.json"
# `cachecloak reload` exit codes (0: reloaded, 1: no process or no outcome in time).
EXIT_REJECTED = 2  # the new configuration was rejected: the running one stays in force
EXIT_INCOMPLETE = 3  # applied only in part (some workers), or an internal error: see the log


@dataclass(frozen=True)
class ConfigSource:
    """Where the running configuration came from, to read it again the same way."""

    path: str | None
    secret_provider: str | None = None
    listen: str | None = None
    pid_file: str | None = None


# Process-wide, like the signal itself: set by `cachecloak run` before serving (worker
# processes forked from it inherit it).
_source: ConfigSource | None = None
_early_hup = False
# In a --workers process: where a reload's outcome goes instead of the outcome file (the
# supervisor collects every worker's and writes one file).
_reporter: Callable[[dict], None] | None = None


def set_source(source: ConfigSource) -> None:
    global _source
    _source = source


def current_source() -> ConfigSource | None:
    return _source


def report_outcomes_to(reporter: Callable[[dict], None] | None) -> None:
    """Hand each reload's outcome record to `reporter` instead of writing the file."""
    global _reporter
    _reporter = reporter


def catch_early_hup() -> None:
    """Until the server (or the --workers supervisor) installs its own handler, note a
    SIGHUP instead of dying of it (SIGHUP's default action ends the process); it then
    reloads once.  A SIGHUP noted by another process before it forked us is not ours."""
    global _early_hup
    _early_hup = False
    signal.signal(signal.SIGHUP, _note_early_hup)


def _note_early_hup(signum, frame) -> None:
    global _early_hup
    _early_hup = True


def take_early_hup() -> bool:
    """Whether a SIGHUP came before the handler was installed (and forget it)."""
    global _early_hup
    pending, _early_hup = _early_hup, False
    return pending


class _Rejected(Exception):
    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass
class _Change:
    name: str
    old_cfg: object
    new_cfg: object
    old_cache: object
    new_cache: object
    rebuilt: bool  # a new backend
    tls_digest: object


class Reloader:
    """Reloads the server's configuration on request, one reload at a time."""

    def __init__(self, server) -> None:
        self.server = server
        self.counts = {"ok": 0, "rejected": 0}
        self._task: asyncio.Task | None = None
        self._again = False
        self._closed = False
        self._retiring: dict[asyncio.Task, object] = {}  # task -> old backend
        # time.monotonic() when the reload in progress read the configuration: the
        # --workers supervisor takes an outcome as the answer to its SIGHUP only when
        # the reload began after it sent the signal.
        self._started = 0.0
        self._running = {name: server.config.caches[name] for name in server.caches}
        self._tls_digests = {name: _tls_digest(cfg) for name, cfg in self._running.items()}
        # In-process caches keep the settings they were built with (see _restart_only).
        self._local_built = {name: cfg.local for name, cfg in self._running.items()
                             if cfg.type == "local"}

    # -- triggering -----------------------------------------------------------------

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle SIGHUP from now on; reload at once if one came during startup."""
        loop.add_signal_handler(signal.SIGHUP, self.request)
        if take_early_hup():
            self.request()

    def request(self) -> None:
        """Reload now, or right after the reload in progress (requests coalesce)."""
        if self._closed:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while True:
            self._again = False
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - a reload must never stop the proxy
                log.error("config reload failed: internal error %s at %s; the log above "
                          "says what was applied", type(exc).__name__, _where(exc))
                _write_outcome(_source, "error", [
                    f"configuration: the reload failed with an internal error "
                    f"({type(exc).__name__}); the log says what was applied"], self._started)
            if not self._again or self._closed:
                return

    async def close(self) -> None:
        """The server stops: no more reloads; close the backends still being retired."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        for task, backend in list(self._retiring.items()):
            task.cancel()
            await _close_quietly(backend)
        self._retiring.clear()

    # -- one reload -----------------------------------------------------------------

    async def reload(self) -> bool:
        """Read the configuration again and apply it; False when it was rejected."""
        from proxy.config import ConfigError, load_config

        source = _source or ConfigSource(self.server.config.source)
        self._started = time.monotonic()
        try:
            config = load_config(source.path, secret_provider=source.secret_provider,
                                 listen=source.listen)
            changes = self._prepare(config)
        except ConfigError as exc:
            self._rejected(source, exc.errors)
            return False
        except _Rejected as exc:
            self._rejected(source, exc.lines)
            return False
        except Exception as exc:  # noqa: BLE001 - a reload must never stop the proxy
            # The type only: an unexpected exception's text might quote the file.
            self._rejected(source, [f"configuration: could not be reloaded "
                                    f"({type(exc).__name__}); fix the file and reload again"])
            return False
        for line in _restart_only(self.server.config, config, self._local_built):
            log.warning("config reload: %s", line, extra={"event": "config_reload"})
        started: list = []
        try:
            for change in changes:
                if change.rebuilt:
                    started.append(change.new_cache.backend)
                    await change.new_cache.backend.start()
            await asyncio.gather(*(self._wait_ready(c) for c in changes if c.rebuilt))
        except BaseException as exc:
            for backend in started:
                await _close_quietly(backend)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._rejected(source, [f"configuration: the new upstream could not be started "
                                    f"({type(exc).__name__}); the previous one stays"])
            return False
        self._apply(config, changes)
        return True

    def _prepare(self, config) -> list[_Change]:
        """Build (without starting) what changes, per served cache; nothing is applied."""
        from proxy.cache import Cache
        from proxy.server.app import StartupError, build_backend

        changes = []
        for name, cache in self.server.caches.items():
            new_cfg = config.caches.get(name)
            if new_cfg is None:
                raise _Rejected([_undefined(name)])
            old_cfg = self._running[name]
            digest = _tls_digest(new_cfg)
            rebuild = (_upstream(old_cfg) != _upstream(new_cfg)
                       or digest != self._tls_digests[name])
            if not rebuild and new_cfg == old_cfg:
                continue
            if rebuild:
                try:
                    backend = build_backend(new_cfg)
                except StartupError as exc:
                    raise _Rejected([str(exc)]) from None
            else:
                backend = cache.backend
            try:
                new_cache = Cache.from_config(new_cfg, backend)
            except ValueError:
                raise _Rejected([_shared_key_id(name)]) from None
            new_cache.carry_over(cache)
            changes.append(_Change(name, old_cfg, new_cfg, cache, new_cache, rebuild,
                                   digest))
        return changes

    async def _wait_ready(self, change: _Change) -> None:
        backend = change.new_cache.backend
        redis = getattr(change.new_cfg, "redis", None)
        timeout = redis.connect_timeout + 0.5 if redis is not None else 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not backend.ready() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if not backend.ready():
            log.warning("config reload: cache %s: the new upstream (%s) is not reachable yet; "
                        "clients move to it anyway and get error replies until it is (see "
                        "/readyz); check redis.addresses", change.name,
                        backend.description, extra={"event": "config_reload",
                                                    "cache": change.name})

    def _apply(self, config, changes: list[_Change]) -> None:
        """Make the new configuration the running one and move the clients (no await:
        no command runs half-way through)."""
        server = self.server
        old_config = server.config
        # Listeners and admin stay as they run (their objects key the per-listener stats).
        server.config = dataclasses.replace(config, listeners=old_config.listeners,
                                            admin=old_config.admin)
        for change in changes:
            change.old_cache.open_also_as(change.new_cache)
            server.caches[change.name] = change.new_cache
            self._running[change.name] = change.new_cfg
            self._tls_digests[change.name] = change.tls_digest
            if change.rebuilt:
                self._local_built.pop(change.name, None)
                if change.new_cfg.type == "local":
                    self._local_built[change.name] = change.new_cfg.local
        moved = self.move_clients()
        for change in changes:
            if change.rebuilt:
                self._retire(change)
        self.counts["ok"] += 1
        lines = [_describe(name, server.caches[name], next(
            (c for c in changes if c.name == name), None), moved.get(name, 0))
            for name in server.caches]
        for line in lines:
            log.info("config reloaded: %s", line, extra={"event": "config_reload",
                                                         "outcome": "ok"})
        _write_outcome(_source, "ok", lines, self._started)

    def move_clients(self) -> dict[str, int]:
        """Give every client the running cache of its name; per cache, how many moved."""
        moved: dict[str, int] = {}
        caches = self.server.caches
        for client in list(self.server.clients.values()):
            current = client.cache
            latest = caches.get(current.name)
            if latest is None or latest is current:
                continue
            moved[current.name] = moved.get(current.name, 0) + 1
            if latest.backend is current.backend or not client.has_pending():
                _switch(client, latest)
            else:
                # After the replies in flight: its later commands wait (run_op keeps order).
                client.run_op(_switch_in_turn(client, caches))
        return moved

    def _retire(self, change: _Change) -> None:
        old = change.old_cache.backend
        task = asyncio.get_running_loop().create_task(self._close_when_unused(change.name, old))
        self._retiring[task] = old
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def _close_when_unused(self, name: str, backend) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETIRE_TIMEOUT
        while loop.time() < deadline and any(
                client.cache.backend is backend for client in self.server.clients.values()):
            await asyncio.sleep(0.05)
        description = backend.description
        await _close_quietly(backend)
        log.info("config reload: cache %s: the previous upstream (%s) is closed", name,
                 description, extra={"event": "config_reload", "cache": name})

    def _rejected(self, source: ConfigSource, lines: list[str]) -> None:
        self.counts["rejected"] += 1
        where = source.path or "the built-in default"
        for line in lines:
            log.error("config reload rejected (%s); the running configuration stays in "
                      "force: %s", where, line, extra={"event": "config_reload",
                                                        "outcome": "rejected"})
        _write_outcome(source, "rejected", lines, self._started)


def _undefined(name: str) -> str:
    return (f'caches: cache "{name}" is no longer defined, but a running listener serves '
            "it and listeners change only with a restart; define it again, or restart "
            "cachecloak")


def _shared_key_id(name: str) -> str:
    return f'caches: cache "{name}": two encryption keys share a key identifier; use distinct keys'


def check_reload(source: ConfigSource, served: Iterable[str]) -> tuple[object | None, list[str]]:
    """Read the configuration as a reload does and check what a reload would reject
    before it builds anything (configuration errors, a served cache no longer defined,
    TLS files that do not load, two keys with one identifier): (config, []) or
    (None, one line per problem).  Starts nothing and needs no event loop, so the
    --workers supervisor checks a new configuration once, before any worker tries it."""
    from proxy.backends.redis.tls import TLSSetupError, client_context
    from proxy.cache import Cache
    from proxy.config import ConfigError, load_config

    try:
        config = load_config(source.path, secret_provider=source.secret_provider,
                             listen=source.listen)
    except ConfigError as exc:
        return None, list(exc.errors)
    except Exception as exc:  # noqa: BLE001 - the type only: its text might quote the file
        return None, [f"configuration: could not be reloaded ({type(exc).__name__}); fix "
                      "the file and reload again"]
    problems: list[str] = []
    for name in dict.fromkeys(served):
        cfg = config.caches.get(name)
        if cfg is None:
            problems.append(_undefined(name))
            continue
        tls = getattr(getattr(cfg, "redis", None), "tls", None)
        if cfg.type == "redis" and tls is not None:
            try:
                client_context(tls)
            except TLSSetupError as exc:
                problems.append(f"caches: {name}: {exc}")  # as proxy.server.app words it
                continue
        try:
            Cache.from_config(cfg, backend=None)
        except ValueError:
            problems.append(_shared_key_id(name))
    return (None, problems) if problems else (config, [])


def _switch(client, new) -> None:
    """Move `client` to cache `new` now (the caller knows it may)."""
    old = client.cache
    lose_watch = old.stored_key(0, _NAMING_PROBE) != new.stored_key(0, _NAMING_PROBE)
    route = client.route
    if new.backend is not old.backend:
        release = getattr(old.backend, "release", None)
        if release is not None and route is not None:
            release(route)
        route = None  # a route of the new backend
        lose_watch = True
    watch = client.watch
    if lose_watch and watch is not None:
        from proxy.commands.transactions import WatchState

        watch.release()  # back to the backend it came from, with UNWATCH
        client.watch = WatchState(new.backend)
        client.watch.lost = True  # EXEC answers nil: the watched keys are not where they were
    client.use_route(new, route)


async def _switch_in_turn(client, caches) -> bytes:
    latest = caches.get(client.cache.name)
    if latest is not None and latest is not client.cache:
        _switch(client, latest)
    return b""  # fills the reply slot with nothing: the client sees no extra reply


def _upstream(cfg) -> tuple:
    """What the backend is built from; a change means a new backend.  An in-process
    cache's own settings are left out: rebuilding it would lose its data."""
    return (cfg.type, cfg.redis) if cfg.type == "redis" else (cfg.type,)


def _tls_digest(cfg) -> object:
    """The contents of the TLS files a cache's upstream uses, so renewed certificates
    are picked up by a reload even when their paths stay the same."""
    redis = getattr(cfg, "redis", None)
    tls = getattr(redis, "tls", None)
    if tls is None:
        return None
    digest = hashlib.sha256()
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        if path is None:
            digest.update(b"\x00none")
            continue
        try:
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
        except OSError as exc:
            # Unreadable now: differs from any readable state, so the backend is rebuilt
            # and loading the file reports the problem (and rejects the reload).
            digest.update(f"\x00unreadable {exc.errno} {secrets.token_hex(8)}".encode())
    return digest.digest()


def _restart_only(old, new, local_built: dict) -> list[str]:
    """One line per changed setting that only a restart applies (values never shown)."""
    lines = []
    if len(old.listeners) != len(new.listeners):
        lines.append(f"listeners: {len(new.listeners)} in the file, {len(old.listeners)} "
                     "running; adding or removing a listener needs a restart (the running "
                     "listeners stay)")
    for i, (was, now) in enumerate(zip(old.listeners, new.listeners, strict=False)):
        for f in dataclasses.fields(was):
            if f.name in ("host", "port", "unix_path"):  # parts of address
                continue
            if getattr(was, f.name) != getattr(now, f.name, None):
                lines.append(f"listeners[{i}].{_camel(f.name)}: changed in the file; it takes "
                             "effect only after a restart (the running value stays)")
    if old.admin != new.admin:
        lines.append("admin: changed in the file; it takes effect only after a restart "
                     "(the running endpoint stays)")
    names = list(new.caches)
    for name, built in local_built.items():
        cfg = new.caches.get(name)
        if cfg is not None and cfg.type == "local" and cfg.local != built:
            lines.append(f"caches[{names.index(name)}].local.maxEntries: changed in the file; "
                         "it takes effect only after a restart (the in-process data would "
                         "be lost by rebuilding the cache now)")
    return lines


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _describe(name: str, cache, change: _Change | None, moved: int) -> str:
    """One line per cache: its key identifiers (public) and what the reload changed."""
    sealer = cache.sealer
    if sealer is None:
        keys = "encryption off"
    else:
        old = [key_id.hex() for key_id in sealer.key_ids if key_id != sealer.key_id]
        keys = (f"encryption key id {sealer.key_id.hex()} current, {len(old)} old "
                f"key{'' if len(old) == 1 else 's'}" + (f" ({', '.join(old)})" if old else ""))
    parts = [f"cache {name}: {keys}"]
    if change is None:
        parts.append("unchanged")
        return "; ".join(parts)
    old_cfg, new_cfg = change.old_cfg, change.new_cfg
    if change.old_cache.stored_key(0, _NAMING_PROBE) != cache.stored_key(0, _NAMING_PROBE):
        parts.append("stored names changed (hashing key, prefix or hashing on/off): values "
                     "written before are no longer reachable through cachecloak")
    if old_cfg.encryption_enabled != new_cfg.encryption_enabled:
        parts.append(f"encryption turned {'on' if new_cfg.encryption_enabled else 'off'}")
    if change.rebuilt:
        parts.append(f"upstream rebuilt ({change.old_cache.backend.description} -> "
                     f"{cache.backend.description})")
    parts.append(f"{moved} client{'' if moved == 1 else 's'} moved")
    return "; ".join(parts)


def _where(exc: BaseException) -> str:
    """File and line of an exception, never its message (it might quote the file)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames[::-1][:4])


async def _close_quietly(backend) -> None:
    try:
        await backend.close()
    except Exception as exc:  # noqa: BLE001 - closing an old backend must not stop serving
        log.warning("config reload: closing a previous upstream failed (%s)",
                    type(exc).__name__)


# -- outcome file ----------------------------------------------------------------------

def outcome_path(pid_file: str) -> str:
    return pid_file + OUTCOME_SUFFIX


def _write_outcome(source: ConfigSource | None, outcome: str, lines: list[str],
                   started: float) -> None:
    """Tell `cachecloak reload` what happened: in a --workers process, the supervisor
    (which writes the file); else the outcome file, only with --pid-file."""
    record = {"id": secrets.token_hex(8), "pid": os.getpid(), "outcome": outcome,
              "lines": lines, "time": time.time(), "started": started}
    if _reporter is not None:
        try:
            _reporter(record)
        except OSError as exc:  # the supervisor is gone: this worker stops soon anyway
            log.warning("config reload: could not report the outcome to the supervisor (%s)",
                        exc.strerror or type(exc).__name__)
        return
    write_outcome(source, record)


def write_outcome(source: ConfigSource | None, record: dict) -> None:
    """Write an outcome record for `cachecloak reload` (only with --pid-file).  Written
    whole (temporary file and rename), so a reader never sees half of it."""
    if source is None or source.pid_file is None:
        return
    path = outcome_path(source.pid_file)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("config reload: could not write %s (%s); cachecloak reload cannot report "
                    "the outcome, the log has it", path, exc.strerror or type(exc).__name__)


# -- pid file ----------------------------------------------------------------------------

class PidFileError(Exception):
    """str() is one line: what is wrong with the pid file and how to fix it."""


def _started_after(pid: int, when: float) -> bool | None:
    """Did process `pid` start over a second after wall-clock time `when` (so it cannot
    have written a file dated `when`: the pid was reused)?  None when unknown (no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        start_ticks = int(stat.rsplit(b")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        started = btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return started > when + 1.0


def running_pid(path: str) -> int:
    """The pid of the live process a pid file names; PidFileError says why there is none."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64)
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        raise PidFileError(f"pid file {path} does not exist; is cachecloak running with "
                           f"--pid-file {path}? Start it with that option, or pass the path "
                           "it was started with") from None
    except OSError as exc:
        raise PidFileError(f"pid file {path} cannot be read ({exc.strerror}); check its "
                           "permissions") from None
    try:
        pid = int(text.strip())
        if pid <= 0:
            raise ValueError
    except ValueError:
        raise PidFileError(f"pid file {path} does not hold a process id; delete it and "
                           f"start cachecloak with --pid-file {path}") from None
    stale = (f"pid file {path} is stale: process {pid} is not running (cachecloak was "
             "killed or crashed before removing it); start cachecloak again, or delete "
             "the file")
    if pid == os.getpid():
        raise PidFileError(stale)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise PidFileError(stale) from None
    except PermissionError:
        raise PidFileError(f"process {pid} (from pid file {path}) belongs to another user; "
                           "run cachecloak reload as the user that runs cachecloak") from None
    if _started_after(pid, mtime):
        raise PidFileError(f"pid file {path} is stale: process {pid} started after the file "
                           "was written, so it is another program that reuses the number; "
                           "start cachecloak again, or delete the file")
    return pid


def write_pid_file(path: str) -> None:
    """Write this process's pid to `path` (whole, by rename); refuse when a live
    cachecloak already owns it."""
    try:
        other = running_pid(path)
    except PidFileError:
        other = None  # missing, unreadable, invalid or stale: ours to write
    if other is not None:
        raise PidFileError(f"pid file {path} names process {other}, which is running: "
                           "another cachecloak uses this file; stop it, or choose another "
                           "--pid-file")
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PidFileError(f"cannot write pid file {path} ({exc.strerror}); create its "
                           "directory, make it writable, or choose another --pid-file") from None


def remove_pid_file(path: str) -> None:
    """Remove the pid file (and the reload outcome) when it still names this process."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            if f.read(64).strip() != str(os.getpid()):
                return  # another process wrote it since: not ours to remove
        os.unlink(path)
    except OSError:
        return
    try:
        os.unlink(outcome_path(path))
    except OSError:
        pass


# -- `cachecloak reload` -------------------------------------------------------------------

def cmd_reload(args) -> int:
    """Send SIGHUP to the cachecloak named by the pid file; wait for and print the outcome.

    Exit 0: reloaded (or signalled, with --no-wait); 1: no such process, or no outcome
    in time; 2: the new configuration was rejected (the old one stays in force); 3: not
    applied everywhere (some --workers workers only) or an internal error (see the log)."""
    path = args.pid_file
    if not path:
        print("cachecloak reload: no pid file given; pass --pid-file PATH (the one "
              "cachecloak run was started with) or set CACHECLOAK_PID_FILE", file=sys.stderr)
        return 1
    try:
        pid = running_pid(path)
    except PidFileError as exc:
        print(f"cachecloak reload: {exc}", file=sys.stderr)
        return 1
    outcome = outcome_path(path)
    before = _read_text(outcome)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"cachecloak reload: could not signal process {pid} ({exc.strerror}); "
              "run as the user that runs cachecloak", file=sys.stderr)
        return 1
    if args.no_wait:
        print(f"sent SIGHUP to cachecloak (pid {pid}); the outcome is in its log")
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        text = _read_text(outcome)
        if text is not None and text != before:
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if isinstance(record, dict):
                return _report(pid, record)
        time.sleep(0.05)
    print(f"cachecloak reload: sent SIGHUP to process {pid}, but no outcome arrived within "
          f"{args.timeout:g}s; look for \"config reload\" in its log (was it started with "
          f"--pid-file {path}?)", file=sys.stderr)
    return 1


def _report(pid: int, record: dict) -> int:
    lines = [str(line) for line in record.get("lines") or []]
    outcome = record.get("outcome")
    workers = record.get("workers")  # written by a --workers supervisor only
    if outcome == "ok":
        if isinstance(workers, int):
            print(f"config reloaded (pid {pid}, {workers} worker{'' if workers == 1 else 's'})")
        else:
            print(f"config reloaded (pid {pid})")
        for line in lines:
            print(f"  {line}")
        return 0
    if outcome == "rejected":
        print(f"cachecloak reload: the new configuration was rejected (pid {pid}); the "
              "running configuration stays in force:", file=sys.stderr)
        code = EXIT_REJECTED
    elif outcome == "partial":
        print(f"cachecloak reload: only {workers} of {record.get('of')} workers reloaded "
              f"(pid {pid}); what each worker did (fix it and reload again):",
              file=sys.stderr)
        code = EXIT_INCOMPLETE
    else:
        print(f"cachecloak reload: the reload did not complete (pid {pid}); look for "
              "\"config reload\" in its log:", file=sys.stderr)
        code = EXIT_INCOMPLETE
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    return code


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None
