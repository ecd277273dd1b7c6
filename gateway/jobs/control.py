"""The control plane (boto3 `iot`, AWS CLI, `edgesim jobs`): jobs, executions and templates, AWS's members in and
out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from gateway.jobs import documents, states, views
from gateway.jobs.documents import execution_number
from gateway.jobs.engine import JobsEngine
from gateway.jobs.exceptions import (
    ConflictException,
    InvalidRequestException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    VersionConflictException,
)
from gateway.jobs.repo import Job
from gateway.registry.base import paginate

Params = dict[str, Any]
TEMPLATE_MEMBERS = ("description", "presignedUrlConfig", "jobExecutionsRolloutConfig", "abortConfig", "timeoutConfig",
                    "jobExecutionsRetryConfig")  # fmt: skip
UPDATABLE = TEMPLATE_MEMBERS


class GroupMembers(Protocol):
    def __call__(self, group: str) -> list[str] | None: ...


# (bucket, key) -> the object's bytes; raises when it is missing
S3Reader = Callable[[str, str], bytes]


class JobsControl:
    def __init__(self, engine: JobsEngine, members: GroupMembers, read_s3: S3Reader | None = None) -> None:
        self.engine = engine
        self.repo = engine.repo
        self.members = members
        self.read_s3 = read_s3

    def _job(self, job_id: str) -> Job:
        job = self.repo.job(job_id)
        if job is None:
            raise ResourceNotFoundException(f"Job {job_id} does not exist")
        return job

    def _document(self, params: Params) -> str:
        document, source = params.get("document"), params.get("documentSource")
        if (document is None) == (source is None):
            raise InvalidRequestException("Exactly one of document and documentSource is required")
        if source is not None:
            bucket, key = documents.s3_location(str(source))
            if self.read_s3 is None:
                raise InvalidRequestException("edgesim has no S3 store to read documentSource from")
            try:
                data = self.read_s3(bucket, key)
            except Exception as exc:
                raise InvalidRequestException(f"The job document {source} could not be read: {exc}") from exc
            if len(data) > documents.MAX_DOCUMENT_BYTES:
                documents.check_document(data.decode("utf-8", "replace"))
            try:
                document = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequestException(f"The job document {source} is not UTF-8") from exc
        return documents.check_document(str(document))

    def _things(self, targets: Any) -> list[str]:
        """The things an ARN list names, thing groups expanded (child groups too), in order and once each."""
        if not isinstance(targets, list) or not targets:
            raise InvalidRequestException("targets must list at least one thing or thing group ARN")
        out: dict[str, None] = {}
        for arn in targets:
            kind, _, name = str(arn).rpartition(":")[2].partition("/")
            if kind == "thing" and name:
                if not self.engine.registry.thing_exists(name):
                    raise ResourceNotFoundException(f"Thing {name} does not exist")
                out[name] = None
            elif kind == "thinggroup" and name:
                things = self.members(name)
                if things is None:
                    raise ResourceNotFoundException(f"Thing group {name} does not exist")
                out.update(dict.fromkeys(things))
            else:
                raise InvalidRequestException(f"{arn} is not a thing or thing group ARN")
        return list(out)

    # ---- jobs
    def create_job(self, params: Params) -> dict[str, Any]:
        job_id = documents.check_id(params.get("jobId"))
        template_arn = params.get("jobTemplateArn")
        if template_arn:
            template = self.repo.template(str(template_arn).rpartition("/")[2])
            if template is None:
                raise ResourceNotFoundException(f"Job template {template_arn} does not exist")
            for member in (*TEMPLATE_MEMBERS, "document", "documentSource"):
                if params.get(member) is None and template.get(member) is not None:
                    params = {**params, member: template[member]}
            if params.get("document") is not None and params.get("documentSource") is not None:
                params = {k: v for k, v in params.items() if k != ("documentSource" if "document" in template
                                                                   else "document")}  # fmt: skip
        document = self._document(params)
        documents.check_configs(params)
        selection = params.get("targetSelection") or "SNAPSHOT"
        if selection not in ("SNAPSHOT", "CONTINUOUS"):
            raise InvalidRequestException("targetSelection must be SNAPSHOT or CONTINUOUS")
        things = self._things(params.get("targets"))
        scheduling = params.get("schedulingConfig") or {}
        start_ms = documents.parse_schedule_time(scheduling.get("startTime"))
        documents.parse_schedule_time(scheduling.get("endTime"))
        now = self.engine.clock.wall_ms()
        spec = {k: params[k] for k in (*views.SPEC_MEMBERS, "targets", "documentSource") if params.get(k) is not None}
        with self.engine.change():
            if self.repo.job(job_id) is not None:
                raise ResourceAlreadyExistsException(f"Job {job_id} already exists")
            job = Job(job_id, states.SCHEDULED, selection, spec, document, now, now)
            self.repo.save_job(job)
            if start_ms is None or start_ms <= now:
                self.engine.start(job, things, now)
        out = {"jobArn": self.engine.job_arn(job_id), "jobId": job_id}
        if spec.get("description"):
            out["description"] = spec["description"]
        return out

    def describe_job(self, params: Params) -> dict[str, Any]:
        job = self._job(params["jobId"])
        view = views.job_view(job, self.engine.job_arn(job.job_id), self.engine.counts(job.job_id),
                              self.repo.awaiting_rollout(job.job_id))  # fmt: skip
        out: dict[str, Any] = {"job": view}
        if job.spec.get("documentSource"):
            out["documentSource"] = job.spec["documentSource"]
        return out

    def get_job_document(self, params: Params) -> dict[str, Any]:
        return {"document": self._job(params["jobId"]).document}

    def list_jobs(self, params: Params) -> dict[str, Any]:
        jobs = self.repo.jobs(params.get("status"), params.get("targetSelection"))
        group = params.get("thingGroupName")
        if group:
            arn = self.engine.registry.arn("thinggroup", group)
            jobs = [j for j in jobs if arn in j.spec.get("targets", [])]
        page, token = paginate(jobs, params.get("maxResults"), params.get("nextToken"))
        out: dict[str, Any] = {"jobs": [views.job_summary(j, self.engine.job_arn(j.job_id)) for j in page]}
        if token:
            out["nextToken"] = token
        return out

    def update_job(self, params: Params) -> None:
        documents.check_configs(params)
        with self.engine.change():
            job = self._job(params["jobId"])
            states.check_update_job(job.status, job.job_id)
            for member in UPDATABLE:
                if params.get(member) is not None:
                    job.spec[member] = params[member]
            job.updated_ms = self.engine.clock.wall_ms()
            self.repo.save_job(job)

    def cancel_job(self, params: Params) -> dict[str, Any]:
        force = bool(params.get("force"))
        with self.engine.change():
            job = self._job(params["jobId"])
            states.check_cancel_job(job.status, force, job.job_id)
            self.engine.cancel(job, self.engine.clock.wall_ms(), force=force, comment=params.get("comment"),
                               reason_code=params.get("reasonCode"))  # fmt: skip
        out = {"jobArn": self.engine.job_arn(job.job_id), "jobId": job.job_id}
        if job.spec.get("description"):
            out["description"] = job.spec["description"]
        return out

    def delete_job(self, params: Params) -> None:
        force = bool(params.get("force"))
        now = self.engine.clock.wall_ms()
        with self.engine.change():
            job = self._job(params["jobId"])
            states.check_delete_job(job.status, force, job.job_id)
            job.status = states.DELETION_IN_PROGRESS
            self.engine.job_event(job, "deletion_in_progress", now)
            for e in self.repo.pending_for_job(job.job_id):
                self.engine.touch(e.thing)
            self.repo.delete_job(job.job_id)  # its executions and rollout queue go with it
            self.engine.forget_counts(job.job_id)
            self.engine.job_event(job, "deleted", now)

    # ---- executions
    def _execution(self, job_id: str, thing: str, number: Any = None) -> Any:
        number = execution_number(number)
        e = self.repo.latest(job_id, thing) if number is None else self.repo.execution(job_id, thing, number)
        if e is None:
            raise ResourceNotFoundException(f"No job execution of job {job_id} on thing {thing}")
        return e

    def describe_job_execution(self, params: Params) -> dict[str, Any]:
        e = self._execution(params["jobId"], params["thingName"], params.get("executionNumber"))
        deadline = self.engine.deadline(e, self.repo.job(e.job_id))
        now = self.engine.clock.wall_ms()
        return {"execution": views.execution_view(e, self.engine.thing_arn(e.thing), now, deadline)}

    def list_job_executions_for_job(self, params: Params) -> dict[str, Any]:
        self._job(params["jobId"])
        latest: dict[str, Any] = {}
        for e in self.repo.executions_for_job(params["jobId"]):
            latest[e.thing] = e
        rows = [e for e in latest.values() if not params.get("status") or e.status == params["status"]]
        page, token = paginate(rows, params.get("maxResults"), params.get("nextToken"))
        out: dict[str, Any] = {"executionSummaries": [
            {"thingArn": self.engine.thing_arn(e.thing), "jobExecutionSummary": views.execution_summary(e)}
            for e in page
        ]}  # fmt: skip
        if token:
            out["nextToken"] = token
        return out

    def list_job_executions_for_thing(self, params: Params) -> dict[str, Any]:
        rows = self.repo.executions_for_thing(params["thingName"], params.get("status"))
        page, token = paginate(rows, params.get("maxResults"), params.get("nextToken"))
        out: dict[str, Any] = {"executionSummaries": [
            {"jobId": e.job_id, "jobExecutionSummary": views.execution_summary(e)} for e in page
        ]}  # fmt: skip
        if token:
            out["nextToken"] = token
        return out

    def cancel_job_execution(self, params: Params) -> None:
        force = bool(params.get("force"))
        with self.engine.change():
            e = self._execution(params["jobId"], params["thingName"])
            expected = params.get("expectedVersion")
            if expected is not None and int(expected) != e.version:
                raise VersionConflictException(
                    f"expectedVersion {expected} does not match the execution's version {e.version}"
                )
            states.check_cancel_execution(e.status, force, e.job_id, e.thing)
            details = dict(e.status_details)
            details.update(params.get("statusDetails") or {})
            e.force_canceled = force and e.status == states.IN_PROGRESS
            self.engine.set_status(e, states.CANCELED, self.engine.clock.wall_ms(), details)

    def delete_job_execution(self, params: Params) -> None:
        with self.engine.change():
            e = self._execution(params["jobId"], params["thingName"], params["executionNumber"])
            states.check_delete_execution(e.status, bool(params.get("force")), e.job_id, e.thing)
            self.engine.touch(e.thing)
            self.repo.delete_execution(e.job_id, e.thing, e.execution_number)
            self.engine.forget_counts(e.job_id)

    # ---- templates
    def create_job_template(self, params: Params) -> dict[str, Any]:
        template_id = documents.check_id(params.get("jobTemplateId"), "jobTemplateId")
        if not params.get("description"):
            raise InvalidRequestException("description is required")
        record: dict[str, Any] = {k: params[k] for k in TEMPLATE_MEMBERS if params.get(k) is not None}
        if params.get("jobArn"):
            job = self._job(str(params["jobArn"]).rpartition("/")[2])
            record = {**{k: job.spec[k] for k in TEMPLATE_MEMBERS if k in job.spec}, **record}
            record["document"] = job.document
        else:
            document = self._document(params)
            if params.get("documentSource"):
                record["documentSource"] = params["documentSource"]
            else:
                record["document"] = document
        documents.check_configs(record)
        now = self.engine.clock.wall_ms()
        arn = self.engine.registry.arn("jobtemplate", template_id)
        record.update({"jobTemplateArn": arn, "jobTemplateId": template_id, "createdAt": now / 1000.0})
        with self.engine.store.transaction():
            if self.repo.template(template_id) is not None:
                raise ConflictException(f"Job template {template_id} already exists")
            self.repo.save_template(template_id, record, now)
        return {"jobTemplateArn": arn, "jobTemplateId": template_id}

    def describe_job_template(self, params: Params) -> dict[str, Any]:
        record = self.repo.template(params["jobTemplateId"])
        if record is None:
            raise ResourceNotFoundException(f"Job template {params['jobTemplateId']} does not exist")
        return record

    def list_job_templates(self, params: Params) -> dict[str, Any]:
        rows = self.repo.templates()
        page, token = paginate(rows, params.get("maxResults"), params.get("nextToken"))
        keys = ("jobTemplateArn", "jobTemplateId", "description", "createdAt")
        out: dict[str, Any] = {"jobTemplates": [{k: r[k] for k in keys if k in r} for r in page]}
        if token:
            out["nextToken"] = token
        return out

    def delete_job_template(self, params: Params) -> None:
        with self.engine.store.transaction():
            if self.repo.template(params["jobTemplateId"]) is None:
                raise ResourceNotFoundException(f"Job template {params['jobTemplateId']} does not exist")
            self.repo.delete_template(params["jobTemplateId"])
