"""The sequential floor, run as its own process: Polars sinks the lake's batch files into ONE file with the same
codec, then the vendor SDK's own managed upload sends it. Prints {"encode_s", "upload_s", "bytes"} as JSON.

Nothing here is bounded, atomic, checksummed or manifested: it is what the bytes cost at least, done one step
after the other, so ajo-exports' ratio to it says what everything else it does costs.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

GZIP_LEVEL = 6


def encode(files: list[str], out: Path, file_format: str, compression: str) -> None:
    """One streaming scan -> sink, with the codec and level ajo-exports uses."""
    frame = pl.scan_parquet(files)
    if file_format == "json":
        frame.sink_ndjson(out, compression="gzip", compression_level=GZIP_LEVEL)
    elif compression == "gzip":
        frame.sink_parquet(out, compression="gzip", compression_level=GZIP_LEVEL)
    else:
        frame.sink_parquet(out, compression=compression)


def upload(spec: dict[str, Any], path: Path, key: str) -> None:
    """The SDK's plain managed upload of one file (each SDK's own defaults for parts and concurrency)."""
    kind = spec["kind"]
    if kind == "s3":
        import boto3

        client = boto3.session.Session().client(
            "s3", endpoint_url=spec["endpoint_url"], region_name=spec["region"],
            aws_access_key_id=os.environ[spec["key_env"]], aws_secret_access_key=os.environ[spec["secret_env"]],
        )
        client.upload_file(str(path), spec["bucket"], key)
    elif kind == "azure":
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(os.environ[spec["env"]])
        with path.open("rb") as data:
            service.get_blob_client(spec["container"], key).upload_blob(
                data, overwrite=True, max_concurrency=spec["max_concurrency"]
            )
    elif kind == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="ajo-bench", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": spec["endpoint_url"]})
        client.bucket(spec["bucket"]).blob(key).upload_from_filename(str(path))
    elif kind == "sftp":
        import paramiko

        pkey = paramiko.RSAKey.from_private_key(io.StringIO(base64.b64decode(os.environ[spec["key_env"]]).decode()))
        with paramiko.SSHClient() as ssh:
            ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
            ssh.load_host_keys(spec["known_hosts_file"])
            ssh.connect(spec["host"], spec["port"], username=spec["username"], pkey=pkey,
                        allow_agent=False, look_for_keys=False, timeout=30)
            with ssh.open_sftp() as sftp:
                folder = key.rsplit("/", 1)[0]
                try:
                    sftp.mkdir(folder)
                except OSError:
                    pass
                sftp.put(str(path), key)
    elif kind == "local":
        target = Path(spec["path"]) / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as src, target.open("wb") as dst:
            while chunk := src.read(8 * 1024 * 1024):
                dst.write(chunk)
    else:
        raise ValueError(f"unknown target kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files-from", required=True, help="a JSON list of the lake's batch files")
    parser.add_argument("--format", choices=["parquet", "json"], required=True)
    parser.add_argument("--compression", choices=["gzip", "snappy"], required=True)
    parser.add_argument("--out", required=True, help="the local file to encode into (removed afterwards)")
    parser.add_argument("--target", required=True, help="the target's spec as JSON")
    parser.add_argument("--key", required=True, help="the object key / remote path to upload to")
    args = parser.parse_args()
    files = json.loads(Path(args.files_from).read_text())
    out = Path(args.out)
    started = time.perf_counter()
    encode(files, out, args.format, args.compression)
    encoded = time.perf_counter()
    upload(json.loads(args.target), out, args.key)
    uploaded = time.perf_counter()
    size = out.stat().st_size
    out.unlink()
    print(json.dumps({"encode_s": encoded - started, "upload_s": uploaded - encoded, "bytes": size}))


if __name__ == "__main__":
    main()
