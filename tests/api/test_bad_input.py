"""Bad input, over real HTTP: each class answers a 4xx in the error shape with a message that
says what to fix, never a 500; and one oversized upload does not stall the server."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from roleferry.db import Database
from roleferry.enrichment.intake import MAX_ROWS
from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from roleferry.sandbox.world import World
from roleferry.search.models import MIN_DEADLINE_S
from roleferry.users import service
from tests.support.live_server import LiveServer, live_server
from tests.support.webhooks import sendgrid_headers

WORLD = World(7)
DEEP = b"[" * 100_000 + b"]" * 100_000
APOLLO_AUTH = {"x-api-key": SANDBOX_API_KEYS["apollo"]}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("bad-input"), apollo_rate_limit="100000/3600") as srv:
        yield srv


def admin_key(live: LiveServer) -> str:
    async def create() -> str:
        database = Database(live.runtime.settings.database_url)
        try:
            async with database.session() as session:
                created = await service.create_user(session, "root@example.com", is_admin=True)
                return created.key.raw
        finally:
            await database.dispose()

    return asyncio.run(create())


def post(live: LiveServer, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{live.url}{path}",
        content=content,
        headers={**live.auth, "content-type": "application/json", **headers},
        timeout=60,
    )


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    assert "Value error" not in message
    return message


JSON_ROUTES = ("/api/v1/api-keys", "/api/v1/contacts/search", "/api/v1/enrichment-jobs")


@pytest.mark.parametrize("path", [*JSON_ROUTES, "/webhooks/stripe", "/webhooks/sendgrid"])
@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
def test_encoded_bodies_are_refused_with_415(live: LiveServer, path: str, encoding: str) -> None:
    """No route decodes a compressed body: 415 saying to send it uncompressed."""
    body = gzip.compress(b'{"name": "x"}')
    message = error_of(
        post(live, path, body, **{"content-encoding": encoding}), 415, "unsupported_media_type"
    )
    assert "uncompressed" in message


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_that_is_not_utf8_or_nested_too_deep_is_a_4xx(live: LiveServer, path: str) -> None:
    """Latin-1 text and 100,000 levels of nesting are refused with the reason, not a 500."""
    latin1 = post(live, path, '{"name": "café", "contacts": ["é"]}'.encode("latin-1"))
    assert latin1.status_code in (400, 422)
    assert "UTF-8" in latin1.json()["error"]["message"] or "not valid JSON" in latin1.text
    deep = post(live, path, b'{"contacts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert deep.status_code in (400, 422)
    assert "nested" in deep.json()["error"]["message"]


def test_integers_past_what_the_database_stores_are_422(live: LiveServer) -> None:
    """2**63 as a cursor or an id is invalid input naming the field, not a driver error."""
    auth = {"Authorization": f"Bearer {admin_key(live)}"}
    events = f"{live.url}/api/v1/admin/webhook-events"
    for response, field in (
        (httpx.get(events, params={"before_id": 2**63}, headers=auth), "query.before_id"),
        (httpx.post(f"{events}/{2**63}/replay", headers=auth), "path.event_pk"),
        (httpx.post(f"{events}/{-(2**63) - 1}/replay", headers=auth), "path.event_pk"),
    ):
        error_of(response, 422, "validation_error")
        assert response.json()["error"]["details"][0]["field"] == field
    assert httpx.get(events, params={"before_id": 2**63 - 1}, headers=auth).status_code == 200


def test_an_empty_body_a_list_or_an_unreadable_number_says_so(live: LiveServer) -> None:
    """No body, a list for an object, or an integer of 5,000 digits: a 4xx saying what is
    wrong with the body."""
    for path in JSON_ROUTES:
        assert "the body is empty" in post(live, path, b"").json()["error"]["message"]
    listed = post(live, "/api/v1/api-keys", b'["name"]')
    assert error_of(listed, 422, "validation_error") == (
        "the body must be a JSON object, not another JSON value"
    )
    huge = b'{"domain": "a.io", "titles": ["x"], "limit": ' + b"9" * 5000 + b"}"
    message = error_of(post(live, "/api/v1/contacts/search", huge), 400, "bad_request")
    assert message.startswith("the body is not valid JSON: ")


def test_a_json_syntax_error_names_its_line_and_column(live: LiveServer) -> None:
    """A trailing comma is reported where it is, not as a bare character offset."""
    body = b'{\n  "domain": "acme.com",\n  "titles": ["VP"],\n}'
    message = error_of(post(live, "/api/v1/contacts/search", body), 422, "validation_error")
    assert message.startswith("the body is not valid JSON: line 4, column 1:")


def test_a_body_without_a_json_content_type_says_which_to_send(live: LiveServer) -> None:
    """No Content-Type (or text/plain) is a 415 naming application/json."""
    for headers in ({}, {"content-type": "text/plain"}):
        response = httpx.post(
            f"{live.url}/api/v1/api-keys",
            content=b'{"name": "ci"}',
            headers={**live.auth, **headers},
        )
        message = error_of(response, 415, "unsupported_media_type")
        assert "Content-Type: application/json" in message


def test_validator_messages_carry_no_pydantic_prefix(live: LiveServer) -> None:
    """A domain that is not one says what a domain looks like, without `Value error, `."""
    response = post(
        live, "/api/v1/contacts/search", json.dumps({"domain": "acme", "titles": ["VP"]}).encode()
    )
    message = error_of(response, 422, "validation_error")
    assert message == "domain: must be a domain like acme.com, or a URL on it (got 'acme')"
    assert response.json()["error"]["details"][0]["reason"].startswith("must be a domain")
    blank = post(
        live, "/api/v1/contacts/search", json.dumps({"domain": "a.io", "titles": ["\x1f"]}).encode()
    )
    assert error_of(blank, 422, "validation_error") == "titles.0: must not be blank"


@pytest.mark.parametrize("path", ["/api/v1/contacts/search", "/api/v1/contacts/enrich"])
def test_a_deadline_no_provider_fits_in_is_422_naming_the_minimum(
    live: LiveServer, path: str
) -> None:
    """0.1 s cannot fit one provider attempt: the request is wrong, retrying would not help."""
    body = {"domain": "acme.com", "titles": ["VP"], "first_name": "A", "last_name": "B"}
    response = post(live, path, json.dumps({**body, "deadline_s": 0.1}).encode())
    message = error_of(response, 422, "validation_error")
    assert f"greater than or equal to {MIN_DEADLINE_S}" in message


def test_a_url_where_a_domain_is_expected_is_normalised(live: LiveServer) -> None:
    """Search and job rows take a pasted URL and work on its bare host."""
    domain = WORLD.companies[3].domain
    url = f"HTTPS://www.{domain.upper()}.:443/about?x=1"
    found = post(
        live, "/api/v1/contacts/search", json.dumps({"domain": url, "titles": ["a"]}).encode()
    )
    assert found.status_code == 200, found.text
    assert found.json()["domain"] == domain
    row = {"first_name": "Ann", "last_name": "Lee", "domain": url}
    job = post(live, "/api/v1/enrichment-jobs", json.dumps({"contacts": [row]}).encode())
    assert job.status_code == 202, job.text
    assert job.json()["rejected"] == []
    results = httpx.get(
        f"{live.url}/api/v1/enrichment-jobs/{job.json()['id']}/results", headers=live.auth
    )
    assert [r["domain"] for r in results.json()["results"]] == [domain]


def while_polling_health(
    live: LiveServer, send: Callable[[], httpx.Response]
) -> tuple[httpx.Response, float]:
    """The answer to `send()`, and the slowest /healthz answer while it ran."""
    slowest = 0.0
    done = threading.Event()

    def poll() -> None:
        nonlocal slowest
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                assert client.get(f"{live.url}/healthz").status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
                time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        return send(), slowest
    finally:
        done.set()
        poller.join()


def test_an_upload_of_millions_of_tiny_rows_is_refused_without_stalling_the_server(
    live: LiveServer,
) -> None:
    """10 MiB of `{}` rows is refused at row 10,001, and /healthz keeps answering meanwhile."""
    body = b'{"contacts":[' + b",".join([b"{}"] * ((10 * 1024 * 1024 - 64) // 3)) + b"]}"
    response, slowest = while_polling_health(
        live, lambda: post(live, "/api/v1/enrichment-jobs", body)
    )
    message = error_of(response, 422, "validation_error")
    assert f"more than {MAX_ROWS} contacts" in message
    assert slowest < 1.0, f"/healthz waited {slowest:.2f} s during the upload"


def test_a_large_signed_webhook_batch_does_not_stall_the_server(live: LiveServer) -> None:
    """5 MiB of small SendGrid events is parsed off the event loop: /healthz keeps answering."""
    event = b'{"event":"open"}'
    body = b"[" + b",".join([event] * ((5 * 1024 * 1024 - 16) // (len(event) + 1))) + b"]"
    response, slowest = while_polling_health(
        live,
        lambda: httpx.post(
            f"{live.url}/webhooks/sendgrid",
            content=body,
            headers=sendgrid_headers(body),
            timeout=120,
        ),
    )
    assert response.status_code == 200, response.text
    assert slowest < 1.0, f"/healthz waited {slowest:.2f} s during the delivery"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("PUT", "/sandbox/_control/apollo", DEEP, {}, 422),
        ("PUT", "/sandbox/_control/apollo", b'{"error_rate": "caf\xe9"}', {}, 422),
        ("POST", "/sandbox/apollo/api/v1/people/match", DEEP, APOLLO_AUTH, 400),
        (
            "POST",
            "/sandbox/stripe/v1/refunds",
            b"payment_intent=caf\xe9",
            {
                "content-type": "application/x-www-form-urlencoded",
                "authorization": f"Bearer {SANDBOX_API_KEYS['stripe']}",
            },
            400,
        ),
    ],
)
def test_the_sandbox_refuses_unreadable_bodies_without_a_500(
    live: LiveServer, method: str, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    """The simulators and their control plane read bodies too: deep or non-UTF-8 is a 4xx."""
    response = httpx.request(
        method,
        f"{live.url}{path}",
        content=body,
        headers={"content-type": "application/json", **headers},
    )
    assert response.status_code == status, response.text
