"""OpenLineage run events of real exports: START then COMPLETE per export (FAIL when it raises), valid against the
OpenLineage spec, with the input dataset, the delivered folder and its statistics; a dead collector never fails an
export; the file transport writes the same events as NDJSON; without the `openlineage:` section nothing is sent.

openlineage-python ships no JSON Schema, so the spec (OpenLineage.json and the facets used) is vendored under
data/openlineage (see its README) and every event is validated against it with jsonschema.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from ajo_exports.catalog import get_dataset
from ajo_exports.config import ConfigError
from ajo_exports.export import openlineage
from ajo_exports.export.openlineage import FACET_KEY, FACET_SCHEMA, output_dataset, run_uuid
from ajo_exports_tests.helpers import dagster_text, local_config, parse_config, run_export
from ajo_exports_tests.leaks import register_secret

EXPORT_TIME = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
FEEDBACK = "ajo_message_feedback_event_dataset"
JOURNEYS = "journeys"
SPEC = Path(__file__).parent / "data" / "openlineage"
KEY_ENV = "AJO_TEST_OPENLINEAGE_KEY"
API_KEY = "ol-key-" + uuid.uuid4().hex
ORGANIZATION = "organization: {name: acme, sandbox: dev}\n"
WARNING = "OpenLineage: could not send"


def _registry() -> Registry:
    schemas = [json.loads(path.read_text()) for path in sorted(SPEC.glob("*.json"))] + [FACET_SCHEMA]
    return Registry().with_resources((schema["$id"], DRAFT202012.create_resource(schema)) for schema in schemas)


REGISTRY = _registry()


def schema_errors(event: dict) -> list[str]:
    """The event against the spec's RunEvent, and each facet against the schema its `_schemaURL` names."""

    def check(url: str, value: object) -> list[str]:
        validator = Draft202012Validator(
            {"$ref": url}, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        return [f"{url}: {error.message}" for error in validator.iter_errors(value)]

    errors = check("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent", event)
    facets = [*event["run"].get("facets", {}).values(), *event["job"].get("facets", {}).values()]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        facets += [*dataset.get("facets", {}).values(), *dataset.get("outputFacets", {}).values()]
    for facet in facets:
        url = facet["_schemaURL"]
        if url.split("#")[0] not in {resource for resource in REGISTRY}:
            errors.append(f"facet schema {url} is not vendored")
        else:
            errors += check(url, facet)
    return errors


class Receiver:
    """An OpenLineage collector on 127.0.0.1: records each POSTed event and validates it against the spec."""

    def __init__(self, status: int = 201):
        self.events: list[dict] = []
        self.errors: list[str] = []
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests.append((self.path, self.headers.get("Authorization")))
                receiver.events.append(body)
                receiver.errors += schema_errors(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver():
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    register_secret(API_KEY)
    monkeypatch.setenv(KEY_ENV, API_KEY)
    return API_KEY


def http_section(url: str) -> str:
    return f"openlineage: {{transport: http, url: '{url}', api_key: '${{{KEY_ENV}}}', timeout_seconds: 2}}\n"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_export_events(events: list[dict], exports: Path, run, slugs: list[str]) -> None:
    """Per dataset exactly START then COMPLETE of one run, naming the AEP dataset, the delivered folder, its manifest
    and its statistics as the manifest records them."""
    assert len(events) == 2 * len(slugs), [(e["eventType"], e["job"]["name"]) for e in events]
    for slug in slugs:
        dataset_id = get_dataset(slug).dataset_id
        mine = [
            e
            for e in events
            if e["job"] == {**e["job"], "namespace": "ajo-exports://acme/dev", "name": f"demo.{dataset_id}"}
        ]
        assert [e["eventType"] for e in mine] == ["START", "COMPLETE"], slug
        start, complete = mine
        assert start["run"]["runId"] == complete["run"]["runId"] == run_uuid(run.run_id, f"export/demo/{slug}")
        assert start["eventTime"] <= complete["eventTime"]
        folder = exports / dataset_id / "exportTime=202611020600"
        manifest_path = next(folder.glob("manifest-*.json"))
        manifest = json.loads(manifest_path.read_text())
        for event in (start, complete):
            (source,) = event["inputs"]
            assert (source["namespace"], source["name"]) == ("aep://acme/dev", dataset_id)
            (target,) = event["outputs"]
            assert (target["namespace"], target["name"]) == ("file", str(folder.resolve()))
            assert [(f["name"], f["type"]) for f in target["facets"]["schema"]["fields"]] == list(
                manifest["schema"].items()
            )
            parent = event["run"]["facets"]["parent"]
            assert parent["run"]["runId"] == run.run_id and parent["job"]["name"] == "export_demo"
            assert event["run"]["facets"][FACET_KEY]["exportTime"] == "2026-11-02T06:00:00Z"
            assert event["run"]["facets"][FACET_KEY]["dagsterRunId"] == run.run_id
        assert "outputStatistics" not in start["outputs"][0].get("outputFacets", {})
        statistics = complete["outputs"][0]["outputFacets"]["outputStatistics"]
        assert statistics["rowCount"] == manifest["totalRows"] == run.exports[slug]["rows"]
        assert statistics["size"] == sum(item["size"] for item in manifest["exportResults"]) > 0
        assert statistics["fileCount"] == len(manifest["exportResults"])
        custom = complete["run"]["facets"][FACET_KEY]
        assert custom["manifestUri"] == manifest_path.resolve().as_uri() == run.exports[slug]["manifest_uri"]
        assert custom["_producer"].startswith("urn:ajo-exports:") and custom["_schemaURL"] == (
            openlineage.FACET_SCHEMA_URL
        )


def test_http_events_for_every_export(tmp_path: Path, lake_root: Path, instance, receiver, api_key) -> None:
    exports = tmp_path / "exports"
    config = local_config(exports, datasets=[FEEDBACK, JOURNEYS], extra=ORGANIZATION + http_section(receiver.url))
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    assert run.success, run.error
    assert receiver.errors == []
    assert receiver.requests == [("/api/v1/lineage", f"Bearer {api_key}")] * 4
    assert_export_events(receiver.events, exports, run, [FEEDBACK, JOURNEYS])
    logs = dagster_text(instance, run.run_id)
    assert WARNING not in logs
    assert api_key not in logs and api_key not in json.dumps(receiver.events)


def test_failing_export_emits_fail(tmp_path: Path, lake_root: Path, instance, receiver, api_key) -> None:
    exports = tmp_path / "exports"
    dataset_id = get_dataset(JOURNEYS).dataset_id
    exports.mkdir()
    (exports / dataset_id).write_text("a file where the dataset's folder must go")
    config = local_config(exports, datasets=[JOURNEYS], extra=ORGANIZATION + http_section(receiver.url))
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    assert not run.success
    assert receiver.errors == []
    assert [e["eventType"] for e in receiver.events] == ["START", "FAIL"]
    start, fail = receiver.events
    assert start["run"]["runId"] == fail["run"]["runId"] == run_uuid(run.run_id, f"export/demo/{JOURNEYS}")
    assert fail["job"]["name"] == f"demo.{dataset_id}"
    assert fail["outputs"][0]["name"] == str((exports / dataset_id / "exportTime=202611020600").resolve())
    error = fail["run"]["facets"]["errorMessage"]
    assert error["programmingLanguage"] == "python" and error["message"].startswith("NotADirectoryError: ")
    assert "manifestUri" not in fail["run"]["facets"][FACET_KEY]
    assert api_key not in dagster_text(instance, run.run_id)


def test_unreachable_or_failing_collector_never_fails_an_export(
    tmp_path: Path, lake_root: Path, instance, api_key
) -> None:
    refusing = Receiver(status=500)
    refusing.thread.start()
    try:
        for url, why in ((f"http://127.0.0.1:{closed_port()}", "ConnectionError"), (refusing.url, "HTTP 500")):
            exports = tmp_path / why.replace(" ", "_")
            config = local_config(exports, datasets=[FEEDBACK, JOURNEYS], extra=ORGANIZATION + http_section(url))
            started = datetime.now(UTC)
            run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
            assert run.success, run.error
            assert (datetime.now(UTC) - started).total_seconds() < 60
            assert {slug: run.exports[slug]["rows"] > 0 for slug in (FEEDBACK, JOURNEYS)} == {
                FEEDBACK: True,
                JOURNEYS: True,
            }
            assert all(run.checks[slug][0] for slug in (FEEDBACK, JOURNEYS)), run.checks
            warnings = [
                record.user_message
                for record in instance.all_logs(run.run_id)
                if WARNING in (record.user_message or "")
            ]
            assert len(warnings) == 2, warnings  # one line per export: its later events are not tried
            assert all(why in line and "START" in line for line in warnings), warnings
            assert api_key not in dagster_text(instance, run.run_id)
        assert len(refusing.events) == 2 and refusing.errors == []
    finally:
        refusing.server.shutdown()
        refusing.server.server_close()


def test_file_transport_writes_the_same_events_as_ndjson(tmp_path: Path, lake_root: Path, instance) -> None:
    exports, events_file = tmp_path / "exports", tmp_path / "lineage" / "events.ndjson"
    section = f"openlineage: {{transport: file, path: '{events_file}'}}\n"
    config = local_config(exports, datasets=[FEEDBACK, JOURNEYS], extra=ORGANIZATION + section)
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    assert run.success, run.error
    lines = events_file.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert all(schema_errors(event) == [] for event in events), [schema_errors(e) for e in events]
    assert_export_events(events, exports, run, [FEEDBACK, JOURNEYS])


def test_no_section_sends_nothing(
    tmp_path: Path, lake_root: Path, instance, receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    monkeypatch.setattr(openlineage, "transport_for", lambda config: opened.append(config))
    config = local_config(tmp_path / "exports", datasets=[FEEDBACK], extra=ORGANIZATION)
    assert parse_config(config).openlineage is None
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    assert run.success, run.error
    assert opened == [] and receiver.events == []
    assert "OpenLineage" not in dagster_text(instance, run.run_id)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{transport: http}", "transport: http needs url"),
        ("{transport: http, url: 'ftp://127.0.0.1'}", "transport: http needs url"),
        ("{transport: http, url: 'http://user:pw@127.0.0.1:5000'}", "url may not carry credentials"),
        ("{transport: http, url: 'http://127.0.0.1:5000', api_key: inline-secret-value}", "inline secrets"),
        ("{transport: file}", "transport: file needs path"),
        ("{transport: file, path: x.ndjson, url: 'http://127.0.0.1'}", "apply only to transport: http"),
        ("{transport: kafka, url: 'http://127.0.0.1'}", "openlineage.transport"),
    ],
)
def test_config_refuses(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(local_config(tmp_path, extra=f"openlineage: {section}\n"))
    assert message in str(caught.value)
    assert "inline-secret-value" not in str(caught.value) and ":pw@" not in str(caught.value)


class _Store:
    """A destination's storage as the naming sees it: its URI, and for Azure its container client."""

    def __init__(self, uri: str, account: str | None = None, container: str | None = None):
        self._uri = uri
        if account:
            self.container = type("Client", (), {"account_name": account, "container_name": container})()

    def uri(self, key: str = "") -> str:
        return f"{self._uri}/{key}"


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (_Store("s3://bucket/exports"), ("s3://bucket", "exports/ds/exportTime=202611020600")),
        (_Store("gs://bucket"), ("gs://bucket", "ds/exportTime=202611020600")),
        (
            _Store("abfss://box@acct.dfs.core.windows.net/exports"),
            ("abfss://box@acct.dfs.core.windows.net", "exports/ds/exportTime=202611020600"),
        ),
        (
            _Store("https://acct.blob.core.windows.net/box/exports", "acct", "box"),
            ("wasbs://box@acct.dfs.core.windows.net", "exports/ds/exportTime=202611020600"),
        ),
        (
            _Store("http://127.0.0.1:10000/devstoreaccount1/dlz-destination", "devstoreaccount1", "dlz-destination"),
            ("wasbs://dlz-destination@devstoreaccount1.dfs.core.windows.net", "ds/exportTime=202611020600"),
        ),
        (_Store("sftp://ajo@127.0.0.1:2222/upload"), ("sftp://127.0.0.1:2222", "/upload/ds/exportTime=202611020600")),
        (_Store("file:///srv/exports"), ("file", "/srv/exports/ds/exportTime=202611020600")),
    ],
)
def test_output_dataset_naming(store: _Store, expected: tuple[str, str]) -> None:
    assert output_dataset(store, "ds/exportTime=202611020600") == expected  # type: ignore[arg-type]


def test_events_name_what_s3_holds(lake_root: Path, instance, receiver, api_key, s3_server,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """To a real S3 server (moto): the output is `s3://<bucket>` with the window folder's key as its name, the
    manifest URI is an object that S3 lists there, and the byte count is what S3 holds under that folder."""
    from ajo_exports_tests.test_destination_s3 import KEY_ENV as S3_KEY_ENV
    from ajo_exports_tests.test_destination_s3 import SECRET_ENV as S3_SECRET_ENV
    from ajo_exports_tests.test_destination_s3 import s3_config

    assert s3_server.writer is not None
    monkeypatch.setenv(S3_KEY_ENV, s3_server.writer.access_key_id)
    monkeypatch.setenv(S3_SECRET_ENV, s3_server.writer.secret_access_key)
    bucket = s3_server.create_bucket()
    config = s3_config(bucket, s3_server.endpoint_url) + ORGANIZATION + http_section(receiver.url)
    run = run_export(config, lake_root, dataflow="to-s3", datasets=[FEEDBACK], export_time=EXPORT_TIME,
                     instance=instance)
    assert run.success, run.error
    assert receiver.errors == []
    assert [e["eventType"] for e in receiver.events] == ["START", "COMPLETE"]
    complete = receiver.events[1]
    dataset_id = get_dataset(FEEDBACK).dataset_id
    folder = f"exports/ajo/{dataset_id}/exportTime=202611020600"
    (target,) = complete["outputs"]
    assert (target["namespace"], target["name"]) == (f"s3://{bucket}", folder)
    held = s3_server.s3().list_objects_v2(Bucket=bucket, Prefix=folder + "/")["Contents"]
    manifests = [o["Key"] for o in held if o["Key"].rsplit("/", 1)[1].startswith("manifest-")]
    assert complete["run"]["facets"][FACET_KEY]["manifestUri"] == f"s3://{bucket}/{manifests[0]}"
    statistics = target["outputFacets"]["outputStatistics"]
    assert statistics["size"] == sum(o["Size"] for o in held if o["Key"] not in manifests)
    assert statistics["fileCount"] == len(held) - 1 and statistics["rowCount"] == run.exports[FEEDBACK]["rows"]


def test_export_refused_before_writing_is_a_fail(tmp_path: Path, lake_root: Path, instance, receiver, api_key) -> None:
    """A record dataset's full export above the hard guardrail is refused before the destination is touched: the
    lineage service still sees the run, as one FAIL naming the refusal, with no output folder."""
    exports = tmp_path / "exports"
    guardrails = "guardrails: {record_dataset_max_records: 1}\n"
    config = local_config(exports, datasets=[JOURNEYS], extra=ORGANIZATION + guardrails + http_section(receiver.url))
    run = run_export(config, lake_root, dataflow="demo", export_time=EXPORT_TIME, instance=instance)
    assert not run.success and "guardrails.record_dataset_max_records" in (run.error or ""), run.error
    assert receiver.errors == []
    assert [e["eventType"] for e in receiver.events] == ["FAIL"]
    (fail,) = receiver.events
    dataset_id = get_dataset(JOURNEYS).dataset_id
    assert fail["run"]["runId"] == run_uuid(run.run_id, f"export/demo/{JOURNEYS}")
    assert fail["job"]["name"] == f"demo.{dataset_id}" and fail["outputs"] == []
    assert [(i["namespace"], i["name"]) for i in fail["inputs"]] == [("aep://acme/dev", dataset_id)]
    assert fail["run"]["facets"]["errorMessage"]["message"].startswith("GuardrailError: dataset journeys")
    assert not exports.exists() or not any(exports.rglob("*.parquet"))
