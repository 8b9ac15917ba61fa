"""Every time the API writes is ISO 8601 in UTC with a `Z`: in every route's response schema,
and in the answers of every route that returns one."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from roleferry.api.times import ISO_Z_PATTERN, as_utc, iso_z
from roleferry.db import Database
from roleferry.enrichment import service
from roleferry.enrichment.models import EnrichmentJob
from roleferry.users import service as users
from tests.enrichment.test_jobs_api import contacts, people, wait_done
from tests.support.live_server import LiveServer, live_server
from tests.support.webhooks import (
    dumps,
    sendgrid_event,
    sendgrid_headers,
    stripe_event,
    stripe_headers,
)

ISO_Z = re.compile(ISO_Z_PATTERN)
TIME_NAMES = re.compile(r"(_at|^estimated_completion|^until|^timestamp)$")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("times"), apollo_rate_limit="100000/3600") as live:
        yield live


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _time_schemas(
    schema: dict[str, Any], spec: dict[str, Any], name: str, seen: set[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (property name, schema) reachable from `schema` that is or should be a time."""
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref in seen:
            return
        seen = seen | {ref}
    schema = _resolve(schema, spec)
    if schema.get("format") == "date-time" or (
        TIME_NAMES.search(name) and schema.get("type") in ("number", "integer", "string")
    ):
        yield name, schema
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            yield from _time_schemas(option, spec, name, seen)
    for prop, sub in schema.get("properties", {}).items():
        yield from _time_schemas(sub, spec, prop, seen)
    if isinstance(schema.get("items"), dict):
        yield from _time_schemas(schema["items"], spec, name, seen)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _time_schemas(schema["additionalProperties"], spec, name, seen)


def test_every_time_in_every_response_schema_is_iso_utc_with_z(live: LiveServer) -> None:
    """The OpenAPI document: every time-like field of every route's responses is a date-time
    string that must end in Z; none is a number or a free string."""
    spec = httpx.get(f"{live.url}/openapi.json").json()
    found: list[str] = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            for status, response in operation.get("responses", {}).items():
                for media in response.get("content", {}).values():
                    for name, schema in _time_schemas(media.get("schema", {}), spec, "", set()):
                        where = f"{method.upper()} {path} {status} {name}"
                        found.append(where)
                        assert schema.get("type") == "string", where
                        assert schema.get("format") == "date-time", where
                        assert schema.get("pattern") == ISO_Z_PATTERN, where
    assert len(found) >= 10, found
    assert any("/enrichment-jobs" in f and "estimated_completion" in f for f in found)
    assert any("/admin/webhook-events" in f and "occurred_at" in f for f in found)


def _times(value: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    """Time-named values, except inside a webhook event's `payload`: the provider's own
    document, kept as it was received."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if key != "payload":
                yield from _times(sub, key)
    elif isinstance(value, list):
        for sub in value:
            yield from _times(sub, name)
    elif TIME_NAMES.search(name) and value is not None:
        yield name, value


def test_every_time_in_every_answer_is_iso_utc_with_z(live: LiveServer) -> None:
    """The answers of every route that returns times, with data in them: jobs (list, one,
    cancel), notifications, account and keys, webhook events from both write paths."""

    async def admin() -> str:
        database = Database(live.runtime.settings.database_url)
        try:
            async with database.session() as session:
                return (
                    await users.create_user(session, "times-admin@example.com", is_admin=True)
                ).key.raw
        finally:
            await database.dispose()

    auth = {"Authorization": f"Bearer {asyncio.run(admin())}"}
    api = f"{live.url}/api/v1"
    finished = httpx.post(
        f"{api}/enrichment-jobs", json={"contacts": contacts(people(0, 3))}, headers=auth
    ).json()["id"]
    wait_done(live, finished, auth["Authorization"][7:])
    for provider in ("apollo", "clay", "hunter"):
        live.control(provider, error_rate=1.0, error_status=503)
    # Three contacts answered from the first job's cache, the fourth waits for a provider.
    running = httpx.post(
        f"{api}/enrichment-jobs", json={"contacts": contacts(people(0, 4))}, headers=auth
    ).json()["id"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/enrichment-jobs/{running}", headers=auth).json()["done"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answers = [
        httpx.get(f"{api}/enrichment-jobs/{running}", headers=auth).json(),
        httpx.get(f"{api}/enrichment-jobs", headers=auth).json(),
        httpx.post(f"{api}/enrichment-jobs/{running}/cancel", headers=auth).json(),
        httpx.get(f"{api}/enrichment-jobs/{finished}", headers=auth).json(),
    ]
    live.reset()
    key = httpx.post(f"{api}/api-keys", json={"name": "second"}, headers=auth).json()
    httpx.delete(f"{api}/api-keys/{key['id']}", headers=auth)
    body = dumps([sendgrid_event("delivered", "someone@example.com")])
    assert (
        httpx.post(
            f"{live.url}/webhooks/sendgrid", content=body, headers=sendgrid_headers(body)
        ).status_code
        == 200
    )
    body = dumps(stripe_event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert (
        httpx.post(
            f"{live.url}/webhooks/stripe", content=body, headers=stripe_headers(body)
        ).status_code
        == 200
    )
    deadline = time.monotonic() + 30
    while len(events := httpx.get(f"{api}/admin/webhook-events", headers=auth).json()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answers += [
        httpx.get(f"{api}/notifications", headers=auth).json(),
        httpx.get(f"{api}/me", headers=auth).json(),
        httpx.get(f"{api}/api-keys", headers=auth).json(),
        httpx.get(f"{api}/api-keys/{key['id']}", headers=auth).json(),
        key,
        events,
    ]
    seen: set[str] = set()
    for answer in answers:
        for name, value in _times(answer):
            seen.add(name)
            assert isinstance(value, str), (name, value)
            assert ISO_Z.match(value), (name, value)
    assert {
        "created_at",
        "started_at",
        "finished_at",
        "estimated_completion",
        "revoked_at",
        "occurred_at",
        "received_at",
    } <= seen, seen


def test_estimated_completion_is_the_rate_seen_so_far(live: LiveServer) -> None:
    """Half of the contacts done 10 s after the start: the rest in 10 s more, at that rate."""
    job = EnrichmentJob(id="job_eta", user_id="u", status="running", total=100, started_at=1000.0)
    tally = {"done": 50, "pending": 50, "latest_retry_at": None}
    assert service.estimated_completion(job, tally, 1010.0) == pytest.approx(1020.0)
    assert iso_z(1020.0) == "1970-01-01T00:17:00.000Z"
    tally["latest_retry_at"] = 1500.0
    assert service.estimated_completion(job, tally, 1010.0) == 1500.0, "not before a retry"
    job.status = "succeeded"
    assert service.estimated_completion(job, tally, 1010.0) is None


def test_times_from_every_source_come_out_the_same(tmp_path: Path) -> None:
    """Naive (SQLite), aware in another zone, unix seconds and ISO text: one format."""
    moment = datetime(2026, 11, 26, 4, 5, 6, 123456, tzinfo=UTC)
    for value in (
        moment,
        moment.replace(tzinfo=None),
        moment.astimezone(timezone(timedelta(hours=-5))),
        moment.timestamp(),
        "2026-11-26T04:05:06.123456Z",
        "2026-11-26 04:05:06.123456",
    ):
        assert iso_z(value) == "2026-11-26T04:05:06.123Z", value
        assert as_utc(value).tzinfo is not None
