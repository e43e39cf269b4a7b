"""The keys the loads use, and filling them before a GET load so that GETs are hits.

redis-benchmark's `-r N` turns `key:__rand_int__` into `key:` plus a 12-digit number below N;
the open-loop generator uses the same names, so one fill serves both.  Filling goes through
the target itself, so that cachecloak stores the keys hashed and the values sealed with its
own keys, exactly as a client's SET would.

Loopback only; every loop here is bounded by the key count and a socket timeout.
"""

from __future__ import annotations

import socket

import hiredis

KEY_FORMAT = b"key:%012d"


def set_command(index: int, value: bytes) -> bytes:
    key = KEY_FORMAT % index
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value)


def get_command(index: int) -> bytes:
    key = KEY_FORMAT % index
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def fill(port: int, keys: int, size: int, batch: int = 500, timeout: float = 30.0) -> None:
    """SET key:000000000000 .. key:<keys-1> to `size`-byte values, pipelined in batches."""
    value = b"v" * size
    reader = hiredis.Reader()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for start in range(0, keys, batch):
            count = min(batch, keys - start)
            sock.sendall(b"".join(set_command(i, value) for i in range(start, start + count)))
            while count:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"port {port} closed the connection while filling")
                reader.feed(chunk)
                while count:
                    reply = reader.gets()
                    if reply is False:
                        break
                    if isinstance(reply, hiredis.ReplyError):
                        raise RuntimeError(f"port {port} refused a SET while filling: {reply}")
                    count -= 1


def flush(port: int, timeout: float = 30.0) -> None:
    """FLUSHALL on Redis itself (between value sizes, so memory does not pile up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        reader = hiredis.Reader()
        while (reply := reader.gets()) is False:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("Redis closed the connection on FLUSHALL")
            reader.feed(chunk)
        if isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"FLUSHALL failed: {reply}")
