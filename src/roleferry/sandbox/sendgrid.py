"""SendGrid v3 simulator: mail send, suppressions, Event Webhook settings, and delivery events.

Accepted mail is "delivered" per the world: `processed`, then `dropped` (address suppressed),
`bounce` (address does not exist, or the person left), or `delivered`, then by chance `open`,
`click`, `spamreport`, `unsubscribe`. Events carry `sg_event_id`, `sg_message_id`, `smtp-id`
and the mail's custom_args as top-level keys, and go out in batched JSON arrays signed as
SendGrid signs them: ECDSA P-256 over SHA-256(timestamp + raw body), base64 DER signature in
`X-Twilio-Email-Event-Webhook-Signature`. Batches are sometimes shuffled or sent twice.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from roleferry.sandbox.common import ProviderHTTPError, json_object, json_response, sandbox_of
from roleferry.webhooks.inbox import SENDGRID_TYPES

MAX_RECIPIENTS = 1000
MAX_MESSAGE_BYTES = 30 * 1024 * 1024
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SUBSTITUTIONS_BYTES = 10_000
MAX_SEND_AHEAD_S = 72 * 3600
BATCH_MAX_BYTES = 768 * 1024
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
EVENT_TYPES = tuple(sorted(SENDGRID_TYPES))
_EMAIL = re.compile(r"^[^@\s;,]+@[^@\s;,]+\.[^@\s;,]+$")
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_RESERVED = {
    "email",
    "timestamp",
    "event",
    "smtp-id",
    "sg_event_id",
    "sg_message_id",
    "category",
    "type",
    "reason",
    "status",
    "response",
    "url",
    "ip",
    "useragent",
    "attempt",
    "tls",
}


class SendGridError(ProviderHTTPError):
    provider = "sendgrid"


class MailValidation(Exception):
    """All problems with one mail/send body, reported together as SendGrid does."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def render_error(status: int) -> tuple[dict[str, object], dict[str, str]]:
    return {
        "errors": [
            {"field": None, "message": "internal error" if status != 429 else "too many requests"}
        ]
    }, {}


def error_response(exc: ProviderHTTPError) -> JSONResponse:
    return json_response(
        {"errors": [{"field": exc.field, "message": exc.message}]}, exc.status, exc.headers
    )


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@dataclass
class WebhookSettings:
    """The account's one Event Webhook: the legacy webhook, whose `created_date` is null."""

    url: str
    id: str = ""
    enabled: bool = True
    signed: bool = True
    events: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, True))
    updated_at: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        flags = {("spam_report" if k == "spamreport" else k): v for k, v in self.events.items()}
        return {
            "enabled": self.enabled,
            "url": self.url,
            "account_status_change": False,
            **flags,
            "friendly_name": None,
            "id": self.id,
            "created_date": None,
            "updated_date": _iso(self.updated_at),
            "oauth_client_id": None,
            "oauth_token_url": None,
        }

    def get_json(self, public_key: str) -> dict[str, Any]:
        """What GET answers: the settings with the signing key and without the dates, as
        SendGrid's GetEventWebhook publishes them (PATCH answers `as_json`)."""
        settings = self.as_json()
        del settings["created_date"], settings["updated_date"]
        return {**settings, "public_key": self.signed_json(public_key)["public_key"]}

    def signed_json(self, public_key: str) -> dict[str, str]:
        return {"id": self.id, "public_key": public_key if self.signed else ""}


class SendGridState:
    """Messages, suppressions, webhook settings and the events waiting for their moment."""

    def __init__(
        self, seed: int, signing_key: ec.EllipticCurvePrivateKey, webhook_url: str
    ) -> None:
        self.seed = seed
        self.signing_key = signing_key
        self.settings = WebhookSettings(url=webhook_url, id=str(uuid.UUID(int=seed, version=4)))
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.bounces: dict[str, dict[str, Any]] = {}
        self.spam_reports: dict[str, dict[str, Any]] = {}
        self.unsubscribes: dict[str, dict[str, Any]] = {}
        self.mail: list[dict[str, Any]] = []
        """One entry per recipient copy accepted: the oracle for "what did this address get"."""
        self.scheduled: list[tuple[float, dict[str, Any]]] = []
        self.rng = random.Random(seed)

    def sign(self, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        signature = self.signing_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: timestamp,
            "user-agent": "SendGrid Event API",
        }

    def due_batches(self, now: float, reorder_rate: float) -> list[list[dict[str, Any]]]:
        """Takes the events whose time has come, in batches under SendGrid's 768 KB."""
        due = [e for t, e in self.scheduled if t <= now]
        self.scheduled = [(t, e) for t, e in self.scheduled if t > now]
        wanted = [e for e in due if self.settings.events.get(e["event"], True)]
        batches: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        size = 0
        for event in wanted:
            encoded = len(json.dumps(event))
            if current and size + encoded > BATCH_MAX_BYTES:
                batches.append(current)
                current, size = [], 0
            current.append(event)
            size += encoded + 1
        if current:
            batches.append(current)
        for batch in batches:
            if self.rng.random() < reorder_rate:
                self.rng.shuffle(batch)
        return batches


def _validate_mail(body: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """SendGrid's checks, with its field paths and messages; returns the personalizations."""
    errors: list[dict[str, Any]] = []

    def problem(field_: str | None, message: str, anchor: str) -> None:
        errors.append({"message": message, "field": field_, "help": f"{_HELP}#{anchor}"})

    sender = body.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        problem(
            "from",
            "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter.",
            "message.from",
        )
    elif not _EMAIL.match(str(sender["email"])):
        problem("from.email", "The from email does not contain a valid address.", "message.from")
    elif not str(sender["email"]).isascii():
        problem("from.email", "The from email must not contain Unicode characters.", "message.from")
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problem(
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
            "message.personalizations",
        )
        personalizations = []
    if len(personalizations) > MAX_RECIPIENTS:
        problem(
            "personalizations",
            "The personalizations field may contain at most 1000 personalizations.",
            "message.personalizations",
        )
    recipients = 0
    for i, item in enumerate(personalizations):
        if not isinstance(item, dict):
            problem(
                f"personalizations.{i}",
                "Each personalization must be an object.",
                "message.personalizations",
            )
            continue
        if not isinstance(item.get("to"), list) or not item["to"]:
            problem(
                f"personalizations.{i}.to",
                "The to array is required for all personalization objects, and "
                "must have at least one email object with a valid email address.",
                "message.personalizations.to",
            )
        for kind in ("to", "cc", "bcc"):
            for j, rcpt in enumerate(item.get(kind) or []):
                recipients += 1
                if not isinstance(rcpt, dict) or not _EMAIL.match(str(rcpt.get("email", ""))):
                    problem(
                        f"personalizations.{i}.{kind}.{j}.email",
                        "Does not contain a valid address.",
                        f"message.personalizations.{kind}",
                    )
                elif any(c in str(rcpt.get("name") or "") for c in ";,"):
                    problem(
                        f"personalizations.{i}.{kind}.{j}.name",
                        f"The {kind}.name may not contain ; or ,.",
                        f"message.personalizations.{kind}",
                    )
        if isinstance(item.get("custom_args"), dict):
            _check_custom_args(item["custom_args"], f"personalizations.{i}.custom_args", problem)
        substitutions = item.get("substitutions")
        if substitutions is not None and (
            not isinstance(substitutions, dict)
            or not all(isinstance(v, str) for v in substitutions.values())
            or len(json.dumps(substitutions).encode()) > MAX_SUBSTITUTIONS_BYTES
        ):
            problem(
                f"personalizations.{i}.substitutions",
                "Substitutions must be string values totalling at most 10,000 bytes.",
                "message.personalizations.substitutions",
            )
        send_at = item.get("send_at")
        if send_at is not None and (
            not isinstance(send_at, int) or send_at > now + MAX_SEND_AHEAD_S
        ):
            problem(
                f"personalizations.{i}.send_at",
                "send_at must be a unix timestamp at most 72 hours ahead.",
                "message.send_at",
            )
    if recipients > MAX_RECIPIENTS:
        problem(
            "personalizations",
            f"The total number of recipients (to, cc, bcc) must be at most "
            f"{MAX_RECIPIENTS}; this request has {recipients}.",
            "message.personalizations",
        )
    template = body.get("template_id")
    subject = body.get("subject")
    if (
        not template
        and not subject
        and not all(isinstance(p, dict) and p.get("subject") for p in personalizations)
    ):
        problem(
            "subject",
            "The subject is required. You can get around this requirement if you use a template "
            "with a subject defined or if every personalization has a subject defined.",
            "message.subject",
        )
    content = body.get("content")
    if not template:
        if not isinstance(content, list) or not content:
            problem(
                "content",
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block. We typically suggest both "
                "text/plain and text/html blocks are included, but only one block is required.",
                "message.content",
            )
        else:
            for k, block in enumerate(content):
                if not isinstance(block, dict) or not block.get("type") or not block.get("value"):
                    problem(
                        f"content.{k}",
                        "Each content block must have a type and a non-empty value.",
                        "message.content.value",
                    )
    if body.get("reply_to") and body.get("reply_to_list"):
        problem(
            "reply_to",
            "The reply_to and reply_to_list parameters are mutually exclusive.",
            "message.reply_to",
        )
    categories = body.get("categories")
    if categories is not None and (
        not isinstance(categories, list)
        or len(categories) > 10
        or any(not isinstance(c, str) or len(c) > 255 for c in categories)
    ):
        problem(
            "categories",
            "You may have at most 10 categories, each at most 255 characters.",
            "message.categories",
        )
    elif categories is not None and len(set(categories)) != len(categories):
        problem("categories", "The categories must be unique.", "message.categories")
    if isinstance(body.get("custom_args"), dict):
        _check_custom_args(body["custom_args"], "custom_args", problem)
    _check_extras(body, problem)
    send_at = body.get("send_at")
    if send_at is not None and (not isinstance(send_at, int) or send_at > now + MAX_SEND_AHEAD_S):
        problem(
            "send_at", "send_at must be a unix timestamp at most 72 hours ahead.", "message.send_at"
        )
    if errors:
        raise MailValidation(errors)
    return personalizations


def _check_extras(body: dict[str, Any], problem: Any) -> None:
    """Attachments, unsubscribe group and IP pool, as the Mail Send reference constrains them."""
    attachments = body.get("attachments")
    if attachments is not None and not isinstance(attachments, list):
        problem("attachments", "The attachments must be an array.", "message.attachments")
    for i, item in enumerate(attachments if isinstance(attachments, list) else []):
        if not isinstance(item, dict) or not item.get("content"):
            problem(
                f"attachments.{i}.content",
                "The attachment content is required and must be base64 encoded.",
                "message.attachments.content",
            )
        elif not isinstance(item.get("filename"), str):
            problem(
                f"attachments.{i}.filename",
                "The attachment filename is required.",
                "message.attachments.filename",
            )
        elif item.get("disposition", "attachment") not in ("inline", "attachment"):
            problem(
                f"attachments.{i}.disposition",
                "The disposition must be inline or attachment.",
                "message.attachments.disposition",
            )
    asm = body.get("asm")
    if asm is not None and (
        not isinstance(asm, dict)
        or not isinstance(asm.get("group_id"), int)
        or isinstance(asm.get("group_id"), bool)
    ):
        problem("asm.group_id", "The asm group_id must be an integer.", "message.asm.group_id")
    pool = body.get("ip_pool_name")
    if pool is not None and (not isinstance(pool, str) or not 2 <= len(pool) <= 64):
        problem(
            "ip_pool_name",
            "The ip_pool_name must be between 2 and 64 characters.",
            "message.ip_pool_name",
        )


def _check_custom_args(args: dict[str, Any], where: str, problem: Any) -> None:
    if any(not isinstance(v, str) for v in args.values()):
        problem(where, "Custom args values must be strings.", "message.custom_args")
    if len(json.dumps(args).encode()) >= MAX_CUSTOM_ARGS_BYTES:
        problem(where, "Custom args must total less than 10,000 bytes.", "message.custom_args")


def _authorize(request: Request) -> None:
    auth = request.headers.get("authorization", "")
    if not auth:
        raise SendGridError(401, "Permission denied, wrong credentials")
    if (
        not auth.lower().startswith("bearer ")
        or auth[7:] != sandbox_of(request).api_keys["sendgrid"]
    ):
        raise SendGridError(401, "The provided authorization grant is invalid, expired, or revoked")


def _rate_headers(request: Request, bucket: str, limit: int, period: float) -> dict[str, str]:
    window = sandbox_of(request).control["sendgrid"].window(bucket, limit, period)
    allowed, remaining, reset_in = window.hit("account")
    headers = {
        "X-RateLimit-Limit": str(window.limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(int(time.time() + reset_in)),
    }
    if not allowed:
        raise SendGridError(429, "too many requests", headers=headers)
    return headers


def schedule_events(
    state: SendGridState,
    world: Any,
    body: dict[str, Any],
    personalizations: list[dict[str, Any]],
    message_id: str,
    now: float,
) -> None:
    categories = body.get("categories") or []
    top_args = body.get("custom_args") or {}
    index = 0
    for item in personalizations:
        args = {**top_args, **(item.get("custom_args") or {})}
        start = float(item.get("send_at") or body.get("send_at") or now)
        for kind in ("to", "cc", "bcc"):
            for rcpt in item.get(kind) or []:
                email = str(rcpt["email"]).strip().lower()
                sg_message_id = f"{message_id}.filterdrecv-sandbox-{index}.{index}.0"
                index += 1
                for offset, event in _story(state, world, email, sg_message_id):
                    record = {k: v for k, v in args.items() if k not in _RESERVED}
                    record.update(event)
                    record.update(
                        email=email,
                        timestamp=int(start + offset),
                        **{"smtp-id": f"<{message_id}@ismtpd-sandbox>"},
                        sg_event_id=base64.urlsafe_b64encode(uuid.uuid4().bytes)
                        .decode()
                        .rstrip("="),
                        sg_message_id=sg_message_id,
                    )
                    if categories:
                        record["category"] = categories
                    state.scheduled.append((start + offset, record))
                state.messages.setdefault(message_id, []).append(
                    {"email": email, "sg_message_id": sg_message_id}
                )
                text = next(
                    (
                        c.get("value")
                        for c in body.get("content") or []
                        if c.get("type") == "text/plain"
                    ),
                    None,
                )
                state.mail.append(
                    {
                        "message_id": message_id,
                        "sg_message_id": sg_message_id,
                        "email": email,
                        "from": (body.get("from") or {}).get("email"),
                        "reply_to": (body.get("reply_to") or {}).get("email"),
                        "subject": _substitute(item.get("subject") or body.get("subject"), item),
                        "body": _substitute(text, item),
                        "custom_args": args,
                        "headers": {**(body.get("headers") or {}), **(item.get("headers") or {})},
                        "send_at": start,
                        "accepted_at": now,
                    }
                )


def _substitute(text: str | None, personalization: dict[str, Any]) -> str | None:
    """SendGrid's legacy substitutions: each key replaced by its value in this copy."""
    for key, value in (personalization.get("substitutions") or {}).items():
        text = None if text is None else text.replace(key, value)
    return text


def _story(
    state: SendGridState, world: Any, email: str, sg_message_id: str
) -> list[tuple[float, dict[str, Any]]]:
    """What happens to one recipient's copy, deterministic per message."""
    rng = random.Random(f"{state.seed}|{sg_message_id}")
    events: list[tuple[float, dict[str, Any]]] = [(0.05, {"event": "processed"})]
    if email in state.bounces or email in state.spam_reports or email in state.unsubscribes:
        reason = (
            "Bounced Address"
            if email in state.bounces
            else "Spam Reporting Address"
            if email in state.spam_reports
            else "Unsubscribed Address"
        )
        events.append((0.1, {"event": "dropped", "reason": reason, "status": "5.0.0"}))
        return events
    domain = email.rsplit("@", 1)[-1]
    company = world.company(domain)
    person = world.person_by_email(email) if company else None
    if company is not None and (person is None or person.bounces):
        events.append(
            (
                0.3,
                {
                    "event": "bounce",
                    "type": "bounce",
                    "status": "5.1.1",
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                    "bounce_classification": "Invalid Address",
                    "tls": 1,
                },
            )
        )
        state.bounces[email] = {
            "created": int(time.time()),
            "email": email,
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        }
        return events
    events.append(
        (0.3, {"event": "delivered", "response": "250 OK", "tls": 1, "ip": "168.245.0.1"})
    )
    if rng.random() < 0.45:
        events.append(
            (
                1.0,
                {
                    "event": "open",
                    "ip": "203.0.113.9",
                    "useragent": "Mozilla/5.0",
                    "sg_machine_open": False,
                },
            )
        )
        if rng.random() < 0.25:
            events.append(
                (
                    1.5,
                    {
                        "event": "click",
                        "url": "https://roleferry.com/",
                        "ip": "203.0.113.9",
                        "useragent": "Mozilla/5.0",
                    },
                )
            )
    roll = rng.random()
    if roll < 0.01:
        events.append((2.0, {"event": "spamreport"}))
        state.spam_reports[email] = {
            "created": int(time.time()),
            "email": email,
            "ip": "203.0.113.9",
        }
    elif roll < 0.03:
        events.append((2.0, {"event": "unsubscribe"}))
        state.unsubscribes[email] = {"created": int(time.time()), "email": email}
    return events


def _suppressions(request: Request, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    q = request.query_params
    try:
        start = int(q.get("start_time", 0))
        end = int(q.get("end_time", 2**62))
        limit = int(q.get("limit", 500))
        offset = int(q.get("offset", 0))
    except ValueError as exc:
        raise SendGridError(400, "start_time, end_time, limit and offset must be integers") from exc
    if not 1 <= limit <= 500:
        raise SendGridError(400, "limit must be between 1 and 500", field="limit")
    prefix = (q.get("email") or "").lower()
    found = sorted(
        (
            r
            for r in rows.values()
            if start <= r["created"] <= end and r["email"].startswith(prefix)
        ),
        key=lambda r: r["created"],
        reverse=True,
    )
    return found[offset : offset + limit]


def router() -> APIRouter:
    api = APIRouter(prefix="/sendgrid/v3")

    @api.post("/mail/send")
    async def mail_send(request: Request) -> Response:
        _authorize(request)
        sandbox = sandbox_of(request)
        _rate_headers(request, "mail", 3000, 1.0)
        if len(await request.body()) > MAX_MESSAGE_BYTES:
            raise SendGridError(413, "content too large")
        body = await json_object(request, SendGridError)
        now = time.time()
        try:
            personalizations = _validate_mail(body, now)
        except MailValidation as exc:
            return json_response({"errors": exc.errors}, 400)
        message_id = base64.urlsafe_b64encode(uuid.uuid4().bytes[:16]).decode().rstrip("=")
        schedule_events(sandbox.sendgrid, sandbox.world, body, personalizations, message_id, now)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    @api.get("/suppression/bounces")
    async def bounces(request: Request) -> JSONResponse:
        _authorize(request)
        headers = _rate_headers(request, "api", 600, 60)
        return json_response(
            _suppressions(request, sandbox_of(request).sendgrid.bounces), headers=headers
        )

    @api.get("/suppression/spam_reports")
    async def spam_reports(request: Request) -> JSONResponse:
        _authorize(request)
        headers = _rate_headers(request, "api", 600, 60)
        return json_response(
            _suppressions(request, sandbox_of(request).sendgrid.spam_reports), headers=headers
        )

    @api.get("/suppression/unsubscribes")
    async def unsubscribes(request: Request) -> JSONResponse:
        _authorize(request)
        headers = _rate_headers(request, "api", 600, 60)
        return json_response(
            _suppressions(request, sandbox_of(request).sendgrid.unsubscribes), headers=headers
        )

    @api.get("/user/webhooks/event/settings")
    async def get_settings(request: Request) -> JSONResponse:
        _authorize(request)
        sandbox = sandbox_of(request)
        return json_response(sandbox.sendgrid.settings.get_json(sandbox.sendgrid_public_key))

    @api.patch("/user/webhooks/event/settings")
    async def patch_settings(request: Request) -> JSONResponse:
        _authorize(request)
        body = await json_object(request, SendGridError)
        settings = sandbox_of(request).sendgrid.settings
        if "url" in body:
            url = body["url"]
            if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
                raise SendGridError(400, "url must be a valid http or https URL", field="url")
            refused = sandbox_of(request).targets.refusal("sendgrid", url)
            if refused is not None:
                raise SendGridError(400, f"url: {refused}", field="url")
            settings.url = url
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise SendGridError(400, "enabled must be a boolean", field="enabled")
            settings.enabled = body["enabled"]
        for name, value in body.items():
            event = "spamreport" if name == "spam_report" else name
            if event in settings.events:
                if not isinstance(value, bool):
                    raise SendGridError(400, f"{name} must be a boolean", field=name)
                settings.events[event] = value
        settings.updated_at = time.time()
        return json_response(settings.as_json())

    @api.get("/user/webhooks/event/settings/signed")
    async def get_signed(request: Request) -> JSONResponse:
        _authorize(request)
        sandbox = sandbox_of(request)
        return json_response(sandbox.sendgrid.settings.signed_json(sandbox.sendgrid_public_key))

    @api.patch("/user/webhooks/event/settings/signed")
    async def patch_signed(request: Request) -> JSONResponse:
        _authorize(request)
        body = await json_object(request, SendGridError)
        if not isinstance(body.get("enabled"), bool):
            raise SendGridError(400, "enabled must be a boolean", field="enabled")
        sandbox = sandbox_of(request)
        sandbox.sendgrid.settings.signed = body["enabled"]
        return json_response(sandbox.sendgrid.settings.signed_json(sandbox.sendgrid_public_key))

    return api


SUPPRESSION_KINDS = ("bounces", "spam_reports", "unsubscribes")


def control_router() -> APIRouter:
    """Test controls: the mail log, and addresses put on SendGrid's suppression lists."""
    api = APIRouter(prefix="/_control/sendgrid", tags=["sandbox control"])

    @api.get("/mail")
    async def mail_log(request: Request) -> JSONResponse:
        """Every accepted recipient copy, oldest first; `?email=` narrows to one address."""
        email = (request.query_params.get("email") or "").strip().lower()
        rows = sandbox_of(request).sendgrid.mail
        return json_response([r for r in rows if not email or r["email"] == email])

    @api.post("/reply")
    async def reply(request: Request) -> JSONResponse:
        """The recipient `email` replies to the last mail it got: the simulator posts an
        Inbound Parse form (headers with In-Reply-To, from, to, text, envelope) to `url`."""
        body = await json_object(request, SendGridError)
        email = str(body.get("email") or "").strip().lower()
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SendGridError(400, "send the Inbound Parse `url` to post the reply to")
        got = [m for m in sandbox_of(request).sendgrid.mail if m["email"] == email]
        if not got:
            raise SendGridError(404, f"{email or 'that address'} has received no mail")
        last = got[-1]
        to = last["reply_to"] or last["from"]
        headers = (
            f"From: {email}\r\nTo: {to}\r\nSubject: Re: {last['subject']}\r\n"
            f"In-Reply-To: <{last['message_id']}@ismtpd-sandbox>\r\n"
            f"References: <{last['message_id']}@ismtpd-sandbox>\r\n"
        )
        form = {
            "headers": headers,
            "from": email,
            "to": to,
            "subject": f"Re: {last['subject']}",
            "text": str(body.get("text") or "Thanks, not interested."),
            "envelope": json.dumps({"to": [to], "from": email}),
            "charsets": json.dumps({"text": "utf-8"}),
            "SPF": "pass",
        }
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(url, data=form, files={"attachment-info": (None, "{}")})
        return json_response({"status": answer.status_code})

    @api.post("/suppressions/{kind}")
    async def suppress(request: Request, kind: str) -> JSONResponse:
        """Puts addresses on one of SendGrid's lists, as if they had bounced or complained."""
        if kind not in SUPPRESSION_KINDS:
            raise SendGridError(
                404, f"unknown list {kind!r}; one of {', '.join(SUPPRESSION_KINDS)}"
            )
        body = await json_object(request, SendGridError)
        emails = body.get("emails")
        if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
            raise SendGridError(400, 'send {"emails": ["…"]}', field="emails")
        rows = getattr(sandbox_of(request).sendgrid, kind)
        for email in emails:
            rows[email.strip().lower()] = {"created": int(time.time()), "email": email.lower()}
        return json_response({"added": len(emails)})

    return api
