"""The parallel part writer: planned parts, bounded reads, byte bounds, ordering and failure with parts in flight."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ajo_exports.catalog import get_dataset
from ajo_exports.config import Compression, FileFormat
from ajo_exports.destinations.base import StoredObject
from ajo_exports.destinations.local import LocalStorage
from ajo_exports.export.formats import read_part
from ajo_exports.export.writer import ExportProgress, ExportSpec, export_frame, plan_parts
from ajo_exports.lake import LocalLake, Selection
from ajo_exports.lake.generator import generate_batch

FEEDBACK = "ajo_message_feedback_event_dataset"
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
SINCE = NOW - timedelta(days=365)


@pytest.fixture(scope="module")
def big_lake(tmp_path_factory: pytest.TempPathFactory) -> LocalLake:
    """Three batches of an event dataset (3,000 rows, 425 days of events) with small row groups, so part ranges
    start and end inside row groups and across batches."""
    lake = LocalLake(tmp_path_factory.mktemp("writer") / "lake")
    dataset = get_dataset(FEEDBACK)
    for index, rows in enumerate((1_300, 700, 1_000)):
        frame = generate_batch(dataset, rows, seed=index, batch_index=0, now=NOW)
        lake.append_batch(dataset, frame, ingested_at=NOW + timedelta(hours=index))
    for path in (lake.root / FEEDBACK).glob("batch-*.parquet"):  # re-write with 128-row row groups
        pl.read_parquet(path).write_parquet(path, row_group_size=128)
    return lake


def selection(lake: LocalLake) -> Selection:
    dataset = get_dataset(FEEDBACK)
    return Selection(lake, dataset, tuple(lake.list_batches(dataset)), SINCE)


def expected_rows(lake: LocalLake) -> pl.DataFrame:
    return selection(lake).frame().collect()


def spec(**overrides: object) -> ExportSpec:
    fields: dict = dict(
        dataset_id=get_dataset(FEEDBACK).dataset_id,
        dataflow="demo",
        destination_id="dest",
        folder="ds/exportTime=202611011200",
        export_time=NOW,
        run_id="run-1",
    )
    return ExportSpec(**{**fields, **overrides})


def delivered(root: Path, keys: list[str]) -> pl.DataFrame:
    return pl.concat([read_part(root / key, key) for key in keys])


def test_plan_cuts_exact_parts_across_batches_after_the_predicate(big_lake: LocalLake) -> None:
    rows = selection(big_lake)
    plans = plan_parts(rows.pieces(), rows.predicate, 450, member_rows=100)
    expected = expected_rows(big_lake).height
    assert 0 < expected < 3_000, "the predicate must drop the events older than 365 days"
    assert [p.rows for p in plans] == [450] * (expected // 450) + ([expected % 450] if expected % 450 else [])
    assert all(sum(r.rows for r in m) == 100 for p in plans[:-1] for m in p.members[:-1])
    assert any(len(m) > 1 for p in plans for m in p.members), "some member must span two batches"
    for plan in plans:
        for item in (r for member in plan.members for r in member):
            piece = rows.pieces()[item.piece].slice(item.start, item.length)
            assert piece.filter(rows.predicate).select(pl.len()).collect().item() == item.rows


def test_bounded_read_of_a_row_range_equals_the_scan(big_lake: LocalLake) -> None:
    dataset = get_dataset(FEEDBACK)
    batch = big_lake.list_batches(dataset)[0]
    whole = big_lake.scan(dataset, [batch]).collect()
    chunks = list(big_lake.read(dataset, batch, start=100, length=777, chunk_rows=50))
    assert all(chunk.height <= 50 for chunk in chunks)
    assert pl.concat(chunks).equals(whole.slice(100, 777))
    assert list(big_lake.read(dataset, batch, start=1_300, length=10)) == []


@pytest.mark.parametrize(
    ("file_format", "compression", "encoders"),
    [("parquet", "gzip", 1), ("parquet", "snappy", 3), ("json", "gzip", 2), ("json", "gzip", 1)],
)
def test_parts_keep_the_lake_order_and_numbering_with_several_encoders(
    tmp_path: Path, big_lake: LocalLake, file_format: str, compression: str, encoders: int
) -> None:
    seen: list[ExportProgress] = []
    result = export_frame(
        LocalStorage("local", tmp_path),
        selection(big_lake),
        spec(
            file_format=FileFormat(file_format),
            compression=Compression(compression),
            max_rows_per_file=300,
            encoders=encoders,
        ),
        progress=seen.append,
    )
    expected = expected_rows(big_lake)
    names = [key.rsplit("/", 1)[1] for key in result.keys]
    assert [int(name.split("-")[1]) for name in names] == list(range(len(names)))
    assert [f.rows for f in result.files] == [300] * (expected.height // 300) + [expected.height % 300]
    got = delivered(tmp_path, result.keys)
    if file_format == "parquet":
        assert got.equals(expected), "rows must arrive in the lake's order"
    assert got["_id"].to_list() == expected["_id"].to_list(), "rows must arrive in the lake's order"
    for item, key in zip(result.files, result.keys, strict=True):
        assert item.sha256 == hashlib.sha256((tmp_path / key).read_bytes()).hexdigest()
    assert [p.parts for p in seen] == list(range(1, len(names) + 1))
    assert seen[-1].rows == seen[-1].planned_rows == expected.height
    manifest = json.loads((tmp_path / result.manifest_key).read_text())
    assert [i["name"] for i in manifest["exportResults"]] == names and manifest["totalRows"] == expected.height


def test_a_part_over_the_byte_bound_is_split_into_files_under_it(tmp_path: Path, big_lake: LocalLake) -> None:
    result = export_frame(
        LocalStorage("local", tmp_path),
        selection(big_lake),
        spec(file_format=FileFormat.JSON, max_rows_per_file=1_000, max_bytes_per_file=60_000),
    )
    sizes = [(tmp_path / key).stat().st_size for key in result.keys]
    assert len(sizes) > 3 and max(sizes) <= 60_000
    assert delivered(tmp_path, result.keys)["_id"].to_list() == expected_rows(big_lake)["_id"].to_list()
    with gzip.open(tmp_path / result.keys[0]) as stream:
        assert sum(1 for _ in stream) == result.files[0].rows


@pytest.mark.parametrize("max_bytes", [256 * 1024 * 1024, 40_000])
def test_ndjson_parts_are_gzip_members_encoded_in_parallel(
    tmp_path: Path, big_lake: LocalLake, monkeypatch: pytest.MonkeyPatch, max_bytes: int
) -> None:
    """An NDJSON part is cut into gzip members (encoded at once, concatenated in order): one valid gzip file that
    Python's gzip, zcat and polars read whole. Under a byte bound a file closes at a member boundary."""
    import zlib

    from ajo_exports.export import writer

    monkeypatch.setattr(writer, "MEMBER_ROWS", 150)
    result = export_frame(
        LocalStorage("local", tmp_path),
        selection(big_lake),
        spec(file_format=FileFormat.JSON, max_rows_per_file=1_000, max_bytes_per_file=max_bytes, encoders=3),
    )
    expected = expected_rows(big_lake)
    assert delivered(tmp_path, result.keys)["_id"].to_list() == expected["_id"].to_list()
    for item, key in zip(result.files, result.keys, strict=True):
        data = (tmp_path / key).read_bytes()
        assert len(data) == item.size <= max_bytes
        members, rest = 0, data
        while rest:
            inflater = zlib.decompressobj(wbits=31)
            inflater.decompress(rest)
            rest, members = inflater.unused_data, members + 1
        assert members == -(-item.rows // 150) or max_bytes < 1_000_000
        assert pl.read_ndjson(tmp_path / key).height == item.rows
    rows = [f.rows for f in result.files]
    if max_bytes > 1_000_000:
        assert rows == [1_000] * (expected.height // 1_000) + [expected.height % 1_000]
    else:
        assert len(rows) > -(-expected.height // 1_000), "files closed at member boundaries under the byte bound"


class FailingStorage(LocalStorage):
    """A real folder that refuses the third data file: a failure while later parts are still being encoded."""

    def publish(self, local_path: Path, key: str) -> StoredObject:
        if "/part-00002-" in key:
            raise OSError("connection reset while uploading")
        return super().publish(local_path, key)


def test_a_failure_with_parts_in_flight_withdraws_everything(tmp_path: Path, big_lake: LocalLake) -> None:
    scratch = tmp_path / "scratch"
    with pytest.raises(OSError, match="connection reset"):
        export_frame(
            FailingStorage("local", tmp_path / "dest"),
            selection(big_lake),
            spec(max_rows_per_file=200, encoders=2),
            scratch=scratch,
        )
    left = [p for p in (tmp_path / "dest").rglob("*") if p.is_file()]
    assert left == [], "published parts are withdrawn"
    assert list(scratch.iterdir()) == [], "encoded parts waiting for upload are removed"
