"""The kinesis rule action: one PutRecord per message, throttling retried with backoff and jitter."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import AwsError, InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.sinks.kinesis.exceptions import ProvisionedThroughputExceededException

ATTEMPTS = 4
FIRST_BACKOFF_S = 0.05


def _random_key(rng: random.Random) -> str:
    """A UUID-shaped random key, without uuid4's urandom call and UUID object per record."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@register("kinesis")
class KinesisAction:
    kind = "kinesis"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        if not isinstance(fields.get("streamName"), str) or not fields["streamName"]:
            raise InvalidRequestException("kinesis.streamName is required")
        templated = {"streamName": fields["streamName"]}
        if fields.get("partitionKey"):
            templated["partitionKey"] = fields["partitionKey"]
        self.fields = TemplatedFields.compile(templated)
        self.put_record = sinks.kinesis.put_record
        self.put_record_now = sinks.kinesis.put_record_now
        self.random = random.Random()

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["streamName"])

    def begin(self, ctx: EvalContext, output: Any, message: Message) -> asyncio.Future[None] | None:
        fields = self.fields.render(ctx)
        key = str(fields.get("partitionKey") or _random_key(self.random))
        try:
            return self.put_record_now(str(fields["streamName"]), output_bytes(output), key)
        except ProvisionedThroughputExceededException:
            return None  # run() retries it with backoff
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        fields = self.fields.render(ctx)
        # AWS leaves the key to the caller; without one a random key spreads records over the shards.
        key = str(fields.get("partitionKey") or _random_key(self.random))
        data = output_bytes(output)
        delay = FIRST_BACKOFF_S
        for attempt in range(ATTEMPTS):
            try:
                await self.put_record(str(fields["streamName"]), data, key)
                return
            except ProvisionedThroughputExceededException as exc:
                if attempt == ATTEMPTS - 1:
                    raise ActionError(f"{exc.message} (after {ATTEMPTS} attempts)") from exc
                await asyncio.sleep(delay * (0.5 + self.random.random()))
                delay *= 2
            except AwsError as exc:
                raise ActionError(f"{exc.code}: {exc.message}") from exc
