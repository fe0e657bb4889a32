"""The Dagster shape: asset keys with their tier, lineage, kinds, IO managers and the bundled demo config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from dagster import AssetKey, DagsterInstance

from ajo_exports.config import BUNDLED_CONFIG, load_config
from ajo_exports.definitions import build_definitions
from ajo_exports_tests.helpers import parse_config

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
    ("ajo/license_usage", None),
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
    checks = repo.asset_graph.asset_check_keys
    for name in ("delivered", "within_guardrails"):
        assert {check.asset_key for check in checks if check.name == name} == set(exports), name
    assert {check.asset_key for check in checks if check.name == "within_entitlement"} == {
        AssetKey(["ajo", "license_usage"])
    }


SCHEDULED = """
destinations:
  - {name: near, type: local, max_concurrent_exports: 3}
  - {name: far, type: local}
dataflows:
  - name: six-hourly
    destination: near
    datasets: [journeys, journey_step_events]
    schedule: {frequency: hourly, every_hours: 6, start: "2026-01-01T00:00:00Z", end: "2027-01-01T00:00:00Z"}
  - {name: once, destination: far, datasets: [journeys]}
execution: {max_concurrent: 3}
"""


def scheduled_defs(tmp_path: Path):
    config_file = tmp_path / "exports.yaml"
    config_file.write_text(SCHEDULED)
    return build_definitions(load_config(config_file), tmp_path)


def test_exports_checks_and_jobs_carry_their_destination_for_the_concurrency_limits(tmp_path: Path) -> None:
    repo = scheduled_defs(tmp_path).get_repository_def()
    for flow, destination in (("six_hourly", "near"), ("once", "far")):
        job = repo.get_job(f"export_{flow}")
        assert job.tags == {"dataflow": flow.replace("_", "-"), "ajo/destination": destination}
        assert job.executor_def.name == "multiprocess"
        ops = {node.name: node.tags for node in job.graph.node_defs}
        assert ops and all(tags == {"ajo/destination": destination} for tags in ops.values()), ops
        assert any(name.endswith("_delivered") for name in ops) and not any(name.endswith("_fresh") for name in ops)
    sequential = parse_config(SCHEDULED.replace("max_concurrent: 3", "max_concurrent: 1"))
    assert build_definitions(sequential, tmp_path).get_repository_def().get_job("export_once").executor_def.name == (
        "in_process"
    )


def test_fresh_checks_are_one_subsettable_definition_with_a_check_per_scheduled_export(tmp_path: Path) -> None:
    defs = scheduled_defs(tmp_path)
    repo = defs.get_repository_def()
    fresh = {key for key in repo.asset_graph.asset_check_keys if key.name == "fresh"}
    assert sorted(key.asset_key.path[-1] for key in fresh) == ["journey_step_events", "journeys"]
    assert {key.asset_key.path[1] for key in fresh} == {"six-hourly"}
    for key in fresh:
        assert repo.asset_graph.get_check_spec(key).description == (
            "The last successful export is at most 7:00:00 old (cadence 6:00:00 + grace)."
        )
    job = repo.get_job("export_freshness_checks")
    assert job.asset_layer.asset_graph.asset_check_keys == fresh
    with DagsterInstance.ephemeral() as instance:
        result = job.get_subset(asset_check_selection=set(sorted(fresh, key=str)[:1])).execute_in_process(
            instance=instance
        )
    (evaluation,) = result.get_asset_check_evaluations()
    assert (evaluation.passed, evaluation.description) == (False, "never exported")


def test_definitions_load_without_the_cloud_sdks(tmp_path: Path) -> None:
    """A destination's SDK is imported when the destination is opened, not when the definitions load."""
    config = tmp_path / "exports.yaml"
    config.write_text(yaml.safe_dump({
        "destinations": [
            {"name": "s3", "type": "amazon_s3", "bucket": "acme-ajo", "access_key_id": "${K}",
             "secret_access_key": "${S}"},
            {"name": "blob", "type": "azure_blob", "connection_string": "${C}", "container": "ajo-exports"},
            {"name": "lake", "type": "adls_gen2", "url": "abfss://exports@acmelake.dfs.core.windows.net",
             "tenant": "t", "client_id": "c", "client_secret": "${S}"},
            {"name": "dlz", "type": "data_landing_zone", "sas_url": "${D}"},
            {"name": "gcs", "type": "google_cloud_storage", "bucket": "acme-ajo", "service_account_json": "${G}"},
            {"name": "sftp", "type": "sftp", "host": "h", "username": "u", "password": "${P}",
             "host_key_fingerprint": "SHA256:x"},
        ],
        "dataflows": [{"name": d, "destination": d, "datasets": ["journeys"]}
                      for d in ("s3", "blob", "lake", "dlz", "gcs", "sftp")],
    }))
    sdks = ["boto3", "botocore", "dagster_aws", "azure.storage.blob", "azure.identity", "google.cloud.storage",
            "paramiko"]
    script = (
        "import sys; from ajo_exports.definitions import defs; defs.get_repository_def().get_all_jobs(); "
        f"print([m for m in {sdks!r} if m in sys.modules])"
    )
    env = {**os.environ, "AJO_EXPORTS_CONFIG": str(config), "AJO_EXPORTS_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
