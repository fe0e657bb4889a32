"""OpenLineage run events for every export: START before its first file is written, COMPLETE once its manifest is
published, FAIL when it raises, so a lineage service (Marquez, DataHub, a catalog) sees each delivery as a run
that reads an AEP dataset and writes a window folder at a destination.

Identifiers (https://openlineage.io/docs/spec/naming):
- job: namespace `ajo-exports://<organisation>/<sandbox>`, name `<dataflow>.<datasetId>`: one job per dataflow and
  dataset, stable across runs and readable without knowing Dagster's asset keys;
- run: a UUID derived from the Dagster run id, the export's asset key and its partition, so the events of one
  export share it and a retried step reports the same run; its parent is the Dagster run;
- input: namespace `aep://<organisation>/<sandbox>`, name the AEP dataset ID;
- output: the destination's dataset naming (`s3://<bucket>`, `gs://<bucket>`,
  `abfss://<container>@<account>.dfs.core.windows.net`, `wasbs://<container>@<account>.dfs.core.windows.net` for
  Azure Blob and the Data Landing Zone, `sftp://<host>:<port>`, `file` for a local folder), name the delivered
  window folder.

Events go straight to the configured transport of openlineage-python (HTTP or file), not through
`OpenLineageClient`, which would also read `openlineage.yml` and `OPENLINEAGE__*` variables: exports.yaml alone
decides where lineage goes. Sending never fails an export: the first failure of an export is one warning line in
the run's log (no secret, no event body) and its remaining events are skipped, so a dead collector costs at most
one timeout per export.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ajo_exports.config import OpenLineageConfig

if TYPE_CHECKING:  # openlineage-python takes a second to import: only exports that send events pay for it
    import polars as pl
    from dagster import OutputContext
    from openlineage.client.event_v2 import RunEvent, RunState
    from openlineage.client.generated.base import RunFacet
    from openlineage.client.generated.output_statistics_output_dataset import OutputStatisticsOutputDatasetFacet
    from openlineage.client.transport.transport import Transport

    from ajo_exports.destinations.base import Storage
    from ajo_exports.destinations.resource import DestinationResource
    from ajo_exports.export.writer import ExportResult
    from ajo_exports.lake import Selection


@functools.cache
def producer_uri() -> str:
    """The events' and facets' `producer`: this platform and its version (a URN: it has no public home page)."""
    from importlib import metadata

    try:
        return f"urn:ajo-exports:{metadata.version('ajo-exports')}"
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "urn:ajo-exports:0.0.0"


FACET_KEY = "ajoExport"
FACET_SCHEMA_URL = "urn:ajo-exports:spec:facets:1-0-0:AjoExportRunFacet.json#/$defs/AjoExportRunFacet"
# The JSON Schema of the custom run facet: there is no public host for it, so it lives here, and a consumer that
# validates facets can load it from `ajo_exports.export.openlineage.FACET_SCHEMA`.
FACET_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": FACET_SCHEMA_URL.split("#")[0],
    "$defs": {
        "AjoExportRunFacet": {
            "type": "object",
            "properties": {
                "_producer": {"type": "string"},
                "_schemaURL": {"type": "string"},
                "dagsterRunId": {"type": "string", "description": "the Dagster run that executed the export"},
                "assetKey": {"type": "string", "description": "the export asset, e.g. export/<dataflow>/<slug>"},
                "destination": {"type": "string", "description": "the destination's name in exports.yaml"},
                "destinationType": {"type": "string"},
                "exportTime": {"type": "string", "format": "date-time", "description": "the window's exportTime"},
                "folderUri": {"type": "string", "description": "the delivered window folder, as the store names it"},
                "manifestUri": {"type": ["string", "null"], "description": "the published manifest (COMPLETE)"},
            },
            "required": ["_producer", "_schemaURL", "dagsterRunId", "assetKey", "destination", "exportTime"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/AjoExportRunFacet",
}
NO_RETRY = {"total": 0, "connect": 0, "read": 0, "status": 0, "redirect": 0, "allowed_methods": ["POST"]}
URL_QUERY = re.compile(r"(https?://[^\s?#]+)\?\S*")


@functools.cache
def facet_class() -> type:
    """The custom run facet `ajoExport`: where the export landed and the manifest that proves it complete."""
    import attr
    from openlineage.client.generated.base import RunFacet

    @attr.define
    class AjoExportRunFacet(RunFacet):
        dagsterRunId: str  # noqa: N815 - OpenLineage facets are camelCase
        assetKey: str  # noqa: N815
        destination: str
        destinationType: str  # noqa: N815
        exportTime: str  # noqa: N815
        folderUri: str | None = attr.field(default=None)  # noqa: N815
        manifestUri: str | None = attr.field(default=None)  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA_URL

    return AjoExportRunFacet


def job_namespace(organization: str, sandbox: str) -> str:
    return f"ajo-exports://{organization}/{sandbox}"


def input_namespace(organization: str, sandbox: str) -> str:
    return f"aep://{organization}/{sandbox}"


def run_uuid(dagster_run_id: str, asset: str, partition: str | None = None) -> str:
    """OpenLineage run ids are UUIDs; the same Dagster run, asset and partition always give the same one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ajo-exports:openlineage:{dagster_run_id}:{asset}:{partition or ''}"))


def output_dataset(storage: Storage, folder: str) -> tuple[str, str]:
    """(namespace, name) of a window folder at a destination, by OpenLineage's dataset naming of its store."""
    from openlineage.client.naming.dataset import ABFSS, GCS, S3, WASBS, LocalFileSystem

    uri = storage.uri(folder)
    parts = urlsplit(uri)
    path = unquote(parts.path)
    key = path.lstrip("/") or "/"
    if parts.scheme == "s3":
        return S3(parts.netloc, key).get_namespace(), key
    if parts.scheme == "gs":
        return GCS(parts.netloc, key).get_namespace(), key
    if parts.scheme == "abfss":
        container, _, host = parts.netloc.partition("@")
        return ABFSS(container, host.split(".")[0], key).get_namespace(), key
    if parts.scheme == "file":
        return LocalFileSystem(path).get_namespace(), path
    if parts.scheme == "sftp":
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        return f"sftp://{host}:{parts.port or 22}", path
    if parts.scheme in ("http", "https"):  # Azure Blob and the Data Landing Zone (a ContainerClient's URL)
        client = getattr(storage, "container", None)
        account, container = getattr(client, "account_name", None), getattr(client, "container_name", None)
        segments = path.strip("/").split("/")
        if not (account and container):  # https://<account>.blob.core.windows.net/<container>/<blob>
            account, container = (parts.hostname or "").split(".")[0], segments[0]
        blob = "/".join(segments[segments.index(container) + 1 :]) if container in segments else key
        return WASBS(container, account, blob or "/").get_namespace(), blob or "/"
    return f"{parts.scheme}://{parts.netloc}", path


def safe_text(text: str, limit: int = 500) -> str:
    """An error's first line without URL queries (SAS tokens live there), short enough for a facet."""
    first = (text.strip().splitlines() or [""])[0]
    return URL_QUERY.sub(r"\1?***", first)[:limit]


def event_time() -> str:
    return datetime.now(UTC).isoformat()


class MissingSecret(LookupError):
    """The api_key's environment variable is not set here; the message names the variable, never a value."""


class ExportLineage:
    """The OpenLineage events of one export; a context manager around the export that sends FAIL if it raises."""

    def __init__(
        self,
        config: OpenLineageConfig | None,
        *,
        warn: Callable[[str], None],
        dagster_run_id: str,
        dagster_job: str,
        asset: str,
        partition: str | None,
        dataflow: str,
        dataset_id: str,
        organization: str,
        sandbox: str,
        destination: str,
        destination_type: str,
        columns: dict[str, str],
        export_time: datetime,
    ):
        self.config, self.warn = config, warn
        self.dagster_run_id, self.dagster_job, self.asset = dagster_run_id, dagster_job, asset
        self.dataflow, self.dataset_id = dataflow, dataset_id
        self.organization, self.sandbox = organization, sandbox
        self.destination, self.destination_type = destination, destination_type
        self.columns = columns
        self.run_id = run_uuid(dagster_run_id, asset, partition)
        self.output: tuple[str, str] | None = None
        self.export_time = export_time
        self.folder_uri: str | None = None
        self._transport: Transport | None = None
        self._broken = config is None
        self._finished = False

    @property
    def enabled(self) -> bool:
        return not (self._broken or self._finished)

    def __enter__(self) -> ExportLineage:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if error is not None:
            self.fail(error)

    def start(self, storage: Storage, folder: str) -> None:
        """START: the export is about to write its window folder."""
        if not self.enabled:
            return
        from openlineage.client.event_v2 import RunState

        self.output = output_dataset(storage, folder)
        self.folder_uri = storage.uri(folder)
        self._emit(RunState.START, self._facets())

    def complete(self, storage: Storage, result: ExportResult) -> None:
        """COMPLETE: every part file and the manifest are published."""
        if not self.enabled:
            return
        from openlineage.client.event_v2 import RunState
        from openlineage.client.generated.output_statistics_output_dataset import OutputStatisticsOutputDatasetFacet

        manifest = storage.uri(result.manifest_key) if result.manifest_key else None
        statistics = OutputStatisticsOutputDatasetFacet(
            rowCount=result.rows, size=result.bytes, fileCount=len(result.files), producer=producer_uri()
        )
        self._emit(RunState.COMPLETE, self._facets(manifest), statistics, last=True)

    def fail(self, error: BaseException) -> None:
        """FAIL: the export raised (before or after START); the export's own error is what Dagster reports."""
        if not self.enabled:
            return
        from openlineage.client.event_v2 import RunState
        from openlineage.client.generated.error_message_run import ErrorMessageRunFacet

        facets = self._facets()
        facets["errorMessage"] = ErrorMessageRunFacet(
            message=safe_text(f"{type(error).__name__}: {error}"), programmingLanguage="python", producer=producer_uri()
        )
        self._emit(RunState.FAIL, facets, last=True)

    def _facets(self, manifest_uri: str | None = None) -> dict[str, RunFacet]:
        from openlineage.client.generated.parent_run import Job as ParentJob
        from openlineage.client.generated.parent_run import ParentRunFacet
        from openlineage.client.generated.parent_run import Run as ParentRun

        facets: dict[str, RunFacet] = {
            FACET_KEY: facet_class()(
                dagsterRunId=self.dagster_run_id,
                assetKey=self.asset,
                destination=self.destination,
                destinationType=self.destination_type,
                exportTime=self.export_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                folderUri=self.folder_uri,
                manifestUri=manifest_uri,
                producer=producer_uri(),
            )
        }
        try:
            parent_id = str(uuid.UUID(self.dagster_run_id))
        except ValueError:
            return facets
        facets["parent"] = ParentRunFacet(
            run=ParentRun(runId=parent_id),
            job=ParentJob(namespace=job_namespace(self.organization, self.sandbox), name=self.dagster_job),
            producer=producer_uri(),
        )
        return facets

    def event(
        self, state: RunState, facets: dict[str, RunFacet], statistics: OutputStatisticsOutputDatasetFacet | None
    ) -> RunEvent:
        """The run event, with the input dataset and (once known) the output folder and its schema."""
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent
        from openlineage.client.generated.job_type_job import JobTypeJobFacet
        from openlineage.client.generated.schema_dataset import SchemaDatasetFacet, SchemaDatasetFacetFields

        schema = SchemaDatasetFacet(
            fields=[SchemaDatasetFacetFields(name=name, type=kind) for name, kind in self.columns.items()],
            producer=producer_uri(),
        )
        outputs = []
        if self.output is not None:
            namespace, name = self.output
            outputs.append(
                OutputDataset(
                    namespace=namespace,
                    name=name,
                    facets={"schema": schema},
                    outputFacets={"outputStatistics": statistics} if statistics else {},
                )
            )
        job_type = JobTypeJobFacet(
            processingType="BATCH", integration="AJO_EXPORTS", jobType="EXPORT", producer=producer_uri()
        )
        return RunEvent(
            eventType=state,
            eventTime=event_time(),
            run=Run(runId=self.run_id, facets=facets),
            job=Job(
                namespace=job_namespace(self.organization, self.sandbox),
                name=f"{self.dataflow}.{self.dataset_id}",
                facets={"jobType": job_type},
            ),
            inputs=[
                InputDataset(
                    namespace=input_namespace(self.organization, self.sandbox),
                    name=self.dataset_id,
                    facets={"schema": schema},
                )
            ],
            outputs=outputs,
            producer=producer_uri(),
        )

    def _emit(
        self,
        state: RunState,
        facets: dict[str, RunFacet],
        statistics: OutputStatisticsOutputDatasetFacet | None = None,
        *,
        last: bool = False,
    ) -> None:
        self._finished = last
        try:
            if self._transport is None:
                self._transport = transport_for(self.config)  # type: ignore[arg-type]
            self._transport.emit(self.event(state, facets, statistics))
        except Exception as exc:  # noqa: BLE001 - lineage is best effort: the export goes on
            self._broken = True
            self.warn(
                f"OpenLineage: could not send the {state.value} event of {self.dataflow}.{self.dataset_id} to "
                f"{where(self.config)} ({describe(exc)}); the export goes on without lineage events"
            )
        finally:
            if (last or self._broken) and self._transport is not None:
                self._transport.close()
                self._transport = None


def where(config: OpenLineageConfig | None) -> str:
    """The collector's address as it may be shown: no query, no credentials (the config refuses them anyway)."""
    if config is None:
        return "(none)"
    if config.transport == "file":
        return f"file {config.path}"
    parts = urlsplit(config.url or "")
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/{config.endpoint.lstrip('/')}"


def describe(exc: BaseException) -> str:
    """The failure's kind, and an HTTP status when the collector answered: never its text, which may echo a key."""
    if isinstance(exc, MissingSecret):
        return str(exc)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"{type(exc).__name__}" + (f", HTTP {status}" if status else "")


def transport_for(config: OpenLineageConfig) -> Transport:
    """The openlineage-python transport that `config` names: HTTP with a short timeout and no retries, or a file
    appended to with one JSON event per line."""
    if config.transport == "file":
        from openlineage.client.transport.file import FileConfig, FileTransport

        path = Path(config.path or "").expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport, TokenProvider

    auth = TokenProvider({})
    if config.api_key is not None:
        key = os.environ.get(config.api_key.env_var)
        if not key:
            raise MissingSecret(f"api_key's environment variable {config.api_key.env_var} is not set")
        auth = ApiKeyTokenProvider({"apiKey": key})
    return HttpTransport(
        HttpConfig(
            url=config.url or "",
            endpoint=config.endpoint,
            timeout=config.timeout_seconds,
            auth=auth,
            retry=dict(NO_RETRY),
        )
    )


def export_lineage(
    section: str | None,
    context: OutputContext,
    settings: dict,
    rows: Selection | pl.LazyFrame,
    destination: DestinationResource,
    export_time: datetime,
) -> ExportLineage:
    """The lineage of the export that the IO manager is about to write (`section`: the `openlineage:` section of
    exports.yaml as JSON, None when it is absent and nothing is sent)."""
    from ajo_exports.export.manifest import schema_json

    config = OpenLineageConfig.model_validate_json(section) if section else None
    columns: dict[str, str] = {}
    if config is not None:
        schema = rows.collect_schema() if hasattr(rows, "collect_schema") else rows.schema
        columns = schema_json(schema)
    return ExportLineage(
        config,
        warn=context.log.warning,
        dagster_run_id=context.run_id,
        dagster_job=context.step_context.job_name,
        asset=context.asset_key.to_user_string() if context.has_asset_key else context.step_key,
        partition=context.asset_partition_key if context.has_asset_partitions else None,
        dataflow=settings["dataflow"],
        dataset_id=settings["dataset_id"],
        organization=settings["organization"],
        sandbox=settings["sandbox"],
        destination=destination.name,
        destination_type=destination.destination_type,
        columns=columns,
        export_time=export_time,
    )
