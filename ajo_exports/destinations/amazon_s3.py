"""Amazon S3 (and S3-compatible stores): managed multipart upload straight to the key.

An S3 object becomes visible only when its PutObject or CompleteMultipartUpload succeeds, so uploading to the
final key is already atomic: no temporary name, no copy. S3 records a SHA-256 of what it received
(`ChecksumSHA256`), which becomes the object's native checksum.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pydantic import field_validator, model_validator

from ajo_exports.destinations.base import DestinationError, DestinationSettings, Storage, StoredObject, join_key, retry
from ajo_exports.settings import Secret, check_s3_bucket

T = TypeVar("T")
MiB = 1024 * 1024
MIN_PART_SIZE = 8 * MiB
MAX_PARTS = 10_000
SDK_ATTEMPTS = 2  # botocore retries each request (and each part) once; `retry` handles the rest

# S3 error codes that no retry can fix, in the words a user acts on.
TERMINAL = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "permission denied",
    "AllAccessDisabled": "permission denied",
    "InvalidAccessKeyId": "the access key is not recognised",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "InvalidClientTokenId": "the access key is not recognised",
    "ExpiredToken": "the session credentials have expired",
    "InvalidToken": "the session token is not valid",
    "AccountProblem": "the account is disabled",
    "InvalidBucketName": "the bucket name is not valid",
    "PermanentRedirect": "the bucket is in another region or endpoint",
    "AuthorizationHeaderMalformed": "the credentials do not suit this region or endpoint",
    "InvalidArgument": "the request was rejected as invalid",
}
TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
    "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests", "OperationAborted",
}


def client_error(exc: BaseException) -> BaseException:
    """The botocore error behind `exc`: boto3's S3UploadFailedError hides the ClientError in its context."""
    from botocore.exceptions import BotoCoreError, ClientError  # AWS SDKs load when a destination is used

    seen = exc
    while seen is not None:
        if isinstance(seen, ClientError | BotoCoreError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def is_transient(exc: BaseException) -> bool:
    """5xx, throttling and broken connections are worth another attempt; everything else is final."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    exc = client_error(exc)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(exc, BotoConnectionError | HTTPClientError)


def refusal_reason(exc: BaseException) -> str:
    """A secret-free reason: S3 error messages can echo the access key and the string that was signed."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    exc = client_error(exc)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "")) or "error"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in TERMINAL:
            return f"{TERMINAL[code]} ({code})"
        if is_transient(exc):
            return f"the service is unavailable, gave up after retries ({code}, HTTP {status})"
        return f"{code} (HTTP {status})"
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return f"the endpoint could not be reached, gave up after retries ({type(exc).__name__})"
    return type(exc).__name__


def part_size(file_size: int, minimum: int = MIN_PART_SIZE) -> int:
    """At least `minimum`, and large enough that the file fits S3's 10,000-part limit (whole MiB)."""
    needed = math.ceil(file_size / MAX_PARTS)
    return max(minimum, math.ceil(needed / MiB) * MiB)


def s3_client(
    *,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> Any:
    """An S3 client from Dagster's S3Resource with explicit endpoint and keys (never the ambient chain)."""
    from dagster_aws.s3 import S3Resource

    return S3Resource(
        region_name=region,
        endpoint_url=endpoint_url,
        max_attempts=SDK_ATTEMPTS,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
    ).get_client()


def s3_compatible_client(*, access_key_id: str, secret_access_key: str, endpoint_url: str, region: str) -> Any:
    """A client for an S3-compatible XML API that rejects the x-amz-checksum-* headers boto3 adds by default."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            retries={"max_attempts": SDK_ATTEMPTS, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class S3Storage(Storage):
    """A bucket and folder behind the S3 API. Subclasses adjust permission names and the native checksum."""

    scheme = "s3"
    # what a refused call lacks, named in the store's own permission vocabulary (`check-connection` shows it)
    permissions: Mapping[str, str] = {
        "list": "list (s3:ListBucket)",
        "write": "write (s3:PutObject)",
        "read": "read (s3:GetObject)",
        "delete": "delete (s3:DeleteObject)",
    }
    upload_args: Mapping[str, str] = {"ChecksumAlgorithm": "SHA256"}

    def __init__(self, name: str, client: Any, bucket: str, folder: str = "", *, min_part_size: int = MIN_PART_SIZE):
        self.name = name
        self.client = client
        self.bucket = bucket
        self.folder = folder.strip("/")
        self.min_part_size = min_part_size

    def _key(self, key: str) -> str:
        return join_key(self.folder, key)

    def _call(self, action: str, target: str, call: Callable[[], T]) -> T:
        """Run one call with retries; a final failure becomes a DestinationError without the SDK's text."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return retry(call, is_transient=is_transient, what=f"{self.name}: {action}")
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            failure = client_error(exc)
            raise DestinationError(
                self.name, f"{self.permissions[action]} of {self.uri(target)}", refusal_reason(failure),
                transient=is_transient(failure),
            ) from None

    def native_checksum(self, head: Mapping[str, Any]) -> str | None:
        """S3's own SHA-256 of the object ("<b64>" or, for a multipart upload, "<b64>-<parts>")."""
        value = head.get("ChecksumSHA256")
        return f"sha256:{value}" if value else None

    def publish(self, local_path: Path, key: str) -> StoredObject:
        from boto3.s3.transfer import TransferConfig

        size = local_path.stat().st_size
        chunk = part_size(size, self.min_part_size)
        config = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=4)
        full = self._key(key)

        def upload() -> None:
            self.client.upload_file(str(local_path), self.bucket, full, ExtraArgs=dict(self.upload_args), Config=config)

        self._call("write", key, upload)
        stored = self.stat(key)
        if stored is None or stored.size != size:
            raise DestinationError(self.name, f"{self.permissions['write']} of {self.uri(key)}",
                                   f"the stored object does not have the uploaded size {size}")
        return stored

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = f"{self.folder}/" if self.folder else ""

        def page_through() -> list[StoredObject]:
            found = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        found.append(StoredObject(item["Key"][len(base):], item["Size"]))
            return found

        return sorted(self._call("list", prefix, page_through), key=lambda obj: obj.key)

    def stat(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        def head() -> dict | None:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise

        found = self._call("read", key, head)
        return None if found is None else StoredObject(key, found["ContentLength"], self.native_checksum(found))

    def open_read(self, key: str) -> IO[bytes]:
        from botocore.exceptions import ClientError

        def get() -> IO[bytes]:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                    raise DestinationError(self.name, f"read {self.uri(key)}", "no such object") from None
                raise

        return self._call("read", key, get)

    def delete(self, key: str) -> None:
        from botocore.exceptions import ClientError

        def remove() -> None:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchKey":  # S3 says 204; GCS's XML API says 404
                    raise

        self._call("delete", key, remove)

    def uri(self, key: str = "") -> str:
        return f"{self.scheme}://{join_key(self.bucket, self._key(key))}"

    def sink_path(self, key: str = "") -> str:
        return "/" + self._key(key)

    def close(self) -> None:
        self.client.close()


class AmazonS3DestinationConfig(DestinationSettings):
    """An S3 bucket reached with an access key pair, or by assuming `role_arn` (AEP's "Assumed Role").

    To assume a role, STS is called with explicit credentials: this destination's key pair when given, else the
    platform's own identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (read explicitly, never from instance
    metadata or profiles) — the counterpart of Adobe's account that the customer's role trusts.
    `endpoint_url` points at an S3-compatible service (MinIO, moto); STS is asked at the same endpoint then.
    """

    aep_connection_spec = "4fce964d-3f37-408f-9778-e597338a21ee"
    aep_auth_fields = {"s3AccessKey": "access_key_id", "s3SecretKey": "secret_access_key", "s3Role": "role_arn"}
    kind = "s3"
    type: Literal["amazon_s3"]
    bucket: str
    """The S3 bucket (AEP: bucketName)."""
    access_key_id: Secret | None = None
    """The access key ID, as `${VAR}` (AEP: s3AccessKey); with secret_access_key, or give role_arn."""
    secret_access_key: Secret | None = None
    """The secret access key, as `${VAR}` (AEP: s3SecretKey)."""
    role_arn: str | None = None
    """A role to assume with STS instead of keys (AEP: Assumed Role): arn:aws:iam::<account>:role/<name>."""
    region: str | None = None
    """The bucket's region; default the SDK's (us-east-1)."""
    endpoint_url: str | None = None
    """An S3-compatible endpoint (MinIO, a local server); default AWS."""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_s3_bucket(value)

    @model_validator(mode="after")
    def _auth(self) -> AmazonS3DestinationConfig:
        if self.one_credential(("access_key_id", "secret_access_key"), "role_arn") == "role_arn":
            if not re.match(r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$", self.role_arn or ""):
                raise ValueError(f"role_arn {self.role_arn!r} is not arn:aws:iam::<account>:role/<name>")
        return self

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.folder}"

    def open_storage(self) -> Storage:
        key_id, secret, token = self.access_key_id, self.secret_access_key, None
        if self.role_arn:
            key_id, secret, token = self._assume_role()
        client = s3_client(access_key_id=key_id, secret_access_key=secret, session_token=token,
                           region=self.region, endpoint_url=self.endpoint_url)
        return S3Storage(self.name, client, self.bucket, self.folder)

    def _assume_role(self) -> tuple[str, str, str]:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        key_id = self.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
        secret = self.secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        action = f"assume role {self.role_arn} (sts:AssumeRole)"
        if not key_id or not secret:
            raise DestinationError(self.name, action, "no credentials to call STS with: set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY for the identity the role trusts")
        sts = boto3.session.Session().client(
            "sts", region_name=self.region or "us-east-1", endpoint_url=self.endpoint_url,
            aws_access_key_id=key_id, aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": SDK_ATTEMPTS, "mode": "standard"}),
        )
        session = re.sub(r"[^\w+=,.@-]", "-", f"ajo-exports-{self.name}")[:64]
        try:
            creds = retry(lambda: sts.assume_role(RoleArn=self.role_arn, RoleSessionName=session)["Credentials"],
                          is_transient=is_transient, what=f"{self.name}: {action}")
        except (ClientError, BotoCoreError) as exc:
            raise DestinationError(self.name, action, refusal_reason(exc), transient=is_transient(exc)) from None
        finally:
            sts.close()
        return creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
