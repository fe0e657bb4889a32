"""Delivery checks (read the manifest back from the destination, confirm every file arrived intact) and freshness
checks (a scheduled dataflow has exported within its cadence)."""

import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetRecordsFilter,
    PreviewWarning,
    asset_check,
    multi_asset_check,
)

from ajo_exports.assets import DELIVERY_CHECK, DESTINATION_TAG, ExportAssetSpec, partitions_of, same_signature
from ajo_exports.config import Frequency, Schedule


def latest_export(context: AssetCheckExecutionContext, spec: ExportAssetSpec):
    """The latest materialization's metadata of the export asset (of this run's partition, when partitioned)."""
    partition = context.partition_key if context.has_partition_key else None
    result = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=spec.key, asset_partitions=[partition] if partition else None), limit=1
    )
    if not result.records:
        return None
    return result.records[0].asset_materialization.metadata


def delivery_check(spec: ExportAssetSpec) -> AssetChecksDefinition:
    with warnings.catch_warnings():  # partitioned checks are "preview" in Dagster 1.13; they verify each window
        warnings.simplefilter("ignore", PreviewWarning)
        return _delivery_check(spec)


def _delivery_check(spec: ExportAssetSpec) -> AssetChecksDefinition:
    @asset_check(
        asset=spec.key,
        name=DELIVERY_CHECK,
        required_resource_keys={spec.io_manager_key},
        partitions_def=partitions_of(spec.dataflow.schedule),
        op_tags={DESTINATION_TAG: spec.destination.name},
        description="Every file the manifest lists exists at the destination with its size and sha256, "
        "and the manifest's rows equal the rows the export read.",
    )
    @same_signature
    def _check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        from ajo_exports.export.manifest import ExportedFile  # polars is imported by runs, not by definitions
        from ajo_exports.export.verify import verify_files, verify_manifest

        metadata = latest_export(context, spec)
        if metadata is None:
            return AssetCheckResult(passed=False, description="not exported yet", severity=AssetCheckSeverity.WARN)
        manifest_key = metadata["manifest_key"].value
        rows = metadata["rows"].value
        io_manager = getattr(context.resources, spec.io_manager_key)
        with io_manager.destination.open_storage() as storage:
            if manifest_key:
                result = verify_manifest(storage, manifest_key, rows)
            else:  # manifest turned off: verify against what the export recorded in Dagster
                files = [ExportedFile(**item) for item in metadata["files_detail"].value]
                result = verify_files(storage, metadata["folder"].value, files, rows, spec.dataset.dataset_id)
        return AssetCheckResult(
            passed=result.passed,
            description=result.summary(),
            metadata={
                "files_checked": result.files_checked,
                "rows": result.rows,
                "manifest_key": manifest_key or "(manifest off)",
                "problems": "\n".join(result.problems) or "none",
            },
        )

    return _check


FRESHNESS_CHECK = "fresh"
FRESHNESS_GRACE = timedelta(hours=1)


def cadence_of(schedule: Schedule) -> timedelta | None:
    if schedule.frequency is Frequency.DAILY:
        return timedelta(days=1)
    if schedule.frequency is Frequency.HOURLY:
        return timedelta(hours=schedule.every_hours or 0)
    return None


def freshness_allowed(spec: ExportAssetSpec) -> tuple[timedelta, timedelta] | None:
    """(cadence, allowed age) of a scheduled, enabled dataflow's export; None when it has no freshness check."""
    cadence = cadence_of(spec.dataflow.schedule)
    if cadence is None or not spec.dataflow.enabled:
        return None
    return cadence, cadence + FRESHNESS_GRACE


def freshness_checks(
    specs: list[ExportAssetSpec], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> AssetChecksDefinition | None:
    """The `fresh` check of every scheduled export: stale when its last success is older than the cadence plus a
    grace period, the symptom of a stopped schedule, an unconfirmed change or a passed end date.

    One definition (one op, subsettable) holds all of them: each is still its own check in the UI, and the
    export_freshness sensor evaluates them in one step instead of one step per export."""
    allowed_by_key = {}
    check_specs = []
    for spec in specs:
        bounds = freshness_allowed(spec)
        if bounds is None:
            continue
        cadence, allowed = bounds
        check = AssetCheckSpec(
            FRESHNESS_CHECK,
            asset=spec.key,
            description=f"The last successful export is at most {allowed} old (cadence {cadence} + grace).",
        )
        allowed_by_key[check.key] = allowed
        check_specs.append(check)
    if not check_specs:
        return None

    @multi_asset_check(name="export_freshness_check", specs=check_specs, can_subset=True)
    def _check(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        for key in sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.to_user_string()):
            allowed = allowed_by_key[key]
            records = context.instance.fetch_materializations(key.asset_key, limit=1).records
            if not records:
                yield AssetCheckResult(
                    asset_key=key.asset_key, check_name=FRESHNESS_CHECK, passed=False, description="never exported"
                )
                continue
            last = datetime.fromtimestamp(records[0].timestamp, UTC)
            age = clock() - last
            yield AssetCheckResult(
                asset_key=key.asset_key,
                check_name=FRESHNESS_CHECK,
                passed=age <= allowed,
                description=f"last export {last:%Y-%m-%d %H:%M} UTC, {age.total_seconds() / 3600:.1f} h ago "
                f"(allowed {allowed.total_seconds() / 3600:.1f} h)",
                metadata={
                    "age_hours": round(age.total_seconds() / 3600, 2),
                    "allowed_hours": allowed.total_seconds() / 3600,
                },
            )

    return _check
