"""Why a device could not connect, in a few words a user can act on (counted per cause in the fleet's figures)."""

from __future__ import annotations

import socket
import ssl

CAUSE_PREFIX = "connect_cause."
HINTS = {
    "connection refused": "nothing listens there: is the gateway up, and is --target right?",
    "TLS verify failed": "the broker's certificate is not signed by --ca (or names another host)",
    "TLS handshake failed": "the broker refused the client certificate, or it is not a TLS port",
    "not authorized": "the certificate or client id is not allowed to connect (policy, thing name, certificate state)",
    "closed before CONNACK": "the broker dropped the connection: often a policy denying iot:Connect",
    "timed out": "no answer in time: a firewall, a wrong port, or a very busy broker",
    "host not found": "the --target host name does not resolve",
}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def connect_cause(exc: BaseException) -> str:
    """A short cause for a failed connect, from the exception types underneath the client's own error."""
    chain = _chain(exc)
    for err in chain:
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, ssl.SSLCertVerificationError):
            return "TLS verify failed"
        if isinstance(err, socket.gaierror):
            return "host not found"
        if isinstance(err, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(err, TimeoutError):
            return "timed out"
        rc = getattr(err, "rc", None)
        if isinstance(rc, int) and rc in (4, 5, 0x86, 0x87):  # MQTT 3.1.1 rc 4/5, MQTT 5 reason 134/135
            return "not authorized"
    text = " ".join(str(err) for err in chain).lower()
    if "not author" in text or "not allowed" in text:
        return "not authorized"
    if "timed out" in text:
        return "timed out"
    if "handshake" in text:
        return "TLS handshake failed"
    if "before connack" in text or "closed" in text:
        return "closed before CONNACK"
    return "other"


def causes(counts: dict[str, int]) -> dict[str, int]:
    """The per-cause counts out of a fleet's counters."""
    return {k.removeprefix(CAUSE_PREFIX): v for k, v in counts.items() if k.startswith(CAUSE_PREFIX)}
