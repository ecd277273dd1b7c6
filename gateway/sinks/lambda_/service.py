"""Lambda over the store: functions as local Python handlers run in worker processes (boto3 `lambda` operations).

A function's configuration and its deployment package (the zip) live in `lambda_functions`; the zip is unpacked on
first use under `<data dir>/lambda/<name>/<code sha>`. Synchronous invokes run on a warm worker of the function's pool
(see runner.py). Asynchronous invokes (`Event`, and the rule action) are committed to `lambda_events` before the 202,
then delivered by a dispatcher task: a function error is retried (twice, or the function's MaximumRetryAttempts) with
backoff, after which the event goes to the function's dead-letter queue (SQS) and OnFailure destination if it has them;
a throttled event waits up to the maximum event age. Success records go to the OnSuccess destination (destinations.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.errors import AwsError
from gateway.sinks.lambda_ import destinations
from gateway.sinks.lambda_.destinations import EventInvokeConfig, EventInvokeConfigError, Outcome
from gateway.sinks.lambda_.exceptions import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    LambdaNotFound,
    PreconditionFailedException,
    RequestTooLargeException,
    ResourceConflictException,
    ServiceException,
    TooManyRequestsException,
)
from gateway.sinks.lambda_.runner import Pool, Worker, WorkerGone, WorkerTimedOut
from gateway.sinks.sqs.attributes import MessageAttribute
from gateway.sinks.sqs.service import SendEntry, SqsService
from gateway.store import Store
from gateway.tasks import cancel_and_wait

log = logging.getLogger("edgesim.lambda")

SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024
ASYNC_PAYLOAD_LIMIT = 1024 * 1024
RESPONSE_LIMIT = 6 * 1024 * 1024
MAX_ZIP_BYTES = 50 * 1024 * 1024
MAX_CONCURRENCY = 16  # per function when no reserved concurrency is set; AWS's account limit would be 1,000
WARM_WORKERS = 2  # idle workers kept per function
LOG_TAIL_BYTES = 4096
RECENT_LOGS = 50
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
RESERVED_ENV = {
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
}


@dataclass
class Function:
    name: str
    runtime: str
    role: str
    handler: str
    code_sha: str  # base64 SHA-256 of the zip, as AWS reports CodeSha256
    code_hex: str
    code_size: int
    last_modified: str
    revision: str
    timeout: int = 3
    memory: int = 128
    description: str = ""
    env: dict[str, str] = field(default_factory=dict)
    reserved: int | None = None
    dlq_arn: str | None = None
    # Put/UpdateFunctionEventInvokeConfig; kept in the function's JSON config, so no table of its own.
    event_invoke: EventInvokeConfig | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Function:
        data = json.loads(text)
        data["event_invoke"] = destinations.event_invoke_config_from_dict(data.get("event_invoke"))
        return cls(**data)


@dataclass
class InvokeResult:
    request_id: str
    payload: bytes
    function_error: str | None
    log: str

    def log_tail(self) -> str:
        """`X-Amz-Log-Result`: base64 of the last 4 KB of the invocation's log."""
        return base64.b64encode(self.log.encode()[-LOG_TAIL_BYTES:]).decode()


def function_name(ref: str) -> str:
    """The name in `name`, `name:qualifier`, `account:function:name` or a full (possibly qualified) ARN."""
    parts = ref.split(":")
    if ref.startswith("arn:"):
        return parts[6] if len(parts) >= 7 and parts[5] == "function" else ""
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2]
    return parts[0]


def function_qualifier(ref: str) -> str | None:
    """The version or alias in `name:qualifier`, `account:function:name:qualifier` or a qualified ARN, if any."""
    parts = ref.split(":")
    if ref.startswith("arn:"):
        return parts[7] if len(parts) > 7 else None
    if len(parts) >= 3 and parts[1] == "function":
        return parts[3] if len(parts) > 3 else None
    return parts[1] if len(parts) > 1 else None


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}+0000"


def _retry_delays() -> tuple[float, ...]:
    """Seconds before each retry; AWS waits about 1 then 2 minutes. EDGESIM_LAMBDA_RETRY_DELAYS='1,2' for tests."""
    raw = os.environ.get("EDGESIM_LAMBDA_RETRY_DELAYS", "60,120")
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        delays = ()
    return delays or (60.0, 120.0)


class LambdaService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        region: str,
        account: str,
        code_root: Path,
        *,
        api_endpoint: Callable[[], str] | None = None,
        sqs: SqsService | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.region = region
        self.account = account
        self.code_root = code_root.resolve()  # workers chdir into it: a relative path would not survive that
        self._api_endpoint = api_endpoint
        self.sqs = sqs  # dead-letter queues
        self.retry_delays = _retry_delays()
        self.functions: dict[str, Function] = {}
        for row in store.query("SELECT name, config FROM lambda_functions"):
            self.functions[row["name"]] = Function.from_json(row["config"])
        self.pools: dict[str, Pool] = {}
        self.workers: set[Worker] = set()
        self.logs: dict[str, deque[dict[str, Any]]] = {}
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Per function: invocations finished and how many ended in a function error (for the demo and dashboard).
        self.stats: dict[str, dict[str, int]] = {}

    # ---- lifecycle
    async def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="lambda-events")

    async def stop(self) -> None:
        await cancel_and_wait([t for t in (self._dispatcher, *self._tasks) if t is not None])
        for worker in list(self.workers):
            with contextlib.suppress(Exception):
                await worker.kill()
        self.workers.clear()
        self.pools.clear()

    # ---- helpers
    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{name}"

    def _function(self, ref: str) -> Function:
        name = function_name(ref)
        fn = self.functions.get(name)
        if fn is None:
            raise LambdaNotFound(f"Function not found: {self.arn(name)}")
        return fn

    def _save(self, fn: Function, code: bytes | None = None) -> None:
        with self.store.transaction() as db:
            if code is None:
                db.execute("UPDATE lambda_functions SET config=? WHERE name=?", (fn.to_json(), fn.name))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO lambda_functions(name, config, code) VALUES (?,?,?)",
                    (fn.name, fn.to_json(), code),
                )
        self.functions[fn.name] = fn

    def configuration(self, fn: Function) -> dict[str, Any]:
        out: dict[str, Any] = {
            "FunctionName": fn.name,
            "FunctionArn": self.arn(fn.name),
            "Runtime": fn.runtime,
            "Role": fn.role,
            "Handler": fn.handler,
            "CodeSize": fn.code_size,
            "Description": fn.description,
            "Timeout": fn.timeout,
            "MemorySize": fn.memory,
            "LastModified": fn.last_modified,
            "CodeSha256": fn.code_sha,
            "Version": "$LATEST",
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": fn.revision,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": 512},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{fn.name}"},
        }
        if fn.env:
            out["Environment"] = {"Variables": dict(fn.env)}
        if fn.dlq_arn:
            out["DeadLetterConfig"] = {"TargetArn": fn.dlq_arn}
        return out

    @staticmethod
    def _decode_zip(raw: Any) -> bytes:
        if isinstance(raw, (bytes, bytearray)):
            data = bytes(raw)
        elif isinstance(raw, str):
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidParameterValueException("ZipFile is not valid base64") from exc
        else:
            raise InvalidParameterValueException(
                "edgesim deploys functions from Code.ZipFile only (S3 and container images are not supported)"
            )
        if len(data) > MAX_ZIP_BYTES:
            raise RequestTooLargeException(
                "Request must be smaller than 70167211 bytes for the CreateFunction operation"
            )
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if archive.testzip() is not None:
                    raise zipfile.BadZipFile("corrupt member")
        except zipfile.BadZipFile as exc:
            raise InvalidParameterValueException(
                "Could not unzip uploaded file. Please check your file, then try to upload again."
            ) from exc
        return data

    def _apply_settings(self, fn: Function, params: dict[str, Any]) -> None:
        if "Runtime" in params:
            runtime = params["Runtime"]
            if not isinstance(runtime, str) or not re.fullmatch(r"python3\.\d+", runtime):
                raise InvalidParameterValueException(
                    f"Value {runtime} at 'runtime' failed to satisfy constraint: edgesim runs python3.x functions only"
                )
            fn.runtime = runtime
        if "Handler" in params:
            handler = params["Handler"]
            if not isinstance(handler, str) or not re.fullmatch(r"[^\s]{1,128}", handler) or "." not in handler:
                raise InvalidParameterValueException(
                    f"Value {handler} at 'handler' failed to satisfy constraint: expected module.function"
                )
            fn.handler = handler
        if "Timeout" in params:
            timeout = params["Timeout"]
            if not isinstance(timeout, int) or not 1 <= timeout <= 900:
                raise InvalidParameterValueException(
                    f"1 validation error detected: Value '{timeout}' at 'timeout' failed to satisfy constraint: "
                    "Member must have value less than or equal to 900"
                )
            fn.timeout = timeout
        if "MemorySize" in params:
            memory = params["MemorySize"]
            if not isinstance(memory, int) or not 128 <= memory <= 10240:
                raise InvalidParameterValueException(
                    "'MemorySize' value failed to satisfy constraint: Member must have value greater than or equal "
                    "to 128 and less than or equal to 10240"
                )
            fn.memory = memory
        if "Description" in params:
            fn.description = str(params["Description"])
        if "Role" in params:
            fn.role = str(params["Role"])
        if "Environment" in params:
            variables = (params["Environment"] or {}).get("Variables") or {}
            reserved = sorted(k for k in variables if k in RESERVED_ENV)
            if reserved:
                raise InvalidParameterValueException(
                    "Lambda was unable to configure your environment variables because the environment variables "
                    "you have provided contains reserved keys that are currently not supported for modification. "
                    f"Reserved keys used in this request: {','.join(reserved)}"
                )
            bad = [k for k in variables if not re.fullmatch(r"[a-zA-Z]\w*", k)]
            if bad:
                raise InvalidParameterValueException(
                    f"Environment variable name {bad[0]} is invalid: it must start with a letter and contain only "
                    "letters, digits and underscores"
                )
            fn.env = {str(k): str(v) for k, v in variables.items()}
        if "DeadLetterConfig" in params:
            target = (params["DeadLetterConfig"] or {}).get("TargetArn") or None
            if target is not None and not str(target).startswith("arn:aws:sqs:"):
                raise InvalidParameterValueException(
                    "edgesim supports SQS dead-letter queues only (TargetArn arn:aws:sqs:<region>:<account>:<queue>)"
                )
            if target is not None and self.sqs is not None and target.rsplit(":", 1)[-1] not in self.sqs.queues:
                raise InvalidParameterValueException(
                    f"The provided execution role does not have permissions to call SendMessage on SQS ({target})"
                )
            fn.dlq_arn = target

    # ---- control plane
    def create_function(self, params: dict[str, Any]) -> dict[str, Any]:
        name = function_name(str(params["FunctionName"]))
        if not FUNCTION_NAME.fullmatch(name):
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{params['FunctionName']}' at 'functionName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+"
            )
        if params.get("PackageType", "Zip") != "Zip":
            raise InvalidParameterValueException("edgesim supports PackageType Zip only")
        if "Runtime" not in params or "Handler" not in params:
            raise InvalidParameterValueException(
                "Runtime and Handler are mandatory parameters for functions created with deployment packages."
            )
        if name in self.functions:
            raise ResourceConflictException(f"Function already exist: {name}")
        code = self._decode_zip((params.get("Code") or {}).get("ZipFile"))
        digest = hashlib.sha256(code).digest()
        fn = Function(
            name=name,
            runtime="",
            role="",
            handler="",
            code_sha=base64.b64encode(digest).decode(),
            code_hex=digest.hex(),
            code_size=len(code),
            last_modified=_iso(self.clock.wall_ms()),
            revision=str(uuid.uuid4()),
        )
        self._apply_settings(fn, params)
        self._save(fn, code)
        return self.configuration(fn)

    def update_function_code(self, params: dict[str, Any]) -> dict[str, Any]:
        fn = self._function(str(params["FunctionName"]))
        self._check_revision(fn, params)
        code = self._decode_zip(params.get("ZipFile"))
        if params.get("DryRun"):
            return self.configuration(fn)
        digest = hashlib.sha256(code).digest()
        fn.code_sha, fn.code_hex, fn.code_size = base64.b64encode(digest).decode(), digest.hex(), len(code)
        self._touch(fn)
        self._save(fn, code)
        self._retire_idle(fn.name)
        return self.configuration(fn)

    def update_function_configuration(self, params: dict[str, Any]) -> dict[str, Any]:
        fn = self._function(str(params["FunctionName"]))
        self._check_revision(fn, params)
        updated = Function.from_json(fn.to_json())
        self._apply_settings(updated, params)
        self._touch(updated)
        self._save(updated)
        self._retire_idle(fn.name)
        return self.configuration(updated)

    def _check_revision(self, fn: Function, params: dict[str, Any]) -> None:
        wanted = params.get("RevisionId")
        if wanted and wanted != fn.revision:
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )

    def _touch(self, fn: Function) -> None:
        fn.last_modified = _iso(self.clock.wall_ms())
        fn.revision = str(uuid.uuid4())

    def get_function(self, ref: str) -> dict[str, Any]:
        fn = self._function(ref)
        out: dict[str, Any] = {
            "Configuration": self.configuration(fn),
            "Code": {"RepositoryType": "S3", "Location": self._code_zip_path(fn).as_uri()},
        }
        if fn.reserved is not None:
            out["Concurrency"] = {"ReservedConcurrentExecutions": fn.reserved}
        return out

    def get_function_configuration(self, ref: str) -> dict[str, Any]:
        return self.configuration(self._function(ref))

    def list_functions(self, marker: str | None = None, max_items: int | None = None) -> dict[str, Any]:
        names = sorted(self.functions)
        start = 0
        if marker:
            try:
                start = int(marker)
            except ValueError as exc:
                raise InvalidParameterValueException(f"Invalid marker: {marker}") from exc
        limit = min(max(max_items or 50, 1), 50)
        page = names[start : start + limit]
        out: dict[str, Any] = {"Functions": [self.configuration(self.functions[n]) for n in page]}
        if start + limit < len(names):
            out["NextMarker"] = str(start + limit)
        return out

    def delete_function(self, ref: str) -> None:
        fn = self._function(ref)
        with self.store.transaction() as db:
            db.execute("DELETE FROM lambda_functions WHERE name=?", (fn.name,))
            db.execute("DELETE FROM lambda_events WHERE function=?", (fn.name,))
        del self.functions[fn.name]
        self._retire_idle(fn.name)
        self.logs.pop(fn.name, None)
        shutil.rmtree(self.code_root / fn.name, ignore_errors=True)

    def put_function_concurrency(self, ref: str, reserved: int) -> dict[str, Any]:
        fn = self._function(ref)
        if not isinstance(reserved, int) or reserved < 0:
            raise InvalidParameterValueException(
                "1 validation error detected: Value at 'reservedConcurrentExecutions' failed to satisfy constraint: "
                "Member must have value greater than or equal to 0"
            )
        fn.reserved = reserved
        self._save(fn)
        return {"ReservedConcurrentExecutions": reserved}

    def delete_function_concurrency(self, ref: str) -> None:
        fn = self._function(ref)
        fn.reserved = None
        self._save(fn)

    def get_function_concurrency(self, ref: str) -> dict[str, Any]:
        fn = self._function(ref)
        return {} if fn.reserved is None else {"ReservedConcurrentExecutions": fn.reserved}

    # ---- asynchronous invocation config (destinations.py holds the rules)
    def _unqualified(self, ref: str, qualifier: str | None) -> Function:
        """The function for `ref`; edgesim has only $LATEST, so another version or alias is not found."""
        fn = self._function(ref)
        wanted = qualifier or function_qualifier(ref)
        if wanted not in (None, destinations.LATEST):
            raise LambdaNotFound(f"Function not found: {self.arn(fn.name)}:{wanted}")
        return fn

    def _event_invoke(self, fn: Function) -> EventInvokeConfig:
        if fn.event_invoke is None:
            raise LambdaNotFound(
                f"The function {self.arn(fn.name)}:{destinations.LATEST} doesn't have an EventInvokeConfig"
            )
        return fn.event_invoke

    def _check_destinations(self, fn: Function, config: EventInvokeConfig) -> None:
        """AWS checks the execution role may call the destination; here the destination must simply exist."""
        for arn in config.destinations():
            dest = destinations.parse_destination(arn, fn.name)
            if dest.kind == "sqs":
                if self.sqs is None or dest.name not in self.sqs.queues or self.sqs.arn(dest.name) != arn:
                    raise InvalidParameterValueException(
                        f"The function execution role does not have permissions to call SendMessage on {arn} "
                        "(edgesim: no such queue)"
                    )
            elif dest.name not in self.functions or self.arn(dest.name) != arn.removesuffix(":$LATEST"):
                raise InvalidParameterValueException(
                    f"The function execution role does not have permissions to call InvokeFunction on {arn} "
                    "(edgesim: no such function)"
                )

    def put_function_event_invoke_config(self, params: dict[str, Any], *, update: bool = False) -> dict[str, Any]:
        fn = self._unqualified(str(params["FunctionName"]), params.get("Qualifier"))
        now = self.clock.wall_ms()
        try:
            if update:
                config = destinations.update_event_invoke_config(self._event_invoke(fn), params, fn.name, now)
            else:
                config = destinations.put_event_invoke_config(params, fn.name, now)
        except EventInvokeConfigError as exc:
            raise InvalidParameterValueException(exc.message) from exc
        self._check_destinations(fn, config)
        fn.event_invoke = config
        self._save(fn)
        return config.to_wire(self.arn(fn.name))

    def get_function_event_invoke_config(self, ref: str, qualifier: str | None) -> dict[str, Any]:
        fn = self._unqualified(ref, qualifier)
        return self._event_invoke(fn).to_wire(self.arn(fn.name))

    def delete_function_event_invoke_config(self, ref: str, qualifier: str | None) -> None:
        fn = self._unqualified(ref, qualifier)
        self._event_invoke(fn)
        fn.event_invoke = None
        self._save(fn)

    def list_function_event_invoke_configs(self, ref: str) -> dict[str, Any]:
        fn = self._unqualified(ref, None)
        configs = [] if fn.event_invoke is None else [fn.event_invoke.to_wire(self.arn(fn.name))]
        return {"FunctionEventInvokeConfigs": configs}

    # ---- code on disk
    def _code_dir(self, fn: Function) -> Path:
        target = self.code_root / fn.name / fn.code_hex
        if target.is_dir():
            return target
        row = self.store.one("SELECT code FROM lambda_functions WHERE name=?", (fn.name,))
        if row is None:
            raise LambdaNotFound(f"Function not found: {self.arn(fn.name)}")
        code = bytes(row["code"])
        if hashlib.sha256(code).hexdigest() != fn.code_hex:
            raise ServiceException("the stored deployment package does not match its CodeSha256")
        staging = target.with_name(f".{fn.code_hex}.{uuid.uuid4().hex}")
        staging.mkdir(parents=True)
        with zipfile.ZipFile(io.BytesIO(code)) as archive:
            archive.extractall(staging)  # zipfile drops absolute paths and `..` components
        try:
            staging.rename(target)
        except OSError:  # another invocation unpacked it first
            shutil.rmtree(staging, ignore_errors=True)
        self._code_zip_path(fn).write_bytes(code)
        return target

    def _code_zip_path(self, fn: Function) -> Path:
        return self.code_root / fn.name / f"{fn.code_hex}.zip"

    # ---- workers
    def _limit(self, fn: Function) -> int:
        return fn.reserved if fn.reserved is not None else MAX_CONCURRENCY

    def _has_capacity(self, fn: Function) -> bool:
        pool = self.pools.get(fn.name)
        return (pool.busy if pool else 0) < self._limit(fn)

    def _retire_idle(self, name: str) -> None:
        pool = self.pools.get(name)
        if pool is None:
            return
        stale = [w for w in pool.idle if name not in self.functions or w.revision != self.functions[name].revision]
        pool.idle = [w for w in pool.idle if w not in stale]
        for worker in stale:
            self._background(self._close(worker))
        if name not in self.functions and pool.busy == 0:
            self.pools.pop(name, None)

    async def _close(self, worker: Worker) -> None:
        try:
            await worker.close()
        finally:
            self.workers.discard(worker)

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _environment(self, fn: Function, stream: str, code_dir: Path) -> dict[str, str]:
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "_HANDLER": fn.handler,
            "AWS_ACCESS_KEY_ID": "edgesim",
            "AWS_SECRET_ACCESS_KEY": "edgesim",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self._api_endpoint is not None:
            env["AWS_ENDPOINT_URL"] = self._api_endpoint()  # boto3 inside the handler talks to this gateway
        env.update(fn.env)
        return env

    async def _checkout(self, fn: Function, pool: Pool) -> Worker:
        while pool.idle:
            worker = pool.idle.pop()
            if worker.alive and worker.revision == fn.revision:
                return worker
            self._background(self._close(worker))
        code_dir = self._code_dir(fn)
        stream = time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{uuid.uuid4().hex}"
        worker = await Worker.spawn(code_dir, fn.handler, self._environment(fn, stream, code_dir), fn.revision)
        worker.log_stream = stream
        self.workers.add(worker)
        return worker

    def _checkin(self, name: str, pool: Pool, worker: Worker) -> None:
        fn = self.functions.get(name)
        keep = fn is not None and worker.alive and worker.revision == fn.revision and len(pool.idle) < WARM_WORKERS
        if keep:
            pool.idle.append(worker)
        else:
            self._background(self._close(worker))

    async def _run(self, fn: Function, event_text: str, request_id: str) -> InvokeResult:
        pool = self.pools.setdefault(fn.name, Pool())
        limit = self._limit(fn)
        if pool.busy >= limit:
            if fn.reserved is not None:
                raise TooManyRequestsException("Rate Exceeded.", "ReservedFunctionConcurrentInvocationLimitExceeded")
            raise TooManyRequestsException("Rate Exceeded.", "ConcurrentInvocationLimitExceeded")
        pool.busy += 1
        worker: Worker | None = None
        started = time.monotonic()
        payload = b""
        function_error: str | None = None
        body_log = ""
        try:
            try:
                worker = await self._checkout(fn, pool)
            except AwsError:
                raise
            except Exception as exc:
                log.exception("could not start a worker for %s", fn.name)
                raise ServiceException(f"edgesim could not start a worker for {fn.name}: {exc}") from exc
            now_ms = int(time.time() * 1000)
            request = {
                "event": event_text,
                "deadline_ms": now_ms + fn.timeout * 1000,
                "context": {
                    "function_name": fn.name,
                    "function_version": "$LATEST",
                    "invoked_function_arn": self.arn(fn.name),
                    "memory_limit_in_mb": fn.memory,
                    "aws_request_id": request_id,
                    "log_group_name": f"/aws/lambda/{fn.name}",
                    "log_stream_name": worker.log_stream,
                },
            }
            try:
                response = await worker.invoke(request, float(fn.timeout))
            except WorkerTimedOut:
                stamp = _iso_z(now_ms + fn.timeout * 1000)
                message = f"{stamp} {request_id} Task timed out after {fn.timeout:.2f} seconds"
                payload = json.dumps({"errorMessage": message, "errorType": "TimeoutError", "stackTrace": []}).encode()
                function_error = "Unhandled"
                body_log = message + "\n"
            except WorkerGone as gone:
                status = gone.returncode
                if status is not None and status < 0:
                    how = f"signal: {_signal_name(-status)}"
                else:
                    how = f"exit status {status}"
                message = f"RequestId: {request_id} Error: Runtime exited with error: {how}"
                payload = json.dumps({"errorMessage": message, "errorType": "Runtime.ExitError"}).encode()
                function_error = "Unhandled"
                body_log = message + "\n"
            else:
                body_log = str(response.get("log", ""))
                if "error" in response:
                    payload = json.dumps(response["error"]).encode()
                    function_error = "Unhandled"
                else:
                    payload = str(response.get("payload", "null")).encode()
                    if len(payload) > RESPONSE_LIMIT:
                        payload = json.dumps(
                            {
                                "errorMessage": "Response payload size exceeded maximum allowed payload size "
                                f"({RESPONSE_LIMIT} bytes).",
                                "errorType": "Function.ResponseSizeTooLarge",
                            }
                        ).encode()
                        function_error = "Unhandled"
        finally:
            pool.busy -= 1
            if worker is not None:
                self._checkin(fn.name, pool, worker)
        elapsed_ms = (time.monotonic() - started) * 1000
        text = (
            f"START RequestId: {request_id} Version: $LATEST\n{body_log}"
            + ("" if body_log.endswith("\n") or not body_log else "\n")
            + f"END RequestId: {request_id}\n"
            f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(elapsed_ms))} ms\tMemory Size: {fn.memory} MB\n"
        )
        self._remember(fn.name, request_id, text, function_error)
        counts = self.stats.setdefault(fn.name, {"invocations": 0, "errors": 0, "duration_us": 0})
        counts["invocations"] += 1
        counts["errors"] += function_error is not None
        counts["duration_us"] += int(elapsed_ms * 1000)
        return InvokeResult(request_id, payload, function_error, text)

    def _remember(self, name: str, request_id: str, text: str, function_error: str | None) -> None:
        entries = self.logs.setdefault(name, deque(maxlen=RECENT_LOGS))
        entries.append(
            {
                "requestId": request_id,
                "timestamp": self.clock.wall_ms(),
                "functionError": function_error,
                "log": text[-16 * 1024 :],
            }
        )

    def recent_logs(self) -> dict[str, list[dict[str, Any]]]:
        """Recent invocation logs per function (the `/edgesim/lambda/logs` view); kept in memory only."""
        return {name: list(entries) for name, entries in self.logs.items()}

    # ---- data plane
    @staticmethod
    def _event_text(payload: bytes) -> str:
        if not payload.strip():
            return "{}"
        try:
            text = payload.decode("utf-8")
            json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRequestContentException(
                "Could not parse request body into json: Could not parse payload into json"
            ) from exc
        return text

    def dry_run(self, ref: str) -> None:
        self._function(ref)

    async def invoke(self, ref: str, payload: bytes) -> InvokeResult:
        fn = self._function(ref)
        if len(payload) > SYNC_PAYLOAD_LIMIT:
            raise RequestTooLargeException(
                f"Request must be smaller than {SYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation"
            )
        return await self._run(fn, self._event_text(payload), str(uuid.uuid4()))

    def enqueue_event(self, ref: str, payload: bytes) -> str:
        """Asynchronous invoke: committed to the store before returning (acknowledged = durable)."""
        fn = self._function(ref)
        if len(payload) > ASYNC_PAYLOAD_LIMIT:
            raise RequestTooLargeException(
                f"Request must be smaller than {ASYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation"
            )
        text = self._event_text(payload)
        request_id = str(uuid.uuid4())
        now = self.clock.wall_ms()
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO lambda_events(id, function, payload, attempts, due_ms, created_ms) VALUES (?,?,?,?,?,?)",
                (request_id, fn.name, text, 0, now, now),
            )
        self._wake.set()
        return request_id

    def pending_events(self, name: str | None = None) -> int:
        if name is None:
            row = self.store.one("SELECT COUNT(*) FROM lambda_events")
        else:
            row = self.store.one("SELECT COUNT(*) FROM lambda_events WHERE function=?", (name,))
        return int(row[0]) if row is not None else 0

    async def _dispatch(self) -> None:
        while True:
            try:
                self._dispatch_due()
            except Exception:
                log.exception("lambda event dispatch failed; the events stay queued")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.25)

    def _dispatch_due(self) -> None:
        now = self.clock.wall_ms()
        rows = self.store.query(
            "SELECT id, function, payload, attempts, created_ms FROM lambda_events WHERE due_ms<=? "
            "ORDER BY due_ms, created_ms LIMIT 200",
            (now,),
        )
        for row in rows:
            event_id = row["id"]
            if event_id in self._inflight:
                continue
            fn = self.functions.get(row["function"])
            if fn is None:
                self._forget(event_id)
                continue
            created, payload = int(row["created_ms"]), str(row["payload"])
            if destinations.expired(created, now, (fn.event_invoke or destinations.DEFAULTS).max_event_age_ms):
                # Throttled (or waiting out a system error) past the maximum event age: AWS discards the event.
                outcome = Outcome(event_id, self.arn(fn.name), "EventAgeExceeded", int(row["attempts"]), payload)
                self._finish(fn, outcome, 429, "EventAgeExceeded")
                continue
            if not self._has_capacity(fn):
                continue  # throttled: AWS keeps the event and retries until the maximum event age
            self._inflight.add(event_id)
            self._background(self._deliver(fn, event_id, payload, int(row["attempts"]), created))

    def _forget(self, event_id: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM lambda_events WHERE id=?", (event_id,))

    async def _deliver(self, fn: Function, event_id: str, event_text: str, attempts: int, created_ms: int) -> None:
        try:
            try:
                result = await self._run(fn, event_text, event_id)
            except TooManyRequestsException:
                return  # stays due; the dispatcher tries again once there is capacity
            except AwsError as exc:
                log.warning("lambda %s: event %s not delivered: %s", fn.name, event_id, exc)
                self._reschedule(event_id, attempts, self.retry_delays[0])
                return
            fn = self.functions.get(fn.name, fn)  # its settings may have changed while it ran
            invocations = attempts + 1
            outcome = Outcome(
                event_id, self.arn(fn.name), "Success", invocations, event_text, result.payload, result.function_error
            )
            if result.function_error is None:
                self._finish(fn, outcome)
                return
            settings = fn.event_invoke or destinations.DEFAULTS
            delay = self.retry_delays[min(attempts, len(self.retry_delays) - 1)]
            condition = destinations.after_function_error(
                invocations=invocations,
                retry_attempts=settings.retry_attempts,
                created_ms=created_ms,
                now_ms=self.clock.wall_ms(),
                delay_ms=int(delay * 1000),
                max_event_age_ms=settings.max_event_age_ms,
            )
            if condition is None:
                self._reschedule(event_id, invocations, delay)
                return
            self._finish(fn, replace(outcome, condition=condition), 200, _error_message(result.payload))
        finally:
            self._inflight.discard(event_id)
            self._wake.set()

    def _reschedule(self, event_id: str, attempts: int, delay_s: float) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE lambda_events SET attempts=?, due_ms=? WHERE id=?",
                (attempts, self.clock.wall_ms() + int(delay_s * 1000), event_id),
            )

    def _finish(self, fn: Function, outcome: Outcome, code: int = 200, message: str = "") -> None:
        """The event is done: its record goes to OnSuccess/OnFailure; a failed event also to the dead-letter queue."""
        settings = fn.event_invoke
        success = outcome.condition == "Success"
        target = None if settings is None else settings.on_success if success else settings.on_failure
        if not success and (fn.dlq_arn or not target):
            self._dead_letter(fn, outcome.request_id, outcome.event_text, code, message)
        if target:
            self._send_record(fn, target, destinations.invocation_record(outcome, self.clock.wall_ms()))
        self._forget(outcome.request_id)

    def _send_record(self, fn: Function, arn: str, record: dict[str, Any]) -> None:
        """Deliver an invocation record; AWS counts a failure in the DestinationDeliveryFailures metric, we log it."""
        body = json.dumps(record, separators=(",", ":"))
        try:
            dest = destinations.parse_destination(arn, fn.name)
            if dest.kind == "lambda":
                self.enqueue_event(dest.name, body.encode())
            elif self.sqs is not None:
                self.sqs.send_message(self.sqs.queue_url(dest.name), SendEntry(body=body))
        except Exception as exc:
            log.warning("lambda %s: destination %s refused a record: %s", fn.name, arn, exc)

    def _dead_letter(self, fn: Function, event_id: str, event_text: str, code: int, message: str) -> None:
        if not fn.dlq_arn or self.sqs is None:
            log.warning("lambda %s: event %s dropped after retries: %s", fn.name, event_id, message[:200])
            return
        attributes = {
            "RequestID": MessageAttribute("String", event_id),
            "ErrorCode": MessageAttribute("Number", str(code)),
            "ErrorMessage": MessageAttribute("String", message[:1024] or "unknown"),
        }
        try:
            queue_name = fn.dlq_arn.rsplit(":", 1)[-1]
            self.sqs.send_message(self.sqs.queue_url(queue_name), SendEntry(body=event_text, attributes=attributes))
        except Exception as exc:
            log.warning("lambda %s: dead-letter queue %s refused event %s: %s", fn.name, fn.dlq_arn, event_id, exc)


def _error_message(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("errorMessage", ""))
    except (ValueError, AttributeError):
        return payload.decode("utf-8", "replace")


def _iso_z(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name.removeprefix("SIG").lower()
    except ValueError:
        return str(number)
