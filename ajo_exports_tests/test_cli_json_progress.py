"""`run`, `verify` and `runs` print one JSON result with --json; `run` shows each export's progress on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from ajo_exports.catalog import get_dataset
from ajo_exports.export.formats import read_part
from ajo_exports_tests.test_cli import FEEDBACK, home, run_cli  # noqa: F401 - `home` is a fixture


def test_run_verify_and_runs_print_one_json_result(home: Path, capsys) -> None:  # noqa: F811
    code, out, err = run_cli(capsys, "run", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["command"] == "run" and result["status"] == 0
    (flow,) = result["dataflows"]
    assert flow["success"] and flow["dataflow"] == "demo"
    by_dataset = {item["dataset"]: item for item in flow["exports"]}
    assert set(by_dataset) == {FEEDBACK, "journeys"}
    for slug, item in by_dataset.items():
        folder = home / "exports" / get_dataset(slug).dataset_id
        parts = sorted(p for p in folder.rglob("part-*"))
        assert item["files"] == len(parts) and item["check"] == "passed"
        assert item["rows"] == pl.concat([read_part(p, p.name) for p in parts]).height
        assert item["bytes"] == sum(p.stat().st_size for p in parts)
        assert item["manifest_uri"].startswith("file://")
    assert "rows/s" not in err, "--json prints no progress display"

    code, out, _ = run_cli(capsys, "verify", "--json")
    verified = json.loads(out)
    assert code == 0 and verified["command"] == "verify"
    assert {item["check"] for item in verified["dataflows"][0]["exports"]} == {"passed"}

    code, out, _ = run_cli(capsys, "runs", "demo", "--json")
    runs = {run["run_id"]: run for run in json.loads(out)["runs"]}
    exported = runs[flow["run_id"]]
    assert code == 0 and exported["status"] == "SUCCESS" and verified["dataflows"][0]["run_id"] in runs
    assert exported["records"] == sum(item["rows"] for item in flow["exports"])


def test_run_shows_each_exports_progress_as_plain_lines_off_a_terminal(home: Path, capsys) -> None:  # noqa: F811
    code, out, err = run_cli(capsys, "run")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("export/demo/")]
    finished = {line.split()[0] for line in lines if "100.0%" in line}
    assert finished == {f"export/demo/{FEEDBACK}", "export/demo/journeys"}, err
    table_rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(FEEDBACK)}
    last = next(line for line in reversed(lines) if line.startswith(f"export/demo/{FEEDBACK}"))
    rows = int(table_rows[FEEDBACK][3])
    assert f"{rows:,}/{rows:,} rows" in last and "parts" in last and "rows/s" in last
    assert "\x1b[" not in err, "no cursor movement when standard error is not a terminal"
