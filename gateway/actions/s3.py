"""The s3 rule action: PutObject of the output under the rendered key; a constant key overwrites each time."""

from __future__ import annotations

from typing import Any

from gateway.actions.base import TemplatedFields, failed_action_name, output_bytes, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext
from gateway.sinks.s3 import CANNED_ACLS


@register("s3")
class S3Action:
    kind = "s3"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        for required in ("bucketName", "key"):
            if not isinstance(fields.get(required), str) or not fields[required]:
                raise InvalidRequestException(f"s3.{required} is required")
        acl = fields.get("cannedAcl")
        if acl is not None and acl not in CANNED_ACLS:
            raise InvalidRequestException(f"s3.cannedAcl must be one of {', '.join(sorted(CANNED_ACLS))}; got {acl!r}")
        self.canned_acl = acl  # accepted for fidelity; local files have no ACLs
        self.fields = TemplatedFields.compile({"bucketName": fields["bucketName"], "key": fields["key"]})
        self.s3 = sinks.s3

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["bucketName"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        fields = self.fields.render(ctx)
        await self.s3.put_object(str(fields["bucketName"]), str(fields["key"]), output_bytes(output))
