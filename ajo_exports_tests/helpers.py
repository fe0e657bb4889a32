"""Run exports and delivery checks through Dagster, the way `ajo-exports run` does, for tests."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import yaml
from dagster import DagsterInstance

from ajo_exports.catalog import get_dataset
from ajo_exports.config import ExportsConfig, load_config
from ajo_exports.definitions import build_definitions, export_specs
from ajo_exports.export.formats import read_part
from ajo_exports.lake import LocalLake
from ajo_exports.operations import RunReport, run_dataflow
from ajo_exports.settings import destination_id


@dataclass
class ExportRun:
    """What one Dagster run of a dataflow's exports did, as plain values."""

    success: bool
    run_id: str
    exports: dict[str, dict] = field(default_factory=dict)  # slug -> materialization metadata as plain values:
    # files (int), rows (int), bytes (int), keys (list[str], relative to the destination folder), folder (str),
    # manifest_key (str), manifest_uri (str), uris (list[str])
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # slug -> (passed, description)
    error: str | None = None  # the failure message when success is False


def parse_config(config_yaml: str) -> ExportsConfig:
    """Validate YAML text exactly as exports.yaml is validated (through a file, so errors name it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(config_yaml)
    try:
        return load_config(Path(handle.name))
    finally:
        Path(handle.name).unlink()


def as_run(report: RunReport) -> ExportRun:
    run = ExportRun(success=report.success, run_id=report.run_id, error=report.error)
    for slug, item in report.exports.items():
        if item.metadata:
            run.exports[slug] = item.metadata
        if item.check_passed is not None:
            run.checks[slug] = (item.check_passed, item.check_description)
    return run


def run_export(
    config_yaml: str,
    lake_root: Path,
    *,
    dataflow: str,
    datasets: list[str] | None = None,
    export_time: datetime | None = None,
    instance: DagsterInstance | None = None,
    with_checks: bool = True,
    partition_key: str | None = None,
) -> ExportRun:
    """Materialize a dataflow's exports (and their delivery checks) in-process through the real definitions."""
    config = parse_config(config_yaml)
    defs = build_definitions(config, lake_root.parent if lake_root.name == "lake" else _home_for(lake_root))
    report = run_dataflow(
        defs,
        export_specs(config),
        instance or disk_instance(),
        dataflow=dataflow,
        datasets=datasets,
        export_time=export_time,
        with_checks=with_checks,
        partition_key=partition_key,
    )
    return as_run(report)


def run_checks(
    config_yaml: str,
    lake_root: Path,
    *,
    dataflow: str,
    datasets: list[str] | None = None,
    instance: DagsterInstance,
    partition_key: str | None = None,
) -> dict[str, tuple[bool, str]]:
    """Run only the delivery checks of a dataflow's exports, against the latest materializations in `instance`."""
    config = parse_config(config_yaml)
    defs = build_definitions(config, lake_root.parent if lake_root.name == "lake" else _home_for(lake_root))
    report = run_dataflow(
        defs,
        export_specs(config),
        instance,
        dataflow=dataflow,
        datasets=datasets,
        checks_only=True,
        partition_key=partition_key,
    )
    assert report.success, report.error
    return as_run(report).checks


def disk_instance() -> DagsterInstance:
    """A fresh SQLite instance under the session's instance folder, so its event log can be searched later."""
    parent = os.environ.get("AJO_TEST_INSTANCES")
    if not parent:
        return DagsterInstance.ephemeral()
    return DagsterInstance.local_temp(tempfile.mkdtemp(dir=parent), overrides={"telemetry": {"enabled": False}})


def _home_for(lake_root: Path) -> Path:
    """Definitions read the lake at <home>/lake: give a lake elsewhere a home whose `lake` links to it."""
    home = Path(tempfile.mkdtemp(prefix="ajo-home-"))
    (home / "lake").symlink_to(lake_root)
    return home


def local_config(exports: Path, *, datasets: list[str] | str = "all", extra: str = "", **flow: object) -> str:
    """A config with one local destination and one dataflow: the embedded default, made explicit for tests."""
    dataflow = {"name": "demo", "destination": "local", "datasets": datasets, **flow}
    text = yaml.safe_dump(
        {
            "destinations": [{"name": "local", "type": "local", "path": str(exports)}],
            "dataflows": [dataflow],
        },
        sort_keys=False,
    )
    return text + extra


PART = re.compile(r"^part-\d{5}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-c000\.gz\.parquet$")


def lake_rows(lake_root: Path, slug: str, export_time: datetime) -> pl.DataFrame:
    """What an export of `slug` at `export_time` must deliver: the lake's rows (events of the last 365 days)."""
    lake = LocalLake(lake_root)
    dataset = get_dataset(slug)
    frame = lake.scan(dataset, lake.list_batches(dataset)).collect()
    if dataset.is_time_series:
        frame = frame.filter(pl.col("timestamp") >= export_time - timedelta(days=365))
    return frame.sort("_id")


def assert_delivered(
    run: ExportRun, *, list_keys: Callable[[str], list[str]], download: Callable[[str], bytes],
    native_checksum: Callable[[str], str | None], folder: str, destination: str, lake_root: Path, slugs: list[str],
    export_time: datetime, scratch: Path,
) -> None:
    """Each dataset's window holds exactly its part files and this run's manifest (listed with the vendor SDK);
    every file's size, sha256 and the store's own checksum match the manifest; the rows equal the lake's; the
    delivery check passed. `list_keys`, `download` and `native_checksum` take full object keys."""
    assert run.success, run.error
    for slug in slugs:
        window = f"{get_dataset(slug).dataset_id}/exportTime={export_time:%Y%m%d%H%M}"
        prefix = f"{folder}/{window}/" if folder else f"{window}/"
        keys = list_keys(prefix)
        manifest = f"{prefix}manifest-{destination_id(destination)}-{run.run_id}.json"
        parts = [key for key in keys if key != manifest]
        assert manifest in keys and parts, keys
        assert all(PART.match(key.removeprefix(prefix)) for key in parts), parts
        assert sorted(run.exports[slug]["keys"]) == [key.removeprefix(f"{folder}/") for key in parts]
        assert run.exports[slug]["manifest_key"] == manifest.removeprefix(f"{folder}/")
        body = json.loads(download(manifest))
        assert body["flowRunId"] == run.run_id and [prefix + item["name"] for item in body["exportResults"]] == parts
        frames = []
        for item in body["exportResults"]:
            data = download(prefix + item["name"])
            assert (item["size"], item["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
            native = native_checksum(prefix + item["name"])
            assert native is not None and item["nativeChecksum"] == native
            (scratch / item["name"]).write_bytes(data)
            frames.append(read_part(scratch / item["name"], item["name"]))
        assert pl.concat(frames).sort("_id").equals(lake_rows(lake_root, slug, export_time)), slug
        assert run.checks[slug][0], run.checks[slug][1]


def dagster_text(instance: DagsterInstance, run_id: str) -> str:
    """Everything Dagster recorded about a run (events, errors with causes), to search for leaked secrets."""
    return "\n".join(repr(record) for record in instance.all_logs(run_id))
