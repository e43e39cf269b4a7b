"""<namespace.key> references resolved by the secretfile:// and dir:// providers."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config
from proxy.config.secrets import (
    DirProvider,
    SecretError,
    SecretFileProvider,
    SecretNotFoundError,
    SecretProvider,
    make_secret_provider,
)
from tests.config.conftest import KEY_ENC, REDIS_CACHE, config_errors

PASSWORD = "pw-SECRET-0123"
WITH_REFS = REDIS_CACHE.replace(f'"{KEY_ENC}"', "<vault.enc>").replace(
    "disableTLS: true", "disableTLS: true\n      password: <vault.redis_password>"
)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(f"vault:\n  enc: {KEY_ENC}\n  redis_password: {PASSWORD}\n"
                    "  number: 0123\n  flag: yes\n  tls.ca: dotted\n")
    return path


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    root = tmp_path / "run-secrets"
    (root / "vault").mkdir(parents=True)
    (root / "vault" / "enc").write_text(KEY_ENC + "\n")
    (root / "vault.redis_password").write_text(PASSWORD + "\n")
    return root


# --- resolution through load_config ------------------------------------------------------

def test_secret_file_resolves_references(write_config, secret_file: Path) -> None:
    config = load_config(write_config(WITH_REFS), secret_provider=f"secretfile://{secret_file}",
                         environ={})
    cache = config.caches["main"]
    assert cache.redis.password == PASSWORD
    assert cache.encryption_current == bytes.fromhex(KEY_ENC)


def test_directory_resolves_nested_and_flat_files(write_config, secret_dir: Path) -> None:
    config = load_config(write_config(WITH_REFS), secret_provider=f"dir://{secret_dir}",
                         environ={})
    cache = config.caches["main"]
    assert cache.redis.password == PASSWORD
    assert cache.encryption_current == bytes.fromhex(KEY_ENC)


def test_provider_from_environment_variable(write_config, secret_dir: Path) -> None:
    config = load_config(write_config(WITH_REFS),
                         environ={"CACHECLOAK_SECRET_PROVIDER": f"dir://{secret_dir}"})
    assert config.caches["main"].redis.password == PASSWORD


def test_argument_overrides_environment_variable(write_config, secret_file: Path,
                                                 tmp_path: Path) -> None:
    config = load_config(write_config(WITH_REFS), secret_provider=f"secretfile://{secret_file}",
                         environ={"CACHECLOAK_SECRET_PROVIDER": "bogus://x"})
    assert config.caches["main"].redis.password == PASSWORD


def test_reference_without_provider(write_config) -> None:
    errors = config_errors(write_config(WITH_REFS))
    assert errors == [
        ("caches[0].redis.password: refers to secret <vault.redis_password> but no secret "
        "provider is configured; pass --secret-provider URI or set CACHECLOAK_SECRET_PROVIDER "
        "(for example dir:///run/secrets or secretfile:///etc/cachecloak/secrets.yaml)"),
        ("caches[0].encryption.keys.current: refers to secret <vault.enc> but no secret "
        "provider is configured; pass --secret-provider URI or set CACHECLOAK_SECRET_PROVIDER "
        "(for example dir:///run/secrets or secretfile:///etc/cachecloak/secrets.yaml)"),
    ]


def test_unresolvable_reference_in_secret_file(write_config, secret_file: Path) -> None:
    text = WITH_REFS.replace("<vault.redis_password>", "<vault.missing>")
    uri = f"secretfile://{secret_file}"
    errors = config_errors(write_config(text), secret_provider=uri)
    assert errors == [
        (f"caches[0].redis.password: secret <vault.missing> not found by provider {uri}; "
        f"add 'missing' under 'vault:' in {secret_file}")
    ]
    assert PASSWORD not in errors[0] and KEY_ENC not in errors[0]


def test_unresolvable_reference_in_directory(write_config, secret_dir: Path) -> None:
    text = WITH_REFS.replace("<vault.redis_password>", "<other.pw>")
    uri = f"dir://{secret_dir}"
    errors = config_errors(write_config(text), secret_provider=uri)
    assert errors == [
        (f"caches[0].redis.password: secret <other.pw> not found by provider {uri}; create the "
        f"file {secret_dir}/other/pw or {secret_dir}/other.pw")
    ]


def test_secret_with_bad_key_format_is_not_echoed(write_config, tmp_path: Path) -> None:
    secrets = tmp_path / "s.yaml"
    secrets.write_text("vault:\n  enc: not-a-key-SECRET\n  redis_password: x\n")
    errors = config_errors(write_config(WITH_REFS), secret_provider=f"secretfile://{secrets}")
    assert errors == [
        ("caches[0].encryption.keys.current: must be 64 hex characters (32 bytes); generate one "
        'with "cachecloak keygen"')
    ]
    assert "SECRET" not in "\n".join(errors)


def test_other_errors_are_still_reported_when_a_reference_fails(write_config) -> None:
    text = WITH_REFS.replace("disableTLS: true", "disableTLS: true\n      poolSize: 0")
    errors = config_errors(write_config(text))
    assert errors[0].startswith("caches[0].redis.password: refers to secret")
    assert errors[1].startswith("caches[0].encryption.keys.current: refers to secret")
    assert errors[2].startswith("caches[0].redis.poolSize: must be a number from 1 to 64;")
    assert len(errors) == 3  # no "must be 64 hex characters" for the unresolved reference


def test_strings_that_only_look_like_references_stay_literal(write_config) -> None:
    text = REDIS_CACHE.replace("disableTLS: true", "disableTLS: true\n      password: <nodot>")
    assert load_config(write_config(text), environ={}).caches["main"].redis.password == "<nodot>"


# --- provider URIs ---------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "message"), [
    ("vault://secret/x", ("--secret-provider: unknown secret provider scheme; use one of: "
                         "secretfile://, dir://")),
    ("/run/secrets", "--secret-provider: must be a URI such as SCHEME:///absolute/path;"),
    ("dir://run/secrets", ("--secret-provider: dir:// needs an absolute path (three slashes, as "
                          "in dir:///etc/cachecloak/...); relative paths are not accepted")),
    ("secretfile://secrets.yaml", "--secret-provider: secretfile:// needs an absolute path"),
])
def test_bad_provider_uri(uri: str, message: str) -> None:
    [line] = config_errors(None, secret_provider=uri)
    assert line.startswith(message)


def test_bad_provider_uri_from_environment_names_the_variable() -> None:
    [line] = config_errors(None, environ={"CACHECLOAK_SECRET_PROVIDER": "nope://x"})
    assert line.startswith("CACHECLOAK_SECRET_PROVIDER: unknown secret provider scheme;")


def test_missing_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert config_errors(None, secret_provider=f"secretfile://{path}") == [
        f"--secret-provider: secret file {path} does not exist; create it or fix the path"
    ]


def test_missing_secret_directory(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    assert config_errors(None, secret_provider=f"dir://{path}") == [
        (f"--secret-provider: secret directory {path} does not exist; create it or fix the path "
        f"in dir://{path}")
    ]


def test_invalid_secret_file_yaml_shows_position_but_no_content(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("vault:\n  pw: ok-SECRET\n bad: [SECRET\n")
    [line] = config_errors(None, secret_provider=f"secretfile://{path}")
    assert line.startswith(f"--secret-provider: secret file {path} is not valid YAML at line ")
    assert "SECRET" not in line


def test_secret_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("- SECRET\n")
    [line] = config_errors(None, secret_provider=f"secretfile://{path}")
    assert line.startswith(f"--secret-provider: secret file {path} must be a mapping")
    assert "SECRET" not in line


def test_provider_failure_is_reported_once_with_other_errors(write_config, tmp_path: Path) -> None:
    text = WITH_REFS.replace("disableTLS: true", "disableTLS: true\n      db: -1")
    errors = config_errors(write_config(text), secret_provider=f"dir://{tmp_path}/absent")
    assert len(errors) == 2
    assert errors[0].startswith("--secret-provider: secret directory")
    assert errors[1].startswith("caches[0].redis.db: must be a number of at least 0;")


# --- the providers themselves -------------------------------------------------------------------

def test_providers_satisfy_the_protocol(secret_file: Path, secret_dir: Path) -> None:
    for uri in (f"secretfile://{secret_file}", f"dir://{secret_dir}"):
        provider = make_secret_provider(uri)
        assert isinstance(provider, SecretProvider)
        assert provider.describe() == uri
        assert PASSWORD not in repr(provider)


def test_secret_file_keeps_values_as_written(secret_file: Path) -> None:
    provider = make_secret_provider(f"secretfile://{secret_file}")
    assert isinstance(provider, SecretFileProvider)
    assert provider.get("vault", "number") == "0123"
    assert provider.get("vault", "flag") == "yes"
    assert provider.get("vault", "tls.ca") == "dotted"
    with pytest.raises(SecretNotFoundError):
        provider.get("nope", "x")


def test_directory_provider_prefers_nested_file_and_strips_one_newline(tmp_path: Path) -> None:
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "k").write_text("nested\n\n")
    (tmp_path / "ns.k").write_text("flat")
    (tmp_path / "ns.crlf").write_bytes(b"value\r\n")
    provider = make_secret_provider(f"dir://{tmp_path}")
    assert isinstance(provider, DirProvider)
    assert provider.get("ns", "k") == "nested\n"
    assert provider.get("ns", "crlf") == "value"


def test_directory_provider_accepts_dotted_keys(tmp_path: Path) -> None:
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "tls.ca").write_text("pem")
    assert make_secret_provider(f"dir://{tmp_path}").get("ns", "tls.ca") == "pem"


@pytest.mark.parametrize(("namespace", "key"), [
    ("..", "x"), ("ns", ".."), ("ns", "../etc/passwd"), ("a/b", "c"), ("ns", "a/b"), ("", "k"),
])
def test_directory_provider_rejects_path_tricks(tmp_path: Path, namespace: str, key: str) -> None:
    provider = make_secret_provider(f"dir://{tmp_path}")
    with pytest.raises(SecretError) as info:
        provider.get(namespace, key)
    assert not isinstance(info.value, SecretNotFoundError)
    assert "'..' or '/'" in str(info.value)


def test_directory_provider_rejects_non_utf8(tmp_path: Path) -> None:
    (tmp_path / "ns.bin").write_bytes(b"\xff\xfe")
    with pytest.raises(SecretError, match="is not UTF-8 text"):
        make_secret_provider(f"dir://{tmp_path}").get("ns", "bin")


def test_make_secret_provider_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--secret-provider: unknown secret provider scheme"):
        make_secret_provider("s3://bucket/x")
