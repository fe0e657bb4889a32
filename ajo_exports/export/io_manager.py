"""The export IO manager: one class for every destination, delegating the bytes to the destination's Storage.

Like dagster-aws's S3 IO manager, it is a thin ConfigurableIOManager with typed fields; the destination is a
nested resource (S3, Azure Blob, ..., local folder), so adding a destination adds no export logic.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from ajo_exports.config import Compression, FileFormat, Schedule
from ajo_exports.destinations.base import Storage
from ajo_exports.destinations.resource import DestinationResource
from ajo_exports.export.attempts import sweep_failed_attempts
from ajo_exports.export.layout import LayoutContext, render_folder
from ajo_exports.export.openlineage import export_lineage
from ajo_exports.export.window import ExportWindow, window_for
from ajo_exports.export.writer import ExportProgress, ExportResult, ExportSpec, export_frame
from ajo_exports.lake import Selection
from ajo_exports.settings import destination_id

# Keys of the export asset's definition metadata that tell the IO manager how to write it.
SETTINGS = (
    "dataset_id",
    "dataflow",
    "format",
    "compression",
    "folder_template",
    "manifest",
    "max_rows_per_file",
    "max_bytes_per_file",
    "organization",
    "sandbox",
    "schedule",
)


def run_created(context: OutputContext | AssetExecutionContext) -> datetime:
    """When the run was created: the exportTime of a `once` export, the same for every step of the run."""
    if isinstance(context, OutputContext):
        instance, run_id = context.step_context.instance, context.run_id
    else:
        instance, run_id = context.instance, context.run.run_id
    record = instance.get_run_record_by_id(run_id)
    return record.create_timestamp.astimezone(UTC) if record else datetime.now(UTC)


def settings_of(metadata: dict) -> dict:
    return {key: getattr(metadata[key], "value", metadata[key]) for key in SETTINGS}


def output_window(context: OutputContext, schedule: Schedule, created: datetime) -> ExportWindow:
    time_window = context.asset_partitions_time_window if context.has_asset_partitions else None
    return window_for(
        schedule,
        time_window=(time_window.start, time_window.end) if time_window else None,
        partition_key=context.asset_partition_key if context.has_asset_partitions else None,
        tags=dict(context.step_context.dagster_run.tags),
        run_created=created,
    )


class ExportIOManager(ConfigurableIOManager):
    """Writes an export asset's rows (a Selection) to its destination in AEP's layout; exports are never loaded back."""

    destination: DestinationResource
    scratch_dir: str | None = None
    openlineage: str | None = None  # exports.yaml's `openlineage:` section as JSON: where run events go

    def handle_output(self, context: OutputContext, obj: Selection | pl.LazyFrame) -> None:
        settings = settings_of(context.definition_metadata)
        schedule = Schedule.model_validate_json(settings["schedule"])
        created = run_created(context)
        window = output_window(context, schedule, created)
        instance = context.step_context.instance

        def run_finished(run_id: str) -> bool | None:
            run = instance.get_run_by_id(run_id)
            return None if run is None else run.is_finished

        lineage = export_lineage(self.openlineage, context, settings, obj, self.destination, window.export_time)
        with lineage, self.destination.open_storage() as storage:  # FAIL if anything below raises
            swept = sweep_failed_attempts(storage, run_finished)
            if swept:
                more = " …" if len(swept) > 5 else ""
                context.log.warning(f"removed {len(swept)} files that failed export attempts left at "
                                    f"{self.destination.name!r}: {', '.join(swept[:5])}{more}")
            folder = render_folder(
                settings["folder_template"],
                LayoutContext(
                    dataset_id=settings["dataset_id"],
                    export_time=window.export_time,
                    run_time=created,
                    sandbox=settings["sandbox"],
                    organization=settings["organization"],
                    destination_type=self.destination.destination_type,
                    destination_name=self.destination.name,
                    destination_id=destination_id(self.destination.name),
                ),
            )
            template = settings["folder_template"]
            spec = ExportSpec(
                dataset_id=settings["dataset_id"],
                dataflow=settings["dataflow"],
                destination_id=destination_id(self.destination.name),
                folder=folder,
                export_time=window.export_time,
                run_id=context.run_id,
                file_format=FileFormat(settings["format"]),
                compression=Compression(settings["compression"]),
                max_rows_per_file=int(settings["max_rows_per_file"]),
                max_bytes_per_file=int(settings["max_bytes_per_file"]),
                write_manifest=bool(settings["manifest"]),
                pgp_public_key=self.destination.pgp_public_key,
                dedicated_folder="%DATASET_ID%" in template
                and ("%EXPORT_TIME%" in template or "%DATETIME" in template),
            )
            scratch = Path(self.scratch_dir) if self.scratch_dir else None
            lineage.start(storage, folder)
            result = export_frame(storage, obj, spec, scratch, ProgressLog(context, settings["dataset_id"]))
            lineage.complete(storage, result)
            removed = {"failed_attempt_files_removed": MetadataValue.int(len(swept))}
            context.add_output_metadata({**export_metadata(storage, result, window), **removed})

    def load_input(self, context: InputContext) -> pl.LazyFrame:
        raise NotImplementedError("exports are delivered to a destination, not loaded back into Dagster")


class ProgressLog:
    """Reports an export's progress as a structured line in the run's log (at most every `every` seconds, and the
    last part always), which `ajo-exports run` follows and the UI shows in the run's log."""

    PREFIX = "export progress "

    def __init__(self, context: OutputContext, dataset_id: str, every: float = 1.0):
        self._context, self._dataset_id, self._every = context, dataset_id, every
        self._last = -every

    def __call__(self, progress: ExportProgress) -> None:
        if progress.seconds - self._last < self._every and progress.rows < progress.planned_rows:
            return
        self._last = progress.seconds
        line = {"asset": context_asset(self._context), "dataset_id": self._dataset_id, **asdict(progress)}
        self._context.log.info(self.PREFIX + json.dumps(line))


def context_asset(context: OutputContext) -> str:
    return context.asset_key.to_user_string() if context.has_asset_key else context.step_key


def export_metadata(storage: Storage, result: ExportResult, window: ExportWindow) -> dict:
    """Numeric values the UI plots over time, plus where the files are and the manifest to verify them by."""
    return {
        "rows": MetadataValue.int(result.rows),
        "files": MetadataValue.int(len(result.files)),
        "bytes": MetadataValue.int(result.bytes),
        "seconds": MetadataValue.float(round(result.seconds, 3)),
        "mb_per_second": MetadataValue.float(round(result.mb_per_second, 3)),
        "export_time": MetadataValue.text(window.export_time.strftime("%Y-%m-%dT%H:%MZ")),
        "folder": MetadataValue.text(result.folder),
        "folder_uri": MetadataValue.url(storage.uri(result.folder)),
        "keys": MetadataValue.json(result.keys),
        "uris": MetadataValue.json([storage.uri(key) for key in result.keys]),
        "files_detail": MetadataValue.json([asdict(item) for item in result.files]),
        "manifest_key": MetadataValue.text(result.manifest_key or ""),
        "manifest_uri": MetadataValue.url(storage.uri(result.manifest_key))
        if result.manifest_key
        else MetadataValue.text(""),
        "replaced_files": MetadataValue.int(len(result.removed)),
    }
