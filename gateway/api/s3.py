"""The S3 API (REST-XML) over the object store the Firehose and s3 rule actions write to (`<data>/s3/<bucket>/<key>`).

Path-style (`/bucket/key`, what boto3 sends to an IP endpoint) and virtual-hosted (`Host: bucket.localhost:port`)
addressing; ListBuckets, CreateBucket, HeadBucket, DeleteBucket, ListObjects(V2), GetObject (ranges), HeadObject,
PutObject (plain or aws-chunked bodies), CopyObject, DeleteObject(s), and multipart uploads (what `aws s3 cp` uses
for large files).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote
from xml.etree import ElementTree

from aiohttp import web

from gateway.api import s3_listing
from gateway.api.s3_objects import MultipartUploads, ObjectMeta, decode_aws_chunked, parse_range
from gateway.errors import AwsError
from gateway.sinks.s3 import ObjectStore, check_bucket

log = logging.getLogger("edgesim.api")

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
SignatureCheck = Callable[[web.Request, bytes], None]
_AWS_HOST = re.compile(r"(?P<bucket>.+)\.s3([.-][a-z0-9-]+)*\.amazonaws\.com")


class S3Error(AwsError):
    code = "InternalError"
    http_status = 500

    def __init__(self, code: str, message: str, status: int, **extra: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]
        self.http_status = status  # type: ignore[misc]
        self.extra = extra


def virtual_bucket(host: str, gateway_host: str) -> str | None:
    """The bucket a virtual-hosted request names in its Host (`bucket.localhost:4566`), else None."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    if (found := _AWS_HOST.fullmatch(name)) is not None:
        return found.group("bucket")
    for base in {gateway_host.lower(), "localhost", "127.0.0.1", "s3.localhost"}:
        if base and name.endswith("." + base):
            bucket = name[: -len(base) - 1]
            return bucket.removesuffix(".s3") or None
    return None


def _xml(tag: str, inner: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<{tag} xmlns="{XMLNS}">{inner}</{tag}>'
    return web.Response(status=status, body=body.encode(), content_type="application/xml", headers=headers)


def _el(tag: str, value: Any) -> str:
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<{tag}>{text}</{tag}>"


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def error_response(error: AwsError, method: str, resource: str) -> web.Response:
    if method == "HEAD":  # no body on HEAD; botocore reads the status
        return web.Response(status=error.http_status)
    extra = "".join(_el(k, v) for k, v in getattr(error, "extra", {}).items())
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{_el("Code", error.code)}{_el("Message", error.message)}'
        f"{extra}{_el('Resource', resource)}<RequestId>edgesim</RequestId></Error>"
    )
    return web.Response(status=error.http_status, body=body.encode(), content_type="application/xml")


def _no_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", "The specified bucket does not exist", 404, BucketName=bucket)


def _no_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, Key=key)


class S3Api:
    def __init__(self, store: ObjectStore, region: str) -> None:
        self.store = store
        self.region = region
        self.meta = ObjectMeta(store.root)
        self.uploads = MultipartUploads(store.root)

    async def handle(
        self, request: web.Request, bucket: str | None, check: Callable[[web.Request, bytes], None]
    ) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        if bucket is None:
            bucket_part, _, key_part = raw.lstrip("/").partition("/")
            bucket = unquote(bucket_part) or None
        else:
            key_part = raw.lstrip("/")
        key = unquote(key_part)
        try:
            body = await request.read()
            check(request, body)
            if "aws-chunked" in request.headers.get("Content-Encoding", "") or request.headers.get(
                "X-Amz-Content-SHA256", ""
            ).startswith("STREAMING-"):
                body = decode_aws_chunked(body)
            if bucket is None:
                if request.method != "GET":
                    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
                return self.list_buckets()
            try:
                check_bucket(bucket)
            except AwsError as exc:
                raise S3Error(
                    "InvalidBucketName", "The specified bucket is not valid.", 400, BucketName=bucket
                ) from exc
            if not key:
                return await self._bucket_op(request, bucket, body)
            return await self._object_op(request, bucket, key, body)
        except AwsError as error:
            if error.code == "InvalidSignatureException":
                error = S3Error("SignatureDoesNotMatch", error.message, 403)
            elif error.code in ("UnrecognizedClientException", "MissingAuthenticationTokenException"):
                error = S3Error("InvalidAccessKeyId", error.message, 403)
            elif error.code == "NoSuchBucket" and not isinstance(error, S3Error):
                error = _no_bucket(bucket or "")
            elif error.code == "NoSuchKey" and not isinstance(error, S3Error):
                error = _no_key(key)
            elif error.code == "KeyTooLongError" and not isinstance(error, S3Error):
                error = S3Error("InvalidArgument", error.message, 400)
            return error_response(error, request.method, request.rel_url.path)
        except Exception:
            log.exception("internal error serving S3 %s %s", request.method, request.rel_url)
            return error_response(S3Error("InternalError", "We encountered an internal error.", 500), "", "")

    # ---- service and bucket level
    def list_buckets(self) -> web.Response:
        items = "".join(
            f"<Bucket>{_el('Name', name)}{_el('CreationDate', _iso(self._created_ms(name)))}</Bucket>"
            for name in self.store.buckets()
        )
        owner = "<Owner><ID>edgesim</ID><DisplayName>edgesim</DisplayName></Owner>"
        return _xml("ListAllMyBucketsResult", f"{owner}<Buckets>{items}</Buckets>")

    def _created_ms(self, bucket: str) -> int:
        return int((self.store.root / bucket).stat().st_mtime * 1000)

    async def _bucket_op(self, request: web.Request, bucket: str, body: bytes) -> web.StreamResponse:
        method, query = request.method, request.rel_url.query
        if method == "PUT":
            if not self.store.create_bucket(bucket) and self.region != "us-east-1":
                raise S3Error(
                    "BucketAlreadyOwnedByYou",
                    "Your previous request to create the named bucket succeeded and you already own it.",
                    409,
                    BucketName=bucket,
                )
            return web.Response(status=200, headers={"Location": f"/{bucket}"})
        if not self.store.bucket_exists(bucket):
            raise _no_bucket(bucket)
        if method == "HEAD":
            return web.Response(status=200, headers={"x-amz-bucket-region": self.region})
        if method == "DELETE":
            self.store.delete_bucket(bucket)
            return web.Response(status=204)
        if method == "POST" and "delete" in query:
            return self._delete_objects(bucket, body)
        if method == "GET" and "location" in query:
            region = "" if self.region == "us-east-1" else self.region
            return _xml("LocationConstraint", region)
        if method == "GET" and "uploads" in query:
            return _xml("ListMultipartUploadsResult", _el("Bucket", bucket) + "<IsTruncated>false</IsTruncated>")
        if method == "GET" and not set(query) - {
            "list-type",
            "prefix",
            "delimiter",
            "max-keys",
            "continuation-token",
            "start-after",
            "encoding-type",
            "fetch-owner",
            "marker",
        }:
            return self._list_objects(bucket, query)
        raise S3Error("NotImplemented", "A header you provided implies functionality that is not implemented", 501)

    def _list_objects(self, bucket: str, query: Any) -> web.Response:
        v2 = query.get("list-type") == "2"
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        try:
            max_keys = int(query.get("max-keys", s3_listing.MAX_KEYS))
        except ValueError as exc:
            raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range", 400) from exc
        if max_keys < 0:
            raise S3Error("InvalidArgument", "Argument maxKeys must be an integer between 0 and 2147483647", 400)
        max_keys = min(max_keys, s3_listing.MAX_KEYS)
        token = query.get("continuation-token")
        after = s3_listing.decode_token(token) if v2 and token else query.get("start-after" if v2 else "marker", "")
        objects = {o.key: o for o in self.store.list(bucket, prefix)}
        found = s3_listing.page(sorted(objects), prefix, delimiter, max_keys, after)
        url = query.get("encoding-type") == "url"

        def enc(value: str) -> str:
            return quote(value, safe="/") if url else value

        parts = [_el("Name", bucket), _el("Prefix", enc(prefix))]
        if delimiter:
            parts.append(_el("Delimiter", enc(delimiter)))
        parts += [_el("MaxKeys", max_keys), _el("IsTruncated", "true" if found.truncated else "false")]
        if url:
            parts.append(_el("EncodingType", "url"))
        if v2:
            parts.append(_el("KeyCount", len(found.keys) + len(found.prefixes)))
            if token:
                parts.append(_el("ContinuationToken", token))
            if query.get("start-after"):
                parts.append(_el("StartAfter", enc(query["start-after"])))
            if found.truncated and found.last is not None:
                parts.append(_el("NextContinuationToken", s3_listing.encode_token(found.last)))
        else:
            parts.append(_el("Marker", enc(query.get("marker", ""))))
            if found.truncated and found.last is not None and delimiter:
                parts.append(_el("NextMarker", enc(found.last)))
        owner = "<Owner><ID>edgesim</ID><DisplayName>edgesim</DisplayName></Owner>"
        for key in found.keys:
            info = objects[key]
            parts.append(
                f"<Contents>{_el('Key', enc(key))}{_el('LastModified', _iso(info.modified_ms))}"
                f"{_el('ETag', self._etag(bucket, key))}{_el('Size', info.size)}"
                f"{owner if (not v2 or query.get('fetch-owner') == 'true') else ''}"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        parts += [f"<CommonPrefixes>{_el('Prefix', enc(p))}</CommonPrefixes>" for p in found.prefixes]
        return _xml("ListBucketResult", "".join(parts))

    def _etag(self, bucket: str, key: str) -> str:
        return self.meta.etag(bucket, key, lambda: self.store.get(bucket, key))

    def _delete_objects(self, bucket: str, body: bytes) -> web.Response:
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate.", 400) from exc
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        quiet = (root.findtext(f"{ns}Quiet") or "").lower() == "true"
        out = []
        for obj in root.findall(f"{ns}Object"):
            key = obj.findtext(f"{ns}Key") or ""
            try:
                self.store.delete(bucket, key)
                self.meta.forget(bucket, key)
                if not quiet:
                    out.append(f"<Deleted>{_el('Key', key)}</Deleted>")
            except AwsError as exc:
                out.append(
                    f"<Error>{_el('Key', key)}{_el('Code', 'InvalidArgument')}{_el('Message', exc.message)}</Error>"
                )
        return _xml("DeleteResult", "".join(out))

    # ---- object level
    async def _object_op(self, request: web.Request, bucket: str, key: str, body: bytes) -> web.StreamResponse:
        method, query = request.method, request.rel_url.query
        if not self.store.bucket_exists(bucket):
            raise _no_bucket(bucket)
        if "uploadId" in query or "uploads" in query:
            return self._multipart(request, bucket, key, body)
        if method == "PUT":
            if "x-amz-copy-source" in request.headers:
                return self._copy(request, bucket, key)
            digest = request.headers.get("Content-MD5")
            if digest is not None and digest != self.meta.content_md5(body):
                raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.", 400)
            return self._put(request, bucket, key, body)
        if method in ("GET", "HEAD"):
            return self._get(request, bucket, key, head=method == "HEAD")
        if method == "DELETE":
            self.store.delete(bucket, key)
            self.meta.forget(bucket, key)
            return web.Response(status=204)
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)

    def _put(self, request: web.Request, bucket: str, key: str, body: bytes) -> web.Response:
        self.store.put(bucket, key, body)
        etag = self.meta.record(bucket, key, body, request.headers)
        return web.Response(status=200, headers={"ETag": etag})

    def _copy(self, request: web.Request, bucket: str, key: str) -> web.Response:
        source = unquote(request.headers["x-amz-copy-source"].split("?", 1)[0]).lstrip("/")
        src_bucket, _, src_key = source.partition("/")
        if not self.store.bucket_exists(src_bucket):
            raise _no_bucket(src_bucket)
        data = self.store.get(src_bucket, src_key)
        headers = request.headers if request.headers.get("x-amz-metadata-directive") == "REPLACE" else None
        info = self.store.put(bucket, key, data)
        etag = self.meta.copy(src_bucket, src_key, bucket, key, data, headers)
        return _xml("CopyObjectResult", _el("LastModified", _iso(info.modified_ms)) + _el("ETag", etag))

    def _get(self, request: web.Request, bucket: str, key: str, *, head: bool) -> web.Response:
        info = self.store.stat(bucket, key)
        headers = {
            "Last-Modified": _http_date(info.modified_ms),
            "Accept-Ranges": "bytes",
            **self.meta.headers(bucket, key),
        }
        headers["ETag"] = self._etag(bucket, key)
        wanted = request.headers.get("Range")
        span = parse_range(wanted, info.size) if wanted else None
        if span is None:
            headers["Content-Length"] = str(info.size)
            data = b"" if head else self.store.get(bucket, key)
            return web.Response(status=200, body=None if head else data, headers=headers)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        headers["Content-Length"] = str(end - start + 1)
        if head:
            return web.Response(status=206, headers=headers)
        return web.Response(status=206, body=self.store.get(bucket, key)[start : end + 1], headers=headers)

    def _multipart(self, request: web.Request, bucket: str, key: str, body: bytes) -> web.Response:
        method, query = request.method, request.rel_url.query
        if method == "POST" and "uploads" in query:
            upload_id = self.uploads.create(bucket, key, request.headers)
            inner = _el("Bucket", bucket) + _el("Key", key) + _el("UploadId", upload_id)
            return _xml("InitiateMultipartUploadResult", inner)
        upload_id = query["uploadId"]
        if method == "PUT":
            try:
                number = int(query.get("partNumber", ""))
            except ValueError as exc:
                raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000", 400) from exc
            return web.Response(status=200, headers={"ETag": self.uploads.put_part(upload_id, number, body)})
        if method == "DELETE":
            self.uploads.abort(upload_id)
            return web.Response(status=204)
        if method == "POST":
            data, headers = self.uploads.complete(upload_id, body)
            self.store.put(bucket, key, data)
            etag = self.meta.record(bucket, key, data, headers, parts=True)
            inner = _el("Bucket", bucket) + _el("Key", key) + _el("ETag", etag)
            return _xml("CompleteMultipartUploadResult", inner)
        if method == "GET":
            return _xml("ListPartsResult", _el("Bucket", bucket) + _el("Key", key) + _el("UploadId", upload_id))
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
