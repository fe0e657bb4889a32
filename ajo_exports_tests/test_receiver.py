"""Receiver-side verification (`ajo-verify-delivery`, `ajo-exports verify-delivery`) against real servers.

Each destination exports a window for real through Dagster; the receiver then verifies it with the store's own SDK
(complete), and after each tampering with the store through its SDK (a part overwritten with other bytes of the
same size, a part deleted, a stray added, the manifest deleted) it names the file and exits 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from ajo_exports.catalog import get_dataset
from ajo_exports.cli import main as cli_main
from ajo_exports.destinations.adls_gen2 import AdlsGen2DestinationConfig
from ajo_exports.receiver import DeliveryReport, ReceiverError, main, verify_delivery
from ajo_exports_tests.helpers import ExportRun, local_config, run_export
from ajo_exports_tests.pgp import KeyPair
from ajo_exports_tests.servers.azurite import Azurite
from ajo_exports_tests.servers.gcs import EMULATOR_KEY, GcsEmulator
from ajo_exports_tests.servers.s3 import MotoServer
from ajo_exports_tests.servers.sshd import Sshd
from ajo_exports_tests.test_destination_adls_gen2 import SECRET_ENV as ADLS_SECRET_ENV
from ajo_exports_tests.test_destination_adls_gen2 import adls_config, azurite_credential
from ajo_exports_tests.test_destination_azure_blob import SECRET_ENV as BLOB_SECRET_ENV
from ajo_exports_tests.test_destination_azure_blob import blob_config
from ajo_exports_tests.test_destination_dlz import DLZ_CONTAINER, dlz_config, landing_zone
from ajo_exports_tests.test_destination_dlz import SECRET_ENV as DLZ_SECRET_ENV
from ajo_exports_tests.test_destination_gcs import KEY_ENV as GCS_KEY_ENV
from ajo_exports_tests.test_destination_gcs import gcs_config
from ajo_exports_tests.test_destination_s3 import s3_config, use_keys
from ajo_exports_tests.test_destination_sftp import sftp_config

EXPORT_TIME = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
FEEDBACK = "ajo_message_feedback_event_dataset"
WINDOW = f"{get_dataset(FEEDBACK).dataset_id}/exportTime={EXPORT_TIME:%Y%m%d%H%M}"
BIN = Path(sys.executable).parent
STRAY = "part-99999-00000000-0000-0000-0000-000000000000-c000.gz.parquet"


@dataclass
class Sdk:
    """The store's own SDK, keyed by paths relative to the destination folder (as the run's metadata keys are)."""

    read: Callable[[str], bytes]
    write: Callable[[str, bytes], None]
    delete: Callable[[str], None]


def cli(uri: str, *args: str, env: dict[str, str] | None = None,
        command: tuple[str, ...] = (str(BIN / "ajo-verify-delivery"),)) -> subprocess.CompletedProcess:
    """The console script in a process of its own, as a receiver runs it."""
    return subprocess.run([*command, uri, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120, check=False)


def problem(report: DeliveryReport, name: str, *needles: str) -> str:
    """The one problem line naming `name` (and saying each needle)."""
    lines = [line for line in report.problems if line.startswith(name) and all(n in line for n in needles)]
    assert not report.complete and len(lines) == 1, report.problems
    return lines[0]


def verify_and_tamper(run: ExportRun, sdk: Sdk, verify: Callable[[str], DeliveryReport], args: list[str],
                      env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Complete as exported (the console script in a process of its own, and the function); then each tampering is
    named, and the command exits 1. `args` and `env` are the command's options and credentials."""
    assert run.success, run.error
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    meta = run.exports[FEEDBACK]
    folder_uri, manifest_uri, keys = meta["folder_uri"], meta["manifest_uri"], meta["keys"]
    assert unquote(folder_uri).endswith(WINDOW) and len(keys) >= 2, meta

    done = cli(folder_uri + "/", *args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"complete: {folder_uri}/: {meta['files']} files, {meta['rows']} rows"), done.stdout
    for uri in (folder_uri, manifest_uri):
        report = verify(uri)
        assert report.complete and not report.problems, report.problems
        assert (report.files, report.rows, report.bytes) == (meta["files"], meta["rows"], meta["bytes"])
        assert report.manifests == [manifest_uri]

    first, second = keys[0], keys[1]
    data = sdk.read(first)
    sdk.write(first, bytes(byte ^ 0xFF for byte in data))  # other bytes, the same size
    problem(verify(folder_uri), first.rsplit("/", 1)[1], "sha256 expected")

    sdk.delete(second)
    report = verify(folder_uri)
    problem(report, second.rsplit("/", 1)[1], "missing")
    assert len(report.problems) == 2

    window = first.rsplit("/", 1)[0]
    sdk.write(f"{window}/{STRAY}", b"not listed in any manifest")
    problem(verify(folder_uri), STRAY, "listed in no manifest")

    manifest_name = meta["manifest_key"].rsplit("/", 1)[1]
    sdk.delete(meta["manifest_key"])
    problem(verify(manifest_uri), manifest_name, "manifest is missing")
    status, out = in_process(manifest_uri, *args)
    assert status == 1, out
    lines = out.splitlines()
    assert lines[-1].startswith(f"incomplete: {manifest_uri}: ") and "Traceback" not in out, out
    assert [line for line in lines if line.startswith(manifest_name)], out
    assert [line for line in lines if line.startswith(STRAY)], out
    problem(verify(folder_uri), f"{folder_uri}/: no manifest")


def in_process(*argv: str) -> tuple[int, str]:
    """`ajo-verify-delivery` run in this process: its status and standard output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    return status, out.getvalue()


def local_sdk(root: Path) -> Sdk:
    return Sdk(read=lambda key: (root / key).read_bytes(), write=lambda key, data: (root / key).write_bytes(data),
               delete=lambda key: (root / key).unlink())


# --- the receiver's module and its command ---------------------------------------------------------------------


def test_the_receiver_module_does_not_import_dagster() -> None:
    code = ("import sys, ajo_exports.receiver; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dagster','dagster_aws','dagster_azure',"
            "'dagster_gcp')], sorted(m for m in sys.modules if m.startswith('dagster'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_bad_arguments_and_unreachable_stores_exit_2_in_one_line(
    s3_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert s3_server.reader is not None
    keys = {"AWS_ACCESS_KEY_ID": s3_server.reader.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3_server.reader.secret_access_key}
    closed = f"http://127.0.0.1:{s3_server.port + 1 if s3_server.port < 65535 else 1}"
    wrong = "WrongSecretWrongSecretWrongSecret0123456"
    done = cli("s3://bucket/x/", "--endpoint-url", s3_server.endpoint_url, env={**keys, "AWS_SECRET_ACCESS_KEY": wrong})
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr == "ajo-verify-delivery: error: cannot read s3://bucket/x/: SignatureDoesNotMatch (HTTP 403)\n"
    other_sas = "https://other.blob.core.windows.net/c?sv=1&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
    cases = [
        (["ftp://host/x"], {}, "unknown URI scheme"),
        (["s3://bucket/x", "--endpoint-url", s3_server.endpoint_url], {"AWS_ACCESS_KEY_ID": ""}, "AWS_ACCESS_KEY_ID"),
        (["s3://no-such-bucket-ajo/x/", "--endpoint-url", s3_server.endpoint_url], keys, "NoSuchBucket"),
        (["s3://bucket/x/", "--endpoint-url", closed], keys, "could not be reached"),
        (["sftp://u@127.0.0.1:1/x", "--endpoint-url", "http://x"], {}, "does not apply"),
        ([str(tmp_path), "--config", str(tmp_path / "missing.yaml")], {}, "file not found"),
        (["https://acct.blob.core.windows.net/c/x/"], {"AZURE_STORAGE_SAS_URL": other_sas}, "the SAS URL is for"),
        ([], {}, "the following arguments are required: uri"),
    ]
    for argv, env, needle in cases:
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            status, out = in_process(*argv)
        err = capsys.readouterr().err
        assert status == 2 and out == "", (argv, out, err)
        assert err.count("\n") == 1 and err.startswith("ajo-verify-delivery: error: ") and needle in err, err
        assert wrong not in err and s3_server.reader.secret_access_key not in err and "sig=" not in err


# --- local folder: Parquet, NDJSON, PGP -----------------------------------------------------------------------


def test_local_folder_through_both_commands(tmp_path: Path, lake_root: Path, instance, monkeypatch, capsys) -> None:
    exports = tmp_path / "exports"
    config = local_config(exports, datasets=[FEEDBACK], max_rows_per_file=60)
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    folder = Path(unquote(urlsplit(run.exports[FEEDBACK]["folder_uri"]).path))
    assert folder == exports / WINDOW
    done = cli(str(folder), "--json", command=(str(BIN / "ajo-exports"), "verify-delivery"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) | {"problems": []} == {
        "uri": str(folder), "complete": True, "problems": [], "manifests": [run.exports[FEEDBACK]["manifest_uri"]],
        **{key: run.exports[FEEDBACK][key] for key in ("files", "rows", "bytes")},
    }
    (folder / f".{STRAY}.part").write_bytes(b"an upload in flight")
    report = verify_delivery(str(folder))
    problem(report, f".{STRAY}.part", "temporary upload file")
    assert cli_main(["verify-delivery", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f".{STRAY}.part: a temporary upload file"), out
    assert cli_main(["verify-delivery", "ftp://x/y"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("ajo-exports: error: ftp://x/y: unknown URI scheme") and err.count("\n") == 1, err
    (folder / f".{STRAY}.part").unlink()
    verify_and_tamper(run, local_sdk(exports), verify_delivery, [], {}, monkeypatch)


def test_rows_are_counted_in_ndjson_and_parquet_files(tmp_path: Path, lake_root: Path, instance) -> None:
    for file_format in ("json", "parquet"):
        exports = tmp_path / file_format
        config = local_config(exports, datasets=[FEEDBACK], max_rows_per_file=60, format=file_format)
        run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
        assert run.success, run.error
        manifest_path = exports / run.exports[FEEDBACK]["manifest_key"]
        report = verify_delivery(str(manifest_path))
        assert report.complete and report.rows == run.exports[FEEDBACK]["rows"], report.problems
        manifest = json.loads(manifest_path.read_text())
        first = manifest["exportResults"][0]
        assert first["name"].endswith(".json.gz" if file_format == "json" else ".gz.parquet")
        first["rows"] += 1  # the manifest now claims a row the file does not hold
        manifest_path.write_text(json.dumps(manifest))
        report = verify_delivery(manifest_path.as_uri())
        problem(report, first["name"], f"rows expected {first['rows']}, found {first['rows'] - 1}")
        problem(report, manifest_path.name, "totalRows expected")


def test_pgp_encrypted_export_verifies_by_size_and_sha256(
    tmp_path: Path, lake_root: Path, instance, key_pair: KeyPair
) -> None:
    exports = tmp_path / "exports"
    config = yaml.safe_load(local_config(exports, datasets=[FEEDBACK], max_rows_per_file=60))
    config["destinations"][0]["pgp_public_key"] = key_pair.public_b64
    run = run_export(yaml.safe_dump(config), lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    assert run.success, run.error
    keys = run.exports[FEEDBACK]["keys"]
    assert keys and all(key.endswith(".gz.parquet.gpg") for key in keys)
    report = verify_delivery(run.exports[FEEDBACK]["folder_uri"])
    assert report.complete, report.problems
    assert (report.files, report.rows) == (len(keys), run.exports[FEEDBACK]["rows"])
    path = exports / keys[0]
    path.write_bytes(bytes(byte ^ 0x01 for byte in path.read_bytes()))
    problem(verify_delivery(run.exports[FEEDBACK]["folder_uri"]), path.name, "sha256 expected")


# --- the six remote destinations ------------------------------------------------------------------------------


def test_amazon_s3(s3_server: MotoServer, lake_root: Path, instance, monkeypatch) -> None:
    """The receiver holds read-only keys (s3:GetObject, s3:ListBucket) from the environment."""
    bucket = s3_server.create_bucket()
    use_keys(monkeypatch, s3_server.writer)
    config = s3_config(bucket, s3_server.endpoint_url, datasets=[FEEDBACK], max_rows_per_file=60)
    run = run_export(config, lake_root, dataflow="to-s3", export_time=EXPORT_TIME, instance=instance)
    assert run.exports[FEEDBACK]["folder_uri"] == f"s3://{bucket}/exports/ajo/{WINDOW}"
    assert s3_server.reader is not None
    env = {"AWS_ACCESS_KEY_ID": s3_server.reader.access_key_id,
           "AWS_SECRET_ACCESS_KEY": s3_server.reader.secret_access_key}
    sdk, full = s3_server.s3(), lambda key: f"exports/ajo/{key}"
    verify_and_tamper(
        run,
        Sdk(read=lambda key: sdk.get_object(Bucket=bucket, Key=full(key))["Body"].read(),
            write=lambda key, data: sdk.put_object(Bucket=bucket, Key=full(key), Body=data),
            delete=lambda key: sdk.delete_object(Bucket=bucket, Key=full(key))),
        lambda uri: verify_delivery(uri, endpoint_url=s3_server.endpoint_url),
        ["--endpoint-url", s3_server.endpoint_url], env, monkeypatch,
    )


def blob_sdk(container, folder: str) -> Sdk:
    return Sdk(read=lambda key: container.download_blob(f"{folder}/{key}").readall(),
               write=lambda key, data: container.upload_blob(f"{folder}/{key}", data, overwrite=True),
               delete=lambda key: container.delete_blob(f"{folder}/{key}"))


def test_azure_blob_with_the_destination_of_exports_yaml(
    azurite: Azurite, lake_root: Path, instance, tmp_path: Path, monkeypatch
) -> None:
    container = azurite.create_container()
    monkeypatch.setenv(BLOB_SECRET_ENV, azurite.connection_string())
    config = blob_config(container.container_name, datasets=[FEEDBACK], max_rows_per_file=60)
    run = run_export(config, lake_root, dataflow="to-blob", export_time=EXPORT_TIME, instance=instance)
    assert run.exports[FEEDBACK]["folder_uri"] == (
        f"{azurite.blob_endpoint}/{container.container_name}/exports/ajo/{WINDOW}"
    )
    path = tmp_path / "exports.yaml"
    path.write_text(config)
    verify_and_tamper(
        run, blob_sdk(container, "exports/ajo"),
        lambda uri: verify_delivery(uri, config=path, destination="blob"),
        ["--config", str(path), "--destination", "blob"], {}, monkeypatch,
    )


def test_adls_gen2_abfss_uri_through_the_blob_endpoint(azurite: Azurite, lake_root: Path, instance,
                                                       monkeypatch) -> None:
    """The receiver reads `abfss://` through the Blob endpoint given explicitly, with the account key."""
    monkeypatch.setattr(AdlsGen2DestinationConfig, "credential", azurite_credential)
    container = azurite.create_container()
    monkeypatch.setenv(ADLS_SECRET_ENV, azurite.account_key)
    config = adls_config(azurite, container.container_name, datasets=[FEEDBACK], max_rows_per_file=60)
    run = run_export(config, lake_root, dataflow="to-lake", export_time=EXPORT_TIME, instance=instance)
    assert run.exports[FEEDBACK]["folder_uri"] == (
        f"abfss://{container.container_name}@{azurite.account}.dfs.core.windows.net/landing/ajo/{WINDOW}"
    )
    verify_and_tamper(
        run, blob_sdk(container, "landing/ajo"),
        lambda uri: verify_delivery(uri, endpoint_url=azurite.blob_endpoint),
        ["--endpoint-url", azurite.blob_endpoint], {"AZURE_STORAGE_KEY": azurite.account_key}, monkeypatch,
    )


def test_data_landing_zone_with_a_read_and_list_sas_url(azurite: Azurite, lake_root: Path, instance,
                                                        monkeypatch) -> None:
    container = landing_zone(azurite)
    folder = f"receiver-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(DLZ_SECRET_ENV, azurite.container_sas_url(DLZ_CONTAINER))
    config = dlz_config(folder, datasets=[FEEDBACK], max_rows_per_file=60)
    run = run_export(config, lake_root, dataflow="to-dlz", export_time=EXPORT_TIME, instance=instance)
    assert run.exports[FEEDBACK]["folder_uri"] == f"{azurite.blob_endpoint}/{DLZ_CONTAINER}/{folder}/{WINDOW}"
    env = {"AZURE_STORAGE_SAS_URL": azurite.container_sas_url(DLZ_CONTAINER, permission="rl")}
    verify_and_tamper(run, blob_sdk(container, folder), verify_delivery, [], env, monkeypatch)


def test_google_cloud_storage(gcs_server: GcsEmulator, lake_root: Path, instance, monkeypatch) -> None:
    bucket_name = gcs_server.create_bucket()
    monkeypatch.setenv(GCS_KEY_ENV, EMULATOR_KEY)
    config = gcs_config(bucket_name, gcs_server.endpoint_url, datasets=[FEEDBACK], max_rows_per_file=60)
    run = run_export(config, lake_root, dataflow="to-gcs", export_time=EXPORT_TIME, instance=instance)
    assert run.exports[FEEDBACK]["folder_uri"] == f"gs://{bucket_name}/exports/ajo/{WINDOW}"
    bucket = gcs_server.client().bucket(bucket_name)
    verify_and_tamper(
        run,
        Sdk(read=lambda key: bucket.blob(f"exports/ajo/{key}").download_as_bytes(),
            write=lambda key, data: bucket.blob(f"exports/ajo/{key}").upload_from_string(data),
            delete=lambda key: bucket.blob(f"exports/ajo/{key}").delete()),
        lambda uri: verify_delivery(uri, endpoint_url=gcs_server.endpoint_url),
        ["--endpoint-url", gcs_server.endpoint_url], {"GCS_SERVICE_ACCOUNT_JSON": EMULATOR_KEY}, monkeypatch,
    )


def test_sftp_with_a_key_and_known_hosts(sftp_server: Sshd, lake_root: Path, instance, monkeypatch) -> None:
    folder = f"ajo-receiver-tests/{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AJO_TEST_SFTP_KEY", sftp_server.private_key)
    config = sftp_config(sftp_server, folder, secret_env="AJO_TEST_SFTP_KEY", secret_field="private_key",
                         datasets=[FEEDBACK], max_rows_per_file=60)
    try:
        run = run_export(config, lake_root, dataflow="to-sftp", export_time=EXPORT_TIME, instance=instance)
        root = f"{sftp_server.home}/{folder}"
        base = f"sftp://{sftp_server.username}@{sftp_server.host}:{sftp_server.port}"
        assert run.exports[FEEDBACK]["folder_uri"] == f"{base}{root}/{WINDOW}"
        env = {"SFTP_PRIVATE_KEY": sftp_server.private_key, "SFTP_KNOWN_HOSTS": sftp_server.known_hosts()}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        # the configured location's form, with the login folder as /~/
        assert verify_delivery(f"{base}/~/{folder}/{WINDOW}/").complete

        def write(key: str, data: bytes) -> None:
            with sftp_server.client() as sftp, sftp.open(f"{root}/{key}", "wb") as handle:
                handle.write(data)

        def delete(key: str) -> None:
            with sftp_server.client() as sftp:
                sftp.remove(f"{root}/{key}")

        def read(key: str) -> bytes:
            with sftp_server.client() as sftp, sftp.open(f"{root}/{key}", "rb") as handle:
                return handle.read()

        verify_and_tamper(run, Sdk(read, write, delete), verify_delivery, [], env, monkeypatch)
        other_host = f"[{sftp_server.host}]:{sftp_server.port + 1}"
        monkeypatch.setenv("SFTP_KNOWN_HOSTS", sftp_server.known_hosts().replace(sftp_server.host_id, other_host))
        with pytest.raises(ReceiverError, match="cannot connect: .*not known"):
            verify_delivery(run.exports[FEEDBACK]["folder_uri"])
    finally:
        shutil.rmtree(sftp_server.home / folder.split("/")[0], ignore_errors=True)
