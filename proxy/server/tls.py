"""TLS on client listeners: the server-side SSLContext and the handshake that counts
and logs its failures.

A listener with ``tls: <profile>`` hands every accepted connection to
:class:`TLSAcceptor`.  Why not ``loop.create_server(ssl=...)``: with it a failed
handshake never reaches the application (the protocol object is dropped unseen, and
uvloop and asyncio only mention it at debug level), so nothing could count it or say
which peer it was.  ``loop.start_tls`` cannot be used either: uvloop starts reading an
accepted socket right after ``connection_made`` whatever the protocol asked, so a
ClientHello could be read by the plain protocol before the TLS layer is in place.
Instead the accepted socket is duplicated and the plain transport dropped *inside*
``connection_made`` (before anything is read), and the duplicate goes to
``loop.connect_accepted_socket(ssl=...)``, which performs the handshake and raises
when it fails.  The kernel keeps the client's bytes in between.

Client certificates (``clientAuth``) are verified against the profile's ``caFile`` only,
never against the system trust store: a certificate any public CA signed must not open
the cache.  TLS 1.2 is the floor whatever the profile says.

This module must never log or put in a message a certificate's or key's content, nor
anything the client sent; log lines name the listener, the peer address and the
OpenSSL reason only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable

from proxy.config.schema import ListenerConfig, TLSProfile

log = logging.getLogger("cachecloak")

__all__ = ["HANDSHAKE_TIMEOUT", "ListenerTLSError", "TLSAcceptor", "server_context"]

# A handshake on loopback or a pod network takes milliseconds; a peer that has not
# finished after this long holds a file descriptor for nothing.  (asyncio's default is
# 60 s, nginx's ssl_handshake_timeout 60 s; Redis has none and relies on its client
# timeout.)  10 s leaves room for a slow client on a busy node.
HANDSHAKE_TIMEOUT = 10.0

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                 "require": ssl.CERT_REQUIRED}


class ListenerTLSError(Exception):
    """A listener's TLS profile files could not be loaded; str() names the file and fix."""


def server_context(profile: TLSProfile) -> ssl.SSLContext:
    """The SSLContext a listener serves with, from its (already validated) profile.

    Raises ListenerTLSError when a file cannot be loaded (not PEM, key not matching).
    """
    where = f'tls profile "{profile.name}"'
    if profile.cert_file is None or profile.key_file is None:  # the loader refuses this
        raise ListenerTLSError(f"{where}: certFile and keyFile are required for a listener")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[profile.min_version]
    if profile.max_version is not None:
        context.maximum_version = _VERSIONS[profile.max_version]
    # As ssl.create_default_context(CLIENT_AUTH) does, without its loading of the
    # system CAs (which would trust every publicly signed client certificate).
    # Client-initiated renegotiation is a cheap way to make a server work hard.
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | ssl.OP_SINGLE_ECDH_USE | ssl.OP_NO_RENEGOTIATION)
    try:
        context.load_cert_chain(profile.cert_file, profile.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ListenerTLSError(
            f"{where}: certFile {profile.cert_file} / keyFile {profile.key_file} could not "
            f"be loaded ({_reason(exc)}); they must be a PEM certificate (chain) and its "
            "unencrypted private key") from None
    if profile.client_auth != "none":
        if profile.ca_file is None:  # the loader refuses this
            raise ListenerTLSError(f"{where}: caFile is required with clientAuth: "
                                   f"{profile.client_auth}")
        try:
            context.load_verify_locations(cafile=profile.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ListenerTLSError(
                f"{where}: caFile {profile.ca_file} could not be loaded ({_reason(exc)}); "
                "it must hold the PEM CA certificates that sign client certificates") from None
        context.verify_mode = _VERIFY_MODES[profile.client_auth]
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return getattr(exc, "strerror", None) or type(exc).__name__


def describe_failure(exc: BaseException, profile: TLSProfile) -> str | None:
    """Why a client's handshake failed, with what to check; None when the peer just went
    away before finishing (a TCP port probe does that: not worth a warning)."""
    where = f'tls profile "{profile.name}"'
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or "certificate verify failed").rstrip(".")
        return (f"the client certificate was not accepted ({detail}); it must be a client "
                f"certificate signed by a CA in caFile of the {where}")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        upper = reason.upper()
        if "UNEXPECTED_EOF" in upper or isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return None
        if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in upper:
            return (f"{reason}: the client sent no certificate and the {where} has "
                    "clientAuth: require; give the client its certificate and key")
        if any(word in upper for word in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST",
                                          "RECORD_LAYER", "PACKET_LENGTH_TOO_LONG",
                                          "UNKNOWN_PROTOCOL", "HTTPS_PROXY_REQUEST")):
            return (f"{reason}: the client did not speak TLS; connect with TLS (redis-cli "
                    "--tls, redis-py ssl=True) or use a listener without tls:")
        if "UNSUPPORTED_PROTOCOL" in upper or "VERSION" in upper:
            allowed = profile.min_version + (f" to {profile.max_version}"
                                             if profile.max_version else " or newer")
            return (f"{reason}: the client offered no TLS version the {where} allows "
                    f"(TLS {allowed}); upgrade the client's TLS")
        if "ALERT" in upper:  # the client refused the handshake, usually our certificate
            return (f"{reason}: the client aborted the handshake, most likely rejecting "
                    f"this listener's certificate; give the client the CA that signed "
                    f"certFile of the {where}, and use a name the certificate holds")
        return f"{reason}; check the client's TLS settings against the {where}"
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        return (f"no complete handshake within {HANDSHAKE_TIMEOUT:g}s; the client is too "
                "slow or does not speak TLS")
    if isinstance(exc, ConnectionError | EOFError):
        return None
    return f"{type(exc).__name__}; check the client's TLS settings against the {where}"


class TLSAcceptor:
    """Puts TLS in front of one listener's connections, counting failed handshakes in
    ``server.tls_handshake_failures[listener.address]``."""

    def __init__(self, server, listener: ListenerConfig, context: ssl.SSLContext,
                 app_factory: Callable[[], asyncio.Protocol]) -> None:
        assert listener.tls is not None
        self.server = server
        self.listener = listener
        self.profile: TLSProfile = listener.tls
        self.context = context
        self.app_factory = app_factory
        # Handshakes in progress; they are not clients yet, so maxClients does not count
        # them: this set does, with the same bound.
        self.pending: set[asyncio.Task] = set()

    def protocol_factory(self) -> asyncio.Protocol:
        """For ``loop.create_server``/``create_unix_server`` in place of the client's."""
        return _Handover(self)

    def _count(self) -> None:
        failures = self.server.tls_handshake_failures
        address = self.listener.address
        failures[address] = failures.get(address, 0) + 1

    def accept(self, sock: socket.socket, peer: str) -> None:
        if len(self.pending) >= self.listener.max_clients:
            self._count()
            log.warning("listener %s: refused a TLS connection from %s: %d handshakes are "
                        "already in progress (maxClients); raise maxClients if this is "
                        "normal load", self.listener.address, peer, len(self.pending))
            sock.close()
            return
        task = asyncio.get_running_loop().create_task(self._handshake(sock, peer))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _handshake(self, sock: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            # On success the SSL layer calls the client protocol's connection_made.
            await loop.connect_accepted_socket(self.app_factory, sock, ssl=self.context,
                                               ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except asyncio.CancelledError:  # the proxy is stopping
            sock.close()
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
            sock.close()
            why = describe_failure(exc, self.profile)
            if why is None:
                log.debug("listener %s: %s closed the connection during the TLS handshake",
                          self.listener.address, peer)
                return
            self._count()
            log.warning("listener %s: TLS handshake with %s failed: %s",
                        self.listener.address, peer, why)


class _Handover(asyncio.Protocol):
    """Lives for one ``connection_made``: takes the accepted socket away from the plain
    transport before the event loop reads from it, and gives it to the TLSAcceptor."""

    def __init__(self, acceptor: TLSAcceptor) -> None:
        self.acceptor = acceptor

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self.acceptor.listener
        raw = transport.get_extra_info("socket")
        try:
            fd = os.dup(raw.fileno())
        except OSError as exc:  # out of file descriptors: drop this connection only
            log.warning("listener %s: cannot accept a TLS connection (%s)", listener.address,
                        exc.strerror or type(exc).__name__)
            transport.abort()
            return
        if listener.unix_path is not None:
            peer = f"{listener.unix_path}:0"  # as Redis names Unix socket clients
        else:
            peer = _address(transport.get_extra_info("peername"))
        # Closing our descriptor leaves the connection open on the duplicate; aborting
        # here, inside connection_made, means the loop never starts reading it.
        transport.abort()
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        self.acceptor.accept(sock, peer)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - never reading
        pass


def _address(name) -> str:
    if isinstance(name, tuple) and len(name) >= 2:
        host = str(name[0])
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"
    return "?"
