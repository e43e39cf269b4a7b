"""The Redis backend: pipelined upstream connections, and the topology that says where to.

`make_redis_backend(cfg)` picks the backend for a `type: redis` cache from
`cfg.redis.mode`: standalone (one address, or several with the primary found and
followed), sentinel, or cluster; `auto` decides from what the server says (the
configuration already turned auto with a sentinel master name into sentinel).
"""

from proxy.backends.redis.pool import RedisBackend
from proxy.backends.redis.topology import (
    AutoBackend,
    PrimaryLocator,
    SentinelLocator,
    cluster_fallback,
    load_cluster_backend,
)


def make_redis_backend(cfg):
    redis = cfg.redis
    if redis.mode == "sentinel":
        return RedisBackend(cfg, locator=SentinelLocator)
    if redis.mode == "cluster":
        cluster = load_cluster_backend()
        if cluster is None:
            return cluster_fallback(cfg, "the configuration says mode: cluster")
        return cluster(cfg)
    if len(redis.addresses) > 1:  # standalone or auto: a primary and its replicas
        return RedisBackend(cfg, locator=PrimaryLocator)
    if redis.mode == "standalone":
        return RedisBackend(cfg)
    return AutoBackend(cfg)


__all__ = ["AutoBackend", "RedisBackend", "make_redis_backend"]
