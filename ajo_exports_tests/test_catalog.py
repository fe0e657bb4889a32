"""The dataset catalog: the 21 AJO datasets, tiers, stable IDs and the documented XDM field paths."""

from __future__ import annotations

import re

import polars as pl
import pytest

from ajo_exports.catalog import (
    DATASETS,
    Tier,
    UnknownDatasetError,
    XdmClass,
    datasets_for_tier,
    get_dataset,
)

CJM = "_experience.customerJourneyManagement"


def _dtype_at(schema: pl.Schema, path: str) -> pl.DataType:
    """Follow a dotted path through structs; ``[]`` steps into a list's element."""
    dtype: pl.DataType = schema[path.split(".")[0].removesuffix("[]")]
    for part in path.split(".")[1:]:
        while isinstance(dtype, pl.List):
            dtype = dtype.inner
        assert isinstance(dtype, pl.Struct), f"{path}: {dtype} is not a struct"
        dtype = {f.name: f.dtype for f in dtype.fields}[part.removesuffix("[]")]
    return dtype


def test_twenty_one_datasets_in_page_order_with_tiers() -> None:
    assert len(DATASETS) == 21
    assert DATASETS[0].name == "AJO BCC Feedback Event Dataset"
    assert DATASETS[-1].slug == "ode_decisionevents_prod_decisioning"
    assert sum(d.tier is Tier.PRIME for d in DATASETS) == 16
    assert {d.slug for d in DATASETS if d.tier is Tier.ULTIMATE} == {
        "decision_object_repository_activities",
        "decision_object_repository_fallback_offers",
        "decision_object_repository_personalized_offers",
        "decision_object_repository_placements",
        "ode_decisionevents_prod_decisioning",
    }


def test_tier_selection_ultimate_includes_prime() -> None:
    assert len(datasets_for_tier(Tier.PRIME)) == 16
    assert datasets_for_tier(Tier.ULTIMATE) == DATASETS
    assert datasets_for_tier("prime") == datasets_for_tier(Tier.PRIME)  # type: ignore[arg-type]


def test_slugs_and_ids_unique_and_well_formed() -> None:
    assert len({d.slug for d in DATASETS}) == 21
    assert len({d.dataset_id for d in DATASETS}) == 21
    for d in DATASETS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", d.slug), d.slug
        assert re.fullmatch(r"[0-9a-f]{24}", d.dataset_id), d.dataset_id
        assert d.name and d.description and d.xdm_class_name


def test_dataset_ids_never_change() -> None:
    # Export folders are named after the dataset ID: changing one would orphan every customer's history.
    assert get_dataset("ajo_message_feedback_event_dataset").dataset_id == "9ab1216a21c4e1a88417b122"
    assert get_dataset("journey_step_events").dataset_id == "5688e7c138062c3e0ef10097"


def test_time_series_envelope() -> None:
    for d in DATASETS:
        assert d.schema["_id"] == pl.String
        if d.is_time_series:
            assert d.xdm_class is XdmClass.TIME_SERIES
            assert d.schema["timestamp"] == pl.Datetime("us", "UTC")
            assert d.schema["eventType"] == pl.String
            if d.slug != "journey_step_events":
                email = _dtype_at(d.schema, "identityMap.Email")
                assert email == pl.List(pl.Struct({"id": pl.String, "primary": pl.Boolean}))
        else:
            assert "timestamp" not in d.schema
    assert "identityMap" not in get_dataset("journey_step_events").schema
    assert get_dataset("ajo_surfaces_dataset").is_time_series
    assert sum(d.is_time_series for d in DATASETS) == 8


@pytest.mark.parametrize(
    ("slug", "path"),
    [
        ("ajo_message_feedback_event_dataset", CJM + ".messageDeliveryfeedback.feedbackStatus"),
        ("ajo_message_feedback_event_dataset", CJM + ".messageExecution.journeyActionID"),
        ("ajo_message_feedback_event_dataset", CJM + ".messageExecution.messageID"),
        ("ajo_message_feedback_event_dataset", "_experience.decisioning.propositions[].scopeDetails.correlationID"),
        ("ajo_email_tracking_experience_event_dataset", CJM + ".messageInteraction.interactionType"),
        ("ajo_email_tracking_experience_event_dataset", CJM + ".messageExecution.journeyActionID"),
        ("ajo_push_tracking_experience_event_dataset", "pushNotificationTracking.pushProvider"),
        ("ajo_bcc_feedback_event_dataset", CJM + ".secondaryRecipientDetail.type"),
        ("journey_step_events", "_experience.journeyOrchestration.stepEvents.actionID"),
        ("journey_step_events", "_experience.journeyOrchestration.stepEvents.stepStatus"),
        ("ajo_entity_dataset", CJM + ".entities.channelDetails.messageID"),
        ("ajo_consent_service_dataset", "consents.marketing.email.val"),
        ("ajo_push_profile_dataset", "pushNotificationDetails[].token"),
        ("ajo_surfaces_dataset", CJM + ".surfaces[].uri"),
        ("ode_decisionevents_prod_decisioning", "_experience.decisioning.propositionDetails[].selections[].id"),
        ("decision_object_repository_personalized_offers", "_experience.decisioning.ranking.priority"),
    ],
)
def test_documented_paths_exist(slug: str, path: str) -> None:
    assert _dtype_at(get_dataset(slug).schema, path) in (pl.String, pl.Int32)


def test_schemas_realistic_size() -> None:
    def leaves(dtype: pl.DataType) -> int:
        while isinstance(dtype, pl.List):
            dtype = dtype.inner
        return sum(leaves(f.dtype) for f in dtype.fields) if isinstance(dtype, pl.Struct) else 1

    for d in DATASETS:
        assert 5 <= sum(leaves(t) for t in d.schema.values()) <= 40, d.slug


def test_unknown_dataset_error_names_slug_and_suggests() -> None:
    with pytest.raises(UnknownDatasetError) as caught:
        get_dataset("ajo_message_feedback")
    message = str(caught.value)
    assert "'ajo_message_feedback'" in message
    assert "ajo_message_feedback_event_dataset" in message
    assert "\n" not in message
    assert isinstance(caught.value, KeyError)


def test_lookup_by_dataset_id() -> None:
    d = get_dataset("journeys")
    assert get_dataset(d.dataset_id) is d
