"""A local stand-in for S3 buckets: objects are files under `<data_dir>/s3/<bucket>/<key>`, written atomically.

Keys map onto paths, so a key must stay a clean relative path: no `..` or `.` segments, no leading `/`,
no empty segments (`a//b`, trailing `/`), no NUL. Whatever passes can never leave its bucket's folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import AwsError

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_KEY_BYTES = 1024
TMP_DIR = ".tmp"  # beside the buckets; bucket names cannot start with a dot, so it never collides
CANNED_ACLS = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "aws-exec-read",
        "authenticated-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
        "log-delivery-write",
    }
)


class InvalidBucketName(AwsError):
    code = "InvalidBucketName"
    http_status = 400


class InvalidObjectKey(AwsError):
    code = "KeyTooLongError"  # S3 has no dedicated code for a bad key; callers show the message
    http_status = 400


class NoSuchKey(AwsError):
    code = "NoSuchKey"
    http_status = 404


class NoSuchBucket(AwsError):
    code = "NoSuchBucket"
    http_status = 404


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    modified_ms: int

    def to_json(self) -> dict[str, object]:
        return {"Bucket": self.bucket, "Key": self.key, "Size": self.size, "LastModifiedMs": self.modified_ms}


def check_bucket(bucket: str) -> str:
    if not BUCKET_NAME.fullmatch(bucket or "") or ".." in bucket:
        raise InvalidBucketName(f"The specified bucket is not valid: {bucket!r}")
    return bucket


def check_key(key: str) -> str:
    if not key:
        raise InvalidObjectKey("The object key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidObjectKey(f"The object key is longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key or "\\" in key:
        raise InvalidObjectKey(f"The object key {key!r} contains a NUL or backslash")
    if key.startswith("/"):
        raise InvalidObjectKey(f"The object key {key!r} is absolute; keys are relative to the bucket")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidObjectKey(
                f"The object key {key!r} has an empty, '.' or '..' segment, which edgesim cannot store as a file"
            )
    return key


def split_location(location: str) -> tuple[str, str]:
    """`bucket/some/key` → (`bucket`, `some/key`); a bare bucket gives an empty key (or prefix)."""
    location = location.removeprefix("s3://")
    bucket, _, rest = location.partition("/")
    return bucket, rest


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _bucket_dir(self, bucket: str) -> Path:
        return self.root / check_bucket(bucket)

    def path_for(self, bucket: str, key: str) -> Path:
        base = self._bucket_dir(bucket)
        path = base.joinpath(*check_key(key).split("/"))
        # Belt and braces: even through a symlink planted in the folder, the object stays in its bucket.
        if not path.resolve().is_relative_to(base.resolve()):
            raise InvalidObjectKey(f"The object key {key!r} escapes the bucket")
        return path

    def put(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        """Write the whole object or nothing: temp file, fsync, rename over any previous version."""
        path = self.path_for(bucket, key)
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise InvalidObjectKey(f"The object key {key!r} runs through an existing object's name") from exc
        if path.is_dir():
            raise InvalidObjectKey(f"The object key {key!r} is a prefix of existing objects")
        tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        stat = path.stat()
        return ObjectInfo(bucket, key, stat.st_size, stat.st_mtime_ns // 1_000_000)

    def get(self, bucket: str, key: str) -> bytes:
        path = self.path_for(bucket, key)
        if not path.is_file():
            if not self._bucket_dir(bucket).is_dir():
                raise NoSuchBucket(f"The specified bucket does not exist: {bucket}")
            raise NoSuchKey(f"The specified key does not exist: {key}")
        return path.read_bytes()

    def buckets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and BUCKET_NAME.fullmatch(p.name))

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """Every object in `bucket` whose key starts with `prefix`, sorted by key."""
        base = self._bucket_dir(bucket)
        if not base.is_dir():
            raise NoSuchBucket(f"The specified bucket does not exist: {bucket}")
        out: list[ObjectInfo] = []
        for path in base.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            key = path.relative_to(base).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                out.append(ObjectInfo(bucket, key, stat.st_size, stat.st_mtime_ns // 1_000_000))
        return sorted(out, key=lambda o: o.key)

    # ---- bucket and object management (the S3 API)
    def bucket_exists(self, bucket: str) -> bool:
        return self._bucket_dir(bucket).is_dir()

    def create_bucket(self, bucket: str) -> bool:
        """Create the bucket's folder; False when it already existed."""
        path = self._bucket_dir(bucket)
        if path.is_dir():
            return False
        path.mkdir(parents=True)
        return True

    def delete_bucket(self, bucket: str) -> None:
        path = self._bucket_dir(bucket)
        if not path.is_dir():
            raise NoSuchBucket("The specified bucket does not exist")
        if any(p.is_file() for p in path.rglob("*")):
            raise BucketNotEmpty("The bucket you tried to delete is not empty")
        for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            folder.rmdir()
        path.rmdir()

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        path = self.path_for(bucket, key)
        if not path.is_file():
            if not self._bucket_dir(bucket).is_dir():
                raise NoSuchBucket("The specified bucket does not exist")
            raise NoSuchKey("The specified key does not exist.")
        stat = path.stat()
        return ObjectInfo(bucket, key, stat.st_size, stat.st_mtime_ns // 1_000_000)

    def delete(self, bucket: str, key: str) -> None:
        """Remove the object (absent is fine, as in S3), and the folders its key left empty."""
        base = self._bucket_dir(bucket)
        if not base.is_dir():
            raise NoSuchBucket("The specified bucket does not exist")
        path = self.path_for(bucket, key)
        if path.is_file():
            path.unlink()
            parent = path.parent
            while parent != base and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent


class BucketNotEmpty(AwsError):
    code = "BucketNotEmpty"
    http_status = 409
