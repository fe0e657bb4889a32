"""Runs last (files run in name order): no secret the suite used appears anywhere a person or a log shipper reads.

Searched for every registered secret: the GraphQL answers of the real webserver (runs' config and tags, every
event of every run with its metadata and errors, the steps' captured stdout/stderr, asset nodes, materializations
and observations, resources with their configured values, the workspace, sensors' ticks, the instance), the files
of every on-disk Dagster instance the suite used (event logs, run storage, compute logs, process logs), and every
test's captured output. The GraphQL test first runs a real S3 export, with its secret from an environment variable,
through the webserver, so there is a secret to leak; each kind of place must have been searched at least once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ajo_exports_tests import figures
from ajo_exports_tests.leaks import CAPTURED, SECRETS, register_secret
from ajo_exports_tests.servers.dagster_web import (  # noqa: F401 - dagster_web is a fixture
    FEEDBACK,
    JOURNEYS,
    REPOSITORY,
    S3_KEY_ENV,
    S3_SECRET_ENV,
    DagsterWeb,
    dagster_web,
)
from ajo_exports_tests.servers.s3 import MotoServer

VAULT = "vault"  # the secret-bearing dataflow and destination this test adds to the webserver's config

META = """
fragment Meta on MetadataEntry {
  label description __typename
  ... on TextMetadataEntry { text }
  ... on UrlMetadataEntry { url }
  ... on PathMetadataEntry { path }
  ... on NotebookMetadataEntry { path }
  ... on JsonMetadataEntry { jsonString }
  ... on MarkdownMetadataEntry { mdStr }
  ... on IntMetadataEntry { intRepr }
  ... on FloatMetadataEntry { floatRepr }
  ... on BoolMetadataEntry { boolValue }
  ... on PythonArtifactMetadataEntry { module name }
  ... on TableMetadataEntry { table { records } }
  ... on TableSchemaMetadataEntry { schema { columns { name type description } } }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on JobMetadataEntry { jobName locationName }
  ... on TimestampMetadataEntry { timestamp }
}
"""
ERR = """
fragment Err on PythonError { message stack className causes { message stack } }
"""

RUNS = """
query Runs { runsOrError(limit: 1000) { __typename
  ... on Runs { results { runId jobName status runConfigYaml tags { key value } stepKeysToExecute } }
  ... on PythonError { ...Err }
} }
""" + ERR

RUN_EVENTS = """
query Events($runId: ID!, $cursor: String) { logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
  __typename
  ... on EventConnection { cursor hasMore events { __typename
    ... on MessageEvent { message stepKey eventType }
    ... on DisplayableEvent { label description metadataEntries { ...Meta } }
    ... on ErrorEvent { error { ...Err } }
    ... on LogsCapturedEvent { fileKey stepKeys }
    ... on AssetCheckEvaluationEvent { evaluation { description metadataEntries { ...Meta } } }
  } }
  ... on PythonError { ...Err }
  ... on RunNotFoundError { message }
} }
""" + META + ERR

CAPTURED_LOGS = """
query Captured($logKey: [String!]!) { capturedLogs(logKey: $logKey) { stdout stderr } }
"""

ASSETS = """
query Assets { assetNodes { assetKey { path } description metadataEntries { ...Meta } tags { key value }
  requiredResources { resourceKey } }
  assetsOrError { __typename ... on AssetConnection { nodes { key { path }
    assetMaterializations(limit: 100) { runId description metadataEntries { ...Meta } }
    assetObservations(limit: 100) { runId description metadataEntries { ...Meta } } } }
    ... on PythonError { ...Err } }
}
""" + META + ERR

DEFINITIONS = """
query Definitions($repo: RepositorySelector!, $job: PipelineSelector!) {
  workspaceOrError { __typename ... on Workspace { locationEntries { name displayMetadata { key value }
    locationOrLoadError { __typename ... on RepositoryLocation { name environmentPath
      repositories { name displayMetadata { key value } } } ... on PythonError { ...Err } } } } }
  allTopLevelResourceDetailsOrError(repositorySelector: $repo) { __typename
    ... on ResourceDetailsList { results { name description resourceType isTopLevel
      configFields { name description defaultValueAsJson isSecret configTypeKey }
      configuredValues { key value type } nestedResources { name type } } }
    ... on PythonError { ...Err } }
  resourcesOrError(pipelineSelector: $job) { __typename
    ... on ResourceConnection { resources { name description configField { name description defaultValueAsJson
      configType { key ... on CompositeConfigType { fields { name defaultValueAsJson isSecret } } } } } }
    ... on PythonError { ...Err } }
  sensorsOrError(repositorySelector: $repo) { __typename ... on Sensors { results { name description
    sensorState { ticks(limit: 100) { status skipReason error { ...Err } logEvents { events { message } } } } } }
    ... on PythonError { ...Err } }
  instance { info runQueueConfig { maxConcurrentRuns } }
}
""" + ERR


def strings(value: object) -> list[str]:
    """Every string inside a GraphQL answer, decoded (a JSON dump would escape a key's newlines and slashes)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def leaked(answer: object) -> list[str]:
    """The registered secrets (as names, not values) found in an answer."""
    text = "\n".join(strings(answer))
    return [f"secret #{index}" for index, secret in enumerate(sorted(SECRETS)) if secret in text]


def vault_config(web: DagsterWeb, s3: MotoServer, bucket: str) -> str:
    """The webserver's exports.yaml plus an S3 destination whose keys are `${VAR}` references, and a dataflow to it."""
    config = yaml.safe_load(web.config_path.read_text())
    config["destinations"].append({
        "name": VAULT, "type": "amazon_s3", "bucket": bucket, "folder": "vault", "endpoint_url": s3.endpoint_url,
        "region": "us-east-1", "access_key_id": f"${{{S3_KEY_ENV}}}", "secret_access_key": f"${{{S3_SECRET_ENV}}}",
    })
    config["dataflows"].append({"name": VAULT, "destination": VAULT, "datasets": [FEEDBACK, JOURNEYS]})
    return yaml.safe_dump(config, sort_keys=False)


def test_no_secret_in_graphql_answers(dagster_web: DagsterWeb, request: pytest.FixtureRequest) -> None:  # noqa: F811
    web = dagster_web
    # Not a test argument: pytest prints a failing test's arguments, and MotoServer's repr holds its keys.
    s3_server: MotoServer = request.getfixturevalue("s3_server")
    secret = web.secrets_env[S3_SECRET_ENV]
    register_secret(secret)
    assert secret in SECRETS
    original = web.config_path.read_text()
    bucket = s3_server.create_bucket()
    web.config_path.write_text(vault_config(web, s3_server, bucket))
    try:
        web.reload_location()
        vault_run = web.launch_run(f"export_{VAULT}")
        web.assert_success(vault_run)
        delivered = s3_server.keys(bucket, "vault/")
        assert sum("/manifest-" in key for key in delivered) == 2, f"the S3 export used the secret: {delivered}"

        answers: dict[str, object] = {}
        repo = {"repositoryLocationName": web.location, "repositoryName": REPOSITORY}
        job = {**repo, "pipelineName": f"export_{VAULT}"}
        answers["definitions"] = web.graphql(DEFINITIONS, {"repo": repo, "job": job})
        resources = answers["definitions"]["allTopLevelResourceDetailsOrError"]["results"]  # type: ignore[index]
        assert any(r["name"] == f"destination_{VAULT}" for r in resources), "the S3 destination's resource is shown"
        answers["assets"] = web.graphql(ASSETS)
        runs = web.graphql(RUNS)["runsOrError"]
        answers["runs"] = runs
        run_ids = [run["runId"] for run in runs["results"]]
        assert vault_run in run_ids
        events = captured = vault_events = 0
        for run_id in run_ids:
            cursor = None
            while True:
                page = web.graphql(RUN_EVENTS, {"runId": run_id, "cursor": cursor})["logsForRun"]
                answers[f"events {run_id} {cursor}"] = page
                events += len(page.get("events", []))
                vault_events += len(page.get("events", [])) if run_id == vault_run else 0
                for event in page.get("events", []):
                    if event["__typename"] == "LogsCapturedEvent":
                        key = [run_id, "compute_logs", event["fileKey"]]
                        logs = web.graphql(CAPTURED_LOGS, {"logKey": key})["capturedLogs"]
                        answers[f"captured {run_id} {event['fileKey']}"] = logs
                        captured += bool((logs["stdout"] or "") + (logs["stderr"] or ""))
                if not page.get("hasMore"):
                    break
                cursor = page["cursor"]
    finally:
        web.config_path.write_text(original)
        web.reload_location()

    leaks = [f"{name}: {', '.join(found)}" for name, answer in answers.items() if (found := leaked(answer))]
    figures.record("leaks", "graphql_answers_searched", len(answers))
    figures.record("leaks", "graphql_runs_searched", len(run_ids))
    figures.record("leaks", "graphql_events_searched", events)
    figures.record("leaks", "graphql_captured_logs_searched", captured)
    figures.record("leaks", "graphql_leaks_found", len(leaks))
    print(f"searched {len(answers)} GraphQL answers ({len(run_ids)} runs, {events} events, {captured} captured "
          f"stdout/stderr) for {len(SECRETS)} secrets")
    assert vault_events > 0 and captured > 0, "the answers held the S3 run's events and the steps' captured output"
    assert not leaks, "secrets found in GraphQL answers: " + "; ".join(leaks)


def dagster_files(base: Path) -> list[Path]:
    """Every file of every on-disk Dagster instance the suite used (event logs, run storage, compute logs)."""
    return [p for p in base.rglob("*") if p.is_file() and any(part.startswith("dagster") for part in p.parts)]


def is_compute_log(path: Path) -> bool:
    """Steps' stdout/stderr: Dagster's LocalComputeLogManager files (<run>/compute_logs/<key>.out|.err) and the
    step processes' log of `ajo-exports run` (logs/step-processes.log)."""
    in_compute_logs = path.parent.name == "compute_logs" and path.suffix in (".out", ".err")
    return in_compute_logs or path.name == "step-processes.log"


def test_no_secret_in_event_logs_compute_logs_or_captured_output(request: pytest.FixtureRequest) -> None:
    destination_tests = [item for item in request.session.items if "test_destination_" in item.nodeid]
    if destination_tests:
        assert len(SECRETS) >= 3, "the destination fixtures register the secrets they create"
    assert SECRETS, "at least the webserver's S3 secret is registered"
    base = request.config._tmp_path_factory.getbasetemp()  # noqa: SLF001 - the session's temp root
    files = dagster_files(base)
    compute_logs = [path for path in files if is_compute_log(path)]
    assert files, "runs are recorded in on-disk Dagster instances"
    assert compute_logs, "the webserver's runs captured their steps' stdout/stderr in compute log files"
    leaks = []
    for path in files:
        data = path.read_bytes()
        leaks += [f"{path}" for secret in SECRETS if secret.encode() in data]
    for nodeid, text in CAPTURED:
        leaks += [f"output of {nodeid}" for secret in SECRETS if secret in text]
    figures.record("leaks", "secrets_registered", len(SECRETS))
    figures.record("leaks", "dagster_files_searched", len(files))
    figures.record("leaks", "compute_log_files_searched", len(compute_logs))
    figures.record("leaks", "test_outputs_searched", len(CAPTURED))
    figures.record("leaks", "file_and_output_leaks_found", len(set(leaks)))
    graphql_leaks = int(figures.FIGURES.get("leaks", {}).get("graphql_leaks_found", 0))  # type: ignore[call-overload]
    figures.record("leaks", "leaks_found", len(set(leaks)) + graphql_leaks)
    print(f"searched {len(files)} Dagster files ({len(compute_logs)} compute logs) and {len(CAPTURED)} outputs "
          f"for {len(SECRETS)} secrets")
    assert not leaks, "secrets found in: " + ", ".join(sorted(set(leaks)))
