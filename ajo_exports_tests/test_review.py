"""Review and confirm: the exact summary a person reads before activating, and what activation records."""

from __future__ import annotations

from pathlib import Path

import pytest

from ajo_exports.activation import Confirmations
from ajo_exports.cli import main
from ajo_exports_tests.helpers import parse_config

CONFIG = """\
organization: {name: acme, sandbox: prod, product_tier: prime}
destinations:
  - name: archive
    type: amazon_s3
    bucket: acme-ajo-archive
    folder: exports/ajo
    access_key_id: ${ACME_S3_KEY}
    secret_access_key: ${ACME_S3_SECRET}
dataflows:
  - name: nightly
    destination: archive
    datasets: [journey_step_events, ajo_message_feedback_event_dataset]
    format: json
    compression: gzip
    schedule: {frequency: daily, start: "2026-11-01T02:00:00Z", end: "2030-01-01T00:00:00Z"}
"""

GUARDRAILS = (
    "Guardrails     warn above 5,000,000,000 records; a record dataset's full export at most 10,000,000,000 "
    "(record_dataset_max_records); destinations 1 of 100"
)
SNAPSHOT = """\
Dataflow       nightly (enabled)
Organization   acme, sandbox prod, Prime
Destination    archive (amazon_s3), id 6d4ee78c-eee8-55bf-b5b8-394645536575
Location       s3://acme-ajo-archive/exports/ajo
Datasets       2
  - journey_step_events (prime, 5688e7c138062c3e0ef10097)
  - ajo_message_feedback_event_dataset (prime, 9ab1216a21c4e1a88417b122)
Format         json, compression gzip, files *.json.gz, manifest on
Schedule       daily from 2026-11-01 02:00 UTC, incremental (first export: everything so far)
First export   2026-11-02 02:00 UTC
End date       2030-01-01 00:00 UTC
Entitlement    ok: every dataset is allowed on Prime
First folder   s3://acme-ajo-archive/exports/ajo/5688e7c138062c3e0ef10097/exportTime=202611020200/
{guardrails}
Confirmation   {confirmation}
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "exports.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(path))
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AJO_EXPORTS_PRINCIPAL", raising=False)
    return path


def test_review_snapshot_and_missing_secrets_fail(config_file: Path, monkeypatch, capsys) -> None:
    assert main(["review"]) == 1
    out = capsys.readouterr().out
    unconfirmed = "dataflow 'nightly' has not been confirmed: run `ajo-exports activate nightly`"
    assert out == SNAPSHOT.format(guardrails=GUARDRAILS, confirmation=unconfirmed) + (
        "Problem        destination 'archive' needs environment variables: access_key_id (${ACME_S3_KEY}), "
        "secret_access_key (${ACME_S3_SECRET})\n\n"
    )
    monkeypatch.setenv("ACME_S3_KEY", "AKIAEXAMPLE0000000000")
    monkeypatch.setenv("ACME_S3_SECRET", "not-printed-anywhere-0123456789")
    assert main(["review", "nightly"]) == 0
    out = capsys.readouterr().out
    assert out == SNAPSHOT.format(guardrails=GUARDRAILS, confirmation=unconfirmed) + "\n"
    assert "not-printed-anywhere" not in out


def test_activate_records_who_when_and_the_config_hash(config_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ACME_S3_KEY", "AKIAEXAMPLE0000000000")
    monkeypatch.setenv("ACME_S3_SECRET", "not-printed-anywhere-0123456789")
    assert main(["--as", "ana", "activate", "nightly"]) == 0
    assert "dataflow nightly confirmed by ana" in capsys.readouterr().out
    config = parse_config(CONFIG)
    home = tmp_path / "home"
    assert Confirmations(home).status(config, config.dataflows[0])[0]
    main(["review"])
    assert "Confirmation   confirmed by ana at " in capsys.readouterr().out
    changed = parse_config(CONFIG.replace("format: json", "format: parquet"))
    may_run, why = Confirmations(home).status(changed, changed.dataflows[0])
    assert not may_run and "changed after ana confirmed it" in why


def test_activate_refuses_a_dataflow_with_problems(config_file: Path, capsys) -> None:
    assert main(["activate", "nightly"]) == 2
    err = capsys.readouterr().err
    assert "cannot be activated" in err and "ACME_S3_SECRET" in err
    assert not (Path(config_file).parent / "home" / "confirmations.json").exists()
