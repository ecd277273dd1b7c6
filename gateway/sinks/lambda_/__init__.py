"""Lambda sink: functions are local Python handlers run in worker processes (see service.py and runner.py)."""

from gateway.sinks.lambda_.service import (
    InvokeResult,
    LambdaError,
    LambdaService,
    TooManyRequestsException,
    function_name,
)

__all__ = ["InvokeResult", "LambdaError", "LambdaService", "TooManyRequestsException", "function_name"]
