"""Load: 126 exports (6 dataflows x 21 datasets) queued at once and run by a real `dagster-daemon`.

Why: the run queue in dagster.yaml is what keeps many runs from piling onto one destination. Here every run is
launched the way the UI launches it (GraphQL `launchRun`, which submits to the QueuedRunCoordinator), all 126 are in
the queue before the daemon starts, and the test proves that every (dataflow, dataset) was delivered exactly once,
row for row, and that the per-destination limit held (and was actually reached) from the runs' own timestamps.
`AJO_LOAD_DATASETS=N` runs N datasets per dataflow (CI: 2, so 12 runs; 21 gives the 126); `AJO_LOAD_TIMEOUT` sets
the wait in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from ajo_exports.assets import DELIVERY_CHECK, DESTINATION_TAG, job_name
from ajo_exports.catalog import DATASETS
from ajo_exports.config import destination_id
from ajo_exports.export.formats import read_part
from ajo_exports_tests import figures
from ajo_exports_tests.helpers import lake_rows
from ajo_exports_tests.servers.dagster_web import LAUNCH_RUN, REPO, REPOSITORY, _group_members
from ajo_exports_tests.servers.s3 import MotoServer

DAEMON = Path(sys.executable).parent / "dagster-daemon"
LOCAL_DESTINATIONS = ["local1", "local2", "local3", "local4", "local5"]
S3_DESTINATION = "s3"
DESTINATIONS = [*LOCAL_DESTINATIONS, S3_DESTINATION]
FLOWS = {f"load{index}": destination for index, destination in enumerate(DESTINATIONS, start=1)}
PER_DESTINATION = 2  # the ajo/destination tag limit of the run queue in this test
MAX_RUNS = 6  # max_concurrent_runs
KEY_ENV, SECRET_ENV = "AJO_LOAD_S3_ACCESS_KEY_ID", "AJO_LOAD_S3_SECRET_ACCESS_KEY"
# Each run worker is a fresh Python process (Dagster's gRPC server spawns it) that imports Dagster and the definitions
# before exporting anything: about 6 CPU s per run measured, so 126 runs need at least ~6.5 min of 2 idle cores.
RUN_TIMEOUT = float(os.environ.get("AJO_LOAD_TIMEOUT", "900"))
# Datasets per dataflow that get a run (all 21 by default; fewer only to measure the cost per run).
# CI queues 2 datasets of each of the 6 dataflows (12 runs): the 126 (AJO_LOAD_DATASETS=21) need ~13 CPU
# minutes of run start-up on 2 cores, and on a starved machine the daemon's code server was replaced mid-launch
# (33 of 126 runs failed to launch); see the README's figures.
SELECTED = DATASETS[: int(os.environ.get("AJO_LOAD_DATASETS", "2"))]
RUNS = len(FLOWS) * len(SELECTED)
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


@dataclass
class LoadHome:
    """AJO_EXPORTS_HOME (lake, exports.yaml, local exports) and DAGSTER_HOME of the load test."""

    home: Path
    bucket: str
    s3: MotoServer = field(repr=False)  # its repr holds keys, and pytest prints a failing test's arguments

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    def exports(self, destination: str) -> Path:
        return self.home / "exports" / destination

    def env(self) -> dict[str, str]:
        assert self.s3.writer is not None
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update({
            "AJO_EXPORTS_HOME": str(self.home),
            "AJO_EXPORTS_CONFIG": str(self.home / "exports.yaml"),
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            KEY_ENV: self.s3.writer.access_key_id,
            SECRET_ENV: self.s3.writer.secret_access_key,
        })
        return env


def exports_yaml(load: LoadHome) -> str:
    """Six dataflows of all 21 datasets, each to a destination of its own; each run executes in its own process."""
    destinations: list[dict] = [
        {"name": name, "type": "local", "path": str(load.exports(name))} for name in LOCAL_DESTINATIONS
    ]
    destinations.append({
        "name": S3_DESTINATION, "type": "amazon_s3", "bucket": load.bucket, "folder": "load",
        "endpoint_url": load.s3.endpoint_url, "region": "us-east-1",
        "access_key_id": f"${{{KEY_ENV}}}", "secret_access_key": f"${{{SECRET_ENV}}}",
    })
    return yaml.safe_dump({
        "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate"},
        "execution": {"max_concurrent": 1},
        "destinations": destinations,
        "dataflows": [{"name": flow, "destination": dest, "datasets": "all"} for flow, dest in FLOWS.items()],
    }, sort_keys=False)


def instance_yaml() -> str:
    """The product's dagster.yaml with the per-destination limit raised to 2, at most 6 runs, and a 1 s dequeue
    interval, launching in threads (by default the daemon launches one run at a time, and a launch waits for the
    run worker to load the code: seconds each on 2 cores)."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator", coordinator
    limits = {limit["key"]: limit for limit in coordinator["config"]["tag_concurrency_limits"]}
    assert limits[DESTINATION_TAG]["value"] == {"applyLimitPerUniqueValue": True}, "a limit per destination"
    limits[DESTINATION_TAG]["limit"] = PER_DESTINATION
    coordinator["config"].update({
        "max_concurrent_runs": MAX_RUNS, "dequeue_interval_seconds": 1,
        "dequeue_use_threads": True, "dequeue_num_workers": MAX_RUNS,
    })
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture
def load_home(tmp_path: Path, lake_root: Path, s3_server: MotoServer) -> LoadHome:
    load = LoadHome(home=tmp_path / "load", bucket=s3_server.create_bucket(), s3=s3_server)
    shutil.copytree(lake_root, load.lake)
    for name in LOCAL_DESTINATIONS:
        load.exports(name).mkdir(parents=True)
    (load.home / "exports.yaml").write_text(exports_yaml(load))
    load.dagster_home.mkdir()
    (load.dagster_home / "dagster.yaml").write_text(instance_yaml())
    return load


def submit_runs(load: LoadHome, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One run per (dataflow, dataset) through GraphQL `launchRun`, as the UI's Materialize does (the export with
    its checks, the delivery check among them), answered in this process against the code location of
    workspace.yaml."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    for key, value in load.env().items():
        if key not in (KEY_ENV, SECRET_ENV):  # the code server needs no secret to plan a run
            monkeypatch.setenv(key, value)
    run_ids = []
    target = WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target) as process_context:
        context = process_context.create_request_context()
        (location,) = context.get_code_location_entries()
        for flow in FLOWS:
            for dataset in SELECTED:
                key = {"path": ["export", flow, dataset.slug]}
                params = {
                    "selector": {"repositoryLocationName": location, "repositoryName": REPOSITORY,
                                 "jobName": job_name(flow), "assetSelection": [key]},
                    "runConfigData": {},
                    "mode": "default",
                    "executionMetadata": {"tags": []},
                }
                result = execute_dagster_graphql(context, LAUNCH_RUN, {"executionParams": params})
                answer = result.data["launchRun"]
                assert answer["__typename"] == "LaunchRunSuccess", json.dumps(answer)[:3000]
                run_ids.append(answer["run"]["runId"])
    return run_ids


@pytest.fixture
def daemon(load_home: LoadHome) -> Iterator[Callable[[], subprocess.Popen]]:
    """`dagster-daemon run` on the load home, in its own process group; at the end the whole group is stopped."""
    if not DAEMON.exists():
        pytest.fail(f"{DAEMON} is missing: install dagster (it provides dagster-daemon)", pytrace=False)
    holder: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        with daemon_log_path(load_home).open("ab") as log:
            holder.append(subprocess.Popen(
                [str(DAEMON), "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=load_home.env(),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            ))
        return holder[0]

    yield start  # the test starts it once the queue is full
    for process in holder:
        stop_group(process)


def stop_group(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT the daemon's process group (its code server and run workers), SIGKILL what is left after `timeout`."""
    pgid = process.pid
    try:
        os.killpg(pgid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process.poll() is None or _group_members(pgid)):
        time.sleep(0.2)
    if process.poll() is None or _group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_members(pgid):
            time.sleep(0.2)
    survivors = _group_members(pgid)
    assert not survivors, f"processes of dagster-daemon's group {pgid} survived SIGKILL: {survivors}"


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of a process group's live members and of the children they reaped: the daemon,
    its code server and the run workers that code server started and waited for."""
    total = 0
    for pid in _group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant (an end at the same instant as a start comes first)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def delivered_local(folder: Path, scratch: Path) -> dict[str, tuple[list[dict], dict[str, bytes]]]:
    """dataset ID -> (manifests, part files by name) under a local destination."""
    found: dict[str, tuple[list[dict], dict[str, bytes]]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        dataset_id = path.relative_to(folder).parts[0]
        manifests, parts = found.setdefault(dataset_id, ([], {}))
        if path.name.startswith("manifest-"):
            manifests.append({"path": str(path.relative_to(folder)), **json.loads(path.read_text())})
        else:
            parts[str(path.relative_to(folder))] = path.read_bytes()
    return found


def delivered_s3(load: LoadHome) -> dict[str, tuple[list[dict], dict[str, bytes]]]:
    """The same for the S3 bucket, listed and read with the vendor SDK."""
    s3 = load.s3.s3()
    found: dict[str, tuple[list[dict], dict[str, bytes]]] = {}
    for key in load.s3.keys(load.bucket, "load/"):
        relative = key.removeprefix("load/")
        manifests, parts = found.setdefault(relative.split("/")[0], ([], {}))
        body = s3.get_object(Bucket=load.bucket, Key=key)["Body"].read()
        if relative.split("/")[-1].startswith("manifest-"):
            manifests.append({"path": relative, **json.loads(body)})
        else:
            parts[relative] = body
    return found


def assert_exactly_once(
    load: LoadHome, destination: str, found: dict[str, tuple[list[dict], dict[str, bytes]]], scratch: Path,
    run_of: dict[tuple[str, str], str],
) -> int:
    """Each of the 21 datasets has exactly one manifest, written by its one run, listing exactly the part files
    beside it, whose rows equal the lake's (by `_id`, no row twice). Returns the rows delivered."""
    flow = next(f for f, d in FLOWS.items() if d == destination)
    by_id = {dataset.dataset_id: dataset.slug for dataset in SELECTED}
    assert set(found) == set(by_id), f"{destination}: datasets {sorted(set(by_id) ^ set(found))} differ"
    rows = 0
    for dataset_id, (manifests, parts) in found.items():
        slug = by_id[dataset_id]
        assert len(manifests) == 1, f"{destination}/{slug}: {len(manifests)} manifests"
        (manifest,) = manifests
        run_id = run_of[(flow, slug)]
        folder = manifest["path"].rsplit("/", 1)[0]
        assert manifest["path"].endswith(f"manifest-{destination_id(destination)}-{run_id}.json"), manifest["path"]
        assert sorted(parts) == sorted(f"{folder}/{item['name']}" for item in manifest["exportResults"]), (
            f"{destination}/{slug}: files beside the manifest differ from its list"
        )
        frames = []
        for name, data in parts.items():
            path = scratch / name.replace("/", "_")
            path.write_bytes(data)
            frames.append(read_part(path, name))
        export_time = datetime.strptime(folder.split("exportTime=")[1], "%Y%m%d%H%M").replace(tzinfo=UTC)
        got = pl.concat(frames).sort("_id")
        expected = lake_rows(load.lake, slug, export_time)
        assert got["_id"].n_unique() == got.height, f"{destination}/{slug}: a row delivered twice"
        assert got.equals(expected), f"{destination}/{slug}: {got.height} rows, the lake has {expected.height}"
        assert manifest["totalRows"] == got.height
        rows += got.height
    return rows


def test_queued_exports_respect_per_destination_limits(
    load_home: LoadHome, daemon: Callable[[], subprocess.Popen], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load = load_home
    with DagsterInstance.from_config(str(load.dagster_home)) as instance:
        started = time.monotonic()
        run_ids = submit_runs(load, instance, monkeypatch)
        submit_seconds = time.monotonic() - started
        assert len(run_ids) == len(set(run_ids)) == RUNS
        queued = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
        assert queued == RUNS, f"all runs wait in the queue before the daemon starts ({queued} queued)"

        process = daemon()
        started = time.monotonic()
        deadline = started + RUN_TIMEOUT
        mine = RunsFilter(run_ids=run_ids, statuses=FINISHED)  # sensors may start runs of their own meanwhile
        while (done := instance.get_runs_count(mine)) < RUNS:
            if process.poll() is not None:
                pytest.fail(f"dagster-daemon exited with {process.returncode}:\n{daemon_log(load)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{done}/{RUNS} runs finished after {RUN_TIMEOUT:.0f}s:\n{daemon_log(load)}")
            time.sleep(1)
        run_seconds = time.monotonic() - started
        daemon_cpu = group_cpu(process.pid)
        stop_group(process)

        records = instance.get_run_records(RunsFilter(run_ids=run_ids))
        exports = sum(instance.get_runs_count(RunsFilter(job_name=job_name(flow))) for flow in FLOWS)
        assert len(records) == RUNS and exports == RUNS, f"{exports} export runs: runs lost or added"
        statuses = Counter(record.dagster_run.status.value for record in records)
        executing: dict[str, list[tuple[float, float]]] = defaultdict(list)
        occupying: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for record in records:  # the queue counts a run from its launch (RUN_STARTING) to its end
            run = record.dagster_run
            launched = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_STARTING).records
            assert len(launched) == 1, f"run {run.run_id} launched {len(launched)} times"
            assert record.end_time, f"run {run.run_id} has no end"
            destination = run.tags[DESTINATION_TAG]
            occupying[destination].append((launched[0].event_log_entry.timestamp, record.end_time))
            if record.start_time:
                executing[destination].append((record.start_time, record.end_time))
        seen_executing = {d: max_overlap(executing[d]) for d in DESTINATIONS}
        seen_launched = {d: max_overlap(occupying[d]) for d in DESTINATIONS}
        seen_total = max_overlap([interval for d in DESTINATIONS for interval in occupying[d]])
        figures.record("load", "runs", RUNS)
        figures.record("load", "runs_by_status", dict(statuses))
        figures.record("load", "dataflows", len(FLOWS))
        figures.record("load", "datasets_per_dataflow", len(SELECTED))
        figures.record("load", "destinations", {d: ("amazon_s3 (moto)" if d == S3_DESTINATION else "local")
                                                for d in DESTINATIONS})
        figures.record("load", "limit_per_destination", PER_DESTINATION)
        figures.record("load", "max_concurrent_runs", MAX_RUNS)
        figures.record("load", "max_concurrency_seen_per_destination", seen_launched)
        figures.record("load", "max_executing_seen_per_destination", seen_executing)
        figures.record("load", "max_concurrency_seen_total", seen_total)
        figures.record("load", "submit_seconds", round(submit_seconds, 1))
        figures.record("load", "queue_drain_seconds", round(run_seconds, 1))
        figures.record("load", "daemon_cpu_seconds_per_run", round(daemon_cpu / RUNS, 2))
        print(f"{RUNS} runs {dict(statuses)} ({daemon_cpu:.0f} CPU s in the daemon's processes): submitted in "
              f"{submit_seconds:.1f}s, ran in {run_seconds:.1f}s; concurrency per destination launched "
              f"{seen_launched}, executing {seen_executing}; total {seen_total}")
        failed = [r.dagster_run.run_id for r in records if r.dagster_run.status != DagsterRunStatus.SUCCESS]
        assert not failed, f"{statuses}: {[failure_text(instance, run_id) for run_id in failed[:3]]}"

        run_of: dict[tuple[str, str], str] = {}
        checks_passed = 0
        for record in records:
            run = record.dagster_run
            (key,) = run.asset_selection or ()
            _, flow, slug = key.path
            assert (flow, slug) not in run_of, f"{flow}/{slug} ran twice"
            run_of[(flow, slug)] = run.run_id
            assert run.tags[DESTINATION_TAG] == FLOWS[flow] and run.tags["dataflow"] == flow, run.tags
            evaluations = instance.get_records_for_run(
                run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
            results = [r.event_log_entry.dagster_event.event_specific_data for r in evaluations]
            assert all(result.passed for result in results), f"{flow}/{slug}: a check failed: {results}"
            checks_passed += sum(result.check_name == DELIVERY_CHECK for result in results)
        assert len(run_of) == RUNS
        assert checks_passed == RUNS, f"{checks_passed}/{RUNS} delivery checks passed"

    rows = 0
    for destination in DESTINATIONS:
        scratch = tmp_path / "read" / destination
        scratch.mkdir(parents=True)
        found = delivered_s3(load) if destination == S3_DESTINATION else delivered_local(
            load.exports(destination), scratch)
        rows += assert_exactly_once(load, destination, found, scratch, run_of)
    figures.record("load", "rows_delivered", rows)
    figures.record("load", "delivery_checks_passed", checks_passed)

    assert all(n <= PER_DESTINATION for n in seen_launched.values()), seen_launched
    assert seen_total <= MAX_RUNS
    assert all(n == PER_DESTINATION for n in seen_launched.values()), (
        f"every destination should have had {PER_DESTINATION} runs at once: {seen_launched}"
    )


def daemon_log_path(load: LoadHome) -> Path:
    """In DAGSTER_HOME, where test_zz_no_secret_leaks searches it with the instance's files."""
    return load.dagster_home / "dagster-daemon.log"


def daemon_log(load: LoadHome, chars: int = 4000) -> str:
    try:
        return daemon_log_path(load).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no daemon log)"


def failure_text(instance: DagsterInstance, run_id: str) -> str:
    """A failed run's failure events and errors (a run worker's own, such as a definition it could not load)."""
    lines = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event is not None else None
        if event is not None and (event.is_failure or error is not None):
            lines.append(f"{event.event_type_value}: {entry.message} {error.message if error else ''}".strip())
    return "\n".join(lines)[:3000]
