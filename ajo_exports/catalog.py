"""The 21 Adobe Journey Optimizer datasets that can be exported to cloud storage.

Source: the tiered table on AJO's "Export datasets" page (fr-FR revision, 21 rows) and the field paths of the
AEP dataset-export research note (§9). Slugs follow the Query Service table names where Adobe documents one;
dataset IDs are derived from the slug so they never change between releases or machines.

Schemas are realistic, not exhaustive: they carry the documented join keys and the fields a report would use.
XDM maps are modelled the way Parquet readers surface them: ``identityMap`` (and ``segmentMembership``) as a
struct keyed by namespace, open-ended maps (``frequencyMap``, segment maps) as ``list<struct<key, value>>``.

Column types are spelled in a small vocabulary of polars' own (``ColumnType``), so the catalog (and every command
and the Dagster definitions that only need names, tiers and column lists) loads without importing polars; a
dataset's ``schema`` is the polars schema, built on first use.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "DATASETS",
    "Dataset",
    "Tier",
    "UnknownDatasetError",
    "XdmClass",
    "datasets_for_tier",
    "get_dataset",
]


class Tier(StrEnum):
    """Minimum AJO package that entitles a customer to export a dataset."""

    PRIME = "prime"
    ULTIMATE = "ultimate"


class XdmClass(StrEnum):
    """XDM class behaviour: time-series datasets are append-only, record datasets are upserted."""

    TIME_SERIES = "time-series"
    RECORD = "record"


@dataclass(frozen=True)
class Dataset:
    """One exportable AJO dataset and the XDM shape of its rows."""

    slug: str
    name: str
    description: str
    tier: Tier
    dataset_id: str
    xdm_class: XdmClass
    xdm_class_name: str
    columns: tuple[tuple[str, ColumnType], ...]

    @property
    def is_time_series(self) -> bool:
        """Time-series datasets are subject to the 365-day export window on ``timestamp``."""
        return self.xdm_class is XdmClass.TIME_SERIES

    @property
    def schema(self) -> pl.Schema:
        """The rows' polars schema (built once per dataset, on first use)."""
        schema = _POLARS_SCHEMAS.get(self.slug)
        if schema is None:
            import polars as pl

            schema = _POLARS_SCHEMAS[self.slug] = pl.Schema({name: kind.polars() for name, kind in self.columns})
        return schema


_POLARS_SCHEMAS: dict[str, pl.Schema] = {}


@dataclass(frozen=True)
class ColumnType:
    """A polars data type by name: ``str()`` spells it exactly as polars does, ``polars()`` builds it."""

    name: str  # String, Boolean, Int64, Int32, Float64, Datetime, List or Struct
    args: tuple = ()  # Datetime: (time unit, time zone); List: (inner,); Struct: ((field, type), ...)

    def __str__(self) -> str:
        if self.name == "Datetime":
            return f"Datetime(time_unit={self.args[0]!r}, time_zone={self.args[1]!r})"
        if self.name == "List":
            return f"List({self.args[0]})"
        if self.name == "Struct":
            return "Struct({" + ", ".join(f"{field!r}: {kind}" for field, kind in self.args) + "})"
        return self.name

    def polars(self) -> pl.DataType:
        import polars as pl

        if self.name == "Datetime":
            return pl.Datetime(*self.args)
        if self.name == "List":
            return pl.List(self.args[0].polars())
        if self.name == "Struct":
            return pl.Struct({field: kind.polars() for field, kind in self.args})
        return getattr(pl, self.name)()


# --- schema building blocks -------------------------------------------------------------------------------------

S = ColumnType("String")
B = ColumnType("Boolean")
I64 = ColumnType("Int64")
I32 = ColumnType("Int32")
F64 = ColumnType("Float64")
TS = ColumnType("Datetime", ("us", "UTC"))


def _st(**fields: ColumnType) -> ColumnType:
    return ColumnType("Struct", tuple(fields.items()))


def _list(inner: ColumnType) -> ColumnType:
    return ColumnType("List", (inner,))


def _columns(columns: dict[str, ColumnType]) -> tuple[tuple[str, ColumnType], ...]:
    return tuple(columns.items())


_IDENTITY = _list(_st(id=S, primary=B))
_IDENTITY_MAP = _st(Email=_IDENTITY, ECID=_IDENTITY)
_IDENTITY_MAP_PHONE = _st(Email=_IDENTITY, ECID=_IDENTITY, Phone=_IDENTITY)

_MESSAGE_EXECUTION = _st(
    messageExecutionID=S,
    messageID=S,
    messagePublicationID=S,
    journeyVersionID=S,
    journeyVersionInstanceID=S,
    journeyVersionNodeID=S,
    journeyActionID=S,
    batchInstanceID=S,
    messageType=S,
)
_MESSAGE_PROFILE = _st(
    messageProfileID=S,
    channel=_st(_id=S),
    variant=S,
    isTestExecution=B,
    isSendTimeOptimized=B,
)
_EMAIL_CONTEXT = _st(address=S, namespace=S, domain=S)
_PUSH_CONTEXT = _st(platform=S)
_MESSAGE_FAILURE = _st(reason=S, code=S, type=S, category=S)
_SCOPE_PROPOSITIONS = _list(_st(id=S, scope=S, scopeDetails=_st(correlationID=S, decisionProvider=S)))

_TIME_SERIES_ENVELOPE: dict[str, ColumnType] = {"_id": S, "timestamp": TS, "eventType": S}
_REPO = _st(createDate=TS, modifyDate=TS)
_SEGMENT_MAP = _list(_st(key=S, value=_st(status=S, lastQualificationTime=TS)))
_PERSON_NAME = _st(name=_st(firstName=S, lastName=S))


def _event(**payload: ColumnType) -> tuple[tuple[str, ColumnType], ...]:
    return _columns({**_TIME_SERIES_ENVELOPE, "identityMap": _IDENTITY_MAP, **payload})


def _record(**fields: ColumnType) -> tuple[tuple[str, ColumnType], ...]:
    return _columns({"_id": S, **fields})


def _dataset_id(slug: str) -> str:
    """AEP dataset IDs are 24 lowercase hex chars; derive ours from the slug so they are stable forever."""
    return hashlib.sha1(slug.encode("utf-8")).hexdigest()[:24]


_FEEDBACK_CJM = _st(
    messageDeliveryfeedback=_st(
        feedbackStatus=S,
        messageFailure=_MESSAGE_FAILURE,
        messageExclusion=_st(code=S, reason=S),
        retryCount=I32,
        requestTimestamp=TS,
    ),
    messageExecution=_MESSAGE_EXECUTION,
    messageProfile=_MESSAGE_PROFILE,
    emailChannelContext=_EMAIL_CONTEXT,
    pushChannelContext=_PUSH_CONTEXT,
)

_DECISION_CONTENTS = _list(_st(placement=S, components=_list(_st(format=S, content=S, language=_list(S)))))

_SCHEMAS: dict[str, tuple[tuple[str, ColumnType], ...]] = {
    "ajo_bcc_feedback_event_dataset": _event(
        _experience=_st(
            customerJourneyManagement=_st(
                messageDeliveryfeedback=_st(feedbackStatus=S, messageFailure=_MESSAGE_FAILURE, retryCount=I32),
                secondaryRecipientDetail=_st(type=S, originalRecipientAddress=S),
                messageExecution=_MESSAGE_EXECUTION,
                messageProfile=_MESSAGE_PROFILE,
                emailChannelContext=_EMAIL_CONTEXT,
            )
        )
    ),
    "ajo_classification_dataset": _record(
        _experience=_st(
            journeyOrchestration=_st(
                classification=_st(
                    messageID=S,
                    channel=S,
                    experimentation=_st(experimentID=S, experimentName=S, treatmentID=S, treatmentName=S),
                    journey=_st(
                        journeyID=S,
                        journeyName=S,
                        journeyVersionID=S,
                        actionID=S,
                        actionName=S,
                        nodeID=S,
                        nodeName=S,
                    ),
                    campaign=_st(campaignID=S, campaignName=S, campaignVersionID=S),
                )
            )
        ),
    ),
    "ajo_consent_service_dataset": _record(
        identityMap=_IDENTITY_MAP,
        consents=_st(
            marketing=_st(
                any=_st(val=S, reason=S, time=TS),
                email=_st(val=S, reason=S, time=TS),
                push=_st(val=S, reason=S, time=TS),
                sms=_st(val=S, reason=S, time=TS),
                preferred=S,
            )
        ),
        _repo=_REPO,
    ),
    "ajo_email_tracking_experience_event_dataset": _event(
        _experience=_st(
            customerJourneyManagement=_st(
                messageInteraction=_st(
                    interactionType=S,
                    url=S,
                    urlID=S,
                    label=S,
                    tags=_list(S),
                    trackingType=S,
                    isBot=B,
                    entityType=S,
                ),
                messageExecution=_MESSAGE_EXECUTION,
                messageProfile=_MESSAGE_PROFILE,
                emailChannelContext=_EMAIL_CONTEXT,
            )
        )
    ),
    "ajo_entity_dataset": _record(
        _experience=_st(
            customerJourneyManagement=_st(
                entities=_st(
                    journey=_st(
                        journeyID=S,
                        journeyVersionID=S,
                        journeyName=S,
                        journeyActionID=S,
                        journeyActionName=S,
                        journeyNodeID=S,
                        journeyNodeName=S,
                    ),
                    channelDetails=_st(
                        channel=_st(_id=S),
                        messageID=S,
                        messagePublicationID=S,
                        variantID=S,
                        variantName=S,
                        email=_st(subject=S),
                        push=_st(title=S),
                        messagePublishedAt=TS,
                    ),
                )
            )
        ),
    ),
    "ajo_inbound_activity_event_dataset": _event(
        _experience=_st(
            decisioning=_st(
                propositions=_list(
                    _st(
                        id=S,
                        scope=S,
                        scopeDetails=_st(correlationID=S, decisionProvider=S, activity=_st(id=S)),
                    )
                ),
                propositionEventType=_st(display=I32, interact=I32, dismiss=I32),
                propositionAction=_st(id=S, label=S),
                channelType=S,
            ),
            customerJourneyManagement=_st(messageExecution=_MESSAGE_EXECUTION),
        )
    ),
    "ajo_interactive_messaging_profile_dataset": _record(
        identityMap=_IDENTITY_MAP_PHONE,
        personalEmail=_st(address=S),
        mobilePhone=_st(number=S),
        person=_PERSON_NAME,
        _repo=_REPO,
    ),
    "ajo_message_feedback_event_dataset": _event(
        _experience=_st(
            customerJourneyManagement=_FEEDBACK_CJM,
            decisioning=_st(propositions=_SCOPE_PROPOSITIONS),
        )
    ),
    "ajo_profile_counters_extension": _record(
        identityMap=_IDENTITY_MAP,
        frequencyMap=_list(_st(key=S, value=_st(value=I64, expiryDate=TS))),
        _repo=_REPO,
    ),
    "ajo_push_profile_dataset": _record(
        identityMap=_IDENTITY_MAP,
        pushNotificationDetails=_list(
            _st(appID=S, token=S, platform=S, denylisted=B, identity=_st(namespace=_st(code=S), id=S))
        ),
        _repo=_REPO,
    ),
    "ajo_push_tracking_experience_event_dataset": _event(
        pushNotificationTracking=_st(
            pushProviderMessageID=S,
            pushProvider=S,
            isLaunch=B,
            customAction=_st(actionID=S, value=S),
        ),
        _experience=_st(
            customerJourneyManagement=_st(
                pushChannelContext=_PUSH_CONTEXT,
                messageInteraction=_st(interactionType=S),
                messageExecution=_MESSAGE_EXECUTION,
                messageProfile=_MESSAGE_PROFILE,
            )
        ),
    ),
    "ajo_surfaces_dataset": _event(
        _experience=_st(
            customerJourneyManagement=_st(surfaces=_list(_st(uri=S, channel=S, name=S))),
        )
    ),
    "ao_output_for_ups_dataset": _record(
        identityMap=_IDENTITY_MAP,
        segmentMembership=_st(ups=_SEGMENT_MAP),
    ),
    "audience_orchestration_profile_dataset": _record(
        identityMap=_IDENTITY_MAP,
        personalEmail=_st(address=S),
        person=_PERSON_NAME,
        homeAddress=_st(city=S, countryCode=S),
        segmentMembership=_st(ups=_SEGMENT_MAP),
        _repo=_REPO,
    ),
    "decision_object_repository_activities": _record(
        _repo=_st(etag=I64, createDate=TS, modifyDate=TS),
        _experience=_st(
            decisioning=_st(
                name=S,
                lifecycleStatus=S,
                startTime=TS,
                endTime=TS,
                criteria=_list(_st(placements=_list(S), optionSelection=_st(filter=S), rankingStrategy=S)),
                fallback=S,
            )
        ),
    ),
    "decision_object_repository_fallback_offers": _record(
        _repo=_st(etag=I64, createDate=TS, modifyDate=TS),
        _experience=_st(decisioning=_st(name=S, lifecycleStatus=S, tags=_list(S), contents=_DECISION_CONTENTS)),
    ),
    "decision_object_repository_personalized_offers": _record(
        _repo=_st(etag=I64, createDate=TS, modifyDate=TS),
        _experience=_st(
            decisioning=_st(
                name=S,
                lifecycleStatus=S,
                tags=_list(S),
                contents=_DECISION_CONTENTS,
                ranking=_st(priority=I32),
                calendarConstraints=_st(startDate=TS, endDate=TS),
                profileConstraint=_st(profileConstraintType=S, eligibilityRule=S),
                cappingConstraint=_st(maximumCount=I32),
            )
        ),
    ),
    "decision_object_repository_placements": _record(
        _repo=_st(etag=I64, createDate=TS, modifyDate=TS),
        _experience=_st(decisioning=_st(name=S, description=S, channel=S, componentType=S, contentTypes=_list(S))),
    ),
    "journey_step_events": _columns(
        {
            **_TIME_SERIES_ENVELOPE,
            "_experience": _st(
                journeyOrchestration=_st(
                    serviceType=S,
                    stepEvents=_st(
                        journeyID=S,
                        journeyVersionID=S,
                        journeyVersionName=S,
                        journeyVersion=S,
                        instanceID=S,
                        instanceType=S,
                        profileID=S,
                        profileNamespace=S,
                        nodeID=S,
                        nodeName=S,
                        nodeType=S,
                        stepID=S,
                        stepName=S,
                        stepType=S,
                        stepStatus=S,
                        entrance=B,
                        reentrance=B,
                        instanceEnded=B,
                        eventID=S,
                        inTest=B,
                        processingTime=I64,
                        actionID=S,
                        actionName=S,
                        actionType=S,
                        actionBusinessType=S,
                        actionExecutionTime=I64,
                        actionExecutionError=S,
                    ),
                    profile=_st(ID=S),
                )
            ),
        }
    ),
    "journeys": _record(
        _experience=_st(
            journeyOrchestration=_st(
                stepEvents=_st(
                    journeyID=S,
                    journeyVersionID=S,
                    name=S,
                    description=S,
                    version=S,
                    journeyDeploymentID=S,
                    objectiveMetricID=S,
                )
            )
        ),
    ),
    "ode_decisionevents_prod_decisioning": _event(
        _experience=_st(
            decisioning=_st(
                propositionDetails=_list(
                    _st(
                        id=S,
                        scope=S,
                        activity=_st(id=S, name=S),
                        placement=_st(id=S, name=S),
                        selections=_list(_st(id=S, name=S)),
                        fallback=_st(id=S, name=S),
                    )
                ),
                propositions=_list(_st(id=S, scope=S, scopeDetails=_st(correlationID=S, activity=_st(id=S)))),
            )
        )
    ),
}

_EE = "XDM ExperienceEvent"
_PROFILE = "XDM Individual Profile"
_P, _U = Tier.PRIME, Tier.ULTIMATE
_TSC, _REC = XdmClass.TIME_SERIES, XdmClass.RECORD

# (slug, name, description, tier, class, class name) in the order of the AJO "Export datasets" page.
_ROWS: tuple[tuple[str, str, str, Tier, XdmClass, str], ...] = (
    (
        "ajo_bcc_feedback_event_dataset",
        "AJO BCC Feedback Event Dataset",
        "Delivery feedback for the BCC (secondary recipient) copies of AJO messages.",
        _P,
        _TSC,
        _EE,
    ),
    (
        "ajo_classification_dataset",
        "AJO Classification Dataset",
        "Dataset for ingesting email and push app feedback events into Journey Optimizer. Created via the SDK.",
        _P,
        _REC,
        "Journey Orchestration Class",
    ),
    (
        "ajo_consent_service_dataset",
        "AJO Consent Service Dataset",
        "Stores the consent information of a profile.",
        _P,
        _REC,
        _PROFILE,
    ),
    (
        "ajo_email_tracking_experience_event_dataset",
        "AJO Email Tracking Experience Event Dataset",
        "Interaction logs for the email channel, used for reporting and audiences.",
        _P,
        _TSC,
        _EE,
    ),
    (
        "ajo_entity_dataset",
        "AJO Entity Dataset",
        "Stores the entity metadata of the messages sent to end users.",
        _P,
        _REC,
        "AJO Entity Class",
    ),
    (
        "ajo_inbound_activity_event_dataset",
        "AJO Inbound Activity Event Dataset",
        "Delivery and interaction events for the Journey Optimizer web and in-app channels.",
        _P,
        _TSC,
        _EE,
    ),
    (
        "ajo_interactive_messaging_profile_dataset",
        "AJO Interactive Messaging Profile Dataset",
        "Stores the profiles created to support API-triggered campaigns.",
        _P,
        _REC,
        _PROFILE,
    ),
    (
        "ajo_message_feedback_event_dataset",
        "AJO Message Feedback Event Dataset",
        "Message delivery logs: every message delivery from Journey Optimizer, for reporting and audiences. "
        "Email ISP bounce feedback is recorded here too.",
        _P,
        _TSC,
        _EE,
    ),
    (
        "ajo_profile_counters_extension",
        "AJO Profile Counters Extension",
        "A map of objects holding counter_value and expirationDate, keyed by counter_id.",
        _P,
        _REC,
        _PROFILE,
    ),
    (
        "ajo_push_profile_dataset",
        "AJO Push Profile Dataset",
        "Stores the push tokens of a profile.",
        _P,
        _REC,
        _PROFILE,
    ),
    (
        "ajo_push_tracking_experience_event_dataset",
        "AJO Push Tracking Experience Event Dataset",
        "Interaction logs for the push notification channel, used for reporting and audiences.",
        _P,
        _TSC,
        _EE,
    ),
    (
        "ajo_surfaces_dataset",
        "AJO Surfaces Dataset",
        "Empty dataset associated with the Journey Optimizer inbound surfaces schema.",
        _P,
        _TSC,
        _EE,
    ),
    (
        "ao_output_for_ups_dataset",
        "AOOutputForUPSDataset",
        "Contains all the Audience Orchestration audience memberships to be written to the Profile store (UPS).",
        _P,
        _REC,
        _PROFILE,
    ),
    (
        "audience_orchestration_profile_dataset",
        "Audience Orchestration Profile Dataset",
        "Generated by audience composition: all composition audiences, their attributes and enrichment data.",
        _P,
        _REC,
        _PROFILE,
    ),
    (
        "decision_object_repository_activities",
        "Decision Object Repository - Activities",
        "Also called Decisions in the UI: user-created objects that bring all building blocks together, including "
        "the decision logic, e.g. which offers (collection) to consider for a placement and how to rank them.",
        _U,
        _REC,
        "Decision Activity",
    ),
    (
        "decision_object_repository_fallback_offers",
        "Decision Object Repository - Fallback Offers",
        "Repository of fallback offers: what a profile sees when it is not eligible for any personalized offer. "
        "Holds the attributes of that offer type.",
        _U,
        _REC,
        "Decision Option",
    ),
    (
        "decision_object_repository_personalized_offers",
        "Decision Object Repository - Personalized Offers",
        "Repository of user-created personalized offers and their attributes.",
        _U,
        _REC,
        "Decision Option",
    ),
    (
        "decision_object_repository_placements",
        "Decision Object Repository - Placements",
        "Repository of the objects that define where an offer is displayed.",
        _U,
        _REC,
        "Decision Content Placement",
    ),
    (
        "journey_step_events",
        "Journey Step Events",
        "Captures every journey step experience event generated by Journey Optimizer, for services such as reporting.",
        _P,
        _TSC,
        "Journey Step Event",
    ),
    (
        "journeys",
        "Journeys",
        "Metadata dataset with information about each step of a journey.",
        _P,
        _REC,
        "Journey Orchestration Class",
    ),
    (
        "ode_decisionevents_prod_decisioning",
        "ODE DecisionEvents - prod decisioning",
        "Every time a decision is made for a request, it is recorded as a decision event.",
        _U,
        _TSC,
        "Decision Event",
    ),
)

DATASETS: tuple[Dataset, ...] = tuple(
    Dataset(
        slug=slug,
        name=name,
        description=description,
        tier=tier,
        dataset_id=_dataset_id(slug),
        xdm_class=xdm_class,
        xdm_class_name=class_name,
        columns=_SCHEMAS[slug],
    )
    for slug, name, description, tier, xdm_class, class_name in _ROWS
)

_BY_KEY: dict[str, Dataset] = {d.slug: d for d in DATASETS} | {d.dataset_id: d for d in DATASETS}


class UnknownDatasetError(KeyError):
    """Raised for a slug that is not one of the 21 AJO datasets; the message suggests close matches."""

    def __init__(self, slug: str) -> None:
        super().__init__(slug)
        self.slug = slug
        self.suggestions = difflib.get_close_matches(slug, [d.slug for d in DATASETS], n=3, cutoff=0.5)

    def __str__(self) -> str:
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else "; no close match"
        return f"unknown AJO dataset {self.slug!r}{hint}"


def get_dataset(slug: str) -> Dataset:
    """Look a dataset up by slug (or by its 24-hex dataset ID, as it appears in export folder names)."""
    try:
        return _BY_KEY[slug]
    except KeyError:
        raise UnknownDatasetError(slug) from None


def datasets_for_tier(tier: Tier) -> tuple[Dataset, ...]:
    """Datasets a package may export: Ultimate includes everything Prime has."""
    tier = Tier(tier)
    if tier is Tier.ULTIMATE:
        return DATASETS
    return tuple(d for d in DATASETS if d.tier is Tier.PRIME)
