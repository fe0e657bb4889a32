"""Dataflows: cadence windows as partitions, incremental exports, schedules behind confirmation, sensors, PGP."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from ajo_exports.activation import Confirmations
from ajo_exports.catalog import get_dataset
from ajo_exports.definitions import build_definitions, export_specs
from ajo_exports.export.formats import read_part
from ajo_exports.lake import LocalLake
from ajo_exports.lake.generator import generate_batch
from ajo_exports.schedules import schedule_name
from ajo_exports.sensors import end_date_sensor, lineage_sensor, post_webhook
from ajo_exports_tests.fixtures import SEED_NOW
from ajo_exports_tests.helpers import parse_config, run_checks, run_export
from ajo_exports_tests.pgp import KeyPair, decrypt

FEEDBACK = "ajo_message_feedback_event_dataset"
JOURNEYS = "journeys"
START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def dataflow_config(
    exports: Path, *, datasets: list[str], schedule: dict | None = None, destination: dict | None = None, **flow: object
) -> str:
    return yaml.safe_dump(
        {
            "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate"},
            "destinations": [{"name": "local", "type": "local", "path": str(exports), **(destination or {})}],
            "dataflows": [
                {
                    "name": "daily",
                    "destination": "local",
                    "datasets": datasets,
                    "schedule": schedule
                    or {"frequency": "daily", "start": START.isoformat(), "end": "2027-05-01T00:00:00Z"},
                    **flow,
                }
            ],
        },
        sort_keys=False,
    )


@pytest.fixture
def own_lake(tmp_path: Path, lake_root: Path) -> Path:
    """A copy of the session lake this test may append batches to."""
    root = tmp_path / "home" / "lake"
    shutil.copytree(lake_root, root)
    return root


def test_partition_keys_follow_aep_cadences(tmp_path: Path) -> None:
    daily = parse_config(dataflow_config(tmp_path, datasets=[JOURNEYS]))
    job = build_definitions(daily, tmp_path).resolve_job_def("export_daily")
    keys = job.partitions_def.get_partition_keys(current_time=datetime(2026, 11, 4, 3, 0, tzinfo=UTC))
    assert keys == ["2026-11-01", "2026-11-02", "2026-11-03"]
    window = job.partitions_def.time_window_for_partition_key("2026-11-02")
    assert (window.start, window.end) == (datetime(2026, 11, 2, 2, tzinfo=UTC), datetime(2026, 11, 3, 2, tzinfo=UTC))

    six = parse_config(
        dataflow_config(
            tmp_path,
            datasets=[JOURNEYS],
            schedule={
                "frequency": "hourly",
                "every_hours": 6,
                "start": "2026-11-01T01:30:00Z",
                "end": "2026-11-02T13:30:00Z",
            },
        )
    )
    defs = build_definitions(six, tmp_path)
    job = defs.resolve_job_def("export_daily")
    assert job.partitions_def.get_partition_keys(current_time=datetime(2026, 12, 1, tzinfo=UTC)) == [
        "2026-11-01-01:30",
        "2026-11-01-07:30",
        "2026-11-01-13:30",
        "2026-11-01-19:30",
        "2026-11-02-01:30",
        "2026-11-02-07:30",
    ]
    assert defs.resolve_schedule_def(schedule_name("daily")).cron_schedule == "30 1,7,13,19 * * *"


def test_one_schedule_per_enabled_dataflow(tmp_path: Path) -> None:
    config = yaml.safe_load(dataflow_config(tmp_path, datasets=[JOURNEYS]))
    config["dataflows"].append({**config["dataflows"][0], "name": "paused", "enabled": False})
    config["dataflows"].append({**config["dataflows"][0], "name": "adhoc", "schedule": {"frequency": "once"}})
    defs = build_definitions(parse_config(yaml.safe_dump(config)), tmp_path)
    assert [s.name for s in defs.schedules] == [schedule_name("daily")]
    assert defs.resolve_schedule_def(schedule_name("daily")).cron_schedule == "0 2 * * *"
    assert AssetKey(["export", "paused", JOURNEYS]) in {s.key for s in defs.resolve_all_asset_specs()}


def test_schedule_runs_only_as_confirmed_and_never_after_the_end(tmp_path: Path) -> None:
    text = dataflow_config(
        tmp_path,
        datasets=[JOURNEYS],
        schedule={"frequency": "daily", "start": START.isoformat(), "end": "2026-11-05T02:00:00Z"},
    )
    config = parse_config(text)
    home = tmp_path / "home"
    defs = build_definitions(config, home)
    schedule = defs.resolve_schedule_def(schedule_name("daily"))
    def tick(moment: datetime):
        return schedule.evaluate_tick(
            build_schedule_context(
                instance=DagsterInstance.ephemeral(),
                scheduled_execution_time=moment,
                repository_def=defs.get_repository_def(),
            )
        )

    result = tick(datetime(2026, 11, 3, 2, 0, tzinfo=UTC))
    assert not result.run_requests and "has not been confirmed" in result.skip_message

    Confirmations(home).record(config, config.dataflows[0], "ana")
    (request,) = tick(datetime(2026, 11, 3, 2, 0, tzinfo=UTC)).run_requests
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2026-11-02" and request.run_key == "daily:2026-11-02"
    assert not tick(datetime(2026, 11, 6, 2, 0, tzinfo=UTC)).run_requests

    changed = parse_config(text.replace("  destination: local\n", "  destination: local\n  format: json\n", 1))
    defs = build_definitions(changed, home)
    result = defs.resolve_schedule_def(schedule_name("daily")).evaluate_tick(
        build_schedule_context(
            instance=DagsterInstance.ephemeral(),
            scheduled_execution_time=datetime(2026, 11, 3, 2, 0, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
    )
    assert not result.run_requests
    assert "changed after ana confirmed it" in result.skip_message and "activate daily" in result.skip_message


def lake_rows(
    lake: LocalLake, slug: str, since: datetime | None, until: datetime, export_time: datetime
) -> pl.DataFrame:
    dataset = get_dataset(slug)
    frame = lake.scan(dataset, lake.list_batches(dataset, since, until)).collect()
    if dataset.is_time_series:
        frame = frame.filter(pl.col("timestamp") >= export_time - timedelta(days=365))
    return frame


def window_files(exports: Path, slug: str, export_time: str) -> list[Path]:
    folder = exports / get_dataset(slug).dataset_id / f"exportTime={export_time}"
    return sorted(folder.iterdir()) if folder.exists() else []


def read_window(exports: Path, slug: str, export_time: str) -> pl.DataFrame:
    parts = [p for p in window_files(exports, slug, export_time) if p.name.startswith("part-")]
    return pl.concat([read_part(p, p.name) for p in parts]) if parts else pl.DataFrame()


def test_incremental_windows_backfill_then_only_new_batches(tmp_path: Path, own_lake: Path, instance) -> None:
    exports = tmp_path / "exports"
    text = dataflow_config(exports, datasets=[FEEDBACK, JOURNEYS], max_rows_per_file=150)
    lake = LocalLake(own_lake)
    seeded = {slug: lake.list_batches(get_dataset(slug)) for slug in (FEEDBACK, JOURNEYS)}
    assert all(b.ingested_at < SEED_NOW < datetime(2026, 11, 2, 2, tzinfo=UTC) for bs in seeded.values() for b in bs)

    first = run_export(text, own_lake, dataflow="daily", partition_key="2026-11-01", instance=instance)
    assert first.success, first.error
    window1_end = datetime(2026, 11, 2, 2, tzinfo=UTC)
    for slug in (FEEDBACK, JOURNEYS):
        expected = lake_rows(lake, slug, None, window1_end, window1_end)
        assert first.exports[slug]["rows"] == expected.height > 0
        assert read_window(exports, slug, "202611020200").sort("_id").equals(expected.sort("_id"))
        assert first.checks[slug][0]

    for slug in (FEEDBACK, JOURNEYS):
        dataset = get_dataset(slug)
        frame = generate_batch(dataset, 60, seed=99, batch_index=2, now=datetime(2026, 11, 2, 5, tzinfo=UTC))
        lake.append_batch(dataset, frame, ingested_at=datetime(2026, 11, 2, 5, tzinfo=UTC))
    second = run_export(text, own_lake, dataflow="daily", partition_key="2026-11-02", instance=instance)
    window2_end = datetime(2026, 11, 3, 2, tzinfo=UTC)
    for slug in (FEEDBACK, JOURNEYS):
        new_rows = lake_rows(lake, slug, window1_end, window2_end, window2_end)
        assert second.exports[slug]["rows"] == new_rows.height > 0
        assert read_window(exports, slug, "202611030200").sort("_id").equals(new_rows.sort("_id"))

    again = run_export(text, own_lake, dataflow="daily", partition_key="2026-11-02", instance=instance)
    for slug in (FEEDBACK, JOURNEYS):
        names = [p.name for p in window_files(exports, slug, "202611030200")]
        assert len([n for n in names if n.startswith("manifest-")]) == 1
        assert sorted(n for n in names if n.startswith("part-")) == sorted(
            k.rsplit("/", 1)[1] for k in again.exports[slug]["keys"]
        )
        assert again.exports[slug]["rows"] == second.exports[slug]["rows"]
        total = read_window(exports, slug, "202611020200").height + read_window(exports, slug, "202611030200").height
        everything = (
            lake_rows(lake, slug, None, window1_end, window1_end).height
            + lake_rows(lake, slug, window1_end, window2_end, window2_end).height
        )
        assert total == everything
        if not get_dataset(slug).is_time_series:
            assert total == sum(b.rows for b in lake.list_batches(get_dataset(slug)))

    empty = run_export(text, own_lake, dataflow="daily", partition_key="2026-11-03", instance=instance)
    assert empty.success, empty.error
    for slug in (FEEDBACK, JOURNEYS):
        assert empty.exports[slug]["rows"] == 0 and empty.exports[slug]["files"] == 0
        (manifest,) = window_files(exports, slug, "202611040200")
        assert json.loads(manifest.read_text())["exportResults"] == []
        assert empty.checks[slug][0]


def test_lineage_sensor_records_each_export_on_its_dataset(tmp_path: Path, lake_root: Path, instance) -> None:
    text = dataflow_config(tmp_path / "exports", datasets=[JOURNEYS])
    run = run_export(text, lake_root, dataflow="daily", partition_key="2026-11-01", instance=instance)
    sensor = lineage_sensor(export_specs(parse_config(text)))
    result = sensor(build_sensor_context(instance=instance))
    assert isinstance(result, SensorResult)
    (event,) = result.asset_events
    assert event.asset_key == AssetKey(["aep", JOURNEYS])
    assert event.metadata["exported_by_dataflow"].value == "daily"
    assert event.metadata["window"].value == "2026-11-01"
    assert event.metadata["manifest_uri"].value == run.exports[JOURNEYS]["manifest_uri"]
    quiet = sensor(build_sensor_context(instance=instance, cursor=result.cursor))
    assert isinstance(quiet, SkipReason)


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def webhook():
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hook.received = []
    yield f"http://127.0.0.1:{server.server_port}/hook", Hook.received
    server.shutdown()


def test_end_date_sensor_warns_within_14_days_and_posts(tmp_path: Path, webhook) -> None:
    url, received = webhook
    config = yaml.safe_load(dataflow_config(tmp_path, datasets=[JOURNEYS]))
    config["webhook_url"] = url
    parsed = parse_config(yaml.safe_dump(config))
    quiet = end_date_sensor(parsed, clock=lambda: datetime(2027, 3, 1, tzinfo=UTC))
    assert "no dataflow ends" in quiet(build_sensor_context()).skip_message
    soon = end_date_sensor(parsed, clock=lambda: datetime(2027, 4, 21, tzinfo=UTC))
    reason = soon(build_sensor_context()).skip_message
    assert "'daily' ends in 10 days" in reason
    assert received and "ends in 10 days" in received[-1]["warnings"][0]


def test_webhook_that_is_down_does_not_raise() -> None:
    assert post_webhook("http://127.0.0.1:9/nothing", {"x": 1}, timeout=1) == 0


def test_failure_sensor_posts_failed_runs(tmp_path: Path, lake_root: Path, webhook, instance) -> None:
    from dagster import DagsterEventType, build_run_status_sensor_context

    url, received = webhook
    config = yaml.safe_load(dataflow_config(tmp_path / "blocked" / "exports", datasets=[JOURNEYS]))
    config["webhook_url"] = url
    (tmp_path / "blocked").write_text("a file where a folder should be")
    text = yaml.safe_dump(config)
    run = run_export(text, lake_root, dataflow="daily", partition_key="2026-11-01", instance=instance)
    assert not run.success and "destination 'local'" in run.error
    defs = build_definitions(parse_config(text), tmp_path)
    sensor = next(s for s in defs.sensors if s.name == "export_failure_alerts")
    dagster_run = instance.get_run_by_id(run.run_id)
    failure = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_FAILURE).records[0].event_log_entry
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_instance=instance, dagster_run=dagster_run, dagster_event=failure.dagster_event
    ).for_run_failure()
    sensor._run_status_sensor_fn(context)
    assert received and received[-1]["runId"] == run.run_id and received[-1]["dataflow"] == "daily"
    assert received[-1]["partition"] == "2026-11-01"


def test_a_failed_on_demand_export_is_alerted_and_listed(tmp_path: Path, lake_root: Path, webhook, instance) -> None:
    """The UI's Materialize button runs Dagster's implicit `__ASSET_JOB` with the export asset selected and no
    `dataflow` tag: the failure sensor, evaluated as the daemon does (cursor first, then the new failure), must
    alert it with its dataflow, and `ajo-exports runs` must list it; a succeeding one gains the dataflow's tags."""
    from dagster import AssetKey, build_sensor_context

    from ajo_exports.operations import dataflow_runs

    url, received = webhook
    config = yaml.safe_load(dataflow_config(tmp_path / "blocked" / "exports", datasets=[JOURNEYS]))
    config["webhook_url"] = url
    (tmp_path / "blocked").write_text("a file where a folder should be")
    defs = build_definitions(parse_config(yaml.safe_dump(config)), lake_root.parent)
    sensor = next(s for s in defs.sensors if s.name == "export_failure_alerts")
    context = build_sensor_context(instance=instance, definitions=defs)
    sensor.evaluate_tick(context)  # the first tick only sets the cursor, as the daemon's does
    key = AssetKey(["export", "daily", JOURNEYS])
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[key], partition_key="2026-11-01", raise_on_error=False
    )
    run = instance.get_run_by_id(result.run_id)
    assert not result.success and run.job_name == "__ASSET_JOB" and run.asset_selection == {key}
    assert run.tags["dataflow"] == "daily" and run.tags["ajo/destination"] == "local", "the export step tags it"
    sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs, cursor=context.cursor))
    assert [(r["runId"], r["dataflow"], r["job"]) for r in received] == [(run.run_id, "daily", "__ASSET_JOB")]
    listed = dataflow_runs(instance, "daily")
    assert [(r.run_id, r.status) for r in listed] == [(run.run_id, "FAILURE")]
    assert listed[0].errors and "destination 'local'" in listed[0].errors[0], listed[0].errors

    (tmp_path / "blocked").unlink()
    ok = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[key], partition_key="2026-11-01"
    )
    assert [r.run_id for r in dataflow_runs(instance, "daily")] == [ok.run_id, run.run_id]


def test_the_dataflow_of_an_untagged_run_comes_from_its_asset_selection() -> None:
    """A run that fails before its export step (a resource that cannot start) carries no dataflow tag."""
    from dagster import AssetCheckKey, AssetKey, DagsterRun

    from ajo_exports.assets import dataflows_of_run

    exports = frozenset({AssetKey(["export", "daily", JOURNEYS]), AssetKey(["aep", JOURNEYS])})
    checks = frozenset({AssetCheckKey(AssetKey(["export", "hourly", JOURNEYS]), "delivered")})
    assert dataflows_of_run(DagsterRun("__ASSET_JOB", asset_selection=exports)) == ["daily"]
    assert dataflows_of_run(DagsterRun("__ASSET_JOB", asset_check_selection=checks)) == ["hourly"]
    assert dataflows_of_run(DagsterRun("export_daily", tags={"dataflow": "daily"})) == ["daily"]
    assert dataflows_of_run(DagsterRun("export_freshness_checks")) == []


def test_pgp_encrypted_export_decrypts_to_the_lake_rows(
    tmp_path: Path, lake_root: Path, key_pair: KeyPair, instance
) -> None:
    exports = tmp_path / "exports"
    text = dataflow_config(
        exports,
        datasets=[FEEDBACK],
        destination={"pgp_public_key": key_pair.public_b64},
        schedule={"frequency": "once"},
        max_rows_per_file=120,
    )
    run = run_export(text, lake_root, dataflow="daily", export_time=START, instance=instance)
    assert run.success, run.error
    assert run.checks[FEEDBACK][0], run.checks[FEEDBACK][1]
    folder = exports / get_dataset(FEEDBACK).dataset_id / "exportTime=202611010200"
    encrypted = sorted(p for p in folder.iterdir() if p.name.startswith("part-"))
    assert encrypted and all(p.name.endswith(".gz.parquet.gpg") for p in encrypted)
    manifest = json.loads(next(folder.glob("manifest-*.json")).read_text())
    assert [(i["name"], i["size"]) for i in manifest["exportResults"]] == [
        (p.name, p.stat().st_size) for p in encrypted
    ]
    frames = []
    for part in encrypted:
        plain = tmp_path / part.name.removesuffix(".gpg")
        decrypt(key_pair, part, plain)
        frames.append(pl.read_parquet(plain))
    lake = LocalLake(lake_root)
    expected = lake_rows(lake, FEEDBACK, None, datetime(2100, 1, 1, tzinfo=UTC), START)
    assert pl.concat(frames).sort("_id").equals(expected.sort("_id"))


def test_manifest_off_and_a_custom_folder_template(tmp_path: Path, lake_root: Path, instance) -> None:
    exports = tmp_path / "exports"
    template = "%ORGANIZATION_NAME%/%SANDBOX_NAME%/%DESTINATION%_%DATASET_ID%_%DATETIME(YYYYMMdd_HHmmss)%"
    text = dataflow_config(
        exports, datasets=[JOURNEYS], manifest=False, folder_template=template, schedule={"frequency": "once"}
    )
    run = run_export(text, lake_root, dataflow="daily", export_time=START, instance=instance)
    assert run.success, run.error
    (key,) = run.exports[JOURNEYS]["keys"]
    folder = key.rsplit("/", 1)[0]
    assert folder.startswith(f"acme/prod/local_{get_dataset(JOURNEYS).dataset_id}_2")
    assert not list(exports.rglob("manifest-*"))
    assert run.checks[JOURNEYS][0], run.checks[JOURNEYS][1]
    (exports / key).unlink()
    passed, description = run_checks(text, lake_root, dataflow="daily", instance=instance)[JOURNEYS]
    assert not passed and key.rsplit("/", 1)[1] in description


def test_removing_a_dataset_stops_its_exports_and_keeps_its_history(
    tmp_path: Path, lake_root: Path, instance
) -> None:
    both = dataflow_config(tmp_path / "exports", datasets=[FEEDBACK, JOURNEYS], schedule={"frequency": "once"})
    first = run_export(both, lake_root, dataflow="daily", export_time=START, instance=instance)
    assert first.success and set(first.exports) == {FEEDBACK, JOURNEYS}
    one = dataflow_config(tmp_path / "exports", datasets=[JOURNEYS], schedule={"frequency": "once"})
    defs = build_definitions(parse_config(one), tmp_path)
    keys = {s.key for s in defs.resolve_all_asset_specs()}
    assert AssetKey(["export", "daily", FEEDBACK]) not in keys and AssetKey(["export", "daily", JOURNEYS]) in keys
    later = run_export(one, lake_root, dataflow="daily", export_time=START + timedelta(days=1), instance=instance)
    assert set(later.exports) == {JOURNEYS}
    history = instance.fetch_materializations(AssetKey(["export", "daily", FEEDBACK]), limit=10).records
    assert [r.run_id for r in history] == [first.run_id]


def test_a_late_batch_is_found_and_its_window_re_exported_exactly(tmp_path: Path, own_lake: Path, instance) -> None:
    """A batch ingested during an exported window but visible only afterwards (a slow ingestion committing late):
    the export recorded the batch IDs it took; the late-batch sensor finds the missing one and requests that
    window again; the rerun replaces the window with every row once; the next tick is quiet."""
    from ajo_exports_tests.helpers import lake_rows

    exports = tmp_path / "exports"
    text = dataflow_config(exports, datasets=[FEEDBACK])
    first = run_export(text, own_lake, dataflow="daily", partition_key="2026-11-01", instance=instance)
    assert first.success, first.error
    lake, dataset = LocalLake(own_lake), get_dataset(FEEDBACK)
    taken = [batch.batch_id for batch in lake.list_batches(dataset)]
    assert first.exports[FEEDBACK]["batch_ids"] == taken

    defs = build_definitions(parse_config(text), own_lake.parent)
    sensor = next(s for s in defs.sensors if s.name == "late_batches")

    def tick():
        with build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
            return sensor.evaluate_tick(context)

    quiet = tick()
    assert not quiet.run_requests and "1 compared" in quiet.skip_message, quiet.skip_message

    ingested = datetime(2026, 11, 1, 20, 0, tzinfo=UTC)  # inside the window 2026-11-01 02:00 to 2026-11-02 02:00
    late = lake.append_batch(dataset, generate_batch(dataset, 37, seed=5, batch_index=2, now=ingested), ingested)
    (request,) = tick().run_requests
    assert request.partition_key == "2026-11-01" and request.job_name == "export_daily"
    assert request.asset_selection == [AssetKey(["export", "daily", FEEDBACK])]
    assert request.run_key.startswith(f"late-batches:export/daily/{FEEDBACK}:2026-11-01:")
    assert request.tags["ajo/late_batches"] == late.batch_id
    again = tick()
    assert [r.run_key for r in again.run_requests] == [request.run_key], "the same fact, the same run key"

    job = defs.resolve_job_def(request.job_name).get_subset(
        asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys)
    )
    rerun = job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)
    assert rerun.success
    assert {e.check_name: e.passed for e in rerun.get_asset_check_evaluations()} == {
        "delivered": True, "within_guardrails": True
    }
    folder = exports / dataset.dataset_id / "exportTime=202611020200"
    (manifest,) = folder.glob("manifest-*.json")
    assert json.loads(manifest.read_text())["batchIds"] == [*taken, late.batch_id]
    parts = sorted(folder.glob("part-*"))
    assert sorted(p.name for p in parts) == sorted(item["name"] for item in json.loads(manifest.read_text())[
        "exportResults"])
    delivered = pl.concat([read_part(p, p.name) for p in parts]).sort("_id")
    expected = lake_rows(own_lake, FEEDBACK, datetime(2026, 11, 2, 2, 0, tzinfo=UTC))
    assert delivered["_id"].to_list() == expected["_id"].to_list() and delivered["_id"].is_unique().all()
    assert late.rows == 37 and expected.height == first.exports[FEEDBACK]["rows"] + 37
    done = tick()
    assert not done.run_requests and "1 compared" in done.skip_message
