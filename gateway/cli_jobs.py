"""`edgesim jobs`: IoT Jobs of a running gateway (boto3 `iot`), for rehearsing a rollout from a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli_api import DEFAULT_ENDPOINT, Endpoint, JsonOut, api, console, emit
from gateway.cli_errors import fail

jobs_app = typer.Typer(
    help="IoT Jobs: create a job for things or thing groups, watch its executions, cancel or delete it.",
    no_args_is_help=True,
)

Things = Annotated[list[str] | None, typer.Option("--thing", "-t", help="Target thing (repeatable).")]
Groups = Annotated[list[str] | None, typer.Option("--group", "-g", help="Target thing group (repeatable).")]


def _document(document: str | None) -> str | None:
    """`--document '{...}'` or `--document @file.json`."""
    if document is None or not document.startswith("@"):
        return document
    path = Path(document[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read the job document {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"the job document {path} is not UTF-8 text")


def _arn(iot: Any, kind: str, name: str) -> str:
    if kind == "thing":
        return str(iot.describe_thing(thingName=name)["thingArn"])
    return str(iot.describe_thing_group(thingGroupName=name)["thingGroupArn"])


@jobs_app.command("create")
def jobs_create(
    job_id: Annotated[str, typer.Argument(help="Job ID: letters, digits, - and _, up to 64.")],
    thing: Things = None,
    group: Groups = None,
    document: Annotated[str | None, typer.Option(help="Job document JSON, or @FILE to read it from a file.")] = None,
    document_source: Annotated[str | None, typer.Option(help="S3 URL of the job document in edgesim's S3.")] = None,
    template: Annotated[str | None, typer.Option(help="Job template ID to take the document and configs from.")] = None,
    continuous: Annotated[bool, typer.Option(help="CONTINUOUS: things that join a target group get it too.")] = False,
    max_per_minute: Annotated[int | None, typer.Option(help="Rollout: things notified per minute (1-1000).")] = None,
    timeout_minutes: Annotated[int | None, typer.Option(help="In-progress timeout in minutes.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """CreateJob for the given things and groups."""
    if not thing and not group:
        fail("name at least one target with --thing or --group")
    params: dict[str, Any] = {"jobId": job_id, "targetSelection": "CONTINUOUS" if continuous else "SNAPSHOT"}
    body = _document(document)
    if body is not None:
        params["document"] = body
    if document_source:
        params["documentSource"] = document_source
    if max_per_minute is not None:
        params["jobExecutionsRolloutConfig"] = {"maximumPerMinute": max_per_minute}
    if timeout_minutes is not None:
        params["timeoutConfig"] = {"inProgressTimeoutInMinutes": timeout_minutes}
    if description:
        params["description"] = description
    with api("iot", endpoint) as iot:
        if template:
            params["jobTemplateArn"] = iot.describe_job_template(jobTemplateId=template)["jobTemplateArn"]
        params["targets"] = [_arn(iot, "thing", t) for t in thing or []] + [_arn(iot, "group", g) for g in group or []]
        out = iot.create_job(**params)
    out.pop("ResponseMetadata", None)
    emit(out, True) if as_json else console.print(f"job {job_id}: {out['jobArn']}", highlight=False)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state (IN_PROGRESS, COMPLETED, ...).")] = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """ListJobs."""
    with api("iot", endpoint) as iot:
        jobs = iot.list_jobs(**({"status": status} if status else {}))["jobs"]
    table = Table("job", "status", "selection", "created")
    for job in jobs:
        table.add_row(job["jobId"], job["status"], job["targetSelection"], str(job["createdAt"]))
    emit({"jobs": jobs}, as_json, table)


@jobs_app.command("describe")
def jobs_describe(job_id: str, endpoint: Endpoint = DEFAULT_ENDPOINT, as_json: JsonOut = False) -> None:
    """DescribeJob: state, configuration and executions by state."""
    with api("iot", endpoint) as iot:
        job = iot.describe_job(jobId=job_id)["job"]
    table = Table("field", "value")
    table.add_row("status", job["status"])
    table.add_row("targets", ", ".join(job.get("targets", [])))
    for name, count in job.get("jobProcessDetails", {}).items():
        if isinstance(count, int):
            table.add_row(name, str(count))
    emit({"job": job}, as_json, table)


@jobs_app.command("executions")
def jobs_executions(
    job_id: Annotated[str | None, typer.Argument(help="The job whose executions to list.")] = None,
    thing: Annotated[str | None, typer.Option(help="List this thing's executions instead.")] = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """ListJobExecutionsForJob, or ListJobExecutionsForThing with --thing."""
    if (job_id is None) == (thing is None):
        fail("give a job ID or --thing (one of them)")
    with api("iot", endpoint) as iot:
        if thing:
            rows = iot.list_job_executions_for_thing(thingName=thing)["executionSummaries"]
        else:
            rows = iot.list_job_executions_for_job(jobId=job_id)["executionSummaries"]
    table = Table("job" if thing else "thing", "status", "execution", "queued")
    for row in rows:
        summary = row["jobExecutionSummary"]
        who = row.get("jobId") or row.get("thingArn", "").rpartition("/")[2]
        table.add_row(who, summary["status"], str(summary.get("executionNumber")), str(summary.get("queuedAt")))
    emit({"executionSummaries": rows}, as_json, table)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str,
    force: Annotated[bool, typer.Option(help="Cancel IN_PROGRESS executions too.")] = False,
    comment: Annotated[str | None, typer.Option(help="Why it was canceled.")] = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """CancelJob."""
    with api("iot", endpoint) as iot:
        out = iot.cancel_job(jobId=job_id, force=force, **({"comment": comment} if comment else {}))
    out.pop("ResponseMetadata", None)
    emit(out, True) if as_json else console.print(f"job {job_id} canceled", highlight=False)


@jobs_app.command("delete")
def jobs_delete(
    job_id: str,
    force: Annotated[bool, typer.Option(help="Delete a job that is still IN_PROGRESS.")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    as_json: JsonOut = False,
) -> None:
    """DeleteJob with its executions."""
    with api("iot", endpoint) as iot:
        iot.delete_job(jobId=job_id, force=force)
    emit({"jobId": job_id, "deleted": True}, True) if as_json else console.print(f"job {job_id} deleted")
