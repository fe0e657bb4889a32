"""The measured cases. Each one is a subprocess measured as a tree (bench/proc.py), so its peak RSS is its own.

* floor: bench/floor.py (Polars sink to one file, then the SDK's managed upload);
* ajo: `ajo-exports run --dataflow NAME` against an AJO_EXPORTS_HOME of its own (the lake symlinked in, an
  exports.yaml pointing at the target, secrets in the environment); the export's own seconds, rows, files and
  bytes are read back from the materialization metadata the IO manager records in the Dagster instance;
* dlt: bench/dlt_load.py (dlt's filesystem destination on the same S3 bucket).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.lake import LakeInfo
from bench.proc import Measured, run_measured, tree_cpu
from bench.servers import S3_KEY_ENV, S3_SECRET_ENV, Target

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AJO = str(BIN / "ajo-exports")
PYTHON = sys.executable
# Nothing leaves 127.0.0.1: no cloud metadata lookups, no telemetry, no proxy.
QUIET_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_GCE_CHECK": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
RUN_ID = re.compile(r"\(run ([0-9a-f-]{36})\)")


@dataclass
class Result:
    """One measured run of one case. `seconds` is the case's own work when known (the floor's encode+upload,
    the export's metadata seconds, dlt's extract+normalize+load), else the subprocess wall time."""

    group: str
    case: str
    rep: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    seconds: float
    rows: int | None = None
    bytes: int | None = None
    server_cpu_s: float | None = None
    reference: str | None = None  # the case of the same group and rep this one is compared with
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env.update(QUIET_ENV)
    env.update(extra or {})
    return env


def measured_with_server(target: Target | None, command: list[str], env: dict[str, str]) -> tuple[Measured, float]:
    """Run `command` and charge the server's CPU over the same span (moto, Azurite... compete for the 2 cores)."""
    pid = target.server_pid if target else None
    before = tree_cpu(pid) if pid else 0.0
    measured = run_measured(command, env=env, cwd=REPO)
    return measured, (tree_cpu(pid) - before) if pid else 0.0


# -- ajo-exports through its CLI -------------------------------------------------------------------------------


@dataclass
class AjoRun:
    measured: Measured
    run_id: str
    exports: list[dict[str, Any]]

    def total(self, key: str) -> float:
        return sum(float(item.get(key) or 0) for item in self.exports)


class AjoHome:
    """An AJO_EXPORTS_HOME of its own: lake (a symlink to a built lake, or seeded by the CLI), exports.yaml,
    a Dagster instance; secrets only in the environment, the config says `${VAR}`."""

    def __init__(
        self,
        root: Path,
        *,
        destinations: list[dict[str, Any]],
        dataflows: list[dict[str, Any]],
        lake: Path | None = None,
        secrets: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        if lake is not None:
            (root / "lake").symlink_to(lake.resolve(), target_is_directory=True)
        self.config = root / "exports.yaml"
        self.config.write_text(yaml.safe_dump({
            "organization": {"name": "bench", "sandbox": "prod", "product_tier": "ultimate"},
            "destinations": destinations,
            "dataflows": dataflows,
        }, sort_keys=False))
        self.secrets = secrets or {}

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def env(self) -> dict[str, str]:
        return base_env({
            "AJO_EXPORTS_HOME": str(self.root),
            "AJO_EXPORTS_CONFIG": str(self.config),
            "DAGSTER_HOME": str(self.dagster_home),
            **self.secrets,
        })

    def cli(self, *args: str) -> Measured:
        """Run an unmeasured-for-the-table CLI command (seeding, preparing the instance)."""
        return run_measured([AJO, *args], env=self.env(), cwd=REPO).check(f"ajo-exports {' '.join(args)}")

    def prepare(self, dataflow: str) -> None:
        """Create the Dagster instance before the first measured run, as a deployed instance already exists."""
        self.cli("runs", dataflow, "--limit", "1")

    def run(self, dataflow: str, *extra: str, target: Target | None = None) -> tuple[AjoRun, float]:
        command = [AJO, "run", "--dataflow", dataflow, *extra]
        measured, server_cpu = measured_with_server(target, command, self.env())
        measured.check(f"ajo-exports run --dataflow {dataflow}")
        match = RUN_ID.search(measured.stdout)
        if not match:
            raise RuntimeError(f"no run id in the output of ajo-exports run:\n{measured.stdout[-2000:]}")
        return AjoRun(measured, match.group(1), self.materializations(match.group(1))), server_cpu

    def materializations(self, run_id: str) -> list[dict[str, Any]]:
        """The IO manager's metadata of each export materialized in the run (rows, files, bytes, seconds...)."""
        from dagster import DagsterEventType, DagsterInstance

        with DagsterInstance.from_config(str(self.dagster_home)) as instance:
            records = instance.get_records_for_run(
                run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION, limit=100_000
            ).records
            return [
                {key: getattr(value, "value", value)
                 for key, value in record.event_log_entry.asset_materialization.metadata.items()}
                for record in records
            ]


def ajo_result(group: str, case: str, rep: int, run: AjoRun, server_cpu: float, reference: str | None) -> Result:
    return Result(
        group=group, case=case, rep=rep, wall_s=run.measured.wall_s, cpu_s=run.measured.cpu_s,
        peak_rss_mib=run.measured.peak_rss_mib, seconds=run.total("seconds"), rows=int(run.total("rows")),
        bytes=int(run.total("bytes")), server_cpu_s=server_cpu, reference=reference,
        detail={"run_id": run.run_id, "exports": len(run.exports), "files": int(run.total("files"))},
    )


# -- the floor and dlt ------------------------------------------------------------------------------------------


def files_list(lake: LakeInfo, scratch: Path) -> Path:
    path = scratch / f"files-{abs(hash(lake.root))}.json"
    path.write_text(json.dumps(lake.files))
    return path


def floor_case(
    group: str, target: Target, lake: LakeInfo, file_format: str, compression: str, rep: int, scratch: Path
) -> Result:
    """Encode one file with Polars, then upload it with the SDK: the sequential floor."""
    ext = "json.gz" if file_format == "json" else f"{compression}.parquet"
    key = f"bench-floor/{file_format}-{compression}-{rep}.{ext}"
    command = [
        PYTHON, "-m", "bench.floor", "--files-from", str(files_list(lake, scratch)), "--format", file_format,
        "--compression", compression, "--out", str(scratch / f"floor.{ext}"), "--target", json.dumps(target.spec),
        "--key", key,
    ]
    measured, server_cpu = measured_with_server(target, command, base_env(target.env))
    measured.check("the floor")
    out = json.loads(measured.stdout.strip().splitlines()[-1])
    return Result(
        group=group, case=f"floor {label(file_format, compression)}", rep=rep, wall_s=measured.wall_s,
        cpu_s=measured.cpu_s, peak_rss_mib=measured.peak_rss_mib, seconds=out["encode_s"] + out["upload_s"],
        rows=lake.rows, bytes=out["bytes"], server_cpu_s=server_cpu,
        detail={"encode_s": out["encode_s"], "upload_s": out["upload_s"]},
    )


def dlt_case(
    target: Target, lake: LakeInfo, file_format: str, compression: str, rep: int, scratch: Path, gzip_level: int
) -> Result:
    """dlt's filesystem destination to the same bucket; its output is sized by listing the table's prefix."""
    prefix = f"dlt/{file_format}-{compression}-{rep}"
    pipelines = scratch / f"dlt-pipelines-{rep}"
    command = [
        PYTHON, "-m", "bench.dlt_load", "--files-from", str(files_list(lake, scratch)),
        "--format", "jsonl" if file_format == "json" else "parquet", "--compression", compression,
        "--bucket-url", f"s3://{target.spec['bucket']}/{prefix}", "--endpoint-url", target.spec["endpoint_url"],
        "--region", target.spec["region"], "--table", lake.slug, "--pipelines-dir", str(pipelines),
        "--gzip-level", str(gzip_level), "--key-env", S3_KEY_ENV, "--secret-env", S3_SECRET_ENV,
    ]
    measured, server_cpu = measured_with_server(target, command, base_env(target.env))
    shutil.rmtree(pipelines, ignore_errors=True)
    measured.check("dlt")
    out = json.loads(measured.stdout.strip().splitlines()[-1])
    return Result(
        group="s3", case=f"dlt {label(file_format, compression)}", rep=rep, wall_s=measured.wall_s,
        cpu_s=measured.cpu_s, peak_rss_mib=measured.peak_rss_mib,
        seconds=out["extract_s"] + out["normalize_s"] + out["load_s"], rows=out["rows"] or lake.rows,
        bytes=target.stored_bytes(f"{prefix}/bench/{lake.slug}/"), server_cpu_s=server_cpu,
        reference=f"floor {label(file_format, compression)}",
        detail={k: out[k] for k in ("extract_s", "normalize_s", "load_s")} | {"gzip_level": gzip_level or 9},
    )


def bare_dagster(group: str, rep: int) -> Result:
    """`python -c "import dagster"`: what any Dagster process pays before doing anything."""
    measured = run_measured([PYTHON, "-c", "import dagster"], env=base_env(), cwd=REPO).check("import dagster")
    return Result(group=group, case="python -c 'import dagster'", rep=rep, wall_s=measured.wall_s,
                  cpu_s=measured.cpu_s, peak_rss_mib=measured.peak_rss_mib, seconds=measured.wall_s)


def label(file_format: str, compression: str) -> str:
    return f"{'NDJSON' if file_format == 'json' else 'Parquet'} {compression}"
