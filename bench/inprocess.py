"""The proxy's own per-command cost, without sockets, Redis or a load generator.

One client connection and one upstream connection are built as the server builds them,
on transports that only collect what is written.  Each round feeds the client a read of
BATCH pipelined commands (GET or SET, 100 B values), writes what was queued for Redis,
feeds the upstream connection Redis's replies (envelopes made with the same keys), and
collects what the client gets.  It reports the best of several rounds in microseconds
per command: request side (parse, dispatch, hash, seal, pack), reply side (decode, open,
order, write), and their sum.  System calls and the event loop are not in it; the
closed-loop benchmark (python -m bench) measures those.

    python -m bench.inprocess                 # encrypted and plain, GET and SET, batch 1 and 16
    CACHECLOAK_NATIVE=0 python -m bench.inprocess   # the pure-Python twins

Timings on a shared machine vary: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from proxy import speedups
from proxy.backends.redis.connection import READY, UpstreamConnection, UpstreamSettings
from proxy.cache import Cache
from proxy.crypto import KeyHasher, ValueSealer
from proxy.crypto.members import MemberCipher
from proxy.server.client import ClientConnection


class Transport:
    """A transport that only collects what is written (tests/test_client_core.py too)."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.writelines_calls = 0

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def writelines(self, parts) -> None:
        self.writelines_calls += 1
        self.out.extend(parts)

    def get_extra_info(self, name):
        return None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class Listener:
    port = 0
    password = None
    unix_path = None


class IOCounts:
    received = 0
    sent = 0


class Server:
    """What a ClientConnection asks of its server: no metrics, every client admitted."""

    caches: dict = {}

    def io_stats(self, listener):
        return IOCounts()

    def command_metrics(self, name):
        return None

    def admit(self, listener):
        return True

    def client_connected(self, client):
        pass


def one_connection_cache(upstream, encrypted: bool) -> Cache:
    """A cache whose every client uses `upstream`, with fresh random keys (or none), its
    stored names prefixed cc:."""
    class Backend:
        description = "one connection"

        def route(self):
            return upstream

    hashing_key = os.urandom(32) if encrypted else None
    hasher = KeyHasher("bench", hashing_key, b"cc:", True, 16)
    sealer = ValueSealer(os.urandom(32)) if encrypted else None
    return Cache("bench", hasher=hasher, sealer=sealer, on_decrypt_error="miss",
                 databases=16, backend=Backend(),
                 members=MemberCipher(hashing_key) if encrypted else None)


def measure(encrypted: bool, command: str, batch: int, rounds: int, repeat: int
            ) -> tuple[float, float]:
    """(request side, reply side) in microseconds per command, best of `repeat`."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings = UpstreamSettings("127.0.0.1", 1, username=None, password=None, db=0,
                                connect_timeout=1, command_timeout=5, label="bench")
    upstream = UpstreamConnection(settings, loop)
    upstream.state = READY
    upstream.transport = Transport()

    cache = one_connection_cache(upstream, encrypted)
    hasher = cache.hasher
    client = ClientConnection(Server(), Listener(), cache)
    client.connection_made(Transport())
    value = os.urandom(100)
    keys = [b"key:%012d" % i for i in range(batch)]
    if command == "get":
        request = b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(k), k) for k in keys)
        blobs = [cache.seal(0, hasher.stored_key(0, k), value) for k in keys]
        replies = b"".join(b"$%d\r\n%b\r\n" % (len(b), b) for b in blobs)
    else:
        request = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                           % (len(k), k, len(value), value) for k in keys)
        replies = b"+OK\r\n" * batch

    # One round first, checked: the client must get exactly what Redis's replies mean,
    # or the timings below would be of something else.
    expected = (b"$%d\r\n%b\r\n" % (len(value), value) if command == "get" else b"+OK\r\n")
    client.data_received(request)
    upstream._write_queued()
    loop._ready.clear()
    sent = b"".join(upstream.transport.out)
    upstream.transport.out.clear()
    upstream.data_received(replies)
    got = b"".join(client.transport.out)
    client.transport.out.clear()
    if got != expected * batch or sent.count(b"*") < batch:
        raise RuntimeError(f"in-process round trip gave unexpected bytes: {got[:80]!r}")

    # Both read into the thread's read buffer (BufferedProtocol); copying the bytes there,
    # the kernel's part of a read, is left out of the timings.
    view = client.get_buffer(-1)
    if max(len(request), len(replies)) > len(view):
        raise ValueError("a batch larger than the read buffer: use fewer commands")
    clock = time.perf_counter
    best_request = best_reply = float("inf")
    for _ in range(repeat):
        request_time = reply_time = 0.0
        for _ in range(rounds):
            view[:len(request)] = request
            t0 = clock()
            client.buffer_updated(len(request))
            upstream._write_queued()
            t1 = clock()
            loop._ready.clear()  # the scheduled write, done above by hand
            upstream.transport.out.clear()
            view[:len(replies)] = replies
            t2 = clock()
            upstream.buffer_updated(len(replies))
            t3 = clock()
            client.transport.out.clear()
            request_time += t1 - t0
            reply_time += t3 - t2
        if request_time + reply_time < best_request + best_reply:
            best_request, best_reply = request_time, reply_time
    loop.close()
    per = 1e6 / (rounds * batch)
    return best_request * per, best_reply * per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,16", help="commands per read (default 1,16)")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(speedups.summary())
    print(f"{'mode':10} {'command':8} {'batch':>5} {'request us':>11} {'reply us':>9} "
          f"{'total us':>9}")
    for encrypted in (True, False):
        for command in ("get", "set"):
            for batch in (int(b) for b in args.batches.split(",")):
                request, reply = measure(encrypted, command, batch,
                                         max(args.rounds // batch, 50) * 4, args.repeat)
                mode = "encrypted" if encrypted else "plain"
                print(f"{mode:10} {command.upper():8} {batch:>5} {request:>11.2f} "
                      f"{reply:>9.2f} {request + reply:>9.2f}")


if __name__ == "__main__":
    main()
