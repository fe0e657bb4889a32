"""The local lake and its seeded synthetic data: determinism, joins, mixes, time spans and failure messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ajo_exports.catalog import DATASETS, get_dataset
from ajo_exports.lake import Batch, DatasetSource, LakeError, LocalLake
from ajo_exports.lake.generator import generate_batch, seed_lake

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
CJM = "_experience.customerJourneyManagement"


def _col(path: str) -> pl.Expr:
    """A dotted XDM path as a polars expression (structs only)."""
    head, *rest = path.split(".")
    expr = pl.col(head)
    for part in rest:
        expr = expr.struct.field(part)
    return expr.alias(path.rsplit(".", 1)[-1])


def _all(lake: LocalLake, slug: str) -> pl.DataFrame:
    dataset = get_dataset(slug)
    return lake.scan(dataset, lake.list_batches(dataset)).collect()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LocalLake:
    lake = LocalLake(tmp_path_factory.mktemp("lake"))
    seed_lake(lake, rows=600, batches=4, seed=11, now=NOW)
    return lake


def test_local_lake_is_a_dataset_source(lake: LocalLake) -> None:
    assert isinstance(lake, DatasetSource)
    assert lake.has_data()


def test_every_dataset_seeded_with_conforming_unique_rows(lake: LocalLake) -> None:
    for dataset in DATASETS:
        batches = lake.list_batches(dataset)
        assert len(batches) == 4
        frame = lake.scan(dataset, batches).collect()
        assert frame.schema == dataset.schema
        assert frame.height == sum(b.rows for b in batches) > 0
        assert frame["_id"].n_unique() == frame.height, dataset.slug


def test_seed_is_deterministic(tmp_path: Path) -> None:
    datasets = [get_dataset("ajo_message_feedback_event_dataset"), get_dataset("ajo_entity_dataset")]
    a, b = LocalLake(tmp_path / "a"), LocalLake(tmp_path / "b")
    batches_a = seed_lake(a, rows=200, seed=3, now=NOW, datasets=datasets)
    batches_b = seed_lake(b, rows=200, seed=3, now=NOW, datasets=datasets)
    for dataset in datasets:
        assert [x.batch_id for x in batches_a[dataset.slug]] == [x.batch_id for x in batches_b[dataset.slug]]
        assert _all(a, dataset.slug).equals(_all(b, dataset.slug))
    other = seed_lake(LocalLake(tmp_path / "c"), rows=200, seed=4, now=NOW, datasets=datasets)
    assert not _all(LocalLake(tmp_path / "c"), "ajo_message_feedback_event_dataset").equals(
        _all(a, "ajo_message_feedback_event_dataset")
    )
    assert other.keys() == batches_a.keys()


def test_batch_ids_look_like_aep(lake: LocalLake) -> None:
    for batch in lake.list_batches(get_dataset("journeys")):
        assert len(batch.batch_id) == 26 and batch.batch_id.isupper() and batch.batch_id.isalnum()
        assert Path(batch.path).name == f"batch-{batch.batch_id}.parquet"


def test_join_keys_consistent_across_datasets(lake: LocalLake) -> None:
    step_actions = set(
        _all(lake, "journey_step_events")
        .select(_col("_experience.journeyOrchestration.stepEvents.actionID"))
        .drop_nulls()
        .to_series()
    )
    entities = _all(lake, "ajo_entity_dataset")
    entity_ids = set(entities["_id"])
    entity_messages = set(entities.select(_col(f"{CJM}.entities.channelDetails.messageID")).to_series())
    for slug in (
        "ajo_message_feedback_event_dataset",
        "ajo_email_tracking_experience_event_dataset",
        "ajo_push_tracking_experience_event_dataset",
        "ajo_bcc_feedback_event_dataset",
    ):
        execution = _all(lake, slug).select(
            _col(f"{CJM}.messageExecution.journeyActionID"), _col(f"{CJM}.messageExecution.messageID")
        )
        assert execution.null_count().sum_horizontal().item() == 0
        assert set(execution["journeyActionID"]) <= step_actions, slug
        assert set(execution["messageID"]) <= entity_messages, slug
    correlations = (
        _all(lake, "ajo_message_feedback_event_dataset")
        .select(_col("_experience.decisioning.propositions"))
        .explode("propositions")
        .select(pl.col("propositions").struct.field("scopeDetails").struct.field("correlationID"))
        .to_series()
    )
    assert correlations.null_count() == 0
    assert set(correlations) <= entity_ids


def test_realistic_status_mixes(lake: LocalLake) -> None:
    feedback = _all(lake, "ajo_message_feedback_event_dataset").select(
        _col(f"{CJM}.messageDeliveryfeedback.feedbackStatus")
    )["feedbackStatus"]
    share = feedback.value_counts(normalize=True).to_dict(as_series=False)
    shares = dict(zip(share["feedbackStatus"], share["proportion"], strict=True))
    assert 0.78 < shares["sent"] < 0.92
    assert {"bounce", "delay", "exclude"} <= shares.keys()

    tracking = _all(lake, "ajo_email_tracking_experience_event_dataset").select(
        _col(f"{CJM}.messageInteraction.interactionType")
    )["interactionType"]
    counts = dict(tracking.value_counts().iter_rows())
    assert counts["open"] > counts["click"] > counts["unsubscribe"] > 0

    steps = _all(lake, "journey_step_events").select(_col("_experience.journeyOrchestration.stepEvents.stepStatus"))[
        "stepStatus"
    ]
    assert steps.is_in(["transitions", "ended"]).mean() > 0.8  # type: ignore[operator]


def test_event_times_span_13_months_and_precede_ingestion(lake: LocalLake) -> None:
    for dataset in (d for d in DATASETS if d.is_time_series):
        batches = lake.list_batches(dataset)
        assert all(b.ingested_at < NOW for b in batches)
        assert batches[-1].ingested_at >= NOW - timedelta(hours=6)
        oldest = lake.scan(dataset, batches).select(pl.col("timestamp").min()).collect().item()
        assert oldest < NOW - timedelta(days=396), dataset.slug
        for batch in batches:
            newest = lake.scan(dataset, [batch]).select(pl.col("timestamp").max()).collect().item()
            assert newest <= batch.ingested_at, (dataset.slug, batch.batch_id)
    feedback = _all(lake, "ajo_message_feedback_event_dataset")
    assert 0 < feedback.filter(pl.col("timestamp") < NOW - timedelta(days=365)).height < feedback.height


def test_list_batches_half_open_window(lake: LocalLake) -> None:
    dataset = get_dataset("ajo_message_feedback_event_dataset")
    batches = lake.list_batches(dataset)
    assert batches == sorted(batches, key=lambda b: (b.ingested_at, b.batch_id))
    assert len({b.ingested_at for b in batches}) == 4
    middle = lake.list_batches(dataset, batches[1].ingested_at, batches[3].ingested_at)
    assert middle == batches[1:3]
    assert lake.list_batches(dataset, ingested_from=batches[3].ingested_at) == batches[3:]
    assert lake.list_batches(dataset, ingested_until=batches[0].ingested_at) == []


def test_scan_subset_returns_exactly_those_rows(lake: LocalLake) -> None:
    dataset = get_dataset("journey_step_events")
    batches = lake.list_batches(dataset)
    chosen = [batches[1], batches[3]]
    frame = lake.scan(dataset, chosen).collect()
    assert frame.height == batches[1].rows + batches[3].rows
    expected = pl.concat([pl.read_parquet(b.path) for b in chosen])
    assert frame.sort("_id").equals(expected.sort("_id"))
    empty = lake.scan(dataset, [])
    assert empty.collect_schema() == dataset.schema
    assert empty.collect().height == 0


def test_unseeded_dataset_raises_lake_error(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path)
    dataset = get_dataset("journeys")
    assert not lake.is_seeded(dataset) and not lake.has_data()
    with pytest.raises(LakeError, match=r"has no batches for dataset journeys; run `ajo-exports lake seed`"):
        lake.list_batches(dataset)


def test_append_batch_and_generate_batch(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path)
    dataset = get_dataset("ajo_message_feedback_event_dataset")
    frame = generate_batch(dataset, 50, seed=7, batch_index=4, now=NOW)
    assert frame.schema == dataset.schema and frame.height == 50
    assert frame["timestamp"].max() <= NOW
    assert frame.equals(generate_batch(dataset, 50, seed=7, batch_index=4, now=NOW))

    batch = lake.append_batch(dataset, frame, NOW, batch_id="01JWDN3QY0EY0N8CN5K0HFQA9S")
    assert batch == Batch(dataset.slug, "01JWDN3QY0EY0N8CN5K0HFQA9S", NOW, 50, batch.path)
    assert Path(batch.path).is_file()
    index = json.loads((tmp_path / dataset.slug / "_batches.json").read_text())
    assert index == [
        {"batchId": batch.batch_id, "ingestedAt": "2025-06-01T12:00:00Z", "rows": 50, "file": Path(batch.path).name}
    ]
    second = lake.append_batch(dataset, frame.head(5), NOW + timedelta(hours=1))
    assert len(second.batch_id) == 26
    assert lake.list_batches(dataset) == [batch, second]
    assert [p.name for p in (tmp_path / dataset.slug).iterdir() if p.name.startswith(".")] == []
    with pytest.raises(LakeError, match="already has batch"):
        lake.append_batch(dataset, frame, NOW, batch_id=batch.batch_id)
    lake.clear()
    assert not lake.has_data()


def test_schema_mismatch_names_the_column(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path)
    dataset = get_dataset("journey_step_events")
    frame = generate_batch(dataset, 5, seed=7, batch_index=1, now=NOW)
    with pytest.raises(LakeError, match=r"journey_step_events.*missing column eventType"):
        lake.append_batch(dataset, frame.drop("eventType"), NOW)
    with pytest.raises(LakeError, match=r"column timestamp has type"):
        lake.append_batch(dataset, frame.with_columns(pl.col("timestamp").cast(pl.String)), NOW)
    with pytest.raises(LakeError, match="unexpected column extra"):
        lake.append_batch(dataset, frame.with_columns(pl.lit(1).alias("extra")), NOW)
    assert not lake.is_seeded(dataset)


def test_corrupt_parquet_file_is_named(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path)
    dataset = get_dataset("journeys")
    good = lake.append_batch(dataset, generate_batch(dataset, 3, seed=7, batch_index=0, now=NOW), NOW)
    bad = lake.append_batch(
        dataset, generate_batch(dataset, 3, seed=7, batch_index=1, now=NOW), NOW + timedelta(hours=1)
    )
    Path(bad.path).write_bytes(b"PAR1 this is not parquet")
    assert lake.scan(dataset, [good]).collect().height == 3
    with pytest.raises(LakeError) as caught:
        lake.scan(dataset, lake.list_batches(dataset))
    assert bad.path in str(caught.value) and "journeys" in str(caught.value)
