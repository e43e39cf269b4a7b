"""Listener TLS in the configuration: ``tls: <profile>`` on a listener, ``clientAuth``.

The files only need to exist for the loader (their content is read when the proxy
starts, see tests/test_listener_tls.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load_config
from tests.config.conftest import config_errors


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("x")
    return files


def _profile(name: str, **fields: object) -> str:
    lines = [f"tls:\n  {name}:\n"]
    lines += [f"    {key}: {value}\n" for key, value in fields.items()]
    return "".join(lines) if fields else f"tls:\n  {name}: {{}}\n"


def _listener(profile: str = "edge", address: str = "127.0.0.1:6380") -> str:
    return f"listeners:\n  - address: {address}\n    tls: {profile}\n"


def test_a_listener_gets_its_profile_with_client_auth(write_config, pem) -> None:
    text = _profile("edge", caFile=pem["ca"], certFile=pem["cert"], keyFile=pem["key"],
                    clientAuth="require", minVersion="1.3") + _listener()
    listener = load_config(write_config(text), environ={}).listeners[0]
    assert listener.tls is not None
    assert (listener.tls.name, listener.tls.client_auth, listener.tls.min_version) == (
        "edge", "require", "1.3")
    assert (listener.tls.cert_file, listener.tls.key_file, listener.tls.ca_file) == (
        str(pem["cert"]), str(pem["key"]), str(pem["ca"]))


def test_client_auth_defaults_to_none_and_listeners_default_to_plain(write_config, pem) -> None:
    text = (_profile("edge", certFile=pem["cert"], keyFile=pem["key"])
            + _listener() + "  - address: 127.0.0.1:6381\n")
    plain_tls, plain = load_config(write_config(text), environ={}).listeners
    assert plain_tls.tls is not None and plain_tls.tls.client_auth == "none"
    assert plain.tls is None


def test_tls_on_a_unix_socket_listener(write_config, pem, tmp_path) -> None:
    text = (_profile("edge", certFile=pem["cert"], keyFile=pem["key"])
            + _listener(address=f"unix:{tmp_path}/cc.sock"))
    listener = load_config(write_config(text), environ={}).listeners[0]
    assert listener.unix_path == f"{tmp_path}/cc.sock" and listener.tls is not None


def test_listen_override_keeps_the_listener_tls(write_config, pem) -> None:
    text = _profile("edge", certFile=pem["cert"], keyFile=pem["key"]) + _listener()
    listener = load_config(write_config(text), listen="127.0.0.1:7000", environ={}).listeners[0]
    assert (listener.address, listener.tls.name if listener.tls else None) == (
        "127.0.0.1:7000", "edge")


def test_a_listener_profile_needs_a_certificate(write_config, pem) -> None:
    text = _profile("edge", caFile=pem["ca"]) + _listener()
    assert config_errors(write_config(text)) == [
        "tls.edge.certFile: required because listeners[0].tls uses this profile (a TLS "
        "listener serves a certificate); set certFile and keyFile to the listener's "
        "certificate and private key"]


def test_a_certificate_without_its_key(write_config, pem) -> None:
    text = _profile("edge", certFile=pem["cert"]) + _listener()
    assert config_errors(write_config(text)) == [
        "tls.edge.keyFile: required with certFile (a client certificate needs its private "
        "key); set both or neither"]


def test_an_unknown_profile(write_config, pem) -> None:
    text = _profile("edge", certFile=pem["cert"], keyFile=pem["key"]) + _listener("egde")
    assert config_errors(write_config(text)) == [
        'listeners[0].tls: profile "egde" is not defined under tls:; define it there '
        "(certFile, keyFile) or use one of: edge"]


def test_an_unknown_profile_without_any_tls_section(write_config) -> None:
    assert config_errors(write_config(_listener())) == [
        'listeners[0].tls: profile "edge" is not defined under tls:; define it there '
        "(certFile, keyFile) or use one of: none are defined"]


@pytest.mark.parametrize("mode", ["optional", "require"])
def test_client_auth_needs_a_ca_file(write_config, pem, mode) -> None:
    text = _profile("edge", certFile=pem["cert"], keyFile=pem["key"], clientAuth=mode)
    assert config_errors(write_config(text + _listener())) == [
        f"tls.edge.caFile: required with clientAuth: {mode} (client certificates are "
        "verified against it, never against the system trust store); set caFile to the CA "
        "that signs client certificates"]


def test_client_auth_values(write_config, pem) -> None:
    text = _profile("edge", certFile=pem["cert"], keyFile=pem["key"], clientAuth="yes")
    assert config_errors(write_config(text + _listener())) == [
        "tls.edge.clientAuth: must be one of: none, optional, require; use one of these values"]


def test_old_tls_versions_are_refused_for_listeners_too(write_config, pem) -> None:
    text = _profile("edge", certFile=pem["cert"], keyFile=pem["key"], minVersion="1.1")
    assert config_errors(write_config(text + _listener())) == [
        'tls.edge.minVersion: TLS versions below 1.2 are not allowed; use "1.2" or "1.3"']


def test_listener_tls_must_be_a_profile_name(write_config) -> None:
    text = "listeners:\n  - address: 127.0.0.1:6380\n    tls: {certFile: /x}\n"
    assert config_errors(write_config(text)) == [
        "listeners[0].tls: must be a string; write the value in quotes"]
