"""`ajo-exports`: seed the sample lake, list datasets, run and verify exports through Dagster."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from ajo_exports.catalog import DATASETS, Tier, UnknownDatasetError, datasets_for_tier, get_dataset
from ajo_exports.config import ConfigError, ExportsConfig, ajo_home, config_path, load_config
from ajo_exports.destinations import build_destination
from ajo_exports.destinations.base import DestinationError, probe
from ajo_exports.lake import LakeError, LocalLake, generate_batch, seed_lake

INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def prepare_home(home: Path) -> Path:
    """Create .ajo/{lake,exports,dagster} and point DAGSTER_HOME at it, telemetry off."""
    dagster_home = home / "dagster"
    for folder in (home / "lake", home / "exports", dagster_home):
        folder.mkdir(parents=True, exist_ok=True)
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.exists():
        project_yaml = Path("dagster.yaml")
        if project_yaml.exists():
            shutil.copyfile(project_yaml, instance_yaml)
        else:
            instance_yaml.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def cmd_datasets(args: argparse.Namespace, config: ExportsConfig | None) -> int:
    chosen = datasets_for_tier(Tier(args.tier)) if args.tier else DATASETS
    if args.tier == Tier.ULTIMATE.value:
        chosen = tuple(d for d in chosen if d.tier is Tier.ULTIMATE)
    if args.json:
        print(json.dumps([
            {"slug": d.slug, "name": d.name, "tier": d.tier.value, "datasetId": d.dataset_id,
             "xdmClass": d.xdm_class.value, "description": d.description}
            for d in chosen
        ], indent=2))
        return 0
    print(_table([[d.slug, d.tier.value, d.dataset_id, d.xdm_class.value, d.name] for d in chosen],
                 ["dataset", "tier", "dataset id", "class", "name"]))
    return 0


def cmd_lake(args: argparse.Namespace, config: ExportsConfig | None) -> int:
    lake = LocalLake(ajo_home() / "lake")
    if args.lake_command == "seed":
        written = seed_lake(lake, rows=args.rows, batches=args.batches, seed=args.seed)
        total = sum(b.rows for batches in written.values() for b in batches)
        print(f"seeded {len(written)} datasets, {total} rows in {sum(len(b) for b in written.values())} batches "
              f"at {lake.root}")
        return 0
    dataset = get_dataset(args.dataset)
    now = datetime.now(UTC)
    existing = lake.list_batches(dataset) if lake.is_seeded(dataset) else []
    frame = generate_batch(dataset, args.rows, seed=args.seed, batch_index=len(existing), now=now)
    batch = lake.append_batch(dataset, frame, ingested_at=now)
    print(f"appended batch {batch.batch_id} ({batch.rows} rows) to {dataset.slug}, ingested {now.isoformat()}")
    return 0


def _definitions(config: ExportsConfig):
    from ajo_exports.definitions import build_definitions, export_specs

    return build_definitions(config, ajo_home()), export_specs(config)


def _instance():
    from dagster import DagsterInstance

    prepare_home(ajo_home())
    return DagsterInstance.get()


def _dataflows(config: ExportsConfig, name: str | None) -> list[str]:
    if name:
        config.dataflow(name)
        return [name]
    return [flow.name for flow in config.dataflows if flow.enabled]


def _print_report(report, config: ExportsConfig, dataflow: str) -> None:
    rows = []
    for item in report.exports.values():
        meta = item.metadata
        check = "-" if item.check_passed is None else ("passed" if item.check_passed else "FAILED")
        rows.append([item.slug, item.tier, meta.get("files", "-"), meta.get("rows", "-"), meta.get("bytes", "-"), check])
    print(f"dataflow {dataflow} (run {report.run_id})")
    print(_table(rows, ["dataset", "tier", "files", "rows", "bytes", "check"]))
    failed = [i for i in report.exports.values() if i.check_passed is False]
    for item in failed:
        print(f"  check failed for {item.slug}: {item.check_description}")
    flow = config.dataflow(dataflow)
    with build_destination(config.destination(flow.destination)).open_storage() as storage:
        print(f"files landed in {storage.uri()}")


def cmd_run(args: argparse.Namespace, config: ExportsConfig) -> int:
    from ajo_exports.operations import run_dataflow

    for slug in args.dataset or []:
        get_dataset(slug)
    export_time = datetime.fromisoformat(args.export_time) if args.export_time else None
    lake = LocalLake(ajo_home() / "lake")
    if not lake.has_data():
        raise CliError(f"the lake at {lake.root} is empty: run `ajo-exports lake seed` first")
    defs, specs = _definitions(config)
    instance = _instance()
    status = 0
    for dataflow in _dataflows(config, args.dataflow):
        report = run_dataflow(defs, specs, instance, dataflow=dataflow, datasets=args.dataset,
                              partition_key=args.window, export_time=export_time)
        if not report.success:
            raise CliError(f"dataflow {dataflow} failed: {report.error}")
        _print_report(report, config, dataflow)
        if any(item.check_passed is False for item in report.exports.values()):
            status = 1
    return status


def cmd_verify(args: argparse.Namespace, config: ExportsConfig) -> int:
    from ajo_exports.operations import run_dataflow

    defs, specs = _definitions(config)
    instance = _instance()
    status = 0
    for dataflow in _dataflows(config, args.dataflow):
        report = run_dataflow(defs, specs, instance, dataflow=dataflow, partition_key=args.window, checks_only=True)
        if not report.success:
            raise CliError(f"checks of dataflow {dataflow} could not run: {report.error}")
        _print_report(report, config, dataflow)
        if any(item.check_passed is not True for item in report.exports.values()):
            status = 1
    return status


def cmd_check_connection(args: argparse.Namespace, config: ExportsConfig) -> int:
    destination = config.destination(args.destination)
    with build_destination(destination).open_storage() as storage:
        steps = probe(storage)
    for step in steps:
        print(f"ok  {step}")
    print(f"destination {destination.name!r} ({destination.type}) accepts writes, lists and deletes at {storage.uri()}")
    return 0


def cmd_destinations(args: argparse.Namespace, config: ExportsConfig) -> int:
    rows = [[d.name, d.type, d.destination_id, d.folder or "/"] for d in config.destinations]
    print(_table(rows, ["destination", "type", "destination id", "folder"]))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ajo-exports", description=__doc__)
    root.add_argument("--config", help="exports.yaml (default: $AJO_EXPORTS_CONFIG, ./exports.yaml, bundled demo)")
    sub = root.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help="list the Journey Optimizer datasets")
    p.add_argument("--tier", choices=[t.value for t in Tier])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets, needs_config=False)

    lake = sub.add_parser("lake", help="the embedded sample lake")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True)
    seed = lake_sub.add_parser("seed", help="write a deterministic sample lake for every dataset")
    seed.add_argument("--rows", type=int, default=2000)
    seed.add_argument("--batches", type=int, default=4)
    seed.add_argument("--seed", type=int, default=7)
    append = lake_sub.add_parser("append", help="ingest one new batch of a dataset, stamped now")
    append.add_argument("--dataset", required=True)
    append.add_argument("--rows", type=int, default=100)
    append.add_argument("--seed", type=int, default=11)
    lake.set_defaults(func=cmd_lake, needs_config=False)

    run = sub.add_parser("run", help="export dataflows through Dagster and run their delivery checks")
    run.add_argument("--dataflow")
    run.add_argument("--dataset", action="append", help="limit to a dataset slug (repeatable)")
    run.add_argument("--window", help="the partition key of the window to export (scheduled dataflows)")
    run.add_argument("--export-time", help="ISO time naming a once-export's exportTime folder")
    run.set_defaults(func=cmd_run, needs_config=True)

    verify = sub.add_parser("verify", help="run the delivery checks of dataflows; non-zero exit on any failure")
    verify.add_argument("dataflow", nargs="?")
    verify.add_argument("--window")
    verify.set_defaults(func=cmd_verify, needs_config=True)

    check = sub.add_parser("check-connection", help="write, list and delete a probe object at a destination")
    check.add_argument("destination")
    check.set_defaults(func=cmd_check_connection, needs_config=True)

    dest = sub.add_parser("destinations", help="list the configured destinations")
    dest.set_defaults(func=cmd_destinations, needs_config=True)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.config:
            os.environ["AJO_EXPORTS_CONFIG"] = args.config
        config = load_config(config_path()) if args.needs_config else None
        return args.func(args, config)
    except (CliError, ConfigError, LakeError, DestinationError) as exc:
        print(f"ajo-exports: error: {exc}", file=sys.stderr)
        return 2
    except UnknownDatasetError as exc:
        print(f"ajo-exports: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
