"""Prometheus metrics for the admin endpoint (``admin:`` in the configuration).

Two kinds:

* Per-command counts and durations are recorded on the hot path, so they are kept
  cheap: one ``perf_counter()`` per command, a dict lookup keyed by the command name as
  the client sent it, and plain integer additions (the proxy runs on one event loop,
  so no locks: prometheus_client's own Counter/Histogram cost about 2 µs per command
  more, measured).  They are turned into Prometheus samples at scrape time.  Only
  names from the command table (or of a refused Redis command) become labels;
  anything else is ``unknown``, so clients cannot grow the label set.
* Everything the proxy already counts (connections, bytes, upstream connection
  states, failovers, failed attempts to reach Redis, decrypt failures, encryptions,
  AUTH failures) is read at scrape time by a custom collector: no extra work per
  command.  `gather` (and its per-listener and per-cache parts) reads these figures for
  both /metrics and the `cachecloak` section of INFO, so the two always agree.

Labels hold cache names, listener addresses, command names, decrypt failure reasons and
key identifiers (HKDF-derived, as INFO shows them): never a key, a value or key material.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from time import perf_counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from proxy.speedups import native

UNKNOWN = "unknown"
# Command names as sent (any casing) kept in the lookup dict; beyond this, names are
# resolved on every use (still to bounded labels).
_MAX_NAMES = 2048
# From 50 µs (a local answer) to 10 s (a slow upstream or a long multi-step operation).
DURATION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_STATES = ("down", "connecting", "handshake", "ready")
# Error replies that say cachecloak refuses a command (proxy.commands.refusals and the
# commands that refuse some of their forms): counted as "refused", not "error".
_REFUSALS = (b"-ERR cachecloak does not serve", b"-ERR unknown command",
             b"-ERR unknown subcommand")


class PythonIOStats:
    """Bytes read from and written to the clients of one listener (the twin of
    proxy._native.IOStats, which the C client path counts into)."""

    __slots__ = ("received", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0


IOStats = native.IOStats if native is not None else PythonIOStats


class Durations:
    """The duration histogram of one cache: counts per bucket (not cumulative; the
    last is +Inf) and the sum, turned into Prometheus's form at scrape time."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0


class CommandEntry:
    """What one (cache, command) counts: replies per outcome, durations per cache."""

    __slots__ = ("ok", "error", "refused", "durations")

    def __init__(self, durations: Durations) -> None:
        self.ok = self.error = self.refused = 0
        self.durations = durations

    def finish(self, t0: float, data: bytes | None) -> None:
        """The reply `data` is there: count its outcome and the time since `t0`."""
        elapsed = perf_counter() - t0
        durations = self.durations
        durations.counts[bisect_left(DURATION_BUCKETS, elapsed)] += 1
        durations.sum += elapsed
        if data and data[0] in (45, 33):  # "-" error, "!" RESP3 blob error
            if data.startswith(_REFUSALS):  # what cachecloak does not serve, by design
                self.refused += 1
            else:
                self.error += 1
        else:
            self.ok += 1


class RefusedEntry(CommandEntry):
    """A command name that is not in the command table: always refused."""

    __slots__ = ()

    def finish(self, t0: float, data: bytes | None) -> None:
        elapsed = perf_counter() - t0
        durations = self.durations
        durations.counts[bisect_left(DURATION_BUCKETS, elapsed)] += 1
        durations.sum += elapsed
        self.refused += 1


class CacheCommands:
    """The per-command metrics of one cache."""

    __slots__ = ("entries", "by_label", "durations")

    def __init__(self) -> None:
        self.durations = Durations()
        self.by_label: dict[str, CommandEntry] = {}
        self.entries: dict[bytes, CommandEntry] = {}

    def resolve(self, name: bytes) -> CommandEntry:
        """The entry for a command name as sent (the dict lookup missed)."""
        from proxy.commands.refusals import REFUSALS
        from proxy.commands.table import TABLE

        command = TABLE.get(name) or TABLE.get(name.lower())
        if command is not None:
            label, kind = command.name, CommandEntry
        else:
            text = name.lower().decode("utf-8", "replace")
            label, kind = (text if text in REFUSALS else UNKNOWN), RefusedEntry
        entry = self.by_label.get(label)
        if entry is None:
            entry = self.by_label[label] = kind(self.durations)
        if len(self.entries) < _MAX_NAMES:
            self.entries[name] = entry
        return entry


def upstream_connections(backend) -> list:
    """The upstream connections a backend holds right now (none for a local cache)."""
    chosen = getattr(backend, "chosen", None)  # AutoBackend, once it has decided
    if chosen is not None:
        return upstream_connections(chosen)
    nodes = getattr(backend, "nodes", None)  # ClusterBackend
    if isinstance(nodes, dict):
        return [c for node in list(nodes.values()) for c in node.conns if c is not None]
    conns = list(getattr(backend, "connections", None) or ())
    conns += list(getattr(backend, "_lent", None) or ())
    conns += list(getattr(backend, "_idle_dedicated", None) or ())
    return conns


@dataclass(slots=True)
class ListenerFigures:
    """What one listener counts."""

    address: str
    clients: int
    bytes_received: int
    bytes_sent: int
    tls_handshake_failures: int | None = None  # None: a listener without tls:


@dataclass(slots=True)
class CacheFigures:
    """What one cache counts."""

    name: str
    upstream: dict[str, int] | None  # connections per state; None for an in-process cache
    failovers: int | None  # primary changes followed; None without a primary locator
    decrypt_failures: dict[str, int]  # reason -> count
    encryptions: dict[str, int]  # key identifier (hex) -> values encrypted by this process
    # label -> (ok, error, refused); None without an admin: section (nothing recorded).
    commands: dict[str, tuple[int, int, int]] | None
    # kind (dns, refused, timeout, tls, closed, handshake, other) -> failed attempts to
    # reach Redis; None for an in-process cache.
    connect_failures: dict[str, int] | None = None

    def command_totals(self) -> tuple[int, int, int] | None:
        """(ok, error, refused) over every command, or None without command metrics."""
        if self.commands is None:
            return None
        ok = error = refused = 0
        for o, e, r in self.commands.values():
            ok, error, refused = ok + o, error + e, refused + r
        return ok, error, refused


@dataclass(slots=True)
class Figures:
    listeners: list[ListenerFigures]
    caches: list[CacheFigures]
    auth_failures: int


def upstream_failovers(backend) -> int | None:
    """How often the backend followed its primary to another server (standalone
    failover, Sentinel switch); None when it has no primary locator (a single address,
    a cluster, the in-process cache, or auto mode not decided yet)."""
    chosen = getattr(backend, "chosen", None)  # AutoBackend, once it has decided
    if chosen is not None:
        return upstream_failovers(chosen)
    locator = getattr(backend, "locator", None)
    return getattr(locator, "moves", None) if locator is not None else None


def listener_figures(server, listener) -> ListenerFigures:
    io = server.io_stats(listener)
    tls_failures = None
    if getattr(listener, "tls", None) is not None:
        tls_failures = server.tls_handshake_failures.get(listener.address, 0)
    return ListenerFigures(listener.address, server.listener_clients.get(id(listener), 0),
                           io.received, io.sent, tls_failures)


def cache_figures(server, name: str, cache) -> CacheFigures:
    """Read what the proxy already counts for `cache`: no work on the hot path."""
    upstream = connect_failures = None
    if not getattr(cache.backend, "local", False):
        from proxy.backends.redis.connection import (
            CONNECT_FAILURE_KINDS,
            CONNECT_FAILURES,
            cache_label,
        )

        upstream = dict.fromkeys(UPSTREAM_STATES, 0)
        for conn in upstream_connections(cache.backend):
            upstream[conn.state] = upstream.get(conn.state, 0) + 1
        counted = CONNECT_FAILURES.get(cache_label(name), {})
        connect_failures = {kind: counted.get(kind, 0) for kind in CONNECT_FAILURE_KINDS}
    sealer = cache.sealer
    encryptions = {sealer.key_id.hex(): sealer.encryptions} if sealer is not None else {}
    stats = server.command_metrics(name)
    commands = None
    if stats is not None:
        commands = {label: (entry.ok, entry.error, entry.refused)
                    for label, entry in sorted(stats.by_label.items())}
    return CacheFigures(name, upstream, upstream_failovers(cache.backend),
                        dict(cache.decrypt_failures), encryptions, commands, connect_failures)


def gather(server) -> Figures:
    """Every figure /metrics and INFO's cachecloak section show, read at call time."""
    return Figures(
        [listener_figures(server, listener) for listener in server.config.listeners],
        [cache_figures(server, name, cache) for name, cache in list(server.caches.items())],
        server.auth_failures)


class _Collector:
    """Turns the figures (gather) and the duration histograms into Prometheus families
    at scrape time."""

    def __init__(self, server, caches: dict[str, CacheCommands]) -> None:
        self.server = server
        self.caches = caches

    def collect(self):
        figures = gather(self.server)
        clients = GaugeMetricFamily("cachecloak_client_connections",
                                    "Client connections open, per listener", labels=["listener"])
        received = CounterMetricFamily("cachecloak_bytes_received",
                                       "Bytes read from clients, per listener",
                                       labels=["listener"])
        sent = CounterMetricFamily("cachecloak_bytes_sent", "Bytes written to clients, per "
                                   "listener", labels=["listener"])
        tls_failures = CounterMetricFamily("cachecloak_listener_tls_handshake_failures",
                                           "Refused TLS handshakes (bad or missing client "
                                           "certificate, old TLS version, plain text), per "
                                           "TLS listener", labels=["listener"])
        for listener in figures.listeners:
            clients.add_metric([listener.address], listener.clients)
            received.add_metric([listener.address], listener.bytes_received)
            sent.add_metric([listener.address], listener.bytes_sent)
            if listener.tls_handshake_failures is not None:
                tls_failures.add_metric([listener.address], listener.tls_handshake_failures)
        upstream = GaugeMetricFamily("cachecloak_upstream_connections",
                                     "Upstream Redis connections, per cache and state",
                                     labels=["cache", "state"])
        failovers = CounterMetricFamily("cachecloak_upstream_failovers",
                                        "Times the upstream primary moved to another server "
                                        "(standalone failover, Sentinel switch) and cachecloak "
                                        "followed", labels=["cache"])
        connect_failures = CounterMetricFamily(
            "cachecloak_upstream_connect_failures", "Failed attempts to reach Redis (connect "
            "or probe), per cache and kind: dns, refused, timeout, tls (handshake refused or "
            "cut), closed, handshake (AUTH or SELECT refused), other", labels=["cache", "reason"])
        failures = CounterMetricFamily("cachecloak_decrypt_failures",
                                       "Stored values or members that failed to decrypt",
                                       labels=["cache", "reason"])
        encryptions = CounterMetricFamily("cachecloak_encryptions",
                                          "Values encrypted by this process, per cache and key "
                                          "identifier (rotate keys long before 2^32)",
                                          labels=["cache", "key_id"])
        commands = CounterMetricFamily("cachecloak_commands", "Commands handled, per cache, "
                                       "command and outcome (ok, error, refused)",
                                       labels=["cache", "command", "outcome"])
        for cache in figures.caches:
            name = cache.name
            for state, count in (cache.upstream or {}).items():
                upstream.add_metric([name, state], count)
            if cache.failovers is not None:
                failovers.add_metric([name], cache.failovers)
            for kind, count in (cache.connect_failures or {}).items():
                connect_failures.add_metric([name, kind], count)
            for reason, count in cache.decrypt_failures.items():
                failures.add_metric([name, reason], count)
            for key_id, count in cache.encryptions.items():
                encryptions.add_metric([name, key_id], count)
            for label, (ok, error, refused) in (cache.commands or {}).items():
                commands.add_metric([name, label, "ok"], ok)
                commands.add_metric([name, label, "error"], error)
                commands.add_metric([name, label, "refused"], refused)
        auth = CounterMetricFamily("cachecloak_auth_failures",
                                   "Wrong listener passwords (AUTH, HELLO ... AUTH)")
        auth.add_metric([], figures.auth_failures)
        reloads = CounterMetricFamily("cachecloak_config_reloads", "Configuration reloads "
                                      "(SIGHUP, cachecloak reload), per outcome (ok, "
                                      "rejected)", labels=["outcome"])
        counts = getattr(getattr(self.server, "reloader", None), "counts", {})
        for outcome in ("ok", "rejected"):
            reloads.add_metric([outcome], counts.get(outcome, 0))
        duration = HistogramMetricFamily("cachecloak_command_duration_seconds",
                                         "Time from dispatch until the reply is ready, "
                                         "per cache", labels=["cache"])
        for name, stats in self.caches.items():
            counts = list(stats.durations.counts)
            cumulative, buckets = 0, []
            for bound, count in zip((*DURATION_BUCKETS, math.inf), counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            duration.add_metric([name], buckets, stats.durations.sum)
        yield from (clients, received, sent, tls_failures, upstream, failovers,
                    connect_failures, failures,
                    encryptions, auth, reloads, commands, duration)


class Metrics:
    """The registry the admin endpoint serves, and the per-cache command metrics."""

    def __init__(self, server) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.caches: dict[str, CacheCommands] = {name: CacheCommands() for name in server.caches}
        self.registry.register(_Collector(server, self.caches))

    def render(self) -> bytes:
        return generate_latest(self.registry)
