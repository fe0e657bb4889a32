"""`ajo-exports lake seed --dataset`: seed only some datasets and leave every other dataset's folder as it was."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ajo_exports.catalog import DATASETS, get_dataset
from ajo_exports.cli import main
from ajo_exports.lake import LocalLake

FEEDBACK = "ajo_message_feedback_event_dataset"
BCC = "ajo_bcc_feedback_event_dataset"  # both event datasets: seeded with exactly --rows rows


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


def snapshot(lake_root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake_root)): p.read_bytes() for p in sorted(lake_root.rglob("*")) if p.is_file()}


def assert_seeded(lake: LocalLake, slug: str, rows: int, batches: int) -> None:
    dataset = get_dataset(slug)
    listed = lake.list_batches(dataset)
    assert len(listed) == batches and sum(b.rows for b in listed) == rows
    assert lake.scan(dataset, listed).select(pl.len()).collect().item() == rows


def test_seed_one_dataset_into_an_empty_lake(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["lake", "seed", "--dataset", FEEDBACK, "--rows", "300", "--batches", "3"]) == 0
    assert "seeded 1 datasets, 300 rows in 3 batches" in capsys.readouterr().out
    lake = LocalLake(home / "lake")
    assert_seeded(lake, FEEDBACK, 300, 3)
    assert sorted(p.name for p in lake.root.iterdir()) == [FEEDBACK]  # no other dataset, no scratch left behind


def test_seed_some_datasets_leaves_the_others_untouched(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["lake", "seed", "--rows", "50", "--batches", "2"]) == 0
    lake_root = home / "lake"
    before = snapshot(lake_root)
    others = {k: v for k, v in before.items() if not k.startswith((FEEDBACK + "/", BCC + "/"))}
    capsys.readouterr()

    assert main(["lake", "seed", "--dataset", f"{FEEDBACK},{BCC}", "--rows", "400", "--batches", "4"]) == 0
    assert "seeded 2 datasets, 800 rows in 8 batches" in capsys.readouterr().out
    lake = LocalLake(lake_root)
    assert_seeded(lake, FEEDBACK, 400, 4)
    assert_seeded(lake, BCC, 400, 4)
    after = snapshot(lake_root)
    assert {k: v for k, v in after.items() if k in others} == others
    assert not [p for p in lake_root.iterdir() if p.name.startswith(".")]
    assert all(lake.is_seeded(d) for d in DATASETS)

    assert main(["lake", "seed", "--dataset", BCC, "--dataset", FEEDBACK, "--rows", "60", "--batches", "1"]) == 0
    assert_seeded(lake, FEEDBACK, 60, 1)
    assert_seeded(lake, BCC, 60, 1)


def test_unknown_dataset_is_one_line_and_touches_nothing(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["lake", "seed", "--dataset", FEEDBACK, "--rows", "20", "--batches", "1"]) == 0
    before = snapshot(home / "lake")
    capsys.readouterr()
    code = main(["lake", "seed", "--dataset", f"{FEEDBACK},no_such_dataset", "--rows", "30"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("ajo-exports: error:")
    assert "no_such_dataset" in err and "Traceback" not in err
    assert snapshot(home / "lake") == before
