"""The lake on object storage: the local lake copied to moto's S3, Azurite and fake-gcs-server exports exactly as the
local one."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml

from ajo_exports.catalog import get_dataset
from ajo_exports.config import ConfigError
from ajo_exports.export.formats import read_part
from ajo_exports.lake import LakeError, LocalLake
from ajo_exports.lake.generator import generate_batch
from ajo_exports.lake.object_store import ObjectStoreLake, storage_options
from ajo_exports.lake.resource import open_lake
from ajo_exports_tests.helpers import parse_config, run_export
from ajo_exports_tests.servers.azurite import Azurite
from ajo_exports_tests.servers.fake_gcs import FakeGcsServer
from ajo_exports_tests.servers.s3 import REGION, MotoServer

FEEDBACK = "ajo_message_feedback_event_dataset"  # time series
JOURNEYS = "journeys"  # records
SLUGS = (FEEDBACK, JOURNEYS)
START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
LATE = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)  # a batch that only the second (incremental) window takes
WINDOWS = {"2026-11-01": "202611020200", "2026-11-02": "202611030200"}


def config(exports: Path, source: dict | None = None) -> str:
    """A daily dataflow of a time-series and a record dataset to a local destination, reading `source`."""
    body: dict = {
        "organization": {"name": "acme", "sandbox": "prod", "product_tier": "ultimate"},
        "destinations": [{"name": "local", "type": "local", "path": str(exports)}],
        "dataflows": [
            {
                "name": "daily",
                "destination": "local",
                "datasets": list(SLUGS),
                "max_rows_per_file": 150,
                "schedule": {"frequency": "daily", "start": START.isoformat(), "end": "2027-05-01T00:00:00Z"},
            }
        ],
    }
    if source is not None:
        body["source"] = source
    return yaml.safe_dump(body, sort_keys=False)


@pytest.fixture(scope="module")
def grown_lake(lake_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's lake plus one late batch per dataset, so the second window is a non-empty increment."""
    root = tmp_path_factory.mktemp("object-store-home") / "lake"
    shutil.copytree(lake_root, root)
    lake = LocalLake(root)
    for slug in SLUGS:
        dataset = get_dataset(slug)
        lake.append_batch(dataset, generate_batch(dataset, 60, seed=99, batch_index=2, now=LATE), ingested_at=LATE)
    return root


def lake_files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


@pytest.fixture(scope="module")
def local_exports(grown_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Both windows exported from the local lake once for the module: the reference the object stores must match."""
    exports = tmp_path_factory.mktemp("local-exports")
    return {"root": {"path": exports}, **export_windows(config(exports), grown_lake)}


def export_windows(text: str, lake_root: Path) -> dict[str, dict]:
    runs = {}
    for window in WINDOWS:
        run = run_export(text, lake_root, dataflow="daily", partition_key=window)
        assert run.success, run.error
        runs[window] = run.exports
    return runs


def window(exports: Path, slug: str, window_key: str) -> tuple[pl.DataFrame, dict]:
    """The rows and the manifest of one delivered window, the manifest without what differs between runs."""
    folder = exports / get_dataset(slug).dataset_id / f"exportTime={WINDOWS[window_key]}"
    parts = sorted(p for p in folder.iterdir() if p.name.startswith("part-"))
    (manifest_path,) = [p for p in folder.iterdir() if p.name.startswith("manifest-")]
    manifest = json.loads(manifest_path.read_text())
    manifest.pop("flowRunId")
    for item in manifest["exportResults"]:
        item.pop("name")  # part-<n>-<job uuid>-c000...: the job uuid is new each run
        item["sinkPath"] = item["sinkPath"].removeprefix(str(exports))  # each run exports to its own folder
    frame = pl.concat([read_part(p, p.name) for p in parts]) if parts else pl.DataFrame()
    return frame, manifest


def assert_same_exports(local: dict[str, dict], remote: dict[str, dict], remote_exports: Path) -> None:
    reference = local["root"]["path"]
    for window_key in WINDOWS:
        for slug in SLUGS:
            assert remote[window_key][slug]["rows"] == local[window_key][slug]["rows"], (window_key, slug)
            assert remote[window_key][slug]["files"] == local[window_key][slug]["files"], (window_key, slug)
            want_rows, want_manifest = window(reference, slug, window_key)
            got_rows, got_manifest = window(remote_exports, slug, window_key)
            assert got_rows.height == want_rows.height > 0, (window_key, slug)
            assert got_rows.sort("_id").equals(want_rows.sort("_id")), (window_key, slug)
            assert got_manifest == want_manifest, (window_key, slug)
    first, second = (local[w][JOURNEYS]["batch_ids"] for w in WINDOWS)
    assert len(first) == 2 and len(second) == 1  # the record dataset: a full export, then only the late batch


# --- S3 -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_lake(s3_server: MotoServer, grown_lake: Path) -> str:
    """The grown lake copied with boto3 to a fresh bucket under a prefix; returns the lake URL."""
    bucket = s3_server.create_bucket()
    client = s3_server.s3()
    for key, path in lake_files(grown_lake):
        client.upload_file(str(path), bucket, f"aep/lake/{key}")
    return f"s3://{bucket}/aep/lake"


def s3_source(server: MotoServer, url: str) -> dict:
    return {
        "type": "object_store",
        "url": url,
        "endpoint_url": server.endpoint_url,
        "region": REGION,
        "access_key_id": "${LAKE_S3_KEY_ID}",
        "secret_access_key": "${LAKE_S3_SECRET}",
    }


@pytest.fixture
def s3_reader_env(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-only identity's keys in the environment: reading the lake needs nothing more."""
    assert s3_server.reader is not None
    monkeypatch.setenv("LAKE_S3_KEY_ID", s3_server.reader.access_key_id)
    monkeypatch.setenv("LAKE_S3_SECRET", s3_server.reader.secret_access_key)


def test_s3_lake_exports_exactly_what_the_local_lake_exports(
    s3_server: MotoServer, s3_lake: str, s3_reader_env: None, local_exports: dict, tmp_path: Path
) -> None:
    exports = tmp_path / "exports"
    remote = export_windows(config(exports, s3_source(s3_server, s3_lake)), tmp_path / "home" / "lake")
    assert_same_exports(local_exports, remote, exports)


def test_s3_lake_lists_and_scans_like_the_local_lake(
    s3_server: MotoServer, s3_lake: str, s3_reader_env: None, grown_lake: Path
) -> None:
    remote = open_lake(parse_config(config(Path("/unused"), s3_source(s3_server, s3_lake))).source, Path("/unused"))
    local = LocalLake(grown_lake)
    assert remote.has_data()
    for slug in SLUGS:
        dataset = get_dataset(slug)
        for bounds in ((None, None), (START, None), (None, LATE), (LATE, None)):
            want, got = local.list_batches(dataset, *bounds), remote.list_batches(dataset, *bounds)
            assert [(b.batch_id, b.ingested_at, b.rows) for b in got] == [
                (b.batch_id, b.ingested_at, b.rows) for b in want
            ]
            assert all(b.path.startswith(f"{s3_lake}/{slug}/batch-") for b in got)
            assert remote.scan(dataset, got).collect().equals(local.scan(dataset, want).collect())
        index, batch = max(enumerate(remote.list_batches(dataset)), key=lambda item: item[1].rows)
        length, chunk_rows = batch.rows - 2, max(1, (batch.rows - 2) // 3)
        chunks = list(remote.read(dataset, batch, start=1, length=length, chunk_rows=chunk_rows))
        assert sum(c.height for c in chunks) == length and all(c.height <= chunk_rows for c in chunks)
        local_batch = local.list_batches(dataset)[index]
        want = pl.concat(list(local.read(dataset, local_batch, 1, length, chunk_rows)))
        assert pl.concat(chunks).equals(want)


def test_s3_lake_with_explicit_keys_never_asks_a_metadata_service(s3_server: MotoServer, s3_lake: str) -> None:
    """object_store is pointed at a trap instead of 169.254.169.254: with explicit keys it is never asked."""
    asked: list[str] = []

    class Trap(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_PUT = do_GET  # noqa: N815 - IMDSv2 asks for a token with PUT

        def log_message(self, *args: object) -> None:
            return None

    trap = http.server.HTTPServer(("127.0.0.1", 0), Trap)
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    try:
        assert s3_server.reader is not None
        options = storage_options(
            s3_lake, endpoint_url=s3_server.endpoint_url, region=REGION,
            access_key_id=s3_server.reader.access_key_id, secret_access_key=s3_server.reader.secret_access_key,
        )
        assert options["aws_endpoint_url"] == s3_server.endpoint_url and options["aws_allow_http"] == "true"
        lake = ObjectStoreLake(s3_lake, {**options, "aws_metadata_endpoint": f"http://127.0.0.1:{trap.server_port}"})
        dataset = get_dataset(JOURNEYS)
        assert lake.scan(dataset, lake.list_batches(dataset)).collect().height > 0
    finally:
        trap.shutdown()
    assert asked == []


def test_s3_missing_bucket_is_one_clear_line(
    s3_server: MotoServer, s3_reader_env: None, tmp_path: Path
) -> None:
    url = "s3://ajo-no-such-bucket/aep/lake"
    text = config(tmp_path / "exports", s3_source(s3_server, url))
    with pytest.raises(LakeError) as caught:
        open_lake(parse_config(text).source, tmp_path).list_batches(get_dataset(JOURNEYS))
    message = str(caught.value)
    assert "\n" not in message and url in message and "bucket ajo-no-such-bucket does not exist" in message, message
    run = run_export(text, tmp_path / "home" / "lake", dataflow="daily", partition_key="2026-11-01")
    assert not run.success and "bucket ajo-no-such-bucket does not exist" in (run.error or ""), run.error


def test_s3_wrong_credentials_are_one_clear_line_without_the_secret(
    s3_server: MotoServer, s3_lake: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert s3_server.reader is not None
    monkeypatch.setenv("LAKE_S3_KEY_ID", s3_server.reader.access_key_id)
    monkeypatch.setenv("LAKE_S3_SECRET", "not-the-secret-0123456789")
    text = config(tmp_path / "exports", s3_source(s3_server, s3_lake))
    with pytest.raises(LakeError) as caught:
        open_lake(parse_config(text).source, tmp_path).list_batches(get_dataset(FEEDBACK))
    message = str(caught.value)
    assert "\n" not in message and s3_lake in message and "credentials were refused" in message, message
    assert "SignatureDoesNotMatch" in message and "not-the-secret" not in message
    monkeypatch.setenv("LAKE_S3_KEY_ID", "AKIANOSUCHKEY0000000")
    with pytest.raises(LakeError, match="credentials were refused .*InvalidAccessKeyId"):
        open_lake(parse_config(text).source, tmp_path).list_batches(get_dataset(FEEDBACK))


# --- Azure (Azurite) ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azure_lake(azurite: Azurite, grown_lake: Path) -> str:
    """The grown lake copied with the Azure SDK to a fresh container under a prefix; returns the lake URL."""
    container = azurite.create_container()
    for key, path in lake_files(grown_lake):
        with path.open("rb") as stream:
            container.upload_blob(f"aep/lake/{key}", stream)
    return f"az://{container.container_name}/aep/lake"


def azure_source(server: Azurite, url: str) -> dict:
    return {
        "type": "object_store",
        "url": url,
        "account_name": server.account,
        "account_key": "${LAKE_AZURE_KEY}",
        "blob_endpoint": server.blob_endpoint,
    }


def test_azure_lake_exports_exactly_what_the_local_lake_exports(
    azurite: Azurite, azure_lake: str, local_exports: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAKE_AZURE_KEY", azurite.account_key)
    exports = tmp_path / "exports"
    remote = export_windows(config(exports, azure_source(azurite, azure_lake)), tmp_path / "home" / "lake")
    assert_same_exports(local_exports, remote, exports)


def test_azure_lake_as_abfss_url(azurite: Azurite, azure_lake: str, grown_lake: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKE_AZURE_KEY", azurite.account_key)
    container, prefix = azure_lake.removeprefix("az://").split("/", 1)
    url = f"abfss://{container}@{azurite.account}.dfs.core.windows.net/{prefix}"
    source = {k: v for k, v in azure_source(azurite, url).items() if k != "account_name"}
    lake = open_lake(parse_config(config(Path("/unused"), source)).source, Path("/unused"))
    dataset = get_dataset(FEEDBACK)
    local = LocalLake(grown_lake)
    got = lake.scan(dataset, lake.list_batches(dataset)).collect()
    assert got.equals(local.scan(dataset, local.list_batches(dataset)).collect())


def test_azure_missing_container_and_wrong_key_are_one_clear_line(
    azurite: Azurite, azure_lake: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAKE_AZURE_KEY", azurite.account_key)
    missing = "az://ajo-no-such-container/aep/lake"
    text = config(tmp_path, azure_source(azurite, missing))
    with pytest.raises(LakeError) as caught:
        open_lake(parse_config(text).source, tmp_path).list_batches(get_dataset(JOURNEYS))
    message = str(caught.value)
    assert "\n" not in message and missing in message and "container ajo-no-such-container does not exist" in message

    wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="  # valid base64, not the account's key
    monkeypatch.setenv("LAKE_AZURE_KEY", wrong)
    text = config(tmp_path, azure_source(azurite, azure_lake))
    with pytest.raises(LakeError) as caught:
        open_lake(parse_config(text).source, tmp_path).list_batches(get_dataset(JOURNEYS))
    message = str(caught.value)
    assert "\n" not in message and azure_lake in message and "credentials were refused" in message, message
    assert wrong not in message


# --- GCS (fake-gcs-server) ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcs_lake(fake_gcs_server: FakeGcsServer, grown_lake: Path) -> str:
    """The grown lake copied with the Google SDK to a fresh bucket under a prefix; returns the lake URL."""
    bucket = fake_gcs_server.client().bucket(fake_gcs_server.create_bucket())
    for key, path in lake_files(grown_lake):
        bucket.blob(f"aep/lake/{key}").upload_from_filename(str(path))
    return f"gs://{bucket.name}/aep/lake"


def gcs_source(server: FakeGcsServer, url: str) -> dict:
    return {"type": "object_store", "url": url, "endpoint_url": server.endpoint_url,
            "service_account_json": "${LAKE_GCS_KEY}"}


def test_gcs_lake_exports_exactly_what_the_local_lake_exports(
    fake_gcs_server: FakeGcsServer, gcs_lake: str, local_exports: dict, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("LAKE_GCS_KEY", '{"type": "emulator"}')
    exports = tmp_path / "exports"
    remote = export_windows(config(exports, gcs_source(fake_gcs_server, gcs_lake)), tmp_path / "home" / "lake")
    assert_same_exports(local_exports, remote, exports)


def test_gcs_missing_bucket_is_one_clear_line(fake_gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """fake-gcs-server answers an object GET in a missing bucket with a bare 404 (GCS says NoSuchBucket), so the
    line names the missing batch index; either way it names the lake's URL and nothing else."""
    monkeypatch.setenv("LAKE_GCS_KEY", '{"type": "emulator"}')
    missing = "gs://ajo-no-such-bucket/aep/lake"
    text = config(tmp_path, gcs_source(fake_gcs_server, missing))
    with pytest.raises(LakeError) as caught:
        open_lake(parse_config(text).source, tmp_path).list_batches(get_dataset(JOURNEYS))
    message = str(caught.value)
    assert "\n" not in message and missing in message, message
    assert "is missing" in message or "does not exist" in message, message


# --- configuration --------------------------------------------------------------------------------------------


def test_source_defaults_to_the_embedded_local_lake(tmp_path: Path) -> None:
    parsed = parse_config(config(tmp_path))
    assert parsed.source.type == "local" and parsed.source.lake_root(tmp_path) == tmp_path / "lake"
    assert isinstance(open_lake(parsed.source, tmp_path), LocalLake)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"url": "ftp://bucket/lake"}, "source.url = 'ftp://bucket/lake': use s3://bucket/prefix"),
        ({"url": "s3://Bad_Bucket/lake"}, "source.url = 's3://Bad_Bucket/lake': S3 bucket names are"),
        ({"url": "s3://lake-bucket/../up"}, "source.url = 's3://lake-bucket/../up': the prefix may hold only"),
        ({"url": "s3://lake-bucket/lake"}, "source.access_key_id: a s3:// lake needs access_key_id"),
        ({"url": "s3://lake-bucket/lake", "access_key_id": "${K}"}, "source.secret_access_key: a s3:// lake needs"),
        ({"url": "s3://lake-bucket/lake", "access_key_id": "AKIAINLINE", "secret_access_key": "${S}"},
         "source.access_key_id: inline secrets are not allowed"),
        ({"url": "s3://lake-bucket/lake", "access_key_id": "${K}", "secret_access_key": "${S}", "account_key": "${A}"},
         "source.account_key = '${A}': account_key applies only to az://, abfss:// lake URLs"),
        ({"url": "s3://lake-bucket/lake", "access_key_id": "${K}", "secret_access_key": "${S}",
          "endpoint_url": "127.0.0.1:9000"}, "source.endpoint_url = '127.0.0.1:9000': endpoints are http(s)://"),
        ({"url": "az://lake-container/lake", "account_key": "${A}"}, "source.account_name: a az:// lake needs"),
        ({"url": "abfss://lake@acct.dfs.core.windows.net/x", "account_key": "${A}", "account_name": "other"},
         "source.account_name = 'other': is not the url's account 'acct'"),
        ({"url": "gs://lake-bucket/lake"}, "source.service_account_json: a gs:// lake needs service_account_json"),
    ],
)
def test_source_config_errors_name_the_field_and_value(tmp_path: Path, source: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(tmp_path, {"type": "object_store", **source}))
    assert expected in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_object_store_storage_options_are_always_explicit() -> None:
    s3 = storage_options("s3://lake-bucket/x", region="eu-west-1", access_key_id="k", secret_access_key="s")
    assert s3["aws_endpoint_url"] == "https://s3.eu-west-1.amazonaws.com" and s3["aws_allow_http"] == "false"
    az = storage_options("abfss://lake@acct.dfs.core.windows.net/x", account_key="a2V5")
    assert az["azure_storage_endpoint"] == "https://acct.blob.core.windows.net" and az["azure_allow_http"] == "false"
    gs = json.loads(storage_options("gs://lake-bucket/x", service_account_json='{"type": "emulator"}',
                                    endpoint_url="http://127.0.0.1:9023")["google_service_account_key"])
    assert gs["disable_oauth"] is True and gs["gcs_base_url"] == "http://127.0.0.1:9023"
    with pytest.raises(LakeError, match="needs endpoint_url"):
        storage_options("gs://lake-bucket/x", service_account_json='{"type": "emulator"}')
    with pytest.raises(LakeError, match="secret_access_key is not set"):
        storage_options("s3://lake-bucket/x", access_key_id="k", secret_access_key="")
