"""Sinks: the AWS services rule actions deliver to (Kinesis, SQS, Lambda, Firehose)."""

__all__: list[str] = []
