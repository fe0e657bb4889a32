"""Beyond one machine: the same definitions on a Postgres instance with steps on two Celery workers over Redis.

Real servers on 127.0.0.1 started here: PostgreSQL (Dagster's run, event-log and schedule storage, configured by
deploy/dagster.yaml itself), Redis (Celery's broker and result backend), moto's S3 (the destination). Then a code
server (the product's own definitions: exports.yaml says `execution: {executor: celery}`), a webserver,
a daemon and two workers. A backfill of three daily windows of a scheduled three-dataset dataflow must deliver every
window exactly once, with steps on both workers, runs and events in Postgres, runs visible through GraphQL. A
second backfill loses a worker (SIGKILL of its whole process group) while it runs a step: the step is acknowledged
late, so Redis hands it to the other worker after the visibility timeout, and the windows still end complete and
exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from ajo_exports.catalog import get_dataset
from ajo_exports.export.formats import read_part
from ajo_exports.lake import LocalLake
from ajo_exports.lake.generator import generate_batch
from ajo_exports.settings import destination_id
from ajo_exports_tests.figures import record
from ajo_exports_tests.servers.postgres import PostgresServer, free_port, postgres_server  # noqa: F401 - fixture
from ajo_exports_tests.servers.redis import RedisServer, redis_server  # noqa: F401 - fixture
from ajo_exports_tests.servers.s3 import MotoServer

REPO = Path(__file__).resolve().parents[1]
FEEDBACK = "ajo_message_feedback_event_dataset"
JOURNEYS = "journeys"
DECISIONS = "decision_object_repository_activities"
DATASETS = [FEEDBACK, JOURNEYS, DECISIONS]
DATAFLOW, DESTINATION, JOB = "nightly", "s3", "export_nightly"
START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
FIRST = ["2026-11-01", "2026-11-02", "2026-11-03"]
SECOND = ["2026-11-04", "2026-11-05", "2026-11-06"]
FOLDER = "exports/ajo"
KEY_ENV, SECRET_ENV = "AJO_SCALE_S3_ACCESS_KEY_ID", "AJO_SCALE_S3_SECRET_ACCESS_KEY"
# A lost worker's step goes back to the queue this long after it was handed out (longer than any step here).
VISIBILITY_TIMEOUT = 60
WORKERS = ("w1", "w2")
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
START_TIMEOUT = 240.0
BACKFILL_TIMEOUT = 420.0
REPOSITORY = "__repository__"


# --- processes --------------------------------------------------------------------------------------------------


@dataclass
class Service:
    """One started program in its own session (so it and its children stop, or die, together)."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a crashed node, no warm shutdown."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            try:  # leftovers of an exited leader (a worker's pool child)
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


@dataclass
class Cluster:
    """Everything the test starts on top of the servers, and the environment they share."""

    home: Path
    env: dict[str, str] = field(repr=False)
    web_port: int = field(default_factory=free_port)
    code_port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)
    location: str = "ajo_exports"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def start(self, name: str, args: list[str]) -> Service:
        log_path = self.home / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.services[name] = service = Service(name, process, log_path)
        return service

    def start_worker(self, name: str) -> Service:
        """`dagster-celery worker start`, one pool process (one step at a time), the definitions imported once
        before the pool forks."""
        return self.start(name, [
            str(Path(sys.executable).parent / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
            "-y", str(self.home / "celery.yaml"), "-n", name, "-i", "ajo_exports.definitions",
            "--", "--concurrency=1", "--without-gossip", "--without-mingle",
        ])

    def stop_all(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ({'alive' if s.alive() else 'exited'}) ---\n{s.log_tail(1500)}"
                         for s in self.services.values())

    # --- GraphQL ------------------------------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/graphql", data=body, headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1
            payload = json.loads(response.read())
        assert not payload.get("errors"), json.dumps(payload["errors"])[:3000]
        return payload["data"]

    def wait_loaded(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        problem = "no answer"
        while time.monotonic() < deadline:
            for service in self.services.values():
                if not service.alive():
                    pytest.fail(f"{service.name} exited early\n{self.logs()}", pytrace=False)
            try:
                entries = self.graphql(WORKSPACE, timeout=10)["workspaceOrError"]["locationEntries"]
            except (OSError, AssertionError, KeyError, TypeError) as exc:
                problem = str(exc)
                time.sleep(1)
                continue
            loaded = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"]
            if loaded:
                self.location = loaded[0]["name"]
                return
            problem = json.dumps(entries)[:1500]
            errors = [(e["locationOrLoadError"] or {}).get("message", "") for e in entries]
            if any(m and "UNAVAILABLE" not in m and "connect" not in m for m in errors):
                pytest.fail(f"the code location failed to load: {problem}\n{self.logs()}", pytrace=False)
            time.sleep(1)
        pytest.fail(f"the code location did not load within {START_TIMEOUT:.0f}s: {problem}\n{self.logs()}")

    def launch_backfill(self, partitions: list[str]) -> str:
        params = {
            "selector": {
                "partitionSetName": f"{JOB}_partition_set",
                "repositorySelector": {"repositoryLocationName": self.location, "repositoryName": REPOSITORY},
            },
            "partitionNames": partitions,
            "fromFailure": False,
        }
        answer = self.graphql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        assert answer["__typename"] == "LaunchBackfillSuccess", json.dumps(answer)[:3000]
        return answer["backfillId"]

    def backfill_runs(self, backfill_id: str) -> list[dict]:
        data = self.graphql(RUNS, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}})
        return data["runsOrError"]["results"]

    def wait_backfill(self, backfill_id: str, partitions: list[str]) -> dict[str, dict]:
        """Poll until each partition's latest run has finished and none is pending; return those runs."""
        deadline = time.monotonic() + BACKFILL_TIMEOUT
        latest: dict[str, dict] = {}
        while time.monotonic() < deadline:
            runs = self.backfill_runs(backfill_id)  # newest first
            latest = {}
            for run in runs:
                tags = {t["key"]: t["value"] for t in run["tags"]}
                latest.setdefault(tags.get("dagster/partition", "?"), run)
            settled = all(r["status"] in FINISHED for r in runs)
            if sorted(latest) == sorted(partitions) and settled:
                if all(r["status"] == "SUCCESS" for r in latest.values()):
                    return latest
                final = [r for r in latest.values() if r["status"] != "SUCCESS" and not self._will_retry(r)]
                if final:
                    pytest.fail(f"backfill {backfill_id}: runs failed for good: {final}\n{self.logs()}")
            time.sleep(2)
        states = {k: v["status"] for k, v in latest.items()}
        pytest.fail(f"backfill {backfill_id} not finished in {BACKFILL_TIMEOUT:.0f}s: {states}\n{self.logs()}")

    @staticmethod
    def _will_retry(run: dict) -> bool:
        """A failed run that run_retries will re-execute carries dagster/will_retry=true (set by the daemon)."""
        tags = {t["key"]: t["value"] for t in run["tags"]}
        return tags.get("dagster/will_retry", "true") == "true"


WORKSPACE = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
LAUNCH_BACKFILL = """
mutation Backfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""
RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { __typename ... on Runs { results { runId status jobName tags { key value } } } }
}
"""


# --- the home: lake, config, instance ---------------------------------------------------------------------------


def window(partition: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(partition).replace(hour=2, tzinfo=UTC)
    return start, start + timedelta(days=1)


def build_home(home: Path, lake_root: Path, s3: MotoServer, bucket: str) -> None:
    """A copy of the session lake with one more batch per dataset in each later window; exports.yaml; the
    instance: deploy/dagster.yaml as is but for the per-destination run limit (2, so both workers stay busy)."""
    shutil.copytree(lake_root, home / "lake")
    lake = LocalLake(home / "lake")
    for day, partition in enumerate(FIRST[1:] + SECOND, start=2):
        moment = window(partition)[0] + timedelta(hours=10)
        for slug in DATASETS:
            dataset = get_dataset(slug)
            frame = generate_batch(dataset, 40 + 7 * day, seed=300 + day, batch_index=day, now=moment)
            lake.append_batch(dataset, frame, ingested_at=moment)
    (home / "exports.yaml").write_text(yaml.safe_dump({
        "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate"},
        "destinations": [{
            "name": DESTINATION, "type": "amazon_s3", "bucket": bucket, "folder": FOLDER,
            "endpoint_url": s3.endpoint_url, "region": "us-east-1",
            "access_key_id": f"${{{KEY_ENV}}}", "secret_access_key": f"${{{SECRET_ENV}}}",
        }],
        "dataflows": [{
            "name": DATAFLOW, "destination": DESTINATION, "datasets": DATASETS, "max_rows_per_file": 60,
            "schedule": {"frequency": "daily", "start": START.isoformat().replace("+00:00", "Z"),
                         "end": "2027-05-01T00:00:00Z"},
        }],
        "execution": {"executor": "celery", "celery_config": str(home / "celery.yaml")},
    }, sort_keys=False))
    instance = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    for limit in instance["run_coordinator"]["config"]["tag_concurrency_limits"]:
        if limit["key"] == "ajo/destination":
            limit["limit"] = 2
    (home / "dagster").mkdir()
    (home / "dagster" / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
    celery = yaml.safe_load((REPO / "deploy" / "celery.yaml").read_text())
    celery["execution"]["config"]["config_source"]["broker_transport_options"]["visibility_timeout"] = (
        VISIBILITY_TIMEOUT
    )
    (home / "celery.yaml").write_text(yaml.safe_dump(celery, sort_keys=False))
    (home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": 0, "location_name": "ajo_exports"}}]}))


@pytest.fixture
def cluster(
    tmp_path: Path, lake_root: Path, s3_server: MotoServer, postgres_server: PostgresServer,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> Iterator[tuple[Cluster, str]]:
    """The servers, then a code server, webserver, daemon and two Celery workers on them."""
    home = tmp_path / "home"
    home.mkdir()
    bucket = s3_server.create_bucket()
    build_home(home, lake_root, s3_server, bucket)
    assert s3_server.writer is not None
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update({
        "AJO_EXPORTS_HOME": str(home), "AJO_EXPORTS_CONFIG": str(home / "exports.yaml"),
        "DAGSTER_HOME": str(home / "dagster"),
        "AJO_CELERY_BROKER_URL": redis_server.url(0), "AJO_CELERY_BACKEND_URL": redis_server.url(1),
        "DAGSTER_DISABLE_TELEMETRY": "1", "AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "true",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONPATH": str(REPO),
        # dagster-celery starts `celery` from the PATH: this interpreter's, even when the venv is not activated.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        KEY_ENV: s3_server.writer.access_key_id, SECRET_ENV: s3_server.writer.secret_access_key,
        **postgres_server.env(),
    })
    cluster = Cluster(home, env)
    workspace = yaml.safe_load((home / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"]["port"] = cluster.code_port
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    bin_dir = Path(sys.executable).parent
    try:
        cluster.start("code-server", [
            str(bin_dir / "dagster"), "code-server", "start", "-m", "ajo_exports.definitions",
            "-h", "127.0.0.1", "-p", str(cluster.code_port),
        ])
        for name in WORKERS:
            cluster.start_worker(name)
        cluster.start("webserver", [
            str(bin_dir / "dagster-webserver"), "-w", str(home / "workspace.yaml"),
            "-h", "127.0.0.1", "-p", str(cluster.web_port),
        ])
        cluster.start("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")])
        cluster.wait_loaded()
        wait_workers(cluster)
        yield cluster, bucket
    finally:
        cluster.stop_all()


def celery_app(cluster: Cluster) -> Any:
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app

    return make_app(CeleryExecutor.for_cli(
        broker=cluster.env["AJO_CELERY_BROKER_URL"], backend=cluster.env["AJO_CELERY_BACKEND_URL"],
    ).app_args())


def wait_workers(cluster: Cluster) -> None:
    """Both workers answer a ping over the broker."""
    app = celery_app(cluster)
    deadline = time.monotonic() + START_TIMEOUT
    names: set[str] = set()
    while time.monotonic() < deadline:
        names = {n.split("@")[0] for n in (app.control.inspect(timeout=2).ping() or {})}
        if names >= set(WORKERS):
            return
        time.sleep(1)
    pytest.fail(f"Celery workers answering: {sorted(names)}, expected {WORKERS}\n{cluster.logs()}")


# --- what Dagster recorded --------------------------------------------------------------------------------------


@dataclass
class StepRecord:
    workers: list[str] = field(default_factory=list)  # in order, one per Celery task that ran the step
    succeeded: bool = False


def steps_of(instance: Any, run_ids: list[str]) -> dict[tuple[str, str], StepRecord]:
    """(run, step) -> the workers that ran it (the celery task's engine event) and whether it succeeded."""
    from dagster import DagsterEventType

    steps: dict[tuple[str, str], StepRecord] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if event is None or entry.step_key is None:
                continue
            step = steps.setdefault((run_id, entry.step_key), StepRecord())
            if event.event_type == DagsterEventType.ENGINE_EVENT and event.engine_event_data is not None:
                worker = event.engine_event_data.metadata.get("Celery worker")
                if worker is not None:
                    step.workers.append(str(worker.value).split("@")[0])
            if event.event_type == DagsterEventType.STEP_SUCCESS:
                step.succeeded = True
    return steps


def failed_checks(instance: Any, run_ids: list[str]) -> list[str]:
    from dagster import DagsterEventType

    evaluations = []
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluations.append(entry.dagster_event.event_specific_data)
    assert {e.check_name for e in evaluations} >= {"delivered"}, evaluations
    return [f"{e.asset_key.to_user_string()} {e.check_name}" for e in evaluations if not e.passed]


def assert_windows_delivered(s3: MotoServer, bucket: str, lake: Path, runs: dict[str, dict], scratch: Path) -> None:
    """Each dataset's window folder holds exactly one manifest (of the window's successful run) and the part files
    it lists; the parts read back equal the lake's rows of the window."""
    client = s3.s3()
    everything = s3.keys(bucket, f"{FOLDER}/")
    manifest_prefix = f"manifest-{destination_id(DESTINATION)}-"
    for partition, run in runs.items():
        start, end = window(partition)
        for slug in DATASETS:
            dataset = get_dataset(slug)
            prefix = f"{FOLDER}/{dataset.dataset_id}/exportTime={end:%Y%m%d%H%M}/"
            keys = [k for k in everything if k.startswith(prefix)]
            manifests = [k for k in keys if k.removeprefix(prefix).startswith(manifest_prefix)]
            assert manifests == [f"{prefix}{manifest_prefix}{run['runId']}.json"], (partition, slug, keys)
            body = json.loads(client.get_object(Bucket=bucket, Key=manifests[0])["Body"].read())
            parts = sorted(k for k in keys if k not in manifests)
            assert sorted(prefix + item["name"] for item in body["exportResults"]) == parts, (partition, slug)
            frames = []
            for item in body["exportResults"]:
                local = scratch / f"{partition}-{item['name']}"
                local.write_bytes(client.get_object(Bucket=bucket, Key=prefix + item["name"])["Body"].read())
                frames.append(read_part(local, item["name"]))
            source = LocalLake(lake)
            since = None if start == START else start
            expected = source.scan(dataset, source.list_batches(dataset, since, end)).collect()
            if dataset.is_time_series:
                expected = expected.filter(pl.col("timestamp") >= end - timedelta(days=365))
            got = pl.concat(frames) if frames else expected.clear()
            assert expected.height > 0 and got.sort("_id").equals(expected.sort("_id")), (partition, slug)


@pytest.fixture
def pg_instance(cluster: tuple[Cluster, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The test's own view of the same instance (deploy/dagster.yaml on the test's Postgres), to read events."""
    from dagster import DagsterInstance

    for name in ("AJO_PG_HOST", "AJO_PG_PORT", "AJO_PG_USER", "AJO_PG_PASSWORD", "AJO_PG_DB"):
        monkeypatch.setenv(name, cluster[0].env[name])
    with DagsterInstance.from_config(str(cluster[0].dagster_home)) as instance:
        yield instance


def kill_during_a_step(cluster: Cluster, instance: Any, attempts: int = 4) -> tuple[str, str, str]:
    """SIGKILL a worker while it runs an export step; return (worker, run id, step key).

    The broker reports a running task up to a second late, and a small step can end in that second: when the
    step had already succeeded at the kill, the kill missed it, so the worker is started again and another step
    is chosen."""
    from dagster import DagsterEventType

    for _ in range(attempts):
        victim, run_id, step_key = active_step(cluster)
        cluster.services[victim].kill()
        finished = {e.step_key for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)}
        if step_key not in finished:
            return victim, run_id, step_key
        cluster.start_worker(victim)
        wait_workers(cluster)
    pytest.fail(f"each of {attempts} kills landed after its step had ended\n{cluster.logs()}")


def active_step(cluster: Cluster, timeout: float = 120.0) -> tuple[str, str, str]:
    """Wait until a worker runs an export step; return (worker, run id, step key)."""
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import unpack_value

    app = celery_app(cluster)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []  # the export step that started last has the most work left: the kill lands inside it
        for host, tasks in (app.control.inspect(timeout=1).active() or {}).items():
            for task in tasks:
                args = unpack_value(task["kwargs"]["execute_step_args_packed"], as_type=ExecuteStepArgs)
                (step_key,) = args.step_keys_to_execute or ["?"]
                if step_key.startswith("export"):
                    found.append((task.get("time_start") or 0, host.split("@")[0], args.run_id, step_key))
        if found:
            _, worker, run_id, step_key = max(found)
            return worker, run_id, step_key
        time.sleep(0.2)
    pytest.fail(f"no export step running on a worker within {timeout:.0f}s\n{cluster.logs()}")


# --- the test ---------------------------------------------------------------------------------------------------


def test_backfill_on_postgres_and_two_celery_workers_survives_a_lost_worker(
    cluster: tuple[Cluster, str], s3_server: MotoServer, postgres_server: PostgresServer,  # noqa: F811
    pg_instance: Any, tmp_path: Path,
) -> None:
    """The same definitions, unchanged, on the instance and workers a customer outgrowing one machine would run."""
    cl, bucket = cluster
    instance = pg_instance
    lake = cl.home / "lake"
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    began = time.monotonic()
    first_id = cl.launch_backfill(FIRST)
    first = cl.wait_backfill(first_id, FIRST)
    first_seconds = time.monotonic() - began
    assert {p: r["status"] for p, r in first.items()} == dict.fromkeys(FIRST, "SUCCESS"), cl.logs()
    assert_windows_delivered(s3_server, bucket, lake, first, scratch)
    first_runs = [r["runId"] for r in cl.backfill_runs(first_id)]
    assert not failed_checks(instance, [r["runId"] for r in first.values()])
    steps = steps_of(instance, first_runs)
    per_worker = Counter(w for record_ in steps.values() for w in record_.workers)
    assert set(per_worker) == set(WORKERS), per_worker
    assert all(s.succeeded and len(s.workers) == 1 for s in steps.values()), steps

    # Runs and their events are rows of the Postgres database; the webserver shows the same runs.
    with postgres_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs")
        in_postgres = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s)", (first_runs,))
        (events,) = cursor.fetchone()
    assert set(first_runs) <= set(in_postgres) and all(in_postgres[r] == "SUCCESS" for r in first_runs)
    assert events >= 20 * len(first_runs), events
    shown = cl.graphql(RUNS, {"filter": {"runIds": first_runs}})["runsOrError"]["results"]
    assert sorted(r["runId"] for r in shown) == sorted(first_runs) and {r["jobName"] for r in shown} == {JOB}

    # A worker dies (SIGKILL, pool and all) while it runs an export step of the second backfill.
    began = time.monotonic()
    second_id = cl.launch_backfill(SECOND)
    victim, run_id, step_key = kill_during_a_step(cl, instance)
    survivor = next(w for w in WORKERS if w != victim)
    second = cl.wait_backfill(second_id, SECOND)
    second_seconds = time.monotonic() - began
    assert {p: r["status"] for p, r in second.items()} == dict.fromkeys(SECOND, "SUCCESS"), cl.logs()
    assert_windows_delivered(s3_server, bucket, lake, {**first, **second}, scratch)
    second_runs = [r["runId"] for r in cl.backfill_runs(second_id)]
    assert not failed_checks(instance, [r["runId"] for r in second.values()])
    after = steps_of(instance, second_runs)
    lost = after[(run_id, step_key)]
    # The kill can land after the broker handed the step to the victim but before its STEP_START reached Postgres:
    # then only the survivor's attempt is recorded. Either way the step ends on the survivor, successfully.
    assert lost.succeeded and lost.workers[-1] == survivor and set(lost.workers) <= {victim, survivor}, (step_key, lost)
    retried = sum(1 for s in after.values() if len(s.workers) > 1)
    per_worker.update(w for record_ in after.values() for w in record_.workers)

    record("scale", "workers", len(WORKERS))
    record("scale", "steps_per_worker", dict(sorted(per_worker.items())))
    record("scale", "windows", len(FIRST) + len(SECOND))
    record("scale", "datasets_per_window", len(DATASETS))
    record("scale", "backfill_seconds", round(first_seconds, 1))
    record("scale", "backfill_with_lost_worker_seconds", round(second_seconds, 1))
    record("scale", "steps_retried_after_lost_worker", retried)
    record("scale", "lost_worker_step", f"{victim} killed in {step_key}, finished on {survivor}")
    record("scale", "visibility_timeout_seconds", VISIBILITY_TIMEOUT)
