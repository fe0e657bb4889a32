"""Import dataset-export dataflows from AEP's Flow Service objects into exports.yaml entries.

Input: the JSON AEP's Flow Service API returns (one object, a list, or a list response with `items`): flows, source
connections (their dataset IDs and names), target connections (folder, format, compression, manifest) and base
connections (the destination type by connection spec, the auth method). Output: `destinations:` and `dataflows:`
entries, credentials as `${VAR}` references whose names are listed for the user to set. Whatever cannot be carried
over is reported as a problem line, never dropped in silence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ajo_exports.catalog import DATASETS, Dataset, UnknownDatasetError, get_dataset
from ajo_exports.config import Dataflow
from ajo_exports.destinations import DESTINATIONS, DestinationSettings
from ajo_exports.settings import is_secret

SOURCE_SPEC = "23598e46-f560-407b-88d5-ea6207e49db0"  # the data lake side of every dataset export
# AEP's connection spec ID -> our destination type: each destination module declares its own (aep_connection_spec)
CONNECTION_SPECS: dict[str, type[DestinationSettings]] = {
    d.aep_connection_spec: d for d in DESTINATIONS if d.aep_connection_spec
}
TARGET_FIELDS = {"bucketName": "bucket", "container": "container", "path": "folder", "remotePath": "folder"}
KNOWN_TARGET = {"mode", "datasetFileType", "compression", "includeFileManifest", *TARGET_FIELDS}
HOURS = {3, 6, 8, 12}


@dataclass
class ImportResult:
    destinations: list[dict[str, Any]] = field(default_factory=list)
    dataflows: list[dict[str, Any]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)  # ${VAR} -> what to put in it
    problems: list[str] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        return {"destinations": self.destinations, "dataflows": self.dataflows}


def read_objects(paths: list[Path]) -> list[dict[str, Any]]:
    """Every Flow Service object in the files: an object, a list, or a list response (`items`, or an id map)."""
    found: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable JSON file: {exc}") from None
        items = data.get("items", data) if isinstance(data, dict) else data
        if isinstance(items, dict) and "id" not in items:
            items = list(items.values())
        for item in items if isinstance(items, list) else [items]:
            if not isinstance(item, dict):
                raise ValueError(f"{path}: expected Flow Service objects (JSON objects), found {type(item).__name__}")
            found.append({**item, "_file": str(path)})
    return found


def kind_of(item: dict[str, Any]) -> str:
    if "flowSpec" in item or "scheduleParams" in item:
        return "flow"
    if "baseConnectionId" in item:
        return "target"
    if item.get("connectionSpec", {}).get("id") == SOURCE_SPEC or "datasets" in item.get("params", {}):
        return "source"
    if "auth" in item or item.get("connectionSpec", {}).get("id") in CONNECTION_SPECS:
        return "base"
    return "unknown"


def slug_name(text: str, fallback: str) -> str:
    """AEP names are free text; ours are lowercase letters, digits, '-' and '_' (at most 63)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63]
    return name if name and name[0].isalnum() else fallback


def dataset_for(entry: dict[str, Any]) -> Dataset | None:
    """An AJO dataset by the ID AEP lists, else by its name (an organisation's dataset IDs are its own)."""
    try:
        return get_dataset(str(entry.get("dataSetId", "")))
    except UnknownDatasetError:
        pass
    name = str(entry.get("name", "")).strip().lower()
    return next((d for d in DATASETS if d.name.lower() == name or d.slug == name), None)


def variable(prefix: str, field_name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", f"AJO_{prefix}_{field_name}".upper())


def moment(seconds: object) -> str | None:
    if seconds in (None, ""):
        return None
    return datetime.fromtimestamp(int(str(seconds)), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_of(params: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any] | None:
    """scheduleParams -> our schedule; None (with a problem) for what AEP allows and we do not."""
    mode, unit, interval = params.get("exportMode"), params.get("timeUnit"), params.get("interval")
    start, end = moment(params.get("startTime")), moment(params.get("endTime"))
    if mode == "DAILY_FULL_EXPORT" or (unit == "day" and str(interval) == "0"):
        return {"frequency": "once", **({"start": start} if start else {})}
    if mode not in (None, "FIRST_FULL_THEN_INCREMENTAL"):
        problems.append(f"{where}: scheduleParams.exportMode {mode!r} is unknown: dataflow not imported")
        return None
    if start is None or end is None:
        problems.append(f"{where}: an incremental schedule needs startTime and endTime: dataflow not imported")
        return None
    if unit == "day" and str(interval) == "1":
        return {"frequency": "daily", "start": start, "end": end}
    if unit == "hour" and str(interval).isdigit() and int(str(interval)) in HOURS:
        return {"frequency": "hourly", "every_hours": int(str(interval)), "start": start, "end": end}
    problems.append(f"{where}: scheduleParams timeUnit {unit!r} interval {interval!r} is not daily or every 3, 6, 8 "
                    "or 12 hours: dataflow not imported")
    return None


def import_flows(objects: list[dict[str, Any]], *, known_hosts: dict[str, str] | None = None) -> ImportResult:
    """Turn Flow Service objects into exports.yaml entries; `known_hosts` maps an SFTP host to its host key line or
    SHA256 fingerprint (AEP keeps none, and unknown host keys are refused here)."""
    result = ImportResult()
    by_id = {item["id"]: item for item in objects if "id" in item}
    for item in objects:
        if kind_of(item) == "unknown":
            result.problems.append(f"{item['_file']}: object {item.get('id', '(no id)')} is not a flow, source, "
                                   "target or base connection: ignored")
    names: set[str] = set()
    made: dict[str, str] = {}  # target connection id -> destination name
    for flow in [item for item in objects if kind_of(item) == "flow"]:
        where = f"flow {flow.get('name', flow.get('id'))!r}"
        targets = [by_id.get(i) for i in flow.get("targetConnectionIds", [])]
        sources = [by_id.get(i) for i in flow.get("sourceConnectionIds", [])]
        if len(targets) != 1 or targets[0] is None:
            result.problems.append(f"{where}: needs exactly one target connection among the files: not imported")
            continue
        if not sources or None in sources:
            result.problems.append(f"{where}: its source connection is not among the files: not imported")
            continue
        target = targets[0]
        base = by_id.get(target["baseConnectionId"])
        if base is None:
            result.problems.append(f"{where}: base connection {target['baseConnectionId']} is not among the files: "
                                   "not imported")
            continue
        destination = made.get(target["id"]) or _destination(base, target, names, result, known_hosts or {})
        if destination is None:
            continue
        made[target["id"]] = destination
        schedule = schedule_of(flow.get("scheduleParams", {}), where, result.problems)
        if schedule is None:
            continue
        datasets: list[str] = []
        for source in sources:
            for entry in source.get("params", {}).get("datasets", []):
                dataset = dataset_for(entry)
                if dataset is None:
                    result.problems.append(f"{where}: dataset {entry.get('dataSetId')} ({entry.get('name')!r}) is "
                                           "not one of the 21 Journey Optimizer datasets: left out")
                elif dataset.slug not in datasets:
                    datasets.append(dataset.slug)
        if not datasets:
            result.problems.append(f"{where}: no Journey Optimizer dataset to export: not imported")
            continue
        params = target.get("params", {})
        file_format = str(params.get("datasetFileType", "PARQUET")).lower()
        compression = str(params.get("compression", "GZIP")).lower()
        if file_format == "json" and compression != "gzip":
            result.problems.append(f"{where}: JSON without compression is not offered here (NDJSON is gzip only): "
                                   "imported with compression gzip")
            compression = "gzip"
        dataflow: dict[str, Any] = {
            "name": slug_name(flow.get("name", ""), f"dataflow-{len(result.dataflows) + 1}"),
            "destination": destination,
            "datasets": datasets,
            "format": file_format,
            "compression": compression,
            "manifest": bool(params.get("includeFileManifest", True)),
            "schedule": schedule,
        }
        template = flow.get("scheduleParams", {}).get("foldernameTemplate")
        if template:
            try:
                Dataflow(name="x", destination="x", folder_template=template)
                dataflow["folder_template"] = template
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
                result.problems.append(f"{where}: foldernameTemplate {template!r} is not accepted here ({reason}): "
                                       "the default %DATASET_ID%/%EXPORT_TIME% is used")
        if flow.get("state") == "disabled":
            dataflow["enabled"] = False
        while dataflow["name"] in {d["name"] for d in result.dataflows}:
            dataflow["name"] = f"{dataflow['name']}-{len(result.dataflows) + 1}"[:63]
        result.dataflows.append(dataflow)
    return result


def _destination(base: dict[str, Any], target: dict[str, Any], names: set[str], result: ImportResult,
                 known_hosts: dict[str, str]) -> str | None:
    spec = base.get("connectionSpec", {}).get("id") or target.get("connectionSpec", {}).get("id")
    settings = CONNECTION_SPECS.get(spec or "")
    where = f"connection {base.get('name', base.get('id'))!r}"
    if settings is None:
        result.problems.append(f"{where}: connection spec {spec} is not one of the six dataset export destinations: "
                               "its dataflows are not imported")
        return None
    kind = settings.type_name()
    name = slug_name(base.get("name", ""), kind.replace("_", "-"))
    while name in names:
        name = f"{name}-{len(names) + 1}"[:63]
    names.add(name)
    entry: dict[str, Any] = {"name": name, "type": kind}
    auth = base.get("auth", {}) or {}
    for key, value in (auth.get("params", {}) or {}).items():
        our = settings.aep_auth_fields.get(key)
        if our is None:
            result.problems.append(f"{where}: auth parameter {key!r} ({auth.get('specName')}) has no counterpart: "
                                   "ignored")
            continue
        if is_secret(settings.model_fields[our].annotation):
            entry[our] = "${" + variable(name, our) + "}"
            result.variables[variable(name, our)] = f"{kind} {our} of destination {name!r} (AEP: {key})"
        elif value not in (None, ""):
            entry[our] = int(value) if settings.model_fields[our].annotation is int else value
    for our, spec_field in settings.model_fields.items():
        # a secret the type needs although AEP's auth spec has none (the DLZ's SAS URL: AEP provisions the container)
        if spec_field.is_required() and is_secret(settings.model_fields[our].annotation) and our not in entry:
            entry[our] = "${" + variable(name, our) + "}"
            result.variables[variable(name, our)] = f"{kind} {our} of destination {name!r}"
    for key, value in (target.get("params", {}) or {}).items():
        if key in TARGET_FIELDS:
            entry[TARGET_FIELDS[key]] = value
        elif key not in KNOWN_TARGET:
            result.problems.append(f"{where}: target parameter {key!r} has no counterpart: ignored")
    encryption = base.get("encryptionSpecs") or {}
    if isinstance(encryption, list):
        encryption = encryption[0] if encryption else {}
    key = (encryption.get("params") or {}).get("publicKey")
    if key and (encryption.get("params") or {}).get("encryptionAlgo", "PGPGPG") != "NONE":
        entry["pgp_public_key"] = key
    if kind == "sftp":
        host = entry.get("host", "")
        known = known_hosts.get(host)
        if known is None:
            result.problems.append(f"destination {name!r}: AEP keeps no SFTP host key; add known_hosts or "
                                   f"host_key_fingerprint for {host} (or pass --known-host {host}=SHA256:...)")
        elif known.startswith("SHA256:"):
            entry["host_key_fingerprint"] = known
        else:
            entry["known_hosts"] = known
    result.destinations.append(entry)
    return name
