"""The Redis backend: pipelined upstream connections to a standalone Redis."""

from proxy.backends.redis.pool import RedisBackend

__all__ = ["RedisBackend"]
