"""Load: 126 exports (6 dataflows x 21 datasets) queued at once and run by a real `dagster-daemon`.

Why: a customer's dataflows start together (schedules at the same hour, or a catch-up after an outage), and what
keeps them from piling onto one destination is the product's own limits: the run queue of dagster.yaml (one run per
destination at a time, `ajo/destination` tag) and, within a run, each destination's `max_concurrent_exports`. Here
six dataflows of all 21 datasets share three destinations (two dataflows each, in folders of their own); each is
launched the way the UI launches it (GraphQL `launchRun` of its job, which submits to the QueuedRunCoordinator), all
six runs are in the queue before the daemon starts, and the test proves that all 126 exports were delivered exactly
once, row for row, and that both limits held (and were reached), from the runs' and steps' own timestamps.
`AJO_LOAD_DATASETS=N` exports N datasets per dataflow (default: all 21); `AJO_LOAD_TIMEOUT` sets the wait in seconds.
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
from ajo_exports.export.formats import read_part
from ajo_exports.settings import destination_id
from ajo_exports_tests import figures
from ajo_exports_tests.helpers import lake_rows
from ajo_exports_tests.servers.dagster_web import LAUNCH_RUN, REPO, REPOSITORY, _group_members
from ajo_exports_tests.servers.s3 import MotoServer

DAEMON = Path(sys.executable).parent / "dagster-daemon"
LOCAL_DESTINATIONS = ["local1", "local2"]
S3_DESTINATION = "s3"
DESTINATIONS = [*LOCAL_DESTINATIONS, S3_DESTINATION]
# Two dataflows per destination, each in a folder of its own (`folder_template` with a prefix).
FLOWS = {f"load{index}": DESTINATIONS[(index - 1) // 2] for index in range(1, 7)}
RUNS_PER_DESTINATION = 1  # dagster.yaml's run queue: one run per destination at a time
EXPORTS_PER_DESTINATION = 2  # max_concurrent_exports of each destination (the product's default)
MAX_STEPS = 4  # execution.max_concurrent: more than a destination may take, so its own limit is what binds
KEY_ENV, SECRET_ENV = "AJO_LOAD_S3_ACCESS_KEY_ID", "AJO_LOAD_S3_SECRET_ACCESS_KEY"
RUN_TIMEOUT = float(os.environ.get("AJO_LOAD_TIMEOUT", "1200"))
SELECTED = DATASETS[: int(os.environ.get("AJO_LOAD_DATASETS", str(len(DATASETS))))]
EXPORTS = len(FLOWS) * len(SELECTED)
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
    """Six dataflows of the selected datasets over three destinations, two dataflows each in folders of their own."""
    destinations: list[dict] = [
        {"name": name, "type": "local", "path": str(load.exports(name)),
         "max_concurrent_exports": EXPORTS_PER_DESTINATION} for name in LOCAL_DESTINATIONS
    ]
    destinations.append({
        "name": S3_DESTINATION, "type": "amazon_s3", "bucket": load.bucket, "folder": "load",
        "endpoint_url": load.s3.endpoint_url, "region": "us-east-1", "max_concurrent_exports": EXPORTS_PER_DESTINATION,
        "access_key_id": f"${{{KEY_ENV}}}", "secret_access_key": f"${{{SECRET_ENV}}}",
    })
    return yaml.safe_dump({
        "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate"},
        "execution": {"max_concurrent": MAX_STEPS},
        "destinations": destinations,
        "dataflows": [
            {"name": flow, "destination": dest, "datasets": [d.slug for d in SELECTED],
             "folder_template": f"{flow}/%DATASET_ID%/%EXPORT_TIME%"}
            for flow, dest in FLOWS.items()
        ],
    }, sort_keys=False)


def instance_yaml() -> str:
    """The product's dagster.yaml as shipped (its per-destination run limit is what is tested), but for a 1 s
    dequeue interval, launching in threads."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator", coordinator
    limits = {limit["key"]: limit for limit in coordinator["config"]["tag_concurrency_limits"]}
    assert limits[DESTINATION_TAG]["value"] == {"applyLimitPerUniqueValue": True}, "a limit per destination"
    assert limits[DESTINATION_TAG]["limit"] == RUNS_PER_DESTINATION, limits[DESTINATION_TAG]
    coordinator["config"].update({"dequeue_interval_seconds": 1, "dequeue_use_threads": True})
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


def submit_runs(load: LoadHome, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """One run per dataflow (all its exports with their checks) through GraphQL `launchRun`, as the UI's launchpad
    does, answered in this process against the code location of workspace.yaml. Returns dataflow -> run ID."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    for key, value in load.env().items():
        if key not in (KEY_ENV, SECRET_ENV):  # the code server needs no secret to plan a run
            monkeypatch.setenv(key, value)
    run_ids = {}
    target = WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target) as process_context:
        context = process_context.create_request_context()
        (location,) = context.get_code_location_entries()
        for flow in FLOWS:
            params = {
                "selector": {"repositoryLocationName": location, "repositoryName": REPOSITORY,
                             "jobName": job_name(flow)},
                "runConfigData": {},
                "mode": "default",
                "executionMetadata": {"tags": []},
            }
            result = execute_dagster_graphql(context, LAUNCH_RUN, {"executionParams": params})
            answer = result.data["launchRun"]
            assert answer["__typename"] == "LaunchRunSuccess", json.dumps(answer)[:3000]
            run_ids[flow] = answer["run"]["runId"]
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


Delivered = dict[tuple[str, str], tuple[list[dict], dict[str, bytes]]]


def delivered_local(folder: Path) -> Delivered:
    """(dataflow folder, dataset ID) -> (manifests, part files by relative name) under a local destination."""
    found: Delivered = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        manifests, parts = found.setdefault((relative.parts[0], relative.parts[1]), ([], {}))
        if path.name.startswith("manifest-"):
            manifests.append({"path": str(relative), **json.loads(path.read_text())})
        else:
            parts[str(relative)] = path.read_bytes()
    return found


def delivered_s3(load: LoadHome) -> Delivered:
    """The same for the S3 bucket, listed and read with the vendor SDK."""
    s3 = load.s3.s3()
    found: Delivered = {}
    for key in load.s3.keys(load.bucket, "load/"):
        relative = key.removeprefix("load/")
        manifests, parts = found.setdefault(tuple(relative.split("/")[:2]), ([], {}))
        body = s3.get_object(Bucket=load.bucket, Key=key)["Body"].read()
        if relative.split("/")[-1].startswith("manifest-"):
            manifests.append({"path": relative, **json.loads(body)})
        else:
            parts[relative] = body
    return found


def assert_exactly_once(load: LoadHome, destination: str, found: Delivered, scratch: Path,
                        run_of: dict[str, str]) -> int:
    """Each dataflow of the destination has, in its own folder, exactly one manifest per dataset, written by the
    dataflow's one run, listing exactly the part files beside it, whose rows equal the lake's (by `_id`, no row
    twice). Returns the rows delivered."""
    flows = [flow for flow, dest in FLOWS.items() if dest == destination]
    expected_keys = {(flow, dataset.dataset_id) for flow in flows for dataset in SELECTED}
    assert set(found) == expected_keys, f"{destination}: {sorted(set(found) ^ expected_keys)} differ"
    slug_of = {dataset.dataset_id: dataset.slug for dataset in SELECTED}
    rows = 0
    for (flow, dataset_id), (manifests, parts) in found.items():
        where = f"{destination}/{flow}/{slug_of[dataset_id]}"
        assert len(manifests) == 1, f"{where}: {len(manifests)} manifests"
        (manifest,) = manifests
        folder = manifest["path"].rsplit("/", 1)[0]
        assert manifest["path"].endswith(f"manifest-{destination_id(destination)}-{run_of[flow]}.json"), where
        assert manifest["dataflow"] == flow, (where, manifest["dataflow"])
        assert sorted(parts) == sorted(f"{folder}/{item['name']}" for item in manifest["exportResults"]), (
            f"{where}: files beside the manifest differ from its list"
        )
        frames = []
        for name, data in parts.items():
            path = scratch / name.replace("/", "_")
            path.write_bytes(data)
            frames.append(read_part(path, name))
        export_time = datetime.strptime(folder.split("exportTime=")[1], "%Y%m%d%H%M").replace(tzinfo=UTC)
        expected = lake_rows(load.lake, slug_of[dataset_id], export_time)
        got = pl.concat(frames).sort("_id") if frames else expected.clear()
        assert got["_id"].n_unique() == got.height, f"{where}: a row delivered twice"
        assert got.equals(expected), f"{where}: {got.height} rows, the lake has {expected.height}"
        assert manifest["totalRows"] == got.height
        rows += got.height
    return rows


def export_steps(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float, bool]]:
    """step key -> (start, end, succeeded) of each step of the run that materialized an export."""
    starts: dict[str, float] = {}
    ends: dict[str, tuple[float, bool]] = {}
    exporting: set[str] = set()
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            assert entry.step_key not in starts, f"step {entry.step_key} of run {run_id} started twice"
            starts[entry.step_key] = entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ends[entry.step_key] = (entry.timestamp, event.event_type == DagsterEventType.STEP_SUCCESS)
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            exporting.add(entry.step_key)
    return {key: (starts[key], *ends[key]) for key in exporting}


def test_126_queued_exports_respect_per_destination_limits(
    load_home: LoadHome, daemon: Callable[[], subprocess.Popen], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load = load_home
    with DagsterInstance.from_config(str(load.dagster_home)) as instance:
        started = time.monotonic()
        run_of = submit_runs(load, instance, monkeypatch)
        submit_seconds = time.monotonic() - started
        run_ids = list(run_of.values())
        assert len(set(run_ids)) == len(FLOWS)
        queued = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.QUEUED]))
        assert queued == len(FLOWS), f"all runs wait in the queue before the daemon starts ({queued} queued)"

        process = daemon()
        started = time.monotonic()
        deadline = started + RUN_TIMEOUT
        mine = RunsFilter(run_ids=run_ids, statuses=FINISHED)  # sensors may start runs of their own meanwhile
        while (done := instance.get_runs_count(mine)) < len(FLOWS):
            if process.poll() is not None:
                pytest.fail(f"dagster-daemon exited with {process.returncode}:\n{daemon_log(load)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{done}/{len(FLOWS)} runs finished after {RUN_TIMEOUT:.0f}s:\n{daemon_log(load)}")
            time.sleep(1)
        run_seconds = time.monotonic() - started
        daemon_cpu = group_cpu(process.pid)
        stop_group(process)

        records = instance.get_run_records(RunsFilter(run_ids=run_ids))
        runs_of_jobs = sum(instance.get_runs_count(RunsFilter(job_name=job_name(flow))) for flow in FLOWS)
        assert len(records) == len(FLOWS) and runs_of_jobs == len(FLOWS), f"{runs_of_jobs} runs: lost or added"
        statuses = Counter(record.dagster_run.status.value for record in records)
        failed = [r.dagster_run.run_id for r in records if r.dagster_run.status != DagsterRunStatus.SUCCESS]
        assert not failed, f"{statuses}: {[failure_text(instance, run_id) for run_id in failed[:3]]}"

        occupying: dict[str, list[tuple[float, float]]] = defaultdict(list)  # runs, from launch to end
        exporting: dict[str, list[tuple[float, float]]] = defaultdict(list)  # export steps, start to end
        checks_passed = 0
        for record in records:
            run = record.dagster_run
            flow = run.tags["dataflow"]
            destination = run.tags[DESTINATION_TAG]
            assert run_of[flow] == run.run_id and destination == FLOWS[flow], run.tags
            launched = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_STARTING).records
            assert len(launched) == 1, f"run {run.run_id} launched {len(launched)} times"
            occupying[destination].append((launched[0].event_log_entry.timestamp, record.end_time))
            steps = export_steps(instance, run.run_id)
            assert len(steps) == len(SELECTED) and all(ok for _, _, ok in steps.values()), (flow, steps)
            exporting[destination].extend((begin, end) for begin, end, _ in steps.values())
            evaluations = instance.get_records_for_run(
                run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
            results = [r.event_log_entry.dagster_event.event_specific_data for r in evaluations]
            assert all(result.passed for result in results), f"{flow}: a check failed: {results}"
            checks_passed += sum(result.check_name == DELIVERY_CHECK for result in results)
        assert checks_passed == EXPORTS, f"{checks_passed}/{EXPORTS} delivery checks passed"
        runs_seen = {d: max_overlap(occupying[d]) for d in DESTINATIONS}
        exports_seen = {d: max_overlap(exporting[d]) for d in DESTINATIONS}
        exports_total = max_overlap([interval for d in DESTINATIONS for interval in exporting[d]])

    rows = 0
    for destination in DESTINATIONS:
        scratch = tmp_path / "read" / destination
        scratch.mkdir(parents=True)
        found = delivered_s3(load) if destination == S3_DESTINATION else delivered_local(load.exports(destination))
        rows += assert_exactly_once(load, destination, found, scratch, run_of)

    figures.record("load", "exports", EXPORTS)
    figures.record("load", "dataflows", len(FLOWS))
    figures.record("load", "datasets_per_dataflow", len(SELECTED))
    figures.record("load", "runs_by_status", dict(statuses))
    figures.record("load", "destinations", {d: ("amazon_s3 (moto)" if d == S3_DESTINATION else "local")
                                            for d in DESTINATIONS})
    figures.record("load", "run_limit_per_destination", RUNS_PER_DESTINATION)
    figures.record("load", "export_limit_per_destination", EXPORTS_PER_DESTINATION)
    figures.record("load", "max_runs_seen_per_destination", runs_seen)
    figures.record("load", "max_exports_seen_per_destination", exports_seen)
    figures.record("load", "max_exports_seen_total", exports_total)
    figures.record("load", "rows_delivered", rows)
    figures.record("load", "delivery_checks_passed", checks_passed)
    figures.record("load", "submit_seconds", round(submit_seconds, 1))
    figures.record("load", "queue_drain_seconds", round(run_seconds, 1))
    figures.record("load", "daemon_cpu_seconds_per_export", round(daemon_cpu / EXPORTS, 2))
    print(f"{EXPORTS} exports in {len(FLOWS)} runs {dict(statuses)} ({daemon_cpu:.0f} CPU s): submitted in "
          f"{submit_seconds:.1f}s, ran in {run_seconds:.1f}s; runs per destination {runs_seen}, exports per "
          f"destination {exports_seen}, exports at once {exports_total}")
    assert all(n == RUNS_PER_DESTINATION for n in runs_seen.values()), runs_seen
    assert all(n <= EXPORTS_PER_DESTINATION for n in exports_seen.values()), exports_seen
    assert all(n == EXPORTS_PER_DESTINATION for n in exports_seen.values()), (
        f"every destination should have had {EXPORTS_PER_DESTINATION} exports at once: {exports_seen}"
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
