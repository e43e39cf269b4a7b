"""Configuration types: what cachecloak's YAML file may contain and what it turns into.

Two layers live here:

* ``Raw*`` pydantic models describe the YAML document exactly as written (camelCase
  field names, every field optional where the file may omit it, unknown fields
  forbidden).  They check types, ranges and formats of single values, nothing more.
  The loader (:mod:`proxy.config.loader`) runs them one list item at a time and then
  applies the cross-field rules (TLS, required keys, duplicates, listener references).
* Frozen dataclasses (:class:`Config`, :class:`ListenerConfig`, :class:`CacheConfig`,
  :class:`RedisConfig`, :class:`LocalConfig`) are the resolved result the rest of the
  proxy consumes: defaults filled in, keys decoded to raw bytes, names resolved.

This module must never put a secret value (password, key material, anything that
came from a secret provider or from the file's key fields) into an exception message,
a ``repr`` or a log line.  Validators below therefore describe what is wrong with a
value without echoing it, and the dataclass fields that hold secrets are excluded
from ``repr``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "DEFAULT_ADMIN_ADDRESS",
    "DEFAULT_DATABASES",
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_SOCKET_MODE",
    "LOCAL_DEFAULT",
    "AdminConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ListenerConfig",
    "LocalConfig",
    "RedisConfig",
    "TLSProfile",
    "parse_host_port",
    "parse_listen_address",
]

LOCAL_DEFAULT = "local_default"
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:6379"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:9121"
DEFAULT_MAX_ENTRIES = 1_000_000
DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_SOCKET_MODE = 0o600
UNIX_PREFIX = "unix:"
MAX_UNIX_PATH_BYTES = 107  # sun_path is 108 bytes on Linux, NUL included
DEFAULT_DATABASES = 16
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_COMMAND_TIMEOUT = 5.0
# One pipelined connection per Redis, as twemproxy's and Envoy's defaults: Redis runs one
# command at a time whatever the connection count, and with one connection it reads
# every client's commands of a loop iteration in one read (two halved that, and cost
# Redis more CPU per command: bench, 2026-12-01).  More help where one connection's
# large replies would hold up the others' small ones.
DEFAULT_POOL_SIZE = 1
KEY_BYTES = 32
MAX_PREFIX_CHARS = 64
# Warn when encryptions under one key (counted by this process) pass this share of the
# 2^32 random-nonce limit of NIST SP 800-38D: half leaves time to rotate.
DEFAULT_NONCE_WARNING_SHARE = 0.5

KEYGEN_HINT = 'generate one with "cachecloak keygen"'
KEY_FORMAT_MESSAGE = f"must be 64 hex characters (32 bytes); {KEYGEN_HINT}"


class ConfigError(Exception):
    """A configuration problem.

    ``str(err)`` is one or more lines, each ``<field path>: <what is wrong>; <how to fix>``.
    It never contains a secret value or key.  ``err.errors`` holds the lines as a list.
    """

    def __init__(self, errors: str | Iterable[str]) -> None:
        lines = [errors] if isinstance(errors, str) else list(errors)
        if not lines:
            lines = ["configuration: invalid; check the configuration file"]
        self.errors: list[str] = lines
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return "\n".join(self.errors)


# ---------------------------------------------------------------------------
# Resolved configuration (what the proxy uses)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenerConfig:
    """One client-facing listening socket and the cache it serves."""

    address: str  # as written, e.g. "127.0.0.1:6379", "[::1]:6379" or "unix:/run/x.sock"
    host: str  # without IPv6 brackets; "" for a Unix socket
    port: int  # 0 means "let the kernel pick a free port"; 0 for a Unix socket
    cache: str  # resolved cache name, a key of Config.caches
    unix_path: str | None = None  # absolute path of the Unix socket, None for TCP
    socket_mode: int = DEFAULT_SOCKET_MODE  # chmod of the Unix socket file
    max_clients: int = DEFAULT_MAX_CLIENTS  # connections beyond this are refused
    password: str | None = field(default=None, repr=False)  # clients must AUTH first
    tls: TLSProfile | None = None  # None: plain TCP or Unix socket; else TLS (proxy.server.tls)


@dataclass(frozen=True)
class TLSProfile:
    """A named TLS profile (top-level ``tls:`` map).  Paths are checked to be readable
    files when the configuration is loaded; their content is read when connecting."""

    name: str
    ca_file: str | None = None  # None: the system trust store
    cert_file: str | None = None  # with key_file: a client certificate (mutual TLS)
    key_file: str | None = None
    min_version: str = "1.2"  # "1.2" or "1.3"; nothing older is accepted
    max_version: str | None = None
    server_name: str | None = None  # name to verify when it differs from the address
    # Listeners only: whether clients must present a certificate signed by ca_file
    # ("optional": verified when presented).  Unused for upstream connections.
    client_auth: Literal["none", "optional", "require"] = "none"


SYSTEM_TLS = TLSProfile(name="(system trust store)")


@dataclass(frozen=True)
class AdminConfig:
    """The admin HTTP endpoint (top-level ``admin:``): /metrics, /healthz, /readyz."""

    address: str = DEFAULT_ADMIN_ADDRESS  # as written
    host: str = "127.0.0.1"  # without IPv6 brackets
    port: int = 9121  # 0: let the kernel pick a free port


@dataclass(frozen=True)
class RedisConfig:
    """Upstream Redis connection settings of a ``type: redis`` cache."""

    addresses: list[tuple[str, int]]  # (host without brackets, port)
    raw_addresses: list[str]  # as written in the file
    disable_tls: bool = False
    tls: TLSProfile | None = None  # None exactly when disable_tls
    mode: Literal["auto", "standalone", "sentinel", "cluster"] = "auto"
    sentinel_master_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    pool_size: int = DEFAULT_POOL_SIZE


@dataclass(frozen=True)
class LocalConfig:
    """Settings of an in-process ``type: local`` cache."""

    max_entries: int = DEFAULT_MAX_ENTRIES


@dataclass(frozen=True)
class CacheConfig:
    """A named cache with its backend, key prefixing, encryption and hashing settings.

    Key material (``encryption_current``, ``encryption_old``, ``hashing_current``) is
    32 raw bytes per key and is left out of ``repr``.
    """

    name: str
    type: Literal["redis", "local"]
    redis: RedisConfig | None = None
    local: LocalConfig | None = None
    key_prefix: bytes = b""
    prefix_enabled: bool = True
    encryption_enabled: bool = False
    encryption_current: bytes | None = field(default=None, repr=False)
    encryption_old: list[bytes] = field(default_factory=list, repr=False)
    on_decrypt_error: Literal["miss", "error"] = "miss"
    nonce_warning_share: float = DEFAULT_NONCE_WARNING_SHARE
    hashing_enabled: bool = False
    hashing_current: bytes | None = field(default=None, repr=False)
    databases: int = DEFAULT_DATABASES


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration."""

    listeners: list[ListenerConfig]
    caches: dict[str, CacheConfig]  # file order, then local_default
    tls_profiles: dict[str, TLSProfile] = field(default_factory=dict)
    source: str | None = None  # path of the file it came from, None for the built-in default
    admin: AdminConfig | None = None  # None: no admin endpoint (the default)


def local_default_cache() -> CacheConfig:
    """The built-in in-process cache every configuration has."""
    return CacheConfig(
        name=LOCAL_DEFAULT,
        type="local",
        local=LocalConfig(),
        key_prefix=b"",
        prefix_enabled=True,
        encryption_enabled=False,
        hashing_enabled=False,
        databases=DEFAULT_DATABASES,
    )


# ---------------------------------------------------------------------------
# Value validators.  Each raises ValueError("<what is wrong>; <how to fix>") without
# echoing the value; the loader turns these into "<path>: <message>" lines.
# ---------------------------------------------------------------------------

class InvalidValue(ValueError):  # a ValueError, so pydantic reports it per field
    """A value is wrong.  Message: ``<what is wrong>; <how to fix>``, never the value."""


_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_HEX_RE = re.compile(r"^[0-9A-Fa-f]{64}$")
_CACHE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?$")


def parse_host_port(text: Any, *, allow_port_zero: bool) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) into ``(host, port)``.

    Raises ValueError with a ``what; fix`` message that does not echo the input.
    """
    example = 'for example "127.0.0.1:6379" or "[::1]:6379"'
    if not isinstance(text, str):
        raise InvalidValue(f"must be a HOST:PORT string; write it in quotes, {example}")
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise InvalidValue(f"must be [IPV6]:PORT; {example}")
        host, port_text = text[1:end], text[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidValue(
                f"the host in brackets must be an IPv6 address; {example}"
            ) from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise InvalidValue(f"must be HOST:PORT; {example}")
        if ":" in host:
            raise InvalidValue(f"IPv6 addresses must be written in brackets; {example}")
        if len(host) > 253 or not _HOSTNAME_RE.match(host):
            raise InvalidValue(
                f"the host must be a hostname or IP address (letters, digits, '.', '-', '_'); "
                f"{example}"
            )
    lowest = 0 if allow_port_zero else 1
    if not port_text.isascii() or not port_text.isdigit():
        raise InvalidValue(f"the port must be a number from {lowest} to 65535; {example}")
    port = int(port_text)
    if not lowest <= port <= 65535:
        raise InvalidValue(f"the port must be a number from {lowest} to 65535; {example}")
    return host, port


def parse_listen_address(text: Any) -> tuple[str, int, str | None]:
    """``(host, port, None)`` for HOST:PORT, ``("", 0, path)`` for ``unix:/abs/path``.

    Raises ValueError with a ``what; fix`` message that does not echo the input.
    """
    if isinstance(text, str) and text.strip().startswith(UNIX_PREFIX):
        path = text.strip()[len(UNIX_PREFIX):]
        example = 'for example "unix:/run/cachecloak/cachecloak.sock"'
        if not path.startswith("/"):
            raise InvalidValue(f"the Unix socket path must be absolute; {example}")
        if "\0" in path or len(path.encode("utf-8", "surrogateescape")) > MAX_UNIX_PATH_BYTES:
            raise InvalidValue(f"the Unix socket path must be at most {MAX_UNIX_PATH_BYTES} "
                               f"bytes without NUL characters; use a shorter path, {example}")
        if path.endswith("/"):
            raise InvalidValue(f"the Unix socket path must name a file, not a directory; "
                               f"{example}")
        return "", 0, path
    host, port = parse_host_port(text, allow_port_zero=True)
    return host, port, None


def _listen_address(value: Any) -> str:
    parse_listen_address(value)
    return value.strip()


def _socket_mode(value: Any) -> int:
    fix = 'write an octal mode in quotes, for example socketMode: "0660"'
    if not isinstance(value, str):
        raise InvalidValue(f"must be a string; {fix}")
    if not re.fullmatch(r"0?[0-7]{3}", value.strip()):
        raise InvalidValue(f"must be an octal permission mode of 3 digits; {fix}")
    return int(value.strip(), 8)


def _listener_password(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue("must be a string; write the password in quotes or use a "
                           "<namespace.key> secret reference")
    if not value:
        raise InvalidValue("must not be empty; set a password or remove password: to let "
                           "clients connect without authentication")
    return value


def _admin_address(value: Any) -> str:
    parse_host_port(value, allow_port_zero=True)
    return value.strip()


def _upstream_address(value: Any) -> str:
    parse_host_port(value, allow_port_zero=False)
    return value.strip()


def _int_between(low: int, high: int | None, fix: str) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise InvalidValue(f"must be a whole number, not true/false; {fix}")
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())  # values from env/secret substitution
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise InvalidValue(f"must be a whole number; {fix}")
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise InvalidValue(f"must be a number {bounds}; {fix}")
        return value

    return BeforeValidator(check)


def _duration(value: Any) -> float:
    fix = 'write a duration such as "500ms", "2s" or a number of seconds'
    if isinstance(value, bool):
        raise InvalidValue(f"must be a duration, not true/false; {fix}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value.strip())
        if not match:
            raise InvalidValue(f"must be a duration; {fix}")
        seconds = float(match.group(1))
        if match.group(2) == "ms":
            seconds /= 1000.0
    else:
        raise InvalidValue(f"must be a duration; {fix}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidValue(f"must be greater than zero; {fix}")
    return seconds


def _share(value: Any) -> float:
    fix = "write a number greater than 0 and at most 1, for example 0.5 for half"
    if isinstance(value, bool):
        raise InvalidValue(f"must be a number, not true/false; {fix}")
    if isinstance(value, str):  # values from env/secret substitution
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidValue(f"must be a number; {fix}") from None
    if not isinstance(value, int | float):
        raise InvalidValue(f"must be a number; {fix}")
    share = float(value)
    if not math.isfinite(share) or not 0 < share <= 1:
        raise InvalidValue(f"must be greater than 0 and at most 1; {fix}")
    return share


def _hex_key(value: Any) -> bytes:
    if not isinstance(value, str) or not _HEX_RE.match(value.strip()):
        raise InvalidValue(KEY_FORMAT_MESSAGE)
    return bytes.fromhex(value.strip())


def _cache_name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue('must be a string; write the name in quotes, for example "main"')
    if not _CACHE_NAME_RE.match(value):
        raise InvalidValue(
            "may contain only letters, digits, '_', '.' and '-'; rename the cache, "
            'for example "main-redis"'
        )
    if value == LOCAL_DEFAULT:
        raise InvalidValue(
            f"{LOCAL_DEFAULT} is the reserved name of the built-in cache; "
            "choose another name (listeners may still use cache: local_default)"
        )
    return value


def _key_prefix(value: Any) -> str:
    fix = 'use printable ASCII without spaces or braces, for example "app1:"'
    if not isinstance(value, str):
        raise InvalidValue(f"must be a string; write it in quotes, {fix}")
    if len(value) > MAX_PREFIX_CHARS:
        raise InvalidValue(f"must be at most {MAX_PREFIX_CHARS} characters; shorten it")
    if "{" in value or "}" in value:
        raise InvalidValue(
            "must not contain { or } (they would act as Redis Cluster hash tags); "
            "remove them"
        )
    if any(not ("!" <= ch <= "~") for ch in value):
        raise InvalidValue(f"must contain only printable ASCII characters and no spaces; {fix}")
    return value


def _listener_cache_ref(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue("must be the name of a cache; write it in quotes")
    return value


def _tls_version(value: Any) -> str:
    # YAML reads an unquoted 1.2 as a float: accept both spellings.
    text = f"{value:.1f}" if isinstance(value, float) else str(value).strip()
    if text in ("1.2", "1.3"):
        return text
    if text in ("1", "1.0", "1.1"):
        raise InvalidValue('TLS versions below 1.2 are not allowed; use "1.2" or "1.3"')
    raise InvalidValue('must be "1.2" or "1.3"')


ListenAddress = Annotated[str, BeforeValidator(_listen_address)]
SocketMode = Annotated[int, BeforeValidator(_socket_mode)]
ListenerPassword = Annotated[str, BeforeValidator(_listener_password)]
TLSVersion = Annotated[str, BeforeValidator(_tls_version)]
UpstreamAddress = Annotated[str, BeforeValidator(_upstream_address)]
AdminAddress = Annotated[str, BeforeValidator(_admin_address)]
Duration = Annotated[float, BeforeValidator(_duration)]
Share = Annotated[float, BeforeValidator(_share)]
HexKey = Annotated[bytes, BeforeValidator(_hex_key)]
CacheName = Annotated[str, BeforeValidator(_cache_name)]
KeyPrefix = Annotated[str, BeforeValidator(_key_prefix)]
CacheRef = Annotated[str, BeforeValidator(_listener_cache_ref)]


# ---------------------------------------------------------------------------
# Raw models: the YAML document as written
# ---------------------------------------------------------------------------


class _RawModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RawListener(_RawModel):
    address: ListenAddress
    cache: CacheRef | None = None
    socket_mode: SocketMode | None = Field(None, alias="socketMode")
    max_clients: Annotated[
        int, _int_between(1, None, "allow at least 1 client, for example 10000")
    ] = Field(DEFAULT_MAX_CLIENTS, alias="maxClients")
    password: ListenerPassword | None = None
    tls: str | None = None  # the name of a profile under tls:


class RawTLSProfile(_RawModel):
    ca_file: str | None = Field(None, alias="caFile")
    cert_file: str | None = Field(None, alias="certFile")
    key_file: str | None = Field(None, alias="keyFile")
    min_version: TLSVersion = Field("1.2", alias="minVersion")
    max_version: TLSVersion | None = Field(None, alias="maxVersion")
    server_name: str | None = Field(None, alias="serverName")
    client_auth: Literal["none", "optional", "require"] = Field("none", alias="clientAuth")


class RawAdmin(_RawModel):
    address: AdminAddress = DEFAULT_ADMIN_ADDRESS


class RawSentinel(_RawModel):
    master_name: str | None = Field(None, alias="masterName")
    username: str | None = None
    password: str | None = None


class RawRedis(_RawModel):
    addresses: list[UpstreamAddress] = Field(min_length=1)
    disable_tls: bool = Field(False, alias="disableTLS")
    tls: str | None = None
    mode: Literal["auto", "standalone", "sentinel", "cluster"] = "auto"
    sentinel: RawSentinel | None = None
    db: Annotated[int, _int_between(0, None, "use 0 or another Redis database index")] = 0
    username: str | None = None
    password: str | None = None
    connect_timeout: Duration = Field(DEFAULT_CONNECT_TIMEOUT, alias="connectTimeout")
    command_timeout: Duration = Field(DEFAULT_COMMAND_TIMEOUT, alias="commandTimeout")
    pool_size: Annotated[
        int, _int_between(1, 64, "use from 1 to 64 upstream connections")
    ] = Field(DEFAULT_POOL_SIZE, alias="poolSize")


class RawLocal(_RawModel):
    max_entries: Annotated[
        int, _int_between(1, None, "set the maximum number of entries to keep, e.g. 100000")
    ] = Field(DEFAULT_MAX_ENTRIES, alias="maxEntries")


class RawKeys(_RawModel):
    prefix: KeyPrefix | None = None
    disable_prefix: bool = Field(False, alias="disablePrefix")


class RawEncryptionKeys(_RawModel):
    current: HexKey | None = None
    old: list[HexKey] = Field(default_factory=list)


class RawEncryption(_RawModel):
    keys: RawEncryptionKeys | None = None
    disabled: bool | None = None
    on_decrypt_error: Literal["miss", "error"] = Field("miss", alias="onDecryptError")
    nonce_warning_share: Share = Field(DEFAULT_NONCE_WARNING_SHARE, alias="nonceWarningShare")


class RawHashingKeys(_RawModel):
    current: HexKey | None = None


class RawHashing(_RawModel):
    keys: RawHashingKeys | None = None
    disabled: bool | None = None


class RawCache(_RawModel):
    name: CacheName
    type: Literal["redis", "local"]
    redis: RawRedis | None = None
    local: RawLocal | None = None
    keys: RawKeys | None = None
    databases: Annotated[
        int, _int_between(1, 1024, "use from 1 to 1024 logical databases")
    ] | None = None
    encryption: RawEncryption | None = None
    hashing: RawHashing | None = None


class RawConfig(_RawModel):
    """Top level only; list items are validated one by one by the loader."""

    listeners: list[Any] | None = None
    caches: list[Any] | None = None
    tls: dict[str, Any] | None = None
    admin: Any = None  # validated by the loader (RawAdmin), with field paths
