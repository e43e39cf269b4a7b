"""proxy._native (C) against its pure-Python twins: the same bytes for the same inputs.

The C module replaces three per-command computations when it is built (see
proxy/speedups.py): the stored name's HMAC, the AES-GCM envelope and the upstream
request's RESP array.  The Python versions stay the reference; a stored name or an
envelope written by one must be exactly what the other writes or opens, or a proxy
rebuilt without the C part (or an older one, or `cachecloak rekey`) would lose the data.

`./scripts/test` sets CACHECLOAK_REQUIRE_NATIVE=1, so a CI machine where the module
failed to build fails here instead of quietly testing only the Python path.
"""

from __future__ import annotations

import hmac
import os
import subprocess
import sys
from hashlib import sha256

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import speedups
from proxy.crypto import DecryptError, ValueSealer
from proxy.crypto.envelope import OVERHEAD, PythonGcm
from proxy.crypto.hashing import _FORMAT, KeyHasher
from proxy.crypto.keys import derive_aes_key, derive_hmac_key, derive_key_id
from proxy.resp import writer
from tests.crypto.nonces import nonces, nonces_in_forked_child
from tests.fuzz.properties import check_twin_parsers, run_parser, twin_parsers
from tests.servers import REPO_ROOT

try:
    from proxy import _native
except ImportError:  # not built: only the requirement test below applies
    _native = None

needs_native = pytest.mark.skipif(_native is None, reason="proxy._native is not built")
# KeyHasher takes the C hasher only when the proxy uses the C part (speedups.native), which
# CACHECLOAK_NATIVE=0 turns off even where the module is built.
needs_native_in_use = pytest.mark.skipif(
    speedups.native is None, reason="the proxy runs the Python twins (CACHECLOAK_NATIVE=0)")

HASHING_KEY = bytes(range(100, 132))
ENCRYPTION_KEY = bytes(range(32))
DATABASES = 16

keys = st.one_of(
    st.binary(max_size=80),
    # hash tags in every position, empty ones and unbalanced braces
    st.lists(st.sampled_from([b"{", b"}", b"a", b"{}", b"user", b"\x00", b"\xff"]),
             max_size=8).map(b"".join),
)


def test_native_module_is_built_where_required():
    if os.environ.get("CACHECLOAK_REQUIRE_NATIVE") != "1":
        pytest.skip("CACHECLOAK_REQUIRE_NATIVE is not set (./scripts/test sets it)")
    assert _native is not None, speedups.description
    assert speedups.native is _native, speedups.description


def test_native_can_be_turned_off_by_environment():
    code = "from proxy import speedups; print(speedups.native is None, speedups.summary())"
    env = {**os.environ, "CACHECLOAK_NATIVE": "0", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, timeout=60).stdout
    assert out.startswith("True per-command crypto and packing: pure Python")
    assert "CACHECLOAK_NATIVE=0" in out


def _python_hasher() -> KeyHasher:
    hasher = KeyHasher("orders", HASHING_KEY, b"cc:", True, DATABASES)
    # The reference method, whatever the instance attribute was set to.
    hasher.python_stored_key = KeyHasher.stored_key.__get__(hasher)
    return hasher


@needs_native_in_use
@settings(max_examples=300, deadline=None)
@given(keys, st.integers(0, DATABASES - 1))
def test_stored_names_are_the_same_in_c_and_python(key, db):
    hasher = _python_hasher()
    assert hasher.stored_key(db, key) == hasher.python_stored_key(db, key)


@needs_native
def test_stored_name_is_the_documented_hmac():
    """Independent of both implementations: HMAC-SHA256 over domain || key, as the
    module docstring of proxy.crypto.hashing describes it."""
    hasher = _python_hasher()
    domain = _FORMAT + b"\x00key\x00orders\x003\x00"
    mac = hmac.new(derive_hmac_key(HASHING_KEY), domain + b"k1", sha256).digest()[:24]
    import base64

    expected = b"cc:3:" + base64.urlsafe_b64encode(mac)
    assert hasher.stored_key(3, b"k1") == expected


@needs_native_in_use
def test_native_hasher_refuses_bad_arguments_without_crashing():
    hasher = _python_hasher()
    with pytest.raises(IndexError):
        hasher.stored_key(DATABASES, b"k")
    with pytest.raises(IndexError):
        hasher.stored_key(-1, b"k")
    with pytest.raises(TypeError):
        hasher.stored_key(0, "text")
    with pytest.raises(TypeError):
        hasher.stored_key(0)
    with pytest.raises(ValueError):
        _native.Hasher(b"k" * 65, [b"d"], [b"t"], [b"n"])
    with pytest.raises(ValueError):
        _native.Hasher(b"k", [b"d"], [b"t", b"u"], [b"n"])


def _twins(key: bytes = ENCRYPTION_KEY):
    header = b"\x01" + derive_key_id(key)
    return _native.Gcm(derive_aes_key(key), header), PythonGcm(derive_aes_key(key), header)


values = st.binary(max_size=300)
contexts = st.one_of(st.none(), st.binary(max_size=40))


@needs_native
@settings(max_examples=200, deadline=None)
@given(values, st.binary(max_size=60), contexts, st.integers(0, 65535))
def test_envelopes_open_across_c_and_python(value, stored, context, db):
    c, py = _twins()
    from_c = c.seal(db, stored, value, context)
    from_py = py.seal(db, stored, value, context)
    assert len(from_c) == len(from_py) == len(value) + OVERHEAD
    assert from_c[:5] == from_py[:5]
    assert py.open(db, stored, from_c, context) == value
    assert c.open(db, stored, from_py, context) == value
    assert c.open(db, stored, from_c, context) == value
    if context is None:  # a GET's reply, from the envelope in one call
        bulk = b"$%d\r\n%b\r\n" % (len(value), value)
        assert c.open_bulk(db, stored, from_py) == py.open_bulk(db, stored, from_c) == bulk
        assert c.open_bulk(db ^ 1, stored, from_py) is None
        assert py.open_bulk(db ^ 1, stored, from_c) is None


@needs_native
@settings(max_examples=100, deadline=None)
@given(values, st.data())
def test_c_open_refuses_what_python_refuses(value, data):
    """Any changed byte, another location or another context: None from both."""
    c, py = _twins()
    blob = bytearray(py.seal(7, b"cc:7:name", value, None))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    assert c.open(7, b"cc:7:name", bytes(blob)) is None
    assert py.open(7, b"cc:7:name", bytes(blob)) is None
    good = py.seal(7, b"cc:7:name", value)
    for db, stored, context in [(8, b"cc:7:name", None), (7, b"cc:7:other", None),
                                (7, b"cc:7:name", b""), (7, b"cc:7:name", b"f")]:
        assert c.open(db, stored, good, context) is None
        assert py.open(db, stored, good, context) is None
    assert c.open(7, b"cc:7:name", good[:OVERHEAD - 1]) is None
    assert c.open_bulk(7, b"cc:7:name", good[:OVERHEAD - 1]) is None
    assert c.open_bulk(7, b"cc:7:name", bytes(blob)) is None


@needs_native
def test_c_open_refuses_another_keys_envelope():
    c, _ = _twins()
    _, other = _twins(bytes(range(1, 33)))
    assert c.open(0, b"k", other.seal(0, b"k", b"value")) is None


@needs_native
def test_c_nonces_are_fresh_and_not_shared_with_a_forked_child():
    c, _ = _twins()
    parent_before = set(nonces(lambda: c.seal(0, b"k", b""), 600))
    assert len(parent_before) == 600
    child_nonces = nonces_in_forked_child(lambda: c.seal(0, b"k", b""), 300)
    parent_after = set(nonces(lambda: c.seal(0, b"k", b""), 300))
    assert len(child_nonces) == 300
    assert not child_nonces & parent_after
    assert not child_nonces & parent_before


@needs_native_in_use
def test_value_sealer_reasons_are_the_same_with_c_keys():
    sealer = ValueSealer(ENCRYPTION_KEY, [bytes(range(1, 33))])
    old = ValueSealer(bytes(range(1, 33)))
    assert type(sealer._current) is _native.Gcm
    blob = sealer.seal(0, b"k", b"v")
    assert sealer.open(0, b"k", blob) == b"v"
    assert sealer.open(0, b"k", old.seal(0, b"k", b"old")) == b"old"
    assert sealer.encryptions == 1
    cases = [(blob[:-1] + bytes([blob[-1] ^ 1]), "authentication-failed"),
             (b"\x02" + blob[1:], "not-an-envelope"),
             (b"short", "not-an-envelope"),
             (blob[:1] + b"\x00\x00\x00\x00" + blob[5:], "unknown-key-id"),
             (old.seal(1, b"k", b"x"), "authentication-failed")]
    for bad, reason in cases:
        with pytest.raises(DecryptError) as err:
            sealer.open(0, b"k", bad)
        assert err.value.reason == reason


@needs_native
def test_native_gcm_refuses_bad_arguments_without_crashing():
    c, _ = _twins()
    with pytest.raises(ValueError):
        _native.Gcm(b"short", b"\x01abcd")
    with pytest.raises(ValueError):
        c.seal(65536, b"k", b"v")
    with pytest.raises(TypeError):
        c.seal(0, "k", b"v")
    with pytest.raises(TypeError):
        c.open(0, b"k", b"v", "context")
    with pytest.raises(TypeError):
        c.seal(0, b"k")


request_args = st.lists(st.one_of(st.binary(max_size=50), st.text(max_size=10),
                                  st.integers(-2**70, 2**70)), min_size=1, max_size=12)


@needs_native
@settings(max_examples=300, deadline=None)
@given(request_args)
def test_packed_requests_are_the_same_as_hiredis_and_python(args):
    expected = hiredis.pack_command(tuple(args))
    assert _native.pack_command(args) == expected
    assert _native.pack_command(tuple(args)) == expected
    assert writer.python_command(list(args)) == expected


@needs_native
@pytest.mark.parametrize("length", [0, 9, 10, 99, 100, 999, 1000, 9999, 10000, 99999, 100000,
                                    1000000])
@pytest.mark.parametrize("count", [1, 9, 10, 100, 1000])
def test_packed_sizes_at_every_digit_boundary(length, count):
    """pack_bytes sizes its result exactly before writing it: lengths and argument counts
    where the number of digits changes."""
    args = [b"x" * length] + [b"a"] * (count - 1)
    expected = hiredis.pack_command(tuple(args))
    assert _native.pack_command(args) == expected
    assert writer.python_command(list(args)) == expected


@needs_native
def test_pack_refuses_what_hiredis_refuses():
    for bad in ([None], [b"a", object()], [True]):
        with pytest.raises(TypeError):
            _native.pack_command(bad)
        with pytest.raises(TypeError):
            hiredis.pack_command(tuple(bad))
    with pytest.raises(TypeError):
        _native.pack_command(b"GET")


# -- end to end: a proxy on the C part and one on the Python twins share one Redis --------

@needs_native
def test_proxies_with_and_without_the_c_part_read_each_others_data(redis_server):
    from tests.servers import start_proxy

    config = f"""
caches:
  - name: shared
    type: redis
    redis:
      addresses: ["{redis_server.address}"]
      disableTLS: true
    encryption:
      keys:
        current: {bytes(range(7, 39)).hex()}
        old: [{bytes(range(9, 41)).hex()}]
    hashing:
      keys:
        current: {bytes(range(40, 72)).hex()}
"""
    with_c = start_proxy(config, env={"CACHECLOAK_NATIVE": "1"})  # whatever the tests run on
    python_only = start_proxy(config, env={"CACHECLOAK_NATIVE": "0"})
    try:
        clients = {"c": with_c.client(), "python": python_only.client()}
        for writer_name, client in clients.items():
            other = clients["python" if writer_name == "c" else "c"]
            tag = f"native-e2e-{writer_name}"
            client.set(f"{tag}:s", f"{tag}-value", ex=300)
            client.set(f"{{{tag}}}:tagged", f"{tag}-tagged")
            client.hset(f"{tag}:h", mapping={"field": f"{tag}-hv"})
            client.rpush(f"{tag}:l", f"{tag}-e1", f"{tag}-e2")
            client.sadd(f"{tag}:set", f"{tag}-m")
            client.incr(f"{tag}:n")
            assert other.get(f"{tag}:s") == f"{tag}-value".encode()
            assert other.get(f"{{{tag}}}:tagged") == f"{tag}-tagged".encode()
            assert other.hgetall(f"{tag}:h") == {b"field": f"{tag}-hv".encode()}
            assert other.lrange(f"{tag}:l", 0, -1) == [f"{tag}-e1".encode(),
                                                       f"{tag}-e2".encode()]
            assert other.smembers(f"{tag}:set") == {f"{tag}-m".encode()}
            assert other.incr(f"{tag}:n") == 2
            assert other.mget([f"{tag}:s", "missing"]) == [f"{tag}-value".encode(), None]
        # Redis holds neither the names nor the values, whichever proxy wrote them.
        direct = redis_server.client()
        dump = b""
        for name in direct.scan_iter(count=1000):
            dump += name
            kind = direct.type(name)
            if kind == b"string":
                dump += direct.get(name)
            elif kind == b"hash":
                dump += b"".join(k + v for k, v in direct.hgetall(name).items())
            elif kind == b"list":
                dump += b"".join(direct.lrange(name, 0, -1))
            elif kind == b"set":
                dump += b"".join(direct.smembers(name))
        assert dump and b"native-e2e" not in dump
    finally:
        with_c.stop()
        python_only.stop()
    assert "per-command crypto and packing: C (proxy._native" in with_c.log()
    assert "per-command crypto and packing: pure Python" in python_only.log()


# -- the request parser: C and Python twins, the same bytes split the same ways -----------

PARSER_TOKENS = [b"*", b"$", b"\r\n", b"\n", b"\r", b"\x00", b"0", b"1", b"2", b"3", b"-1",
                 b"01", b" ", b'"', b"'", b"\\x41", b"+", b":", b"PING", b"a",
                 b"*1\r\n$4\r\nPING\r\n", b"*2\r\n", b"$3\r\nabc\r\n", b"$0\r\n\r\n",
                 b"*0\r\n", b"*-1\r\n", b"PING\r\n", b"*1001\r\n", b"$65537\r\n", b"\xff"]
parser_input = st.one_of(st.binary(max_size=120), st.lists(
    st.one_of(st.sampled_from(PARSER_TOKENS), st.binary(max_size=3)), max_size=30).map(b"".join))


@needs_native
@settings(max_examples=600, deadline=None)
@given(parser_input, st.lists(st.integers(0, 200), max_size=6))
def test_c_and_python_parsers_agree_on_any_bytes_split_anywhere(data, cuts):
    check_twin_parsers(data, cuts)


@needs_native
def test_c_and_python_parsers_agree_on_limits_and_large_arguments():
    value = bytes(range(256)) * 200  # 51,200 bytes, arriving in small reads
    stream = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%b\r\n" % (len(value), value)
    for step in (1, 7, 1000, 4096, len(stream)):
        split = [stream[i:i + step] for i in range(0, len(stream), step)]
        c, py = twin_parsers()
        got = run_parser(c, split)
        assert got == run_parser(py, split)
        assert [cmd for batch in got[0] for cmd in batch] == [[b"SET", b"k", value]]
        assert got[1][-1] == 0  # nothing held back once the command is whole
    for data in (b"*1\r\n$65537\r\n", b"*1001\r\n", b"x" * 70000, b"*" + b"1" * 70000,
                 b"*2\r\n$1\r\na\r\n$" + b"9" * 70000):
        c, py = twin_parsers()
        assert run_parser(c, [data]) == run_parser(py, [data])
        assert c.error is not None
    c, py = twin_parsers(max_request_bytes=100)  # an unfinished command past the limit
    data = b"*1\r\n$5000\r\n" + b"x" * 200
    expected = ([[]], [0], "Protocol error: invalid bulk length")
    assert run_parser(c, [data]) == run_parser(py, [data]) == expected


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
def test_the_read_buffer_is_one_per_thread_and_never_held_by_a_parser(native):
    """Clients' reads land in one buffer per thread (get_buffer): the same for every
    connection of a thread, another in another thread (whose event loop may read at the
    same time), and a parser keeps only its own copy of an unfinished command."""
    import threading

    from proxy.resp.reader import READ_BUFFER_BYTES
    def make():
        kinds = [p for p in twin_parsers() if (type(p).__module__ == "proxy._native") == native]
        if not kinds:
            pytest.skip("proxy._native is not built")
        return kinds[0]

    parser, other = make(), make()
    view = parser.get_buffer(-1)
    assert len(view) == READ_BUFFER_BYTES and not view.readonly
    assert other.get_buffer(4096).obj is view.obj
    seen = []
    thread = threading.Thread(target=lambda: seen.append(parser.get_buffer(-1).obj))
    thread.start()
    thread.join()
    assert seen and seen[0] is not view.obj
    # Half a command read, the buffer reused by another connection, then the rest.
    first, rest = b"*2\r\n$3\r\nGET\r\n$5\r\nab", b"cde\r\n"
    view[:len(first)] = first
    assert parser.feed(len(first)) == []
    view[:len(first)] = b"*1\r\n$4\r\nPING\r\n" + b"x" * (len(first) - 14)
    assert other.feed(14) == [[b"PING"]]
    view[:len(rest)] = rest
    assert parser.feed(len(rest)) == [[b"GET", b"abcde"]]
    with pytest.raises(ValueError):
        parser.feed(READ_BUFFER_BYTES + 1)
    with pytest.raises(ValueError):
        parser.feed(-1)
