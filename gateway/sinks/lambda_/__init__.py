"""Lambda sink: functions are local Python handlers run in worker processes (see service.py and runner.py)."""

from gateway.sinks.lambda_.exceptions import LambdaError, TooManyRequestsException
from gateway.sinks.lambda_.service import InvokeResult, LambdaService, function_name

__all__ = ["InvokeResult", "LambdaError", "LambdaService", "TooManyRequestsException", "function_name"]
