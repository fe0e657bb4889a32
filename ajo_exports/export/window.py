"""Export windows: which ingested batches an export takes and what its exportTime is.

AEP's dataflows export incrementally by ingestion time: the first window exports everything ingested before
its end (the backfill), each later window what was ingested during it, and the folder is named after the
window's scheduled time (its end). A `once` dataflow is one full export.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import TimeWindowPartitionsDefinition

from ajo_exports.config import Frequency, Schedule

EXPORT_TIME_TAG = "ajo/export_time"
EVENT_RETENTION = timedelta(days=365)


@dataclass(frozen=True)
class ExportWindow:
    export_time: datetime  # the scheduled time, UTC, minute precision: names the exportTime= folder
    ingested_from: datetime | None  # None: from the beginning (the backfill)
    ingested_until: datetime | None  # None: up to now (a `once` export)
    partition_key: str | None = None

    @property
    def events_since(self) -> datetime:
        """Event datasets export only rows whose timestamp lies in the 365 days before the export."""
        return self.export_time - EVENT_RETENTION


def cron_for(schedule: Schedule) -> str:
    """Daily at the start's time, or every N hours counted from the start's hour (N divides 24)."""
    start = schedule.start
    assert start is not None
    if schedule.frequency is Frequency.DAILY:
        return f"{start.minute} {start.hour} * * *"
    hours = sorted({(start.hour + step) % 24 for step in range(0, 24, schedule.every_hours or 24)})
    return f"{start.minute} {','.join(map(str, hours))} * * *"


def partitions_for(schedule: Schedule) -> TimeWindowPartitionsDefinition | None:
    """One partition per cadence window from `start` to `end`; None for a `once` dataflow."""
    if schedule.frequency is Frequency.ONCE:
        return None
    assert schedule.start is not None and schedule.end is not None
    return TimeWindowPartitionsDefinition(
        start=schedule.start,
        end=schedule.end,
        cron_schedule=cron_for(schedule),
        fmt="%Y-%m-%d" if schedule.frequency is Frequency.DAILY else "%Y-%m-%d-%H:%M",
        timezone="UTC",
    )


def floor_minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def window_for(
    schedule: Schedule,
    *,
    time_window: tuple[datetime, datetime] | None,
    partition_key: str | None,
    tags: dict[str, str],
    run_created: datetime,
) -> ExportWindow:
    """The window of one run: a partition's time window, or a `once` export at its start, tag or run time."""
    if time_window is not None:
        start, end = (moment.astimezone(UTC) for moment in time_window)
        first = schedule.start is not None and start <= schedule.start
        return ExportWindow(floor_minute(end), None if first else start, end, partition_key)
    if EXPORT_TIME_TAG in tags:
        export_time = datetime.fromisoformat(tags[EXPORT_TIME_TAG].replace("Z", "+00:00"))
    else:
        export_time = schedule.start or run_created
    return ExportWindow(floor_minute(export_time), None, None, None)
