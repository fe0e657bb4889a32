"""The Dagster shape: asset keys with their tier, lineage, kinds, IO managers and the bundled demo config."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey

from ajo_exports.config import BUNDLED_CONFIG, load_config
from ajo_exports.definitions import build_definitions

SNAPSHOT = [
    ("aep/ajo_bcc_feedback_event_dataset", "prime"),
    ("aep/ajo_classification_dataset", "prime"),
    ("aep/ajo_consent_service_dataset", "prime"),
    ("aep/ajo_email_tracking_experience_event_dataset", "prime"),
    ("aep/ajo_entity_dataset", "prime"),
    ("aep/ajo_inbound_activity_event_dataset", "prime"),
    ("aep/ajo_interactive_messaging_profile_dataset", "prime"),
    ("aep/ajo_message_feedback_event_dataset", "prime"),
    ("aep/ajo_profile_counters_extension", "prime"),
    ("aep/ajo_push_profile_dataset", "prime"),
    ("aep/ajo_push_tracking_experience_event_dataset", "prime"),
    ("aep/ajo_surfaces_dataset", "prime"),
    ("aep/ao_output_for_ups_dataset", "prime"),
    ("aep/audience_orchestration_profile_dataset", "prime"),
    ("aep/decision_object_repository_activities", "ultimate"),
    ("aep/decision_object_repository_fallback_offers", "ultimate"),
    ("aep/decision_object_repository_personalized_offers", "ultimate"),
    ("aep/decision_object_repository_placements", "ultimate"),
    ("aep/journey_step_events", "prime"),
    ("aep/journeys", "prime"),
    ("aep/ode_decisionevents_prod_decisioning", "ultimate"),
    ("export/demo/ajo_bcc_feedback_event_dataset", "prime"),
    ("export/demo/ajo_classification_dataset", "prime"),
    ("export/demo/ajo_consent_service_dataset", "prime"),
    ("export/demo/ajo_email_tracking_experience_event_dataset", "prime"),
    ("export/demo/ajo_entity_dataset", "prime"),
    ("export/demo/ajo_inbound_activity_event_dataset", "prime"),
    ("export/demo/ajo_interactive_messaging_profile_dataset", "prime"),
    ("export/demo/ajo_message_feedback_event_dataset", "prime"),
    ("export/demo/ajo_profile_counters_extension", "prime"),
    ("export/demo/ajo_push_profile_dataset", "prime"),
    ("export/demo/ajo_push_tracking_experience_event_dataset", "prime"),
    ("export/demo/ajo_surfaces_dataset", "prime"),
    ("export/demo/ao_output_for_ups_dataset", "prime"),
    ("export/demo/audience_orchestration_profile_dataset", "prime"),
    ("export/demo/decision_object_repository_activities", "ultimate"),
    ("export/demo/decision_object_repository_fallback_offers", "ultimate"),
    ("export/demo/decision_object_repository_personalized_offers", "ultimate"),
    ("export/demo/decision_object_repository_placements", "ultimate"),
    ("export/demo/journey_step_events", "prime"),
    ("export/demo/journeys", "prime"),
    ("export/demo/ode_decisionevents_prod_decisioning", "ultimate"),
]


def demo_defs(tmp_path: Path):
    return build_definitions(load_config(BUNDLED_CONFIG), tmp_path)


def test_sorted_asset_keys_with_tier_metadata(tmp_path: Path) -> None:
    specs = demo_defs(tmp_path).resolve_all_asset_specs()
    assert sorted(("/".join(s.key.path), s.metadata.get("tier")) for s in specs) == SNAPSHOT


def test_every_export_depends_on_its_dataset_and_carries_tier_and_destination(tmp_path: Path) -> None:
    specs = {s.key: s for s in demo_defs(tmp_path).resolve_all_asset_specs()}
    exports = [s for key, s in specs.items() if key.path[0] == "export"]
    assert len(exports) == 21
    for spec in exports:
        slug = spec.key.path[-1]
        assert [dep.asset_key for dep in spec.deps] == [AssetKey(["aep", slug])]
        assert spec.tags["tier"] == specs[AssetKey(["aep", slug])].tags["tier"] == spec.metadata["tier"]
        assert spec.tags["destination_type"] == "local"
        assert {"polars", "file", "parquet"} <= set(spec.kinds)
        assert spec.metadata["dataset_id"] == specs[AssetKey(["aep", slug])].metadata["dataset_id"]
    datasets = [s for key, s in specs.items() if key.path[0] == "aep"]
    assert {s.group_name for s in datasets} == {"aep_datasets"}
    assert all(s.metadata["xdm_class"] in ("time-series", "record") for s in datasets)


def test_export_assets_use_their_destination_io_manager_and_every_export_has_a_delivery_check(tmp_path: Path) -> None:
    defs = demo_defs(tmp_path)
    repo = defs.get_repository_def()
    exports = [key for key in repo.asset_graph.get_all_asset_keys() if key.path[0] == "export"]
    for key in exports:
        assets_def = repo.asset_graph.get(key).assets_def
        assert assets_def.get_io_manager_key_for_asset_key(key) == "destination_local"
    checked = {check.asset_key for check in repo.asset_graph.asset_check_keys}
    assert checked == set(exports)
