"""The dynamoDBv2 rule action: PutItem of the output object, one attribute per top-level key.

Only the aws sink backend runs it (any DynamoDB-compatible endpoint); with the local backend the rule is refused
at create time (actions.base.BACKEND_ONLY).
"""

from __future__ import annotations

from typing import Any

from gateway.actions.base import ActionError, TemplatedFields, failed_action_name, register
from gateway.actions.sinks import ActionSinks
from gateway.errors import InvalidRequestException
from gateway.messages import Message
from gateway.rules import EvalContext


@register("dynamoDBv2")
class DynamoDBv2Action:
    kind = "dynamoDBv2"

    def __init__(self, fields: dict[str, Any], sinks: ActionSinks) -> None:
        put = fields.get("putItem")
        if not isinstance(put, dict) or not isinstance(put.get("tableName"), str) or not put["tableName"]:
            raise InvalidRequestException("dynamoDBv2.putItem.tableName is required")
        self.fields = TemplatedFields.compile({"tableName": put["tableName"]})
        self.dynamodb = sinks.dynamodb

    @property
    def failed_action_name(self) -> str:
        return failed_action_name(self.kind)

    def resource(self, ctx: EvalContext) -> str:
        return str(self.fields.render(ctx)["tableName"])

    async def run(self, ctx: EvalContext, output: Any, message: Message) -> None:
        dynamodb = self.dynamodb
        if dynamodb is None:  # refused at create time; a backend change under a stored rule lands here
            raise ActionError("the dynamoDBv2 action needs --sink-backend aws")
        if not isinstance(output, dict) or not output:
            raise ActionError("dynamoDBv2 writes one attribute per key: the SQL output must be a non-empty JSON object")
        await dynamodb.put_item(self.resource(ctx), output)
