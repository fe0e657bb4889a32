"""Dataset assets (the AEP lake) and the export asset factory (one export per dataflow and dataset)."""

import functools
import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetOut,
    AssetsDefinition,
    BetaWarning,
    DagsterRun,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    Output,
    TableColumn,
    TableSchema,
    TimeWindowPartitionsDefinition,
    asset,
    multi_asset,
    observable_source_asset,
)

from ajo_exports.catalog import Dataset
from ajo_exports.config import Dataflow, DestinationConfig, Guardrails, OpenLineageConfig, Organization, Schedule
from ajo_exports.export.io_manager import run_created
from ajo_exports.export.openlineage import ExportLineage
from ajo_exports.export.window import partitions_for, window_for
from ajo_exports.lake import Batch, Selection
from ajo_exports.lake.resource import LakeResource

DATASET_GROUP = "aep_datasets"
DELIVERY_CHECK = "delivered"
GUARDRAIL_CHECK = "within_guardrails"
# Op tag of every export and delivery check, and run tag of every dataflow job: the executor limits the steps of a
# run per destination by it (max_concurrent_exports) and the run queue limits the runs per destination.
DESTINATION_TAG = "ajo/destination"


def dataset_key(dataset: Dataset) -> AssetKey:
    return AssetKey(["aep", dataset.slug])


def dataset_metadata(dataset: Dataset) -> dict:
    return {
        "tier": dataset.tier.value,
        "dataset_id": dataset.dataset_id,
        "xdm_class": dataset.xdm_class.value,
        "xdm_class_name": dataset.xdm_class_name,
        "description": dataset.description,
        "dagster/column_schema": MetadataValue.table_schema(_table_schema(dataset)),
    }


@functools.cache
def _table_schema(dataset: Dataset) -> TableSchema:
    """The dataset's columns with their polars type names, built once per dataset (polars is not imported)."""
    return TableSchema(columns=[TableColumn(name, str(kind)[:200]) for name, kind in dataset.columns])


_SIGNATURES: dict[object, inspect.Signature] = {}


def same_signature(fn: Callable) -> Callable:
    """Give every closure of one function the signature computed for the first. Dagster inspects a decorated
    function's signature a dozen times per definition, and the closures of a thousand exports share one."""
    signature = _SIGNATURES.get(fn.__code__)
    if signature is None:
        signature = _SIGNATURES[fn.__code__] = inspect.signature(fn)
    fn.__signature__ = signature  # type: ignore[attr-defined]
    return fn


@functools.cache
def partitions_of(schedule: Schedule) -> TimeWindowPartitionsDefinition | None:
    """One partitions definition per schedule, shared by the exports, checks and schedule of every dataflow that
    has it (None for a `once` dataflow)."""
    return partitions_for(schedule)


def observed(batches: list[Batch]) -> dict:
    """The dataset's observed size in the lake, recorded on its asset each time it is observed or exported."""
    return {
        "rows": MetadataValue.int(sum(b.rows for b in batches)),
        "batches": MetadataValue.int(len(batches)),
        "latest_batch": batches[-1].batch_id if batches else "(none)",
        "latest_ingestion": batches[-1].ingested_at.isoformat() if batches else "(none)",
    }


def dataset_asset(dataset: Dataset) -> AssetsDefinition:
    """The dataset as it sits in the lake; observing it records its batch and row counts."""

    def _observe(lake: LakeResource) -> ObserveResult:
        batches = lake.open().list_batches(dataset)
        return ObserveResult(
            data_version=DataVersion(batches[-1].batch_id if batches else "empty"), metadata=observed(batches)
        )

    with warnings.catch_warnings():  # observable source assets are beta in Dagster 1.13, and stable enough here
        warnings.simplefilter("ignore", BetaWarning)
        return observable_source_asset(
            key=dataset_key(dataset),
            group_name=DATASET_GROUP,
            description=f"{dataset.name}: {dataset.description}",
            metadata=dataset_metadata(dataset),
            tags={"tier": dataset.tier.value, "xdm_class": dataset.xdm_class.value.replace("-", "_")},
        )(_observe)


class GuardrailError(Exception):
    """An export refused by a hard guardrail, before anything was published."""


@dataclass(frozen=True)
class GuardrailStatus:
    status: str  # one line for metadata and `review`
    warning: str | None = None
    refusal: str | None = None
    max_records: int | None = None


def exported_rows(selection: Selection) -> int:
    """The rows an event export delivers (those of the last 365 days): read only when the batch rows exceed the
    soft limit, since the timestamps of a large window are not free to read."""
    import polars as pl

    frame = selection.source.scan(selection.dataset, list(selection.batches))
    if selection.events_since is not None:
        frame = frame.filter(pl.col("timestamp") >= selection.events_since)
    return int(frame.select(pl.len()).collect().item())


@dataclass(frozen=True)
class ExportAssetSpec:
    """One export asset: a dataset delivered by a dataflow to its destination."""

    dataflow: Dataflow
    dataset: Dataset
    destination: DestinationConfig
    organization: Organization
    guardrails: Guardrails = field(default_factory=Guardrails)
    openlineage: OpenLineageConfig | None = None  # where run events go, also for an export refused here

    def guardrail(self, records: int, *, full_export: bool) -> GuardrailStatus:
        """AEP's guardrails for an export of `records` records (§6): a record dataset's first, full export above
        the hard limit is refused; any export above the soft limit is a warning."""
        limits, name = self.guardrails, self.dataset.slug
        hard, setting = limits.max_records(self.dataflow)
        if not self.dataset.is_time_series and full_export:
            if records > hard:
                refusal = (
                    f"dataset {name} ({self.dataset.dataset_id}) has {records:,} records; a record dataset's full "
                    f"export in {self.dataflow.format.value} {self.dataflow.compression.value} may hold at most "
                    f"{hard:,} (guardrails.{setting}): nothing was exported"
                )
                return GuardrailStatus(f"refused: {records:,} records > {hard:,}", refusal=refusal, max_records=hard)
        else:
            hard = None
        if records > limits.warn_records:
            warning = (
                f"dataset {name} exports {records:,} records, above the soft limit of {limits.warn_records:,} "
                "(guardrails.warn_records): the export may be slow or fail"
            )
            return GuardrailStatus(f"warning: {records:,} records > {limits.warn_records:,}", warning, None, hard)
        return GuardrailStatus(f"ok: {records:,} records", max_records=hard)

    @property
    def key(self) -> AssetKey:
        return AssetKey(["export", self.dataflow.name, self.dataset.slug])

    @property
    def io_manager_key(self) -> str:
        return io_manager_key(self.destination.name)

    @property
    def group(self) -> str:
        return f"export_{self.dataflow.name}".replace("-", "_")

    def settings(self) -> dict:
        """What the export IO manager needs to write this asset, shown in the UI as definition metadata."""
        flow = self.dataflow
        return {
            "dataset_id": self.dataset.dataset_id,
            "dataflow": flow.name,
            "format": flow.format.value,
            "compression": flow.compression.value,
            "folder_template": flow.folder_template,
            "manifest": flow.manifest,
            "max_rows_per_file": flow.max_rows_per_file,
            "max_bytes_per_file": flow.max_bytes_per_file,
            "organization": self.organization.name,
            "sandbox": self.organization.sandbox,
            "schedule": flow.schedule.model_dump_json(),
            "destination": self.destination.name,
            "destination_type": self.destination.type,
            "tier": self.dataset.tier.value,
        }


DATAFLOW_TAG = "dataflow"
IMPLICIT_ASSET_JOB = "__ASSET_JOB"  # the job Dagster runs for the UI's Materialize button and asset backfills


def dataflows_of_run(run: DagsterRun) -> list[str]:
    """The dataflows whose exports a run materializes or checks: its `dataflow` tag (dataflow jobs, schedules,
    the CLI), else its asset selection (the UI's Materialize button runs Dagster's implicit `__ASSET_JOB`, untagged
    until its first export step tags it)."""
    if run.tags.get(DATAFLOW_TAG):
        return [run.tags[DATAFLOW_TAG]]
    keys = set(run.asset_selection or ()) | {check.asset_key for check in run.asset_check_selection or ()}
    return sorted({key.path[1] for key in keys if len(key.path) == 3 and key.path[0] == "export"})


def job_name(dataflow: str) -> str:
    return f"export_{dataflow}".replace("-", "_")


def io_manager_key(destination_name: str) -> str:
    return "destination_" + destination_name.replace("-", "_")


def export_asset(spec: ExportAssetSpec) -> AssetsDefinition:
    """Build the export asset: it selects the window's batches and returns them as a Selection (nothing is read
    yet); the destination's IO manager cuts it into bounded part files, encodes them in parallel and uploads them."""
    dataset, schedule = spec.dataset, spec.dataflow.schedule

    @multi_asset(
        name=spec.key.to_python_identifier(),
        outs={
            "result": AssetOut(
                key=spec.key,
                io_manager_key=spec.io_manager_key,
                group_name=spec.group,
                kinds={"polars", spec.destination.kind, spec.dataflow.format.value},
                tags={"tier": dataset.tier.value, "destination_type": spec.destination.type,
                      DATAFLOW_TAG: spec.dataflow.name},
                metadata=spec.settings(),
                description=f"{dataset.name} exported by dataflow {spec.dataflow.name!r} to "
                f"{spec.destination.name!r}",
            )
        },
        deps=[dataset_key(dataset)],
        partitions_def=partitions_of(schedule),
        op_tags={DESTINATION_TAG: spec.destination.name},
        can_subset=True,  # the export without its guardrail check (and the check alone) stay selectable
        check_specs=[
            AssetCheckSpec(
                GUARDRAIL_CHECK,
                asset=spec.key,
                description="The export stays within AEP's record guardrails (a WARN above the soft limit; above "
                "the hard limit a record dataset's full export fails before anything is published).",
            )
        ],
    )
    @same_signature
    def _export(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Output[Selection] | AssetCheckResult]:
        if DATAFLOW_TAG not in context.run.tags:  # an on-demand run (the UI's Materialize): make it a dataflow run
            context.instance.add_run_tags(
                context.run.run_id, {DATAFLOW_TAG: spec.dataflow.name, DESTINATION_TAG: spec.destination.name}
            )
        time_window = context.partition_time_window if context.has_partition_key else None
        window = window_for(
            schedule,
            time_window=(time_window.start, time_window.end) if time_window else None,
            partition_key=context.partition_key if context.has_partition_key else None,
            tags=dict(context.run.tags),
            run_created=run_created(context),
        )
        try:
            source = lake.open()
            everything = source.list_batches(dataset)
            context.log_event(AssetObservation(asset_key=dataset_key(dataset), metadata=observed(everything)))
            batches = source.list_batches(dataset, window.ingested_from, window.ingested_until)
            source.scan(dataset, batches)  # checks each selected batch's footer and schema before anything is written
            records = batch_rows = sum(b.rows for b in batches)
            guardrail = spec.guardrail(records, full_export=window.ingested_from is None)
            if guardrail.refusal:  # before anything is published: the destination is not touched
                raise GuardrailError(guardrail.refusal)
        except Exception as exc:  # refused before the IO manager, which reports the rest: lineage sees a FAIL too
            refused_lineage(spec, context, window.export_time).fail(exc)
            raise
        selection = Selection(source, dataset, tuple(batches), window.events_since if dataset.is_time_series else None)
        if records > spec.guardrails.warn_records and dataset.is_time_series:  # only then count the exact rows
            records = exported_rows(selection)
            guardrail = spec.guardrail(records, full_export=window.ingested_from is None)
        if guardrail.warning:
            context.log.warning(guardrail.warning)
        if spec.key in context.selected_asset_keys:  # not when only the guardrail check was selected
            yield Output(
                selection,
                output_name="result",
                metadata={
                    "batches": len(batches),
                    "batch_ids": MetadataValue.json([b.batch_id for b in batches]),  # the late-batch sensor compares
                    "batch_rows": batch_rows,
                    "ingested_from": window.ingested_from.isoformat() if window.ingested_from else "(backfill)",
                    "ingested_until": window.ingested_until.isoformat() if window.ingested_until else "(now)",
                    "events_since": window.events_since.isoformat() if dataset.is_time_series else "(record dataset)",
                    "guardrail": guardrail.status,
                },
            )
        if AssetCheckKey(spec.key, GUARDRAIL_CHECK) in (context.selected_asset_check_keys or ()):
            yield AssetCheckResult(
                check_name=GUARDRAIL_CHECK,
                passed=guardrail.warning is None,
                severity=AssetCheckSeverity.WARN,
                description=guardrail.warning or guardrail.status,
                metadata={"records": records, "warn_records": spec.guardrails.warn_records,
                          "max_records": guardrail.max_records or "(not a record dataset's full export)"},
            )

    return _export


def refused_lineage(spec: ExportAssetSpec, context: AssetExecutionContext, export_time: datetime) -> ExportLineage:
    """The OpenLineage run of an export that fails before its IO manager starts it (same run ID as the IO manager's
    events would carry), so a refused export is a FAIL in the lineage service, not a silence."""
    return ExportLineage(
        spec.openlineage,
        warn=context.log.warning,
        dagster_run_id=context.run.run_id,
        dagster_job=context.job_name,
        asset=spec.key.to_user_string(),
        partition=context.partition_key if context.has_partition_key else None,
        dataflow=spec.dataflow.name,
        dataset_id=spec.dataset.dataset_id,
        organization=spec.organization.name,
        sandbox=spec.organization.sandbox,
        destination=spec.destination.name,
        destination_type=spec.destination.type,
        columns={},
        export_time=export_time,
    )


LICENSE_USAGE = AssetKey(["ajo", "license_usage"])
LICENSE_CHECK = "within_entitlement"


def license_usage_asset(specs: list[ExportAssetSpec], organization: Organization) -> AssetsDefinition:
    """The licence-volume account as an asset: each materialization records the year's bytes, the entitlement, the
    share used and the straight-line projection (numbers the UI plots over time); its check warns at 80 % and
    fails at 100 %."""
    export_keys = [spec.key for spec in specs]

    @asset(
        key=LICENSE_USAGE,
        group_name="license",
        description=f"Bytes delivered this calendar year by {organization.name!r} against its export entitlement "
        "(licensed profiles × 500 KB Prime, × 700 KB Ultimate)",
        check_specs=[AssetCheckSpec(LICENSE_CHECK, asset=LICENSE_USAGE, description="below 80 % passes, from 80 % "
                                    "a warning, from 100 % an error")],
    )
    def _usage(context: AssetExecutionContext) -> MaterializeResult:
        from ajo_exports.usage import WARN_SHARE, license_usage

        usage = license_usage(context.instance, export_keys, organization)
        share, projected = usage.share_used, usage.projected_share
        metadata = {
            "year": usage.year,
            "bytes_used": MetadataValue.int(usage.bytes_used),
            "deliveries": MetadataValue.int(usage.deliveries),
            "projected_year_end_bytes": MetadataValue.int(usage.projected_bytes),
            "status": usage.status,
        }
        if usage.entitlement_bytes is not None:
            metadata |= {
                "entitlement_bytes": MetadataValue.int(usage.entitlement_bytes),
                "share_used_percent": MetadataValue.float(round(100 * (share or 0), 3)),
                "projected_share_percent": MetadataValue.float(round(100 * (projected or 0), 3)),
            }
        if usage.status == "warning":
            context.log.warning(usage.summary())
        check = AssetCheckResult(
            check_name=LICENSE_CHECK,
            passed=share is None or share < WARN_SHARE,
            severity=AssetCheckSeverity.ERROR if share is not None and share >= 1 else AssetCheckSeverity.WARN,
            description=usage.summary(),
        )
        return MaterializeResult(metadata=metadata, check_results=[check])

    return _usage
