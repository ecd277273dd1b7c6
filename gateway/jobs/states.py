"""Job and job-execution states and the transitions AWS's state diagrams allow (pure: no clock, no I/O)."""

from __future__ import annotations

from typing import Final

from gateway.jobs.exceptions import InvalidStateTransitionException

# Job states.
SCHEDULED: Final = "SCHEDULED"
IN_PROGRESS: Final = "IN_PROGRESS"
CANCELED: Final = "CANCELED"
COMPLETED: Final = "COMPLETED"
DELETION_IN_PROGRESS: Final = "DELETION_IN_PROGRESS"
JOB_STATES: Final = (SCHEDULED, IN_PROGRESS, CANCELED, COMPLETED, DELETION_IN_PROGRESS)

# Job-execution states.
QUEUED: Final = "QUEUED"
SUCCEEDED: Final = "SUCCEEDED"
FAILED: Final = "FAILED"
TIMED_OUT: Final = "TIMED_OUT"
REJECTED: Final = "REJECTED"
REMOVED: Final = "REMOVED"
EXECUTION_STATES: Final = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED)
TERMINAL: Final = frozenset({SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED})
PENDING: Final = frozenset({QUEUED, IN_PROGRESS})

# What a device may set with UpdateJobExecution, from each state it may leave (the execution state diagram).
_DEVICE_MOVES: Final = {
    QUEUED: frozenset({IN_PROGRESS, SUCCEEDED, FAILED, REJECTED}),
    IN_PROGRESS: frozenset({IN_PROGRESS, SUCCEEDED, FAILED, REJECTED}),
}
DEVICE_SETTABLE: Final = frozenset({IN_PROGRESS, SUCCEEDED, FAILED, REJECTED})

# The counter of jobProcessDetails each execution state adds to.
PROCESS_COUNTERS: Final = {
    QUEUED: "numberOfQueuedThings",
    IN_PROGRESS: "numberOfInProgressThings",
    SUCCEEDED: "numberOfSucceededThings",
    FAILED: "numberOfFailedThings",
    TIMED_OUT: "numberOfTimedOutThings",
    REJECTED: "numberOfRejectedThings",
    REMOVED: "numberOfRemovedThings",
    CANCELED: "numberOfCanceledThings",
}


def check_device_update(current: str, wanted: str, job_id: str, thing: str) -> None:
    """Raise AWS's error when a device asks to move an execution from `current` to `wanted`."""
    if wanted not in DEVICE_SETTABLE:
        raise InvalidStateTransitionException(
            f"Job execution status cannot be set to {wanted}: a device may set IN_PROGRESS, SUCCEEDED, FAILED or "
            "REJECTED"
        )
    if wanted not in _DEVICE_MOVES.get(current, frozenset()):
        raise InvalidStateTransitionException(
            f"Job execution of job {job_id} on thing {thing} cannot move from {current} to {wanted}"
        )


def check_cancel_execution(current: str, force: bool, job_id: str, thing: str) -> None:
    """CancelJobExecution: QUEUED always, IN_PROGRESS only with force, never a terminal execution."""
    if current == QUEUED or (current == IN_PROGRESS and force):
        return
    if current == IN_PROGRESS:
        raise InvalidStateTransitionException(
            f"Job execution of job {job_id} on thing {thing} is IN_PROGRESS: set force to cancel it"
        )
    raise InvalidStateTransitionException(
        f"Job execution of job {job_id} on thing {thing} is already in terminal state {current}"
    )


def check_delete_execution(current: str, force: bool, job_id: str, thing: str) -> None:
    """DeleteJobExecution: a terminal execution, or any with force."""
    if current not in TERMINAL and not force:
        raise InvalidStateTransitionException(
            f"Job execution of job {job_id} on thing {thing} is {current}: only a terminal execution can be deleted "
            "without force"
        )


def check_cancel_job(current: str, force: bool, job_id: str) -> None:
    """CancelJob: a scheduled or running job; a canceled one again only to force-cancel its running executions."""
    if current in (IN_PROGRESS, SCHEDULED) or (current == CANCELED and force):
        return
    raise InvalidStateTransitionException(f"Job {job_id} is {current} and cannot be canceled")


def check_delete_job(current: str, force: bool, job_id: str) -> None:
    """DeleteJob: a job still IN_PROGRESS only with force."""
    if current == DELETION_IN_PROGRESS:
        raise InvalidStateTransitionException(f"Job {job_id} is already being deleted")
    if current == IN_PROGRESS and not force:
        raise InvalidStateTransitionException(f"Job {job_id} is IN_PROGRESS: set force to delete it")


def check_update_job(current: str, job_id: str) -> None:
    if current in (COMPLETED, DELETION_IN_PROGRESS):
        raise InvalidStateTransitionException(f"Job {job_id} is {current} and cannot be updated")


def is_complete(target_selection: str, status: str, counts: dict[str, int], awaiting_rollout: int) -> bool:
    """A SNAPSHOT job is COMPLETED once every target has an execution and every execution is terminal; a CONTINUOUS
    job never completes on its own."""
    if status != IN_PROGRESS or target_selection != "SNAPSHOT" or awaiting_rollout:
        return False
    return not any(counts.get(state, 0) for state in PENDING)
