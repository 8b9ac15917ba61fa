"""Every table, imported in one place so Alembic and tests see the whole schema."""

from roleferry.db import Base
from roleferry.drafting.models import Draft
from roleferry.enrichment.models import EnrichmentItem, EnrichmentJob
from roleferry.executors import ExecutorHeartbeat
from roleferry.notifications.models import CallbackSecret, Notification
from roleferry.outreach.models import (
    Enrollment,
    OutreachMessage,
    Sender,
    SequenceDef,
    SequenceRun,
    SequenceSend,
    Suppression,
    TimelineEntry,
    UserBlock,
)
from roleferry.payments.models import (
    CreditBalance,
    CreditEntry,
    CreditPosting,
    CreditReservation,
    Payment,
)
from roleferry.search.cache import CacheEntry
from roleferry.users.models import ApiKey, User
from roleferry.webhooks.models import WebhookEvent

__all__ = [
    "ApiKey",
    "Base",
    "CacheEntry",
    "CallbackSecret",
    "CreditBalance",
    "CreditEntry",
    "CreditPosting",
    "CreditReservation",
    "Draft",
    "EnrichmentItem",
    "EnrichmentJob",
    "Enrollment",
    "ExecutorHeartbeat",
    "Notification",
    "OutreachMessage",
    "Payment",
    "Sender",
    "SequenceDef",
    "SequenceRun",
    "SequenceSend",
    "Suppression",
    "TimelineEntry",
    "User",
    "UserBlock",
    "WebhookEvent",
]
