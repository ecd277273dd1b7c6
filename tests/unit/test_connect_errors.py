"""A failed connect is named by its cause, read from the exception types under the MQTT client's own error."""

from __future__ import annotations

import socket
import ssl

from devices.connect_errors import connect_cause
from devices.view import connect_trouble
from mqttwire.client import ConnectError, MqttError


def _wrapped(cause: BaseException) -> MqttError:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise MqttError("d1: cannot connect to 127.0.0.1:1") from exc
    except MqttError as outer:
        return outer


def test_causes_from_exception_types() -> None:
    assert connect_cause(_wrapped(ConnectionRefusedError(111, "refused"))) == "connection refused"
    assert connect_cause(_wrapped(ssl.SSLCertVerificationError(1, "verify failed"))) == "TLS verify failed"
    assert connect_cause(_wrapped(ssl.SSLError(1, "tlsv1 alert unknown ca"))) == "TLS handshake failed"
    assert connect_cause(_wrapped(socket.gaierror(-2, "Name or service not known"))) == "host not found"
    assert connect_cause(ConnectError(5)) == "not authorized"
    assert connect_cause(MqttError("d1: connection closed before CONNACK (eof)")) == "closed before CONNACK"


def test_trouble_line_only_when_devices_could_not_connect() -> None:
    base = {"devices": 10, "connects": 0, "connect_errors": {"connection refused": 30}}
    line = connect_trouble(base)
    assert line is not None and "connection refused 30" in line and "gateway up" in line
    assert connect_trouble({**base, "connects": 10}) is None
    assert connect_trouble({**base, "connect_errors": {}}) is None
