"""TLS profiles, redis.mode and the sentinel section."""

from __future__ import annotations

import pytest

from proxy.config import load_config
from tests.config.conftest import REDIS_CACHE, config_errors


def load(write_config, text):
    return load_config(write_config(text), environ={})


def test_tls_is_on_with_the_system_trust_store_unless_disabled(write_config):
    cfg = load(write_config, REDIS_CACHE.replace("      disableTLS: true\n", ""))
    redis = cfg.caches["main"].redis
    assert not redis.disable_tls
    assert redis.tls is not None and redis.tls.ca_file is None
    assert redis.tls.min_version == "1.2"
    assert load(write_config, REDIS_CACHE).caches["main"].redis.tls is None


def test_a_profile_is_resolved_by_name(write_config, tmp_path):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    for f in (ca, cert, key):
        f.write_text("x")
    text = (f"tls:\n  redis-tls:\n    caFile: {ca}\n    certFile: {cert}\n    keyFile: {key}\n"
            f"    minVersion: 1.3\n    serverName: redis.internal\n" +
            REDIS_CACHE.replace("      disableTLS: true\n", "      tls: redis-tls\n"))
    profile = load(write_config, text).caches["main"].redis.tls
    assert (profile.name, profile.ca_file, profile.cert_file, profile.key_file) == (
        "redis-tls", str(ca), str(cert), str(key))
    assert profile.min_version == "1.3" and profile.server_name == "redis.internal"


@pytest.mark.parametrize("version", ["1.1", "1.0", '"1.1"'])
def test_versions_below_1_2_refuse_to_start(write_config, version):
    text = f"tls:\n  old:\n    minVersion: {version}\n" + REDIS_CACHE
    assert config_errors(write_config(text)) == [
        'tls.old.minVersion: TLS versions below 1.2 are not allowed; use "1.2" or "1.3"']


def test_missing_files_and_half_client_certificates_are_errors(write_config, tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    text = (f"tls:\n  p:\n    caFile: {tmp_path}/nope.pem\n    certFile: {cert}\n"
            + REDIS_CACHE)
    assert config_errors(write_config(text)) == [
        f"tls.p.caFile: file {tmp_path}/nope.pem does not exist; check the path",
        "tls.p.keyFile: required with certFile (a client certificate needs its private key); "
        "set both or neither",
    ]


def test_tls_profile_with_disable_tls_conflicts(write_config, tmp_path):
    text = "tls:\n  p: {}\n" + REDIS_CACHE.replace("disableTLS: true",
                                                    "disableTLS: true\n      tls: p")
    assert config_errors(write_config(text)) == [
        "caches[0].redis.tls: conflicts with disableTLS: true; remove tls or disableTLS"]


def test_sentinel_master_name_implies_sentinel_mode(write_config):
    text = REDIS_CACHE.replace(
        "disableTLS: true",
        "disableTLS: true\n      sentinel: {masterName: mymaster, password: pw}")
    redis = load(write_config, text).caches["main"].redis
    assert (redis.mode, redis.sentinel_master_name, redis.sentinel_password) == (
        "sentinel", "mymaster", "pw")
    assert "pw" not in repr(redis)


def test_sentinel_mode_needs_a_master_name(write_config):
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: true\n      mode: sentinel")
    assert config_errors(write_config(text)) == [
        "caches[0].redis.sentinel.masterName: required with mode: sentinel; set it to the name "
        "the Sentinels monitor (sentinel monitor <name> ...)"]


def test_cluster_mode_has_only_database_0(write_config):
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: true\n      mode: cluster\n"
                               "      db: 2")
    assert config_errors(write_config(text)) == [
        "caches[0].redis.db: Redis Cluster has only database 0; remove db or set it to 0"]
