"""`ajo-exports import-aep`: Flow Service objects as AEP returns them, for each of the six destination types, become
exports.yaml entries that load, with credentials as ${VAR} references and every unsupported part reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ajo_exports.catalog import get_dataset
from ajo_exports.cli import main
from ajo_exports.config import load_config

FEEDBACK = get_dataset("ajo_message_feedback_event_dataset")
STEPS = get_dataset("journey_step_events")
TEMPLATE = "%DESTINATION%_%DATASET_ID%_%DATETIME(YYYYMMdd_HHmmss)%"  # the API example of AEP's docs
START, END = 1_793_498_400, 1_808_438_400  # 2026-11-01T02:00:00Z, 2027-04-23T00:00:00Z
SPECS = {
    "amazon_s3": "4fce964d-3f37-408f-9778-e597338a21ee",
    "azure_blob": "6d6b59bf-fb58-4107-9064-4d246c0e5bb2",
    "adls_gen2": "be2c3209-53bc-47e7-ab25-145db8b873e1",
    "data_landing_zone": "10440537-2a7b-4583-ac39-ed38d4b848e8",
    "google_cloud_storage": "c5d93acb-ea8b-4b14-8f53-02138444ae99",
    "sftp": "36965a81-b1c6-401b-99f8-22508f1e6a26",
}
AUTH = {
    "amazon_s3": ("Access Key", {"s3AccessKey": "AKIA…masked", "s3SecretKey": "…masked"}),
    "azure_blob": ("ConnectionString", {"connectionString": "…masked"}),
    "adls_gen2": ("Azure Service Principal Auth", {
        "url": "abfss://exports@acmelake.dfs.core.windows.net", "tenant": "acme.onmicrosoft.com",
        "servicePrincipalId": "0f5b2c9e-1c1e-4a55-9d3e-2b7d0c4e9a11", "servicePrincipalKey": "…masked"}),
    "data_landing_zone": (None, {}),
    "google_cloud_storage": ("Google Cloud Storage authentication credentials", {
        "accessKeyId": "GOOG…masked", "secretAccessKey": "…masked"}),
    "sftp": ("SFTP with SSH Key", {"domain": "sftp.acme.example", "port": 2222, "username": "ajo",
                                   "sshKey": "…masked"}),
}
TARGET = {
    "amazon_s3": {"bucketName": "acme-ajo-exports", "path": "exports/ajo"},
    "azure_blob": {"container": "ajo-exports", "path": "exports/ajo"},
    "adls_gen2": {"path": "exports/ajo"},
    "data_landing_zone": {"path": "exports/ajo"},
    "google_cloud_storage": {"bucketName": "acme-ajo-exports", "path": "exports/ajo"},
    "sftp": {"remotePath": "/upload/ajo"},
}


def flow_service(kind: str, *, schedule: dict | None = None, file_type: str = "JSON", compression: str = "GZIP",
                 datasets: list[dict] | None = None, pgp: bool = False) -> list[dict]:
    """A base connection, a source connection, a target connection and a flow, shaped as Flow Service returns them."""
    spec_name, params = AUTH[kind]
    base = {"id": f"base-{kind}", "name": f"ACME {kind.replace('_', ' ')} export",
            "connectionSpec": {"id": SPECS[kind], "version": "1.0"}, "state": "enabled"}
    if spec_name:  # DLZ: AEP provisions it, no credentials
        base["auth"] = {"specName": spec_name, "params": params}
    if pgp:
        base["encryptionSpecs"] = [{"specName": "File PGP/GPG Encryption",
                                    "params": {"encryptionAlgo": "PGPGPG", "publicKey": "LS0tLS1CRUdJTi…"}}]
    source = {"id": f"source-{kind}", "name": "AJO datasets", "connectionSpec": {
        "id": "23598e46-f560-407b-88d5-ea6207e49db0", "version": "1.0"}, "params": {"datasets": datasets or [
            {"dataSetId": "64b7f3a2c1d4e50001a2b3c4", "name": FEEDBACK.name},
            {"dataSetId": "64b7f3a2c1d4e50001a2b3c5", "name": STEPS.name}]}}
    target = {"id": f"target-{kind}", "name": f"{kind} target", "baseConnectionId": base["id"],
              "connectionSpec": {"id": SPECS[kind], "version": "1.0"},
              "params": {"mode": "Server-to-server", "datasetFileType": file_type, "compression": compression,
                         "includeFileManifest": True, **TARGET[kind]}}
    flow = {"id": f"flow-{kind}", "name": f"Nightly {kind.replace('_', ' ')} export", "state": "enabled",
            "flowSpec": {"id": "269ba276-16fc-47db-92b0-c1049a3c131f", "version": "1.0"},
            "sourceConnectionIds": [source["id"]], "targetConnectionIds": [target["id"]], "transformations": [],
            "scheduleParams": schedule or {"exportMode": "FIRST_FULL_THEN_INCREMENTAL", "timeUnit": "day",
                                           "interval": 1, "startTime": START, "endTime": END,
                                           "foldernameTemplate": TEMPLATE}}
    return [base, source, target, flow]


def run_import(tmp_path: Path, capsys, objects: list[dict], *extra: str) -> tuple[int, dict, str]:
    files = []
    for index, item in enumerate(objects):  # one file per object, as a user would save API answers
        path = tmp_path / f"object-{index}.json"
        path.write_text(json.dumps({"items": [item]} if index % 2 else item))
        files.append(str(path))
    code = main(["import-aep", *files, "--output", str(tmp_path / "exports.yaml"), *extra])
    err = capsys.readouterr().err
    return code, yaml.safe_load((tmp_path / "exports.yaml").read_text()), err


@pytest.mark.parametrize("kind", list(SPECS))
def test_each_destination_type_round_trips_into_a_config_that_loads(kind: str, tmp_path: Path, capsys) -> None:
    extra = ["--known-host", "sftp.acme.example=SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"]
    code, config, err = run_import(tmp_path, capsys, flow_service(kind, pgp=kind != "data_landing_zone"), *extra)
    assert code == 0, err
    (destination,) = config["destinations"]
    (flow,) = config["dataflows"]
    assert destination["name"] == f"acme-{kind.replace('_', '-')}-export" and destination["type"] == kind
    assert flow == {
        "name": f"nightly-{kind.replace('_', '-')}-export", "destination": destination["name"],
        "datasets": [FEEDBACK.slug, STEPS.slug], "format": "json", "compression": "gzip", "manifest": True,
        "schedule": {"frequency": "daily", "start": "2026-11-01T02:00:00Z", "end": "2027-04-23T00:00:00Z"},
        "folder_template": TEMPLATE,
    }
    secrets = {key: value for key, value in destination.items() if str(value).startswith("${")}
    for value in secrets.values():
        assert f"set {value[2:-1]}: {kind}" in err, err
    assert "masked" not in yaml.safe_dump(config), "no credential value is carried over"
    expected = {
        "amazon_s3": {"bucket": "acme-ajo-exports", "folder": "exports/ajo"},
        "azure_blob": {"container": "ajo-exports", "folder": "exports/ajo"},
        "adls_gen2": {"url": "abfss://exports@acmelake.dfs.core.windows.net", "tenant": "acme.onmicrosoft.com",
                      "client_id": "0f5b2c9e-1c1e-4a55-9d3e-2b7d0c4e9a11", "folder": "exports/ajo"},
        "data_landing_zone": {"folder": "exports/ajo"},
        "google_cloud_storage": {"bucket": "acme-ajo-exports", "folder": "exports/ajo"},
        "sftp": {"host": "sftp.acme.example", "port": 2222, "username": "ajo", "folder": "/upload/ajo",
                 "host_key_fingerprint": "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"},
    }[kind]
    assert {key: destination[key] for key in expected} == expected
    assert set(secrets) == {
        "amazon_s3": {"access_key_id", "secret_access_key"}, "azure_blob": {"connection_string"},
        "adls_gen2": {"client_secret"}, "data_landing_zone": {"sas_url"},
        "google_cloud_storage": {"hmac_access_key_id", "hmac_secret"}, "sftp": {"private_key"},
    }[kind]
    assert ("pgp_public_key" in destination) is (kind != "data_landing_zone")
    loaded = load_config(tmp_path / "exports.yaml")  # validates every field exactly as exports.yaml is validated
    assert loaded.dataflow(flow["name"]).destination == destination["name"]


def test_what_cannot_be_carried_over_is_reported(tmp_path: Path, capsys) -> None:
    odd = flow_service("amazon_s3", file_type="JSON", compression="NONE", datasets=[
        {"dataSetId": "64b7f3a2c1d4e50001a2b3c4", "name": FEEDBACK.name},
        {"dataSetId": "5f0c0ffee0000000000000ab", "name": "Web SDK events"}])
    odd[0]["auth"]["params"]["s3Region"] = "eu-west-1"
    odd[2]["params"]["exportSegmentMembership"] = True
    nine = flow_service("sftp", schedule={"exportMode": "FIRST_FULL_THEN_INCREMENTAL", "timeUnit": "hour",
                                          "interval": 9, "startTime": START, "endTime": END})
    once = flow_service("google_cloud_storage", schedule={"exportMode": "DAILY_FULL_EXPORT", "timeUnit": "day",
                                                          "interval": 0, "startTime": START,
                                                          "foldernameTemplate": "exports?%DATASET_ID%"})
    stray = {"id": "x", "name": "an audience flow spec", "items_kind": "?"}
    code, config, err = run_import(tmp_path, capsys, [*odd, *nine, *once, stray])
    assert code == 1
    problems = [line for line in err.splitlines() if line.startswith("not carried over:")]
    for needle in ("('Web SDK events') is not one of the 21 Journey Optimizer datasets: left out",
                   "JSON without compression is not offered here", "auth parameter 's3Region'",
                   "target parameter 'exportSegmentMembership'", "interval 9 is not daily or every 3, 6, 8 or 12",
                   "object x is not a flow", "AEP keeps no SFTP host key",
                   "foldernameTemplate 'exports?%DATASET_ID%' is not accepted here"):
        assert any(needle in line for line in problems), (needle, problems)
    assert [flow["name"] for flow in config["dataflows"]] == ["nightly-amazon-s3-export",
                                                              "nightly-google-cloud-storage-export"]
    assert config["dataflows"][0]["datasets"] == [FEEDBACK.slug]
    assert config["dataflows"][1]["schedule"] == {"frequency": "once", "start": "2026-11-01T02:00:00Z"}
    assert "folder_template" not in config["dataflows"][1], "the default layout instead, and said so"


def test_a_file_that_is_not_json_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "flows.json"
    bad.write_text("{not json")
    assert main(["import-aep", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}: not a readable JSON file" in err[0]
