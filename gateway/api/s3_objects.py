"""S3 object details beside the object files: ETags and headers (`.meta/`), multipart uploads (`.uploads/`),
Range headers and aws-chunked bodies. Both folders start with a dot, which no bucket name can."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from gateway.errors import AwsError

KEPT_HEADERS = ("Content-Type", "Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control")
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
MAX_PARTS = 10_000
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The object's own headers worth keeping: content headers and user metadata (`x-amz-meta-*`)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-amz-meta-"):
            out[lower] = value
        for kept in KEPT_HEADERS:
            if lower == kept.lower():
                out[kept] = value
    return out


class _S3Error(AwsError):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]
        self.http_status = status  # type: ignore[misc]


def _no_upload() -> AwsError:
    return _S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or "
        "completed.",
        404,
    )


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive (start, end); None (whole object) for anything else."""
    found = _RANGE.fullmatch(header.strip())
    if found is None or found.group(1) == found.group(2) == "":
        return None
    first, last = found.group(1), found.group(2)
    if first == "":
        start, end = max(0, size - int(last)), size - 1
        if int(last) == 0:
            raise _S3Error("InvalidRange", "The requested range is not satisfiable", 416)
    else:
        start = int(first)
        end = size - 1 if last == "" else min(int(last), size - 1)
        if last != "" and int(last) < start:
            return None
    if start >= size:
        raise _S3Error("InvalidRange", "The requested range is not satisfiable", 416)
    return start, end


def decode_aws_chunked(body: bytes) -> bytes:
    """`<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n` ... `0...\\r\\n[trailers]\\r\\n` → the data."""
    out = bytearray()
    at = 0
    while True:
        line_end = body.find(b"\r\n", at)
        if line_end < 0:
            raise _S3Error("IncompleteBody", "The request body terminated unexpectedly", 400)
        try:
            size = int(body[at:line_end].split(b";", 1)[0], 16)
        except ValueError as exc:
            raise _S3Error("InvalidRequest", "Invalid chunk size in aws-chunked body", 400) from exc
        at = line_end + 2
        if size == 0:
            return bytes(out)
        if at + size > len(body):
            raise _S3Error("IncompleteBody", "The request body terminated unexpectedly", 400)
        out += body[at : at + size]
        at += size + 2


class ObjectMeta:
    """ETag and headers of objects put through the API, keyed by the file's size and mtime (a file written by
    Firehose or replaced behind our back gets its ETag computed from its bytes)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / ".meta"

    def _path(self, bucket: str, key: str) -> Path:
        return self.dir / bucket / (key + ".json")

    @staticmethod
    def content_md5(body: bytes) -> str:
        return base64.b64encode(hashlib.md5(body).digest()).decode()

    def _stamp(self, bucket: str, key: str) -> list[int] | None:
        try:
            stat = (self.root / bucket / key).stat()
        except OSError:
            return None
        return [stat.st_size, stat.st_mtime_ns]

    def record(
        self, bucket: str, key: str, data: bytes, headers: Mapping[str, str] | None, parts: int | bool = False
    ) -> str:
        digest = hashlib.md5(data).hexdigest()
        etag = f'"{digest}"'
        if parts and isinstance(headers, Mapping) and headers.get("__etag__"):
            etag = str(headers["__etag__"])
        kept = kept_headers(headers or {})
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"etag": etag, "headers": kept, "stamp": self._stamp(bucket, key)}))
        return etag

    def copy(
        self, src_bucket: str, src_key: str, bucket: str, key: str, data: bytes, headers: Mapping[str, str] | None
    ) -> str:
        kept = self.headers(src_bucket, src_key) if headers is None else headers
        return self.record(bucket, key, data, kept)

    def _load(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            saved = json.loads(self._path(bucket, key).read_text())
        except (OSError, ValueError):
            return None
        return saved if isinstance(saved, dict) and saved.get("stamp") == self._stamp(bucket, key) else None

    def etag(self, bucket: str, key: str, read: Callable[[], bytes]) -> str:
        saved = self._load(bucket, key)
        if saved is not None:
            return str(saved["etag"])
        return f'"{hashlib.md5(read()).hexdigest()}"'

    def headers(self, bucket: str, key: str) -> dict[str, str]:
        saved = self._load(bucket, key)
        out = {"Content-Type": DEFAULT_CONTENT_TYPE}
        if saved is not None:
            out.update(saved.get("headers") or {})
        return out

    def forget(self, bucket: str, key: str) -> None:
        with contextlib.suppress(OSError):
            self._path(bucket, key).unlink()


class MultipartUploads:
    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / ".uploads"

    def _upload(self, upload_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id or ""):
            raise _no_upload()
        path = self.dir / upload_id
        if not path.is_dir():
            raise _no_upload()
        return path

    def create(self, bucket: str, key: str, headers: Mapping[str, str]) -> str:
        upload_id = uuid.uuid4().hex
        path = self.dir / upload_id
        path.mkdir(parents=True)
        kept = kept_headers(headers)
        (path / "upload.json").write_text(json.dumps({"bucket": bucket, "key": key, "headers": kept}))
        return upload_id

    def put_part(self, upload_id: str, number: int, data: bytes) -> str:
        path = self._upload(upload_id)
        if not 1 <= number <= MAX_PARTS:
            raise _S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive", 400)
        (path / f"{number:05d}").write_bytes(data)
        return f'"{hashlib.md5(data).hexdigest()}"'

    def abort(self, upload_id: str) -> None:
        shutil.rmtree(self._upload(upload_id))

    def complete(self, upload_id: str, body: bytes) -> tuple[bytes, dict[str, str]]:
        path = self._upload(upload_id)
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            raise _S3Error(
                "MalformedXML", "The XML you provided was not well-formed or did not validate.", 400
            ) from exc
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        numbers = [int(p.findtext(f"{ns}PartNumber") or 0) for p in root.findall(f"{ns}Part")]
        if not numbers:
            raise _S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate.", 400)
        if numbers != sorted(set(numbers)):
            raise _S3Error("InvalidPartOrder", "The list of parts was not in ascending order.", 400)
        data = bytearray()
        digests = b""
        for number in numbers:
            part = path / f"{number:05d}"
            if not part.is_file():
                raise _S3Error(
                    "InvalidPart",
                    "One or more of the specified parts could not be found. The part may not have been uploaded, or "
                    "the specified entity tag may not match the part's entity tag.",
                    400,
                )
            chunk = part.read_bytes()
            digests += hashlib.md5(chunk).digest()
            data += chunk
        info = json.loads((path / "upload.json").read_text())
        shutil.rmtree(path)
        headers = dict(info.get("headers") or {})
        headers["__etag__"] = f'"{hashlib.md5(digests).hexdigest()}-{len(numbers)}"'
        return bytes(data), headers
