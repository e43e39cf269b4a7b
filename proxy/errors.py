"""Exception types, by audience.

* ConfigError (proxy.config): the operator's configuration is wrong; exit with its text.
* UpstreamError: Redis could not be reached or misbehaved; becomes an error reply.
* ClientProtocolError: a client sent bytes that are not valid RESP; the client gets an
  error reply and its connection is closed.

Messages are one line, say what happened and how to fix it, and never contain a key,
a value or a secret.
"""


class UpstreamError(Exception):
    """Redis could not serve a command; str() is safe to send to a client and to log."""


class ClientProtocolError(Exception):
    """Malformed client input; str() is the Redis-style error text without the leading '-'."""
