"""`Kinesis_20131202.SubscribeToShard` over HTTP/1.1: an `initial-response` event, then SubscribeToShardEvent frames
as boto3's event-stream reader expects them, until the subscription's five minutes are up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from aiohttp import web

from gateway import jsonutil
from gateway.api import eventstream
from gateway.api.guard import read_body
from gateway.api.wire import json_protocol_error
from gateway.clock import Clock
from gateway.errors import AwsError, InvalidRequestException
from gateway.sinks.kinesis.fanout import LIFETIME_MS, Subscriptions

log = logging.getLogger("edgesim.api")
TARGET = "Kinesis_20131202.SubscribeToShard"


async def handle(request: web.Request, subscriptions: Subscriptions, clock: Clock) -> web.StreamResponse:
    try:
        try:
            params = jsonutil.loads_body(await read_body(request) or b"{}")
        except ValueError as exc:
            raise InvalidRequestException(f"The request body is not valid JSON: {exc}") from exc
        if not isinstance(params, dict):
            raise InvalidRequestException("The request body must be a JSON object")
        if not isinstance(params.get("StartingPosition") or {}, dict):
            raise InvalidRequestException("StartingPosition must be an object")
        subscription = subscriptions.open(
            str(params.get("ConsumerARN") or ""), str(params.get("ShardId") or ""), params.get("StartingPosition") or {}
        )
    except AwsError as error:
        return json_protocol_error(error, "")
    response = web.StreamResponse(
        status=200, headers={"Content-Type": eventstream.CONTENT_TYPE, "x-amzn-RequestId": str(uuid.uuid4())}
    )
    try:
        await response.prepare(request)
        await response.write(eventstream.frame({":message-type": "event", ":event-type": "initial-response"}, b"{}"))

        def alive() -> bool:
            return request.transport is not None and not request.transport.is_closing()

        async for event in subscription.events(clock.wall_ms, asyncio.sleep, LIFETIME_MS, alive):
            await response.write(eventstream.event("SubscribeToShardEvent", event))
    except AwsError as error:  # the stream went away under the subscription
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(eventstream.exception(error.code, error.message))
    except (ConnectionError, RuntimeError):
        pass  # the consumer hung up
    finally:
        subscriptions.close(subscription)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response
