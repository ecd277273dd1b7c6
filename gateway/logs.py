"""Logging set-up for the long-running commands: today's text lines, or one JSON object per line (`--log-format json`).

JSON lines carry "time", "level", "logger" and "message", every field a caller passed with `extra={...}` (the rules
engine passes traceId, rule, action, topic and clientId, so a rule failure can be tied to its errorAction's
cloudwatchTraceId), and "exception" when there is a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMAT_HELP = (
    "text: one human-readable line per record; json: one JSON object per line on stderr "
    "(time, level, logger, message, request fields such as traceId/rule/topic/clientId, exception)."
)

# Everything a LogRecord carries on its own; any other attribute came from `extra={...}`.
_STANDARD_ATTRS = frozenset(
    {
        *logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, Any] = {
            "time": f"{stamp:%Y-%m-%dT%H:%M:%S}.{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits: the slower, laxer encoder
            return json.dumps(out, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (a live view may redirect it), unless given a stream."""

    def __init__(self, stream: TextIO | None) -> None:
        self._fixed = stream
        super().__init__(stream if stream is not None else sys.stderr)

    @property
    def stream(self) -> TextIO:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        self._fixed = value if value is not sys.stderr else None


_installed: logging.Handler | None = None


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Set the root logger's level and install one handler (replacing the one a previous call installed).

    `fmt` is "text" or "json"; `stream` defaults to stderr.
    """
    global _installed  # noqa: PLW0603 - one handler per process, replaced on reconfiguration
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = _StderrHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    root.addHandler(handler)
    _installed = handler
