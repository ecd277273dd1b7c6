"""HTTP doors against slow and hostile clients: the body deadline and size limit, which connection the capped
listener (gateway/netguard.py) closes first, and aiohttp's malformed-request tracebacks made one line. The header
deadline is aiohttp's keep-alive timeout (see gateway/api/server.py)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway import limits
from gateway.errors import AwsError, RequestEntityTooLargeException

log = logging.getLogger("edgesim.api")

MAX_BODY_BYTES = 16 * 1024 * 1024
HEADER_TIMEOUT_S = limits.HTTP_HEADER_TIMEOUT_S  # from connect (or the previous response) to a whole request head
BODY_TIMEOUT_S = limits.HTTP_BODY_TIMEOUT_S  # to read a whole request body
BODY_TIMEOUT_KEY = web.AppKey("body_timeout_s", float)


class RequestTimeoutException(AwsError):
    code = "RequestTimeoutException"
    http_status = 408


class ClientGoneException(AwsError):
    code = "RequestTimeoutException"
    http_status = 400


async def read_body(request: web.Request) -> bytes:
    """The request body, read within the listener's body deadline and size limit (AWS errors otherwise)."""
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise _too_large()
    timeout = request.config_dict.get(BODY_TIMEOUT_KEY, BODY_TIMEOUT_S)
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except TimeoutError:
        raise RequestTimeoutException(f"The request body was not received within {timeout:g} seconds") from None
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestEntityTooLargeException(exc.text or "The request body is too large") from None
    except ConnectionError:  # the client went away mid-body: nobody will read the answer
        raise ClientGoneException("The connection was lost while the request body was read") from None


def _too_large() -> RequestEntityTooLargeException:
    return RequestEntityTooLargeException(f"The request body exceeds the maximum size of {MAX_BODY_BYTES} bytes")


def http_rank(protocol: asyncio.BaseProtocol) -> int | None:
    """Which HTTP connection closes first for a new one: only one waiting for its next request (aiohttp's own idea of
    idle), first one that has never sent a whole request head (how a slow client looks), then one that sent a single
    request; a connection that has served several is a real client's pool, kept (the newcomer is refused instead)."""
    waiter = getattr(protocol, "_waiter", None)
    if waiter is None or waiter.done():
        return None  # reading or serving a request
    served = int(getattr(protocol, "_request_count", 2))
    return served if served < 2 else None


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs every unparsable request at ERROR with a traceback; a client's garbage is worth one INFO line
    (and at most one a second)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self._last = -1.0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.seen += 1
        if not logging.getLogger(record.name).isEnabledFor(logging.INFO):
            return False
        now = record.created
        if now - self._last < 1.0:
            return False
        self._last = now
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "malformed HTTP request refused with 400: %s", (exc.message or type(exc).__name__,)
        record.exc_info = record.exc_text = None
        return True


MALFORMED_REQUESTS = _MalformedRequestFilter()


def quiet_malformed_requests() -> None:
    logger = logging.getLogger("aiohttp.server")
    if MALFORMED_REQUESTS not in logger.filters:
        logger.addFilter(MALFORMED_REQUESTS)
