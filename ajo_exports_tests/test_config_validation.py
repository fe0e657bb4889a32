"""exports.yaml validation: every invalid config is one ConfigError line naming the file, the field and the problem.

Each case is a valid base config with one change (or raw text for malformed YAML). Secrets must never be echoed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ajo_exports.catalog import DATASETS, Tier, datasets_for_tier, get_dataset
from ajo_exports.cli import main
from ajo_exports.config import ConfigError, load_config
from ajo_exports.settings import SecretRef

FEEDBACK = "ajo_message_feedback_event_dataset"
DROP = object()  # a field value meaning "remove this field"

# One valid destination of each type; the base config uses the S3 one under the name `archive`.
VALID_DESTINATIONS: dict[str, dict] = {
    "local": {"type": "local", "path": "/tmp/ajo-exports-validation"},
    "amazon_s3": {
        "type": "amazon_s3", "bucket": "acme-ajo-exports", "folder": "ajo/exports",
        "access_key_id": "${AWS_ACCESS_KEY_ID}", "secret_access_key": "${AWS_SECRET_ACCESS_KEY}",
    },
    "azure_blob": {
        "type": "azure_blob", "container": "ajo-exports", "folder": "ajo",
        "connection_string": "${AZURE_STORAGE_CONNECTION_STRING}",
    },
    "adls_gen2": {
        "type": "adls_gen2", "url": "abfss://ajo-exports@acmelake.dfs.core.windows.net", "tenant": "acme.example",
        "client_id": "00000000-0000-0000-0000-000000000001", "client_secret": "${ADLS_CLIENT_SECRET}",
    },
    "data_landing_zone": {"type": "data_landing_zone", "sas_url": "${DLZ_SAS_URL}", "folder": "ajo"},
    "google_cloud_storage": {
        "type": "google_cloud_storage", "bucket": "acme-ajo-exports",
        "hmac_access_key_id": "${GCS_HMAC_ACCESS_KEY_ID}", "hmac_secret": "${GCS_HMAC_SECRET}",
    },
    "sftp": {
        "type": "sftp", "host": "sftp.acme.example", "port": 2222, "username": "ajo",
        "private_key": "${SFTP_PRIVATE_KEY}", "known_hosts": "sftp.acme.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA",
    },
}

BASE: dict = {
    "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate"},
    "destinations": [{"name": "archive", **VALID_DESTINATIONS["amazon_s3"]}],
    "dataflows": [{
        "name": "daily",
        "destination": "archive",
        "datasets": ["journeys", FEEDBACK],
        "format": "parquet",
        "compression": "gzip",
        "folder_template": "%DATASET_ID%/%EXPORT_TIME%",
        "schedule": {"frequency": "daily", "start": "2026-01-01T06:00:00Z", "end": "2026-12-31T06:00:00Z"},
    }],
}

Change = Callable[[dict], None] | str | bytes  # a change to BASE, or the raw file


def _apply(target: dict, fields: dict) -> None:
    for key, value in fields.items():
        if value is DROP:
            target.pop(key, None)
        else:
            target[key] = value


def dest(kind: str, **fields: object) -> Change:
    """Replace the `archive` destination by a valid one of `kind`, with `fields` changed."""

    def change(config: dict) -> None:
        destination = {"name": "archive", **copy.deepcopy(VALID_DESTINATIONS.get(kind, {"type": kind}))}
        _apply(destination, fields)
        config["destinations"] = [destination]

    return change


def flow(**fields: object) -> Change:
    def change(config: dict) -> None:
        _apply(config["dataflows"][0], fields)

    return change


def schedule(**fields: object) -> Change:
    def change(config: dict) -> None:
        _apply(config["dataflows"][0]["schedule"], fields)

    return change


def top(**fields: object) -> Change:
    def change(config: dict) -> None:
        _apply(config, fields)

    return change


def both(*changes: Change) -> Change:
    def change(config: dict) -> None:
        for one in changes:
            one(config)  # type: ignore[operator]

    return change


def config_bytes(change: Change) -> bytes:
    if isinstance(change, bytes):
        return change
    if isinstance(change, str):
        return change.encode()
    config = copy.deepcopy(BASE)
    change(config)
    return yaml.safe_dump(config, sort_keys=False).encode()


def case(case_id: str, change: Change, field: str, *words: str, absent: tuple[str, ...] = (), marks=()):
    """One invalid config: the field path and words its error must contain, and text it must not contain."""
    return pytest.param(change, field, words, absent, id=case_id, marks=marks)


S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AZURE_KEY = "c2VjcmV0LWF6dXJlLWFjY291bnQta2V5LXZhbHVl"
SFTP_PASSWORD = "hunter2-Sup3r-Secret"
ULTIMATE = [d.slug for d in DATASETS if d.tier is Tier.ULTIMATE]

CASES = [
    # destinations: type and required fields
    case("unknown-destination-type", dest("ftp", name="archive", host="ftp.acme.example"),
         "destinations[0]", "'ftp'", "amazon_s3", "sftp"),
    case("s3-missing-bucket", dest("amazon_s3", bucket=DROP), "destinations[0].bucket", "Field required"),
    case("azure-missing-container", dest("azure_blob", container=DROP), "destinations[0].container", "Field required"),
    case("adls-missing-tenant", dest("adls_gen2", tenant=DROP), "destinations[0].tenant", "Field required"),
    case("destination-unknown-field", dest("azure_blob", region="westeurope"), "destinations[0].region",
         "not permitted"),
    case("destination-name-uppercase", dest("local", name="Archive"), "destinations[0].name", "'Archive'",
         "lowercase"),
    # bucket / container names (AEP's rules, §1)
    case("s3-bucket-uppercase", dest("amazon_s3", bucket="Acme-Exports"), "destinations[0].bucket",
         "'Acme-Exports'", "lowercase"),
    case("s3-bucket-too-short", dest("amazon_s3", bucket="ab"), "destinations[0].bucket", "'ab'", "3-63"),
    case("s3-bucket-too-long", dest("amazon_s3", bucket="a" * 64), "destinations[0].bucket", "3-63"),
    case("s3-bucket-ip-shaped", dest("amazon_s3", bucket="192.168.10.1"), "destinations[0].bucket",
         "'192.168.10.1'", "IP-shaped"),
    case("azure-container-double-hyphen", dest("azure_blob", container="ajo--exports"), "destinations[0].container",
         "'ajo--exports'", "single hyphens"),
    case("gcs-bucket-contains-google", dest("google_cloud_storage", bucket="acme-google-exports"),
         "destinations[0].bucket", "'acme-google-exports'", "google"),
    case("gcs-bucket-starts-goog", dest("google_cloud_storage", bucket="goog-exports"), "destinations[0].bucket",
         "goog"),
    # folders
    case("folder-with-space", dest("amazon_s3", folder="ajo exports"), "destinations[0].folder", "'ajo exports'",
         "ASCII letters"),
    case("folder-with-hash", dest("amazon_s3", folder="ajo#1"), "destinations[0].folder", "'ajo#1'",
         "ASCII letters"),
    case("folder-with-newline", dest("amazon_s3", folder="ajo\nexports"), "destinations[0].folder",
         "ASCII letters"),
    case("folder-with-dotdot", dest("amazon_s3", folder="ajo/../etc"), "destinations[0].folder", "'..'"),
    case("folder-macro-unknown", flow(folder_template="%FOO%/%DATASET_ID%"), "dataflows[0].folder_template",
         "unknown folder macro %FOO%", "DATASET_ID"),
    case("folder-template-dotdot", flow(folder_template="../%DATASET_ID%"), "dataflows[0].folder_template",
         "folder templates"),
    # schedules (§3)
    case("every-hours-5", schedule(frequency="hourly", every_hours=5), "dataflows[0].schedule.every_hours",
         "= 5", "3, 6, 8 or 12"),
    case("hourly-without-every-hours", schedule(frequency="hourly"), "dataflows[0].schedule",
         "every_hours", "3, 6, 8 or 12"),
    case("every-hours-on-daily", schedule(every_hours=6), "dataflows[0].schedule", "only to frequency: hourly"),
    case("daily-without-end", schedule(end=DROP), "dataflows[0].schedule", "end date"),
    case("end-before-start", schedule(start="2026-06-01T00:00:00Z", end="2026-05-01T00:00:00Z"),
         "dataflows[0].schedule", "end 2026-05-01", "not after start 2026-06-01"),
    case("frequency-weekly", schedule(frequency="weekly"), "dataflows[0].schedule.frequency", "'weekly'", "hourly"),
    case("start-not-a-time", schedule(start="yesterday"), "dataflows[0].schedule.start", "'yesterday'"),
    # inline secrets: named, never echoed
    case("s3-inline-secret-access-key", dest("amazon_s3", secret_access_key=S3_SECRET),
         "destinations[0].secret_access_key", "inline secrets", "${", absent=(S3_SECRET,)),
    case("azure-inline-connection-string",
         dest("azure_blob", connection_string=f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={AZURE_KEY}"
              ),
         "destinations[0].connection_string", "inline secrets", absent=(AZURE_KEY, "AccountKey")),
    case("sftp-inline-password", dest("sftp", private_key=DROP, password=SFTP_PASSWORD), "destinations[0].password",
         "inline secrets", absent=(SFTP_PASSWORD,)),
    case("adls-inline-client-secret", dest("adls_gen2", client_secret="Zx8Q~client-secret-value"),
         "destinations[0].client_secret", "inline secrets", absent=("Zx8Q~client-secret-value",)),
    case("dlz-inline-sas-url", dest("data_landing_zone", sas_url="https://acme.blob.core.windows.net/dlz?sig=S1GnAtUrE"),
         "destinations[0].sas_url", "inline secrets", absent=("S1GnAtUrE",)),
    case("gcs-inline-hmac-secret", dest("google_cloud_storage", hmac_secret="bGV0bWVpbi1obWFjLXNlY3JldA"),
         "destinations[0].hmac_secret", "inline secrets", absent=("bGV0bWVpbi1obWFjLXNlY3JldA",)),
    case("gcs-inline-service-account-json",
         dest("google_cloud_storage", hmac_access_key_id=DROP, hmac_secret=DROP,
              service_account_json='{"type": "service_account", "private_key": "PRIVATE-KEY-MATERIAL"}'),
         "destinations[0].service_account_json", "inline secrets", absent=("PRIVATE-KEY-MATERIAL",)),
    case("s3-inline-access-key-id", dest("amazon_s3", access_key_id="AKIAIOSFODNN7EXAMPLE"),
         "destinations[0].access_key_id", "inline secrets", absent=("AKIAIOSFODNN7EXAMPLE",)),
    # S3 authentication
    case("s3-keys-and-role-arn", dest("amazon_s3", role_arn="arn:aws:iam::123456789012:role/ajo-export"),
         "destinations[0]", "either access_key_id and secret_access_key, or role_arn"),
    case("s3-no-credentials", dest("amazon_s3", access_key_id=DROP, secret_access_key=DROP),
         "destinations[0]", "or role_arn"),
    case("s3-bad-role-arn",
         dest("amazon_s3", access_key_id=DROP, secret_access_key=DROP, role_arn="arn:aws:iam::1234:user/ajo"),
         "destinations[0]", "'arn:aws:iam::1234:user/ajo'", "arn:aws:iam::<account>:role/<name>"),
    # datasets and entitlements
    case("unknown-dataset-slug", flow(datasets=["journeys", "ajo_message_feedback"]), "dataflows[0].datasets",
         "unknown AJO dataset 'ajo_message_feedback'", FEEDBACK),
    case("dataset-listed-twice", flow(datasets=["journeys", FEEDBACK, "journeys"]), "dataflows[0].datasets",
         "twice"),
    case("dataset-listed-twice-by-slug-and-id", flow(datasets=["journeys", get_dataset("journeys").dataset_id]),
         "dataflows[0].datasets", "twice"),
    case("datasets-empty-list", flow(datasets=[]), "dataflows[0].datasets", "at least one dataset"),
    case("ultimate-datasets-in-prime-org",
         both(top(organization={"name": "acme", "product_tier": "prime"}),
              flow(datasets=["journeys", ULTIMATE[0], ULTIMATE[1]]),
              lambda c: c["dataflows"].append({"name": "offers", "destination": "archive", "datasets": [ULTIMATE[2]]})),
         "organization.product_tier", "'acme' is on Prime", f"daily/{ULTIMATE[0]} (needs Ultimate)",
         f"daily/{ULTIMATE[1]} (needs Ultimate)", f"offers/{ULTIMATE[2]} (needs Ultimate)",
         absent=("journeys",)),
    # formats (§2)
    case("json-compression-none", flow(format="json", compression="none"), "dataflows[0]", "gzip", "none"),
    case("json-compression-zstd", flow(format="json", compression="zstd"), "dataflows[0]", "gzip", "zstd"),
    case("format-csv", flow(format="csv"), "dataflows[0].format", "'csv'", "parquet"),
    case("pgp-key-on-data-landing-zone",
         dest("data_landing_zone", pgp_public_key="-----BEGIN PGP PUBLIC KEY BLOCK-----"),
         "destinations[0]", "Data Landing Zone", "pgp_public_key"),
    case("max-bytes-per-file-tiny", flow(max_bytes_per_file=10), "dataflows[0].max_bytes_per_file", "= 10", "1024"),
    # names and references
    case("duplicate-destination-names",
         lambda c: c["destinations"].append({"name": "archive", **VALID_DESTINATIONS["azure_blob"]}),
         "destinations[1].name", "duplicate name 'archive'"),
    case("duplicate-dataflow-names", lambda c: c["dataflows"].append({"name": "daily", "destination": "archive"}),
         "dataflows[1].name", "duplicate name 'daily'"),
    case("dataflow-unknown-destination", flow(destination="s3-archive"), "dataflows[0].destination",
         "unknown destination 's3-archive'", "known: archive"),
    # access (§8)
    case("principal-without-permissions", top(access={"viewer": []}), "access.viewer", "'viewer' has no permission"),
    case("unknown-permission", top(access={"viewer": ["view_datasets", "export_everything"]}), "access.viewer[1]",
         "'export_everything'", "view_destinations"),
    case("activate-without-view-destinations",
         top(access={"operator": ["view_datasets", "manage_and_activate_dataset_destinations"]}),
         "access.operator", "manage_and_activate_dataset_destinations requires view_destinations"),
    # SFTP
    case("sftp-without-host-key", dest("sftp", known_hosts=DROP), "destinations[0]", "known_hosts",
         "host_key_fingerprint"),
    case("sftp-password-and-private-key", dest("sftp", password="${SFTP_PASSWORD}"), "destinations[0]",
         "exactly one of password or private_key"),
    case("sftp-port-70000", dest("sftp", port=70000), "destinations[0].port", "= 70000", "65535"),
    case("sftp-port-0", dest("sftp", port=0), "destinations[0].port", "= 0", "greater than or equal to 1"),
    # ADLS
    case("adls-url-not-abfss", dest("adls_gen2", url="https://acmelake.blob.core.windows.net/ajo-exports"),
         "destinations[0].url", "'https://acmelake.blob.core.windows.net/ajo-exports'", "abfss://"),
    # file shape
    case("unknown-top-level-key", top(dataflow=[{"name": "typo", "destination": "archive"}]), "dataflow",
         "Extra inputs are not permitted"),
    case("top-level-key-typo-only",
         lambda c: c.update(dataflow=c.pop("dataflows")), "dataflow:", "not permitted"),
    case("missing-destinations", top(destinations=DROP), "destinations", "Field required"),
    case("not-a-mapping", "- destinations\n- dataflows\n", "", "expected a mapping"),
    case("empty-file", "", "", "expected a mapping"),
    case("malformed-yaml",
         "destinations:\n  - name: archive\n    type: local\ndataflows:\n  - name: daily\n     destination: archive\n",
         "line 6", "malformed YAML", "mapping values are not allowed"),
    case("non-printable-character", "destinations: []\ndataflows: [\x07]\n", "line 2", "malformed YAML",
         "unacceptable character"),
    case("not-utf-8", "destinations: []\n# café\n".encode("latin-1"), "", "UTF-8"),
]
CASE_IDS = [param.id for param in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


def test_base_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "exports.yaml"
    path.write_bytes(config_bytes(lambda config: None))
    config = load_config(path)
    assert [d.slug for d in config.datasets_of(config.dataflow("daily"))] == ["journeys", FEEDBACK]


@pytest.mark.parametrize(("change", "field", "words", "absent"), CASES)
def test_invalid_config_is_one_line_naming_file_field_and_problem(
    tmp_path: Path, change: Change, field: str, words: tuple[str, ...], absent: tuple[str, ...]
) -> None:
    path = tmp_path / "exports.yaml"
    path.write_bytes(config_bytes(change))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}:"), message
    detail = message[len(str(path)):]
    assert field in detail, message
    for word in words:
        assert word in detail, f"{word!r} not in {message!r}"
    for text in absent:
        assert text not in message, f"{text!r} leaked into {message!r}"
    assert "Traceback" not in message and "pydantic" not in message.lower()


CLI_CASES = [param for param in CASES if param.id in {"s3-inline-secret-access-key", "every-hours-5", "malformed-yaml"}]


@pytest.mark.parametrize(("change", "field", "words", "absent"), CLI_CASES)
def test_review_reports_an_invalid_config_as_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    change: Change, field: str, words: tuple[str, ...], absent: tuple[str, ...],
) -> None:
    path = tmp_path / "exports.yaml"
    path.write_bytes(config_bytes(change))
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(tmp_path / "other.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.delenv("AJO_EXPORTS_PRINCIPAL", raising=False)
    code = main(["--config", str(path), "review"])
    out, err = capsys.readouterr()
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("ajo-exports: error:")]
    assert len(errors) == 1 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert errors[0].startswith(f"ajo-exports: error: {path}:")
    assert field in errors[0] and all(word in errors[0] for word in words), errors[0]
    assert not any(text in err or text in out for text in absent)
    assert out == ""


def test_all_six_destination_types_with_secret_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    config = copy.deepcopy(BASE)
    config["destinations"] = [
        {"name": kind.replace("_", "-"), **fields} for kind, fields in VALID_DESTINATIONS.items()
    ]
    config["destinations"][1]["pgp_public_key"] = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n"
    config["dataflows"] = [
        {"name": f"to-{d['name']}", "destination": d["name"], "datasets": ["journeys"], "format": fmt}
        for d, fmt in zip(config["destinations"], ["parquet", "json"] * 4, strict=False)
    ]
    config["dataflows"][2]["schedule"] = {"frequency": "hourly", "every_hours": 8,
                                          "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}
    config["access"] = {"operator": ["view_datasets", "view_destinations", "manage_destinations",
                                     "manage_and_activate_dataset_destinations"]}
    path = tmp_path / "exports.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    for var in ("SFTP_PRIVATE_KEY", "DLZ_SAS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "set")

    loaded = load_config(path)

    assert [d.type for d in loaded.destinations] == list(VALID_DESTINATIONS)
    assert len({d.destination_id for d in loaded.destinations}) == len(VALID_DESTINATIONS) == 7
    s3 = loaded.destination("amazon-s3")
    assert isinstance(s3.secret_access_key, SecretRef) and s3.secret_access_key.env_var == "AWS_SECRET_ACCESS_KEY"
    assert s3.location == "s3://acme-ajo-exports/ajo/exports" and s3.pgp_public_key
    assert loaded.destination("adls-gen2").container == "ajo-exports"
    assert loaded.destination("adls-gen2").account == "acmelake"
    assert loaded.destination("sftp").missing_secrets() == ["private_key (${SFTP_PRIVATE_KEY})"]
    assert loaded.destination("data-landing-zone").missing_secrets() == ["sas_url (${DLZ_SAS_URL})"]
    assert loaded.dataflow("to-azure-blob").schedule.every_hours == 8
    assert [f.destination for f in loaded.dataflows] == [d.name for d in loaded.destinations]

    monkeypatch.setenv("AJO_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.delenv("AJO_EXPORTS_PRINCIPAL", raising=False)
    assert main(["--as", "operator", "destinations"]) == 0
    out = capsys.readouterr().out
    assert all(d.name in out for d in loaded.destinations)


def test_prime_organization_with_all_exports_exactly_the_16_prime_datasets(tmp_path: Path) -> None:
    path = tmp_path / "exports.yaml"
    path.write_bytes(config_bytes(both(top(organization={"name": "acme", "product_tier": "prime"}),
                                       flow(datasets="all"))))
    config = load_config(path)
    exported = config.datasets_of(config.dataflow("daily"))
    assert len(exported) == 16
    assert {d.tier for d in exported} == {Tier.PRIME}
    assert {d.slug for d in exported} == {d.slug for d in datasets_for_tier(Tier.PRIME)}
    assert not set(ULTIMATE) & {d.slug for d in exported}


def test_ultimate_organization_with_all_exports_all_21(tmp_path: Path) -> None:
    path = tmp_path / "exports.yaml"
    path.write_bytes(config_bytes(flow(datasets="all")))
    config = load_config(path)
    assert len(config.datasets_of(config.dataflow("daily"))) == 21


def test_secret_ref_env_var() -> None:
    assert SecretRef("${AWS_SECRET_ACCESS_KEY}").env_var == "AWS_SECRET_ACCESS_KEY"
    assert SecretRef._validate("${_x1}").env_var == "_x1"
    for inline in ("hunter2", "$AWS_SECRET", "${1BAD}", "${A}B", "prefix${A}", 42):
        with pytest.raises(ValueError, match="inline secrets are not allowed"):
            SecretRef._validate(inline)


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "exports.yaml"
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"{path}: file not found"


def test_config_path_that_is_a_directory_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(tmp_path / "other.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    code = main(["--config", str(tmp_path), "review"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"ajo-exports: error: {tmp_path}:"), err
