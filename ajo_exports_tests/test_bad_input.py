"""Bad input, one case at a time: every mistake a person can make on the command line, in exports.yaml, in the lake
or at a destination ends as exactly one clear error line naming what to fix, a non-zero exit, no traceback, no
secret, and nothing of the window left at the destination.

Each case prepares a fresh home (a copy of the session's sample lake and a config exporting `journeys` to the
destination of the case), runs the CLI (in this process, or as the installed console script for a representative
subset, so a real traceback would show), then lists the destination with the store's own SDK or the filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from ajo_exports.catalog import DATASETS, Tier, get_dataset
from ajo_exports.cli import main
from ajo_exports_tests.figures import add, record
from ajo_exports_tests.leaks import SECRETS, register_secret
from ajo_exports_tests.servers.gcs import EMULATOR_KEY
from ajo_exports_tests.servers.sshd import Sshd

JOURNEYS = "journeys"
ULTIMATE = next(d.slug for d in DATASETS if d.tier is Tier.ULTIMATE)
START = "2026-11-01T02:00:00Z"
SECRET_ENV = "AJO_BAD_INPUT_SECRET"
KEY_ENV = "AJO_BAD_INPUT_KEY"
UNSET_ENV = "AJO_BAD_INPUT_NEVER_SET"
INLINE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYBADINPUT"
register_secret(INLINE_SECRET)
EXE = Path(sys.executable).parent / "ajo-exports"
SUBPROCESS_ENV = {"AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "true", "DAGSTER_DISABLE_TELEMETRY": "1"}
DISK_BLOCKS = 8  # the SFTP server's file size limit in 512-byte blocks: a part file does not fit


def latest_closed() -> str:
    """The latest closed window of a daily dataflow starting at 02:00 UTC."""
    return f"{(datetime.now(UTC) - timedelta(hours=2)).date() - timedelta(days=1):%Y-%m-%d}"


@dataclass
class Env:
    """One case's world: its home, config file, destination and how to list what landed there."""

    tmp: Path
    home: Path
    config: Path
    destination: dict
    organization: dict | None = None
    flow: dict = field(default_factory=dict)
    listing: Callable[[], list[str]] | None = None  # every key or file at the destination, relative names
    env: dict[str, str] = field(default_factory=dict)  # secrets the destination reads

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    def batch(self, index: int = 0, slug: str = JOURNEYS) -> Path:
        entries = json.loads((self.lake / slug / "_batches.json").read_text())
        return self.lake / slug / entries[index]["file"]

    def write_config(self) -> None:
        flows = [
            {"name": "once", "destination": self.destination["name"], "datasets": [JOURNEYS], **self.flow},
            {"name": "daily", "destination": self.destination["name"], "datasets": [JOURNEYS],
             "schedule": {"frequency": "daily", "start": START, "end": "2027-05-01T00:00:00Z"}},
        ]
        config: dict = {"destinations": [self.destination], "dataflows": flows, "execution": {"max_concurrent": 1}}
        if self.organization:
            config = {"organization": self.organization, **config}
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def words(self, text: str) -> str:
        return text.format(tmp=self.tmp, home=self.home, config=self.config, lake=self.lake,
                           latest=latest_closed(), tomorrow=f"{datetime.now(UTC).date() + timedelta(days=1)}")


Prepare = Callable[[Env, pytest.FixtureRequest], None]


def case(case_id: str, category: str, argv: str, *needles: str, prepare: Prepare | None = None,
         process: bool = False, absent: tuple[str, ...] = ()):
    """One bad input: the command line, the words its one error line must hold, and text it must not hold."""
    return pytest.param(category, argv, needles, prepare, process, absent, id=case_id)


# --- what each case changes ---------------------------------------------------------------------------------------

def config_text(text: str) -> Prepare:
    def prepare(env: Env, request: pytest.FixtureRequest) -> None:
        env.config.write_text(text)
    return prepare


def destination(**fields: object) -> Prepare:
    def prepare(env: Env, request: pytest.FixtureRequest) -> None:
        merged = {**env.destination, **fields}
        env.destination = {key: value for key, value in merged.items() if value is not None}
        env.write_config()
    return prepare


def flow(**fields: object) -> Prepare:
    def prepare(env: Env, request: pytest.FixtureRequest) -> None:
        env.flow.update(fields)
        env.write_config()
    return prepare


def prime_org_with_ultimate_dataset(env: Env, request: pytest.FixtureRequest) -> None:
    env.organization = {"name": "acme", "product_tier": "prime"}
    env.flow["datasets"] = [ULTIMATE]
    env.write_config()


def hourly_every_5(env: Env, request: pytest.FixtureRequest) -> None:
    env.write_config()
    config = yaml.safe_load(env.config.read_text())
    config["dataflows"][1]["schedule"].update(frequency="hourly", every_hours=5)
    env.config.write_text(yaml.safe_dump(config, sort_keys=False))


def corrupt_batch(env: Env, request: pytest.FixtureRequest) -> None:
    env.batch(0).write_bytes(b"PAR1 this is not parquet")


def rename_column(env: Env, request: pytest.FixtureRequest) -> None:
    path = env.batch(0)
    pl.read_parquet(path).rename({"_id": "id"}).write_parquet(path)


def retype_column(env: Env, request: pytest.FixtureRequest) -> None:
    path = env.batch(1)
    pl.read_parquet(path).with_columns(pl.int_range(pl.len()).alias("_id")).write_parquet(path)


def remove_index(env: Env, request: pytest.FixtureRequest) -> None:
    (env.lake / JOURNEYS / "_batches.json").unlink()


def index_not_json(env: Env, request: pytest.FixtureRequest) -> None:
    (env.lake / JOURNEYS / "_batches.json").write_text('[{"batchId": ')


def index_unreadable(env: Env, request: pytest.FixtureRequest) -> None:
    """Mode 000 stops no one when the tests run as root (CI does), so a folder stands where the file should be:
    open() fails the same way for every user."""
    index = env.lake / JOURNEYS / "_batches.json"
    index.unlink()
    index.mkdir()


def index_bad_time(env: Env, request: pytest.FixtureRequest) -> None:
    index = env.lake / JOURNEYS / "_batches.json"
    entries = json.loads(index.read_text())
    entries[1]["ingestedAt"] = "yesterday"
    index.write_text(json.dumps(entries))


def remove_batch_file(env: Env, request: pytest.FixtureRequest) -> None:
    env.batch(1).unlink()


def empty_lake(env: Env, request: pytest.FixtureRequest) -> None:
    shutil.rmtree(env.lake)


# --- destinations in a bad state (real servers) -----------------------------------------------------------------

def s3_destination(*, bucket_exists: bool, reader: bool) -> Prepare:
    def prepare(env: Env, request: pytest.FixtureRequest) -> None:
        server = request.getfixturevalue("s3_server")
        keys = server.reader if reader else server.writer
        bucket = server.create_bucket() if bucket_exists else f"ajo-missing-{uuid.uuid4().hex[:12]}"
        env.destination = {"name": "out", "type": "amazon_s3", "bucket": bucket, "folder": "exports",
                           "endpoint_url": server.endpoint_url, "region": "us-east-1",
                           "access_key_id": f"${{{KEY_ENV}}}", "secret_access_key": f"${{{SECRET_ENV}}}"}
        env.env = {KEY_ENV: keys.access_key_id, SECRET_ENV: keys.secret_access_key}
        env.write_config()

        def listing() -> list[str]:
            names = [b["Name"] for b in server.s3().list_buckets()["Buckets"]]
            return server.keys(bucket) if bucket in names else []
        env.listing = listing
    return prepare


def azure_container_missing(env: Env, request: pytest.FixtureRequest) -> None:
    azurite = request.getfixturevalue("azurite")
    container = f"missing-{uuid.uuid4().hex[:12]}"
    env.destination = {"name": "out", "type": "azure_blob", "container": container, "folder": "exports",
                       "connection_string": f"${{{SECRET_ENV}}}"}
    env.env = {SECRET_ENV: azurite.connection_string()}
    env.write_config()

    def listing() -> list[str]:
        client = azurite.service().get_container_client(container)
        return [blob.name for blob in client.list_blobs()] if client.exists() else []
    env.listing = listing


def gcs_bucket_missing(env: Env, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("gcs_server")
    bucket = f"ajo-missing-{uuid.uuid4().hex[:12]}"
    env.destination = {"name": "out", "type": "google_cloud_storage", "bucket": bucket, "folder": "exports",
                       "endpoint_url": server.endpoint_url, "service_account_json": f"${{{KEY_ENV}}}"}
    env.env = {KEY_ENV: EMULATOR_KEY}
    env.write_config()

    def listing() -> list[str]:
        client = server.client()
        return server.keys(bucket) if client.lookup_bucket(bucket) is not None else []
    env.listing = listing


def sftp_destination(server: Sshd, env: Env, folder: str) -> None:
    env.destination = {"name": "out", "type": "sftp", "host": server.host, "port": server.port,
                       "username": server.username, "private_key": f"${{{KEY_ENV}}}",
                       "known_hosts": server.known_hosts(), "folder": folder}
    env.env = {KEY_ENV: server.private_key}
    env.write_config()

    def listing() -> list[str]:
        found: list[str] = []
        with server.client() as sftp:
            todo = [folder]
            while todo:
                current = todo.pop()
                try:
                    entries = sftp.listdir_attr(current)
                except OSError:
                    continue
                for entry in entries:
                    path = f"{current}/{entry.filename}"
                    if entry.st_mode is not None and entry.st_mode & 0o040000:
                        todo.append(path)
                    else:
                        found.append(path.removeprefix(folder + "/"))
        return found
    env.listing = listing


def sftp_disk_full(env: Env, request: pytest.FixtureRequest) -> None:
    sftp_destination(request.getfixturevalue("sftp_disk_full_server"), env, f"full-{uuid.uuid4().hex[:8]}")


def sftp_read_only_folder(env: Env, request: pytest.FixtureRequest) -> None:
    server: Sshd = request.getfixturevalue("sftp_server")
    folder = f"read-only-{uuid.uuid4().hex[:8]}"
    with server.client() as sftp:  # made and locked by the login user, who is never root
        sftp.mkdir(folder)
        sftp.chmod(folder, 0o555)
    sftp_destination(server, env, folder)


class DiskFullSshd(Sshd):
    """An sshd whose SFTP server may write files of at most DISK_BLOCKS blocks, so a write fails as it does on a
    full disk (EFBIG instead of ENOSPC; both reach the client as SSH_FX_FAILURE). No mount, no privilege: the
    subsystem runs OpenSSH's sftp-server under `ulimit -f`, with SIGXFSZ ignored so the write fails rather than
    the process."""

    def _write_config(self) -> None:
        super()._write_config()
        server = Path("/usr/lib/openssh/sftp-server")
        if not server.exists():
            pytest.fail(f"{server} is missing: run `apt-get install -y openssh-sftp-server`", pytrace=False)
        folder = Path(tempfile.mkdtemp(prefix="ajo-sftp-full-"))
        folder.chmod(0o755)  # the login user runs the wrapper
        wrapper = folder / "sftp-server-limited"
        wrapper.write_text(f"#!/bin/sh\nulimit -f {DISK_BLOCKS}\ntrap '' XFSZ\nexec {server} \"$@\"\n")
        wrapper.chmod(0o755)
        text = self.config_path.read_text().replace("Subsystem sftp internal-sftp", f"Subsystem sftp {wrapper}")
        self.config_path.write_text(text)


@pytest.fixture(scope="module")
def sftp_disk_full_server(tmp_path_factory: pytest.TempPathFactory, sftp_account) -> Iterator[Sshd]:
    server = DiskFullSshd(tmp_path_factory.mktemp("sshd-full"), sftp_account)
    server.start()
    yield server
    server.stop()


# --- the cases --------------------------------------------------------------------------------------------------

RUN = "run --dataflow once"
CASES = [
    # command-line arguments
    case("window-garbage", "arguments", "run --dataflow daily --window garbage", "--window garbage",
         "not a window of dataflow 'daily'", "format YYYY-MM-DD", "first 2026-11-01", "latest closed {latest}",
         process=True),
    case("window-month-13", "arguments", "run --dataflow daily --window 2026-13-01", "--window 2026-13-01",
         "not a window", "format YYYY-MM-DD", "first 2026-11-01", "latest closed {latest}"),
    case("window-not-closed", "arguments", "run --dataflow daily --window {tomorrow}", "--window {tomorrow}",
         "has not closed yet", "latest closed {latest}"),
    case("window-before-start", "arguments", "run --dataflow daily --window 2026-10-01", "--window 2026-10-01",
         "not a window", "first 2026-11-01"),
    case("window-hourly-shape", "arguments", "run --dataflow daily --window 2026-11-02-06:00",
         "--window 2026-11-02-06:00", "format YYYY-MM-DD"),
    case("window-on-once-dataflow", "arguments", "run --dataflow once --window 2026-11-01", "--window 2026-11-01",
         "'once'", "no windows"),
    case("export-time-garbage", "arguments", "run --export-time yesterday", "--export-time", "'yesterday'",
         "ISO-8601", process=True),
    case("export-time-naive", "arguments", "run --export-time 2026-11-30T03:15:00", "--export-time",
         "no time zone", "2026-11-30T03:15:00Z"),
    case("append-rows-negative", "arguments", "lake append --dataset journeys --rows -5", "--rows", "-5",
         "at least 1", process=True),
    case("append-rows-not-a-number", "arguments", "lake append --dataset journeys --rows ten", "--rows", "'ten'",
         "whole number"),
    case("seed-rows-zero", "arguments", "lake seed --rows 0", "--rows", "0", "at least 1", process=True),
    case("seed-batches-zero", "arguments", "lake seed --batches 0", "--batches", "at least 1"),
    case("ingested-at-naive", "arguments", "lake append --dataset journeys --ingested-at 2026-11-30T03:15:00",
         "--ingested-at", "no time zone"),
    case("ingested-at-garbage", "arguments", "lake append --dataset journeys --ingested-at last-tuesday",
         "--ingested-at", "'last-tuesday'", "ISO-8601"),
    case("ingested-at-future", "arguments", "lake append --dataset journeys --ingested-at 2099-01-01T00:00:00Z",
         "--ingested-at", "in the future", process=True),
    case("unknown-dataflow", "arguments", "run --dataflow nightly", "unknown dataflow 'nightly'", "once, daily"),
    case("unknown-dataset", "arguments", "run --dataset ajo_message_feedback", "'ajo_message_feedback'"),
    case("unknown-dataset-append", "arguments", "lake append --dataset journey", "'journey'", "journeys"),
    case("unknown-destination", "arguments", "check-connection s3-archive", "unknown destination 's3-archive'",
         "known: out"),
    case("unknown-command", "arguments", "exprot", "invalid choice: 'exprot'", "run"),
    case("runs-limit-zero", "arguments", "runs once --limit 0", "--limit", "at least 1"),
    case("missing-config-file", "arguments", "--config {tmp}/missing.yaml run", "{tmp}/missing.yaml",
         "file not found", process=True),
    # exports.yaml
    case("config-yaml-syntax", "config", RUN, "{config}", "line 6", "malformed YAML",
         "mapping values are not allowed", process=True, prepare=config_text(
             "destinations:\n  - name: out\n    type: local\ndataflows:\n  - name: once\n     destination: out\n")),
    case("config-unknown-field", "config", RUN, "{config}", "dataflows[0].fromat", "not permitted",
         prepare=flow(fromat="json")),
    case("config-bad-folder", "config", RUN, "{config}", "destinations[0].folder", "'ajo exports'",
         "ASCII letters", prepare=destination(folder="ajo exports")),
    case("config-missing-secret-env", "config", RUN, "{config}", "destination 'out'", UNSET_ENV,
         prepare=destination(type="amazon_s3", bucket="acme-ajo-exports", path=None,
                             access_key_id=f"${{{UNSET_ENV}}}", secret_access_key=f"${{{UNSET_ENV}}}")),
    case("config-prime-org-ultimate-dataset", "config", RUN, "{config}", "organization.product_tier", "Prime",
         f"once/{ULTIMATE} (needs Ultimate)", prepare=prime_org_with_ultimate_dataset),
    case("config-bad-schedule", "config", RUN, "{config}", "dataflows[1].schedule.every_hours", "= 5",
         "3, 6, 8 or 12", prepare=hourly_every_5),
    case("config-inline-secret", "config", RUN, "{config}", "destinations[0].secret_access_key",
         "inline secrets", absent=(INLINE_SECRET,),
         prepare=destination(type="amazon_s3", bucket="acme-ajo-exports", path=None,
                             access_key_id="${AWS_ACCESS_KEY_ID}", secret_access_key=INLINE_SECRET)),
    case("config-unknown-destination", "config", RUN, "{config}", "dataflows[0].destination",
         "unknown destination 's3-archive'", prepare=flow(destination="s3-archive")),
    case("config-json-snappy", "config", RUN, "{config}", "dataflows[0]", "gzip",
         prepare=flow(format="json", compression="snappy")),
    # the lake
    case("lake-corrupt-parquet", "lake", RUN, "{lake}/journeys/batch-", "journeys", "not readable Parquet",
         prepare=corrupt_batch, process=True),
    case("lake-column-renamed", "lake", RUN, "{lake}/journeys/batch-", "missing column _id",
         prepare=rename_column),
    case("lake-column-retyped", "lake", RUN, "{lake}/journeys/batch-", "column _id has type", "expected String",
         prepare=retype_column),
    case("lake-index-missing", "lake", RUN, "no batches for dataset journeys", "ajo-exports lake seed",
         "{lake}/journeys/_batches.json is missing",
         prepare=remove_index),
    case("lake-index-not-json", "lake", RUN, "{lake}/journeys/_batches.json", "not valid JSON",
         prepare=index_not_json),
    case("lake-index-unreadable", "lake", RUN, "{lake}/journeys/_batches.json", "cannot be read",
         prepare=index_unreadable),
    case("lake-index-bad-time", "lake", RUN, "{lake}/journeys/_batches.json", "entry 1", "'yesterday'",
         prepare=index_bad_time),
    case("lake-batch-file-missing", "lake", RUN, "{lake}/journeys/batch-", "listed in _batches.json but missing",
         prepare=remove_batch_file),
    case("lake-not-seeded", "lake", RUN, "{lake}", "empty", "ajo-exports lake seed", prepare=empty_lake),
    # destinations in a bad state
    case("s3-bucket-missing", "destination", RUN, "destination 'out'", "the bucket does not exist",
         prepare=s3_destination(bucket_exists=False, reader=False)),
    case("s3-permission-denied", "destination", RUN, "destination 'out'", "s3:PutObject", "permission denied",
         prepare=s3_destination(bucket_exists=True, reader=True), process=True),
    case("azure-container-missing", "destination", RUN, "destination 'out'", "the container does not exist",
         prepare=azure_container_missing),
    case("gcs-bucket-missing", "destination", RUN, "destination 'out'", "the bucket does not exist",
         prepare=gcs_bucket_missing),
    case("sftp-disk-full", "destination", RUN, "destination 'out'", "part-", "disk full or over quota",
         prepare=sftp_disk_full),
    case("sftp-read-only-folder", "destination", RUN, "destination 'out'", "permission denied",
         prepare=sftp_read_only_folder),
]
assert len({param.id for param in CASES}) == len(CASES) >= 40


@pytest.fixture
def env(tmp_path: Path, lake_root: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    home = tmp_path / "home"
    shutil.copytree(lake_root, home / "lake")
    world = Env(tmp_path, home, tmp_path / "exports.yaml",
                {"name": "out", "type": "local", "path": str(tmp_path / "exports")})
    world.write_config()
    world.listing = lambda: [str(p.relative_to(tmp_path / "exports")) for p in (tmp_path / "exports").rglob("*")
                             if p.is_file()] if (tmp_path / "exports").exists() else []
    monkeypatch.setenv("AJO_EXPORTS_HOME", str(home))
    monkeypatch.setenv("AJO_EXPORTS_CONFIG", str(world.config))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("AJO_EXPORTS_PRINCIPAL", raising=False)
    monkeypatch.delenv(UNSET_ENV, raising=False)
    return world


def run_cli(env: Env, argv: list[str], process: bool, capsys: pytest.CaptureFixture,
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    if process:
        done = subprocess.run(
            [str(EXE), *argv], capture_output=True, text=True, timeout=180, cwd=env.tmp,
            env={**os.environ, **SUBPROCESS_ENV, **env.env},
        )
        return done.returncode, done.stdout, done.stderr
    for name, value in env.env.items():
        monkeypatch.setenv(name, value)
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def partial(keys: list[str]) -> list[str]:
    """What a failed export must not leave: part files or a manifest of the window."""
    return [key for key in keys if key.rsplit("/", 1)[-1].startswith(("part-", "manifest-"))]


@pytest.mark.parametrize(("category", "argv", "needles", "prepare", "process", "absent"), CASES)
def test_bad_input_is_one_clear_line(
    env: Env, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
    category: str, argv: str, needles: tuple[str, ...], prepare: Prepare | None, process: bool,
    absent: tuple[str, ...],
) -> None:
    if prepare is not None:
        prepare(env, request)
    for value in env.env.values():
        register_secret(value)
    code, out, err = run_cli(env, env.words(argv).split(), process, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    traceback = "Traceback" in err or "Traceback" in out
    left = partial(env.listing() if env.listing else [])
    add("bad_input", "cases")
    add("bad_input", f"cases_{category}")
    add("bad_input", "subprocess_cases", int(process))
    add("bad_input", "printed_a_traceback", int(traceback))
    add("bad_input", "left_a_partial_window", int(bool(left)))
    assert code == 2 and not traceback, (code, err)
    assert len(lines) == 1 and lines[0].startswith("ajo-exports: error: "), err
    for needle in needles:
        assert env.words(needle) in lines[0], f"{env.words(needle)!r} not in {lines[0]!r}"
    leaked = [secret for secret in (*SECRETS, *absent) if secret in err or secret in out]
    assert not leaked, "a secret reached the output"
    assert not left, left


def test_empty_dataset_is_a_successful_empty_export(env: Env, capsys: pytest.CaptureFixture) -> None:
    """A dataset with zero batches exports as AEP's empty increment (the docs' decision): success, no data
    files, a manifest with an empty file list, and a passing delivery check."""
    index = env.lake / JOURNEYS / "_batches.json"
    for entry in json.loads(index.read_text()):
        (env.lake / JOURNEYS / entry["file"]).unlink()
    index.write_text("[]\n")
    code, out, err = main(["run", "--dataflow", "once"]), *capsys.readouterr()
    assert code == 0 and "Traceback" not in err, err
    files = [Path(env.tmp / "exports" / key) for key in env.listing()]  # type: ignore[misc]
    assert [p.name for p in files if p.name.startswith("part-")] == []
    (manifest,) = [p for p in files if p.name.startswith("manifest-")]
    assert json.loads(manifest.read_text())["exportResults"] == []
    assert next(line for line in out.splitlines() if line.startswith(JOURNEYS)).split()[-1] == "passed"
    add("bad_input", "cases")
    add("bad_input", "cases_lake")


def test_append_ingested_at_stamps_a_past_window(env: Env, capsys: pytest.CaptureFixture) -> None:
    """`lake append --ingested-at` writes a batch in a past window: its ULID carries that time, the index stays in
    time order, and the daily window it belongs to is named."""
    from ajo_exports.lake import LocalLake

    code = main(["lake", "append", "--dataset", JOURNEYS, "--rows", "3", "--ingested-at", "2026-10-30T03:15:00Z"])
    out = capsys.readouterr().out
    assert code == 0 and "ingested 2026-10-30T03:15:00Z" in out and "window daily 2026-11-01" in out, out
    index = json.loads((env.lake / JOURNEYS / "_batches.json").read_text())
    times = [datetime.fromisoformat(entry["ingestedAt"]) for entry in index]
    assert times == sorted(times) and index[0]["ingestedAt"] == "2026-10-30T03:15:00Z"
    batches = LocalLake(env.lake).list_batches(get_dataset(JOURNEYS))
    assert batches[0].batch_id == index[0]["batchId"]
    assert batches == sorted(batches, key=lambda b: (b.ingested_at, b.batch_id))
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    millis = 0
    for char in batches[0].batch_id[:10]:
        millis = millis * 32 + crockford.index(char)
    assert millis == int(datetime(2026, 10, 30, 3, 15, tzinfo=UTC).timestamp() * 1000)


def test_zz_record_figures() -> None:
    """The totals the README quotes (the counters above add up per case)."""
    record("bad_input", "parametrized_cases", len(CASES))
    record("bad_input", "recorded_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
