"""Sensors: alerts on failed exports, a warning before a dataflow's end date, and the lineage record of exports.

AEP stops a dataflow silently at its end date, and alerts on failed runs only by subscription; these make both
visible. The lineage sensor records, on each dataset asset, every delivery of it (dataflow, destination, window,
manifest URI): what `ajo-exports verify` and a person in the UI read to know where the data went.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckKey,
    AssetObservation,
    AssetRecordsFilter,
    DefaultSensorStatus,
    MetadataValue,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from ajo_exports.assets import (
    DATAFLOW_TAG,
    DELIVERY_CHECK,
    DESTINATION_TAG,
    GUARDRAIL_CHECK,
    ExportAssetSpec,
    dataflows_of_run,
    dataset_key,
    job_name,
)
from ajo_exports.config import ExportsConfig
from ajo_exports.destinations.resource import open_destination
from ajo_exports.lake.resource import LakeResource

log = logging.getLogger(__name__)
END_DATE_WARNING = timedelta(days=14)
LATE_LOOKBACK = timedelta(days=7)  # windows exported this recently are compared with the lake on every tick


def post_webhook(url: str, payload: dict, timeout: float = 10.0) -> int:
    """POST a JSON alert; a webhook that is down is logged, never allowed to fail the sensor."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the configured hook
            return response.status
    except OSError as exc:
        log.warning("alert webhook did not answer: %s", type(exc).__name__)
        return 0


def failure_sensor(config: ExportsConfig) -> SensorDefinition:
    """Every job of the code location, not only the dataflow jobs: the UI's Materialize button and asset backfills
    run Dagster's implicit asset job, and a failed on-demand export must be alerted like a scheduled one."""

    @run_failure_sensor(
        name="export_failure_alerts",
        default_status=DefaultSensorStatus.RUNNING,
        description="Logs every failed run (dataflow jobs, on-demand exports from the UI) and posts it to the "
        "configured webhook.",
    )
    def _alert(context: RunFailureSensorContext) -> None:
        run = context.dagster_run
        message = context.failure_event.message or "run failed"
        dataflows = dataflows_of_run(run)
        named = f" (dataflow {', '.join(dataflows)})" if dataflows else ""
        context.log.error(f"export run {run.run_id} of {run.job_name}{named} failed: {message}")
        if config.webhook_url:
            post_webhook(
                config.webhook_url,
                {
                    "event": "export_failed",
                    "job": run.job_name,
                    "runId": run.run_id,
                    "dataflow": ", ".join(dataflows) or None,
                    "dataflows": dataflows,
                    "partition": run.tags.get("dagster/partition"),
                    "message": message,
                },
            )

    return _alert


def end_date_sensor(
    config: ExportsConfig, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> SensorDefinition:
    @sensor(
        name="dataflow_end_dates",
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING,
        description="Warns when an enabled dataflow's end date is within 14 days or has passed: AEP stops silently.",
    )
    def _warn(context: SensorEvaluationContext) -> SkipReason:
        now = clock()
        notes = []
        for flow in config.dataflows:
            end = flow.schedule.end
            if not flow.enabled or end is None:
                continue
            if end <= now:
                notes.append(f"dataflow {flow.name!r} ended at {end:%Y-%m-%d %H:%M} UTC and exports nothing more")
            elif end - now <= END_DATE_WARNING:
                days = (end - now).days
                notes.append(f"dataflow {flow.name!r} ends in {days} days, at {end:%Y-%m-%d %H:%M} UTC")
        for note in notes:
            context.log.warning(note + ": extend its end date to keep exporting")
        if notes and config.webhook_url:
            post_webhook(config.webhook_url, {"event": "dataflow_end_date", "warnings": notes})
        return SkipReason("; ".join(notes) if notes else "no dataflow ends within 14 days")

    return _warn


def lineage_sensor(specs: list[ExportAssetSpec]) -> SensorDefinition:
    @sensor(
        name="export_lineage",
        minimum_interval_seconds=30,
        default_status=DefaultSensorStatus.RUNNING,
        description="Records each successful export as an observation on its dataset asset.",
    )
    def _record(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        after = int(context.cursor or 0)
        newest, events = after, []
        for spec in specs:
            records = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=spec.key, after_storage_id=after), limit=1000, ascending=True
            ).records
            for record in records:
                metadata = {key: getattr(v, "value", v) for key, v in record.asset_materialization.metadata.items()}
                value = lambda key, metadata=metadata: metadata.get(key, "")  # noqa: E731
                events.append(
                    AssetObservation(
                        asset_key=dataset_key(spec.dataset),
                        metadata={
                            "exported_by_dataflow": spec.dataflow.name,
                            "destination": spec.destination.name,
                            "destination_type": spec.destination.type,
                            "window": record.asset_materialization.partition or value("export_time"),
                            "export_time": value("export_time"),
                            "manifest_uri": value("manifest_uri"),
                            "rows": value("rows"),
                            "run_id": record.run_id,
                        },
                    )
                )
                newest = max(newest, record.storage_id)
        if not events:
            return SkipReason("no new exports since the last lineage record")
        return SensorResult(asset_events=events, cursor=str(newest))

    return _record


def freshness_sensor(job: object, check_keys: list[AssetCheckKey]) -> SensorDefinition:
    """Evaluates the freshness checks every 15 minutes, so a silently stopped dataflow turns red in the UI."""

    @sensor(
        name="export_freshness",
        job=job,
        minimum_interval_seconds=900,
        default_status=DefaultSensorStatus.RUNNING,
        description="Runs every scheduled dataflow's freshness checks.",
    )
    def _evaluate(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        if not check_keys:
            return SkipReason("no scheduled dataflow to watch")
        return RunRequest(asset_check_keys=check_keys)

    return _evaluate


def dlz_retention_sensor(
    config: ExportsConfig, specs: list[ExportAssetSpec], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> SensorDefinition | None:
    """AEP deletes Data Landing Zone files after 7 days; this does the same and records what went, per export."""
    zones = [d for d in config.destinations if d.type == "data_landing_zone"]
    if not zones:
        return None

    @sensor(
        name="dlz_retention",
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING,
        description="Deletes exported files older than 7 days from Data Landing Zone destinations.",
    )
    def _purge(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        from ajo_exports.destinations.data_landing_zone import purge_expired  # the Azure SDK only when it runs

        events = []
        for zone in zones:
            with open_destination(zone) as storage:
                deleted = purge_expired(storage, clock())
            for spec in specs:
                mine = [key for key in deleted if spec.destination.name == zone.name and spec.dataset.dataset_id in key]
                if mine:
                    events.append(
                        AssetObservation(
                            asset_key=spec.key,
                            metadata={"dlz_retention_deleted": MetadataValue.json(mine), "deleted_files": len(mine)},
                        )
                    )
            context.log.info(f"{zone.name}: deleted {len(deleted)} files older than 7 days")
        if not events:
            return SkipReason("no Data Landing Zone file is older than 7 days")
        return SensorResult(asset_events=events)

    return _purge


def _moment(text: object) -> datetime | None:
    """An export's recorded window bound: an ISO time, or "(backfill)"/"(now)" for an open end."""
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def late_batch_sensor(specs: list[ExportAssetSpec], jobs: dict[str, object]) -> SensorDefinition | None:
    """Re-exports a window when a batch whose ingestion time lies in it became visible after it was exported (a
    slow ingestion that commits late): otherwise that batch is never exported, since later windows select by
    ingestion time. Each export records the batch IDs it took; this compares them with what the lake lists for
    the same window now, and requests the window again (a rerun replaces it exactly). The run key names the
    export, the window and the missing batches, so each late arrival is re-exported once."""
    scheduled = [spec for spec in specs if spec.dataflow.name in jobs and spec.dataflow.schedule.start is not None]
    if not scheduled:
        return None

    @sensor(
        name="late_batches",
        jobs=[jobs[name] for name in sorted({spec.dataflow.name for spec in scheduled})],
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.RUNNING,
        description="Re-exports a window when a batch ingested in it became visible after it was exported.",
    )
    def _find(context: SensorEvaluationContext, lake: LakeResource) -> list[RunRequest] | SkipReason:
        source = lake.open()
        since = (datetime.now(UTC) - LATE_LOOKBACK).timestamp()
        requests, compared = [], 0
        for spec in scheduled:
            newest: dict[str, dict] = {}  # window -> metadata of its latest export
            for record in context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=spec.key, after_timestamp=since), limit=10_000
            ).records:
                materialization = record.asset_materialization
                if materialization.partition and materialization.partition not in newest:
                    newest[materialization.partition] = {
                        key: getattr(value, "value", value) for key, value in materialization.metadata.items()
                    }
            for window, metadata in sorted(newest.items()):
                taken = metadata.get("batch_ids")
                if not isinstance(taken, list):
                    continue  # exported before batch IDs were recorded
                compared += 1
                now = source.list_batches(
                    spec.dataset, _moment(metadata.get("ingested_from")), _moment(metadata.get("ingested_until"))
                )
                taken_ids = set(taken)
                missing = sorted(batch.batch_id for batch in now if batch.batch_id not in taken_ids)
                if not missing:
                    continue
                digest = hashlib.sha256(",".join(missing).encode()).hexdigest()[:16]
                context.log.info(f"{spec.key.to_user_string()} window {window}: late batches {', '.join(missing)}")
                requests.append(
                    RunRequest(
                        run_key=f"late-batches:{spec.key.to_user_string()}:{window}:{digest}",
                        job_name=job_name(spec.dataflow.name),
                        asset_selection=[spec.key],
                        asset_check_keys=[AssetCheckKey(spec.key, name) for name in (DELIVERY_CHECK, GUARDRAIL_CHECK)],
                        partition_key=window,
                        tags={DATAFLOW_TAG: spec.dataflow.name, DESTINATION_TAG: spec.destination.name,
                              "ajo/late_batches": ",".join(missing)[:200]},
                    )
                )
        if requests:
            return requests
        return SkipReason(f"every exported window ({compared} compared) holds every batch ingested in it")

    return _find


def license_usage_sensor(specs: list[ExportAssetSpec], job: object) -> SensorDefinition:
    """Recomputes the licence-volume account after new exports, so its plot in the UI follows every delivery."""

    @sensor(
        name="license_usage",
        job=job,
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.RUNNING,
        description="Materializes ajo/license_usage when exports were delivered since it last ran.",
    )
    def _account(context: SensorEvaluationContext) -> RunRequest | SkipReason:
        after = int(context.cursor or 0)
        newest = after
        for spec in specs:
            records = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=spec.key, after_storage_id=after), limit=1
            ).records
            if records:
                newest = max(newest, records[0].storage_id)
        if newest == after:
            return SkipReason("no export delivered since the account was last computed")
        context.update_cursor(str(newest))
        return RunRequest(run_key=f"license-usage:{newest}")

    return _account
