"""The one error type of the wire format: bytes that are not a valid MQTT packet, with the reason code to answer."""

from __future__ import annotations

# MQTT 5 reason codes a receiver answers a bad packet with (DISCONNECT, or CONNACK before the session exists).
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
PACKET_TOO_LARGE = 0x95


class MalformedPacket(ValueError):
    """A packet (or a run of bytes) that breaks the MQTT specification.

    `clause` names the normative statement broken ("MQTT-3.1.2-22") when there is one; `reason` is the MQTT 5 reason
    code a receiver sends before closing (0x81 malformed, 0x82 protocol error, 0x95 too large). An MQTT 3.1.1
    receiver simply closes the connection.
    """

    def __init__(self, message: str, clause: str | None = None, reason: int = MALFORMED_PACKET) -> None:
        super().__init__(f"{message} [{clause}]" if clause else message)
        self.clause = clause
        self.reason = reason


class ProtocolViolation(MalformedPacket):
    """Well-formed bytes used in a way the protocol forbids (a duplicate property, a second CONNECT, ...)."""

    def __init__(self, message: str, clause: str | None = None, reason: int = PROTOCOL_ERROR) -> None:
        super().__init__(message, clause, reason)


class PacketTooLarge(MalformedPacket):
    def __init__(self, message: str, clause: str | None = None) -> None:
        super().__init__(message, clause, PACKET_TOO_LARGE)
