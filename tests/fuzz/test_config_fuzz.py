"""Property-based fuzzing of the configuration loader.

Any file content (random text, random YAML trees built from the schema's own field
names, a valid configuration with one part replaced by anything) gives a Config or a
ConfigError of `<where>: <what>` lines, never a traceback, never a hang.  The corpus in
tests/fuzz/corpus/config/ is replayed too; atheris starts from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.properties import check_config_text, examples

CORPUS = Path(__file__).parent / "corpus" / "config"
VALID = (CORPUS / "valid-redis-and-local.yaml").read_text()

FIELDS = [
    "listeners", "caches", "tls", "admin", "address", "cache", "socketMode", "maxClients",
    "password", "name", "type", "redis", "local", "addresses", "disableTLS", "mode",
    "sentinel", "masterName", "username", "db", "connectTimeout", "commandTimeout",
    "poolSize", "keys", "prefix", "disablePrefix", "databases", "encryption", "current",
    "old", "disabled", "onDecryptError", "hashing", "maxEntries", "caFile", "certFile",
    "keyFile", "minVersion", "maxVersion", "serverName", "clientAuth",
]
SCALARS = [
    "redis", "local", "auto", "cluster", "sentinel", "standalone", "miss", "error", "1s",
    "-1s", "500ms", "0", "1.3", "1.1", "127.0.0.1:6379", "[::1]:0", "unix:/tmp/x.sock",
    "unix:relative", "localhost", "<vault.key>", "<a.b.c>", "{{ env.X }}", "a1" * 32,
    "zz" * 32, "0660", "local_default", "", " ", "\n", "\x00", "caches[0]",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.sampled_from(SCALARS),
    st.text(max_size=12))
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.integers(-2, 2))
trees = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(keys, children, max_size=5)),
    max_leaves=30)


def dump(tree) -> str:
    return yaml.safe_dump(tree, allow_unicode=True)


@settings(max_examples=examples(100), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["listeners", "caches", "tls", "admin"]), trees))
def test_any_tree_of_the_schema_fields_loads_or_gives_config_errors(tree):
    check_config_text(dump(tree))


def _paths(node, at=()):
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


VALID_TREE = yaml.safe_load(VALID)
VALID_PATHS = [p for p in _paths(VALID_TREE) if p]


def _replace(tree, path, value):
    if len(path) == 1:
        tree[path[0]] = value
    else:
        _replace(tree[path[0]], path[1:], value)


@settings(max_examples=examples(120), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_PATHS), trees)
@example(("caches", 0, "redis", "commandTimeout"), "1e400s")
@example(("caches", 0, "redis", "poolSize"), 10**30)
@example(("caches", 0, "name"), "a\nb")
@example(("listeners", 0), {"a\nb": 1})
@example(("admin",), {" \x85": None})  # was two lines (str.splitlines splits at NEL)
@example(("tls",), {"\r": None})  # was two lines
def test_a_valid_config_with_one_part_replaced_loads_or_gives_config_errors(path, value):
    import copy

    tree = copy.deepcopy(VALID_TREE)
    _replace(tree, path, value)
    check_config_text(dump(tree))


@settings(max_examples=examples(120), deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.tuples(st.integers(0, len(VALID)), st.text(max_size=20)).map(
                     lambda t: VALID[:t[0]] + t[1] + VALID[t[0]:])))
@example("caches: " + "[" * 2000 + "]" * 2000)  # was a RecursionError traceback
@example("a: &a [*a]\ncaches: *a\n")  # was a RecursionError traceback
@example("\ufeffcaches: []")
@example(b"\xff\xfe")
def test_any_text_loads_or_gives_config_errors(text):
    check_config_text(text)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*")), ids=lambda p: p.name)
def test_corpus(path):
    config = check_config_text(path.read_bytes())
    assert (config is not None) == path.name.startswith("valid-"), path.name
