"""Export throughput and memory, as ratios against a plain Polars sink in the same run (run by hand: make bench).

Each case runs in its own process so its peak RSS is its own. The baseline is what a one-file export would cost:
`pl.scan_parquet(batches).sink_parquet(one_file)`. Our exports add bounded part files, the manifest, sha256 and
the atomic publish; the ratios say what that costs. `reference_collect_all` collects the dataset into one frame
(what streaming avoids): run with --rows 3000000 to see its peak RSS grow while the exports' stays flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ajo_exports.catalog import get_dataset
from ajo_exports.config import Compression, FileFormat
from ajo_exports.destinations.local import LocalStorage
from ajo_exports.export.writer import ExportSpec, export_frame
from ajo_exports.lake import LocalLake, generate_batch

DATASET = "ajo_message_feedback_event_dataset"
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def build_lake(root: Path, rows: int, batches: int) -> None:
    lake = LocalLake(root)
    dataset = get_dataset(DATASET)
    for index in range(batches):
        frame = generate_batch(dataset, rows // batches, seed=index, batch_index=index + 1, now=NOW)
        lake.append_batch(dataset, frame, ingested_at=datetime(2026, 10, 1 + index, tzinfo=UTC))


def run_case(case: str, lake_root: Path, out: Path) -> dict:
    lake = LocalLake(lake_root)
    dataset = get_dataset(DATASET)
    frame = lake.scan(dataset, lake.list_batches(dataset))
    started = time.perf_counter()
    if case == "reference_collect_all":  # what a non-streaming export would hold in memory
        size, files = int(frame.collect().estimated_size()), 0
    elif case == "baseline_sink_parquet":
        frame.sink_parquet(out / "one.parquet", compression="gzip")
        size, files = (out / "one.parquet").stat().st_size, 1
    else:
        file_format, compression, max_rows = {
            "export_parquet_gzip": (FileFormat.PARQUET, Compression.GZIP, 1_000_000),
            "export_parquet_gzip_100k_rows_per_file": (FileFormat.PARQUET, Compression.GZIP, 100_000),
            "export_parquet_zstd": (FileFormat.PARQUET, Compression.ZSTD, 1_000_000),
            "export_json_gzip": (FileFormat.JSON, Compression.GZIP, 1_000_000),
        }[case]
        spec = ExportSpec(
            dataset.dataset_id,
            "bench",
            "bench",
            f"{dataset.dataset_id}/exportTime=202611011200",
            NOW,
            "bench-run",
            file_format,
            compression,
            max_rows_per_file=max_rows,
        )
        result = export_frame(LocalStorage("bench", out), frame, spec)
        size, files = result.bytes, len(result.files)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "seconds": seconds, "bytes": size, "files": files, "peak_rss_mb": peak_mb}


CASES = [
    "baseline_sink_parquet",
    "reference_collect_all",
    "export_parquet_gzip",
    "export_parquet_gzip_100k_rows_per_file",
    "export_parquet_zstd",
    "export_json_gzip",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--case")
    parser.add_argument("--lake")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.lake), Path(args.out))))
        return
    with tempfile.TemporaryDirectory(prefix="ajo-bench-") as scratch:
        lake_root = Path(scratch) / "lake"
        started = time.perf_counter()
        build_lake(lake_root, args.rows, args.batches)
        lake_bytes = sum(p.stat().st_size for p in lake_root.rglob("*.parquet"))
        print(
            f"lake: {args.rows} rows of {DATASET} in {args.batches} batches, {lake_bytes / 1e6:.1f} MB "
            f"(built in {time.perf_counter() - started:.1f} s)"
        )
        results = []
        for case in CASES:
            out = Path(scratch) / case
            out.mkdir()
            done = subprocess.run(
                [sys.executable, __file__, "--case", case, "--lake", str(lake_root), "--out", str(out)],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        base = results[0]
        print(
            f"{'case':42} {'s':>7} {'x base':>7} {'MB/s':>7} {'files':>5} {'MB out':>7} "
            f"{'peak RSS MB':>11} {'x base':>7}"
        )
        for r in results:
            print(
                f"{r['case']:42} {r['seconds']:7.2f} {r['seconds'] / base['seconds']:7.2f} "
                f"{r['bytes'] / 1e6 / r['seconds']:7.1f} {r['files']:5d} {r['bytes'] / 1e6:7.1f} "
                f"{r['peak_rss_mb']:11.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:7.2f}"
            )


if __name__ == "__main__":
    main()
