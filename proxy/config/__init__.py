"""cachecloak configuration: load the YAML file into resolved, validated settings.

Public entry point: :func:`load_config`, which returns a :class:`Config` or raises a
:class:`ConfigError` whose text lists every problem, one ``<path>: <what>; <fix>`` line
each.  See :mod:`proxy.config.schema` for the file layout, :mod:`proxy.config.loader`
for the loading steps and :mod:`proxy.config.secrets` for ``<namespace.key>`` secret
references.

Nothing in this package may log or put into a message a secret value (passwords,
key material, anything a secret provider returns).
"""

from proxy.config.loader import load_config
from proxy.config.schema import (
    DEFAULT_LISTEN_ADDRESS,
    LOCAL_DEFAULT,
    CacheConfig,
    Config,
    ConfigError,
    ListenerConfig,
    LocalConfig,
    RedisConfig,
    TLSProfile,
)
from proxy.config.secrets import SecretProvider, make_secret_provider

__all__ = [
    "DEFAULT_LISTEN_ADDRESS",
    "LOCAL_DEFAULT",
    "CacheConfig",
    "Config",
    "ConfigError",
    "ListenerConfig",
    "LocalConfig",
    "RedisConfig",
    "SecretProvider",
    "TLSProfile",
    "load_config",
    "make_secret_provider",
]
