"""TLS client contexts for upstream connections, built from a configuration profile.

Certificates are always verified, host name included: there is no "insecure" switch.
TLS 1.2 is the floor whatever the profile says (the configuration refuses older
versions too).  Never logs file contents or key material.
"""

from __future__ import annotations

import ssl

from proxy.config import TLSProfile

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
            raise TLSSetupError(f"{where}: certFile/keyFile could not be loaded "
                                f"({_reason(exc)}); they must be a PEM certificate and its "
                                "unencrypted private key") from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return getattr(exc, "strerror", None) or type(exc).__name__


def describe_handshake_error(exc: BaseException, profile: TLSProfile) -> str:
    """One line for a failed handshake: what happened and what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or "certificate verification failed"
        if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
            return (f"TLS handshake failed: {detail}; set serverName in the tls profile to "
                    "a name the certificate holds, or use that name in addresses")
        return (f"TLS handshake failed: {detail}; check caFile in the tls profile "
                f'"{profile.name}" (it must hold the CA that signed the server certificate)')
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "VERSION" in reason.upper() or "PROTOCOL" in reason.upper():
            return (f"TLS handshake failed: {reason}; the server and minVersion/maxVersion "
                    f'of tls profile "{profile.name}" share no TLS version')
        return (f"TLS handshake failed: {reason}; check the server's TLS settings and tls "
                f'profile "{profile.name}" (client certificate for mutual TLS?)')
    return f"TLS handshake failed: {type(exc).__name__}"
