"""Deterministic synthetic AJO data for the local lake.

Every dataset is generated from one shared "world" built from the seed alone (profiles, journeys and their versions,
message actions, entity rows, decision objects), so the documented join keys hold across datasets:

* ``messageExecution.journeyActionID`` (feedback / tracking) -> ``journeyOrchestration.stepEvents.actionID``;
* ``messageExecution.messageID`` -> ``ajo_entity_dataset.entities.channelDetails.messageID``;
* feedback ``propositions[].scopeDetails.correlationID`` -> ``ajo_entity_dataset._id``.

Columns are produced as flat numpy / polars vectors keyed by dotted XDM path and assembled into the nested schema of
the catalog by :func:`_build`, so the default lake (21 datasets, 2000 rows each) is written in about a second.

Choices worth knowing:

* Batch 0 of every dataset is a backfill whose event times reach 425 days back (> 13 months, so the 365-day export
  filter has something to drop); later batches hold recent, slightly late-arriving events. No event is ever later
  than its batch's ingestion time.
* Record datasets are sized by their universe, not by ``rows``: one row per profile (capped at ``rows``), two entity
  rows per published message action, one row per journey version, a few dozen decision objects.
* AEP documents the AJO Surfaces Dataset as empty; we still give it a handful of rows (``max(batches, 8)``) so its
  export path is exercised end to end.
* All messages come from journeys (no single-step campaigns), so ``journeyActionID`` is never null.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from ajo_exports.catalog import DATASETS, Dataset
from ajo_exports.lake.local import LocalLake, make_batch_id
from ajo_exports.lake.source import Batch

__all__ = ["generate_batch", "seed_lake"]

_US_PER_DAY = 86_400_000_000
_US_PER_HOUR = 3_600_000_000
_BACKFILL_DAYS = 425
_CJM = "_experience.customerJourneyManagement"
_JO = "_experience.journeyOrchestration"
_DEC = "_experience.decisioning"

_FIRST = np.array(
    [
        "Alex",
        "Maria",
        "Sam",
        "Lea",
        "Noah",
        "Emma",
        "Liam",
        "Chloe",
        "Hugo",
        "Ines",
        "Omar",
        "Yuki",
        "Zoe",
        "Ivan",
        "Nina",
        "Paul",
    ]
)
_LAST = np.array(
    [
        "Martin",
        "Garcia",
        "Smith",
        "Dubois",
        "Muller",
        "Rossi",
        "Tanaka",
        "Silva",
        "Kowalski",
        "Nguyen",
        "Johnson",
        "Bernard",
    ]
)
_DOMAINS = np.array(["example.com", "example.org", "mail.example.net", "example.co.uk"])
_CITIES = np.array(
    [
        ("Paris", "FR"),
        ("Lyon", "FR"),
        ("London", "GB"),
        ("Berlin", "DE"),
        ("New York", "US"),
        ("San Jose", "US"),
        ("Madrid", "ES"),
        ("Tokyo", "JP"),
    ]
)
_JOURNEY_NAMES = [
    "Welcome series",
    "Cart abandonment",
    "Birthday offer",
    "Win-back",
    "Loyalty upgrade",
    "Order confirmation",
    "Renewal reminder",
    "Event invitation",
]
_CHANNELS = np.array(["email", "push", "sms"])
_N_PROFILES = 400
_N_JOURNEYS = 6


def _hash_bytes(*parts: object) -> bytes:
    return hashlib.sha1(":".join(map(str, parts)).encode("utf-8")).digest()


def _uuid_from(raw: bytes) -> str:
    h = raw[:16].hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return np.array([_uuid_from(row.tobytes()) for row in raw], dtype=object)


def _stable_uuids(*parts: object, keys: np.ndarray) -> np.ndarray:
    """Record ``_id``s derived from the entity key, so a re-ingested record (an upsert) keeps its ID."""
    return np.array([_uuid_from(_hash_bytes(*parts, int(k))) for k in keys], dtype=object)


def _choice(rng: np.random.Generator, values: Sequence[Any], n: int, p: Sequence[float] | None = None) -> np.ndarray:
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=p)]


def _ts(us: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(us, dtype=np.int64), dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def _where(mask: np.ndarray, values: np.ndarray | Any, other: Any = None) -> np.ndarray:
    return np.where(mask, np.asarray(values, dtype=object), other)


# --- the shared world ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _World:
    """Entities every dataset draws from; depends on the seed only so appended batches join with seeded ones."""

    seed: int
    email: np.ndarray
    ecid: np.ndarray
    phone: np.ndarray
    first: np.ndarray
    last: np.ndarray
    city: np.ndarray
    country: np.ndarray
    platform: np.ndarray
    # one entry per journey version
    v_journey_id: np.ndarray
    v_journey_name: np.ndarray
    v_version_id: np.ndarray
    v_version: np.ndarray
    v_instance_id: np.ndarray
    v_age_days: np.ndarray
    # one entry per message action (a node of a journey version)
    a_version: np.ndarray
    a_node_id: np.ndarray
    a_action_id: np.ndarray
    a_name: np.ndarray
    a_channel: np.ndarray
    a_message_id: np.ndarray
    a_publication_id: np.ndarray
    a_execution_id: np.ndarray
    a_weight: np.ndarray
    entity_id: np.ndarray  # two per action: 2a and 2a+1
    audiences: np.ndarray
    counters: np.ndarray
    placements: np.ndarray
    activities: np.ndarray
    fallback_offers: np.ndarray
    personalized_offers: np.ndarray

    @property
    def n_actions(self) -> int:
        return len(self.a_action_id)


def _build_world(seed: int) -> _World:
    rng = np.random.default_rng([seed, 0])
    n = _N_PROFILES
    first, last = _FIRST[rng.integers(0, len(_FIRST), n)], _LAST[rng.integers(0, len(_LAST), n)]
    domain = _DOMAINS[rng.integers(0, len(_DOMAINS), n)]
    email = np.array(
        [f"{f}.{la}{i}@{d}".lower() for i, (f, la, d) in enumerate(zip(first, last, domain, strict=True))], dtype=object
    )
    hi, lo = rng.integers(10**18, 10**19 - 1, n, dtype=np.uint64), rng.integers(10**18, 10**19 - 1, n, dtype=np.uint64)
    ecid = np.array([f"{a:019d}{b:019d}" for a, b in zip(hi, lo, strict=True)], dtype=object)
    phone = np.array([f"+1555{x:07d}" for x in rng.integers(0, 10**7, n)], dtype=object)
    city_idx = rng.integers(0, len(_CITIES), n)

    v_rows: list[tuple[str, str, str, str, str, float]] = []
    for j in range(_N_JOURNEYS):
        journey_id = _uuids(rng, 1)[0]
        n_versions = int(rng.integers(1, 4))
        age = float(rng.uniform(120, 420))
        for v in range(n_versions):
            v_rows.append((journey_id, _JOURNEY_NAMES[j], _uuids(rng, 1)[0], f"1.{v}", _uuids(rng, 1)[0], age))
            age = age * float(rng.uniform(0.3, 0.8))
    v_cols = list(zip(*v_rows, strict=True))

    a_version: list[int] = []
    for vi in range(len(v_rows)):
        a_version.extend([vi] * int(rng.integers(2, 5)))
    n_a = len(a_version)
    channel = _CHANNELS[rng.choice(3, size=n_a, p=[0.6, 0.3, 0.1])]
    channel[0], channel[1] = "email", "push"  # both tracking datasets need at least one action of their channel
    names = np.array(
        [f"{v_cols[1][v]} - {c} {i + 1}" for i, (v, c) in enumerate(zip(a_version, channel, strict=True))], dtype=object
    )
    weight = rng.pareto(1.5, n_a) + 1.0

    def ids(prefix: str, count: int) -> np.ndarray:
        return np.array(
            [f"xcore:{prefix}:{_hash_bytes(seed, prefix, i).hex()[:16]}" for i in range(count)], dtype=object
        )

    return _World(
        seed=seed,
        email=email,
        ecid=ecid,
        phone=phone,
        first=first.astype(object),
        last=last.astype(object),
        city=_CITIES[city_idx, 0].astype(object),
        country=_CITIES[city_idx, 1].astype(object),
        platform=np.where(rng.random(n) < 0.55, "apns", "fcm").astype(object),
        v_journey_id=np.array(v_cols[0], dtype=object),
        v_journey_name=np.array(v_cols[1], dtype=object),
        v_version_id=np.array(v_cols[2], dtype=object),
        v_version=np.array(v_cols[3], dtype=object),
        v_instance_id=np.array(v_cols[4], dtype=object),
        v_age_days=np.array(v_cols[5], dtype=float),
        a_version=np.array(a_version),
        a_node_id=_uuids(rng, n_a),
        a_action_id=_uuids(rng, n_a),
        a_name=names,
        a_channel=channel.astype(object),
        a_message_id=_uuids(rng, n_a),
        a_publication_id=_uuids(rng, n_a),
        a_execution_id=np.array([f"UMA-{x:08d}" for x in rng.integers(10**7, 10**8, n_a)], dtype=object),
        a_weight=weight / weight.sum(),
        entity_id=_uuids(rng, 2 * n_a),
        audiences=_uuids(rng, 6),
        counters=_uuids(rng, 4),
        placements=ids("offer-placement", 8),
        activities=ids("offer-activity", 12),
        fallback_offers=ids("fallback-offer", 6),
        personalized_offers=ids("personalized-offer", 40),
    )


# --- per-row context and assembly ------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """What a dataset generator needs for one frame: row count, randomness, event times and record keys."""

    dataset: Dataset
    world: _World
    rng: np.random.Generator
    ts: np.ndarray  # int64 microseconds, per row: event time (or record modify time)
    keys: np.ndarray  # record datasets: entity index per row; event datasets: row number
    cover: bool  # first rows must cover every action (journey step events backfill)

    @property
    def n(self) -> int:
        return len(self.ts)

    def dtype(self, path: str) -> pl.DataType:
        """The catalog dtype at a dotted path; list element structs are addressed by the list's own path."""
        dtype: Any = self.dataset.schema[path.split(".")[0]]
        for part in path.split(".")[1:]:
            while isinstance(dtype, pl.List):
                dtype = dtype.inner
            dtype = {f.name: f.dtype for f in dtype.fields}[part]
        return dtype

    def single_list(self, path: str, fields: dict[str, Any], mask: np.ndarray | None = None) -> pl.Series:
        """A one-element list of structs per row (null where ``mask`` is False), typed from the schema."""
        list_dtype = self.dtype(path)
        assert isinstance(list_dtype, pl.List)
        element = _build(pl.Schema({"x": list_dtype.inner}), {f"x.{k}": v for k, v in fields.items()}, self.n)
        out = element.select(pl.concat_list("x").alias("x"))["x"]
        if mask is not None:
            out = pl.select(pl.when(pl.Series(mask)).then(out).otherwise(None).alias("x"))["x"]
        return out.cast(list_dtype)


def _series(value: Any, dtype: pl.DataType) -> pl.Series:
    if isinstance(value, pl.Series):
        return value
    arr = np.asarray(value)
    if isinstance(dtype, pl.Datetime):
        return _ts(arr)
    if arr.dtype == object:
        return pl.Series(arr.tolist(), dtype=dtype)
    return pl.Series(arr, dtype=dtype)


def _expr(path: str, dtype: pl.DataType, given: set[str]) -> pl.Expr:
    if path in given:
        return pl.col(path).cast(dtype)
    if isinstance(dtype, pl.Struct) and any(g.startswith(path + ".") for g in given):
        return pl.struct([_expr(f"{path}.{f.name}", f.dtype, given).alias(f.name) for f in dtype.fields])
    return pl.lit(None, dtype)


def _build(schema: pl.Schema, columns: dict[str, Any], n: int) -> pl.DataFrame:
    """Assemble flat dotted-path columns into the nested schema; absent leaves become typed nulls."""
    given: dict[str, pl.Series] = {"__row": pl.Series(np.arange(n))}
    leaf_types = _leaf_types(schema)
    for path, value in columns.items():
        if path not in leaf_types:
            raise KeyError(f"generator produced {path}, which is not in the schema")
        series = _series(value, leaf_types[path])
        given[path] = series.alias(path) if len(series) == n else series.new_from_index(0, n).alias(path)
    frame = pl.DataFrame(given)
    return frame.select([_expr(name, dtype, set(columns)).alias(name) for name, dtype in schema.items()])


def _leaf_types(schema: pl.Schema | dict[str, pl.DataType], prefix: str = "") -> dict[str, pl.DataType]:
    out: dict[str, pl.DataType] = {}
    for name, dtype in schema.items():
        out[f"{prefix}{name}"] = dtype
        if isinstance(dtype, pl.Struct):
            out |= _leaf_types({f.name: f.dtype for f in dtype.fields}, f"{prefix}{name}.")
    return out


# --- shared field groups ----------------------------------------------------------------------------------------


def _pick_profiles(ctx: _Ctx) -> np.ndarray:
    return ctx.rng.integers(0, len(ctx.world.email), ctx.n)


def _pick_actions(ctx: _Ctx, channel: str | None = None) -> np.ndarray:
    w = ctx.world
    allowed = np.ones(w.n_actions, bool) if channel is None else (w.a_channel == channel)
    p = np.where(allowed, w.a_weight, 0.0)
    return ctx.rng.choice(w.n_actions, size=ctx.n, p=p / p.sum())


def _identity(ctx: _Ctx, p: np.ndarray, primary: str | np.ndarray = "Email", phone: bool = False) -> dict[str, Any]:
    """identityMap with Email and ECID (and Phone); ``primary`` may vary per row (push sends use the ECID)."""
    w = ctx.world
    cols = {
        "identityMap.Email": ctx.single_list("identityMap.Email", {"id": w.email[p], "primary": primary == "Email"}),
        "identityMap.ECID": ctx.single_list("identityMap.ECID", {"id": w.ecid[p], "primary": primary == "ECID"}),
    }
    if phone:
        cols["identityMap.Phone"] = ctx.single_list("identityMap.Phone", {"id": w.phone[p], "primary": False})
    return cols


def _message_execution(ctx: _Ctx, a: np.ndarray) -> dict[str, Any]:
    w = ctx.world
    v = w.a_version[a]
    batch = ctx.rng.random(ctx.n) < 0.2
    base = f"{_CJM}.messageExecution"
    return {
        f"{base}.messageExecutionID": w.a_execution_id[a],
        f"{base}.messageID": w.a_message_id[a],
        f"{base}.messagePublicationID": w.a_publication_id[a],
        f"{base}.journeyVersionID": w.v_version_id[v],
        f"{base}.journeyVersionInstanceID": w.v_instance_id[v],
        f"{base}.journeyVersionNodeID": w.a_node_id[a],
        f"{base}.journeyActionID": w.a_action_id[a],
        f"{base}.batchInstanceID": _where(batch, _uuids(ctx.rng, ctx.n)),
        f"{base}.messageType": _choice(ctx.rng, ["marketing", "transactional"], ctx.n, [0.9, 0.1]),
    }


def _message_profile(ctx: _Ctx, a: np.ndarray) -> dict[str, Any]:
    base = f"{_CJM}.messageProfile"
    channel = ctx.world.a_channel[a]
    return {
        f"{base}.messageProfileID": _uuids(ctx.rng, ctx.n),
        f"{base}.channel._id": np.array([f"https://ns.adobe.com/xdm/channels/{c}" for c in channel], dtype=object),
        f"{base}.variant": _where(ctx.rng.random(ctx.n) < 0.3, _choice(ctx.rng, ["A", "B"], ctx.n)),
        f"{base}.isTestExecution": ctx.rng.random(ctx.n) < 0.01,
        f"{base}.isSendTimeOptimized": ctx.rng.random(ctx.n) < 0.1,
    }


def _email_context(ctx: _Ctx, address: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    base = f"{_CJM}.emailChannelContext"
    domain = np.array([str(x).rsplit("@", 1)[-1] for x in address], dtype=object)
    return {
        f"{base}.address": _where(mask, address),
        f"{base}.namespace": _where(mask, "Email"),
        f"{base}.domain": _where(mask, domain),
    }


def _failure(ctx: _Ctx, status: np.ndarray, base: str) -> dict[str, Any]:
    bounce, delay, error = status == "bounce", status == "delay", status == "error"
    failed = bounce | delay | error
    hard = bounce & (ctx.rng.random(ctx.n) < 0.7)
    reason = np.select(
        [hard, bounce, delay, error],
        ["Invalid Recipient", "Mailbox Full", "Mailbox Temporarily Unavailable", "Timeout"],
        None,
    )
    code = np.select([hard, bounce, delay, error], ["5.1.1", "5.2.2", "4.4.1", "4.4.7"], None)
    return {
        f"{base}.messageFailure.reason": reason,
        f"{base}.messageFailure.code": code,
        f"{base}.messageFailure.type": np.select([hard, failed], ["Hard", "Soft"], None),
        f"{base}.messageFailure.category": _where(failed, np.where(delay, "async", "sync")),
        f"{base}.retryCount": np.where(delay, ctx.rng.integers(1, 4, ctx.n), 0),
    }


# --- dataset generators -----------------------------------------------------------------------------------------


def _event_envelope(ctx: _Ctx, event_type: Any) -> dict[str, Any]:
    return {"_id": _uuids(ctx.rng, ctx.n), "timestamp": ctx.ts, "eventType": event_type}


def _message_feedback(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    a, p = _pick_actions(ctx), _pick_profiles(ctx)
    channel = w.a_channel[a]
    status = _choice(rng, ["sent", "delay", "bounce", "exclude", "error"], n, [0.85, 0.05, 0.05, 0.04, 0.01])
    excluded = status == "exclude"
    fb = f"{_CJM}.messageDeliveryfeedback"
    correlation = w.entity_id[2 * a + rng.integers(0, 2, n)]
    return {
        **_event_envelope(ctx, "message.feedback"),
        **_identity(ctx, p, primary=np.where(channel == "push", "ECID", "Email")),
        f"{fb}.feedbackStatus": status,
        **_failure(ctx, status, fb),
        f"{fb}.messageExclusion.code": _where(
            excluded, _choice(rng, ["exclusion.denylist", "exclusion.capping", "exclusion.consent"], n)
        ),
        f"{fb}.messageExclusion.reason": _where(excluded, "Excluded by delivery rules"),
        f"{fb}.requestTimestamp": ctx.ts - rng.integers(1, 120, n) * 1_000_000,
        **_message_execution(ctx, a),
        **_message_profile(ctx, a),
        **_email_context(ctx, w.email[p], channel == "email"),
        f"{_CJM}.pushChannelContext.platform": _where(channel == "push", w.platform[p]),
        f"{_DEC}.propositions": ctx.single_list(
            f"{_DEC}.propositions",
            {
                "id": _uuids(rng, n),
                "scope": np.array(
                    [f"{c}://{m}" for c, m in zip(channel, w.a_message_id[a], strict=True)], dtype=object
                ),
                "scopeDetails.correlationID": correlation,
                "scopeDetails.decisionProvider": "AJO",
            },
        ),
    }


def _bcc_feedback(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    a, p = _pick_actions(ctx, "email"), _pick_profiles(ctx)
    status = _choice(rng, ["sent", "delay", "bounce"], n, [0.93, 0.03, 0.04])
    fb = f"{_CJM}.messageDeliveryfeedback"
    failure = _failure(ctx, status, fb)
    return {
        **_event_envelope(ctx, "message.feedback"),
        **_identity(ctx, p),
        f"{fb}.feedbackStatus": status,
        **failure,
        f"{_CJM}.secondaryRecipientDetail.type": _choice(rng, ["bcc", "archival"], n, [0.9, 0.1]),
        f"{_CJM}.secondaryRecipientDetail.originalRecipientAddress": w.email[p],
        **_message_execution(ctx, a),
        **_message_profile(ctx, a),
        **_email_context(ctx, np.full(n, "ajo-bcc-archive@example.com", dtype=object), np.ones(n, bool)),
    }


def _email_tracking(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    a, p = _pick_actions(ctx, "email"), _pick_profiles(ctx)
    kind = _choice(
        rng,
        ["open", "click", "unsubscribe", "bot_open", "bot_click", "spam_complaint"],
        n,
        [0.68, 0.22, 0.04, 0.03, 0.02, 0.01],
    )
    clicked = np.isin(kind, ["click", "bot_click"])
    page_idx = rng.integers(0, 4, n)
    page = np.array(["offers", "account", "new-arrivals", "blog"], dtype=object)[page_idx]
    mi = f"{_CJM}.messageInteraction"
    return {
        **_event_envelope(ctx, "message.tracking"),
        **_identity(ctx, p),
        f"{mi}.interactionType": kind,
        f"{mi}.url": _where(clicked, np.array([f"https://www.example.com/{x}" for x in page], dtype=object)),
        f"{mi}.urlID": _where(clicked, (page_idx + 1).astype(str).astype(object)),
        f"{mi}.label": _where(clicked, page),
        f"{mi}.tags": pl.Series([["newsletter"] if c else [] for c in clicked], dtype=pl.List(pl.String)),
        f"{mi}.trackingType": "regular",
        f"{mi}.isBot": np.char.startswith(kind.astype(str), "bot_"),
        f"{mi}.entityType": "message",
        **_message_execution(ctx, a),
        **_message_profile(ctx, a),
        **_email_context(ctx, w.email[p], np.ones(n, bool)),
    }


def _push_tracking(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    a, p = _pick_actions(ctx, "push"), _pick_profiles(ctx)
    opened = rng.random(n) < 0.8
    pt = "pushNotificationTracking"
    return {
        **_event_envelope(ctx, np.where(opened, "pushTracking.applicationOpened", "pushTracking.customAction")),
        **_identity(ctx, p, primary="ECID"),
        f"{pt}.pushProviderMessageID": _uuids(rng, n),
        f"{pt}.pushProvider": w.platform[p],
        f"{pt}.isLaunch": opened,
        f"{pt}.customAction.actionID": _where(~opened, _choice(rng, ["view_offer", "dismiss", "remind_later"], n)),
        f"{pt}.customAction.value": _where(~opened, "1"),
        f"{_CJM}.pushChannelContext.platform": w.platform[p],
        f"{_CJM}.messageInteraction.interactionType": np.where(opened, "open", "click"),
        **_message_execution(ctx, a),
        **_message_profile(ctx, a),
    }


def _inbound_activity(ctx: _Ctx) -> dict[str, Any]:
    rng, n = ctx.rng, ctx.n
    p = _pick_profiles(ctx)
    event = _choice(
        rng,
        [
            "decisioning.propositionDisplay",
            "decisioning.propositionInteract",
            "inappmessageTracking.display",
            "inappmessageTracking.interact",
            "inappmessageTracking.dismiss",
        ],
        n,
        [0.55, 0.2, 0.15, 0.06, 0.04],
    )
    inapp = np.char.startswith(event.astype(str), "inapp")
    interact = np.char.endswith(event.astype(str), "nteract")
    display = np.char.endswith(event.astype(str), "isplay")
    scope = np.where(inapp, "mobileapp://com.example.app", "web://www.example.com/#hero").astype(object)
    return {
        **_event_envelope(ctx, event),
        **_identity(ctx, p, primary="ECID"),
        f"{_DEC}.propositions": ctx.single_list(
            f"{_DEC}.propositions",
            {
                "id": _uuids(rng, n),
                "scope": scope,
                "scopeDetails.correlationID": _uuids(rng, n),
                "scopeDetails.decisionProvider": "AJO",
                "scopeDetails.activity.id": _uuids(rng, n),
            },
        ),
        f"{_DEC}.propositionEventType.display": np.where(display, 1, None),
        f"{_DEC}.propositionEventType.interact": np.where(interact, 1, None),
        f"{_DEC}.propositionEventType.dismiss": np.where(event == "inappmessageTracking.dismiss", 1, None),
        f"{_DEC}.propositionAction.id": _where(interact, _choice(rng, ["cta-primary", "cta-secondary"], n)),
        f"{_DEC}.propositionAction.label": _where(interact, _choice(rng, ["Shop now", "Learn more"], n)),
        f"{_DEC}.channelType": np.where(inapp, "inapp", "web").astype(object),
    }


def _surfaces(ctx: _Ctx) -> dict[str, Any]:
    rng, n = ctx.rng, ctx.n
    uri = _choice(
        rng,
        ["web://www.example.com/#hero", "web://www.example.com/checkout#banner", "mobileapp://com.example.app/home"],
        n,
    )
    return {
        **_event_envelope(ctx, "decisioning.propositionTrigger"),
        **_identity(ctx, _pick_profiles(ctx), primary="ECID"),
        f"{_CJM}.surfaces": ctx.single_list(
            f"{_CJM}.surfaces",
            {
                "uri": uri,
                "channel": np.where(np.char.startswith(uri.astype(str), "web"), "web", "inapp"),
                "name": _choice(rng, ["Hero banner", "Checkout banner", "App home"], n),
            },
        ),
    }


def _journey_step_events(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    a = _pick_actions(ctx)
    is_action = rng.random(n) < 0.6
    if ctx.cover:
        cover = min(n, w.n_actions)
        a[:cover], is_action[:cover] = np.arange(cover), True
    v, p = w.a_version[a], _pick_profiles(ctx)
    other = _choice(rng, ["start", "condition", "timer", "scheduler", "end"], n, [0.3, 0.3, 0.2, 0.05, 0.15])
    node_type = np.where(is_action, "action", other).astype(object)
    step_type = np.select(
        [is_action, other == "condition", other == "timer", other == "scheduler"],
        ["Action", "Condition", "Timer", "Scheduler"],
        "Condition",
    ).astype(object)
    status = _choice(rng, ["transitions", "ended", "error", "capped", "timedout"], n, [0.55, 0.35, 0.04, 0.03, 0.03])
    status = np.where(~is_action & (status == "capped"), "transitions", status).astype(object)
    batch = rng.random(n) < 0.2
    step_id = _uuids(rng, n)
    node_id = np.where(is_action, w.a_node_id[a], step_id).astype(object)
    node_name = np.where(is_action, w.a_name[a], np.char.capitalize(other.astype(str))).astype(object)
    action_type = np.array([f"ACS {c.capitalize() if c != 'sms' else 'SMS'}" for c in w.a_channel[a]], dtype=object)
    error = np.select(
        [status == "capped", status == "error", status == "timedout"], ["capping", "http", "timeout"], None
    )
    se = f"{_JO}.stepEvents"
    return {
        **_event_envelope(ctx, "journey.stepEvent"),
        f"{se}.journeyID": w.v_journey_id[v],
        f"{se}.journeyVersionID": w.v_version_id[v],
        f"{se}.journeyVersionName": w.v_journey_name[v],
        f"{se}.journeyVersion": w.v_version[v],
        f"{se}.instanceID": np.array(
            [f"{'batch' if b else 'unitary'}_{u}" for b, u in zip(batch, _uuids(rng, n), strict=True)], dtype=object
        ),
        f"{se}.instanceType": np.where(batch, "batch", "unitary").astype(object),
        f"{se}.profileID": w.email[p],
        f"{se}.profileNamespace": "Email",
        f"{se}.nodeID": node_id,
        f"{se}.nodeName": node_name,
        f"{se}.nodeType": node_type,
        f"{se}.stepID": step_id,
        f"{se}.stepName": node_name,
        f"{se}.stepType": step_type,
        f"{se}.stepStatus": status,
        f"{se}.entrance": node_type == "start",
        f"{se}.reentrance": (node_type == "start") & (rng.random(n) < 0.05),
        f"{se}.instanceEnded": status == "ended",
        f"{se}.eventID": np.select(
            [node_type == "start", other == "timer"],
            ["createInstance", "scheduledNotificationReceived"],
            "executedAction",
        ).astype(object),
        f"{se}.inTest": rng.random(n) < 0.02,
        f"{se}.processingTime": rng.integers(2, 400, n),
        f"{se}.actionID": _where(is_action, w.a_action_id[a]),
        f"{se}.actionName": _where(is_action, w.a_name[a]),
        f"{se}.actionType": _where(is_action, "acsRestAction"),
        f"{se}.actionBusinessType": _where(is_action, action_type),
        f"{se}.actionExecutionTime": np.where(is_action, rng.integers(20, 900, n), None),
        f"{se}.actionExecutionError": _where(is_action, error),
        f"{_JO}.profile.ID": w.email[p],
    }


def _repo(ctx: _Ctx, base: str = "_repo") -> dict[str, Any]:
    return {
        f"{base}.createDate": ctx.ts - ctx.rng.integers(1, 400, ctx.n) * _US_PER_DAY,
        f"{base}.modifyDate": ctx.ts,
    }


def _profile_ids(ctx: _Ctx) -> np.ndarray:
    return _stable_uuids(ctx.world.seed, ctx.dataset.slug, keys=ctx.keys)


def _consent(ctx: _Ctx) -> dict[str, Any]:
    rng, n, p = ctx.rng, ctx.n, ctx.keys
    cols: dict[str, Any] = {"_id": _profile_ids(ctx), **_identity(ctx, p), **_repo(ctx)}
    for channel, yes in (("any", 0.9), ("email", 0.85), ("push", 0.6), ("sms", 0.4)):
        val = np.where(rng.random(n) < yes, "y", "n").astype(object)
        base = f"consents.marketing.{channel}"
        cols |= {
            f"{base}.val": val,
            f"{base}.reason": _where(val == "n", "Opted out via preference centre"),
            f"{base}.time": ctx.ts - rng.integers(0, 300, n) * _US_PER_DAY,
        }
    cols["consents.marketing.preferred"] = _choice(rng, ["email", "push", "sms"], n, [0.6, 0.3, 0.1])
    return cols


def _interactive_profile(ctx: _Ctx) -> dict[str, Any]:
    w, p = ctx.world, ctx.keys
    return {
        "_id": _profile_ids(ctx),
        **_identity(ctx, p, phone=True),
        "personalEmail.address": w.email[p],
        "mobilePhone.number": w.phone[p],
        "person.name.firstName": w.first[p],
        "person.name.lastName": w.last[p],
        **_repo(ctx),
    }


def _profile_counters(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    entry = pl.Struct(
        {"key": pl.String, "value": pl.Struct({"value": pl.Int64, "expiryDate": pl.Datetime("us", "UTC")})}
    )
    parts = []
    for i in range(3):
        present = rng.random(n) < (0.9 if i == 0 else 0.4)
        part = _build(
            pl.Schema({"x": entry}),
            {
                "x.key": w.counters[i],
                "x.value.value": rng.integers(1, 11, n),
                "x.value.expiryDate": ctx.ts + rng.integers(1, 60, n) * _US_PER_DAY,
            },
            n,
        )["x"]
        parts.append(pl.select(pl.when(pl.Series(present)).then(part).otherwise(None).alias(f"c{i}"))[f"c{i}"])
    frequency = pl.select(pl.concat_list(parts).list.drop_nulls().alias("f"))["f"]
    return {"_id": _profile_ids(ctx), **_identity(ctx, ctx.keys), "frequencyMap": frequency, **_repo(ctx)}


def _push_profile(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n, p = ctx.world, ctx.rng, ctx.n, ctx.keys
    tokens = np.array([rng.bytes(32).hex() for _ in range(n)], dtype=object)
    return {
        "_id": _profile_ids(ctx),
        **_identity(ctx, p, primary="ECID"),
        "pushNotificationDetails": ctx.single_list(
            "pushNotificationDetails",
            {
                "appID": "com.example.app",
                "token": tokens,
                "platform": w.platform[p],
                "denylisted": rng.random(n) < 0.03,
                "identity.namespace.code": "ECID",
                "identity.id": w.ecid[p],
            },
        ),
        **_repo(ctx),
    }


def _segments(ctx: _Ctx, path: str) -> pl.Series:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    dtype = ctx.dtype(path)
    assert isinstance(dtype, pl.List)
    parts = []
    for i in range(3):
        present = rng.random(n) < (0.95 if i == 0 else 0.35)
        aud = w.audiences[rng.integers(0, len(w.audiences), n) if i else np.full(n, i)]
        part = _build(
            pl.Schema({"x": dtype.inner}),
            {
                "x.key": aud,
                "x.value.status": _choice(rng, ["realized", "existing", "exited"], n, [0.5, 0.4, 0.1]),
                "x.value.lastQualificationTime": ctx.ts - rng.integers(0, 90, n) * _US_PER_DAY,
            },
            n,
        )["x"]
        parts.append(pl.select(pl.when(pl.Series(present)).then(part).otherwise(None).alias(f"s{i}"))[f"s{i}"])
    return pl.select(pl.concat_list(parts).list.drop_nulls().list.unique(maintain_order=True).alias("s"))["s"]


def _ao_output(ctx: _Ctx) -> dict[str, Any]:
    return {
        "_id": _profile_ids(ctx),
        **_identity(ctx, ctx.keys),
        "segmentMembership.ups": _segments(ctx, "segmentMembership.ups"),
    }


def _ao_profile(ctx: _Ctx) -> dict[str, Any]:
    w, p = ctx.world, ctx.keys
    return {
        "_id": _profile_ids(ctx),
        **_identity(ctx, p),
        "personalEmail.address": w.email[p],
        "person.name.firstName": w.first[p],
        "person.name.lastName": w.last[p],
        "homeAddress.city": w.city[p],
        "homeAddress.countryCode": w.country[p],
        "segmentMembership.ups": _segments(ctx, "segmentMembership.ups"),
        **_repo(ctx),
    }


def _entity(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    a, variant = ctx.keys // 2, ctx.keys % 2
    v, channel = w.a_version[a], w.a_channel[a]
    base = f"{_CJM}.entities"
    return {
        "_id": w.entity_id[ctx.keys],
        f"{base}.journey.journeyID": w.v_journey_id[v],
        f"{base}.journey.journeyVersionID": w.v_version_id[v],
        f"{base}.journey.journeyName": w.v_journey_name[v],
        f"{base}.journey.journeyActionID": w.a_action_id[a],
        f"{base}.journey.journeyActionName": w.a_name[a],
        f"{base}.journey.journeyNodeID": w.a_node_id[a],
        f"{base}.journey.journeyNodeName": w.a_name[a],
        f"{base}.channelDetails.channel._id": np.array(
            [f"https://ns.adobe.com/xdm/channels/{c}" for c in channel], dtype=object
        ),
        f"{base}.channelDetails.messageID": w.a_message_id[a],
        f"{base}.channelDetails.messagePublicationID": w.a_publication_id[a],
        f"{base}.channelDetails.variantID": _stable_uuids(w.seed, "variant", keys=ctx.keys),
        f"{base}.channelDetails.variantName": np.where(variant == 0, "Variant A", "Variant B").astype(object),
        f"{base}.channelDetails.email.subject": _where(
            channel == "email", np.array([f"{w.v_journey_name[x]}: news for you" for x in v], dtype=object)
        ),
        f"{base}.channelDetails.push.title": _where(channel == "push", w.v_journey_name[v]),
        f"{base}.channelDetails.messagePublishedAt": ctx.ts - rng.integers(30, 60, n) * 60_000_000,
    }


def _classification(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    a = ctx.keys
    v = w.a_version[a]
    exp = rng.random(n) < 0.2
    base = f"{_JO}.classification"
    return {
        "_id": _stable_uuids(w.seed, ctx.dataset.slug, keys=ctx.keys),
        f"{base}.messageID": w.a_message_id[a],
        f"{base}.channel": w.a_channel[a],
        f"{base}.experimentation.experimentID": _where(exp, _stable_uuids(w.seed, "experiment", keys=a)),
        f"{base}.experimentation.experimentName": _where(exp, "Subject line test"),
        f"{base}.experimentation.treatmentID": _where(exp, _choice(rng, ["treatment-a", "treatment-b"], n)),
        f"{base}.experimentation.treatmentName": _where(exp, _choice(rng, ["Treatment A", "Treatment B"], n)),
        f"{base}.journey.journeyID": w.v_journey_id[v],
        f"{base}.journey.journeyName": w.v_journey_name[v],
        f"{base}.journey.journeyVersionID": w.v_version_id[v],
        f"{base}.journey.actionID": w.a_action_id[a],
        f"{base}.journey.actionName": w.a_name[a],
        f"{base}.journey.nodeID": w.a_node_id[a],
        f"{base}.journey.nodeName": w.a_name[a],
    }


def _journeys(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n, v = ctx.world, ctx.rng, ctx.n, ctx.keys
    base = f"{_JO}.stepEvents"
    return {
        "_id": w.v_version_id[v],
        f"{base}.journeyID": w.v_journey_id[v],
        f"{base}.journeyVersionID": w.v_version_id[v],
        f"{base}.name": w.v_journey_name[v],
        f"{base}.description": np.array([f"{x} journey" for x in w.v_journey_name[v]], dtype=object),
        f"{base}.version": w.v_version[v],
        f"{base}.journeyDeploymentID": _stable_uuids(w.seed, "deployment", keys=v),
        f"{base}.objectiveMetricID": _where(rng.random(n) < 0.5, _stable_uuids(w.seed, "objective", keys=v)),
    }


def _decision_repo(ctx: _Ctx, base: str = "_repo") -> dict[str, Any]:
    return {**_repo(ctx, base), f"{base}.etag": ctx.rng.integers(1, 30, ctx.n)}


def _contents(ctx: _Ctx, kind: str) -> pl.Series:
    w, rng = ctx.world, ctx.rng
    placements = w.placements[rng.integers(0, len(w.placements), ctx.n)]
    rows = [
        [
            {
                "placement": pl_id,
                "components": [{"format": "text/html", "content": f"<div>{kind} {k}</div>", "language": ["en-us"]}],
            }
        ]
        for pl_id, k in zip(placements, ctx.keys, strict=True)
    ]
    return pl.Series(rows, dtype=ctx.dtype(f"{_DEC}.contents"))


def _lifecycle(ctx: _Ctx) -> np.ndarray:
    return _choice(ctx.rng, ["approved", "draft", "archived"], ctx.n, [0.75, 0.15, 0.1])


def _activities(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    criteria = [
        [
            {
                "placements": [w.placements[k % len(w.placements)]],
                "optionSelection": {"filter": f"xcore:offer-filter:{_hash_bytes(w.seed, 'filter', k).hex()[:16]}"},
                "rankingStrategy": "priority" if k % 3 else "ai-model",
            }
        ]
        for k in ctx.keys
    ]
    return {
        "_id": w.activities[ctx.keys],
        **_decision_repo(ctx),
        f"{_DEC}.name": np.array([f"Decision {k + 1}" for k in ctx.keys], dtype=object),
        f"{_DEC}.lifecycleStatus": _lifecycle(ctx),
        f"{_DEC}.startTime": ctx.ts - rng.integers(1, 200, n) * _US_PER_DAY,
        f"{_DEC}.endTime": ctx.ts + rng.integers(30, 365, n) * _US_PER_DAY,
        f"{_DEC}.criteria": pl.Series(criteria, dtype=ctx.dtype(f"{_DEC}.criteria")),
        f"{_DEC}.fallback": w.fallback_offers[ctx.keys % len(w.fallback_offers)],
    }


def _fallback_offers(ctx: _Ctx) -> dict[str, Any]:
    return {
        "_id": ctx.world.fallback_offers[ctx.keys],
        **_decision_repo(ctx),
        f"{_DEC}.name": np.array([f"Fallback offer {k + 1}" for k in ctx.keys], dtype=object),
        f"{_DEC}.lifecycleStatus": _lifecycle(ctx),
        f"{_DEC}.tags": pl.Series([["fallback"]] * ctx.n, dtype=pl.List(pl.String)),
        f"{_DEC}.contents": _contents(ctx, "Fallback offer"),
    }


def _personalized_offers(ctx: _Ctx) -> dict[str, Any]:
    rng, n = ctx.rng, ctx.n
    rule = rng.random(n) < 0.6
    return {
        "_id": ctx.world.personalized_offers[ctx.keys],
        **_decision_repo(ctx),
        f"{_DEC}.name": np.array([f"Personalized offer {k + 1}" for k in ctx.keys], dtype=object),
        f"{_DEC}.lifecycleStatus": _lifecycle(ctx),
        f"{_DEC}.tags": pl.Series(
            [[t] for t in _choice(rng, ["summer", "loyalty", "new-customer"], n)], dtype=pl.List(pl.String)
        ),
        f"{_DEC}.contents": _contents(ctx, "Personalized offer"),
        f"{_DEC}.ranking.priority": rng.integers(0, 101, n),
        f"{_DEC}.calendarConstraints.startDate": ctx.ts - rng.integers(1, 100, n) * _US_PER_DAY,
        f"{_DEC}.calendarConstraints.endDate": ctx.ts + rng.integers(10, 200, n) * _US_PER_DAY,
        f"{_DEC}.profileConstraint.profileConstraintType": np.where(rule, "eligibilityRule", "none").astype(object),
        f"{_DEC}.profileConstraint.eligibilityRule": _where(
            rule, np.array([f"xcore:eligibility-rule:{_hash_bytes(k).hex()[:16]}" for k in ctx.keys], dtype=object)
        ),
        f"{_DEC}.cappingConstraint.maximumCount": np.where(rng.random(n) < 0.5, rng.integers(1, 6, n), None),
    }


def _placements(ctx: _Ctx) -> dict[str, Any]:
    n = ctx.n
    web = ctx.keys % 2 == 0
    return {
        "_id": ctx.world.placements[ctx.keys],
        **_decision_repo(ctx),
        f"{_DEC}.name": np.array(
            [f"{'Web' if x else 'App'} placement {k + 1}" for x, k in zip(web, ctx.keys, strict=True)], dtype=object
        ),
        f"{_DEC}.description": "Where an offer is displayed",
        f"{_DEC}.channel": np.where(
            web, "https://ns.adobe.com/xdm/channel-types/web", "https://ns.adobe.com/xdm/channel-types/mobile"
        ).astype(object),
        f"{_DEC}.componentType": "https://ns.adobe.com/experience/offer-management/content-component-html",
        f"{_DEC}.contentTypes": pl.Series([["text/html"]] * n, dtype=pl.List(pl.String)),
    }


def _decision_events(ctx: _Ctx) -> dict[str, Any]:
    w, rng, n = ctx.world, ctx.rng, ctx.n
    act = rng.integers(0, len(w.activities), n)
    place = act % len(w.placements)
    offer = rng.integers(0, len(w.personalized_offers), n)
    fallback = rng.random(n) < 0.1
    ids = _uuids(rng, n)
    details = [
        [
            {
                "id": i,
                "scope": w.placements[pl_idx],
                "activity": {"id": w.activities[ac], "name": f"Decision {ac + 1}"},
                "placement": {"id": w.placements[pl_idx], "name": f"Placement {pl_idx + 1}"},
                "selections": [] if fb else [{"id": w.personalized_offers[o], "name": f"Personalized offer {o + 1}"}],
                "fallback": {"id": w.fallback_offers[ac % len(w.fallback_offers)], "name": "Fallback"} if fb else None,
            }
        ]
        for i, ac, pl_idx, o, fb in zip(ids, act, place, offer, fallback, strict=True)
    ]
    return {
        **_event_envelope(ctx, "decisioning.propositionSend"),
        **_identity(ctx, _pick_profiles(ctx), primary="ECID"),
        f"{_DEC}.propositionDetails": pl.Series(details, dtype=ctx.dtype(f"{_DEC}.propositionDetails")),
        f"{_DEC}.propositions": ctx.single_list(
            f"{_DEC}.propositions",
            {
                "id": ids,
                "scope": w.placements[place],
                "scopeDetails.correlationID": _uuids(rng, n),
                "scopeDetails.activity.id": w.activities[act],
            },
        ),
    }


_GENERATORS: dict[str, Callable[[_Ctx], dict[str, Any]]] = {
    "ajo_bcc_feedback_event_dataset": _bcc_feedback,
    "ajo_classification_dataset": _classification,
    "ajo_consent_service_dataset": _consent,
    "ajo_email_tracking_experience_event_dataset": _email_tracking,
    "ajo_entity_dataset": _entity,
    "ajo_inbound_activity_event_dataset": _inbound_activity,
    "ajo_interactive_messaging_profile_dataset": _interactive_profile,
    "ajo_message_feedback_event_dataset": _message_feedback,
    "ajo_profile_counters_extension": _profile_counters,
    "ajo_push_profile_dataset": _push_profile,
    "ajo_push_tracking_experience_event_dataset": _push_tracking,
    "ajo_surfaces_dataset": _surfaces,
    "ao_output_for_ups_dataset": _ao_output,
    "audience_orchestration_profile_dataset": _ao_profile,
    "decision_object_repository_activities": _activities,
    "decision_object_repository_fallback_offers": _fallback_offers,
    "decision_object_repository_personalized_offers": _personalized_offers,
    "decision_object_repository_placements": _placements,
    "journey_step_events": _journey_step_events,
    "journeys": _journeys,
    "ode_decisionevents_prod_decisioning": _decision_events,
}

_PROFILE_DATASETS = {
    "ajo_consent_service_dataset",
    "ajo_interactive_messaging_profile_dataset",
    "ajo_profile_counters_extension",
    "ajo_push_profile_dataset",
    "ao_output_for_ups_dataset",
    "audience_orchestration_profile_dataset",
}


def _universe(dataset: Dataset, world: _World) -> int | None:
    """How many distinct records a record dataset has (None for event datasets, which just append)."""
    if dataset.is_time_series:
        return None
    if dataset.slug in _PROFILE_DATASETS:
        return len(world.email)
    return {
        "ajo_entity_dataset": len(world.entity_id),
        "ajo_classification_dataset": world.n_actions,
        "journeys": len(world.v_version_id),
        "decision_object_repository_activities": len(world.activities),
        "decision_object_repository_fallback_offers": len(world.fallback_offers),
        "decision_object_repository_personalized_offers": len(world.personalized_offers),
        "decision_object_repository_placements": len(world.placements),
    }[dataset.slug]


def _seed_rows(dataset: Dataset, world: _World, rows: int, batches: int) -> int:
    universe = _universe(dataset, world)
    if dataset.slug == "ajo_surfaces_dataset":
        return max(batches, 8)
    if dataset.slug == "journey_step_events":
        return max(rows, world.n_actions)
    if universe is None:
        return rows
    if dataset.slug in _PROFILE_DATASETS:
        return min(universe, max(rows, batches))
    return universe  # joins need every entity / journey version / decision object


def _times(rng: np.random.Generator, windows: Sequence[tuple[int, int, int]], pin_first: bool) -> np.ndarray:
    """Per-row microsecond timestamps: ``count`` sorted values in [lo, hi) per window."""
    parts = []
    for k, (lo, hi, count) in enumerate(windows):
        t = np.sort(rng.integers(lo, hi, count, dtype=np.int64))
        if k == 0 and pin_first and count:
            t[0] = lo
        parts.append(t)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _frame(
    dataset: Dataset,
    world: _World,
    rng: np.random.Generator,
    windows: Sequence[tuple[int, int, int]],
    keys: np.ndarray,
    cover: bool,
) -> pl.DataFrame:
    ts = _times(rng, windows, pin_first=True)
    ctx = _Ctx(dataset=dataset, world=world, rng=rng, ts=ts, keys=keys, cover=cover)
    return _build(dataset.schema, _GENERATORS[dataset.slug](ctx), ctx.n)


def _default_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now.astimezone(UTC)


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _dataset_index(dataset: Dataset) -> int:
    return next(i for i, d in enumerate(DATASETS) if d.slug == dataset.slug)


def generate_batch(dataset: Dataset, rows: int, *, seed: int, batch_index: int, now: datetime) -> pl.DataFrame:
    """One new ingestion batch ingested at ``now`` (what ``ajo-exports lake append`` writes).

    Event datasets get ``rows`` fresh events from the last 6 hours (from 425 days back for ``batch_index`` 0).
    Record datasets re-ingest up to ``rows`` existing records with the same ``_id`` (AEP upserts), so an appended
    record batch may repeat IDs already in the lake; it is capped at the dataset's universe size.
    """
    now = _default_now(now)
    world = _build_world(seed)
    rng = np.random.default_rng([seed, _dataset_index(dataset), 1_000 + batch_index])
    hi = _us(now)
    lo = hi - (_BACKFILL_DAYS * _US_PER_DAY if batch_index == 0 else 6 * _US_PER_HOUR)
    universe = _universe(dataset, world)
    if universe is None:
        keys = np.arange(rows)
    else:
        keys = np.sort(rng.choice(universe, size=min(rows, universe), replace=False))
    return _frame(dataset, world, rng, [(lo, hi, len(keys))], keys, cover=batch_index == 0)


def seed_lake(
    lake: LocalLake,
    *,
    rows: int = 2000,
    batches: int = 4,
    seed: int = 7,
    now: datetime | None = None,
    datasets: Sequence[Dataset] = DATASETS,
) -> dict[str, list[Batch]]:
    """Clear the lake and write ``batches`` ingestion batches per dataset from one shared, seeded world.

    Batch k of B is ingested at ``now - 3h - (B-1-k) days`` (plus a few minutes per dataset), so the last batch is
    about 3 hours old. Batch 0 is a backfill reaching 425 days back; batch k>0 holds events from 2 hours before the
    previous ingestion up to its own ingestion. Same arguments -> identical rows and batch IDs.
    """
    if batches < 1 or rows < 1:
        raise ValueError("rows and batches must be at least 1")
    now = _default_now(now)
    world = _build_world(seed)
    lake.clear()
    written: dict[str, list[Batch]] = {}
    for dataset in datasets:
        index = _dataset_index(dataset)
        rng = np.random.default_rng([seed, index])
        ingest = [
            now - timedelta(hours=3) - timedelta(days=batches - 1 - k) + timedelta(minutes=2 * index + k)
            for k in range(batches)
        ]
        n = _seed_rows(dataset, world, rows, batches)
        sizes = [len(part) for part in np.array_split(np.arange(n), batches)]
        windows = []
        for k in range(batches):
            hi = _us(ingest[k])
            lo = hi - _BACKFILL_DAYS * _US_PER_DAY if k == 0 else _us(ingest[k - 1]) - 2 * _US_PER_HOUR
            windows.append((lo, hi, sizes[k]))
        frame = _frame(dataset, world, rng, windows, np.arange(n), cover=True)
        written[dataset.slug] = []
        offset = 0
        for k, size in enumerate(sizes):
            batch_id = make_batch_id(ingest[k], _hash_bytes(seed, dataset.slug, k)[:10])
            written[dataset.slug].append(
                lake.append_batch(dataset, frame.slice(offset, size), ingest[k], batch_id=batch_id)
            )
            offset += size
    return written
