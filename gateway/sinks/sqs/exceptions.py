"""SQS errors (reference §0, §8): `code` is the JSON `__type` shape, `query_code` goes in `x-amzn-query-error`."""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import AwsError


class SqsError(AwsError):
    """An SQS error; the shell sends `query_code;Sender` (or `;Receiver`) in `x-amzn-query-error`."""

    code: ClassVar[str] = "InternalFailure"
    http_status: ClassVar[int] = 400
    query_code: ClassVar[str] = "InternalFailure"
    sender_fault: ClassVar[bool] = True


class QueueDoesNotExist(SqsError):
    code = "QueueDoesNotExist"
    query_code = "AWS.SimpleQueueService.NonExistentQueue"


class QueueNameExists(SqsError):
    code = "QueueNameExists"
    query_code = "QueueAlreadyExists"


class QueueDeletedRecently(SqsError):
    code = "QueueDeletedRecently"
    query_code = "AWS.SimpleQueueService.QueueDeletedRecently"


class InvalidParameterValue(SqsError):
    code = "InvalidParameterValue"
    query_code = "InvalidParameterValue"


class MissingParameter(SqsError):
    code = "MissingParameter"
    query_code = "MissingParameter"


class InvalidAttributeName(SqsError):
    code = "InvalidAttributeName"
    query_code = "InvalidAttributeName"


class InvalidAttributeValue(SqsError):
    code = "InvalidAttributeValue"
    query_code = "InvalidAttributeValue"


class ReceiptHandleIsInvalid(SqsError):
    code = "ReceiptHandleIsInvalid"
    query_code = "ReceiptHandleIsInvalid"


class MessageNotInflight(SqsError):
    code = "MessageNotInflight"
    query_code = "AWS.SimpleQueueService.MessageNotInflight"


class BatchEntryIdsNotDistinct(SqsError):
    code = "BatchEntryIdsNotDistinct"
    query_code = "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"


class EmptyBatchRequest(SqsError):
    code = "EmptyBatchRequest"
    query_code = "AWS.SimpleQueueService.EmptyBatchRequest"


class TooManyEntriesInBatchRequest(SqsError):
    code = "TooManyEntriesInBatchRequest"
    query_code = "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"


class InvalidBatchEntryId(SqsError):
    code = "InvalidBatchEntryId"
    query_code = "AWS.SimpleQueueService.InvalidBatchEntryId"


class BatchRequestTooLong(SqsError):
    code = "BatchRequestTooLong"
    query_code = "AWS.SimpleQueueService.BatchRequestTooLong"


class PurgeQueueInProgress(SqsError):
    code = "PurgeQueueInProgress"
    query_code = "AWS.SimpleQueueService.PurgeQueueInProgress"
    http_status = 403


class InvalidMessageContents(SqsError):
    code = "InvalidMessageContents"
    query_code = "InvalidMessageContents"


class OverLimit(SqsError):
    code = "OverLimit"
    query_code = "OverLimit"
    http_status = 403


class ResourceNotFoundException(SqsError):
    code = "ResourceNotFoundException"
    query_code = "ResourceNotFoundException"
    http_status = 404


class UnsupportedOperation(SqsError):
    code = "UnsupportedOperation"
    query_code = "AWS.SimpleQueueService.UnsupportedOperation"
