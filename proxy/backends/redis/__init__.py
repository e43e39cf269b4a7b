"""The Redis backend: pipelined upstream connections, and the topology that says where to.

`make_redis_backend(cfg)` picks the backend for a `type: redis` cache from
`cfg.redis.mode`: standalone (one address, or several with the primary found and
followed), sentinel, or cluster; `auto` decides from what the server says.
"""

from proxy.backends.redis.pool import RedisBackend


def make_redis_backend(cfg):
    return RedisBackend(cfg)


__all__ = ["RedisBackend", "make_redis_backend"]
