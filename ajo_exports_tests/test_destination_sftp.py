"""The SFTP destination against a real OpenSSH sshd: verified host keys, password and key logins, atomic publish."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import paramiko
import polars as pl
import pytest
import yaml

from ajo_exports.catalog import get_dataset
from ajo_exports.cli import landed_in
from ajo_exports.destinations.base import DestinationError
from ajo_exports.destinations.resource import build_destination, resource_class
from ajo_exports.destinations.sftp import SftpDestinationConfig, SftpStorage
from ajo_exports.export.formats import read_part
from ajo_exports.lake import LocalLake
from ajo_exports.settings import destination_id
from ajo_exports_tests.helpers import parse_config, run_checks, run_export
from ajo_exports_tests.servers.sshd import SSH_KEYGEN, Sshd

SftpDestination = resource_class(SftpDestinationConfig)

EXPORT_TIME = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
FEEDBACK = "ajo_message_feedback_event_dataset"
STEPS = "journey_step_events"
PART = re.compile(r"^part-\d{5}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-c000\.gz\.parquet$")


# -- helpers ----------------------------------------------------------------------------------------------------


@pytest.fixture
def folder(sftp_server: Sshd) -> Iterator[str]:
    """A fresh folder (relative to the login folder) per test, removed afterwards."""
    name = f"ajo-sftp-tests/{uuid.uuid4().hex[:12]}"
    yield name
    shutil.rmtree(sftp_server.home / name, ignore_errors=True)


def storage(server: Sshd, folder: str, **overrides: object) -> SftpStorage:
    options: dict[str, object] = {
        "host": server.host, "port": server.port, "username": server.username,
        "private_key": server.private_key, "known_hosts": server.known_hosts(), "folder": folder,
    }
    options.update(overrides)
    return SftpStorage("sftp-test", **options)  # type: ignore[arg-type]


def remote_files(server: Sshd, folder: str) -> dict[str, int]:
    """key -> size of every file under `folder`, listed with paramiko's own client (the vendor SDK)."""
    found: dict[str, int] = {}
    with server.client() as sftp:
        root = posixpath.join(sftp.normalize("."), folder)
        todo = [""]
        while todo:
            relative = todo.pop()
            try:
                entries = sftp.listdir_attr(posixpath.join(root, relative))
            except FileNotFoundError:
                continue
            for entry in entries:
                key = posixpath.join(relative, entry.filename) if relative else entry.filename
                if stat.S_ISDIR(entry.st_mode):
                    todo.append(key)
                else:
                    found[key] = entry.st_size
    return dict(sorted(found.items()))


def remote_bytes(server: Sshd, path: str) -> bytes:
    with server.client() as sftp, sftp.open(path, "rb") as handle:
        handle.prefetch()
        return handle.read()


def foreign_host_line(server: Sshd, tmp_path: Path, key_type: str = "ed25519") -> str:
    """A known_hosts line for this host and port, but with some other server's key."""
    other = tmp_path / f"other_{key_type}"
    subprocess.run([SSH_KEYGEN, "-q", "-t", key_type, "-N", "", "-f", str(other)], check=True)
    key = paramiko.PKey.from_path(other)
    return f"{server.host_id} {key.get_name()} {key.get_base64()}\n"


def assert_never_logged_in(server: Sshd, username: str) -> None:
    """The refused connection never reached authentication: sshd saw no login attempt for this user name."""
    time.sleep(0.2)  # sshd writes its log line when the connection closes
    log = server.log_path.read_text(errors="replace")
    assert username not in log, "credentials were sent to a server whose host key was not verified"


def sftp_config(server: Sshd, folder: str, *, secret_env: str, secret_field: str = "password", **flow: object) -> str:
    destination = {
        "name": "sftp-out", "type": "sftp", "host": server.host, "port": server.port, "username": server.username,
        secret_field: "${" + secret_env + "}", "known_hosts": server.known_hosts(), "folder": folder,
    }
    dataflow = {"name": "to-sftp", "destination": "sftp-out", "datasets": [FEEDBACK, STEPS], **flow}
    return yaml.safe_dump({"destinations": [destination], "dataflows": [dataflow]}, sort_keys=False)


def lake_rows(lake_root: Path, slug: str) -> pl.DataFrame:
    lake = LocalLake(lake_root)
    dataset = get_dataset(slug)
    frame = lake.scan(dataset, lake.list_batches(dataset)).collect()
    if dataset.is_time_series:
        frame = frame.filter(pl.col("timestamp") >= EXPORT_TIME - timedelta(days=365))
    return frame.sort("_id")


# -- storage level ----------------------------------------------------------------------------------------------


def test_round_trip_with_key_login(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"abc" * 1000)
    with storage(sftp_server, folder) as store:
        published = store.publish(source, "ds/exportTime=202611020600/part-00000.parquet")
        store.publish(source, "ds/exportTime=202611020600/manifest-x.json")
        store.publish(source, "other/file.json")
        assert published.key == "ds/exportTime=202611020600/part-00000.parquet" and published.size == 3000
        assert remote_files(sftp_server, folder) == {
            "ds/exportTime=202611020600/manifest-x.json": 3000,
            "ds/exportTime=202611020600/part-00000.parquet": 3000,
            "other/file.json": 3000,
        }
        assert [o.key for o in store.list()] == [
            "ds/exportTime=202611020600/manifest-x.json", "ds/exportTime=202611020600/part-00000.parquet",
            "other/file.json",
        ]
        assert [o.key for o in store.list("ds/exportTime=202611020600/part-")] == [published.key]
        assert [o.key for o in store.list("ds/")] == [published.key.replace("part-00000.parquet", "manifest-x.json"),
                                                      published.key]
        assert store.list("missing/") == []
        assert store.stat(published.key).size == 3000
        assert store.stat("ds/nothing") is None and store.stat("ds") is None
        assert store.read_bytes(published.key) == source.read_bytes()
        assert store.sha256(published.key) == hashlib.sha256(source.read_bytes()).hexdigest()
        home = f"/{sftp_server.home.as_posix().strip('/')}"
        assert store.uri("other/file.json") == (
            f"sftp://{sftp_server.username}@127.0.0.1:{sftp_server.port}{home}/{folder}/other/file.json"
        )
        assert store.sink_path("ds") == f"{home}/{folder}/ds"
        with pytest.raises(DestinationError, match="no such file"):
            store.open_read("ds/nothing")

        store.delete("other/file.json")
        store.delete("other/file.json")  # idempotent
        assert "other" not in [p.name for p in (sftp_server.home / folder).iterdir()], "empty parents are removed"
        for key in [o.key for o in store.list()]:
            store.delete(key)
        assert remote_files(sftp_server, folder) == {}
        assert (sftp_server.home / folder).is_dir(), "the destination folder itself stays"
        store.publish(source, "ds/again.bin")  # a folder removed by delete is made again
        assert remote_files(sftp_server, folder) == {"ds/again.bin": 3000}


def test_password_login(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    if sftp_server.password is None:
        pytest.fail("password login needs a throwaway user: run the tests as root (as CI does)", pytrace=False)
    source = tmp_path / "p.txt"
    source.write_bytes(b"password login")
    with storage(sftp_server, folder, private_key=None, password=sftp_server.password) as store:
        store.publish(source, "p.txt")
        assert store.read_bytes("p.txt") == b"password login"
    assert remote_bytes(sftp_server, f"{folder}/p.txt") == b"password login"


def test_key_login_with_an_openssh_format_key(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    """AEP says 'RSA format'; both the PEM (BEGIN RSA PRIVATE KEY) and the OpenSSH container are accepted."""
    pem = base64.b64decode(sftp_server.private_key)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    copy = tmp_path / "id_rsa"
    copy.write_bytes(pem)
    copy.chmod(0o600)
    subprocess.run([SSH_KEYGEN, "-q", "-p", "-P", "", "-N", "", "-f", str(copy)], check=True)  # rewrite as OpenSSH
    assert copy.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    source = tmp_path / "k.txt"
    source.write_bytes(b"key login")
    with storage(sftp_server, folder, private_key=base64.b64encode(copy.read_bytes()).decode()) as store:
        store.publish(source, "k.txt")
    assert remote_files(sftp_server, folder) == {"k.txt": 9}


def test_large_upload_is_pipelined_and_reads_back_identical(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    """24 MiB: hundreds of pipelined 32 KiB SFTP writes into one `.part`, renamed once complete."""
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for _ in range(24):
            out.write(os.urandom(1024 * 1024))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    with storage(sftp_server, folder) as store:
        stored = store.publish(source, "big/part-00000.bin")
        assert stored.size == source.stat().st_size
        assert store.sha256("big/part-00000.bin") == expected
    assert remote_files(sftp_server, folder) == {"big/part-00000.bin": source.stat().st_size}
    assert hashlib.sha256(remote_bytes(sftp_server, f"{folder}/big/part-00000.bin")).hexdigest() == expected


def test_no_part_file_remains_after_publish(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"x" * 100_000)
    with storage(sftp_server, folder) as store:
        for index in range(5):
            store.publish(source, f"w/part-{index:05d}.parquet")
        store.publish(source, "w/part-00000.parquet")  # replacing an existing name is one rename too
    names = list(remote_files(sftp_server, folder))
    assert names == [f"w/part-{i:05d}.parquet" for i in range(5)]
    assert not [n for n in names if n.endswith(".part")]


def test_unknown_host_key_is_refused_before_login(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    wrong = foreign_host_line(sftp_server, tmp_path)
    probe_user = f"probe{uuid.uuid4().hex[:8]}"
    with pytest.raises(DestinationError) as refused:
        storage(sftp_server, folder, known_hosts=wrong, username=probe_user, private_key=None, password="pw-123-secret")
    message = str(refused.value)
    assert not refused.value.transient
    assert sftp_server.host_id in message and sftp_server.fingerprint() in message
    assert "does not match known_hosts" in message and "pw-123-secret" not in message
    assert_never_logged_in(sftp_server, probe_user)

    elsewhere = sftp_server.known_hosts().replace(sftp_server.host_id, "[10.9.9.9]:22")
    with pytest.raises(DestinationError, match=r"unknown host key ssh-ed25519 SHA256:\S+: not in known_hosts"):
        storage(sftp_server, folder, known_hosts=elsewhere, username=probe_user)
    revoked = "@revoked * " + sftp_server.known_hosts("ed25519").split(" ", 1)[1] + sftp_server.known_hosts()
    with pytest.raises(DestinationError, match="@revoked"):
        storage(sftp_server, folder, known_hosts=revoked, username=probe_user)
    assert_never_logged_in(sftp_server, probe_user)


def test_host_key_fingerprint(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    probe_user = f"probe{uuid.uuid4().hex[:8]}"
    other = foreign_host_line(sftp_server, tmp_path).split()
    other_fingerprint = paramiko.PKey.from_type_string(other[1], base64.b64decode(other[2])).fingerprint
    with pytest.raises(DestinationError) as refused:
        storage(sftp_server, folder, known_hosts=None, host_key_fingerprint=other_fingerprint, username=probe_user)
    message = str(refused.value)
    assert sftp_server.host_id in message and sftp_server.fingerprint() in message and other_fingerprint in message
    assert_never_logged_in(sftp_server, probe_user)

    public = str(sftp_server.host_key_path("ed25519")) + ".pub"
    printed = subprocess.run([SSH_KEYGEN, "-lf", public], capture_output=True, text=True, check=True).stdout.split()[1]
    assert printed == sftp_server.fingerprint()
    md5 = subprocess.run(
        [SSH_KEYGEN, "-E", "md5", "-lf", public], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    for fingerprint in (printed, md5):
        with storage(sftp_server, folder, known_hosts=None, host_key_fingerprint=fingerprint) as store:
            assert store.list() == []
    with pytest.raises(DestinationError, match="does not match host_key_fingerprint"):
        storage(sftp_server, folder, host_key_fingerprint=other_fingerprint)  # both given: both must match


def test_known_hosts_from_a_file_and_for_an_rsa_key_only(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    """A path is read as a known_hosts file; listing only the RSA host key makes the client ask for it, as ssh does."""
    path = tmp_path / "known_hosts"
    path.write_text("# comment\n\n" + sftp_server.known_hosts("rsa"))
    with storage(sftp_server, folder, known_hosts=str(path)) as store:
        assert store._transport.get_remote_server_key().get_name() == "ssh-rsa"
        assert store.list() == []
    with pytest.raises(DestinationError, match="read known_hosts file"):
        storage(sftp_server, folder, known_hosts=str(tmp_path / "absent"))
    with pytest.raises(DestinationError, match="known_hosts line 1"):
        storage(sftp_server, folder, known_hosts="not a key line")


def test_wrong_credentials_are_terminal_and_name_no_secret(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    wrong_password = f"Wrong-{uuid.uuid4().hex}"
    with pytest.raises(DestinationError) as refused:
        storage(sftp_server, folder, private_key=None, password=wrong_password)
    message = str(refused.value)
    assert not refused.value.transient
    assert f"log in as {sftp_server.username} refused" in message and "authentication failed" in message
    assert "sftp-test" in message and wrong_password not in message

    other = tmp_path / "other_rsa"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(other)], check=True)
    unauthorized = base64.b64encode(other.read_bytes()).decode()
    with pytest.raises(DestinationError, match="authentication failed") as refused:
        storage(sftp_server, folder, private_key=unauthorized)
    assert unauthorized not in str(refused.value) and "PRIVATE KEY" not in str(refused.value)
    with pytest.raises(DestinationError, match="not Base64 of a PEM/OpenSSH private key") as refused:
        storage(sftp_server, folder, private_key="%%%not-base64%%%")
    assert "%%%not-base64%%%" not in str(refused.value)


def test_permission_denied_is_terminal_and_names_the_write(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"x")
    with storage(sftp_server, folder) as store, sftp_server.client() as sftp:
        sftp.chmod(store.root, 0o555)
        try:
            with pytest.raises(DestinationError) as refused:
                store.publish(source, "x.bin")
            assert f"write {store.root}/x.bin refused: permission denied" in str(refused.value)
            assert not refused.value.transient
            with pytest.raises(DestinationError, match="permission denied"):
                store.publish(source, "sub/x.bin")
        finally:
            sftp.chmod(store.root, 0o755)
        store.publish(source, "x.bin")
    assert remote_files(sftp_server, folder) == {"x.bin": 1}


def test_unreachable_server_is_transient(sftp_server: Sshd, folder: str) -> None:
    from ajo_exports_tests.servers.sshd import free_port

    started = time.monotonic()
    with pytest.raises(DestinationError, match=r"refused: ConnectionRefusedError") as refused:
        storage(sftp_server, folder, port=free_port(), attempts=3)
    assert refused.value.transient and time.monotonic() - started >= 0.6, "retried with backoff"


def test_connection_lost_mid_upload_reconnects_and_retries(sftp_server_private: Sshd, tmp_path: Path, caplog) -> None:
    """The server dies while a `.part` is being written and is back within the backoff: the same publish
    reconnects, rewrites the temporary from the start and renames it; nothing partial is ever visible."""
    server = sftp_server_private
    folder = f"ajo-sftp-tests/lost-{uuid.uuid4().hex[:8]}"
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for _ in range(64):
            out.write(os.urandom(1024 * 1024))
    temporary = server.home / folder / "w" / "part-00000.bin.part"
    restarted = threading.Event()

    def bounce_when_half_written() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if temporary.exists() and temporary.stat().st_size > 8 * 1024 * 1024:
                server.stop()
                assert not (server.home / folder / "w" / "part-00000.bin").exists()
                server.start()
                restarted.set()
                return
            time.sleep(0.001)

    try:
        with storage(server, folder) as store:
            watcher = threading.Thread(target=bounce_when_half_written, daemon=True)
            watcher.start()
            stored = store.publish(source, "w/part-00000.bin")
            watcher.join(timeout=30)
            assert restarted.is_set(), "the upload finished before the server could be stopped"
            assert any("transient error on sftp-test: write" in r.getMessage() for r in caplog.records), caplog.text
            assert stored.size == source.stat().st_size
            assert store.sha256("w/part-00000.bin") == hashlib.sha256(source.read_bytes()).hexdigest()
        assert remote_files(server, folder) == {"w/part-00000.bin": source.stat().st_size}
    finally:
        shutil.rmtree(server.home / folder, ignore_errors=True)


def test_keys_cannot_leave_the_folder(sftp_server: Sshd, folder: str, tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"x")
    with storage(sftp_server, folder) as store:
        for key in ("../escape", "a/../../escape", "/etc/passwd"):
            with pytest.raises(DestinationError, match="escapes the destination folder"):
                store.publish(source, key)


def test_resource_builds_from_config_with_env_secrets(sftp_server: Sshd, folder: str, monkeypatch) -> None:
    monkeypatch.setenv("AJO_TEST_SFTP_KEY", sftp_server.private_key)
    config = parse_config(sftp_config(sftp_server, folder, secret_env="AJO_TEST_SFTP_KEY", secret_field="private_key"))
    resource = build_destination(config.destination("sftp-out")).process_config_and_initialize()  # resolves EnvVar
    assert isinstance(resource, SftpDestination) and resource.destination_type == "sftp"
    with resource.open_storage() as store:
        assert store.list() == []


# -- end to end through Dagster ---------------------------------------------------------------------------------


def test_export_through_dagster(sftp_server: Sshd, folder: str, lake_root: Path, instance, monkeypatch,
                                tmp_path: Path) -> None:
    monkeypatch.setenv("AJO_TEST_SFTP_PASSWORD", sftp_server.password or "")
    config = sftp_config(sftp_server, folder, secret_env="AJO_TEST_SFTP_PASSWORD")
    run = run_export(config, lake_root, dataflow="to-sftp", export_time=EXPORT_TIME, instance=instance)
    assert run.success, run.error
    delivered = remote_files(sftp_server, folder)
    expected_keys: list[str] = []
    for slug in (FEEDBACK, STEPS):
        dataset_id = get_dataset(slug).dataset_id
        window = f"{dataset_id}/exportTime=202611020600"
        keys = sorted(k for k in delivered if k.startswith(dataset_id + "/"))
        (part,) = [k for k in keys if "/part-" in k]
        assert posixpath.dirname(part) == window and PART.match(posixpath.basename(part)), part
        assert keys == sorted([part, f"{window}/manifest-{destination_id('sftp-out')}-{run.run_id}.json"])
        assert run.exports[slug]["keys"] == [part]
        local = tmp_path / posixpath.basename(part)
        local.write_bytes(remote_bytes(sftp_server, f"{folder}/{part}"))
        assert read_part(local, local.name).sort("_id").equals(lake_rows(lake_root, slug)), slug
        assert run.checks[slug][0], run.checks[slug][1]
        expected_keys += keys
    assert sorted(delivered) == sorted(expected_keys), "nothing else (no .part) at the destination"


def files_on_disk(root: Path) -> list[str]:
    """Every file under `root` on the server's own filesystem, not through any SFTP client."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_folder_lands_where_it_says_on_the_servers_filesystem(kind: str, sftp_server: Sshd, lake_root: Path,
                                                              instance, monkeypatch, capsys) -> None:
    """An absolute folder is used as given, a relative one is under the login folder; the metadata URIs, the
    manifest's sinkPath and the CLI's "files landed in" name that real path (an absolute folder once landed in
    ~/srv/upload/ajo while every report, and the delivery check, said /srv/upload/ajo)."""
    token = uuid.uuid4().hex[:10]
    if kind == "absolute":
        top = Path(f"/tmp/ajo-sftp-abs-{token}")
        real = top / "srv/upload/ajo"
        folder = str(real)
    else:
        folder = f"ajo-sftp-rel-{token}/upload/ajo"
        top = sftp_server.home / f"ajo-sftp-rel-{token}"
        real = sftp_server.home / folder
    monkeypatch.setenv("AJO_TEST_SFTP_PASSWORD", sftp_server.password or "")
    config = sftp_config(sftp_server, folder, secret_env="AJO_TEST_SFTP_PASSWORD", datasets=[FEEDBACK])
    try:
        run = run_export(config, lake_root, dataflow="to-sftp", export_time=EXPORT_TIME, instance=instance)
        assert run.success, run.error
        dataset_id = get_dataset(FEEDBACK).dataset_id
        on_disk = files_on_disk(real)
        assert [f for f in on_disk if "/part-" in f] == run.exports[FEEDBACK]["keys"]
        assert len([f for f in on_disk if "/manifest-" in f]) == 1
        stray = [p for p in sftp_server.home.rglob("*") if f"ajo-sftp-abs-{token}" in str(p)]
        assert kind == "relative" or not stray, f"an absolute folder was created under the login folder: {stray}"
        base = f"sftp://{sftp_server.username}@{sftp_server.host}:{sftp_server.port}{real}"
        assert run.exports[FEEDBACK]["folder_uri"] == f"{base}/{dataset_id}/exportTime=202611020600"
        assert run.exports[FEEDBACK]["uris"] == [f"{base}/{key}" for key in run.exports[FEEDBACK]["keys"]]
        manifest = json.loads(next(real.rglob("manifest-*.json")).read_text())
        sink_paths = {item["sinkPath"] for item in manifest["exportResults"]}
        assert sink_paths == {f"{real}/{dataset_id}/exportTime=202611020600"}
        assert run.checks[FEEDBACK][0], run.checks[FEEDBACK][1]
        parsed = parse_config(config)
        expected = folder if kind == "absolute" else "/~/" + folder
        assert parsed.destination("sftp-out").location.endswith(f":{sftp_server.port}{expected}")
        report = SimpleNamespace(exports={FEEDBACK: SimpleNamespace(metadata=run.exports[FEEDBACK])})
        assert landed_in(report) == base  # the CLI's "files landed in"
    finally:
        shutil.rmtree(top, ignore_errors=True)  # never the login folder itself: later tests write there


def test_delivery_check_fails_on_a_deleted_and_a_corrupted_file(sftp_server: Sshd, folder: str, lake_root: Path,
                                                                  instance, monkeypatch) -> None:
    monkeypatch.setenv("AJO_TEST_SFTP_KEY", sftp_server.private_key)
    config = sftp_config(sftp_server, folder, secret_env="AJO_TEST_SFTP_KEY", secret_field="private_key")
    run = run_export(config, lake_root, dataflow="to-sftp", export_time=EXPORT_TIME, instance=instance)
    assert run.success and all(passed for passed, _ in run.checks.values()), run
    deleted = run.exports[FEEDBACK]["keys"][0]
    corrupted = run.exports[STEPS]["keys"][0]
    with sftp_server.client() as sftp:
        root = posixpath.join(sftp.normalize("."), folder)
        sftp.remove(f"{root}/{deleted}")
        with sftp.open(f"{root}/{corrupted}", "r+b") as handle:
            handle.seek(100)
            byte = handle.read(1)
            handle.seek(100)
            handle.write(bytes([byte[0] ^ 0xFF]))
    checks = run_checks(config, lake_root, dataflow="to-sftp", instance=instance)
    passed, description = checks[FEEDBACK]
    assert not passed and posixpath.basename(deleted) in description and "missing" in description
    passed, description = checks[STEPS]
    assert not passed and posixpath.basename(corrupted) in description and "sha256 expected" in description


def test_wrong_password_fails_the_run_without_the_secret(sftp_server: Sshd, folder: str, lake_root: Path,
                                                        monkeypatch) -> None:
    secret = f"Not-The-Password-{uuid.uuid4().hex}"
    monkeypatch.setenv("AJO_TEST_SFTP_PASSWORD", secret)
    run = run_export(sftp_config(sftp_server, folder, secret_env="AJO_TEST_SFTP_PASSWORD"), lake_root,
                     dataflow="to-sftp", export_time=EXPORT_TIME)
    assert not run.success
    assert "sftp-out" in run.error and f"log in as {sftp_server.username} refused" in run.error, run.error
    assert secret not in run.error
    assert remote_files(sftp_server, folder) == {}


@pytest.mark.parametrize("rerun_window", ["same", "another"])
def test_server_stopped_mid_upload_then_rerun(rerun_window: str, sftp_server_private: Sshd, lake_root: Path,
                                              monkeypatch) -> None:
    """The failed attempt cannot withdraw its parts (the server is gone); its marker names them, and the rerun
    removes them even when it lands in another exportTime folder (a `once` dataflow rerun without
    --export-time), so a reader of the dataset's folder never sees a row twice."""
    server = sftp_server_private
    folder = f"ajo-sftp-tests/stop-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AJO_TEST_SFTP_KEY", server.private_key)
    config = sftp_config(server, folder, secret_env="AJO_TEST_SFTP_KEY", secret_field="private_key",
                         datasets=[FEEDBACK], max_rows_per_file=2)
    window = server.home / folder / get_dataset(FEEDBACK).dataset_id / "exportTime=202611020600"
    stopped = threading.Event()

    def stop_when_uploading() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if window.is_dir() and len([p for p in window.iterdir() if p.name.startswith("part-")]) >= 3:
                server.stop()
                stopped.set()
                return
            time.sleep(0.002)

    try:
        watcher = threading.Thread(target=stop_when_uploading, daemon=True)
        watcher.start()
        failed = run_export(config, lake_root, dataflow="to-sftp", export_time=EXPORT_TIME)
        watcher.join(timeout=5)
        assert stopped.is_set(), "the export finished before the server could be stopped"
        assert not failed.success and "destination 'sftp-out': write /" in failed.error, failed.error
        left = sorted(p.name for p in window.iterdir())
        assert left and not [n for n in left if n.startswith("manifest-")], "a failed export shows no manifest"
        markers = sorted(p.name for p in (server.home / folder / "_ajo/attempts").iterdir())
        assert len(markers) == 1 and markers[0].split(".")[0] in left[0], (markers, left)

        server.start()
        again = EXPORT_TIME if rerun_window == "same" else EXPORT_TIME + timedelta(hours=1)
        rerun = run_export(config, lake_root, dataflow="to-sftp", export_time=again)
        assert rerun.success, rerun.error
        assert rerun.exports[FEEDBACK]["failed_attempt_files_removed"] == len(left)
        prefix = f"{get_dataset(FEEDBACK).dataset_id}/exportTime={again:%Y%m%d%H%M}/"
        on_disk = files_on_disk(server.home / folder)
        assert on_disk == sorted(f"{prefix}{name}" for name in os.listdir(server.home / folder / prefix)), (
            "the server's filesystem holds the rerun's window and nothing else: no part of the failed attempt, "
            "no attempt marker"
        )
        delivered = remote_files(server, folder)
        manifest = f"{prefix}manifest-{destination_id('sftp-out')}-{rerun.run_id}.json"
        assert sorted(delivered) == sorted([*rerun.exports[FEEDBACK]["keys"], manifest]), "exactly one set of files"
        assert len(rerun.exports[FEEDBACK]["keys"]) == -(-lake_rows(lake_root, FEEDBACK).height // 2)
        assert rerun.checks[FEEDBACK][0], rerun.checks[FEEDBACK][1]
    finally:
        shutil.rmtree(server.home / folder, ignore_errors=True)
