"""`cachecloak run --workers N`: a supervisor process and N worker processes that serve
the same listeners, so one cachecloak uses every core.

How the listeners are shared:

* TCP: every worker binds the listener's address itself with SO_REUSEPORT; the kernel
  spreads new connections over the workers' sockets.  Before forking, the supervisor
  binds each address once *without* SO_REUSEPORT and closes it again, so an address
  that is taken (by anything, another cachecloak with workers included) stops the start
  with one clear line instead of being shared with a stranger.
* Unix sockets cannot be shared by SO_REUSEPORT, so the supervisor binds each one (with
  the same stale-socket rules as a single process) and every worker accepts on the
  inherited socket.  The supervisor removes the socket file when it stops.

The supervisor:

* forks the workers after the configuration is loaded; it runs a plain asyncio loop
  (never uvloop) and each worker starts a fresh uvloop loop of its own.  Signals are
  blocked around fork(), so none reaches a worker before it has reset the supervisor's
  handlers;
* forwards SIGTERM / SIGINT (each worker drains, see proxy.server.app) and exits 0 when
  every worker exited 0;
* on SIGHUP, reads and checks the configuration itself first (proxy.server.reload
  check_reload): a configuration it rejects is logged once and no worker is signalled.
  Otherwise it takes it for the workers it starts from now on, forwards SIGHUP to every
  worker (each reloads, proxy.server.reload), collects each worker's outcome over the
  worker's pipe (a worker's reload answers the SIGHUP only when it began after the
  signal was sent: CLOCK_MONOTONIC is one clock for every process), and writes the one
  outcome file `cachecloak reload` reads: ok only when every worker reloaded;
  rejected when every worker rejected it (restarted workers then keep the running
  configuration too); else partial, with what each worker said.  A SIGHUP during a
  reload runs another one after it (only the last one's outcome is written); a SIGHUP
  before the supervisor's handler was installed is acted on once the workers exist;
* restarts a worker that dies, after a delay that doubles while it keeps dying
  (RESTART_DELAY_MIN .. RESTART_DELAY_MAX), and logs why;
* exits 1 when a worker fails before it serves at the first start (its error is logged
  just above), or MAX_STARTUP_FAILURES times in a row later: it never loops on an error
  that a restart cannot fix;
* serves the admin endpoint (admin.address) itself: each worker answers on a private
  Unix socket in a temporary directory (mode 0700); /metrics is every worker's metrics
  with a `worker` label (0..N-1) plus the supervisor's own, /healthz and /readyz are 200
  only when every worker says so.

The `local` in-process backend is per process: each worker has its own memory.

Must never: run uvloop or any thread in the supervisor (it forks); return from a worker
process into the supervisor's code (a worker leaves with os._exit); log a key, a value or
a secret (the supervisor only relays what workers already expose).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.server import reload as reloading
from proxy.server.admin import MAX_HEAD_BYTES, AdminServer

log = logging.getLogger("cachecloak.workers")

MAX_WORKERS = 256
# A worker that keeps dying is restarted after 0.25 s, 0.5 s, 1 s, ... up to 15 s; one
# that served for STABLE_AFTER seconds starts again from the shortest delay.
RESTART_DELAY_MIN = 0.25
RESTART_DELAY_MAX = 15.0
STABLE_AFTER = 30.0
# Failing before serving this many times in a row (after the first start) is an error a
# restart does not fix (a TLS file that became unreadable, ...): the supervisor stops.
MAX_STARTUP_FAILURES = 5
# Beyond the workers' own drain timeout, before the supervisor kills what is left.
STOP_GRACE = 5.0
# A worker's admin socket must answer within this (a scrape waits for the slowest).
ASK_TIMEOUT = 3.0
MAX_WORKER_RESPONSE = 32 * 1024 * 1024
# How often a worker checks that its supervisor is still there.
PARENT_CHECK_INTERVAL = 1.0
# How long the supervisor waits for the workers' reload outcomes, beyond the longest
# connectTimeout of the new configuration (a worker's reload waits that long for a new
# upstream).  Below `cachecloak reload`'s default --timeout of 15 s with the default
# connectTimeout (2 s).
RELOAD_WAIT = 10.0
# A worker's message on its pipe (one line: b"s" serving, b"o" + JSON reload outcome).
MAX_WORKER_MESSAGE = 1024 * 1024

EXIT_STARTUP = 1  # as proxy.cli
EXIT_CONFIG = 2
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_BLOCKED_AROUND_FORK = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}

# In a worker: what it inherited from the supervisor stays referenced until os._exit, so
# nothing of it (the supervisor's event loop above all: closing it would unregister the
# supervisor's descriptors from the epoll instance both processes share) is finalized.
_INHERITED: list[object] = []


def parse_workers(text: str) -> int:
    """argparse type of --workers / CACHECLOAK_WORKERS: a count, or `auto` (one per CPU
    this process may run on)."""
    value = str(text).strip().lower()
    if value == "auto":
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, MAX_WORKERS))
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"must be a number of processes from 1 to {MAX_WORKERS}, or auto (one per CPU); "
            f"got {text!r} (from --workers or CACHECLOAK_WORKERS)")
    return count


@dataclass
class _Slot:
    """One worker position (0..N-1); its process changes when it is restarted."""

    index: int
    admin_path: str | None = None
    pid: int | None = None
    pipe: int | None = None  # read end: the worker's messages (see _on_message)
    pipe_buffer: bytearray = field(default_factory=bytearray, repr=False)
    outcome: dict | None = None  # the latest reload outcome of its current process
    started: bool = False
    started_at: float = 0.0
    delay: float = RESTART_DELAY_MIN
    startup_failures: int = 0  # in a row
    restarts: int = 0
    restart_timer: asyncio.TimerHandle | None = field(default=None, repr=False)


Serve = Callable[..., int]  # serve(config, prepare) -> exit code, as proxy.cli runs it


def supervise(config, args: argparse.Namespace, serve: Serve) -> int:
    """Run `args.workers` workers until stopped; the supervisor's exit code.

    `serve(config, prepare)` is what a single process does (proxy.cli): each worker calls
    it in its own process, with `prepare(server)` applied to its Server before run()."""
    return Supervisor(config, args, serve).run()


class Supervisor:
    def __init__(self, config, args: argparse.Namespace, serve: Serve) -> None:
        self.config = config
        self.args = args
        self.serve = serve
        self.count: int = args.workers
        self.pid = os.getpid()
        self.slots = [_Slot(i) for i in range(self.count)]
        self.unix_sockets: dict[str, socket.socket] = {}  # listener address -> socket
        self._unix_files: list[tuple[str, int]] = []  # (path, inode) to remove at the end
        self.tmpdir: str | None = None
        self.admin: SupervisorAdmin | None = None
        self._admin_sockets: list[socket.socket] = []
        # Descriptors of short-lived admin connections (accepted ones, and ours to the
        # workers), open in this process: a worker forked meanwhile closes its copies.
        self.transient_fds: set[int] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.all_started = False  # every worker served once: later failures restart
        self.exit_code = 0
        self._done: asyncio.Future | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._reload_task: asyncio.Task | None = None
        self._reload_again = False
        self._reload_news = asyncio.Event()  # a worker reported an outcome, or ended
        self.reload_counts = {"ok": 0, "rejected": 0, "partial": 0, "error": 0}

    # -- lifecycle (supervisor process) ---------------------------------------------

    def run(self) -> int:
        try:
            try:
                self._prepare()
            except _StartupFailure as exc:
                log.error("%s", exc)
                return EXIT_CONFIG if exc.config else EXIT_STARTUP
            # A plain selector loop: the supervisor forks from it, and a fresh uvloop
            # loop in each worker must not share anything with it.
            self.loop = asyncio.SelectorEventLoop()
            try:
                return self.loop.run_until_complete(self._main())
            except KeyboardInterrupt:  # before the handlers were installed: no worker yet
                return 0
            finally:
                if os.getpid() == self.pid:
                    self.loop.close()
        finally:
            if os.getpid() == self.pid:
                self._cleanup()

    def _prepare(self) -> None:
        from proxy.server.app import (
            Server,
            StartupError,
            admin_listen_error,
            listen_error,
        )

        for i, listener in enumerate(self.config.listeners):
            if listener.unix_path is None and listener.port == 0:
                raise _StartupFailure(
                    f"listeners[{i}].address: port 0 (any free port) cannot be shared by "
                    f"{self.count} workers; choose a port, or run with --workers 1",
                    config=True)
        for name in dict.fromkeys(listener.cache for listener in self.config.listeners):
            if self.config.caches[name].type == "local":
                log.warning("cache %s is in-process (type local): each of the %d workers "
                            "has its own memory, so a value written on one connection may "
                            "be missing on another; use a type: redis cache to share data "
                            "between workers", name, self.count)
        try:
            for listener in self.config.listeners:
                if listener.unix_path is None:
                    _probe_tcp(listener.host, listener.port)
                    continue
                try:
                    sock = Server.bind_unix(listener)
                    sock.listen(4096)
                except OSError as exc:
                    raise listen_error(listener, exc) from None
                self.unix_sockets[listener.address] = sock
                self._unix_files.append((listener.unix_path,
                                         os.stat(listener.unix_path).st_ino))
        except OSError as exc:
            raise _StartupFailure(str(listen_error(listener, exc))) from None
        except StartupError as exc:
            raise _StartupFailure(str(exc)) from None
        admin_cfg = getattr(self.config, "admin", None)
        if admin_cfg is not None:
            try:
                self._admin_sockets = _bind_tcp(admin_cfg.host, admin_cfg.port)
            except OSError as exc:
                raise _StartupFailure(str(admin_listen_error(admin_cfg.address, exc))) from None
            try:
                self.tmpdir = tempfile.mkdtemp(prefix="cachecloak-workers-")
            except OSError as exc:
                raise _StartupFailure(
                    f"cannot create a private directory for the workers' admin sockets "
                    f"under {tempfile.gettempdir()} ({exc.strerror}); make it writable or "
                    "set TMPDIR to a writable directory") from None
            for slot in self.slots:
                slot.admin_path = os.path.join(self.tmpdir, f"worker-{slot.index}.sock")
            self.admin = SupervisorAdmin(self, admin_cfg, self._admin_sockets)

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        for sig in _FORWARDED:
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        # Taken before forking: the workers must not inherit it (they get our SIGHUP).
        early_hup = reloading.take_early_hup()
        if self.admin is not None:
            await self.admin.start()
        log.info("supervisor (pid %d) starting %d workers", self.pid, self.count)
        for slot in self.slots:
            self._spawn(slot)
        if early_hup and not self.stopping:
            log.info("received SIGHUP during startup: reloading now")
            self._request_reload()
        code = await self._done
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reload_task
        if self.admin is not None:
            await self.admin.stop()
        return code

    def _cleanup(self) -> None:
        for sock in (*self.unix_sockets.values(), *self._admin_sockets):
            sock.close()
        for path, inode in self._unix_files:
            try:
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- workers --------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        slot.restart_timer = None
        if self.stopping:
            return
        if slot.admin_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(slot.admin_path)  # the previous worker's
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        slot.pipe_buffer.clear()
        slot.outcome = None
        # Blocked until the child has replaced the supervisor's handlers: a signal for it
        # must not run them (the handler would wake the supervisor's loop instead).
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_AROUND_FORK)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.close(read_fd)
            os.close(write_fd)
            log.error("cannot start worker %d: fork failed (%s)", slot.index,
                      exc.strerror or exc)
            self._schedule_restart(slot)
            return
        if pid == 0:
            self._become_worker(slot, read_fd, write_fd, old_mask)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(write_fd)
        slot.pid, slot.pipe, slot.started = pid, read_fd, False
        assert self.loop is not None
        self.loop.add_reader(read_fd, self._on_pipe, slot, read_fd)
        log.debug("worker %d forked (pid %d)", slot.index, pid)

    def _on_pipe(self, slot: _Slot, fd: int) -> None:
        # Bounded per call: the loop calls again while there is more.
        for _ in range(16):
            if slot.pipe != fd:
                return
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the worker ended
                self._close_pipe(slot)
                return
            buffer = slot.pipe_buffer
            buffer += data
            *messages, rest = buffer.split(b"\n")
            slot.pipe_buffer = bytearray(rest)
            if len(slot.pipe_buffer) > MAX_WORKER_MESSAGE:
                log.warning("worker %d sent an oversized message; ignored", slot.index)
                slot.pipe_buffer = bytearray()
            for message in messages:
                self._on_message(slot, bytes(message))

    def _on_message(self, slot: _Slot, message: bytes) -> None:
        """One line from a worker: b"s" it serves; b"o{json}" a reload's outcome."""
        if message == b"s":
            if not slot.started:
                self._worker_started(slot)
        elif message.startswith(b"o"):
            try:
                record = json.loads(message[1:])
            except ValueError:
                record = None
            if isinstance(record, dict):
                slot.outcome = record
                self._reload_news.set()

    def _close_pipe(self, slot: _Slot) -> None:
        if slot.pipe is None:
            return
        assert self.loop is not None
        self.loop.remove_reader(slot.pipe)
        os.close(slot.pipe)
        slot.pipe = None

    def _worker_started(self, slot: _Slot) -> None:
        slot.started, slot.started_at, slot.startup_failures = True, time.monotonic(), 0
        log.info("worker %d serving (pid %d)", slot.index, slot.pid)
        if not self.all_started and all(s.started for s in self.slots):
            self.all_started = True
            log.info("all %d workers serving (supervisor pid %d)", self.count, self.pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(status)
            for slot in self.slots:
                if slot.pid == pid:
                    self._worker_exited(slot, code)
                    break
        self._check_done()

    def _worker_exited(self, slot: _Slot, code: int) -> None:
        if slot.pipe is not None:  # it may have said "serving" just before it ended
            self._on_pipe(slot, slot.pipe)
            self._close_pipe(slot)
        pid, slot.pid = slot.pid, None
        self._reload_news.set()
        how = _describe_exit(code)
        if self.stopping:
            if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                log.error("worker %d (pid %s) %s while stopping", slot.index, pid, how)
                self.exit_code = 1
            return
        if not slot.started:
            slot.startup_failures += 1
            if not self.all_started:
                self._fail(f"worker {slot.index} (pid {pid}) {how} before it served; "
                           "stopping (its error is logged above)")
                return
            if slot.startup_failures >= MAX_STARTUP_FAILURES:
                self._fail(f"worker {slot.index} failed to start {slot.startup_failures} "
                           "times in a row; stopping (its error is logged above)")
                return
        elif time.monotonic() - slot.started_at >= STABLE_AFTER:
            slot.delay = RESTART_DELAY_MIN
        slot.started = False
        log.warning("worker %d (pid %s) %s; restarting it in %.2gs", slot.index, pid, how,
                    slot.delay)
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: _Slot) -> None:
        assert self.loop is not None
        slot.restarts += 1
        slot.restart_timer = self.loop.call_later(slot.delay, self._spawn, slot)
        slot.delay = min(slot.delay * 2, RESTART_DELAY_MAX)

    # -- signals and stopping -------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if sig == signal.SIGHUP:
            if not self.stopping:
                self._request_reload()
            return
        if not self.stopping:
            from proxy.server.app import DRAIN_TIMEOUT

            log.info("received %s: stopping %d workers (each drains for up to %gs)", name,
                     self.count, DRAIN_TIMEOUT)
            self._begin_stop(sig)
        else:
            self._signal_workers(sig)

    # -- reload ---------------------------------------------------------------------

    def _request_reload(self) -> None:
        """Reload now, or once more after the reload in progress (requests coalesce)."""
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        assert self.loop is not None
        self._reload_task = self.loop.create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while True:
            self._reload_again = False
            try:
                record = await self._reload()
            except Exception as exc:  # noqa: BLE001 - a reload must never stop the supervisor
                log.error("config reload failed: internal error %s in the supervisor",
                          type(exc).__name__)
                record = {"outcome": "error", "lines": [
                    f"supervisor: the reload failed with an internal error "
                    f"({type(exc).__name__}); the workers' log lines say what they applied"]}
            if self.stopping:
                return
            if self._reload_again:  # superseded: the next one's outcome is the one to tell
                continue
            self.reload_counts[record["outcome"]] = (
                self.reload_counts.get(record["outcome"], 0) + 1)
            source = self._source()
            if source.pid_file is not None:
                record.update(id=secrets.token_hex(8), pid=self.pid, time=time.time())
                reloading.write_outcome(source, record)
            return

    def _source(self) -> reloading.ConfigSource:
        args = self.args
        return reloading.current_source() or reloading.ConfigSource(
            args.config, getattr(args, "secret_provider", None), getattr(args, "listen", None),
            getattr(args, "pid_file", None))

    async def _reload(self) -> dict:
        """One reload of every worker; the outcome record for `cachecloak reload`."""
        source = self._source()
        served = [listener.cache for listener in self.config.listeners]
        config, problems = reloading.check_reload(source, served)
        if config is None:
            where = source.path or "the built-in default"
            for line in problems:
                log.error("config reload rejected (%s); the running configuration stays in "
                          "force: %s", where, line, extra={"event": "config_reload",
                                                            "outcome": "rejected"})
            log.info("config reload: no worker was signalled (each would reject it too)")
            return {"outcome": "rejected", "lines": problems, "workers": 0,
                    "of": self.count}
        previous = self.config
        # Workers started from now on run it.  Listeners and admin need a restart (as in
        # each worker), so the running ones are kept.
        self.config = dataclasses.replace(config, listeners=previous.listeners,
                                          admin=previous.admin)
        targets = [(slot, slot.pid) for slot in self.slots if slot.pid is not None]
        log.info("config reload: the new configuration is valid; forwarding SIGHUP to %d "
                 "workers (each reloads)", len(targets))
        sent = time.monotonic()
        for _slot, pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        wait = RELOAD_WAIT + max(
            (cfg.redis.connect_timeout for cfg in config.caches.values()
             if getattr(cfg, "redis", None) is not None), default=0.0)
        assert self.loop is not None
        deadline = self.loop.time() + wait

        def answer(slot: _Slot) -> dict | None:
            record = slot.outcome
            started = record.get("started") if record is not None else None
            if isinstance(started, (int, float)) and started >= sent:
                return record
            return None

        while not self.stopping:
            self._reload_news.clear()
            if all(slot.pid != pid or answer(slot) is not None for slot, pid in targets):
                break
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_news.wait(), remaining)
        answers: list[WorkerAnswer] = []
        pids = {slot.index: pid for slot, pid in targets}
        for slot in self.slots:
            if slot.index not in pids:
                answers.append(WorkerAnswer(slot.index, "absent"))
            elif slot.pid != pids[slot.index]:
                answers.append(WorkerAnswer(slot.index, "exited"))
            elif (record := answer(slot)) is None:
                answers.append(WorkerAnswer(slot.index, "silent"))
            else:
                outcome = record.get("outcome")
                lines = [str(line) for line in record.get("lines") or []]
                answers.append(WorkerAnswer(
                    slot.index, outcome if outcome in ("ok", "rejected") else "error", lines))
        outcome, lines, reloaded = aggregate_reload(answers, wait)
        if outcome == "rejected":
            self.config = previous  # no worker runs it: restarted ones must not either
        if outcome == "ok":  # each worker logged what it applied
            log.info("config reloaded by %d of %d workers", reloaded, self.count,
                     extra={"event": "config_reload", "outcome": outcome})
        else:
            log.error("config reload %s: %d of %d workers reloaded; %s", outcome, reloaded,
                      self.count, "the running configuration stays in force" if
                      outcome == "rejected" else "see the lines below",
                      extra={"event": "config_reload", "outcome": outcome})
            for line in lines:
                log.error("config reload: %s", line)
        return {"outcome": outcome, "lines": lines, "workers": reloaded, "of": self.count,
                "started": sent}

    def _signal_workers(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def _fail(self, reason: str) -> None:
        log.error("%s", reason)
        self.exit_code = 1
        self._begin_stop(signal.SIGTERM)

    def _begin_stop(self, sig: int) -> None:
        from proxy.server.app import DRAIN_TIMEOUT

        self.stopping = True
        for slot in self.slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
        if self.admin is not None:
            self.admin.close()
        self._signal_workers(sig)
        assert self.loop is not None
        self._kill_timer = self.loop.call_later(DRAIN_TIMEOUT + STOP_GRACE, self._kill_rest)
        self._check_done()

    def _kill_rest(self) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                log.error("worker %d (pid %d) did not stop in time; killing it", slot.index,
                          slot.pid)
                self.exit_code = 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)

    def _check_done(self) -> None:
        if not self.stopping or any(slot.pid is not None for slot in self.slots):
            return
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if self._done is not None and not self._done.done():
            log.info("all workers stopped" if self.exit_code == 0 else
                     "all workers stopped (with errors, see above)")
            self._done.set_result(self.exit_code)

    # -- in the child ---------------------------------------------------------------

    def _become_worker(self, slot: _Slot, read_fd: int, write_fd: int, old_mask) -> None:
        """The forked child: drop the supervisor's handlers and descriptors, serve as
        a single process would (with shared sockets), and leave with os._exit."""
        code = 1
        try:
            _INHERITED.append(self)  # see _INHERITED
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            reloading.catch_early_hup()  # a SIGHUP before the server's handler: reload once
            own = {read_fd}
            own.update(s.pipe for s in self.slots if s.pipe is not None)
            own.update(s.fileno() for s in self._admin_sockets)
            own.update(self.transient_fds)
            for fd in own:
                with contextlib.suppress(OSError):
                    os.close(fd)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            _tag_logs(slot.index, getattr(self.args, "log_format", "text"))
            code = self.serve(self.config, self._prepare_worker(slot, write_fd))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:  # whatever it is, the worker must end here
            log.exception("worker %d failed", slot.index)
            code = 1
        finally:
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _prepare_worker(self, slot: _Slot, write_fd: int) -> Callable[[object], None]:
        """The worker's side of its pipe (open until it exits: EOF tells the supervisor),
        one line per message: `s` once it serves, `o` and JSON per reload outcome
        (instead of the outcome file: the supervisor writes that one for every worker)."""
        supervisor_pid = self.pid

        def send(message: bytes) -> None:
            view = memoryview(message)
            while view:
                view = view[os.write(write_fd, view):]

        def started() -> None:
            with contextlib.suppress(OSError):  # the supervisor is gone: we stop soon
                send(b"s\n")

        reloading.report_outcomes_to(
            lambda record: send(b"o" + json.dumps(record).encode() + b"\n"))

        def prepare(server) -> None:
            server.reuse_port = True
            server.inherited_sockets = dict(self.unix_sockets)
            server.admin_socket_path = slot.admin_path
            server.on_started = started
            task = asyncio.get_running_loop().create_task(
                _watch_supervisor(server, supervisor_pid))
            _INHERITED.append(task)

        return prepare


@dataclass(frozen=True)
class WorkerAnswer:
    """What one worker did about a reload the supervisor asked for."""

    index: int
    # ok / rejected / error (its reload's outcome), silent (no outcome in time), exited
    # (ended during the reload), absent (not running when it began: being restarted)
    state: str
    lines: tuple[str, ...] | list[str] = ()


def aggregate_reload(answers: list[WorkerAnswer], wait: float) -> tuple[str, list[str], int]:
    """(outcome, lines, workers reloaded) of one reload of every worker: ok when no worker
    that runs failed or stayed silent; rejected when every worker that answered rejected
    it and none reloaded (the running configuration stays in force everywhere); partial
    otherwise.  A worker that was restarting, or ended meanwhile, is replaced by one
    started with the configuration the outcome leaves in force.  Lines name the workers,
    one line for what several said alike; never more than the workers' own lines hold."""
    states = [answer.state for answer in answers]
    reloaded = states.count("ok")
    running = [state for state in states if state not in ("exited", "absent")]
    if all(state == "ok" for state in running):
        outcome = "ok"
    elif reloaded == 0 and all(state == "rejected" for state in running):
        outcome = "rejected"
    else:
        outcome = "partial"
    which = "the running" if outcome == "rejected" else "the new"
    entries: list[tuple[int, str]] = []
    for answer in answers:
        label = {"ok": "reloaded: ", "rejected": "rejected: ", "error": "failed: "}.get(
            answer.state, "") if outcome == "partial" else ""
        if answer.state in ("ok", "rejected", "error"):
            lines = list(answer.lines) or [answer.state]
            entries.extend((answer.index, label + line) for line in lines)
        elif answer.state == "silent":
            entries.append((answer.index, f"no outcome within {wait:g}s (still reloading, or "
                            "stuck); its log lines say more"))
        elif answer.state == "exited":
            entries.append((answer.index, f"ended during the reload; its replacement starts "
                            f"with {which} configuration"))
        else:
            entries.append((answer.index, f"was not running (being restarted); it starts "
                            f"with {which} configuration"))
    return outcome, _per_worker(entries), reloaded


def _per_worker(entries: list[tuple[int, str]]) -> list[str]:
    """`worker N: line`, one line per distinct text with every worker that said it."""
    said: dict[str, list[int]] = {}
    for index, line in entries:
        said.setdefault(line, []).append(index)
    out = []
    for line, indexes in said.items():
        who = (f"worker {indexes[0]}" if len(indexes) == 1 else
               "workers " + ", ".join(str(i) for i in indexes))
        out.append(f"{who}: {line}")
    return out


class _StartupFailure(Exception):
    def __init__(self, message: str, *, config: bool = False) -> None:
        super().__init__(message)
        self.config = config


async def _watch_supervisor(server, supervisor_pid: int) -> None:
    """Stop (draining) when the supervisor is gone: nobody would restart or stop us."""
    while True:
        await asyncio.sleep(PARENT_CHECK_INTERVAL)
        if os.getppid() != supervisor_pid:
            log.warning("the supervisor (pid %d) is gone; stopping", supervisor_pid)
            server.request_stop()
            return


class _WorkerTag(logging.Filter):
    """Which worker logged: a `worker` field in JSON logs, `[worker N]` after the
    logger's name in text logs."""

    def __init__(self, index: int, text: bool) -> None:
        super().__init__()
        self.index = index
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.index
            if self.text:
                record.name = f"{record.name}[worker {self.index}]"
        return True


def _tag_logs(index: int, log_format: str) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(index, text=log_format != "json"))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


# -- sockets ---------------------------------------------------------------------------


def _addresses(host: str, port: int) -> list[tuple]:
    """(family, sockaddr) for every address `host` stands for, as asyncio binds them."""
    infos = socket.getaddrinfo(host or None, port, family=socket.AF_UNSPEC,
                               type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return list(dict.fromkeys((info[0], info[4]) for info in infos))


def _tcp_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:  # as asyncio: one socket per family, no dual stack
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def _probe_tcp(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE, ...) when the workers could not have the address to
    themselves.  Bound without SO_REUSEPORT, so a socket that has it (another group of
    workers) conflicts too; closed at once, never listening."""
    for family, sockaddr in _addresses(host, port):
        sock = _tcp_socket(family)
        try:
            sock.bind(sockaddr)
        finally:
            sock.close()


def _bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for the supervisor's admin endpoint (bound here, before any
    event loop runs: asyncio would resolve the host on a thread, and the supervisor
    forks)."""
    sockets: list[socket.socket] = []
    try:
        for family, sockaddr in _addresses(host, port):
            if port == 0 and sockets:  # the kernel's choice, for every address
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            sock = _tcp_socket(family)
            sockets.append(sock)
            sock.bind(sockaddr)
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# -- the supervisor's admin endpoint ----------------------------------------------------


class SupervisorAdmin(AdminServer):
    """admin.address of a --workers supervisor: asks every worker on its private socket."""

    def __init__(self, supervisor: Supervisor, config, sockets: list[socket.socket]) -> None:
        super().__init__(supervisor, None, config)
        self.supervisor = supervisor
        self.sockets = sockets
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        for sock in self.sockets:
            self._servers.append(await asyncio.start_server(self._handle, sock=sock,
                                                            limit=MAX_HEAD_BYTES))
        log.info("admin endpoint (/metrics, /healthz, /readyz) on %s, for all workers",
                 self.config.address)

    def close(self) -> None:
        for server in self._servers:
            server.close()

    async def stop(self) -> None:
        self.close()
        await super().stop()

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        fd = _fileno(writer)
        self.supervisor.transient_fds.add(fd)
        try:
            await super()._handle(reader, writer)
        finally:
            self.supervisor.transient_fds.discard(fd)

    # What a worker answers, or None when it does not answer.
    async def _ask(self, slot: _Slot, path: str) -> tuple[int, bytes] | None:
        if slot.pid is None or not slot.started or slot.admin_path is None:
            return None
        fd = -1
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(slot.admin_path), ASK_TIMEOUT)
            fd = _fileno(writer)
            self.supervisor.transient_fds.add(fd)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n"
                         .encode("latin-1"))
            data = await asyncio.wait_for(_read_all(reader), ASK_TIMEOUT)
        except (OSError, TimeoutError, ValueError):
            return None
        finally:
            self.supervisor.transient_fds.discard(fd)
            if writer is not None:
                writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return None
        return int(parts[1]), body

    async def _ask_all(self, path: str) -> list[tuple[int, bytes] | None]:
        return list(await asyncio.gather(*(self._ask(slot, path)
                                           for slot in self.supervisor.slots)))

    async def not_healthy(self) -> list[str]:
        problems = []
        for slot, answer in zip(self.supervisor.slots, await self._ask_all("/healthz"),
                                strict=True):
            if answer is None or answer[0] != 200:
                problems.append(f"worker {slot.index}: {_state(slot)}")
        return problems

    async def not_ready(self) -> list[str]:
        problems = []
        for slot, answer in zip(self.supervisor.slots, await self._ask_all("/readyz"),
                                strict=True):
            if answer is None:
                problems.append(f"worker {slot.index}: {_state(slot)}")
            elif answer[0] != 200:
                lines = answer[1].decode("utf-8", "replace").splitlines() or ["not ready"]
                problems.extend(f"worker {slot.index}: {line}" for line in lines if line)
        return problems

    async def render_metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        answers = await self._ask_all("/metrics")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_MergedCollector(self.supervisor, answers))
        return generate_latest(registry)


def _state(slot: _Slot) -> str:
    if slot.pid is None:
        return "not running (restarting)"
    if not slot.started:
        return "starting"
    return "not answering on its admin socket"


def _fileno(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    return sock.fileno() if sock is not None else -1


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_WORKER_RESPONSE:
            raise ValueError("worker response too large")
        chunks.append(chunk)


class _MergedCollector:
    """Every worker's families with a `worker` label, and the supervisor's own."""

    def __init__(self, supervisor: Supervisor, answers: list[tuple[int, bytes] | None]):
        self.supervisor = supervisor
        self.answers = answers

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.metrics_core import Metric
        from prometheus_client.parser import text_string_to_metric_families
        from prometheus_client.samples import Sample

        slots = self.supervisor.slots
        families: dict[str, Metric] = {}
        up = GaugeMetricFamily("cachecloak_worker_up", "1 when the worker answered this "
                               "scrape, per worker", labels=["worker"])
        for slot, answer in zip(slots, self.answers, strict=True):
            ok = answer is not None and answer[0] == 200
            if ok:
                try:
                    parsed = list(text_string_to_metric_families(
                        answer[1].decode("utf-8")))
                except ValueError:
                    ok = False
            up.add_metric([str(slot.index)], 1 if ok else 0)
            if not ok:
                continue
            label = str(slot.index)
            for family in parsed:
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation,
                                                            family.type)
                merged.samples.extend(
                    Sample(s.name, {**s.labels, "worker": label}, s.value, s.timestamp,
                           s.exemplar) for s in family.samples)
        yield from families.values()
        yield up
        workers = GaugeMetricFamily("cachecloak_workers", "Worker processes configured "
                                    "(--workers)")
        workers.add_metric([], len(slots))
        yield workers
        restarts = CounterMetricFamily("cachecloak_worker_restarts", "Times the supervisor "
                                       "restarted a worker that ended", labels=["worker"])
        for slot in slots:
            restarts.add_metric([str(slot.index)], slot.restarts)
        yield restarts
        reloads = CounterMetricFamily("cachecloak_supervisor_config_reloads", "Reloads of "
                                      "all workers by outcome (rejected: by the supervisor's "
                                      "check or by every worker; partial: by some workers)",
                                      labels=["outcome"])
        for outcome, count in self.supervisor.reload_counts.items():
            reloads.add_metric([outcome], count)
        yield reloads

