"""Attempt markers decide which leftovers the next export may remove: only those of attempts that are over."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from ajo_exports.destinations.local import LocalStorage
from ajo_exports.export.attempts import Attempt, begin_attempt, is_dead, sweep_failed_attempts
from ajo_exports.export.writer import ExportSpec, export_frame

FOLDER = "dataset-1/exportTime=202611020600"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def attempt(**fields: object) -> Attempt:
    return Attempt(**{"job": "0f1e2d3c", "run_id": "run-1", "dataset_id": "dataset-1", "folder": FOLDER, **fields})


def test_which_attempts_are_over() -> None:
    unknown, running, ended = (lambda _: None), (lambda _: False), (lambda _: True)
    old = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    assert is_dead(attempt(), ended), "its run ended"
    assert is_dead(attempt(pid=dead_pid()), running), "its process on this machine is gone (SIGKILL)"
    assert is_dead(attempt(), unknown), "it ran in this process and left it"
    assert not is_dead(attempt(host="worker-7"), running), "a running run on another machine"
    assert not is_dead(attempt(host="worker-7"), unknown), "an unknown run on another machine, started just now"
    assert is_dead(attempt(host="worker-7", started=old), unknown), "an unknown run, a day old"
    assert not is_dead(attempt(host="worker-7", started=old), running), "a long export still running elsewhere"


def test_sweep_removes_only_what_no_manifest_lists(tmp_path: Path) -> None:
    storage = LocalStorage("out", tmp_path)
    folder = tmp_path / FOLDER
    folder.mkdir(parents=True)
    for name in ("part-00000-0f1e2d3c-c000.parquet", "part-00001-0f1e2d3c-c000.parquet.part",
                 ".part-00002-0f1e2d3c-c000.parquet.part",  # the local destination's temporary copy
                 "part-00000-aaaa-c000.parquet", "part-00000-bbbb-c000.parquet"):
        (folder / name).write_bytes(b"x")
    previous = [f"{FOLDER}/part-00000-aaaa-c000.parquet"]  # an older export the attempt was replacing
    begin_attempt(storage, attempt(replaces=previous, host="worker-7"), tmp_path / "scratch")
    assert sweep_failed_attempts(storage, lambda _: False) == [], "a live attempt is left alone"
    removed = sweep_failed_attempts(storage, lambda _: True)
    assert sorted(removed) == sorted([f"{FOLDER}/part-00000-0f1e2d3c-c000.parquet",
                                      f"{FOLDER}/part-00001-0f1e2d3c-c000.parquet.part",
                                      f"{FOLDER}/.part-00002-0f1e2d3c-c000.parquet.part", *previous])
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000-bbbb-c000.parquet"], "another job's file stays"
    assert not list(tmp_path.glob("_ajo/attempts/*")), "the marker goes last"


def test_a_completed_export_leaves_no_marker_and_its_files_survive_a_sweep(tmp_path: Path) -> None:
    storage = LocalStorage("out", tmp_path)
    spec = ExportSpec(dataset_id="dataset-1", dataflow="once", destination_id="d", folder=FOLDER,
                      export_time=datetime(2026, 11, 2, 6, tzinfo=UTC), run_id="run-2", max_rows_per_file=3)
    result = export_frame(storage, pl.LazyFrame({"_id": [str(i) for i in range(10)]}), spec, tmp_path / "scratch")
    assert not list(tmp_path.glob("_ajo/attempts/*"))
    job = result.keys[0].rsplit("/", 1)[-1].split("-", 2)[2][:36]
    marker = tmp_path / "_ajo/attempts" / f"{job}.json"  # as if the process died after its manifest
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps(vars(attempt(job=job, run_id="run-2"))))
    assert sweep_failed_attempts(storage, lambda _: True) == [], "the manifest lists them: that export completed"
    assert not marker.exists()
    assert len([k for k in storage.list(FOLDER + "/") if "/part-" in k.key]) == 4
