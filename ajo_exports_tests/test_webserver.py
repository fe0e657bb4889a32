"""The platform as people use it, through a real `dagster dev` (webserver + daemon) and its GraphQL API: lineage of
the exports, an export launched on demand, delivery checks on demand (and one that catches a corrupted file), and a
backfill of two daily windows."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from ajo_exports.catalog import get_dataset
from ajo_exports_tests.servers.dagster_web import (  # noqa: F401 - dagster_web is a fixture
    ADHOC_DATASETS,
    DAILY_DATASETS,
    FEEDBACK,
    REPOSITORY,
    DagsterWeb,
    dagster_web,
)

DELIVERED = "delivered"
BACKFILL_TIMEOUT = 420.0

ASSET_NODES = """
query AssetNodes {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
    jobNames
    isPartitioned
    tags { key value }
    metadataEntries { label ... on TextMetadataEntry { text } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
  }
}
"""

METADATA_FRAGMENT = """
fragment Meta on MetadataEntry {
  label
  __typename
  ... on TextMetadataEntry { text }
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on UrlMetadataEntry { url }
  ... on JsonMetadataEntry { jsonString }
  ... on BoolMetadataEntry { boolValue }
}
"""

MATERIALIZATIONS = """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 10, partitions: $partitions) {
        runId
        partition
        metadataEntries { ...Meta }
      }
    }
  }
}
""" + METADATA_FRAGMENT

CHECK_EXECUTIONS = """
query CheckExecutions($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 20) {
    runId
    status
    partition
    evaluation { success description metadataEntries { ...Meta } }
  }
}
""" + METADATA_FRAGMENT

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      partitionNames
      error { message }
      runs(limit: 20) { runId status tags { key value } }
    }
    ... on Error { message }
  }
}
"""


def metadata_values(entries: list[dict]) -> dict[str, object]:
    """GraphQL metadata entries as plain values (JSON decoded)."""
    values: dict[str, object] = {}
    for entry in entries:
        for field in ("text", "intValue", "floatValue", "url", "boolValue"):
            if field in entry:
                values[entry["label"]] = entry[field]
                break
        else:
            values[entry["label"]] = json.loads(entry["jsonString"]) if "jsonString" in entry else None
    return values


def materialization(web: DagsterWeb, key: list[str], run_id: str, partition: str | None = None) -> dict:
    data = web.graphql(MATERIALIZATIONS, {"key": {"path": key}, "partitions": [partition] if partition else None})
    asset = data["assetOrError"]
    assert asset["__typename"] == "Asset", asset
    mine = [m for m in asset["assetMaterializations"] if m["runId"] == run_id]
    assert mine, f"no materialization of {'/'.join(key)} by run {run_id}: {json.dumps(asset)[:2000]}"
    return metadata_values(mine[0]["metadataEntries"])


def check_evaluation(web: DagsterWeb, key: list[str], run_id: str) -> dict:
    executions = web.graphql(CHECK_EXECUTIONS, {"key": {"path": key}, "name": DELIVERED})["assetCheckExecutions"]
    mine = [e for e in executions if e["runId"] == run_id]
    assert mine, f"no '{DELIVERED}' execution of {'/'.join(key)} in run {run_id}: {json.dumps(executions)[:2000]}"
    assert mine[0]["evaluation"] is not None, f"the check did not evaluate: {mine[0]}"
    return mine[0]


def test_lineage_exports_depend_on_their_datasets(dagster_web: DagsterWeb) -> None:  # noqa: F811
    nodes = {"/".join(n["assetKey"]["path"]): n for n in dagster_web.graphql(ASSET_NODES)["assetNodes"]}

    datasets = {key: node for key, node in nodes.items() if key.startswith("aep/")}
    tiers = {key: metadata_values(node["metadataEntries"]).get("tier") for key, node in datasets.items()}
    assert len(datasets) == 21
    assert Counter(tiers.values()) == {"prime": 16, "ultimate": 5}, tiers
    assert {node["groupName"] for node in datasets.values()} == {"aep_datasets"}

    exports = {key: node for key, node in nodes.items() if key.startswith("export/")}
    assert set(exports) == {f"export/adhoc/{slug}" for slug in ADHOC_DATASETS} | {
        f"export/daily/{slug}" for slug in DAILY_DATASETS
    }
    for key, node in exports.items():
        _, flow, slug = key.split("/")
        dataset_key = f"aep/{slug}"
        assert [d["path"] for d in node["dependencyKeys"]] == [["aep", slug]], key
        tags = {t["key"]: t["value"] for t in node["tags"]}
        assert tags["tier"] == tiers[dataset_key] == get_dataset(slug).tier.value, key
        assert tags["dataflow"] == flow and tags["destination_type"] == "local", key
        assert {"polars", "file", "parquet"} <= set(node["kinds"]), (key, node["kinds"])
        assert node["groupName"] == f"export_{flow}"
        assert f"export_{flow}" in node["jobNames"], (key, node["jobNames"])
        assert node["isPartitioned"] is (flow == "daily"), key
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks" and DELIVERED in {c["name"] for c in checks["checks"]}, key
        assert metadata_values(node["metadataEntries"])["dataset_id"] == get_dataset(slug).dataset_id


@pytest.fixture(scope="module")
def adhoc_export(dagster_web: DagsterWeb) -> tuple[list[str], str]:  # noqa: F811
    """Export one dataset of the `adhoc` dataflow on demand (the asset only, no checks): its key and run id."""
    key = ["export", "adhoc", FEEDBACK]
    run_id = dagster_web.launch_run("export_adhoc", asset_keys=[key], check_keys=[])
    dagster_web.assert_success(run_id)
    return key, run_id


def test_on_demand_export_records_what_it_delivered(dagster_web: DagsterWeb, adhoc_export) -> None:  # noqa: F811
    key, run_id = adhoc_export
    run = dagster_web.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { jobName stepKeysToExecute tags { key value } } } }",
        {"id": run_id},
    )["runOrError"]
    assert run["jobName"] == "export_adhoc"
    assert run["stepKeysToExecute"] == [f"export__adhoc__{FEEDBACK}"], "only the one asset, no checks, was run"

    meta = materialization(dagster_web, key, run_id)
    assert meta["rows"] > 0 and meta["files"] >= 1 and meta["bytes"] > 0, meta
    assert meta["seconds"] >= 0 and meta["mb_per_second"] >= 0
    assert meta["manifest_uri"].startswith("file://"), meta["manifest_uri"]
    dataset_id = get_dataset(FEEDBACK).dataset_id
    assert meta["folder"].startswith(f"{dataset_id}/exportTime="), meta["folder"]
    manifest = dagster_web.exports / meta["manifest_key"]
    assert manifest.is_file(), manifest
    assert json.loads(manifest.read_text())["totalRows"] == meta["rows"]
    parts = [dagster_web.exports / k for k in meta["keys"]]
    assert len(parts) == meta["files"] and all(p.is_file() for p in parts), parts
    assert sum(p.stat().st_size for p in parts) == meta["bytes"]


def test_delivery_checks_on_demand_catch_a_corrupted_file(dagster_web: DagsterWeb, adhoc_export) -> None:  # noqa: F811
    key, export_run = adhoc_export
    checks = [(key, DELIVERED)]

    run_id = dagster_web.launch_run("export_adhoc", asset_keys=[], check_keys=checks)
    dagster_web.assert_success(run_id)
    steps = dagster_web.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { stepKeysToExecute } } }", {"id": run_id}
    )["runOrError"]["stepKeysToExecute"]
    assert steps == [f"export__adhoc__{FEEDBACK}_{DELIVERED}"], "a checks-only run must not export again"
    passed = check_evaluation(dagster_web, key, run_id)
    assert passed["status"] == "SUCCEEDED" and passed["evaluation"]["success"], passed
    assert "delivered as listed" in passed["evaluation"]["description"]

    meta = materialization(dagster_web, key, export_run)
    part: Path = dagster_web.exports / meta["keys"][0]
    original = part.read_bytes()
    middle = len(original) // 2
    part.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1:])
    assert part.stat().st_size == len(original)
    try:
        run_id = dagster_web.launch_run("export_adhoc", asset_keys=[], check_keys=checks)
        dagster_web.assert_success(run_id)  # a failed (non-blocking) check does not fail the run
        failed = check_evaluation(dagster_web, key, run_id)
    finally:
        part.write_bytes(original)
    evaluation = failed["evaluation"]
    assert failed["status"] == "FAILED" and not evaluation["success"], failed
    assert part.name in evaluation["description"] and "sha256" in evaluation["description"], evaluation
    assert part.name in metadata_values(evaluation["metadataEntries"])["problems"]

    run_id = dagster_web.launch_run("export_adhoc", asset_keys=[], check_keys=checks)
    dagster_web.assert_success(run_id)
    restored = check_evaluation(dagster_web, key, run_id)
    assert restored["evaluation"]["success"], f"the restored file should pass again: {restored}"


def test_backfill_of_two_daily_windows(dagster_web: DagsterWeb) -> None:  # noqa: F811
    windows = {"2026-11-01": "202611020200", "2026-11-02": "202611030200"}
    params = {
        "selector": {
            "partitionSetName": "export_daily_partition_set",
            "repositorySelector": {"repositoryLocationName": dagster_web.location, "repositoryName": REPOSITORY},
        },
        "partitionNames": list(windows),
    }
    launched = dagster_web.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while True:
        backfill = dagster_web.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        runs = backfill["runs"]
        finished = len(runs) == len(windows) and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING") and finished:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"backfill {backfill_id} not done after {BACKFILL_TIMEOUT:.0f}s: {json.dumps(backfill)}\n"
                        f"--- dagster log ---\n{dagster_web.log_tail()}")
        time.sleep(1)

    failures = [dagster_web.run_failure(r["runId"]) for r in runs if r["status"] != "SUCCESS"]
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and not failures, (backfill, failures)
    partitions = {next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition"): r["runId"] for r in runs}
    assert set(partitions) == set(windows)

    for slug in DAILY_DATASETS:
        dataset_id = get_dataset(slug).dataset_id
        for partition, export_time in windows.items():
            folder = dagster_web.exports / dataset_id / f"exportTime={export_time}"
            assert folder.is_dir(), f"{folder} missing: {sorted(map(str, dagster_web.exports.rglob('*')))}"
            assert len(list(folder.glob("manifest-*.json"))) == 1, sorted(folder.iterdir())
            meta = materialization(dagster_web, ["export", "daily", slug], partitions[partition], partition)
            assert meta["folder"] == f"{dataset_id}/exportTime={export_time}"
            check = check_evaluation(dagster_web, ["export", "daily", slug], partitions[partition])
            assert check["evaluation"]["success"], check
