"""`ajo-exports`: seed the sample lake, list datasets, run and verify exports through Dagster."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

from ajo_exports.activation import Confirmations
from ajo_exports.catalog import DATASETS, Tier, UnknownDatasetError, datasets_for_tier, get_dataset
from ajo_exports.config import ConfigError, Dataflow, ExportsConfig, Frequency, Permission, config_path, load_config
from ajo_exports.destinations import DESTINATIONS
from ajo_exports.destinations.base import DestinationError, probe
from ajo_exports.destinations.resource import open_destination
from ajo_exports.export.formats import extension
from ajo_exports.export.layout import LayoutContext, render_folder
from ajo_exports.export.window import partitions_for
from ajo_exports.lake import SOURCES, LakeError, LocalLake
from ajo_exports.lake.generator import generate_batch, seed_lake
from ajo_exports.lake.resource import open_lake
from ajo_exports.settings import ajo_home, field_reference

INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block), exit 2: the same shape as every other
    error of the command, so scripts and people see one thing to fix."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ajo-exports: error: {message}\n")


def positive_int(text: str) -> int:
    """`--rows` and `--batches`: a whole number of at least 1 (argparse names the argument)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (at least 1)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a whole number of at least 1")
    return value


def utc_time(text: str) -> datetime:
    """An ISO-8601 time with its offset (`2026-11-30T03:15:00Z`): a naive time would mean the machine's zone."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 UTC time such as 2026-11-30T03:15:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: write it in UTC, e.g. {text.strip()}Z")
    return moment.astimezone(UTC)


def past_utc_time(text: str) -> datetime:
    """`--ingested-at`: a UTC time that has already happened (a batch cannot be ingested in the future)."""
    moment = utc_time(text)
    now = datetime.now(UTC)
    if moment > now:
        raise argparse.ArgumentTypeError(f"{text!r} is in the future (now is {now:%Y-%m-%dT%H:%M:%SZ})")
    return moment


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


def principal(args: argparse.Namespace) -> str | None:
    return args.principal or os.environ.get("AJO_EXPORTS_PRINCIPAL") or None


def require(config: ExportsConfig, args: argparse.Namespace, permission: Permission) -> None:
    """Refuse a command the acting principal may not run (only when the config has an `access` section)."""
    who = principal(args)
    if config.allows(who, permission):
        return
    if who is None:
        raise CliError(
            f"{config_path()}: access control is on: act as a principal with --as NAME or AJO_EXPORTS_PRINCIPAL"
        )
    raise CliError(f"principal {who!r} lacks permission {permission.value} needed for `{args.command}`")


def cmd_datasets(args: argparse.Namespace, config: ExportsConfig) -> int:
    require(config, args, Permission.VIEW_DATASETS)
    chosen = datasets_for_tier(Tier(args.tier)) if args.tier else DATASETS
    if args.tier == Tier.ULTIMATE.value:
        chosen = tuple(d for d in chosen if d.tier is Tier.ULTIMATE)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "slug": d.slug,
                        "name": d.name,
                        "tier": d.tier.value,
                        "datasetId": d.dataset_id,
                        "xdmClass": d.xdm_class.value,
                        "description": d.description,
                    }
                    for d in chosen
                ],
                indent=2,
            )
        )
        return 0
    print(
        _table(
            [[d.slug, d.tier.value, d.dataset_id, d.xdm_class.value, d.name] for d in chosen],
            ["dataset", "tier", "dataset id", "class", "name"],
        )
    )
    return 0


def seed_only(lake: LocalLake, datasets: list, *, rows: int, batches: int, seed: int) -> dict:
    """Seed only `datasets`, leaving the others as they are: `seed_lake` clears the whole lake, so it writes
    into a scratch lake inside the root and each seeded folder then replaces its dataset's folder by rename."""
    import tempfile

    lake.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".seed-", dir=lake.root))
    try:
        written = seed_lake(LocalLake(scratch / "lake"), rows=rows, batches=batches, seed=seed, datasets=datasets)
        for slug in written:
            if (lake.root / slug).exists():
                os.replace(lake.root / slug, scratch / f"old-{slug}")
            os.replace(scratch / "lake" / slug, lake.root / slug)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {slug: lake.list_batches(get_dataset(slug)) for slug in written}


def _config_if_valid() -> ExportsConfig | None:
    """The config in force for an optional extra (the windows `lake append` names); the lake never needs it."""
    try:
        return load_config(config_path())
    except ConfigError:
        return None


def cmd_lake(args: argparse.Namespace, config: ExportsConfig | None) -> int:
    lake = LocalLake(ajo_home() / "lake")
    if args.lake_command == "seed":
        if args.dataset:
            chosen = [get_dataset(s.strip()) for v in args.dataset for s in v.split(",") if s.strip()]
            written = seed_only(lake, chosen, rows=args.rows, batches=args.batches, seed=args.seed)
        else:
            written = seed_lake(lake, rows=args.rows, batches=args.batches, seed=args.seed)
        total = sum(b.rows for batches in written.values() for b in batches)
        print(
            f"seeded {len(written)} datasets, {total} rows in {sum(len(b) for b in written.values())} batches "
            f"at {lake.root}"
        )
        return 0
    dataset = get_dataset(args.dataset)
    now = args.ingested_at or datetime.now(UTC)
    existing = lake.list_batches(dataset) if lake.is_seeded(dataset) else []
    frame = generate_batch(dataset, args.rows, seed=args.seed, batch_index=len(existing), now=now)
    batch = lake.append_batch(dataset, frame, ingested_at=now)
    stamp = batch.ingested_at.isoformat().replace("+00:00", "Z")
    windows = _windows_of(_config_if_valid(), dataset, now)
    print(f"appended batch {batch.batch_id} ({batch.rows} rows) to {dataset.slug}, ingested {stamp}{windows}")
    return 0


def _windows_of(config: ExportsConfig | None, dataset, moment: datetime) -> str:
    """`, window daily 2026-11-30`: which export window of each scheduled dataflow takes a batch ingested at
    `moment` (cheap: no Dagster instance), so a replay or late-data test knows what to run."""
    if config is None:
        return ""
    found = []
    for flow in config.dataflows:
        partitions = partitions_for(flow.schedule)
        if partitions is None or dataset not in config.datasets_of(flow):
            continue
        start, end = flow.schedule.start, flow.schedule.end
        if start is None or end is None or moment >= end:
            continue
        first = partitions.get_first_partition_key()
        window = first if moment < start else partitions.get_partition_key_for_timestamp(moment.timestamp())
        found.append(f"{flow.name} {window}")
    return f", window {', '.join(found)}" if found else ""


def _definitions(config: ExportsConfig):
    """The definitions of the config in force (the module's own when they are of the same file and home)."""
    from ajo_exports.definitions import definitions_for, export_specs

    return definitions_for(config_path(), ajo_home()), export_specs(config)


def _instance():
    from dagster import DagsterInstance

    prepare_home(ajo_home())
    return DagsterInstance.get()


def _dataflows(config: ExportsConfig, name: str | None) -> list[str]:
    if name:
        config.dataflow(name)
        return [name]
    return [flow.name for flow in config.dataflows if flow.enabled]


def report_json(report, config: ExportsConfig, dataflow: str) -> dict:
    """One dataflow's run as plain values for `--json`: per export its numbers, files, manifest and check."""
    exports = []
    for item in report.exports.values():
        meta = item.metadata
        exports.append(
            {
                "dataset": item.slug,
                "tier": item.tier,
                **{key: meta.get(key) for key in ("rows", "files", "bytes", "seconds", "mb_per_second")},
                **{key: meta.get(key) for key in ("export_time", "folder_uri", "manifest_uri", "uris")},
                "check": None if item.check_passed is None else ("passed" if item.check_passed else "failed"),
                "check_description": item.check_description,
                "guardrail_warning": item.guardrail_warning,
            }
        )
    return {
        "dataflow": dataflow,
        "run_id": report.run_id,
        "success": report.success,
        "error": report.error,
        "destination": config.dataflow(dataflow).destination,
        "exports": exports,
    }


@contextmanager
def _progress(instance, tag: str, quiet: bool) -> Iterator[None]:
    """Follow the run's exports on standard error while it runs: in place on a terminal, else plain lines."""
    if quiet:
        yield
        return
    from ajo_exports.progress import ProgressDisplay, RunWatcher

    with RunWatcher(instance, tag, ProgressDisplay(sys.stderr).update):
        yield


def _print_report(report, config: ExportsConfig, dataflow: str) -> None:
    rows = []
    for item in report.exports.values():
        meta = item.metadata
        check = "-" if item.check_passed is None else ("passed" if item.check_passed else "FAILED")
        rows.append(
            [item.slug, item.tier, meta.get("files", "-"), meta.get("rows", "-"), meta.get("bytes", "-"), check]
        )
    print(f"dataflow {dataflow} (run {report.run_id})")
    print(_table(rows, ["dataset", "tier", "files", "rows", "bytes", "check"]))
    failed = [i for i in report.exports.values() if i.check_passed is False]
    for item in failed:
        print(f"  check failed for {item.slug}: {item.check_description}")
    for item in report.exports.values():
        if item.guardrail_warning:
            print(f"  warning: {item.guardrail_warning}")
    print(f"files landed in {landed_in(report) or config.destination(config.dataflow(dataflow).destination).location}")


def landed_in(report) -> str | None:
    """The destination folder as the destination itself reported it (its real path, e.g. an SFTP login folder
    resolved), taken from an export's window folder URI minus the window folder."""
    for item in report.exports.values():
        uri, folder = item.metadata.get("folder_uri"), item.metadata.get("folder")
        if uri and folder and uri.rstrip("/").endswith(folder.strip("/")):
            return uri.rstrip("/")[: -len(folder.strip("/"))].rstrip("/")
    return None


def last_closed_window(flow: Dataflow) -> str | None:
    """A scheduled dataflow run by hand exports its latest closed window unless --window says otherwise."""
    partitions = partitions_for(flow.schedule)
    if partitions is None:
        return None
    keys = partitions.get_partition_keys(current_time=datetime.now(UTC))
    if not keys:
        raise CliError(
            f"dataflow {flow.name!r} has no closed export window yet: its first one ends at "
            f"{first_export(flow):%Y-%m-%d %H:%M} UTC; pass --window KEY to export another"
        )
    return keys[-1]


def without_class(error: str | None) -> str | None:
    """Dagster prefixes a step's error with its class (`ajo_exports.lake.source.LakeError: ...`): the product's own
    errors are already sentences, so the prefix goes; any other class stays, it says what broke."""
    return re.sub(r"\bajo_exports(?:\.\w+)+\.\w*Error: ", "", error) if error else error


def check_window(flow: Dataflow, window: str) -> None:
    """Refuse a `--window` that is not a closed window of the dataflow before Dagster sees it (its error is a
    traceback), naming the format, the first window and the latest closed one."""
    partitions = partitions_for(flow.schedule)
    if partitions is None:
        raise CliError(f"--window {window}: dataflow {flow.name!r} is a once export and has no windows: drop --window")
    closed = partitions.get_partition_keys(current_time=datetime.now(UTC))
    if window in closed:
        return
    shape = "YYYY-MM-DD" if flow.schedule.frequency is Frequency.DAILY else "YYYY-MM-DD-HH:MM"
    first = partitions.get_first_partition_key()
    closes = first_export(flow)
    latest = f"latest closed {closed[-1]}" if closed else f"none closed before {closes:%Y-%m-%d %H:%M} UTC"
    opened = partitions.get_partition_keys(current_time=flow.schedule.end)
    why = f"window of dataflow {flow.name!r} has not closed yet" if window in opened else (
        f"not a window of dataflow {flow.name!r}"
    )
    raise CliError(f"--window {window}: {why} (format {shape}; first {first}, {latest})")


def cmd_run(args: argparse.Namespace, config: ExportsConfig) -> int:
    from ajo_exports.operations import StepProcesses, run_dataflow, start_step_processes
    from ajo_exports.progress import RUN_TAG

    require(config, args, Permission.MANAGE_AND_ACTIVATE_DATASET_DESTINATIONS)
    for slug in args.dataset or []:
        get_dataset(slug)
    export_time = args.export_time
    dataflows = _dataflows(config, args.dataflow)
    if args.window:
        for name in dataflows:
            check_window(config.dataflow(name), args.window)
    for name in dataflows:  # Dagster's own error for an unset EnvVar is a traceback deep in resource set-up
        destination = config.destination(config.dataflow(name).destination)
        missing = destination.missing_secrets()
        if missing:
            raise CliError(
                f"{config_path()}: destination {destination.name!r} needs environment variables: {', '.join(missing)}"
            )
    if missing := config.source.missing_secrets():
        raise CliError(f"{config_path()}: source needs environment variables: {', '.join(missing)}")
    lake = open_lake(config.source, ajo_home())
    if not lake.has_data():
        hint = "run `ajo-exports lake seed` first" if config.source.type == "local" else "no dataset has a batch index"
        raise CliError(f"the lake at {lake.root} is empty: {hint}")
    selected = [
        [d for d in config.datasets_of(config.dataflow(name)) if not args.dataset or d.slug in args.dataset]
        for name in dataflows
    ]
    # several exports run concurrently in step processes (unless execution.max_concurrent is 1)
    processes = StepProcesses(config_path(), ajo_home()) if config.execution.concurrency > 1 else None
    concurrent = [name for name, datasets in zip(dataflows, selected, strict=True) if len(datasets) > 1]
    if processes and concurrent:  # the server that forks the step processes loads meanwhile
        start_step_processes(ajo_home() / "dagster" / "logs" / "step-processes.log", [
            processes.job_args(name) for name in concurrent
        ])
    defs, specs = _definitions(config)
    instance = _instance()
    status = 0
    results: list[dict] = []
    for dataflow in dataflows:
        window = args.window or last_closed_window(config.dataflow(dataflow))
        tag = uuid.uuid4().hex
        with _progress(instance, tag, quiet=args.json):
            report = run_dataflow(
                defs,
                specs,
                instance,
                dataflow=dataflow,
                datasets=args.dataset,
                partition_key=window,
                export_time=export_time,
                processes=processes,
                tags={RUN_TAG: tag},
            )
        if not report.success and not args.json:
            raise CliError(f"dataflow {dataflow} failed: {without_class(report.error)}")
        results.append(report_json(report, config, dataflow))
        if not args.json:
            _print_report(report, config, dataflow)
        if not report.success:
            status = 2
        elif any(item.check_passed is False for item in report.exports.values()):
            status = max(status, 1)
    if args.json:
        print(json.dumps({"command": "run", "status": status, "dataflows": results}, indent=2, default=str))
    return status


def cmd_verify(args: argparse.Namespace, config: ExportsConfig) -> int:
    from ajo_exports.operations import run_dataflow

    require(config, args, Permission.VIEW_DESTINATIONS)
    defs, specs = _definitions(config)
    instance = _instance()
    status = 0
    results: list[dict] = []
    for dataflow in _dataflows(config, args.dataflow):
        report = run_dataflow(defs, specs, instance, dataflow=dataflow, partition_key=args.window, checks_only=True)
        if not report.success:
            raise CliError(f"checks of dataflow {dataflow} could not run: {report.error}")
        results.append(report_json(report, config, dataflow))
        if not args.json:
            _print_report(report, config, dataflow)
        if any(item.check_passed is not True for item in report.exports.values()):
            status = 1
    if args.json:
        print(json.dumps({"command": "verify", "status": status, "dataflows": results}, indent=2, default=str))
    return status


def first_export(flow: Dataflow) -> datetime | None:
    """When the first export happens: the end of the first cadence window, or the once-export's start."""
    partitions = partitions_for(flow.schedule)
    if partitions is None:
        return flow.schedule.start
    keys = partitions.get_partition_keys(current_time=flow.schedule.end)
    return partitions.time_window_for_partition_key(keys[0]).end if keys else None


def cadence(flow: Dataflow) -> str:
    plan = flow.schedule
    if plan.frequency is Frequency.ONCE:
        return "once, a full export" + (f" at {plan.start:%Y-%m-%d %H:%M} UTC" if plan.start else " when run")
    every = "daily" if plan.frequency is Frequency.DAILY else f"every {plan.every_hours} hours"
    return f"{every} from {plan.start:%Y-%m-%d %H:%M} UTC, incremental (first export: everything so far)"


def review_lines(config: ExportsConfig, flow: Dataflow, now: datetime) -> tuple[list[str], list[str]]:
    """What `review` prints, and the problems that make it exit non-zero."""
    problems: list[str] = []
    destination = config.destination(flow.destination)
    datasets = config.datasets_of(flow)
    first = first_export(flow)
    end = flow.schedule.end
    lines = [
        f"Dataflow       {flow.name} ({'enabled' if flow.enabled else 'disabled'})",
        f"Organization   {config.organization.name}, sandbox {config.organization.sandbox}, "
        f"{config.organization.product_tier.value.capitalize()}",
        f"Destination    {destination.name} ({destination.type}), id {destination.destination_id}",
        f"Location       {destination.location}",
        f"Datasets       {len(datasets)}",
        *(f"  - {d.slug} ({d.tier.value}, {d.dataset_id})" for d in datasets),
        f"Format         {flow.format.value}, compression {flow.compression.value}, files *."
        f"{extension(flow.format, flow.compression)}{'.gpg' if destination.pgp_public_key else ''}, "
        f"manifest {'on' if flow.manifest else 'off'}",
        f"Schedule       {cadence(flow)}",
        f"First export   {first:%Y-%m-%d %H:%M} UTC" if first else "First export   when run (`ajo-exports run`)",
        f"End date       {end:%Y-%m-%d %H:%M} UTC" if end else "End date       none (a once export)",
        f"Entitlement    ok: every dataset is allowed on {config.organization.product_tier.value.capitalize()}",
    ]
    if datasets:
        folder = render_folder(
            flow.folder_template,
            LayoutContext(
                datasets[0].dataset_id,
                first or now,
                first or now,
                config.organization.sandbox,
                config.organization.name,
                destination.type,
                destination.name,
                destination.destination_id,
            ),
        )
        lines.append(f"First folder   {destination.location.rstrip('/')}/{folder}/")
    missing = destination.missing_secrets()
    if missing:
        problems.append(f"destination {destination.name!r} needs environment variables: {', '.join(missing)}")
    if end is not None and end <= now:
        problems.append(f"the end date {end:%Y-%m-%d %H:%M} UTC has passed: nothing would be exported")
    elif end is not None and end - now <= timedelta(days=14):
        lines.append(f"Warning        the end date is within 14 days ({end:%Y-%m-%d})")
    lines += guardrail_lines(config, flow, datasets, problems)
    ok, why = Confirmations(ajo_home()).status(config, flow)
    lines.append(f"Confirmation   {why}")
    return lines, problems


def guardrail_lines(config: ExportsConfig, flow: Dataflow, datasets, problems: list[str]) -> list[str]:
    """AEP's record guardrails against what the lake holds now, as the first (full) export would meet them: a hard
    limit is a problem (activation refused), a soft one a warning."""
    from ajo_exports.assets import ExportAssetSpec

    lake = open_lake(config.source, ajo_home())
    limits = config.guardrails
    hard, setting = limits.max_records(flow)
    lines = [f"Guardrails     warn above {limits.warn_records:,} records; a record dataset's full export at most "
             f"{hard:,} ({setting}); destinations {len(config.destinations)} of {limits.destinations_per_sandbox}"]
    destination = config.destination(flow.destination)
    worst = None
    for dataset in datasets:
        if not lake.is_seeded(dataset):
            continue
        records = sum(batch.rows for batch in lake.list_batches(dataset))
        status = ExportAssetSpec(flow, dataset, destination, config.organization, limits).guardrail(
            records, full_export=True
        )
        if status.refusal:
            problems.append(status.refusal)
        elif status.warning:
            lines.append(f"Warning        {status.warning}")
        if worst is None or records > worst[1]:
            worst = (dataset.slug, records)
    if worst:
        lines.append(f"  largest dataset now {worst[0]}: {worst[1]:,} records")
    return lines


def cmd_review(args: argparse.Namespace, config: ExportsConfig) -> int:
    require(config, args, Permission.VIEW_DESTINATIONS)
    require(config, args, Permission.VIEW_DATASETS)
    flows = [config.dataflow(args.dataflow)] if args.dataflow else config.dataflows
    now = datetime.now(UTC)
    status = 0
    for flow in flows:
        lines, problems = review_lines(config, flow, now)
        print("\n".join(lines))
        for problem in problems:
            print(f"Problem        {problem}")
            status = 1
        print()
    return status


def cmd_import_aep(args: argparse.Namespace, config: ExportsConfig | None) -> int:
    """Flow Service JSON -> destinations and dataflows; variables to set and anything not carried over on stderr."""
    import yaml

    from ajo_exports.aep_import import import_flows, read_objects

    hosts = dict(item.split("=", 1) for item in args.known_host if "=" in item)
    try:
        result = import_flows(read_objects(args.files), known_hosts=hosts)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    text = yaml.safe_dump(result.config(), sort_keys=False, width=120)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {len(result.destinations)} destinations and {len(result.dataflows)} dataflows to {args.output}",
              file=sys.stderr)
    else:
        print(text, end="")
    for name, what in result.variables.items():
        print(f"set {name}: {what}", file=sys.stderr)
    for problem in result.problems:
        print(f"not carried over: {problem}", file=sys.stderr)
    return 1 if result.problems or not result.dataflows else 0


def cmd_usage(args: argparse.Namespace, config: ExportsConfig) -> int:
    """What the `ajo/license_usage` asset records, computed now from the same materializations."""
    from ajo_exports.definitions import export_specs
    from ajo_exports.usage import license_usage

    require(config, args, Permission.VIEW_DATASETS)
    usage = license_usage(_instance(), [spec.key for spec in export_specs(config)], config.organization,
                          year=args.year)
    if args.json:
        print(json.dumps({**asdict(usage), "share_used": usage.share_used, "projected_share": usage.projected_share,
                          "status": usage.status}, indent=2, default=str))
        return 0
    print(usage.summary())
    return 1 if usage.status == "exceeded" else 0


def cmd_activate(args: argparse.Namespace, config: ExportsConfig) -> int:
    require(config, args, Permission.MANAGE_AND_ACTIVATE_DATASET_DESTINATIONS)
    flow = config.dataflow(args.dataflow)
    _, problems = review_lines(config, flow, datetime.now(UTC))
    if problems:
        raise CliError(f"dataflow {flow.name!r} cannot be activated: {'; '.join(problems)}")
    confirmation = Confirmations(ajo_home()).record(config, flow, principal(args) or os.environ.get("USER", "local"))
    print(
        f"dataflow {flow.name} confirmed by {confirmation.principal} at {confirmation.confirmed_at} "
        f"(config {confirmation.config_hash[:12]})"
    )
    return 0


def cmd_runs(args: argparse.Namespace, config: ExportsConfig) -> int:
    from ajo_exports.operations import dataflow_runs

    require(config, args, Permission.VIEW_DESTINATIONS)
    config.dataflow(args.dataflow)
    runs = dataflow_runs(_instance(), args.dataflow, limit=args.limit)
    if args.json:
        print(json.dumps({"dataflow": args.dataflow, "runs": [asdict(r) for r in runs]}, indent=2, default=str))
        return 0
    rows = [
        [
            r.run_id[:8],
            r.window,
            r.status.lower(),
            f"{r.started:%Y-%m-%d %H:%M:%S}" if r.started else "-",
            f"{r.seconds:.1f}" if r.seconds is not None else "-",
            r.datasets,
            r.records,
            r.files,
            r.bytes,
            r.errors[0] if r.errors else "",
        ]
        for r in runs
    ]
    print(f"dataflow {args.dataflow}: {len(runs)} runs (newest first)")
    print(
        _table(
            rows,
            ["run", "window", "status", "started (UTC)", "seconds", "datasets", "records", "files", "bytes", "error"],
        )
    )
    return 0


def cmd_check_connection(args: argparse.Namespace, config: ExportsConfig) -> int:
    require(config, args, Permission.MANAGE_DESTINATIONS)
    destination = config.destination(args.destination)
    with open_destination(destination) as storage:
        steps = probe(storage)
    for step in steps:
        print(f"ok  {step}")
    print(f"destination {destination.name!r} ({destination.type}) accepts writes, lists and deletes at {storage.uri()}")
    return 0


def cmd_verify_delivery(args: argparse.Namespace, config: None) -> int:
    """Receiver-side verification (ajo_exports.receiver): reads the store with its own SDK, no Dagster run."""
    from ajo_exports.receiver import ReceiverError, run

    try:
        return run(args, args.receiver_config or args.config)
    except ReceiverError as exc:
        raise CliError(str(exc)) from None


def cmd_destinations(args: argparse.Namespace, config: ExportsConfig) -> int:
    require(config, args, Permission.VIEW_DESTINATIONS)
    rows = [[d.name, d.type, d.destination_id, d.folder or "/"] for d in config.destinations]
    print(_table(rows, ["destination", "type", "destination id", "folder"]))
    return 0


def cmd_fields(args: argparse.Namespace, config: None) -> int:
    """exports.yaml's reference for destination and source types, read from their settings models."""
    kinds = [("destination", d) for d in DESTINATIONS] + [("source", s) for s in SOURCES]
    known = sorted({settings.type_name() for _, settings in kinds})
    if args.type and args.type not in known:
        raise CliError(f"unknown type {args.type!r} (known: {', '.join(known)})")
    blocks = []
    for role, settings in kinds:
        if args.type in (None, settings.type_name()):
            summary = " ".join((settings.__doc__ or "").strip().split("\n\n")[0].split())
            rows = [list(row) for row in field_reference(settings)]
            blocks.append(f"{role} type: {settings.type_name()}: {summary}\n" +
                          _table(rows, ["field", "give", "what it is"]))
    print("\n\n".join(blocks))
    return 0


def parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="ajo-exports", description=__doc__)
    root.add_argument("--config", help="exports.yaml (default: $AJO_EXPORTS_CONFIG, ./exports.yaml, bundled demo)")
    root.add_argument("--as", dest="principal", help="act as this principal (default: $AJO_EXPORTS_PRINCIPAL)")
    sub = root.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", help="list the Journey Optimizer datasets")
    p.add_argument("--tier", choices=[t.value for t in Tier])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets, needs_config=True)

    lake = sub.add_parser("lake", help="the embedded sample lake")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True)
    seed = lake_sub.add_parser("seed", help="write a deterministic sample lake for every dataset")
    seed.add_argument("--rows", type=positive_int, default=2000)
    seed.add_argument("--batches", type=positive_int, default=4)
    seed.add_argument("--seed", type=int, default=7)
    seed.add_argument(
        "--dataset", action="append", help="seed only this dataset slug (repeatable or comma list); others untouched"
    )
    append = lake_sub.add_parser("append", help="ingest one new batch of a dataset, stamped now")
    append.add_argument("--dataset", required=True)
    append.add_argument("--rows", type=positive_int, default=100)
    append.add_argument("--seed", type=int, default=11)
    append.add_argument(
        "--ingested-at", type=past_utc_time, help="stamp the batch at this past UTC time (ISO-8601, e.g. "
        "2026-11-30T03:15:00Z) instead of now: replays, backfills, late data"
    )
    lake.set_defaults(func=cmd_lake, needs_config=False)

    run = sub.add_parser("run", help="export dataflows through Dagster and run their delivery checks")
    run.add_argument("--dataflow")
    run.add_argument("--dataset", action="append", help="limit to a dataset slug (repeatable)")
    run.add_argument("--window", help="the partition key of the window to export (scheduled dataflows)")
    run.add_argument("--export-time", type=utc_time, help="ISO UTC time naming a once-export's exportTime folder")
    run.add_argument("--json", action="store_true", help="print one JSON result (no progress display)")
    run.set_defaults(func=cmd_run, needs_config=True)

    verify = sub.add_parser("verify", help="run the delivery checks of dataflows; non-zero exit on any failure")
    verify.add_argument("dataflow", nargs="?")
    verify.add_argument("--window")
    verify.add_argument("--json", action="store_true", help="print one JSON result")
    verify.set_defaults(func=cmd_verify, needs_config=True)

    check = sub.add_parser("check-connection", help="write, list and delete a probe object at a destination")
    check.add_argument("destination")
    check.set_defaults(func=cmd_check_connection, needs_config=True)

    review = sub.add_parser("review", help="what a dataflow will export, where, how and when; non-zero on problems")
    review.add_argument("dataflow", nargs="?")
    review.set_defaults(func=cmd_review, needs_config=True)

    runs = sub.add_parser("runs", help="a dataflow's runs: status, records, files, bytes, errors (AEP's dataflow runs)")
    runs.add_argument("dataflow")
    runs.add_argument("--limit", type=positive_int, default=20)
    runs.add_argument("--json", action="store_true", help="print one JSON result")
    runs.set_defaults(func=cmd_runs, needs_config=True)

    importer = sub.add_parser("import-aep", help="exports.yaml entries from AEP Flow Service objects (JSON files)")
    importer.add_argument("files", nargs="+", type=Path, help="flows, source/target/base connections as AEP returns")
    importer.add_argument("--output", type=Path, help="write the YAML here (default: standard output)")
    importer.add_argument("--known-host", action="append", default=[], metavar="HOST=KEY",
                          help="an SFTP host's key (a known_hosts line or SHA256:...), which AEP does not keep")
    importer.set_defaults(func=cmd_import_aep, needs_config=False)

    usage = sub.add_parser("usage", help="the licence-volume account: bytes delivered this year vs the entitlement")
    usage.add_argument("--year", type=positive_int, help="calendar year (default: this one)")
    usage.add_argument("--json", action="store_true", help="print one JSON result")
    usage.set_defaults(func=cmd_usage, needs_config=True)

    activate = sub.add_parser("activate", help="confirm a reviewed dataflow so that its schedule runs it")
    activate.add_argument("dataflow")
    activate.set_defaults(func=cmd_activate, needs_config=True)

    delivery = sub.add_parser(
        "verify-delivery", help="check a delivered window as its receiver (no Dagster): files, sizes, sha256, rows, "
        "strays; exit 1 when incomplete", epilog="credentials: --config/--destination, else AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION; AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN, "
        "AZURE_STORAGE_SAS_URL, AZURE_STORAGE_KEY or AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET; "
        "GCS_HMAC_ACCESS_KEY_ID/GCS_HMAC_SECRET, GCS_SERVICE_ACCOUNT_JSON or GOOGLE_APPLICATION_CREDENTIALS; "
        "SFTP_PASSWORD or SFTP_PRIVATE_KEY with SFTP_KNOWN_HOSTS or SFTP_HOST_KEY_FINGERPRINT (see ajo-verify-delivery "
        "--help)",
    )
    delivery.add_argument("uri", help="a manifest URI or a window folder URI (.../<datasetId>/exportTime=.../)")
    delivery.add_argument("--config", dest="receiver_config", help="exports.yaml holding the destination's credentials")
    delivery.add_argument("--destination", help="the destination entry of --config (else the environment's keys)")
    delivery.add_argument("--endpoint-url", help="the store's endpoint (S3, GCS, Azure Blob), e.g. an emulator")
    delivery.add_argument("--json", action="store_true", help="print the report as one JSON object")
    delivery.set_defaults(func=cmd_verify_delivery, needs_config=False)

    dest = sub.add_parser("destinations", help="list the configured destinations")
    dest.set_defaults(func=cmd_destinations, needs_config=True)

    fields = sub.add_parser("fields", help="the exports.yaml fields of each destination and source type")
    fields.add_argument("type", nargs="?", help="one type, e.g. amazon_s3, sftp, object_store")
    fields.set_defaults(func=cmd_fields, needs_config=False)
    return root


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # a bad argument (one line printed, 2) or --help (0): a status, not an exception
        return exc.code if isinstance(exc.code, int) else 2
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
