"""Job input checks and job-document placeholders (pure: the presigner and the S3 reader are passed in)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from gateway.jobs.exceptions import InvalidRequestException, LimitExceededException

MAX_DOCUMENT_BYTES: Final = 32 * 1024
JOB_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
PLACEHOLDER: Final = re.compile(r"\$\{aws:iot:s3-presigned-url:(https?://[^}]+)\}")
DEFAULT_EXPIRY_S: Final = 3600

# Presigner(bucket, key, expires_in_seconds) -> URL on edgesim's own S3 API.
Presigner = Callable[[str, str, int], str]


def check_id(value: Any, what: str = "jobId") -> str:
    if not isinstance(value, str) or JOB_ID.fullmatch(value) is None:
        raise InvalidRequestException(f"{what} must match [a-zA-Z0-9_-]+ and be 1 to 64 characters long")
    return value


def check_document(document: str) -> str:
    """A job document: JSON, at most 32 KB (LimitExceededException past it, as AWS answers)."""
    if len(document.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise LimitExceededException(f"The job document exceeds the maximum size of {MAX_DOCUMENT_BYTES} bytes")
    try:
        parsed = json.loads(document)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestException(f"The job document is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequestException("The job document must be a JSON object")
    return document


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, key) of an S3 URL in path style (`https://s3[.region].amazonaws.com/bucket/key`) or virtual-hosted
    style (`https://bucket.s3[.region].amazonaws.com/key`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = unquote(parts.path.lstrip("/"))
    match = re.fullmatch(r"(?:(?P<bucket>.+)\.)?s3[.-](?:[a-z0-9-]+\.)?amazonaws\.com(?:\.cn)?", host)
    if match is None:
        raise InvalidRequestException(f"{url} is not an S3 URL")
    bucket = match.group("bucket")
    if bucket is None:
        bucket, _, path = path.partition("/")
    if not bucket or not path:
        raise InvalidRequestException(f"{url} does not name an S3 bucket and key")
    return bucket, path


def resolve_placeholders(document: str, presign: Presigner, expires_s: int) -> str:
    """The document a device receives: each `${aws:iot:s3-presigned-url:<S3 URL>}` replaced by a URL that is valid for
    `expires_s` seconds."""

    def one(match: re.Match[str]) -> str:
        try:
            bucket, key = s3_location(match.group(1))
        except InvalidRequestException:
            return match.group(0)
        url = presign(bucket, key, expires_s)
        # The placeholder sits inside a JSON string: keep the document valid JSON.
        return json.dumps(url)[1:-1]

    return PLACEHOLDER.sub(one, document)


def presigned_expiry(config: Mapping[str, Any] | None) -> int:
    return int((config or {}).get("expiresInSec") or DEFAULT_EXPIRY_S)


def _number(config: Mapping[str, Any], key: str, low: float, high: float, where: str) -> None:
    value = config.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequestException(f"{where}.{key} must be between {low:g} and {high:g}")


def check_configs(params: Mapping[str, Any]) -> None:
    """Ranges of CreateJob's and UpdateJob's configuration members, as the API reference gives them."""
    rollout = params.get("jobExecutionsRolloutConfig") or {}
    _number(rollout, "maximumPerMinute", 1, 1000, "jobExecutionsRolloutConfig")
    exponential = rollout.get("exponentialRate")
    if exponential is not None:
        for key in ("baseRatePerMinute", "incrementFactor", "rateIncreaseCriteria"):
            if key not in exponential:
                raise InvalidRequestException(f"jobExecutionsRolloutConfig.exponentialRate.{key} is required")
        _number(exponential, "baseRatePerMinute", 1, 1000, "exponentialRate")
        _number(exponential, "incrementFactor", 1.1, 5, "exponentialRate")
        criteria = exponential["rateIncreaseCriteria"] or {}
        if len(criteria) != 1:
            raise InvalidRequestException(
                "rateIncreaseCriteria needs exactly one of numberOfNotifiedThings and numberOfSucceededThings"
            )
        for key in criteria:
            _number(criteria, key, 1, 2**31 - 1, "rateIncreaseCriteria")
    for criterion in (params.get("abortConfig") or {}).get("criteriaList") or []:
        if criterion.get("action") != "CANCEL":
            raise InvalidRequestException("abortConfig criteria support the action CANCEL only")
        if criterion.get("failureType") not in ("FAILED", "REJECTED", "TIMED_OUT", "ALL"):
            raise InvalidRequestException("abortConfig failureType must be FAILED, REJECTED, TIMED_OUT or ALL")
        _number(criterion, "thresholdPercentage", 0, 100, "abortConfig")
        _number(criterion, "minNumberOfExecutedThings", 1, 2**31 - 1, "abortConfig")
    _number(params.get("timeoutConfig") or {}, "inProgressTimeoutInMinutes", 1, 10080, "timeoutConfig")
    for criterion in (params.get("jobExecutionsRetryConfig") or {}).get("criteriaList") or []:
        if criterion.get("failureType") not in ("FAILED", "TIMED_OUT", "ALL"):
            raise InvalidRequestException("jobExecutionsRetryConfig failureType must be FAILED, TIMED_OUT or ALL")
        _number(criterion, "numberOfRetries", 0, 10, "jobExecutionsRetryConfig")
    _number(params.get("presignedUrlConfig") or {}, "expiresInSec", 60, 3600, "presignedUrlConfig")
    scheduling = params.get("schedulingConfig") or {}
    if scheduling.get("endBehavior") not in (None, "STOP_ROLLOUT", "CANCEL", "FORCE_CANCEL"):
        raise InvalidRequestException("schedulingConfig.endBehavior must be STOP_ROLLOUT, CANCEL or FORCE_CANCEL")


def parse_schedule_time(value: Any) -> int | None:
    """schedulingConfig times are ISO 8601 `YYYY-MM-DDTHH:MM` (UTC); wall milliseconds, or None when absent."""
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidRequestException(f"schedulingConfig time {value!r} is not ISO 8601 (YYYY-MM-DDTHH:MM)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def execution_number(value: Any) -> int | None:
    """A request's executionNumber: a whole number SQLite can hold (a bigger one is the caller's mistake)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63):
        raise InvalidRequestException("executionNumber must be a number from 0 to 9223372036854775807")
    return value
