"""Run a dataflow's exports or delivery checks through a Dagster instance, and report them as plain values.

The CLI and the tests use this, so `ajo-exports run` takes the same code path as the UI: the same jobs, the same
IO managers, and runs recorded in the instance that `dagster dev` shows afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from dagster import AssetCheckKey, AssetKey, DagsterEventType, DagsterInstance, Definitions, RunsFilter

from ajo_exports.assets import DELIVERY_CHECK, ExportAssetSpec, job_name
from ajo_exports.export.window import EXPORT_TIME_TAG


@dataclass
class ExportReport:
    """One export asset's outcome in a run."""

    slug: str
    tier: str
    metadata: dict = field(default_factory=dict)
    check_passed: bool | None = None
    check_description: str = ""


@dataclass
class RunReport:
    success: bool
    run_id: str
    exports: dict[str, ExportReport] = field(default_factory=dict)
    error: str | None = None


def plain(metadata: dict) -> dict:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def own_error(step_key: str, error) -> str:
    """A failed step's own error (beneath Dagster's wrappers), in one line and without a traceback."""
    while error is not None and error.cls_name and error.cls_name.startswith("Dagster") and error.cause:
        error = error.cause
    message = (error.message if error else "step failed").strip().splitlines()[0]
    return f"{step_key}: {message}"


def first_error(result) -> str | None:
    """The first failed step's error in one line."""
    for event in result.get_step_failure_events():
        return own_error(event.step_key, event.step_failure_data.error)
    failure = result.get_run_failure_event()
    return failure.message if failure else None


def _selected(specs: list[ExportAssetSpec], dataflow: str, datasets: list[str] | None) -> list[ExportAssetSpec]:
    return [s for s in specs if s.dataflow.name == dataflow and (not datasets or s.dataset.slug in datasets)]


def run_dataflow(
    defs: Definitions,
    specs: list[ExportAssetSpec],
    instance: DagsterInstance,
    *,
    dataflow: str,
    datasets: list[str] | None = None,
    partition_key: str | None = None,
    export_time: datetime | None = None,
    checks_only: bool = False,
    with_checks: bool = True,
    log_level: str = "CRITICAL",
) -> RunReport:
    """Materialize the selected exports of a dataflow (and, by default, their delivery checks) in one run."""
    chosen = _selected(specs, dataflow, datasets)
    checks = {AssetCheckKey(s.key, DELIVERY_CHECK) for s in chosen} if (with_checks or checks_only) else set()
    job = defs.resolve_job_def(job_name(dataflow)).get_subset(
        asset_selection=set() if checks_only else {s.key for s in chosen}, asset_check_selection=checks
    )
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        tags={EXPORT_TIME_TAG: export_time.isoformat()} if export_time else {},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    )
    report = RunReport(
        success=result.success, run_id=result.run_id, error=None if result.success else first_error(result)
    )
    by_key: dict[AssetKey, ExportAssetSpec] = {s.key: s for s in chosen}
    for spec in chosen:
        report.exports[spec.dataset.slug] = ExportReport(spec.dataset.slug, spec.dataset.tier.value)
    for event in result.get_asset_materialization_events():
        spec = by_key.get(event.asset_key)
        if spec:
            report.exports[spec.dataset.slug].metadata = plain(event.materialization.metadata)
    for evaluation in result.get_asset_check_evaluations():
        spec = by_key.get(evaluation.asset_key)
        if spec:
            item = report.exports[spec.dataset.slug]
            item.check_passed = evaluation.passed
            item.check_description = evaluation.description or ""
    return report


@dataclass
class DataflowRun:
    """One row of AEP's "dataflow runs" view, read back from the Dagster instance."""

    run_id: str
    status: str
    window: str
    started: datetime | None
    seconds: float | None
    datasets: int
    records: int
    files: int
    bytes: int
    errors: list[str]


def dataflow_runs(instance: DagsterInstance, dataflow: str, limit: int = 20) -> list[DataflowRun]:
    """The dataflow's latest runs with their status, records, files, bytes and errors, newest first."""
    records = instance.get_run_records(RunsFilter(job_name=job_name(dataflow)), limit=limit)
    rows = []
    for record in records:
        run = record.dagster_run
        materializations = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=10_000
        ).records
        totals = {"rows": 0, "files": 0, "bytes": 0}
        for entry in materializations:
            metadata = entry.event_log_entry.asset_materialization.metadata
            for key in totals:
                totals[key] += int(getattr(metadata.get(key), "value", 0) or 0)
        failures = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_FAILURE).records
        errors = [
            own_error(entry.event_log_entry.step_key, entry.event_log_entry.dagster_event.step_failure_data.error)
            for entry in failures
        ]
        started = datetime.fromtimestamp(record.start_time, UTC) if record.start_time else None
        seconds = record.end_time - record.start_time if record.start_time and record.end_time else None
        rows.append(
            DataflowRun(
                run.run_id,
                run.status.value,
                run.tags.get("dagster/partition", run.tags.get(EXPORT_TIME_TAG, "-")),
                started,
                seconds,
                len(materializations),
                totals["rows"],
                totals["files"],
                totals["bytes"],
                errors,
            )
        )
    return rows
