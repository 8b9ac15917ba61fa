"""One-click unsubscribe (RFC 8058): each email carries `List-Unsubscribe: <…/unsubscribe/TOKEN>`
and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`; one POST to that link adds the address
to the sending user's blocklist at once."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from roleferry.api.deps import RuntimeDep
from roleferry.errors import PUBLIC_ERRORS, ErrorOut, NotFound
from roleferry.outreach import suppressions
from roleferry.outreach.links import Signer

router = APIRouter(prefix="/unsubscribe", tags=["outreach"])


def _parse(runtime: RuntimeDep, token: str) -> tuple[str, str]:
    found = Signer.of(runtime.settings).verify(token)
    if found is None:
        raise NotFound("this unsubscribe link is not valid")
    return found


@router.get(
    "/{token}",
    response_class=HTMLResponse,
    responses={
        status: {"model": ErrorOut, "content": {"application/json": {}}}
        for status in (*PUBLIC_ERRORS, 404)
    },
)
async def confirm_page(token: str, runtime: RuntimeDep) -> HTMLResponse:
    """A page with one button; a GET changes nothing (mail scanners follow links)."""
    _parse(runtime, token)
    return HTMLResponse(
        "<!doctype html><title>Unsubscribe</title>"
        f'<form method="post" action="/unsubscribe/{token}">'
        '<button name="List-Unsubscribe" value="One-Click">Unsubscribe</button></form>'
    )


@router.post("/{token}")
async def one_click(token: str, runtime: RuntimeDep) -> dict[str, str]:
    """RFC 8058's one-click POST: the address is blocked for the sending user at once."""
    user_id, email = _parse(runtime, token)
    async with runtime.db.write_session() as session:
        await suppressions.block(session, user_id, email, "unsubscribe", runtime.clock())
    return {"status": "unsubscribed"}
