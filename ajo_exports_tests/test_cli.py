"""The command line: the main job end to end, and bad input as one-line errors with nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ajo_exports.catalog import DATASETS, get_dataset
from ajo_exports.cli import main
from ajo_exports_tests.helpers import local_config

FEEDBACK = "ajo_message_feedback_event_dataset"


@pytest.fixture
def home(tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An AJO_EXPORTS_HOME with a copy of the session's sample lake and a config writing to home/exports."""
    home = tmp_path / "home"
    shutil.copytree(lake_root, home / "lake")
    config = tmp_path / "exports.yaml"
    config.write_text(local_config(home / "exports", datasets=[FEEDBACK, "journeys"]))
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(home))
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("ajo-exports: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_run_exports_checks_and_prints_the_table(home: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "run")
    assert code == 0
    assert "dataset" in out and "check" in out
    feedback_line = next(line for line in out.splitlines() if line.startswith(FEEDBACK))
    assert feedback_line.split()[1] == "prime" and feedback_line.split()[-1] == "passed"
    folder = home / "exports" / get_dataset(FEEDBACK).dataset_id
    (window,) = list(folder.iterdir())
    assert window.name.startswith("exportTime=")
    assert len([p for p in window.iterdir() if p.name.startswith("manifest-")]) == 1
    assert f"files landed in {(home / 'exports').resolve().as_uri()}" in out
    code, out, _ = run_cli(capsys, "verify")
    assert code == 0 and out.count("passed") == 2


def test_datasets_json_lists_21_with_tiers(capsys) -> None:
    code, out, _ = run_cli(capsys, "datasets", "--json")
    listed = json.loads(out)
    assert code == 0 and len(listed) == len(DATASETS) == 21
    assert sum(1 for d in listed if d["tier"] == "ultimate") == 5
    code, out, _ = run_cli(capsys, "datasets", "--tier", "prime", "--json")
    assert {d["tier"] for d in json.loads(out)} == {"prime"} and len(json.loads(out)) == 16


def test_unknown_dataset_slug(home: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "run", "--dataset", "ajo_message_feedback")
    assert_one_line_error(code, err, "'ajo_message_feedback'", "ajo_message_feedback_event_dataset")
    assert not (home / "exports").exists() or not any((home / "exports").iterdir())


def test_unknown_destination_name(home: Path, tmp_path: Path, capsys) -> None:
    config = Path(os.environ["AJO_EXPORTS_CONFIG"])
    config.write_text(config.read_text().replace("destination: local", "destination: s3-archive"))
    code, _, err = run_cli(capsys, "run")
    assert_one_line_error(code, err, str(config), "unknown destination 's3-archive'")


def test_malformed_yaml(home: Path, capsys) -> None:
    config = Path(os.environ["AJO_EXPORTS_CONFIG"])
    config.write_text("destinations:\n  - name: local\n    type: [local\n")
    code, _, err = run_cli(capsys, "run")
    assert_one_line_error(code, err, str(config), "malformed YAML", "line")


def test_unwritable_export_folder(home: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export folder should be")
    Path(os.environ["AJO_EXPORTS_CONFIG"]).write_text(local_config(blocker / "exports", datasets=[FEEDBACK]))
    code, _, err = run_cli(capsys, "run")
    assert_one_line_error(code, err, "destination 'local'", str(blocker / "exports"))
    assert blocker.read_text() == "a file where the export folder should be"


def test_empty_lake(home: Path, capsys) -> None:
    shutil.rmtree(home / "lake")
    code, _, err = run_cli(capsys, "run")
    assert_one_line_error(code, err, "lake", "empty", "ajo-exports lake seed")


def test_corrupt_parquet_file_in_the_lake(home: Path, capsys) -> None:
    batch = sorted((home / "lake" / FEEDBACK).glob("*.parquet"))[0]
    batch.write_bytes(b"PAR1 this is not parquet")
    code, _, err = run_cli(capsys, "run", "--dataset", FEEDBACK)
    assert_one_line_error(code, err, batch.name, FEEDBACK)
    assert not list((home / "exports").rglob("manifest-*")) if (home / "exports").exists() else True


def test_console_script_runs_the_main_job_in_a_fresh_home(tmp_path: Path) -> None:
    """`ajo-exports lake seed` then `ajo-exports run` as separate processes, as `make run` calls them."""
    env = {**os.environ, "AJO_EXPORTS_HOME": str(tmp_path / ".ajo"), "AJO_EXPORTS_CONFIG": ""}
    env.pop("DAGSTER_HOME", None)
    exe = str(Path(sys.executable).parent / "ajo-exports")
    subprocess.run([exe, "lake", "seed", "--rows", "100", "--batches", "2"], env=env, cwd=tmp_path, check=True)
    done = subprocess.run([exe, "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = [
        line for line in done.stdout.splitlines() if line.split()[:1] and line.split()[0] in {d.slug for d in DATASETS}
    ]
    assert len(table) == 21 and all(line.split()[-1] == "passed" for line in table)
    assert "Traceback" not in done.stderr
    assert (tmp_path / ".ajo" / "dagster" / "dagster.yaml").exists()
    runs = list((tmp_path / ".ajo" / "dagster").rglob("runs.db")) + list((tmp_path / ".ajo" / "dagster").rglob("*.db"))
    assert runs, "runs are recorded in the instance under .ajo/dagster so the UI shows them"


def test_runs_lists_successes_and_failures_from_the_instance(home: Path, capsys) -> None:
    assert run_cli(capsys, "run")[0] == 0
    manifests = [json.loads(p.read_text()) for p in (home / "exports").rglob("manifest-*.json")]
    batch = sorted((home / "lake" / FEEDBACK).glob("*.parquet"))[0]
    batch.write_bytes(b"PAR1 this is not parquet")
    assert run_cli(capsys, "run")[0] == 2
    code, out, _ = run_cli(capsys, "runs", "demo")
    assert code == 0
    failed, succeeded = [line for line in out.splitlines()[3:] if line.strip()]
    assert failed.split()[2] == "failure" and batch.name in failed
    run, window, status, _day, _time, _seconds, datasets, records, files, size = succeeded.split()
    assert (status, datasets) == ("success", "2")
    assert int(records) == sum(m["totalRows"] for m in manifests)
    assert int(files) == sum(len(m["exportResults"]) for m in manifests)
    assert int(size) == sum(item["size"] for m in manifests for item in m["exportResults"])
    assert manifests[0]["flowRunId"].startswith(run)


def test_check_connection_probes_a_real_s3_server_and_names_the_missing_permission(
    s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    bucket = s3_server.create_bucket()
    config = tmp_path / "exports.yaml"
    config.write_text(
        "destinations:\n"
        f"  - {{name: archive, type: amazon_s3, bucket: {bucket}, folder: probe, endpoint_url: "
        f"'{s3_server.endpoint_url}', region: us-east-1,\n"
        "     access_key_id: '${AJO_TEST_KEY}', secret_access_key: '${AJO_TEST_SECRET}'}\n"
        "dataflows:\n  - {name: demo, destination: archive, datasets: [journeys]}\n"
    )
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(config))
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AJO_TEST_KEY", s3_server.writer.access_key_id)
    monkeypatch.setenv("AJO_TEST_SECRET", s3_server.writer.secret_access_key)
    code, out, _ = run_cli(capsys, "check-connection", "archive")
    assert code == 0 and "ok  write s3://" in out and "ok  delete" in out
    assert s3_server.keys(bucket) == []
    monkeypatch.setenv("AJO_TEST_KEY", s3_server.reader.access_key_id)
    monkeypatch.setenv("AJO_TEST_SECRET", s3_server.reader.secret_access_key)
    code, _, err = run_cli(capsys, "check-connection", "archive")
    assert_one_line_error(code, err, "destination 'archive'", "s3:PutObject")
    assert s3_server.reader.secret_access_key not in err


def test_verify_exits_non_zero_and_names_a_corrupted_file(home: Path, capsys) -> None:
    assert run_cli(capsys, "run")[0] == 0
    part = next((home / "exports").rglob("part-*.gz.parquet"))
    data = bytearray(part.read_bytes())
    data[-20] ^= 0xFF
    part.write_bytes(bytes(data))
    code, out, _ = run_cli(capsys, "verify", "demo")
    assert code == 1
    assert "FAILED" in out and part.name in out and "sha256 expected" in out
