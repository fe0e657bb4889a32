"""Dataset assets (the AEP lake) and the export asset factory (one export per dataflow and dataset)."""

import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    BetaWarning,
    DagsterRun,
    DataVersion,
    MetadataValue,
    ObserveResult,
    Output,
    TableColumn,
    TableSchema,
    TimeWindowPartitionsDefinition,
    asset,
    observable_source_asset,
)

from ajo_exports.catalog import Dataset
from ajo_exports.config import Dataflow, DestinationConfig, Organization, Schedule
from ajo_exports.export.io_manager import run_created
from ajo_exports.export.window import partitions_for, window_for
from ajo_exports.lake import Batch, Selection
from ajo_exports.lake.resource import LakeResource

DATASET_GROUP = "aep_datasets"
DELIVERY_CHECK = "delivered"
# Op tag of every export and delivery check, and run tag of every dataflow job: the executor limits the steps of a
# run per destination by it (max_concurrent_exports) and the run queue limits the runs per destination.
DESTINATION_TAG = "ajo/destination"
KINDS = {
    "local": "file",
    "amazon_s3": "s3",
    "azure_blob": "azure",
    "adls_gen2": "azure",
    "data_landing_zone": "azure",
    "google_cloud_storage": "gcs",
    "sftp": "sftp",
}


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


@dataclass(frozen=True)
class ExportAssetSpec:
    """One export asset: a dataset delivered by a dataflow to its destination."""

    dataflow: Dataflow
    dataset: Dataset
    destination: DestinationConfig
    organization: Organization

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

    @asset(
        key=spec.key,
        deps=[dataset_key(dataset)],
        io_manager_key=spec.io_manager_key,
        group_name=spec.group,
        partitions_def=partitions_of(schedule),
        kinds={"polars", KINDS[spec.destination.type], spec.dataflow.format.value},
        tags={"tier": dataset.tier.value, "destination_type": spec.destination.type, DATAFLOW_TAG: spec.dataflow.name},
        op_tags={DESTINATION_TAG: spec.destination.name},
        metadata=spec.settings(),
        description=f"{dataset.name} exported by dataflow {spec.dataflow.name!r} to {spec.destination.name!r}",
    )
    @same_signature
    def _export(context: AssetExecutionContext, lake: LakeResource) -> Output[Selection]:
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
        source = lake.open()
        everything = source.list_batches(dataset)
        context.log_event(AssetObservation(asset_key=dataset_key(dataset), metadata=observed(everything)))
        batches = source.list_batches(dataset, window.ingested_from, window.ingested_until)
        source.scan(dataset, batches)  # checks every selected batch file's footer and schema before anything is written
        selection = Selection(source, dataset, tuple(batches), window.events_since if dataset.is_time_series else None)
        return Output(
            selection,
            metadata={
                "batches": len(batches),
                "batch_ids": MetadataValue.json([b.batch_id for b in batches]),  # the late-batch sensor compares
                "batch_rows": sum(b.rows for b in batches),
                "ingested_from": window.ingested_from.isoformat() if window.ingested_from else "(backfill)",
                "ingested_until": window.ingested_until.isoformat() if window.ingested_until else "(now)",
                "events_since": window.events_since.isoformat() if dataset.is_time_series else "(record dataset)",
            },
        )

    return _export
