"""Run a dataflow's exports or delivery checks through a Dagster instance, and report them as plain values.

The CLI and the tests use this, so `ajo-exports run` takes the same code path as the UI: the same jobs, the same
IO managers, and runs recorded in the instance that `dagster dev` shows afterwards.

A run of one export executes in this process (`execute_in_process`: nothing to run beside it, no process to
start). A run of several executes them concurrently in step processes (`execute_job` with the jobs' multiprocess
executor), each rebuilding the dataflow's job from the config file (`StepProcesses`); the report is the same.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    RunsFilter,
    build_reconstructable_job,
    execute_job,
)

from ajo_exports.assets import (
    DATAFLOW_TAG,
    DELIVERY_CHECK,
    GUARDRAIL_CHECK,
    IMPLICIT_ASSET_JOB,
    ExportAssetSpec,
    dataflows_of_run,
    job_name,
)
from ajo_exports.config import config_digest
from ajo_exports.export.window import EXPORT_TIME_TAG

PARTITION_TAG = "dagster/partition"
# What the forkserver imports once for all the step processes it forks (the executor's `preload_modules`): Dagster
# with what each step imports to open the instance (SQLite storage, compute logs, secrets loader), polars and the
# project, definitions included (their import builds the definitions of the config in force once, not per step),
# and the CLI (a step process re-imports the main module).
STEP_PRELOAD = (
    "dagster",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.root",
    "dagster._core.storage.migration.utils",
    "dagster._core.instance.factory",
    "dagster._core.secrets.env_file",
    "dagster._core.definitions.repository_definition.repository_data_builder",
    "dagster._core.definitions.external_asset",
    "dagster._core.system_config.composite_descent",
    "dagster._core.workspace.autodiscovery",
    "dagster._utils.test.definitions",
    "upath.core",
    "upath.implementations.local",
    "watchdog.observers.polling",
    "multiprocessing.popen_forkserver",
    "multiprocessing.queues",
    "multiprocessing.synchronize",
    "polars",
    "polars._utils.parquet",
    "ajo_exports.export.io_manager",
    "ajo_exports.export.verify",
    "ajo_exports.definitions",
    "ajo_exports.cli",
)


# Jobs (`dataflow_job` arguments, JSON) that the forkserver builds when it imports ajo_exports.definitions, so that
# the step processes it forks find them built instead of each building its own.
STEP_JOBS_ENV = "AJO_EXPORTS_STEP_JOBS"


def start_step_processes(log: Path | None = None, jobs: Sequence[tuple[str, str, str, str]] = ()) -> None:
    """Start the forkserver that forks the step processes now rather than at the first step, so that its imports
    (seconds) overlap with this process's own work, and have it build `jobs` once for all steps. With `log`, the
    forkserver and every step process write their standard output and error there (Dagster prints a line per step
    started) instead of into this process's. Does nothing when the forkserver already runs."""
    import multiprocessing.forkserver as forkserver

    forkserver.set_forkserver_preload(["dagster._core.executor.multiprocess", *STEP_PRELOAD])  # as the executor does
    saved_env = os.environ.get(STEP_JOBS_ENV)
    os.environ[STEP_JOBS_ENV] = json.dumps([list(job) for job in jobs])
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2)) if log else ()
    try:
        if log:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as sink:
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
        forkserver.ensure_running()
    finally:
        for fd, copy in zip((1, 2), saved, strict=False):
            os.dup2(copy, fd)
            os.close(copy)
        if saved_env is None:
            os.environ.pop(STEP_JOBS_ENV, None)
        else:
            os.environ[STEP_JOBS_ENV] = saved_env


@dataclass(frozen=True)
class StepProcesses:
    """Where a step process rebuilds the definitions of a run: the config file they came from and the home
    (AJO_EXPORTS_HOME) they export from. Both must be what the definitions passed to `run_dataflow` were built of."""

    config_file: Path
    home: Path

    def job_args(self, dataflow: str) -> tuple[str, str, str, str]:
        """`ajo_exports.definitions.dataflow_job`'s arguments: these paths, the config file's digest (a step
        refuses to run if the file changed since) and the dataflow."""
        return str(self.config_file), str(self.home), config_digest(self.config_file), dataflow

    def job(self, dataflow: str):
        """The dataflow's job as a reconstructable job, rebuilt by `dataflow_job` in every step process."""
        return build_reconstructable_job(
            "ajo_exports.definitions", "dataflow_job", reconstructable_args=self.job_args(dataflow)
        )


@dataclass
class ExportReport:
    """One export asset's outcome in a run."""

    slug: str
    tier: str
    metadata: dict = field(default_factory=dict)
    check_passed: bool | None = None  # the delivery check
    check_description: str = ""
    guardrail_warning: str | None = None  # the within_guardrails check, when it did not pass


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
    processes: StepProcesses | None = None,
    tags: dict[str, str] | None = None,
) -> RunReport:
    """Materialize the selected exports of a dataflow (and, by default, their delivery checks) in one run: in this
    process for one export, concurrently in step processes for several when `processes` says where they rebuild
    the definitions (and the instance is persistent, as step processes need)."""
    chosen = _selected(specs, dataflow, datasets)
    checks = {AssetCheckKey(s.key, DELIVERY_CHECK) for s in chosen} if (with_checks or checks_only) else set()
    assets = set() if checks_only else {s.key for s in chosen}
    checks |= {AssetCheckKey(key, GUARDRAIL_CHECK) for key in assets}  # evaluated by the export step itself
    tags = {**(tags or {}), **({EXPORT_TIME_TAG: export_time.isoformat()} if export_time else {})}
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if processes is not None and len(chosen) > 1 and not instance.is_ephemeral:
        log = Path(instance.root_directory) / "logs" / "step-processes.log" if instance.root_directory else None
        start_step_processes(log, [processes.job_args(dataflow)])
        job = processes.job(dataflow).get_subset(asset_selection=assets, asset_check_selection=checks)
        result = execute_job(
            job,
            instance=instance,
            tags={**tags, **({PARTITION_TAG: partition_key} if partition_key else {})},
            run_config=run_config,
            raise_on_error=False,
        )
    else:
        job = defs.resolve_job_def(job_name(dataflow)).get_subset(asset_selection=assets, asset_check_selection=checks)
        result = job.execute_in_process(
            instance=instance, partition_key=partition_key, tags=tags, run_config=run_config, raise_on_error=False
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
        if spec is None:
            continue
        item = report.exports[spec.dataset.slug]
        if evaluation.check_name == DELIVERY_CHECK:
            item.check_passed = evaluation.passed
            item.check_description = evaluation.description or ""
        elif evaluation.check_name == GUARDRAIL_CHECK and not evaluation.passed:
            item.guardrail_warning = evaluation.description
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
    """The dataflow's latest runs with their status, records, files, bytes and errors, newest first: its job's runs,
    and on-demand runs of its exports (the UI's Materialize, asset backfills: Dagster's implicit asset job), found
    by the `dataflow` tag their export step adds or, when they failed before it, by their asset selection."""
    found = {
        record.dagster_run.run_id: record
        for runs in (
            RunsFilter(job_name=job_name(dataflow)),
            RunsFilter(tags={DATAFLOW_TAG: dataflow}),
            RunsFilter(job_name=IMPLICIT_ASSET_JOB),
        )
        for record in instance.get_run_records(runs, limit=limit * 5 if runs.job_name == IMPLICIT_ASSET_JOB else limit)
        if dataflow in dataflows_of_run(record.dagster_run) or record.dagster_run.job_name == job_name(dataflow)
    }
    records = sorted(found.values(), key=lambda record: record.create_timestamp, reverse=True)[:limit]
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
