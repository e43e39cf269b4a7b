"""cachecloak: a Redis-protocol sidecar that HMAC-hashes keys and AES-256-GCM-encrypts values."""

__version__ = "0.1.0"
