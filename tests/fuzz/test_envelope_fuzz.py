"""Property-based fuzzing of the value envelope and member cipher decoders.

Whatever Redis hands back (a value written by someone else, truncated, tampered with,
or random), opening it gives the sealed plaintext or DecryptError, never another
exception: a stray exception would turn a bad stored value into an internal error.
The corpus in tests/fuzz/corpus/envelope/ is replayed too; atheris starts from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.crypto.envelope import OVERHEAD
from tests.fuzz.properties import (
    SEALER,
    check_envelope,
    check_tampered_envelope,
    examples,
)

CORPUS = Path(__file__).parent / "corpus" / "envelope"

dbs = st.integers(0, 65535)
names = st.binary(max_size=40)
contexts = st.none() | st.binary(max_size=16)
# Blobs shaped like envelopes (version byte, a key id this sealer knows or not) as well
# as random ones.
known_ids = st.sampled_from(SEALER.key_ids)
shaped = st.tuples(st.sampled_from([b"\x01", b"\x00", b"\x02"]), known_ids | st.binary(
    min_size=4, max_size=4), st.binary(max_size=64)).map(b"".join)
blobs = st.binary(max_size=120) | shaped


@settings(max_examples=examples(400), deadline=None)
@given(blobs, dbs, names, contexts)
@example(b"", 0, b"", None)
@example(b"\x01" + bytes(OVERHEAD - 2), 0, b"k", None)  # one byte short of an envelope
@example(b"\x01" + bytes(OVERHEAD - 1), 65535, b"k", b"")
def test_any_blob_opens_or_raises_decrypt_error(blob, db, name, context):
    check_envelope(blob, db, name, context)


edits = st.one_of(
    st.integers(0, 200).map(lambda n: lambda b: b[:n]),  # truncated
    st.binary(min_size=1, max_size=8).map(lambda x: lambda b: b + x),  # extended
    st.tuples(st.integers(0, 200), st.integers(1, 255)).map(
        lambda t: lambda b: b if not b else
        b[:t[0] % len(b)] + bytes([b[t[0] % len(b)] ^ t[1]]) + b[t[0] % len(b) + 1:]),
    st.just(lambda b: b),  # unchanged: must open
)


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=64), dbs, names, edits)
def test_a_tampered_value_never_opens_and_never_raises_anything_else(value, db, name, edit):
    check_tampered_envelope(value, db, name, edit)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*")), ids=lambda p: p.name)
def test_corpus(path):
    blob = path.read_bytes()
    for db, name, context in ((0, b"", None), (1, b"cachecloak:app:0:k", b"field")):
        check_envelope(blob, db, name, context)
