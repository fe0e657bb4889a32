"""The licence-volume account: bytes delivered per organisation and calendar year, read from the instance.

AEP's entitlement is licensed profiles × 500 KB (Prime) or × 700 KB (Ultimate) of exports a year. Every export
materialization records the bytes it delivered and the folder it delivered them to; the account keeps, per export
asset and folder, only the latest materialization of the year, so a rerun that replaces a window replaces its
bytes instead of adding them. No second store: the instance's event log is the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from ajo_exports.config import Organization

WARN_SHARE = 0.8


@dataclass(frozen=True)
class LicenseUsage:
    organization: str
    year: int
    bytes_used: int
    deliveries: int  # distinct (export, folder) pairs counted
    entitlement_bytes: int | None
    projected_bytes: int  # a straight line from the year's start through today, to its end
    as_of: datetime

    @property
    def share_used(self) -> float | None:
        return self.bytes_used / self.entitlement_bytes if self.entitlement_bytes else None

    @property
    def projected_share(self) -> float | None:
        return self.projected_bytes / self.entitlement_bytes if self.entitlement_bytes else None

    @property
    def status(self) -> str:
        share = self.share_used
        if share is None:
            return "no licence configured (organization.licensed_profiles)"
        if share >= 1:
            return "exceeded"
        if share >= WARN_SHARE:
            return "warning"
        return "ok"

    def summary(self) -> str:
        used = f"{self.bytes_used:,} bytes delivered in {self.year} by {self.organization}"
        if self.entitlement_bytes is None:
            return f"{used}; {self.status}"
        return (
            f"{used}: {self.share_used:.1%} of the {self.entitlement_bytes:,}-byte entitlement ({self.status}); "
            f"projected to the year's end: {self.projected_bytes:,} bytes, {self.projected_share:.1%}"
        )


def _value(entry: object) -> object:
    return getattr(entry, "value", entry)


def license_usage(
    instance: DagsterInstance,
    export_keys: Iterable[AssetKey],
    organization: Organization,
    *,
    year: int | None = None,
    now: datetime | None = None,
) -> LicenseUsage:
    """The organisation's account for `year` (default: this one), from its exports' materializations."""
    now = now or datetime.now(UTC)
    year = year or now.year
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    latest: dict[tuple[str, str], int] = {}
    for key in export_keys:
        cursor = None
        while True:
            page = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_timestamp=start.timestamp(), before_timestamp=end.timestamp()),
                limit=1000,
                cursor=cursor,
                ascending=True,
            )
            for record in page.records:
                metadata = record.asset_materialization.metadata
                folder = str(_value(metadata.get("folder", "")))
                latest[(key.to_user_string(), folder)] = int(_value(metadata.get("bytes", 0)) or 0)
            if not page.has_more:
                break
            cursor = page.cursor
    used = sum(latest.values())
    elapsed = (min(now, end) - start) / (end - start)
    projected = round(used / elapsed) if elapsed > 0 else used
    return LicenseUsage(organization.name, year, used, len(latest), organization.entitlement_bytes, projected, now)
