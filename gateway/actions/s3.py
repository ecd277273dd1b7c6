"""The s3 rule action: PutObject of the output under the rendered key; a constant key overwrites each time."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, output_bytes, register
from gateway.errors import AwsError, InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.sinks.s3 import CANNED_ACLS

if TYPE_CHECKING:
    from gateway.app import Gateway


@register("s3")
class S3Action:
    kind = "s3"

    def __init__(self, fields: dict[str, Any], gateway: Gateway) -> None:
        for required in ("bucketName", "key"):
            if not isinstance(fields.get(required), str) or not fields[required]:
                raise InvalidRequestException(f"s3.{required} is required")
        acl = fields.get("cannedAcl")
        if acl is not None and acl not in CANNED_ACLS:
            raise InvalidRequestException(f"s3.cannedAcl must be one of {', '.join(sorted(CANNED_ACLS))}; got {acl!r}")
        self.canned_acl = acl  # accepted for fidelity; local files have no ACLs
        self.fields = TemplatedFields.compile({"bucketName": fields["bucketName"], "key": fields["key"]})
        self.gateway = gateway

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["bucketName"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        fields = self.fields.render(ctx)
        if self.gateway.remote_sinks is not None:
            await self.gateway.remote_sinks.s3_put(str(fields["bucketName"]), str(fields["key"]), output_bytes(output))
            return
        try:
            # Off the event loop: the write is fsynced.
            await asyncio.to_thread(
                self.gateway.s3.put, str(fields["bucketName"]), str(fields["key"]), output_bytes(output)
            )
        except AwsError as exc:
            raise ActionError(f"{exc.code}: {exc.message}") from exc
        except OSError as exc:
            raise ActionError(f"could not write s3://{fields['bucketName']}/{fields['key']}: {exc}") from exc
