"""Load cachecloak's YAML configuration into a resolved :class:`~proxy.config.schema.Config`.

Pipeline (each step reports every problem it finds, as ``<path>: <what>; <fix>`` lines):

1. read the file (or use the built-in default when no path is given);
2. replace ``{{ env.NAME }}`` in the raw text from the environment (full-line comments
   are left alone; a value containing a line break is refused so line numbers stay true);
3. parse YAML (duplicate keys are an error);
4. resolve ``<namespace.key>`` secret references through the secret provider
   (:mod:`proxy.config.secrets`);
5. validate each list item with the raw pydantic models (:mod:`proxy.config.schema`),
   rewriting pydantic's errors into one-line messages with a fix;
6. apply the cross-field rules and build the frozen result objects.

All problems end up in a single :class:`ConfigError`; nothing else escapes (no
pydantic ValidationError, no YAML error, no traceback for the user).

This module must never log, print or put into a message any secret value: neither
values that came from a secret provider nor key material or passwords written in the
file, nor environment variable values.  Messages name field paths, secret references
(``<vault.redis_password>``), variable names and file paths only.  Pydantic errors are
read with ``include_input=False`` and YAML errors are reported by position, never with
the excerpt of the file PyYAML would show.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from proxy.config.schema import (
    DEFAULT_DATABASES,
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_SOCKET_MODE,
    LOCAL_DEFAULT,
    SYSTEM_TLS,
    AdminConfig,
    CacheConfig,
    Config,
    ConfigError,
    ListenerConfig,
    LocalConfig,
    RawAdmin,
    RawCache,
    RawConfig,
    RawEncryption,
    RawHashing,
    RawKeys,
    RawListener,
    RawRedis,
    RawTLSProfile,
    RedisConfig,
    TLSProfile,
    local_default_cache,
    parse_host_port,
    parse_listen_address,
)
from proxy.config.secrets import (
    PROVIDER_ENV_VAR,
    SecretError,
    SecretNotFoundError,
    SecretProvider,
    make_secret_provider,
)

__all__ = ["format_path", "load_config"]

Loc = tuple[str | int, ...]

_TEMPLATE_RE = re.compile(r"\{\{(.*?)\}\}")
_ENV_REF_RE = re.compile(r"\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*")
_SECRET_REF_RE = re.compile(r"<([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)>")

_CACHE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")

_PROVIDER_FIX = (
    "pass --secret-provider URI or set CACHECLOAK_SECRET_PROVIDER "
    "(for example dir:///run/secrets or secretfile:///etc/cachecloak/secrets.yaml)"
)


def format_path(loc: Loc) -> str:
    """``("caches", 1, "redis", "addresses", 0)`` -> ``caches[1].redis.addresses[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "configuration"


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class _Errors:
    """Collects ``(loc, message)`` problems; drops those under a failed secret reference."""

    def __init__(self) -> None:
        self.items: list[tuple[Loc | str, str]] = []
        self.suppressed: list[Loc] = []

    def add(self, where: Loc | str, message: str) -> None:
        if not isinstance(where, str) and any(
            where[: len(prefix)] == prefix for prefix in self.suppressed
        ):
            return  # the value there is an unresolved secret reference, already reported
        self.items.append((where, message))

    def lines(self) -> list[str]:
        out: list[str] = []
        for where, message in self.items:
            path = where if isinstance(where, str) else format_path(where)
            # A field name or value from the file may hold CR, LF or other control
            # characters: escaped, so that every problem stays on its own line.
            line = f"{path}: {message}".translate(_CONTROL_ESCAPES)
            if line not in out:
                out.append(line)
        return out

    def __len__(self) -> int:
        return len(self.items)


# ---------------------------------------------------------------------------
# File, environment and YAML
# ---------------------------------------------------------------------------


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the path of a YAML file") from None
    except PermissionError:
        raise ConfigError(
            f"{path}: cannot be read (permission denied); make it readable by the user "
            "running cachecloak"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text; save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check the file") from None


def _substitute_env(text: str, environ: Mapping[str, str], source: str) -> str:
    """Replace ``{{ env.NAME }}`` line by line; report unset variables with their line."""
    errors: list[str] = []
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue

        def replace(match: re.Match[str], lineno: int = lineno) -> str:
            env_match = _ENV_REF_RE.fullmatch(match.group(1))
            where = f"{source} line {lineno}"
            if env_match is None:
                errors.append(
                    f"{where}: unsupported {{{{ }}}} expression; only {{{{ env.NAME }}}} is "
                    "supported (NAME: letters, digits and _)"
                )
                return match.group(0)
            name = env_match.group(1)
            value = environ.get(name)
            if value is None:
                errors.append(
                    f"{where}: environment variable {name} is not set; export {name} "
                    f"or replace {{{{ env.{name} }}}} with a value"
                )
                return match.group(0)
            if "\n" in value or "\r" in value:
                errors.append(
                    f"{where}: environment variable {name} contains a line break; "
                    "use a single-line value (or a <namespace.key> secret reference)"
                )
                return match.group(0)
            return value

        out.append(_TEMPLATE_RE.sub(replace, line))
    if errors:
        raise ConfigError(errors)
    return "".join(out)


class _ConfigYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping (merge keys excepted)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        ident = (key_node.tag, key_node.value)
        if ident in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f'duplicate key "{key_node.value}"', key_node.start_mark
            )
        seen.add(ident)
    return loader.construct_mapping(node)


_ConfigYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


# A YAML alias is a reference, so a few lines of nested anchors can stand for billions of
# values ("billion laughs"), and an alias inside its own anchor makes a cycle; every later
# step walks the expanded tree, recursively.  A real configuration has a few hundred
# values, nested five or six deep.
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64


def _shape_problem(data: Any) -> str | None:
    """What makes `data` too big or too deep to walk, if anything.  Stops counting at the
    limits, so it is cheap whatever the file holds (cycles included)."""
    budget = MAX_CONFIG_NODES
    stack = [(data, 0)]
    while stack:
        budget -= 1
        if budget < 0:
            return (f"the file expands to more than {MAX_CONFIG_NODES} values through YAML "
                    "anchors and aliases (or an alias refers to itself); write those parts "
                    "out without nested aliases")
        node, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            return (f"values are nested more than {MAX_CONFIG_DEPTH} levels deep (or a YAML "
                    "alias refers to itself); the configuration needs a few levels only")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in (*node.keys(), *node.values()))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return None


def _parse_yaml(text: str, source: str) -> dict[Any, Any]:
    try:
        data = yaml.load(text, Loader=_ConfigYamlLoader)  # SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = (exc.problem or exc.context or "syntax error").strip()
        raise ConfigError(
            f"{source}: invalid YAML{at}: {problem}; fix the syntax there "
            "(check indentation, colons and quoting)"
        ) from None
    except yaml.YAMLError:
        raise ConfigError(f"{source}: invalid YAML; fix the syntax") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise ConfigError(f"{source}: invalid YAML: nested too deeply; the configuration "
                          "needs a few levels only") from None
    if data is None:
        return {}
    problem = _shape_problem(data)
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping (listeners: and caches:), "
            f"found {_kind(data)}; start the file with 'caches:'"
        )
    return data


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "a " + type(value).__name__


# ---------------------------------------------------------------------------
# Secret references
# ---------------------------------------------------------------------------


def _resolve_secrets(
    tree: Any,
    provider: SecretProvider | None,
    provider_failed: bool,
    errors: _Errors,
) -> Any:
    """Replace every ``<namespace.key>`` string value; failures suppress errors below them."""
    cache: dict[tuple[str, str], str] = {}

    def resolve(loc: Loc, namespace: str, key: str, ref: str) -> str:
        if provider is None:
            if not provider_failed:
                errors.add(loc, f"refers to secret {ref} but no secret provider is "
                                f"configured; {_PROVIDER_FIX}")
            errors.suppressed.append(loc)
            return ref
        if (namespace, key) in cache:
            return cache[(namespace, key)]
        try:
            value = provider.get(namespace, key)
        except SecretNotFoundError as exc:
            errors.add(loc, f"secret {ref} {exc}")
            errors.suppressed.append(loc)
            return ref
        except SecretError as exc:
            errors.add(loc, f"secret {ref} could not be read from provider "
                            f"{provider.describe()}: {exc}")
            errors.suppressed.append(loc)
            return ref
        cache[(namespace, key)] = value
        return value

    def walk(node: Any, loc: Loc) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, (*loc, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*loc, i)) for i, v in enumerate(node)]
        if isinstance(node, str):
            match = _SECRET_REF_RE.fullmatch(node)
            if match:
                return resolve(loc, match.group(1), match.group(2), node)
        return node

    return walk(tree, ())


# ---------------------------------------------------------------------------
# Pydantic error rewriting
# ---------------------------------------------------------------------------

_MISSING_HINTS = {
    "name": 'required; give the cache a unique name, for example name: main',
    "type": "required; set type: redis or type: local",
    "addresses": 'required; list the Redis servers, for example addresses: ["redis:6379"]',
    "address": "required; set it to HOST:PORT or unix:/path, for example address: "
               "127.0.0.1:6379",
}


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The raw model class describing the mapping at ``loc`` (relative to ``model``)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            if typing.get_origin(current) is not list:
                return None
            current = typing.get_args(current)[0]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        for name, info in current.model_fields.items():
            if (info.alias or name) == part:
                current = info.annotation
                break
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _field_names(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _pydantic_message(error: Any, model: type[BaseModel]) -> str:
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return _MISSING_HINTS.get(str(loc[-1]) if loc else "", "required; add it")
    if kind == "extra_forbidden":
        allowed = _field_names(_model_at(model, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        return f"unknown field{hint}; allowed fields here: {', '.join(allowed)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("literal_error", "enum"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of: {', '.join(choices)}; use one of these values"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        fields = _field_names(_model_at(model, loc))
        listed = f" with the fields {', '.join(fields)}" if fields else ""
        return f"must be a mapping{listed}; write them as 'field: value' lines indented under it"
    if kind == "list_type":
        return "must be a list; write [a, b] or one '- item' line per entry"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false; write it without quotes"
    if kind in ("string_type", "string_unicode"):
        return "must be a string; write the value in quotes"
    if kind == "too_short":
        return "must not be empty; add at least one entry"
    message = str(error.get("msg", "invalid value")).rstrip(".")
    return f"{message}; check this value against the configuration reference"


def _lookup(tree: Any, loc: Loc) -> Any:
    for part in loc:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _validate(
    model: type[BaseModel], data: Any, at: Loc, errors: _Errors, *, partial: bool = False
) -> Any:
    """Validate ``data`` (found at ``at``) and report every problem.

    With ``partial=True`` an invalid mapping is validated a second time with the
    offending fields removed, so the cross-field rules can still check the rest of it.
    Those later checks are silenced under each invalid field (its default would stand in
    for what the user wrote and could produce wrong advice); an invalid ``disabled``
    switch silences its whole section.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
    for error in problems:
        errors.add((*at, *error["loc"]), _pydantic_message(error, model))
    if not partial or not isinstance(data, dict):
        return None
    pruned = copy.deepcopy(data)
    sections: list[Loc] = []
    bad_items: dict[Loc, set[int]] = {}
    for error in problems:
        loc = tuple(error["loc"])
        cut = next((i for i, part in enumerate(loc) if isinstance(part, int)), len(loc))
        field_loc = loc[:cut]
        if len(field_loc) < 2:
            return None  # a field of the item itself is wrong: nothing sensible to check
        # Silence later checks under the dropped field; a dropped "disabled" switch
        # changes what the whole section means, so silence the section.
        sections.append(field_loc[:-1] if field_loc[-1] == "disabled" else field_loc)
        if cut < len(loc):  # an entry of a list field: drop that entry only
            bad_items.setdefault(field_loc, set()).add(int(loc[cut]))
            continue
        parent = _lookup(pruned, field_loc[:-1])
        if isinstance(parent, dict):
            parent.pop(field_loc[-1], None)
    for field_loc, indexes in bad_items.items():
        parent = _lookup(pruned, field_loc[:-1])
        if isinstance(parent, dict) and isinstance(parent.get(field_loc[-1]), list):
            items = parent[field_loc[-1]]
            parent[field_loc[-1]] = [v for i, v in enumerate(items) if i not in indexes]
    try:
        result = model.model_validate(pruned)
    except ValidationError:
        return None
    errors.suppressed.extend((*at, *section) for section in sections)
    return result


# ---------------------------------------------------------------------------
# Cross-field rules and building the result
# ---------------------------------------------------------------------------


def _key_section(
    section: RawEncryption | RawHashing,
    cache_type: str,
    at: Loc,
    what: str,
    errors: _Errors,
) -> tuple[bool, bytes | None, list[bytes]]:
    keys = section.keys
    current = keys.current if keys is not None else None
    old: list[bytes] = list(getattr(keys, "old", []) or []) if keys is not None else []
    if section.disabled is None:
        enabled = cache_type == "redis" or keys is not None
    else:
        enabled = not section.disabled
    for index, key in enumerate(old):
        where = (*at, "keys", "old", index)
        if current is not None and key == current:
            errors.add(where, "is the same key as keys.current; remove it from old "
                              "(old keys only decrypt values written before a key rotation)")
        elif key in old[:index]:
            errors.add(where, "is listed twice; remove the duplicate")
    if not enabled:
        return False, None, []
    if current is None:
        errors.add(
            (*at, "keys", "current"),
            f'required while {what} is enabled; generate a key with "cachecloak keygen" '
            f"or set {what}.disabled: true",
        )
    return True, current, old


def _redis_tls(r: RawRedis, profiles: dict[str, TLSProfile], at: Loc,
               errors: _Errors) -> TLSProfile | None:
    if r.disable_tls:
        if r.tls is not None:
            errors.add((*at, "tls"), "conflicts with disableTLS: true; remove tls or "
                                     "disableTLS")
        return None
    if r.tls is None:
        return SYSTEM_TLS
    profile = profiles.get(r.tls)
    if profile is None:
        defined = ", ".join(profiles) or "none are defined"
        errors.add((*at, "tls"), f'profile "{r.tls}" is not defined under tls:; define it '
                                 f"there or use one of: {defined}")
    return profile


def _listener_tls(name: str | None, profiles: dict[str, TLSProfile], tree: dict[Any, Any],
                  at: Loc, errors: _Errors) -> TLSProfile | None:
    """The profile a listener's ``tls:`` names; a listener needs a certificate and key."""
    if name is None:
        return None
    profile = profiles.get(name)
    if profile is None:
        raw_map = tree.get("tls")
        if not (isinstance(raw_map, dict) and name in raw_map):  # else already reported
            defined = ", ".join(profiles) or "none are defined"
            errors.add((*at, "tls"), f'profile "{name}" is not defined under tls:; define it '
                                     f"there (certFile, keyFile) or use one of: {defined}")
        return None
    if profile.cert_file is None and profile.key_file is None:
        errors.add(("tls", name, "certFile"),
                   f"required because {format_path((*at, 'tls'))} uses this profile (a TLS "
                   "listener serves a certificate); set certFile and keyFile to the "
                   "listener's certificate and private key")
    return profile


def _build_tls_profiles(tree: dict[Any, Any], errors: _Errors) -> dict[str, TLSProfile]:
    raw_map = tree.get("tls")
    if not isinstance(raw_map, dict):
        return {}
    profiles: dict[str, TLSProfile] = {}
    for name, item in raw_map.items():
        at: Loc = ("tls", str(name))
        if not isinstance(name, str) or not _CACHE_NAME_RE.fullmatch(name):
            errors.add(at, "profile names use letters, digits, '_', '.' and '-'; rename it")
            continue
        raw = _validate(RawTLSProfile, item if item is not None else {}, at, errors)
        if raw is None:
            continue
        for attr, label in (("ca_file", "caFile"), ("cert_file", "certFile"),
                            ("key_file", "keyFile")):
            path = getattr(raw, attr)
            if path is None:
                continue
            if not os.path.isabs(path):
                errors.add((*at, label), "must be an absolute path; write the full path")
            elif not os.path.isfile(path):
                errors.add((*at, label), f"file {path} does not exist; check the path")
            elif not os.access(path, os.R_OK):
                errors.add((*at, label), f"file {path} is not readable by this process; "
                                         "check its permissions")
        if (raw.cert_file is None) != (raw.key_file is None):
            missing = "keyFile" if raw.key_file is None else "certFile"
            errors.add((*at, missing), "required with "
                       f"{'certFile' if missing == 'keyFile' else 'keyFile'} (a client "
                       "certificate needs its private key); set both or neither")
        if raw.max_version is not None and raw.max_version < raw.min_version:
            errors.add((*at, "maxVersion"), "is lower than minVersion; raise maxVersion or "
                                            "lower minVersion")
        if raw.client_auth != "none" and raw.ca_file is None:
            errors.add((*at, "caFile"), f"required with clientAuth: {raw.client_auth} (client "
                                        "certificates are verified against it, never against "
                                        "the system trust store); set caFile to the CA that "
                                        "signs client certificates")
        profiles[name] = TLSProfile(name=name, ca_file=raw.ca_file, cert_file=raw.cert_file,
                                    key_file=raw.key_file, min_version=raw.min_version,
                                    max_version=raw.max_version, server_name=raw.server_name,
                                    client_auth=raw.client_auth)
    return profiles


def _build_admin(tree: dict[Any, Any], errors: _Errors) -> AdminConfig | None:
    """The admin endpoint, or None when the file has no admin: section (the default)."""
    if "admin" not in tree:
        return None
    item = tree.get("admin")
    if item is None:  # "admin:" with nothing under it: the defaults
        item = {}
    if not isinstance(item, dict):
        errors.add("admin", 'must be a mapping; write admin: with address: "HOST:PORT" '
                            'under it, for example address: "127.0.0.1:9121"')
        return None
    raw = _validate(RawAdmin, item, ("admin",), errors)
    if raw is None:
        return None
    host, port = parse_host_port(raw.address, allow_port_zero=True)
    return AdminConfig(address=raw.address, host=host, port=port)


def _build_cache(raw: RawCache, at: Loc, errors: _Errors,
                 profiles: dict[str, TLSProfile]) -> CacheConfig:
    redis_cfg: RedisConfig | None = None
    local_cfg: LocalConfig | None = None
    if raw.type == "redis":
        if raw.local is not None:
            errors.add((*at, "local"), "is only allowed for type local; remove it or set "
                                       "type: local")
        if raw.redis is None:
            errors.add((*at, "redis"), 'required for type redis; add a redis: section with '
                                       'addresses: ["HOST:PORT"] and disableTLS: true')
        else:
            r = raw.redis
            tls = _redis_tls(r, profiles, (*at, "redis"), errors)
            sentinel = r.sentinel
            master_name = sentinel.master_name if sentinel is not None else None
            mode = r.mode
            if mode == "sentinel" and not master_name:
                errors.add((*at, "redis", "sentinel", "masterName"),
                           "required with mode: sentinel; set it to the name the Sentinels "
                           "monitor (sentinel monitor <name> ...)")
            elif master_name and mode in ("standalone", "cluster"):
                errors.add((*at, "redis", "sentinel"),
                           f"conflicts with mode: {mode}; remove sentinel: or set mode: "
                           "sentinel (or auto)")
            elif master_name:
                mode = "sentinel"
            if sentinel is not None and not master_name and mode != "sentinel":
                errors.add((*at, "redis", "sentinel", "masterName"),
                           "required when a sentinel: section is given; set it to the name "
                           "the Sentinels monitor, or remove sentinel:")
            if mode == "cluster" and r.db:
                errors.add((*at, "redis", "db"), "Redis Cluster has only database 0; remove "
                                                 "db or set it to 0")
            parsed: list[tuple[str, int]] = []
            seen: dict[tuple[str, int], int] = {}
            for index, text in enumerate(r.addresses):
                host, port = parse_host_port(text, allow_port_zero=False)
                ident = (host.lower(), port)
                if ident in seen:
                    errors.add((*at, "redis", "addresses", index),
                               f"duplicate of addresses[{seen[ident]}]; list each server once")
                seen.setdefault(ident, index)
                parsed.append((host, port))
            redis_cfg = RedisConfig(
                addresses=parsed,
                raw_addresses=list(r.addresses),
                disable_tls=r.disable_tls,
                tls=tls,
                mode=mode,
                sentinel_master_name=master_name,
                sentinel_username=sentinel.username if sentinel is not None else None,
                sentinel_password=sentinel.password if sentinel is not None else None,
                db=r.db,
                username=r.username,
                password=r.password,
                connect_timeout=r.connect_timeout,
                command_timeout=r.command_timeout,
                pool_size=r.pool_size,
            )
    else:
        if raw.redis is not None:
            errors.add((*at, "redis"), "is only allowed for type redis; remove it or set "
                                       "type: redis")
        local_cfg = LocalConfig(max_entries=raw.local.max_entries) if raw.local else LocalConfig()

    keys = raw.keys or RawKeys()
    if keys.disable_prefix:
        if keys.prefix is not None:
            errors.add((*at, "keys", "prefix"), "conflicts with keys.disablePrefix: true; "
                                                "remove prefix or set disablePrefix: false")
        if raw.databases is not None and raw.databases != 1:
            errors.add((*at, "databases"),
                       "must be 1 when keys.disablePrefix is true (without a prefix logical "
                       "databases cannot be kept apart); remove databases or set it to 1")
        prefix = b""
        databases = 1
    else:
        if keys.prefix is not None:
            prefix = keys.prefix.encode("ascii")
        elif raw.type == "redis":
            prefix = f"cachecloak:{raw.name}:".encode("ascii")
        else:
            prefix = b""
        databases = raw.databases if raw.databases is not None else DEFAULT_DATABASES

    enc_section = raw.encryption or RawEncryption()
    enc_on, enc_current, enc_old = _key_section(
        enc_section, raw.type, (*at, "encryption"), "encryption", errors
    )
    hash_on, hash_current, _ = _key_section(
        raw.hashing or RawHashing(), raw.type, (*at, "hashing"), "hashing", errors
    )
    enc_written = enc_section.keys.current if enc_section.keys is not None else None
    hash_written = raw.hashing.keys.current if raw.hashing and raw.hashing.keys else None
    if enc_written is not None and hash_written is not None and enc_written == hash_written:
        errors.add((*at, "hashing", "keys", "current"),
                   "must differ from encryption.keys.current; use a separate key for hashing "
                   '(generate one with "cachecloak keygen")')

    return CacheConfig(
        name=raw.name,
        type=raw.type,
        redis=redis_cfg,
        local=local_cfg,
        key_prefix=prefix,
        prefix_enabled=not keys.disable_prefix,
        encryption_enabled=enc_on,
        encryption_current=enc_current,
        encryption_old=enc_old,
        on_decrypt_error=enc_section.on_decrypt_error,
        nonce_warning_share=enc_section.nonce_warning_share,
        hashing_enabled=hash_on,
        hashing_current=hash_current,
        databases=databases,
    )


def _build(
    tree: dict[Any, Any],
    listen: str | None,
    errors: _Errors,
) -> tuple[list[ListenerConfig], dict[str, CacheConfig], dict[str, TLSProfile]]:
    _validate(RawConfig, tree, (), errors)  # top-level keys and list types only
    profiles = _build_tls_profiles(tree, errors)
    raw_listeners = tree.get("listeners") if isinstance(tree.get("listeners"), list) else None
    raw_caches = tree.get("caches") if isinstance(tree.get("caches"), list) else []

    # Caches, one by one, so every item's problems are reported.
    caches: dict[str, CacheConfig] = {}
    written_names: list[str] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(raw_caches or []):
        at: Loc = ("caches", index)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in first_seen:
                errors.add((*at, "name"), f'duplicate cache name "{name}" (also caches'
                                          f"[{first_seen[name]}]); give each cache its own name")
            else:
                first_seen[name] = index
                if name != LOCAL_DEFAULT and _CACHE_NAME_RE.fullmatch(name):
                    written_names.append(name)
        raw = _validate(RawCache, item, at, errors, partial=True)
        if raw is not None:
            cache = _build_cache(raw, at, errors, profiles)
            caches.setdefault(cache.name, cache)
    caches[LOCAL_DEFAULT] = local_default_cache()
    choices = ", ".join([*written_names, LOCAL_DEFAULT])
    user_cache_count = len(raw_caches or [])

    def default_cache(where: Loc) -> str | None:
        if user_cache_count == 0:
            return LOCAL_DEFAULT
        if user_cache_count == 1:
            return written_names[0] if written_names else None
        errors.add(where, f"required when several caches are defined; set it to one of: "
                          f"{choices}")
        return None

    # Listeners.
    listeners: list[ListenerConfig] = []
    if raw_listeners is None:
        if "listeners" not in tree or tree.get("listeners") is None:
            cache_name = None
            if user_cache_count > 1:
                errors.add("listeners", "required when several caches are defined; add a "
                                        "listener with address: HOST:PORT and cache: one of: "
                                        f"{choices}")
            else:
                cache_name = default_cache(("listeners",))
            if cache_name is not None:
                host, port = parse_host_port(DEFAULT_LISTEN_ADDRESS, allow_port_zero=True)
                listeners.append(ListenerConfig(DEFAULT_LISTEN_ADDRESS, host, port, cache_name))
    elif not raw_listeners:
        errors.add("listeners", f"must not be empty; add a listener or remove listeners: to "
                                f"use the default {DEFAULT_LISTEN_ADDRESS}")
    else:
        seen_addresses: dict[tuple[str, int | str], int] = {}
        for index, item in enumerate(raw_listeners):
            at = ("listeners", index)
            raw = _validate(RawListener, item, at, errors)
            if raw is None:
                continue
            host, port, unix_path = parse_listen_address(raw.address)
            ident: tuple[str, int | str] = (
                ("unix", unix_path) if unix_path is not None else (host.lower(), port))
            if ident in seen_addresses and (port != 0 or unix_path is not None):
                errors.add((*at, "address"),
                           f'duplicate listener address "{raw.address}" (also listeners'
                           f"[{seen_addresses[ident]}]); give each listener its own address")
            seen_addresses.setdefault(ident, index)
            if raw.socket_mode is not None and unix_path is None:
                errors.add((*at, "socketMode"), "only applies to unix: addresses; remove it "
                                                "or listen on unix:/path")
            listener_tls = _listener_tls(raw.tls, profiles, tree, at, errors)
            if raw.cache is None:
                cache_name = default_cache((*at, "cache"))
            elif raw.cache == LOCAL_DEFAULT or raw.cache in first_seen:
                cache_name = raw.cache
            else:
                errors.add((*at, "cache"), f'cache "{raw.cache}" is not defined under caches:; '
                                           f"define it or use one of: {choices}")
                cache_name = None
            if cache_name is not None:
                listeners.append(ListenerConfig(
                    raw.address, host, port, cache_name, unix_path=unix_path,
                    socket_mode=raw.socket_mode if raw.socket_mode is not None
                    else DEFAULT_SOCKET_MODE,
                    max_clients=raw.max_clients, password=raw.password, tls=listener_tls))

    if listen is not None:
        count = len(raw_listeners) if raw_listeners else 1
        if count > 1:
            errors.add("--listen", f"the configuration defines {count} listeners; --listen can "
                                   "only replace a single listener, so edit listeners: in the "
                                   "file instead")
        else:
            try:
                host, port, unix_path = parse_listen_address(listen)
            except ValueError as exc:
                errors.add("--listen", str(exc))
            else:
                # Only the address changes: maxClients, password and socketMode stay.
                listeners = [dataclasses.replace(item, address=listen.strip(), host=host,
                                                 port=port, unix_path=unix_path)
                             for item in listeners]
    return listeners, caches, profiles


def _select_provider(
    secret_provider: str | None, environ: Mapping[str, str], errors: _Errors
) -> tuple[SecretProvider | None, bool]:
    """Return (provider or None, whether a configured provider failed to start)."""
    if secret_provider is not None and secret_provider.strip():
        uri, source = secret_provider, "--secret-provider"
    else:
        uri, source = environ.get(PROVIDER_ENV_VAR, ""), PROVIDER_ENV_VAR
    if not uri.strip():
        return None, False
    try:
        return make_secret_provider(uri, source=source), False
    except ConfigError as exc:
        for line in exc.errors:
            errors.add(source, line.split(": ", 1)[1] if line.startswith(source) else line)
        return None, True


def load_config(
    path: str | None,
    *,
    secret_provider: str | None = None,
    listen: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, check and resolve the configuration.

    ``path=None`` uses the built-in default: one listener on 127.0.0.1:6379 serving the
    built-in cache ``local_default``.  ``secret_provider`` (else the environment's
    ``CACHECLOAK_SECRET_PROVIDER``) resolves ``<namespace.key>`` references.  ``listen``
    replaces the address of the single listener.  ``environ`` defaults to os.environ.

    Raises ConfigError listing every problem found, one per line.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    errors = _Errors()
    provider, provider_failed = _select_provider(secret_provider, env, errors)

    tree: dict[Any, Any] = {}
    if path is not None:
        source = os.fspath(path)
        text = _substitute_env(_read_file(source), env, source)
        tree = _parse_yaml(text, source)
        tree = _resolve_secrets(tree, provider, provider_failed, errors)

    listeners, caches, profiles = _build(tree, listen, errors)
    admin = _build_admin(tree, errors)
    if len(errors):
        raise ConfigError(errors.lines())
    return Config(listeners=listeners, caches=caches, source=path, tls_profiles=profiles,
                  admin=admin)
