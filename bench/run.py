"""`make bench` (`python -m bench.run [flags]`): ajo-exports against the sequential floor and dlt, on real servers.

Groups (each can be skipped with --skip, or chosen with --only):
  s3      one event dataset of --rows rows on moto (S3), per format: floor, ajo-exports, dlt, interleaved per rep
  clouds  the same floor vs ajo-exports (Parquet gzip) on Azurite, the GCS emulator and OpenSSH's sshd
  window  a daily dataflow over 100 daily batches: one late window (1 % of the rows) vs the backfill vs a once export
  fixed   one `ajo-exports run` of a 1,000-row dataset end to end vs `python -c "import dagster"`
  defs    loading the definitions of 126 and ~1,000 exports vs `import dagster`
  cpu     CPU time / wall time of one run of all 21 datasets
  rss     peak RSS of the export's process tree at --rss-rows rows (local destination)
Everything listens on 127.0.0.1; nothing leaves the machine (no telemetry, no cloud metadata lookups).
The defaults take about 20 minutes on 2 cores; `make bench BENCH_ARGS="--rows 200000 --reps 1 --rss-rows 200000"`
is a quick look. Results: a table on stdout, bench/results/latest.json and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from bench import cases, report
from bench.cases import AjoHome, Result, ajo_result, bare_dagster, dlt_case, floor_case, label
from bench.lake import DATASET, LakeInfo, build_lake, warm
from bench.proc import machine, run_measured, source
from bench.servers import Target, local_target, start

FORMATS = {"parquet-gzip": ("parquet", "gzip"), "parquet-snappy": ("parquet", "snappy"), "json-gzip": ("json", "gzip")}
GROUPS = ["s3", "clouds", "window", "fixed", "defs", "cpu", "rss"]
ONCE = {"frequency": "once"}
T = TypeVar("T")


class HelpFormat(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__, formatter_class=HelpFormat)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the S3 comparison")
    parser.add_argument("--batches", type=int, default=10, help="lake batches of the S3 comparison lake")
    parser.add_argument("--reps", type=int, default=2, help="paired repetitions of each comparison")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"of {', '.join(FORMATS)}")
    parser.add_argument("--clouds", default="azure,gcs,sftp", help="targets of the clouds group")
    parser.add_argument("--cloud-rows", type=int, default=500_000, help="rows of the clouds group")
    parser.add_argument("--no-dlt", action="store_true", help="skip dlt in the S3 group")
    parser.add_argument("--dlt-gzip-level", type=int, default=6,
                        help="gzip level dlt's writers get (dlt has no setting; 0 = dlt's stock level 9)")
    parser.add_argument("--rss-rows", default="2000000,20000000", help="comma list of lake sizes of the rss group")
    parser.add_argument("--defs-exports", default="126,1000", help="comma list of export counts of the defs group")
    parser.add_argument("--fixed-rows", type=int, default=1000, help="rows of the fixed group's dataset")
    parser.add_argument("--window-rows", type=int, default=500_000, help="rows over the 100 daily batches")
    parser.add_argument("--cpu-rows", type=int, default=200_000, help="rows per dataset of the cpu group")
    parser.add_argument("--skip", default="", help=f"comma list of groups to skip: {', '.join(GROUPS)}")
    parser.add_argument("--only", default="", help="comma list of the only groups to run")
    parser.add_argument("--scratch", help="working folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--out", default="bench/results/latest.json")
    parser.add_argument("--markdown", default="bench/RESULTS.md")
    args = parser.parse_args(argv)
    chosen = [g for g in args.only.split(",") if g] or GROUPS
    skipped = {g for g in args.skip.split(",") if g}
    unknown = (set(chosen) | skipped) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {', '.join(sorted(unknown))} (known: {', '.join(GROUPS)})")
    args.groups = [g for g in GROUPS if g in chosen and g not in skipped]
    args.format_list = [f for f in args.formats.split(",") if f]
    if set(args.format_list) - set(FORMATS):
        parser.error(f"--formats takes {', '.join(FORMATS)}")
    return args


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def rotated(items: list[T], rep: int) -> list[T]:
    """Interleave: each rep starts with a different case, so no case always runs first (or last)."""
    shift = rep % len(items)
    return items[shift:] + items[:shift]


def dataflow(name: str, destination: str, datasets: list[str] | str, file_format: str = "parquet",
             compression: str = "gzip", schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "destination": destination, "datasets": datasets, "format": file_format,
            "compression": compression, "schedule": schedule or ONCE}


class Bench:
    """Holds the working folder, the results and notes, and runs the groups in order."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.results: list[Result] = []
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self.main_lake: LakeInfo | None = None
        self.targets: list[Target] = []

    def add(self, result: Result) -> None:
        self.results.append(result)
        extra = f", work {result.seconds:.2f} s" if result.seconds != result.wall_s else ""
        log(f"{result.group} rep {result.rep + 1}: {result.case}: wall {result.wall_s:.2f} s{extra}, "
            f"peak RSS {result.peak_rss_mib:.0f} MiB")

    # -- lakes ------------------------------------------------------------------------------------------------

    @property
    def batch_rows(self) -> int:
        return max(1, math.ceil(self.args.rows / self.args.batches))

    def lake(self) -> LakeInfo:
        if self.main_lake is None:
            log(f"building the lake: {self.args.rows:,} rows of {DATASET} in {self.args.batches} batches")
            self.main_lake = build_lake(self.scratch / "lake-main", self.args.rows, self.batch_rows)
            lake = self.main_lake
            log(f"lake built in {lake.build_s:.1f} s ({lake.bytes / 1e6:.0f} MB zstd Parquet)")
            if lake.generated_rows:
                rate = lake.generator_rows_per_s
                self.notes.append(
                    f"Lake generator (`generate_batch` + `LocalLake.append_batch`): {lake.rows:,} rows in "
                    f"{lake.build_s:.1f} s; generating alone runs at {rate:,.0f} rows/s on one core, so a lake of "
                    f"20 M unique rows would take ~{20e6 / rate / 60:.1f} min to generate; larger lakes here reuse "
                    f"the main lake's batches (read back and appended under new batch IDs)."
                )
        return self.main_lake

    def sized_lake(self, rows: int, name: str) -> LakeInfo:
        """A lake of `rows` rows, reusing the main lake's batches where it can."""
        if rows == self.args.rows:
            return self.lake()
        pool = self.lake().files
        log(f"building lake {name}: {rows:,} rows")
        lake = build_lake(self.scratch / f"lake-{name}", rows, min(self.batch_rows, rows), pool=pool)
        log(f"lake {name} built in {lake.build_s:.1f} s ({lake.bytes / 1e6:.0f} MB)")
        return lake

    # -- groups -----------------------------------------------------------------------------------------------

    def group_s3(self) -> None:
        lake = self.lake()
        target = self.start_target("s3")
        if target is None:
            return
        formats = [FORMATS[f] for f in self.args.format_list]
        names = {fc: f"s3-{fc[0]}-{fc[1]}" for fc in formats}
        home = AjoHome(self.scratch / "home-s3", lake=lake.root, destinations=[target.destination],
                       dataflows=[dataflow(names[fc], target.name, [lake.slug], *fc) for fc in formats],
                       secrets=target.env)
        home.prepare(next(iter(names.values())))
        kinds = ["floor", "ajo"] + ([] if self.args.no_dlt else ["dlt"])
        for rep in range(self.args.reps):
            warm(lake.files)
            for file_format, compression in formats:
                for kind in rotated(kinds, rep):
                    if kind == "floor":
                        result = floor_case("s3", target, lake, file_format, compression, rep, self.scratch)
                    elif kind == "ajo":
                        run, server_cpu = home.run(names[(file_format, compression)], target=target)
                        result = ajo_result("s3", f"ajo {label(file_format, compression)}", rep, run, server_cpu,
                                            reference=f"floor {label(file_format, compression)}")
                        self.check_rows(result, lake.rows)
                    else:
                        result = dlt_case(target, lake, file_format, compression, rep, self.scratch,
                                          self.args.dlt_gzip_level)
                    target.clear()
                    self.add(result)
        level = self.args.dlt_gzip_level
        self.notes.append(
            f"dlt {version('dlt')}: filesystem destination on the same moto bucket with explicit "
            "AwsCredentials (endpoint_url, region); fed by a resource yielding one pyarrow table per "
            "`ParquetFile.iter_batches` batch (50,000 rows); Parquet codec from `data_writer.compression` "
            "(DATA_WRITER__COMPRESSION); JSONL is gzip by default; `schema.naming=direct`. "
            + (f"dlt has no gzip-level setting (pyarrow and Python default to 9): the harness passed level {level} "
               "to its writers, as ajo-exports and the floor use 6 (--dlt-gzip-level 0 for dlt's stock level)."
               if level else "dlt ran with its stock gzip level (9); ajo-exports and the floor use 6.")
            + " dlt also writes its state, schema and load records (_dlt_* files) to the bucket: not counted in "
            "MB out."
        )

    def group_clouds(self) -> None:
        kinds = [k for k in self.args.clouds.split(",") if k]
        lake = self.sized_lake(self.args.cloud_rows, "clouds")
        for kind in kinds:
            target = self.start_target(kind)
            if target is None:
                continue
            name = f"{kind}-parquet-gzip"
            home = AjoHome(self.scratch / f"home-{kind}", lake=lake.root, destinations=[target.destination],
                           dataflows=[dataflow(name, target.name, [lake.slug])], secrets=target.env)
            home.prepare(name)
            for rep in range(self.args.reps):
                warm(lake.files)
                for case in rotated(["floor", "ajo"], rep):
                    if case == "floor":
                        result = floor_case(kind, target, lake, "parquet", "gzip", rep, self.scratch)
                    else:
                        run, server_cpu = home.run(name, target=target)
                        result = ajo_result(kind, "ajo Parquet gzip", rep, run, server_cpu, "floor Parquet gzip")
                        self.check_rows(result, lake.rows)
                    target.clear()
                    self.add(result)
            self.stop_target(target)

    def group_window(self) -> None:
        """100 batches ingested on 100 consecutive days; the daily dataflow's first window (the backfill) holds
        the first 90, each later window one: a late window exports 1 % of the rows."""
        per_batch = max(1, self.args.window_rows // 100)
        day0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=110)
        log(f"building the window lake: 100 daily batches of {per_batch:,} rows")
        lake = build_lake(self.scratch / "lake-window", per_batch * 100, per_batch,
                          ingest=lambda k: day0 + timedelta(days=k, hours=6))
        start = day0 + timedelta(days=89, hours=2)
        schedule = {"frequency": "daily", "start": start.isoformat().replace("+00:00", "Z"),
                    "end": (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT00:00:00Z")}
        target = local_target(self.scratch / "exports-window")
        home = AjoHome(self.scratch / "home-window", lake=lake.root, destinations=[target.destination],
                       dataflows=[dataflow("full", target.name, [lake.slug]),
                                  dataflow("daily", target.name, [lake.slug], schedule=schedule)])
        home.prepare("daily")
        first, late = f"{start:%Y-%m-%d}", f"{day0 + timedelta(days=99):%Y-%m-%d}"
        once = "once export (100 %)"
        runs = {
            once: ("full", ()),
            "first window = backfill (90 %)": ("daily", ("--window", first)),
            f"late window {late} (1 %)": ("daily", ("--window", late)),
        }
        for rep in range(self.args.reps):
            warm(lake.files)
            for case in rotated(list(runs), rep):
                flow, extra = runs[case]
                run, _ = home.run(flow, *extra)
                self.add(ajo_result("window", case, rep, run, 0.0, None if case == once else once))
                target.clear()
        mine = [r for r in self.results if r.group == "window"]
        late = [r for r in mine if r.case.startswith("late")]
        full = {r.rep: r for r in mine if r.case == once}
        walls = sorted(r.wall_s / full[r.rep].wall_s for r in late)
        self.notes.append(
            f"Window group: {lake.rows:,} rows in 100 daily batches; the late window exported {late[0].rows:,} rows. "
            f"**s** is the export's own seconds (metadata), × ref its paired ratio to the once export's; as wall "
            f"time of the whole `ajo-exports run` the late window costs {walls[len(walls) // 2]:.2f}× the once "
            "export: mostly the fixed cost of a run (see the fixed group)."
        )

    def group_fixed(self) -> None:
        target = local_target(self.scratch / "exports-fixed")
        home = AjoHome(self.scratch / "home-fixed", destinations=[target.destination],
                       dataflows=[dataflow("fixed", target.name, [DATASET])])
        seeded = home.cli("lake", "seed", "--dataset", DATASET, "--rows", str(self.args.fixed_rows), "--batches", "1")
        log(f"seeded with `ajo-exports lake seed --dataset`: {seeded.stdout.strip()}")
        home.prepare("fixed")
        reference = "python -c 'import dagster'"
        for rep in range(self.args.reps):
            for case in rotated(["bare", "run"], rep):
                if case == "bare":
                    self.add(bare_dagster("fixed", rep))
                    continue
                run, _ = home.run("fixed")
                result = ajo_result("fixed", f"ajo-exports run, 1 dataset, {self.args.fixed_rows:,} rows", rep, run,
                                    0.0, reference)
                result.detail["export_s"] = result.seconds
                result.seconds = result.wall_s  # the end-to-end cost is the point here
                self.add(result)
                target.clear()

    def group_defs(self) -> None:
        counts = [int(c) for c in self.args.defs_exports.split(",") if c]
        now = datetime.now(UTC)
        schedule = {"frequency": "daily", "start": (now - timedelta(days=30)).strftime("%Y-%m-%dT02:00:00Z"),
                    "end": (now + timedelta(days=180)).strftime("%Y-%m-%dT00:00:00Z")}
        homes = {}
        for count in counts:
            flows = max(1, math.ceil(count / 21))
            target = local_target(self.scratch / f"exports-defs-{count}")
            homes[flows * 21] = AjoHome(
                self.scratch / f"home-defs-{count}", destinations=[target.destination],
                dataflows=[dataflow(f"flow-{i:03d}", target.name, "all", schedule=schedule) for i in range(flows)],
            )
        reference = "python -c 'import dagster'"
        # Importing builds the Definitions object; Dagster resolves it (asset graph, jobs, schedules) only when a
        # process uses it, as `dagster dev`, the daemon and every `ajo-exports run` do: measure both.
        steps = {
            "import": "from ajo_exports.definitions import defs",
            "import + resolve": "from dagster import Definitions\nfrom ajo_exports.definitions import defs\n"
                                "Definitions.validate_loadable(defs)",
        }
        variants = [(count, step) for count in homes for step in steps]
        for rep in range(self.args.reps):
            for case in rotated(["bare", *variants], rep):
                if case == "bare":
                    self.add(bare_dagster("defs", rep))
                    continue
                count, step = case
                measured = run_measured([cases.PYTHON, "-c", steps[step]], env=homes[count].env(),
                                        cwd=cases.REPO).check("loading definitions")
                self.add(Result(group="defs", case=f"{step} definitions, {count:,} exports ({count // 21} daily "
                                "dataflows × 21)", rep=rep, wall_s=measured.wall_s, cpu_s=measured.cpu_s,
                                peak_rss_mib=measured.peak_rss_mib, seconds=measured.wall_s, reference=reference))

    def group_cpu(self) -> None:
        rows = self.args.cpu_rows
        target = local_target(self.scratch / "exports-cpu")
        home = AjoHome(self.scratch / "home-cpu", destinations=[target.destination],
                       dataflows=[dataflow("all", target.name, "all")])
        log(f"seeding all 21 datasets with `ajo-exports lake seed --rows {rows}`")
        seeded = home.cli("lake", "seed", "--rows", str(rows), "--batches", "4")
        log(f"{seeded.stdout.strip()} ({seeded.wall_s:.1f} s)")
        home.prepare("all")
        for rep in range(1):  # one run: the question is how many cores it keeps busy, not a comparison
            run, _ = home.run("all")
            result = ajo_result("cpu", f"ajo-exports run, 21 datasets × ≤{rows:,} rows", rep, run, 0.0, None)
            result.detail["export_s_sum"] = result.seconds
            result.detail["cpu_per_wall"] = result.cpu_s / result.wall_s
            result.seconds = result.wall_s
            self.add(result)
            target.clear()
        ratios = [r.detail["cpu_per_wall"] for r in self.results if r.group == "cpu"]
        self.notes.append(
            f"CPU group: CPU time / wall time of the `ajo-exports run` process tree = "
            f"{', '.join(f'{x:.2f}' for x in ratios)} (per rep; {os.cpu_count()} cores available, so "
            f"{os.cpu_count()}.00 would be every core busy all the time)."
        )

    def group_rss(self) -> None:
        for rows in [int(r) for r in self.args.rss_rows.split(",") if r]:
            lake = self.sized_lake(rows, f"rss-{rows}")
            target = local_target(self.scratch / f"exports-rss-{rows}")
            home = AjoHome(self.scratch / f"home-rss-{rows}", lake=lake.root, destinations=[target.destination],
                           dataflows=[dataflow("rss", target.name, [lake.slug])])
            home.prepare("rss")
            warm(lake.files)
            run, _ = home.run("rss")
            result = ajo_result("rss", f"ajo Parquet gzip, {rows:,} rows (local folder)", 0, run, 0.0, None)
            self.check_rows(result, lake.rows)
            self.add(result)
            target.clear()
            if lake is not self.main_lake:
                shutil.rmtree(lake.root, ignore_errors=True)
        peaks = [f"{r.rows:,} rows: {r.peak_rss_mib:,.0f} MiB" for r in self.results if r.group == "rss"]
        if peaks:
            self.notes.append(f"RSS group: peak RSS of the `ajo-exports run` process tree (export + delivery check), "
                              f"{'; '.join(peaks)}.")

    # -- helpers ----------------------------------------------------------------------------------------------

    def check_rows(self, result: Result, expected: int) -> None:
        if result.rows != expected:
            self.notes.append(f"{result.group} {result.case} rep {result.rep + 1} exported {result.rows} rows, "
                              f"expected {expected}")

    def start_target(self, kind: str) -> Target | None:
        log(f"starting the {kind} server")
        try:
            target = start(kind, self.scratch / f"server-{kind}")
        except RuntimeError as exc:
            self.notes.append(f"{kind}: skipped, {exc}")
            log(f"skipping {kind}: {exc}")
            return None
        self.targets.append(target)
        return target

    def stop_target(self, target: Target) -> None:
        if target in self.targets:
            self.targets.remove(target)
            target.stop()

    def run(self) -> None:
        groups: dict[str, Callable[[], None]] = {g: getattr(self, f"group_{g}") for g in GROUPS}
        try:
            for name in self.args.groups:
                began = time.perf_counter()
                log(f"group {name}")
                try:
                    groups[name]()
                except Exception as exc:  # noqa: BLE001 - one broken group must not lose the others' figures
                    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                    self.notes.append(f"group {name} FAILED: {reason}")
                    log(f"group {name} FAILED:\n{exc}")
                self.timings[name] = time.perf_counter() - began
                log(f"group {name} done in {self.timings[name]:.0f} s")
        finally:
            for target in list(self.targets):
                self.stop_target(target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(cases.QUIET_ENV)
    started = time.perf_counter()
    load_before = os.getloadavg()
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="ajo-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, scratch)
    try:
        bench.run()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    bench.notes += [
        "MB out differs where the writers differ (the floor: Polars' sinks; ajo-exports: its own part writer; dlt: "
        "pyarrow's ParquetWriter): encodings and row groups change the size, so MB/s is over each case's own bytes "
        "and rows/s is the figure to compare.",
        "moto and the GCS emulator are Python servers sharing the same cores: a case's upload time includes their "
        "work (server CPU s), which a real cloud would not charge.",
    ]
    rows = report.summarize(bench.results)
    payload = {
        "machine": machine(),
        "source": source(cases.REPO),
        "command": ("python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])).strip(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("scratch", "keep", "out", "markdown")},
        "elapsed_s": time.perf_counter() - started,
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "group_seconds": bench.timings,
        "summary": rows,
        "results": [r.as_dict() for r in bench.results],
        "notes": bench.notes,
    }
    print(report.table(rows))
    for note in bench.notes:
        print(f"- {note}")
    print(f"whole run: {payload['elapsed_s'] / 60:.1f} min")
    report.write_json(Path(args.out), payload)
    report.write_markdown(Path(args.markdown), payload, rows, bench.notes)
    print(f"wrote {args.out} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
