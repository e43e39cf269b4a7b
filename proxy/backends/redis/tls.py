"""TLS client contexts for upstream connections, built from a configuration profile.

Certificates are always verified, host name included: there is no "insecure" switch.
TLS 1.2 is the floor whatever the profile says (the configuration refuses older
versions too).  Never logs file contents or key material.
"""

from __future__ import annotations

import ssl

from proxy.config import TLSProfile
from proxy.config.schema import SYSTEM_TLS

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSSetupError(Exception):
    """A profile's files could not be loaded; str() names the file and the fix."""


def client_context(profile: TLSProfile) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = _VERSIONS[profile.min_version]
    if profile.max_version is not None:
        context.maximum_version = _VERSIONS[profile.max_version]
    where = f'tls profile "{profile.name}"'
    if profile.ca_file is not None:
        try:
            context.load_verify_locations(cafile=profile.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSSetupError(f"{where}: caFile {profile.ca_file} could not be loaded "
                                f"({_reason(exc)}); it must hold PEM CA certificates") from None
    if profile.cert_file is not None:
        try:
            context.load_cert_chain(profile.cert_file, profile.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSSetupError(f"{where}: certFile {profile.cert_file} / keyFile "
                                f"{profile.key_file} could not be loaded ({_reason(exc)}); "
                                "they must be a PEM certificate and its unencrypted private "
                                "key") from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return getattr(exc, "strerror", None) or type(exc).__name__


def describe_handshake_error(exc: BaseException, profile: TLSProfile) -> str:
    """One line for a failed handshake: what happened and what to check."""
    where = (f'tls profile "{profile.name}"' if profile.name != SYSTEM_TLS.name
             else "tls profile (add one under tls: and name it in redis.tls)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or "certificate verification failed").rstrip(".")
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return (f"TLS handshake failed: {detail}; set serverName in the {where} to a "
                    "name the certificate holds, or use that name in addresses")
        if profile.ca_file is None:
            return (f"TLS handshake failed: {detail}; the system trust store does not hold "
                    "the CA that signed the server certificate: set caFile in a tls profile")
        return (f"TLS handshake failed: {detail}; check caFile {profile.ca_file} in the "
                f"{where} (it must hold the CA that signed the server certificate)")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        upper = reason.upper()
        if "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER" in upper:
            return (f"TLS handshake failed: {reason}; the server did not answer with TLS (is "
                    "this Redis's tls-port? for a plain-TCP port set disableTLS: true)")
        if "CERTIFICATE_REQUIRED" in upper:
            return (f"TLS handshake failed: {reason}; the server requires a client "
                    f"certificate (mutual TLS): set certFile and keyFile in the {where}")
        if "HANDSHAKE_FAILURE" in upper and profile.cert_file is None:
            return (f"TLS handshake failed: {reason}; if the server requires a client "
                    f"certificate (mutual TLS), set certFile and keyFile in the {where}")
        if any(alert in upper for alert in ("UNKNOWN_CA", "BAD_CERTIFICATE", "DECRYPT_ERROR",
                                            "CERTIFICATE_UNKNOWN", "UNSUPPORTED_CERTIFICATE")):
            return (f"TLS handshake failed: {reason}; the server did not accept the client "
                    f"certificate: check certFile and keyFile in the {where} (signed by a CA "
                    "the server trusts, tls-ca-cert-file)")
        if "VERSION" in upper or "PROTOCOL" in upper:
            return (f"TLS handshake failed: {reason}; the server and minVersion/maxVersion "
                    f"of the {where} share no TLS version")
        return (f"TLS handshake failed: {reason}; check the server's TLS settings and the "
                f"{where} (client certificate for mutual TLS?)")
    return f"TLS handshake failed: {type(exc).__name__}"
