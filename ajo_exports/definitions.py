"""The Dagster definitions of the exports.yaml in force: explicit lists of assets, checks, jobs, schedules,
sensors and resources.

Runs execute each export (and each delivery check) in its own process, forked from a forkserver that has imported
Dagster, polars and this project once (operations.STEP_PRELOAD), so a step starts in a fraction of a second: at
most `execution.max_concurrent` steps at once and, per destination, at most its `max_concurrent_exports` (the op
tag `ajo/destination`). `ajo-exports run` reconstructs a dataflow's job in those processes with `dataflow_job`.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetSelection,
    Definitions,
    ExecutorDefinition,
    JobDefinition,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from ajo_exports.assets import (
    DESTINATION_TAG,
    GUARDRAIL_CHECK,
    LICENSE_USAGE,
    ExportAssetSpec,
    dataset_asset,
    export_asset,
    io_manager_key,
    job_name,
    license_usage_asset,
)
from ajo_exports.catalog import DATASETS
from ajo_exports.checks import delivery_check, freshness_checks
from ajo_exports.config import ConfigError, ExportsConfig, config_digest, config_path, load_config
from ajo_exports.destinations.resource import build_destination
from ajo_exports.export.io_manager import ExportIOManager
from ajo_exports.lake.resource import lake_resource
from ajo_exports.operations import STEP_JOBS_ENV, STEP_PRELOAD
from ajo_exports.schedules import dataflow_schedule
from ajo_exports.sensors import (
    dlz_retention_sensor,
    end_date_sensor,
    failure_sensor,
    freshness_sensor,
    late_batch_sensor,
    license_usage_sensor,
    lineage_sensor,
)
from ajo_exports.settings import ajo_home


def export_specs(config: ExportsConfig) -> list[ExportAssetSpec]:
    return [
        ExportAssetSpec(flow, dataset, config.destination(flow.destination), config.organization, config.guardrails,
                        config.openlineage)
        for flow in config.dataflows
        for dataset in config.datasets_of(flow)
    ]


def executor_for(config: ExportsConfig) -> ExecutorDefinition:
    """Steps in processes forked from a forkserver that imported STEP_PRELOAD once, at most
    `execution.max_concurrent` at once and per destination at most its `max_concurrent_exports`; with
    `max_concurrent: 1` (or one core), every step in the run's own process, one after the other; with
    `executor: celery`, every step on Celery workers (dagster-celery, imported only then)."""
    if config.execution.executor == "celery":
        return celery_executor_for(Path(config.execution.celery_config or ""))
    if config.execution.concurrency == 1:
        return in_process_executor
    return multiprocess_executor.configured(
        {
            "max_concurrent": config.execution.concurrency,
            "tag_concurrency_limits": [
                {"key": DESTINATION_TAG, "value": d.name, "limit": d.max_concurrent_exports}
                for d in config.destinations
            ],
            "start_method": {"forkserver": {"preload_modules": list(STEP_PRELOAD)}},
        }
    )


def celery_executor_for(path: Path) -> ExecutorDefinition:
    """The Celery executor with the `execution.config` block of the YAML its workers start with
    (`dagster-celery worker start -y FILE -i ajo_exports.definitions`), so runs and workers agree; the broker and
    backend URLs, which may hold a password, come from the environment (`{env: VAR}`)."""
    import yaml
    from dagster_celery import celery_executor

    try:
        block = yaml.safe_load(path.read_text(encoding="utf-8"))["execution"]["config"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ConfigError(f"execution.celery_config {path}: no readable execution.config block ({exc})") from None
    return celery_executor.configured(dict(block), name="celery")


def build_definitions(config: ExportsConfig, home: Path, *, dataflow: str | None = None) -> Definitions:
    """All definitions of `config`; with `dataflow`, only what that dataflow's job runs (its exports, their delivery
    checks and resources), which is what each step process of `ajo-exports run` rebuilds.

    The cyclic garbage collector is paused meanwhile: the build only creates objects that live as long as the
    definitions, and with a thousand exports the collector's passes over them cost a fifth of the build."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build_definitions(config, home, dataflow)
    finally:
        if collecting:
            gc.enable()


def _build_definitions(config: ExportsConfig, home: Path, dataflow: str | None) -> Definitions:
    specs = export_specs(config)
    flows = config.dataflows
    if dataflow is not None:
        flows = [config.dataflow(dataflow)]
        specs = [s for s in specs if s.dataflow.name == dataflow]
    delivery_checks = {s.key: delivery_check(s) for s in specs}
    jobs = {
        flow.name: define_asset_job(
            job_name(flow.name),
            selection=AssetSelection.assets(*[s.key for s in specs if s.dataflow is flow]).without_checks()
            | AssetSelection.checks(*[delivery_checks[s.key] for s in specs if s.dataflow is flow])
            | AssetSelection.checks(*[AssetCheckKey(s.key, GUARDRAIL_CHECK) for s in specs if s.dataflow is flow]),
            description=f"Export dataflow {flow.name!r} to destination {flow.destination!r}",
            tags={"dataflow": flow.name, DESTINATION_TAG: flow.destination},
        )
        for flow in flows
    }
    destinations = {flow.destination for flow in flows}
    resources = {
        "lake": lake_resource(config.source, home),
        **{
            io_manager_key(d.name): ExportIOManager(
                destination=build_destination(d),
                scratch_dir=str(home / "tmp"),
                openlineage=config.openlineage.model_dump_json() if config.openlineage else None,
            )
            for d in config.destinations
            if d.name in destinations or dataflow is None
        },
    }
    if dataflow is not None:
        return Definitions(
            assets=[dataset_asset(d) for d in DATASETS] + [export_asset(s) for s in specs],
            asset_checks=list(delivery_checks.values()),
            jobs=list(jobs.values()),
            executor=executor_for(config),
            resources=resources,
        )
    fresh = freshness_checks(specs)
    freshness_job = define_asset_job(
        "export_freshness_checks",
        selection=AssetSelection.checks(*([fresh] if fresh else [])),
        description="The freshness checks of every scheduled dataflow (run by the export_freshness sensor)",
    )
    usage_job = define_asset_job(
        "license_usage",
        selection=AssetSelection.assets(LICENSE_USAGE),
        description="The licence-volume account (run by the license_usage sensor after new exports)",
    )
    schedules = [dataflow_schedule(config, flow, jobs[flow.name], home) for flow in flows]
    return Definitions(
        assets=[dataset_asset(d) for d in DATASETS]
        + [export_asset(s) for s in specs]
        + [license_usage_asset(specs, config.organization)],
        asset_checks=[*delivery_checks.values(), *([fresh] if fresh else [])],
        jobs=[*jobs.values(), freshness_job, usage_job],
        schedules=[s for s in schedules if s is not None],
        sensors=[
            failure_sensor(config),
            end_date_sensor(config),
            lineage_sensor(specs),
            freshness_sensor(freshness_job, sorted(fresh.check_keys, key=str) if fresh else []),
            *([dlz] if (dlz := dlz_retention_sensor(config, specs)) else []),
            *([late] if (late := late_batch_sensor(specs, jobs)) else []),
            license_usage_sensor(specs, usage_job),
        ],
        executor=executor_for(config),
        resources=resources,
    )


_DEFINITIONS: dict[tuple[str, str, str], Definitions] = {}
_DATAFLOW_JOBS: dict[tuple[str, str, str, str], JobDefinition] = {}


def definitions_for(config_file: Path, home: Path) -> Definitions:
    """The definitions of a config file, built once per process for each content of the file."""
    try:
        key = (str(config_file), str(home), config_digest(config_file))
    except ConfigError:
        load_config(config_file)  # raises the one-line error that names the problem
        raise
    if key not in _DEFINITIONS:
        _DEFINITIONS[key] = build_definitions(load_config(config_file), home)
    return _DEFINITIONS[key]


def dataflow_job(config_file: str, home: str, digest: str, dataflow: str) -> JobDefinition:
    """A dataflow's job, rebuilt from the config file (which must still hold what the run started with) in the
    process that orchestrates `ajo-exports run` and in each of its step processes (`build_reconstructable_job`)."""
    key = (config_file, home, digest, dataflow)
    if key not in _DATAFLOW_JOBS:
        path = Path(config_file)
        if config_digest(path) != digest:
            raise ConfigError(f"{path}: changed while dataflow {dataflow} was running; run it again")
        definitions = build_definitions(load_config(path), Path(home), dataflow=dataflow)
        _DATAFLOW_JOBS[key] = definitions.resolve_job_def(job_name(dataflow))
    return _DATAFLOW_JOBS[key]


defs = definitions_for(config_path(), ajo_home())

for _args in json.loads(os.environ.get(STEP_JOBS_ENV) or "[]"):  # in the forkserver of `ajo-exports run`'s steps
    try:
        dataflow_job(*_args)
    except Exception:  # noqa: BLE001 - each step then builds it, and reports what is wrong
        pass
