"""dlt's filesystem destination writing the lake's rows to the S3 (moto) bucket, run as its own process.

The resource streams the lake batch by batch (`ParquetFile.iter_batches`, one pyarrow table at a time), so dlt
gets the same streaming chance as ajo-exports. Prints {"extract_s", "normalize_s", "load_s", "rows"} as JSON.

Settings that keep the comparison about the work and not the defaults:
* `data_writer.compression` (env DATA_WRITER__COMPRESSION) picks dlt's Parquet codec (pyarrow's ParquetWriter);
  dlt's JSONL files are gzip-compressed by default (`data_writer.disable_compression` false).
* dlt exposes no gzip level: pyarrow's and Python's gzip default to 9, ajo-exports and the floor use 6 (level 9 is
  ~2x slower for <1% smaller files). With --gzip-level N (default 6) the harness passes level N to pyarrow's
  ParquetWriter and gzip.open in this process; --gzip-level 0 leaves dlt's stock level 9.
* `schema.naming=direct` keeps the column names as they are (dlt's default snake_cases identityMap etc.).
* Telemetry off (RUNTIME__DLTHUB_TELEMETRY=false): nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import time
from pathlib import Path


def pin_gzip_level(level: int) -> None:
    """Make pyarrow's Parquet writer and gzip.open use `level` when the caller gives none (dlt never does)."""
    import pyarrow.parquet as pq

    original_init = pq.ParquetWriter.__init__

    def init(self, where, schema, *args, compression_level=None, **kwargs):  # noqa: ANN001
        if compression_level is None and str(kwargs.get("compression", "")).lower() == "gzip":
            compression_level = level
        original_init(self, where, schema, *args, compression_level=compression_level, **kwargs)

    pq.ParquetWriter.__init__ = init
    gzip.open = functools.partial(gzip.open, compresslevel=level)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files-from", required=True, help="a JSON list of the lake's batch files")
    parser.add_argument("--format", choices=["parquet", "jsonl"], required=True)
    parser.add_argument("--compression", choices=["gzip", "snappy"], default="gzip")
    parser.add_argument("--bucket-url", required=True, help="s3://bucket/prefix")
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--table", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--gzip-level", type=int, default=6)
    parser.add_argument("--key-env", default="BENCH_S3_KEY_ID")
    parser.add_argument("--secret-env", default="BENCH_S3_SECRET")
    args = parser.parse_args()

    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["SCHEMA__NAMING"] = "direct"
    if args.format == "parquet":
        os.environ["DATA_WRITER__COMPRESSION"] = args.compression
    if args.gzip_level:
        pin_gzip_level(args.gzip_level)

    import dlt
    import pyarrow as pa
    import pyarrow.parquet as pq
    from dlt.common.configuration.specs import AwsCredentials

    files = json.loads(Path(args.files_from).read_text())

    @dlt.resource(name=args.table, write_disposition="append")
    def rows():
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=args.batch_rows):
                yield pa.Table.from_batches([batch])

    credentials = AwsCredentials(
        aws_access_key_id=os.environ[args.key_env],
        aws_secret_access_key=os.environ[args.secret_env],
        endpoint_url=args.endpoint_url,
        region_name=args.region,
    )
    pipeline = dlt.pipeline(
        pipeline_name="ajo_bench",
        destination=dlt.destinations.filesystem(bucket_url=args.bucket_url, credentials=credentials),
        pipelines_dir=args.pipelines_dir,
        dataset_name="bench",
    )
    started = time.perf_counter()
    extracted = pipeline.extract(rows(), loader_file_format=args.format)
    after_extract = time.perf_counter()
    pipeline.normalize()
    after_normalize = time.perf_counter()
    loaded = pipeline.load()
    after_load = time.perf_counter()
    loaded.raise_on_failed_jobs()
    counts = extracted.metrics and pipeline.last_trace.last_normalize_info.row_counts
    print(json.dumps({
        "extract_s": after_extract - started,
        "normalize_s": after_normalize - after_extract,
        "load_s": after_load - after_normalize,
        "rows": int((counts or {}).get(args.table, 0)),
    }))


if __name__ == "__main__":
    main()
