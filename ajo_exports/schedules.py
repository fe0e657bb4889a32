"""One schedule per enabled dataflow: each tick exports the cadence window that just closed.

A tick runs only a dataflow that is confirmed as configured now (see activation.py); otherwise it skips and
says why, which the Dagster UI shows on the schedule's tick history.
"""

from __future__ import annotations

from pathlib import Path

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ajo_exports.activation import Confirmations
from ajo_exports.assets import job_name, partitions_of
from ajo_exports.config import Dataflow, ExportsConfig, Frequency
from ajo_exports.export.window import cron_for, floor_minute


def schedule_name(dataflow: str) -> str:
    return f"{job_name(dataflow)}_schedule"


def dataflow_schedule(config: ExportsConfig, flow: Dataflow, job: object, home: Path) -> ScheduleDefinition | None:
    """The dataflow's schedule, or None when it has none to keep (disabled, or a `once` without a start)."""
    plan = flow.schedule
    if not flow.enabled or plan.start is None:
        return None
    partitions = partitions_of(plan)
    if plan.frequency is Frequency.ONCE:
        cron = f"{plan.start.minute} {plan.start.hour} {plan.start.day} {plan.start.month} *"
        cadence = f"once at {plan.start:%Y-%m-%d %H:%M} UTC"
    else:
        cron = cron_for(plan)
        cadence = "daily" if plan.frequency is Frequency.DAILY else f"every {plan.every_hours} hours"
        cadence += f" from {plan.start:%Y-%m-%d %H:%M} UTC until {plan.end:%Y-%m-%d %H:%M} UTC"

    @schedule(
        name=schedule_name(flow.name),
        cron_schedule=cron,
        job=job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Dataflow {flow.name!r} to {flow.destination!r}, {cadence}. Runs only as confirmed.",
        tags={"dataflow": flow.name},
    )
    def _tick(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        may_run, why = Confirmations(home).status(config, flow)
        if not may_run:
            return SkipReason(why)
        moment = floor_minute(context.scheduled_execution_time)
        if partitions is None:
            if moment != plan.start:
                return SkipReason(f"dataflow {flow.name!r} exports once, at {plan.start.isoformat()}")
            return RunRequest(run_key=f"{flow.name}:once")
        if plan.end is not None and moment > plan.end:
            return SkipReason(f"dataflow {flow.name!r} ended at {plan.end.isoformat()}: extend its end date")
        closed = partitions.get_partition_keys(current_time=moment)
        if not closed or partitions.time_window_for_partition_key(closed[-1]).end != moment:
            return SkipReason(f"no export window of dataflow {flow.name!r} closes at {moment.isoformat()}")
        return RunRequest(run_key=f"{flow.name}:{closed[-1]}", partition_key=closed[-1])

    return _tick
