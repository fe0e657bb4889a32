"""Several exports of a dataflow run concurrently, each in its own step process (the path of `ajo-exports run`):
they deliver exactly what the in-process path delivers, report the same, and each destination's
`max_concurrent_exports` bounds how many of its steps run at once."""

from __future__ import annotations

import multiprocessing.forkserver
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance

from ajo_exports.activation import dataflow_hash
from ajo_exports.config import ConfigError, load_config
from ajo_exports.definitions import build_definitions, export_specs
from ajo_exports.operations import StepProcesses, dataflow_runs, run_dataflow
from ajo_exports_tests.helpers import ExportRun, as_run, dagster_text, lake_rows, parse_config
from ajo_exports_tests.servers.s3 import MotoServer, assert_delivered

EXPORT_TIME = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
FEEDBACK, STEPS, BCC = "ajo_message_feedback_event_dataset", "journey_step_events", "ajo_bcc_feedback_event_dataset"
JOURNEYS, ENTITY = "journeys", "ajo_entity_dataset"
KEY_ENV, SECRET_ENV = "AJO_TEST_CONCURRENT_S3_KEY_ID", "AJO_TEST_CONCURRENT_S3_SECRET"


def stop_step_processes() -> None:
    """Stop the forkserver that forks step processes: they inherit its environment, so each test starts its own
    after setting the secrets it uses (`ajo-exports run` is one process: its forkserver has its environment)."""
    multiprocessing.forkserver._forkserver._stop()  # noqa: SLF001 - the stdlib's own test hook


@pytest.fixture(autouse=True)
def own_step_processes():
    stop_step_processes()
    yield
    stop_step_processes()


def export(config_yaml: str, lake_root: Path, tmp_path: Path, instance: DagsterInstance, *, concurrent: bool,
           dataflow: str = "demo", datasets: list[str] | None = None, partition_key: str | None = None) -> ExportRun:
    """Run a dataflow as `ajo-exports run` does: its config is a file that each step process rebuilds the job from."""
    config_file = tmp_path / f"exports-{len(list(tmp_path.glob('exports-*.yaml')))}.yaml"
    config_file.write_text(config_yaml)
    config, home = load_config(config_file), lake_root.parent
    report = run_dataflow(
        build_definitions(config, home), export_specs(config), instance, dataflow=dataflow, datasets=datasets,
        export_time=EXPORT_TIME, partition_key=partition_key,
        processes=StepProcesses(config_file, home) if concurrent else None,
    )
    return as_run(report)


def step_processes(instance: DagsterInstance, run_id: str) -> dict[str, int]:
    """step key -> pid of the process each step ran in (as Dagster recorded it)."""
    started = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_WORKER_STARTED).records
    return {r.event_log_entry.step_key: int(r.event_log_entry.dagster_event.event_specific_data.metadata["pid"].value)
            for r in started}


def step_intervals(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """step key -> (start, end) timestamps of its execution, from the run's event log."""
    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        kind = entry.dagster_event.event_type if entry.dagster_event else None
        if kind == DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ends[entry.step_key] = entry.timestamp
    assert set(starts) == set(ends), (starts, ends)
    return {key: (starts[key], ends[key]) for key in starts}


def most_at_once(intervals: dict[str, tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one moment."""
    moments = sorted([(start, 1) for start, _ in intervals.values()] + [(end, -1) for _, end in intervals.values()])
    running = peak = 0
    for _, change in moments:  # an end sorts before a start at the same moment
        running += change
        peak = max(peak, running)
    return peak


def s3_config(server: MotoServer, bucket: str, datasets: list[str]) -> str:
    return yaml.safe_dump({
        "destinations": [{
            "name": "s3", "type": "amazon_s3", "bucket": bucket, "folder": "exports/ajo", "region": "us-east-1",
            "endpoint_url": server.endpoint_url, "access_key_id": f"${{{KEY_ENV}}}",
            "secret_access_key": f"${{{SECRET_ENV}}}", "max_concurrent_exports": 2,
        }],
        "dataflows": [{"name": "demo", "destination": "s3", "datasets": datasets}],
    }, sort_keys=False)


def local_config(exports: Path, datasets: list[str], *, limit: int, max_concurrent: int | None = None,
                 **flow: object) -> str:
    config = {
        "destinations": [{"name": "local", "type": "local", "path": str(exports), "max_concurrent_exports": limit}],
        "dataflows": [{"name": "demo", "destination": "local", "datasets": datasets, **flow}],
    }
    if max_concurrent:
        config["execution"] = {"max_concurrent": max_concurrent}
    return yaml.safe_dump(config, sort_keys=False)


def test_concurrent_run_delivers_exactly_what_the_in_process_run_delivers(
    s3_server: MotoServer, lake_root: Path, tmp_path: Path, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert s3_server.writer is not None
    monkeypatch.setenv(KEY_ENV, s3_server.writer.access_key_id)
    monkeypatch.setenv(SECRET_ENV, s3_server.writer.secret_access_key)
    slugs = [FEEDBACK, STEPS, JOURNEYS]
    sdk = s3_server.s3()
    runs = {}
    for concurrent in (True, False):
        bucket = s3_server.create_bucket()
        run = export(s3_config(s3_server, bucket, slugs), lake_root, tmp_path, instance, concurrent=concurrent)
        assert_delivered(
            run, list_keys=lambda prefix, bucket=bucket: s3_server.keys(bucket, prefix),
            download=lambda key, bucket=bucket: sdk.get_object(Bucket=bucket, Key=key)["Body"].read(),
            native_checksum=lambda key, bucket=bucket: "sha256:" + sdk.head_object(
                Bucket=bucket, Key=key, ChecksumMode="ENABLED")["ChecksumSHA256"],
            folder="exports/ajo", destination="s3", lake_root=lake_root, slugs=slugs, export_time=EXPORT_TIME,
            scratch=tmp_path,
        )
        runs[concurrent] = run

    concurrent, in_process = runs[True], runs[False]
    pids = step_processes(instance, concurrent.run_id)
    steps = [f"export__demo__{slug}{check}" for slug in slugs for check in ("", "_delivered")]
    assert sorted(pids) == sorted(steps)
    assert len(set(pids.values())) == len(pids) and os.getpid() not in pids.values(), pids
    assert step_processes(instance, in_process.run_id) == {}, "the in-process path starts no step process"
    same = ("rows", "files", "bytes", "batches", "batch_rows", "export_time", "folder", "replaced_files")
    for slug in slugs:
        assert {k: concurrent.exports[slug][k] for k in same} == {k: in_process.exports[slug][k] for k in same}
        assert concurrent.exports[slug]["rows"] == lake_rows(lake_root, slug, EXPORT_TIME).height
        assert concurrent.checks[slug][0] and concurrent.checks[slug][1] == in_process.checks[slug][1]


def test_a_failed_export_is_reported_in_one_line_as_in_process(
    s3_server: MotoServer, lake_root: Path, tmp_path: Path, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert s3_server.writer is not None
    wrong = "WrongSecretWrongSecretWrongSecret0123456"
    monkeypatch.setenv(KEY_ENV, s3_server.writer.access_key_id)
    monkeypatch.setenv(SECRET_ENV, wrong)
    bucket = s3_server.create_bucket()
    config = s3_config(s3_server, bucket, [FEEDBACK, JOURNEYS])
    concurrent = export(config, lake_root, tmp_path, instance, concurrent=True)
    in_process = export(config, lake_root, tmp_path, instance, concurrent=False)
    assert not concurrent.success and concurrent.error is not None
    assert "\n" not in concurrent.error and "the secret key does not match" in concurrent.error, concurrent.error
    errors = {run.run_id: sorted(run.errors) for run in dataflow_runs(instance, "demo")}
    assert errors[concurrent.run_id] == errors[in_process.run_id], errors  # each export's error, word for word
    assert concurrent.error in errors[concurrent.run_id] and in_process.error in errors[in_process.run_id]
    failed = [error.split(": ", 1)[0] for error in errors[concurrent.run_id]]
    assert failed == [f"export__demo__{slug}" for slug in (FEEDBACK, JOURNEYS)]
    assert wrong[:16] not in dagster_text(instance, concurrent.run_id)
    assert concurrent.exports == {} and concurrent.checks == {} and s3_server.keys(bucket) == []


@pytest.mark.parametrize("limit", [1, 2])
def test_each_destination_runs_at_most_its_max_concurrent_exports(
    lake_root: Path, tmp_path: Path, instance, limit: int
) -> None:
    slugs = [FEEDBACK, STEPS, BCC, JOURNEYS, ENTITY]
    run = export(local_config(tmp_path / "exports", slugs, limit=limit, max_concurrent=4), lake_root, tmp_path,
                 instance, concurrent=True)
    assert run.success, run.error
    assert sorted(run.checks) == sorted(slugs) and all(passed for passed, _ in run.checks.values()), run.checks
    intervals = step_intervals(instance, run.run_id)
    assert len(intervals) == 2 * len(slugs)  # every export and its delivery check, all tagged with the destination
    assert most_at_once(intervals) <= limit, intervals
    for slug in slugs:  # a delivery check runs after its export
        assert intervals[f"export__demo__{slug}_delivered"][0] >= intervals[f"export__demo__{slug}"][1]


def test_windows_of_a_scheduled_dataflow_export_concurrently(lake_root: Path, tmp_path: Path, instance) -> None:
    schedule = {"frequency": "daily", "start": "2026-11-01T02:00:00Z", "end": "2027-05-01T00:00:00Z"}
    run = export(local_config(tmp_path / "exports", [FEEDBACK, JOURNEYS], limit=2, schedule=schedule), lake_root,
                 tmp_path, instance, concurrent=True, partition_key="2026-11-01")
    assert run.success, run.error
    assert {slug: meta["export_time"] for slug, meta in run.exports.items()} == {
        FEEDBACK: "2026-11-02T02:00Z", JOURNEYS: "2026-11-02T02:00Z"
    }
    assert all(passed for passed, _ in run.checks.values()), run.checks
    assert instance.get_run_by_id(run.run_id).tags["dagster/partition"] == "2026-11-01"
    assert len(set(step_processes(instance, run.run_id).values())) == 4


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ("execution: {max_concurrent: 0}", "execution.max_concurrent = 0: Input should be greater than or equal to 1"),
        ("execution: {max_concurent: 2}", "execution.max_concurent = 2: Extra inputs are not permitted"),
        ("execution: {max_concurrent: two}", "execution.max_concurrent = 'two': Input should be a valid integer"),
    ],
)
def test_execution_settings_are_validated_in_one_line(tmp_path: Path, extra: str, error: str) -> None:
    text = yaml.safe_dump({"destinations": [{"name": "local", "type": "local"}],
                           "dataflows": [{"name": "demo", "destination": "local"}]}) + extra + "\n"
    with pytest.raises(ConfigError, match=r"^.*\.yaml: ") as raised:
        parse_config(text)
    assert error in str(raised.value) and "\n" not in str(raised.value)


def test_max_concurrent_exports_is_validated_and_needs_no_new_confirmation(tmp_path: Path) -> None:
    def config(**destination: object):
        return parse_config(yaml.safe_dump({
            "destinations": [{"name": "local", "type": "local", **destination}],
            "dataflows": [{"name": "demo", "destination": "local"}],
        }))

    with pytest.raises(ConfigError, match=r"destinations\[0\]\.max_concurrent_exports = 0: Input should be greater"):
        config(max_concurrent_exports=0)
    default, four = config(), config(max_concurrent_exports=4)
    assert (default.destinations[0].max_concurrent_exports, four.destinations[0].max_concurrent_exports) == (2, 4)
    assert default.execution.concurrency == os.cpu_count()
    # how fast files arrive is not what was reviewed and confirmed: the schedule keeps running as confirmed
    assert dataflow_hash(default, default.dataflows[0]) == dataflow_hash(four, four.dataflows[0])


@pytest.mark.parametrize("max_concurrent", [2, 1])
def test_ajo_exports_run_exports_several_datasets_in_step_processes_unless_max_concurrent_is_1(
    lake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    max_concurrent: int,
) -> None:
    from ajo_exports.cli import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "lake").symlink_to(lake_root)
    config_file = tmp_path / "exports.yaml"
    config_file.write_text(local_config(tmp_path / "exports", [FEEDBACK, JOURNEYS], limit=2,
                                        max_concurrent=max_concurrent))
    for name, value in (("AJO_EXPORTS_CONFIG", config_file), ("AJO_EXPORTS_HOME", home),
                        ("DAGSTER_HOME", home / "dagster")):
        monkeypatch.setenv(name, str(value))
    assert main(["run", "--export-time", EXPORT_TIME.isoformat()]) == 0
    printed = capsys.readouterr().out
    assert printed.count("passed") == 2, printed
    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        pids = step_processes(instance, run.run_id)
    if max_concurrent == 1:
        assert pids == {}, "execution.max_concurrent 1 exports in the command's own process"
    else:
        assert len(set(pids.values())) == 4 and os.getpid() not in pids.values(), pids
