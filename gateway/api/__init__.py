"""The HTTP API: AWS-compatible endpoints for boto3 and curl, and the dashboard."""

__all__: list[str] = []
