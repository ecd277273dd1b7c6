"""gateway.logs: text lines as before, or one JSON object per line carrying the caller's extra fields."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import logs
from gateway.logs import configure_logging

LOGGER = "edgesim.test_logs"


@pytest.fixture(autouse=True)
def _restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(logs, "_installed", None)
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_extra_fields_and_exceptions() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger(LOGGER)
    log.debug("not at info level %s", "x")
    log.warning(
        "rule %s: %s failed: %s",
        "r1",
        "kinesis",
        "no such stream",
        extra={"traceId": "t-1", "rule": "r1", "action": "kinesis", "topic": "a/b", "clientId": None, "odd": Path("p")},
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("it broke")

    first, second = _lines(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert first == {
        "time": first["time"],
        "level": "warning",
        "logger": LOGGER,
        "message": "rule r1: kinesis failed: no such stream",
        "traceId": "t-1",
        "rule": "r1",
        "action": "kinesis",
        "topic": "a/b",
        "clientId": None,
        "odd": "p",
    }
    assert (second["level"], second["message"]) == ("error", "it broke")
    assert "Traceback" in str(second["exception"]) and "RuntimeError: boom" in str(second["exception"])
    assert "exception" not in first


def test_json_goes_to_the_current_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", "json")
    logging.getLogger(LOGGER).warning("to stderr", extra={"thing": "t1"})
    # Another test in this process may have left a handler of its own on the root logger: read the JSON lines.
    (line,) = [text for text in capsys.readouterr().err.splitlines() if text.startswith("{")]
    assert json.loads(line)["thing"] == "t1"


def test_text_format_keeps_the_old_layout() -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    logging.getLogger(LOGGER).warning("hello %d", 42, extra={"traceId": "hidden"})
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING {LOGGER}: hello 42\n", out.getvalue()), (
        out.getvalue()
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("info", "xml")


def test_reconfiguring_replaces_the_handler() -> None:
    root = logging.getLogger()
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "text", stream=first)
    count = len(root.handlers)
    configure_logging("debug", "json", stream=second)
    assert len(root.handlers) == count
    assert root.level == logging.DEBUG
    ours = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and h.stream in (first, second)]
    assert len(ours) == 1 and ours[0].stream is second
    logging.getLogger(LOGGER).debug("once")
    assert first.getvalue() == ""
    assert [line["message"] for line in _lines(second)] == ["once"]
