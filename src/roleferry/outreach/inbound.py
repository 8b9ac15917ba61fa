"""SendGrid Inbound Parse: a reply posted to us as a multipart form (headers, from, to, text,
html, envelope…), matched to its enrolment by the `In-Reply-To`/`References` header (the
message id SendGrid gave our email) or a plus-address (`…+enr_…@`) in the recipients, and the
enrolment stopped at once. Inbound Parse has no signature, so the URL carries a secret token
derived from the unsubscribe key."""

from __future__ import annotations

import json
import re
from email.utils import parseaddr
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select

from roleferry.api.deps import CurrentUser, RuntimeDep
from roleferry.errors import NotFound, Unprocessable
from roleferry.outreach import service
from roleferry.outreach.links import Signer
from roleferry.outreach.models import Enrollment, SequenceSend

router = APIRouter(tags=["outreach"])
_ANGLE = re.compile(r"<([^<>\s]+)>")
_PLUS = re.compile(r"\+(enr_[A-Za-z0-9_-]{10,40})@")


def inbound_token(signer: Signer) -> str:
    return signer.token("inbound-parse", "sendgrid")


def _header(block: str, name: str) -> str:
    """One header's value from a raw header block (continuation lines joined)."""
    found = re.search(rf"(?im)^{name}:(.*(?:\r?\n[ \t].*)*)", block)
    return found.group(1) if found else ""


def message_ids(headers: str) -> set[str]:
    """The SendGrid message ids named by In-Reply-To and References."""
    ids = set()
    for value in (_header(headers, "In-Reply-To"), _header(headers, "References")):
        for ref in _ANGLE.findall(value):
            ids.add(re.split(r"[.@]", ref, maxsplit=1)[0])
    return ids


@router.post("/webhooks/sendgrid/inbound/{token}", include_in_schema=False)
async def inbound_parse(token: str, request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    if token != inbound_token(Signer.of(runtime.settings)):
        raise NotFound("unknown inbound URL")
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if "headers" not in fields and "from" not in fields:
        raise Unprocessable("an Inbound Parse post has `headers` and `from` form fields")
    recipients = " ".join([fields.get("to", ""), fields.get("cc", "")])
    senders = {parseaddr(fields.get("from", ""))[1].lower()}
    try:
        envelope = json.loads(fields.get("envelope") or "{}")
        recipients += " " + " ".join(f"<{a}>" for a in envelope.get("to") or [])
        senders.add(str(envelope.get("from") or "").lower())
    except (ValueError, AttributeError, TypeError):
        pass
    now = runtime.clock()
    async with runtime.db.write_session() as session:
        enrollment_ids = set(_PLUS.findall(recipients))
        ids = message_ids(fields.get("headers", ""))
        if ids:
            replied_to = set(
                await session.scalars(
                    select(SequenceSend.enrollment_id).where(SequenceSend.message_id.in_(ids))
                )
            )
            if len(replied_to) > 1:
                # One request mailed several recipients under one message id: the reply is
                # the enrolment of the address it comes from (none, if it is from elsewhere).
                replied_to = set(
                    await session.scalars(
                        select(Enrollment.id).where(
                            Enrollment.id.in_(replied_to), Enrollment.email.in_(senders - {""})
                        )
                    )
                )
            enrollment_ids |= replied_to
        matched = list(
            await session.scalars(
                select(Enrollment).where(Enrollment.id.in_(enrollment_ids)).order_by(Enrollment.id)
            )
        )
        for enrollment in matched:
            if enrollment.status in service.ACTIVE:
                await service.reply(session, enrollment, now, "inbound parse")
    return {"matched": len(matched)}


@router.get("/api/v1/inbound-parse")
async def inbound_url(_user: CurrentUser, runtime: RuntimeDep) -> dict[str, str]:
    """The URL to give SendGrid's Inbound Parse for replies (it carries a secret token)."""
    token = inbound_token(Signer.of(runtime.settings))
    return {"url": f"{runtime.public_url}/webhooks/sendgrid/inbound/{token}"}
