"""Secret providers: resolve ``<namespace.key>`` references in the configuration file.

A configuration value written exactly as ``<vault.redis_password>`` is a reference to
the secret ``redis_password`` in namespace ``vault``.  The loader asks a provider for it
after parsing the YAML and before validation.  The provider is chosen by a URI given
with ``--secret-provider`` or the ``CACHECLOAK_SECRET_PROVIDER`` environment variable.

Schemes
-------
``secretfile:///abs/path/secrets.yaml``
    One YAML file mapping namespace -> key -> value::

        vault:
          redis_password: s3cret
          redis_encryption_key: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

    The file is read with YAML's base loader, so every value stays a string exactly as
    written (no number or boolean conversion).  Keys containing dots are looked up
    literally (``<vault.tls.cert>`` is key ``tls.cert`` under ``vault``).

``dir:///abs/path``
    One file per secret.  For ``<namespace.key>`` the provider reads
    ``<dir>/<namespace>/<key>`` and, if that does not exist, ``<dir>/<namespace>.<key>``.
    One trailing newline (``\\n`` or ``\\r\\n``) is stripped; the rest of the file is the
    value, which must be UTF-8.  This fits:

    * Kubernetes secret volumes: mount secret ``vault`` at ``<dir>/vault``; each data key
      becomes the file ``<dir>/vault/<key>``.
    * Docker/Compose secrets and Vault Agent templates, which write flat files such as
      ``/run/secrets/vault.redis_password``: use ``dir:///run/secrets``.

    Names containing ``..`` or ``/`` (or that are empty or start with ``.``) are
    rejected, so a reference can never reach outside the directory.

Adding a scheme: write a class with ``describe() -> str`` and
``get(namespace, key) -> str`` that raises :class:`SecretNotFoundError` /
:class:`SecretError`, and register a factory in :data:`PROVIDER_SCHEMES`.

Rules for this module: a secret value is returned to the caller and nowhere else.  It
must never appear in an exception message, a ``repr``, a log line or a YAML error
excerpt; messages name the reference, the provider URI and file paths only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote

import yaml

from proxy.config.schema import ConfigError

__all__ = [
    "PROVIDER_SCHEMES",
    "DirProvider",
    "SecretError",
    "SecretFileProvider",
    "SecretNotFoundError",
    "SecretProvider",
    "make_secret_provider",
]

PROVIDER_ENV_VAR = "CACHECLOAK_SECRET_PROVIDER"
_EXAMPLES = "for example dir:///run/secrets or secretfile:///etc/cachecloak/secrets.yaml"


class SecretError(Exception):
    """A secret could not be read.  The message is ``<what>; <fix>`` and holds no value."""


class SecretNotFoundError(SecretError):
    """The provider has no secret under that namespace and key."""


@runtime_checkable
class SecretProvider(Protocol):
    """Looks up secret values by namespace and key."""

    def describe(self) -> str:
        """The provider URI, for messages.  Never contains a secret."""
        ...

    def get(self, namespace: str, key: str) -> str:
        """Return the secret value, or raise SecretNotFoundError / SecretError."""
        ...


def _check_name(kind: str, name: str) -> None:
    if not name or ".." in name or "/" in name or "\\" in name or "\0" in name \
            or name.startswith("."):
        raise SecretError(
            f"has an invalid {kind} name (empty, starting with '.', or containing '..' or '/'); "
            "use letters, digits, '_', '-' and single dots"
        )


class SecretFileProvider:
    """``secretfile:///abs/path.yaml``: a YAML map namespace -> key -> value."""

    def __init__(self, uri: str, path: Path) -> None:
        self._uri = uri
        self._path = path
        self._data = self._load()

    def __repr__(self) -> str:
        return f"SecretFileProvider({self._uri!r})"

    def describe(self) -> str:
        return self._uri

    def _load(self) -> dict[Any, Any]:
        where = f"secret file {self._path}"
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretError(f"{where} does not exist; create it or fix the path") from None
        except IsADirectoryError:
            raise SecretError(
                f"{where} is a directory; use dir://{self._path} for one file per secret"
            ) from None
        except PermissionError:
            raise SecretError(
                f"{where} cannot be read (permission denied); make it readable by the "
                "user running cachecloak"
            ) from None
        except UnicodeDecodeError:
            raise SecretError(f"{where} is not UTF-8 text; save it as UTF-8") from None
        except OSError as exc:
            raise SecretError(f"{where} cannot be read ({exc.strerror}); check the path") from None
        try:
            # BaseLoader: every scalar stays the exact string written.
            data = yaml.load(text, Loader=yaml.BaseLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            # Deliberately no excerpt or problem text: it could show secret values.
            raise SecretError(f"{where} is not valid YAML{at}; fix the syntax there") from None
        except yaml.YAMLError:
            raise SecretError(f"{where} is not valid YAML; fix the syntax") from None
        if data is None or data == "":
            return {}
        if not isinstance(data, dict):
            raise SecretError(
                f"{where} must be a mapping of namespace -> key -> value; "
                "write e.g. 'vault:' followed by indented 'name: value' lines"
            )
        return data

    def get(self, namespace: str, key: str) -> str:
        section = self._data.get(namespace)
        if not isinstance(section, dict) or key not in section:
            raise SecretNotFoundError(
                f"not found by provider {self._uri}; add '{key}' under '{namespace}:' "
                f"in {self._path}"
            )
        value = section[key]
        if not isinstance(value, str):
            raise SecretError(
                f"in {self._path} is not a single value (found a list or mapping); "
                f"write '{key}: value' under '{namespace}:'"
            )
        return value


class DirProvider:
    """``dir:///abs/path``: one file per secret, ``<dir>/<ns>/<key>`` or ``<dir>/<ns>.<key>``."""

    def __init__(self, uri: str, path: Path) -> None:
        self._uri = uri
        self._path = path
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise SecretError(
                f"secret directory {path} {what}; create it or fix the path in {uri}"
            )

    def __repr__(self) -> str:
        return f"DirProvider({self._uri!r})"

    def describe(self) -> str:
        return self._uri

    def candidates(self, namespace: str, key: str) -> list[Path]:
        _check_name("namespace", namespace)
        _check_name("key", key)
        return [self._path / namespace / key, self._path / f"{namespace}.{key}"]

    def get(self, namespace: str, key: str) -> str:
        paths = self.candidates(namespace, key)
        for path in paths:
            try:
                raw = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                continue
            except IsADirectoryError:
                raise SecretError(
                    f"{path} is a directory, not a secret file; remove it or store the "
                    "secret as a file"
                ) from None
            except PermissionError:
                raise SecretError(
                    f"{path} cannot be read (permission denied); make it readable by the "
                    "user running cachecloak"
                ) from None
            except OSError as exc:
                raise SecretError(f"{path} cannot be read ({exc.strerror}); check it") from None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SecretError(f"{path} is not UTF-8 text; store the secret as text") from None
            if text.endswith("\r\n"):
                text = text[:-2]
            elif text.endswith("\n"):
                text = text[:-1]
            return text
        raise SecretNotFoundError(
            f"not found by provider {self._uri}; create the file {paths[0]} or {paths[1]}"
        )


ProviderFactory = Callable[[str, Path], SecretProvider]

#: URI scheme -> factory(uri, absolute path).  Add new file-based schemes here.
PROVIDER_SCHEMES: dict[str, ProviderFactory] = {
    "secretfile": SecretFileProvider,
    "dir": DirProvider,
}


def make_secret_provider(uri: str, *, source: str = "--secret-provider") -> SecretProvider:
    """Build the provider for ``uri``.

    ``source`` names where the URI came from (``--secret-provider`` or the environment
    variable) and is the path part of the ConfigError raised for a bad URI or an
    unusable provider file/directory.
    """
    scheme, sep, rest = uri.strip().partition("://")
    if not sep:
        raise ConfigError(
            f"{source}: must be a URI such as SCHEME:///absolute/path; use {_EXAMPLES}"
        )
    factory = PROVIDER_SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(f"{name}://" for name in PROVIDER_SCHEMES)
        raise ConfigError(f"{source}: unknown secret provider scheme; use one of: {known} "
                          f"({_EXAMPLES})")
    path_text = unquote(rest)
    if not path_text.startswith("/") or not os.path.isabs(path_text):
        raise ConfigError(
            f"{source}: {scheme}:// needs an absolute path (three slashes, as in "
            f"{scheme}:///etc/cachecloak/...); relative paths are not accepted"
        )
    try:
        return factory(uri.strip(), Path(path_text))
    except SecretError as exc:
        raise ConfigError(f"{source}: {exc}") from None
