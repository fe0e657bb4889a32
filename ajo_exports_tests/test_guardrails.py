"""AEP's guardrails (record limits, destinations per sandbox) and the licence-volume account, on the sample lake with
small configured limits, through the CLI and through Dagster."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, DagsterInstance

from ajo_exports.catalog import get_dataset
from ajo_exports.cli import main
from ajo_exports.config import Organization
from ajo_exports.usage import LicenseUsage

FEEDBACK = "ajo_message_feedback_event_dataset"
JOURNEYS = "journeys"  # a record dataset


@pytest.fixture
def home(tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(lake_root, home / "lake")
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(home))
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(tmp_path / "exports.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("AJO_EXPORTS_PRINCIPAL", raising=False)
    return home


def write_config(home: Path, *, guardrails: dict | None = None, organization: dict | None = None,
                 destinations: int = 1, **flow: object) -> Path:
    config = {
        "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate", **(organization or {})},
        "destinations": [{"name": f"local{i or ''}", "type": "local", "path": str(home.parent / f"exports{i or ''}")}
                         for i in range(destinations)],
        "dataflows": [{"name": "once", "destination": "local", "datasets": [JOURNEYS, FEEDBACK], **flow}],
        "execution": {"max_concurrent": 1},
        **({"guardrails": guardrails} if guardrails else {}),
    }
    path = home.parent / "exports.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def delivered(home: Path) -> list[Path]:
    root = home.parent / "exports"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def records(home: Path, slug: str) -> int:
    return sum(entry["rows"] for entry in json.loads((home / "lake" / slug / "_batches.json").read_text()))


@pytest.mark.parametrize(
    ("compression", "setting"),
    [("gzip", "record_dataset_max_records"), ("none", "record_dataset_max_records_uncompressed_parquet")],
)
def test_a_record_dataset_above_the_hard_limit_fails_before_anything_is_published(
    home: Path, capsys: pytest.CaptureFixture, compression: str, setting: str
) -> None:
    limit = records(home, JOURNEYS) - 1
    other = "record_dataset_max_records_uncompressed_parquet" if setting == "record_dataset_max_records" else (
        "record_dataset_max_records")
    write_config(home, guardrails={setting: limit, other: 10**9}, compression=compression)
    code, out, err = cli(capsys, "run", "--dataflow", "once", "--dataset", JOURNEYS)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"dataset {JOURNEYS} ({get_dataset(JOURNEYS).dataset_id}) has {records(home, JOURNEYS):,} records" in err
    assert f"at most {limit:,} (guardrails.{setting})" in err
    assert delivered(home) == [], "nothing published, not even an attempt marker"

    code, out, _ = cli(capsys, "review", "once")
    assert code == 1 and f"Problem        dataset {JOURNEYS}" in out, out
    code, _, err = cli(capsys, "activate", "once")
    assert code == 2 and f"guardrails.{setting}" in err


def test_the_other_format_limit_and_event_datasets_are_not_hit(home: Path, capsys: pytest.CaptureFixture) -> None:
    """The uncompressed-Parquet limit does not apply to gzip, and event datasets have no hard record limit."""
    write_config(home, guardrails={"record_dataset_max_records_uncompressed_parquet": 1})
    code, out, err = cli(capsys, "run", "--dataflow", "once")
    assert code == 0, err
    assert len([p for p in delivered(home) if p.name.startswith("manifest-")]) == 2
    code, out, _ = cli(capsys, "review", "once")
    assert code == 0 and "Problem" not in out and "Guardrails     warn above 5,000,000,000 records" in out, out


def test_a_full_export_is_checked_a_later_window_is_not() -> None:
    from ajo_exports.assets import ExportAssetSpec
    from ajo_exports.config import Dataflow, Guardrails
    from ajo_exports.destinations.local import LocalDestinationConfig

    spec = ExportAssetSpec(Dataflow(name="d", destination="l"), get_dataset(JOURNEYS),
                           LocalDestinationConfig(name="l", type="local", path="/tmp/x"), Organization(),
                           Guardrails(record_dataset_max_records=10, warn_records=5))
    assert spec.guardrail(11, full_export=True).refusal
    later = spec.guardrail(11, full_export=False)
    assert later.refusal is None and later.warning and "guardrails.warn_records" in later.warning
    assert spec.guardrail(4, full_export=True).status == "ok: 4 records"


def test_above_the_soft_limit_the_export_runs_with_a_warning_and_a_warn_check(
    home: Path, capsys: pytest.CaptureFixture
) -> None:
    write_config(home, guardrails={"warn_records": 5})
    code, out, err = cli(capsys, "run", "--dataflow", "once")
    assert code == 0, err
    assert out.count("passed") == 2, "the table's check column is the delivery check"
    assert f"  warning: dataset {JOURNEYS} exports 9 records, above the soft limit of 5" in out, out
    instance = DagsterInstance.get()
    for slug in (JOURNEYS, FEEDBACK):
        key = AssetKey(["export", "once", slug])
        (record,) = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(key, "within_guardrails"), limit=1
        )
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.passed is False, slug
        assert evaluation.severity is AssetCheckSeverity.WARN
        assert "above the soft limit of 5 (guardrails.warn_records)" in evaluation.description
    (run,) = instance.get_run_records()
    warnings = [e.message for e in instance.all_logs(run.dagster_run.run_id)
                if e.dagster_event is None and "soft limit" in (e.message or "")]  # the run's log lines
    assert len(warnings) == 2, warnings
    code, out, _ = cli(capsys, "review", "once")
    assert code == 0 and out.count("Warning        dataset") == 2, out


def test_destinations_per_sandbox(home: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_config(home, guardrails={"destinations_per_sandbox": 2}, destinations=3)
    code, _, err = cli(capsys, "review")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{config}" in err and "sandbox 'prod' has 3 destinations; at most 2" in err, err
    write_config(home, guardrails={"destinations_per_sandbox": 3}, destinations=3)
    assert cli(capsys, "review")[0] == 0


def part_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("part-*"))


def test_the_licence_account_counts_each_delivered_window_once(home: Path, capsys: pytest.CaptureFixture) -> None:
    """Two once exports at two export times and a rerun of the first: the account holds the bytes of the two
    windows now at the destination (the rerun replaced its window's bytes); the asset and `usage` agree."""
    write_config(home, organization={"licensed_profiles": 1, "product_tier": "prime"}, datasets=[FEEDBACK])
    for export_time in ("2026-11-02T06:00:00Z", "2026-11-03T06:00:00Z", "2026-11-02T06:00:00Z"):
        code, _, err = cli(capsys, "run", "--dataflow", "once", "--export-time", export_time)
        assert code == 0, err
    on_disk = part_bytes(home.parent / "exports")
    code, out, _ = cli(capsys, "usage", "--json")
    usage = json.loads(out)
    assert usage["bytes_used"] == on_disk and usage["deliveries"] == 2, (usage, on_disk)
    assert usage["entitlement_bytes"] == 500_000 and usage["year"] == datetime.now(UTC).year

    from ajo_exports.config import load_config
    from ajo_exports.definitions import build_definitions

    defs = build_definitions(load_config(home.parent / "exports.yaml"), home)
    result = defs.resolve_job_def("license_usage").execute_in_process(instance=DagsterInstance.get())
    (materialization,) = result.asset_materializations_for_node("ajo__license_usage")
    metadata = {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}
    assert metadata["bytes_used"] == on_disk and metadata["entitlement_bytes"] == 500_000
    assert metadata["share_used_percent"] == round(100 * on_disk / 500_000, 3)
    (check,) = result.get_asset_check_evaluations()
    expected_pass = on_disk < 400_000
    assert check.passed is expected_pass, (check.description, on_disk)

    code, out, _ = cli(capsys, "usage", "--year", "2025")
    assert code == 0 and out.startswith("0 bytes delivered in 2025 by acme: 0.0% of the 500,000-byte entitlement")


@pytest.mark.parametrize(
    ("used", "status", "severity"),
    [(399_999, "ok", None), (400_000, "warning", AssetCheckSeverity.WARN), (500_000, "exceeded", "ERROR")],
)
def test_licence_thresholds(used: int, status: str, severity: object) -> None:
    usage = LicenseUsage("acme", 2026, used, 1, 500_000, used * 2, datetime(2026, 7, 2, tzinfo=UTC))
    assert usage.status == status
    assert f"{used / 500_000:.1%} of the 500,000-byte entitlement ({status})" in usage.summary()
    assert Organization(licensed_profiles=3, product_tier="prime").entitlement_bytes == 1_500_000
    assert Organization(licensed_profiles=3, product_tier="ultimate").entitlement_bytes == 2_100_000
