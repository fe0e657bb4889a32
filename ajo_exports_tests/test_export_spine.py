"""The export spine on the embedded default: dataset → export asset → IO manager → files + manifest → check."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey

from ajo_exports.catalog import get_dataset
from ajo_exports.config import Compression, FileFormat
from ajo_exports.destinations.base import StoredObject
from ajo_exports.destinations.local import LocalStorage
from ajo_exports.export.formats import read_part
from ajo_exports.export.writer import ExportSpec, export_frame
from ajo_exports.lake import LocalLake
from ajo_exports.settings import destination_id
from ajo_exports_tests.helpers import lake_rows, local_config, run_checks, run_export

EXPORT_TIME = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
FEEDBACK = "ajo_message_feedback_event_dataset"
JOURNEYS = "journeys"
PART = re.compile(
    r"^part-(\d{5})-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-c000\.(gz\.parquet|json\.gz|parquet)$"
)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def delivered_rows(folder: Path) -> pl.DataFrame:
    parts = sorted(p for p in folder.iterdir() if p.name.startswith("part-"))
    return pl.concat([read_part(p, p.name) for p in parts]).sort("_id")


def test_exact_keys_rows_and_manifest(tmp_path: Path, lake_root: Path, instance) -> None:
    exports = tmp_path / "exports"
    run = run_export(
        local_config(exports, datasets=[FEEDBACK, JOURNEYS]),
        lake_root,
        dataflow="demo",
        export_time=EXPORT_TIME,
        instance=instance,
    )
    assert run.success, run.error
    dest = destination_id("local")
    for slug in (FEEDBACK, JOURNEYS):
        dataset_id = get_dataset(slug).dataset_id
        folder = f"{dataset_id}/exportTime=202611020600"
        keys = [k for k in files_under(exports) if k.startswith(dataset_id)]
        assert len(keys) == 2
        part, manifest = sorted(keys, key=lambda k: "manifest" in k)
        assert part.rsplit("/", 1)[0] == folder and PART.match(part.rsplit("/", 1)[1]), part
        assert part.endswith(".gz.parquet")
        assert manifest == f"{folder}/manifest-{dest}-{run.run_id}.json"
        assert run.exports[slug]["keys"] == [part]
        assert run.exports[slug]["manifest_key"] == manifest

        body = json.loads((exports / manifest).read_text())
        assert body["flowRunId"] == run.run_id
        assert body["scheduledTime"] == "2026-11-02T06:00:00Z"
        assert body["datasetId"] == dataset_id
        (item,) = body["exportResults"]
        assert item["name"] == part.rsplit("/", 1)[1]
        assert item["sinkPath"] == "/" + str((exports / folder).resolve()).lstrip("/")
        assert item["size"] == (exports / part).stat().st_size
        expected = lake_rows(lake_root, slug, EXPORT_TIME)
        assert body["totalRows"] == item["rows"] == expected.height == run.exports[slug]["rows"]
        assert set(body["schema"]) == set(get_dataset(slug).schema)

        observation = instance.fetch_observations(AssetKey(["aep", slug]), limit=1).records[0].asset_observation
        lake = LocalLake(lake_root)
        batches = lake.list_batches(get_dataset(slug))
        assert observation.metadata["rows"].value == sum(b.rows for b in batches)
        assert observation.metadata["batches"].value == len(batches) == 2

        got = delivered_rows(exports / folder)
        assert got.equals(expected), f"{slug}: delivered rows differ from the lake"
        assert run.checks[slug][0], run.checks[slug][1]


def test_event_datasets_export_only_the_last_365_days(tmp_path: Path, lake_root: Path) -> None:
    run = run_export(local_config(tmp_path, datasets=[FEEDBACK]), lake_root, dataflow="demo", export_time=EXPORT_TIME)
    lake = LocalLake(lake_root)
    dataset = get_dataset(FEEDBACK)
    everything = lake.scan(dataset, lake.list_batches(dataset)).collect()
    cutoff = EXPORT_TIME - timedelta(days=365)
    older = everything.filter(pl.col("timestamp") < cutoff).height
    assert older > 0, "the sample lake must hold events older than 365 days"
    assert run.exports[FEEDBACK]["rows"] == everything.height - older


def test_json_gzip_and_bounded_part_files(tmp_path: Path, lake_root: Path) -> None:
    config = local_config(tmp_path, datasets=[FEEDBACK], format="json", compression="gzip", max_rows_per_file=40)
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME)
    assert run.success, run.error
    expected = lake_rows(lake_root, FEEDBACK, EXPORT_TIME)
    folder = tmp_path / get_dataset(FEEDBACK).dataset_id / "exportTime=202611020600"
    parts = sorted(p for p in folder.iterdir() if p.name.startswith("part-"))
    assert len(parts) == -(-expected.height // 40) == run.exports[FEEDBACK]["files"]
    assert [int(PART.match(p.name).group(1)) for p in parts] == list(range(len(parts)))
    counts = [read_part(p, p.name).height for p in parts]
    assert all(c == 40 for c in counts[:-1]) and 0 < counts[-1] <= 40
    assert all(p.name.endswith(".json.gz") for p in parts)
    ids = pl.concat([read_part(p, p.name).select("_id") for p in parts])["_id"].sort()
    assert ids.to_list() == expected["_id"].to_list()
    assert run.checks[FEEDBACK][0]


@pytest.mark.parametrize(
    ("file_format", "compression", "suffix", "codec"),
    [
        ("parquet", "none", ".parquet", "UNCOMPRESSED"),
        ("parquet", "gzip", ".gz.parquet", "GZIP"),
        ("parquet", "zstd", ".zstd.parquet", "ZSTD"),
        ("parquet", "snappy", ".snappy.parquet", "SNAPPY"),
    ],
)
def test_parquet_compressions(tmp_path: Path, lake_root: Path, file_format, compression, suffix, codec) -> None:
    import pyarrow.parquet as pq

    config = local_config(tmp_path, datasets=[JOURNEYS], format=file_format, compression=compression)
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME)
    (key,) = run.exports[JOURNEYS]["keys"]
    assert key.endswith(suffix) and (suffix != ".parquet" or not key.endswith(".gz.parquet"))
    assert pq.ParquetFile(tmp_path / key).metadata.row_group(0).column(0).compression == codec


def test_rerun_of_a_window_replaces_it_exactly(tmp_path: Path, lake_root: Path, instance) -> None:
    config = local_config(tmp_path, datasets=[FEEDBACK], max_rows_per_file=100)
    first = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    second = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    folder = tmp_path / get_dataset(FEEDBACK).dataset_id / "exportTime=202611020600"
    names = sorted(p.name for p in folder.iterdir())
    parts = [n for n in names if n.startswith("part-")]
    manifests = [n for n in names if n.startswith("manifest-")]
    assert manifests == [f"manifest-{destination_id('local')}-{second.run_id}.json"]
    assert sorted(f"{second.exports[FEEDBACK]['folder']}/{p}" for p in parts) == sorted(
        second.exports[FEEDBACK]["keys"]
    )
    assert set(first.exports[FEEDBACK]["keys"]).isdisjoint(second.exports[FEEDBACK]["keys"])
    assert delivered_rows(folder).equals(lake_rows(lake_root, FEEDBACK, EXPORT_TIME))
    assert second.checks[FEEDBACK][0]


class FailingManifestStorage(LocalStorage):
    """A real local folder that refuses the manifest: a failure between the data files and the manifest."""

    def publish(self, local_path: Path, key: str) -> StoredObject:
        if key.rsplit("/", 1)[-1].startswith("manifest-"):
            raise OSError("disk full while writing the manifest")
        return super().publish(local_path, key)


def test_failure_before_the_manifest_leaves_no_manifest(tmp_path: Path, lake_root: Path) -> None:
    dataset = get_dataset(FEEDBACK)
    lake = LocalLake(lake_root)
    frame = lake.scan(dataset, lake.list_batches(dataset))
    spec = ExportSpec(
        dataset.dataset_id,
        "demo",
        destination_id("local"),
        f"{dataset.dataset_id}/exportTime=1",
        EXPORT_TIME,
        "run-1",
        FileFormat.PARQUET,
        Compression.GZIP,
        max_rows_per_file=50,
    )
    good = export_frame(LocalStorage("local", tmp_path), frame, spec)
    assert good.manifest_key and len(good.keys) > 1
    with pytest.raises(OSError, match="disk full"):
        export_frame(FailingManifestStorage("local", tmp_path), frame, spec)
    left = files_under(tmp_path)
    assert not [k for k in left if "manifest-" in k], "a failed export must not leave a manifest"
    assert left == [], "old parts are replaced before the manifest, and the failed attempt's own are withdrawn"
    rerun = export_frame(LocalStorage("local", tmp_path), frame, spec)
    after = files_under(tmp_path)
    assert sorted(after) == sorted([*rerun.keys, rerun.manifest_key])


def test_delivery_check_names_a_corrupted_and_a_missing_file(tmp_path: Path, lake_root: Path, instance) -> None:
    config = local_config(tmp_path, datasets=[FEEDBACK, JOURNEYS], max_rows_per_file=100)
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    assert all(passed for passed, _ in run.checks.values())
    corrupted = tmp_path / run.exports[FEEDBACK]["keys"][0]
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    missing = tmp_path / run.exports[JOURNEYS]["keys"][0]
    missing.unlink()
    checks = run_checks(config, lake_root, dataflow="demo", instance=instance)
    passed, description = checks[FEEDBACK]
    assert not passed and corrupted.name in description and "sha256 expected" in description
    passed, description = checks[JOURNEYS]
    assert not passed and missing.name in description and "missing" in description


def test_check_fails_on_a_stray_duplicate_part_file(tmp_path: Path, lake_root: Path, instance) -> None:
    config = local_config(tmp_path, datasets=[JOURNEYS])
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    original = tmp_path / run.exports[JOURNEYS]["keys"][0]
    stray = original.with_name(original.name.replace("part-00000-", "part-00001-"))
    shutil.copyfile(original, stray)
    passed, description = run_checks(config, lake_root, dataflow="demo", instance=instance)[JOURNEYS]
    assert not passed and stray.name in description
