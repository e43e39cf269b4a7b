"""Memory per idle client connection: RSS of a target before and with N connections open.

Each connection sends one PING and reads the PONG, so the target has really accepted it
and built its per-connection state (a connection still in the listen backlog costs the
target nothing).  The connections are then held idle, the target's RSS (all its
processes) is read, and they are closed with a reset (SO_LINGER 0) so that 10,000 sockets
do not sit in TIME_WAIT on a shared machine.

Needs RLIMIT_NOFILE above N for this process and the target (the harness raises the soft
limit to the hard one before starting anything; children inherit it).  Loopback only,
bounded by N and socket timeouts.
"""

from __future__ import annotations

import resource
import selectors
import socket
import struct
import time

from bench import procstat

SETTLE = 0.5  # seconds for the target to finish its per-connection work before reading RSS
BATCH = 500   # connections opened before their PINGs are answered


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _ping_all(socks: list[socket.socket], timeout: float) -> None:
    for sock in socks:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
    waiting = {sock.fileno(): sock for sock in socks}
    received = dict.fromkeys(waiting, b"")
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(waiting)} idle connections got no PONG in {timeout}s")
            for key, _ in sel.select(remaining):
                sock = key.fileobj
                data = sock.recv(64)
                if not data:
                    raise ConnectionError("the target closed an idle connection "
                                          "(a client limit?)")
                fd = sock.fileno()
                received[fd] += data
                if received[fd].endswith(b"\r\n"):
                    if not received[fd].startswith(b"+PONG"):
                        raise RuntimeError("the target refused an idle connection: "
                                           + received[fd][:80].decode(errors="replace").strip())
                    sel.unregister(sock)
                    del waiting[fd]


def measure(port: int, pid: int, connections: int, timeout: float = 60.0) -> dict:
    """Open `connections` idle clients to 127.0.0.1:port; report RSS figures in KiB."""
    rss_before = procstat.rss_kib(pid)
    socks: list[socket.socket] = []
    linger = struct.pack("ii", 1, 0)
    try:
        deadline = time.monotonic() + timeout
        while len(socks) < connections:
            if time.monotonic() > deadline:
                raise TimeoutError(f"opened only {len(socks)} of {connections} connections "
                                   f"in {timeout}s")
            batch = []
            for _ in range(min(BATCH, connections - len(socks))):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                batch.append(sock)
                socks.append(sock)
            _ping_all(batch, timeout=max(1.0, deadline - time.monotonic()))
        time.sleep(SETTLE)
        rss_with = procstat.rss_kib(pid)
    finally:
        for sock in socks:
            sock.close()
    per_connection = (rss_with - rss_before) / connections if connections else None
    return {"connections": connections, "rss_before_kib": rss_before,
            "rss_with_kib": rss_with, "per_connection_kib": per_connection}
