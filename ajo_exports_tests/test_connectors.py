"""A connector is one module: each destination and source type declares its exports.yaml settings once, and the
config union, the Dagster resource, the asset kind, the AEP import and `ajo-exports fields` all follow from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import EnvVar

import ajo_exports
from ajo_exports.cli import main
from ajo_exports.config import ExportsConfig
from ajo_exports.destinations import DESTINATIONS
from ajo_exports.destinations.amazon_s3 import AmazonS3DestinationConfig
from ajo_exports.destinations.resource import NOT_RESOURCE_FIELDS, build_destination, resource_class
from ajo_exports.lake import SOURCES
from ajo_exports.lake.object_store import ObjectStoreSourceConfig
from ajo_exports.lake.resource import lake_resource
from ajo_exports.lake.resource import resource_class as source_resource_class
from ajo_exports.settings import SecretRef, is_secret

PACKAGE = Path(ajo_exports.__file__).parent
CONNECTORS = [*DESTINATIONS, *SOURCES]


@pytest.mark.parametrize("settings", CONNECTORS, ids=lambda s: s.__name__)
def test_every_field_is_documented_once_in_its_module(settings) -> None:
    undocumented = [name for name, field in settings.model_fields.items() if name != "type" and not field.description]
    assert undocumented == [], f"{settings.__name__}: fields without a docstring: {undocumented}"


def test_registered_types_are_unique_and_each_destination_names_its_kind() -> None:
    destination_types = [d.type_name() for d in DESTINATIONS]
    assert len(set(destination_types)) == len(destination_types) == 7
    assert {d.kind for d in DESTINATIONS} == {"file", "s3", "azure", "gcs", "sftp"}
    assert [s.type_name() for s in SOURCES] == ["local", "object_store"]
    assert set(ExportsConfig.model_fields["destinations"].annotation.__args__[0].__args__[0].__args__) == set(
        DESTINATIONS
    )


@pytest.mark.parametrize("settings", DESTINATIONS, ids=lambda s: s.__name__)
def test_the_dagster_resource_mirrors_the_settings(settings) -> None:
    resource = resource_class(settings)
    assert resource.__name__ == settings.__name__.removesuffix("Config")
    assert resource_class(settings) is resource  # one class per type
    expected = {name: field for name, field in settings.model_fields.items() if name not in NOT_RESOURCE_FIELDS}
    schema = resource.to_config_schema().as_field().config_type.fields
    assert set(schema) == set(expected)
    for name, field in expected.items():
        assert schema[name].is_required == field.is_required(), name
        assert schema[name].description == " ".join(field.description.split()), name


def test_secrets_reach_the_resource_as_env_vars_and_the_storage_resolved(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    config = AmazonS3DestinationConfig(
        type="amazon_s3", name="s3", bucket="acme-exports", folder="ajo", access_key_id="${T_KEY}",
        secret_access_key="${T_SECRET}", endpoint_url="http://127.0.0.1:1", region="eu-west-1",
    )
    assert isinstance(config.access_key_id, SecretRef)
    assert is_secret(AmazonS3DestinationConfig.model_fields["access_key_id"].annotation)
    resource = build_destination(config)
    assert resource.access_key_id == EnvVar("T_KEY") and resource.secret_access_key == EnvVar("T_SECRET")
    assert "max_concurrent_exports" not in type(resource).model_fields
    monkeypatch.setenv("T_KEY", "key-value")
    monkeypatch.setenv("T_SECRET", "secret-value")
    settings = resource.process_config_and_initialize().settings()
    assert type(settings) is AmazonS3DestinationConfig
    assert (settings.access_key_id, settings.secret_access_key) == ("key-value", "secret-value")
    assert (settings.bucket, settings.folder, settings.region) == ("acme-exports", "ajo", "eu-west-1")

    source = ObjectStoreSourceConfig(type="object_store", url="s3://lake-bucket/aep", access_key_id="${T_KEY}",
                                     secret_access_key="${T_SECRET}", endpoint_url="http://127.0.0.1:1")
    lake = lake_resource(source, tmp_path)
    assert type(lake) is source_resource_class(ObjectStoreSourceConfig)
    assert lake.secret_access_key == EnvVar("T_SECRET")
    resolved = lake.process_config_and_initialize().settings()
    assert resolved.secret_access_key == "secret-value" and resolved.url == "s3://lake-bucket/aep"


def test_config_and_assets_list_no_connector_type() -> None:
    """The unions come from the registries; a new type touches only its module and one registry line."""
    types = {settings.type_name() for settings in CONNECTORS} - {"local"}
    for module in ("config.py", "assets.py", "definitions.py"):
        text = (PACKAGE / module).read_text()
        named = sorted(t for t in types if re.search(rf"[\"']{t}[\"']", text))
        assert named == [], f"{module} names connector types {named}"


def test_fields_command_prints_every_type_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fields"]) == 0
    out = capsys.readouterr().out
    for settings in CONNECTORS:
        assert f"type: {settings.type_name()}:" in out
        for name in settings.model_fields:
            if name != "type":
                assert re.search(rf"^{name} ", out, re.M), (settings.__name__, name)
    assert main(["fields", "sftp"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("destination type: sftp:") and "host_key_fingerprint" in out
    assert not re.search(r"^bucket ", out, re.M)
    assert re.search(r"^password\s+\$\{VAR\}\s", out, re.M) and re.search(r"^port\s+default 22\s", out, re.M)


def test_fields_command_refuses_an_unknown_type_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "ajo_exports.cli", "fields", "ftp"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "unknown type 'ftp'" in done.stderr
