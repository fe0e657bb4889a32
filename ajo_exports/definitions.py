"""The Dagster definitions of the exports.yaml in force: explicit lists of assets, checks, jobs, schedules,
sensors and resources."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from ajo_exports.assets import ExportAssetSpec, dataset_asset, export_asset, io_manager_key, job_name
from ajo_exports.catalog import DATASETS
from ajo_exports.checks import delivery_check, freshness_check
from ajo_exports.config import ExportsConfig, ajo_home, load_config
from ajo_exports.destinations import build_destination
from ajo_exports.export.io_manager import ExportIOManager
from ajo_exports.lake.resource import LakeResource
from ajo_exports.schedules import dataflow_schedule
from ajo_exports.sensors import (
    dlz_retention_sensor,
    end_date_sensor,
    failure_sensor,
    freshness_sensor,
    lineage_sensor,
)


def export_specs(config: ExportsConfig) -> list[ExportAssetSpec]:
    return [
        ExportAssetSpec(flow, dataset, config.destination(flow.destination), config.organization)
        for flow in config.dataflows
        for dataset in config.datasets_of(flow)
    ]


def build_definitions(config: ExportsConfig, home: Path) -> Definitions:
    specs = export_specs(config)
    delivery_checks = {s.key: delivery_check(s) for s in specs}
    freshness_checks = [check for s in specs if (check := freshness_check(s)) is not None]
    freshness_job = define_asset_job(
        "export_freshness_checks",
        selection=AssetSelection.checks(*freshness_checks),
        description="The freshness checks of every scheduled dataflow (run by the export_freshness sensor)",
    )
    jobs = {
        flow.name: define_asset_job(
            job_name(flow.name),
            selection=AssetSelection.assets(*[s.key for s in specs if s.dataflow is flow]).without_checks()
            | AssetSelection.checks(*[delivery_checks[s.key] for s in specs if s.dataflow is flow]),
            description=f"Export dataflow {flow.name!r} to destination {flow.destination!r}",
            tags={"dataflow": flow.name},
        )
        for flow in config.dataflows
    }
    schedules = [dataflow_schedule(config, flow, jobs[flow.name], home) for flow in config.dataflows]
    resources = {
        "lake": LakeResource(root=str(home / "lake")),
        **{
            io_manager_key(d.name): ExportIOManager(destination=build_destination(d), scratch_dir=str(home / "tmp"))
            for d in config.destinations
        },
    }
    return Definitions(
        assets=[dataset_asset(d) for d in DATASETS] + [export_asset(s) for s in specs],
        asset_checks=[*delivery_checks.values(), *freshness_checks],
        jobs=[*jobs.values(), freshness_job],
        schedules=[s for s in schedules if s is not None],
        sensors=[
            failure_sensor(config, list(jobs.values())),
            end_date_sensor(config),
            lineage_sensor(specs),
            freshness_sensor(freshness_job, [key for check in freshness_checks for key in check.check_keys]),
            *([dlz] if (dlz := dlz_retention_sensor(config, specs)) else []),
        ],
        executor=in_process_executor,  # one process per run, not per step: ~4 s instead of ~15 s for small exports
        resources=resources,
    )


defs = build_definitions(load_config(), ajo_home())
