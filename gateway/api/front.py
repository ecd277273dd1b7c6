"""Requests that are not REST-JSON or JSON-target calls, claimed before the dashboard's and the API's routes:
S3 (REST-XML, path-style or virtual-hosted), STS and SQS over the query protocol (form-encoded `Action=`).

Told apart as botocore sends them: the service in the SigV4 credential scope, the Host a virtual-hosted S3 request
names its bucket in, and the `Action` of a form-encoded request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.api import greengrass, jobs_api, kinesis_fanout, presign, sqs_query, sts
from gateway.api import s3 as s3_api
from gateway.api.auth import TOKEN_CHECKED
from gateway.api.wire import json_protocol_error, signing_service
from gateway.errors import AwsError
from gateway.sinks.kinesis.fanout import Subscriptions

if TYPE_CHECKING:
    from gateway.api.parts import FrontParts

FORM = "application/x-www-form-urlencoded"


class AwsFront:
    def __init__(self, gateway: FrontParts, verify: s3_api.SignatureCheck | None = None) -> None:
        self.gateway = gateway
        self.sts = sts.StsService(gateway.config.account)
        self.s3 = s3_api.S3Api(gateway.s3, gateway.config.region)
        self._verify = verify
        self.subscriptions = Subscriptions(gateway.kinesis)

    def _checked(self, request: web.Request, body: bytes) -> None:
        if self._verify is not None and self.gateway.config.sigv4_credentials and not request.get(TOKEN_CHECKED):
            if presign.is_presigned(request):  # a presigned URL (job documents' downloads) signs its query string
                presign.verify_query(request, self.gateway.config.sigv4_credentials)
            else:
                self._verify(request, body)

    async def __call__(self, request: web.Request) -> web.StreamResponse | None:
        """The response when this request is S3, STS or query-protocol SQS; None leaves it to the other routes."""
        parts = request.path.split("/")
        if request.method == "PUT" and parts[1:4] == ["edgesim", "greengrass", "coreDevices"] and len(parts) == 6:
            return await greengrass.put_core_cas(request, self.gateway, parts[4])
        service = signing_service(request.headers.get("Authorization")) or _presigned_service(request)
        bucket = s3_api.virtual_bucket(request.host, self.gateway.config.host)
        if service == "s3" or bucket is not None:
            return presign.expired(request, self.gateway.clock.wall_ms()) or await self.s3.handle(
                request, bucket, self._checked
            )
        if service == "iot-jobs-data":
            return await jobs_api.handle_data_plane(request, self.gateway.jobs, self._checked)
        target = request.headers.get("X-Amz-Target")
        if target == kinesis_fanout.TARGET:
            try:
                self._checked(request, await request.read())
            except AwsError as error:
                return json_protocol_error(error, "")
            return await kinesis_fanout.handle(request, self.subscriptions, self.gateway.clock)
        if target is not None:
            return None
        form_request = request.method == "POST" and request.content_type == FORM
        if not form_request and "Action" not in request.rel_url.query:
            return None
        body = await request.read() if form_request else b""
        try:
            form = sts.codec().form(body, request.rel_url.query_string)
        except Exception:
            return None
        action = form.get("Action")
        if action is None:
            return None
        wanted = service or ("sts" if sts.codec().operation(action) is not None else "sqs")
        if wanted not in ("sts", "sqs"):
            return None
        try:
            self._checked(request, body)
        except AwsError as error:
            xml = sts.codec().error(error.code, error.message, True)
            return web.Response(status=error.http_status, body=xml, content_type="text/xml")
        if wanted == "sts":
            return await sts.handle(request, self.sts, form, self.gateway.clock.wall_ms())
        return await sqs_query.handle(request, self.gateway.sqs, form)


def _presigned_service(request: web.Request) -> str | None:
    """The service a presigned URL was made for: SigV4's credential scope, or S3 for a SigV2 one (which boto3 still
    makes for `s3` unless told `signature_version="s3v4"`)."""
    if "AWSAccessKeyId" in request.rel_url.query and "Signature" in request.rel_url.query:
        return "s3"
    credential = request.rel_url.query.get("X-Amz-Credential", "")
    scope = credential.split("/")
    return scope[3] if len(scope) >= 5 else None
